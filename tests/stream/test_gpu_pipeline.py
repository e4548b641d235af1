"""StreamRunner: frames in flight through copy-in | compute | copy-out, in order, bounded.

On the CPU the stages run in sequence and the ring/ordering logic is checked against the plain
engine; on a CUDA machine the same checks run on real streams (skipped without a GPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pcmanet.data.synthetic_demo import DemoScene
from stream.engine.engine import StreamingEngine
from stream.engine.gpu_pipeline import StreamRunner
from tests.stream.test_engine import demo_model, scene_frames


def run_through(runner: StreamRunner, frames) -> list:
    out = []
    for paired in frames:
        out += runner.submit(paired)
        assert len(runner) <= runner.max_in_flight
        out += runner.poll()
    return out + runner.poll(wait=True)


@pytest.mark.parametrize("in_flight", [1, 2])
def test_runner_returns_every_frame_in_order_with_the_engine_result(in_flight):
    model, size = demo_model()
    scene = DemoScene(seed=4, size=128, fps=10)
    frames = list(scene_frames(scene, range(12, 30)))
    plain = StreamingEngine(model, size)
    expected = [plain.step(p) for p in frames]
    runner = StreamRunner(StreamingEngine(model, size), max_in_flight=in_flight)
    got = run_through(runner, frames)
    assert [p.frame.index for p, _ in got] == [p.frame.index for p in frames]
    for (_, r), e in zip(got, expected, strict=True):
        assert np.array_equal(r.prob, e.prob) and r.keep_ratio == e.keep_ratio
        assert r.window == e.window
    assert runner.completed == runner.submitted == len(frames)
    assert runner.max_seen_in_flight <= in_flight


def test_runner_rejects_an_empty_ring():
    model, size = demo_model()
    with pytest.raises(ValueError, match="max_in_flight"):
        StreamRunner(StreamingEngine(model, size), max_in_flight=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_streams_match_the_cpu_engine():
    model, size = demo_model()
    scene = DemoScene(seed=4, size=128, fps=10)
    frames = list(scene_frames(scene, range(12, 30)))
    cpu = [StreamingEngine(model, size).step(p) for p in frames][-1]
    runner = StreamRunner(StreamingEngine(model.cuda(), size, "cuda"), max_in_flight=2)
    got = run_through(runner, frames)
    assert runner.max_seen_in_flight == 2
    assert float(np.abs(got[-1][1].prob - cpu.prob).max()) < 1e-3
