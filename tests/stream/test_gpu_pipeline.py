"""StreamRunner: frames in flight through copy-in | compute | copy-out, in order, bounded.

On the CPU the stages run in sequence and the ring/ordering logic is checked against the plain
engine; on a CUDA machine the same checks run on real streams (skipped without a GPU). The
overlap figures (stream/engine/timeline.py) are checked on hand-made intervals.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pcmanet.data.synthetic_demo import DemoScene
from stream.engine.engine import StreamingEngine
from stream.engine.gpu_pipeline import StreamRunner
from stream.engine.staging import HostRing
from stream.engine.timeline import FrameSpan, hidden_copy_share, in_flight_curve, summary
from tests.stream.test_engine import demo_model, scene_frames

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


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
    runner = StreamRunner(StreamingEngine(model, size), max_in_flight=in_flight, timeline=True)
    got = run_through(runner, frames)
    assert [p.frame.index for p, _ in got] == [p.frame.index for p in frames]
    for (_, r), e in zip(got, expected, strict=True):
        assert np.array_equal(r.prob, e.prob) and r.keep_ratio == e.keep_ratio
        assert r.window == e.window
    assert runner.completed == runner.submitted == len(frames)
    assert runner.max_seen_in_flight <= in_flight
    # the host slots were made once per slot and reused (mask and keep buffers)
    assert runner.host.allocations == 2 * in_flight
    # CPU: the stages ran in sequence, in pipeline order, frame after frame
    spans = runner.timeline()
    assert len(spans) == len(frames)
    for s in spans:
        assert s.copy_in[0] <= s.copy_in[1] <= s.compute[0] <= s.compute[1] \
            <= s.copy_out[0] <= s.copy_out[1]
    assert all(a.copy_out[1] <= b.copy_in[0] for a, b in itertools.pairwise(spans))
    assert summary(spans)["max_in_flight"] == 1 and hidden_copy_share(spans) == 0.0


def test_submitting_without_polling_keeps_at_most_the_ring_in_flight():
    model, size = demo_model()
    frames = list(scene_frames(DemoScene(seed=5, size=128, fps=10), range(6)))
    runner = StreamRunner(StreamingEngine(model, size), max_in_flight=2)
    retired = []
    for p in frames:
        retired += runner.submit(p)
        assert len(runner) == min(2, runner.submitted)
    assert [p.frame.index for p, _ in retired] == [p.frame.index for p in frames[:4]]
    assert len(runner.poll(wait=True)) == 2 and runner.max_seen_in_flight == 2


def test_runner_rejects_an_empty_ring():
    model, size = demo_model()
    with pytest.raises(ValueError, match="max_in_flight"):
        StreamRunner(StreamingEngine(model, size), max_in_flight=0)
    with pytest.raises(ValueError, match="at least one slot"):
        HostRing(0, pinned=False)


def test_host_slots_keep_one_buffer_per_name_and_shape():
    ring = HostRing(2, pinned=False)
    a = ring.acquire()
    first = a.download("prob", torch.ones(4, 5))
    ring.acquire()
    again = ring.acquire()
    assert again is a
    assert a.download("prob", torch.zeros(4, 5)).data_ptr() == first.data_ptr()
    other = a.download("prob", torch.zeros(6, 5))             # another frame size: its own
    assert a.buffers["prob"] is other
    assert a.download("prob", torch.ones(4, 5)).data_ptr() == first.data_ptr()
    assert torch.equal(a.buffers["prob"], torch.ones(4, 5))
    assert ring.allocations == 2 and a.ready()


def span(cin: tuple[float, float], comp: tuple[float, float], cout: tuple[float, float]
         ) -> FrameSpan:
    return FrameSpan(cin, comp, cout)


def test_overlap_figures_on_hand_made_intervals():
    # frame 1's copy-in (2..4) runs under frame 0's compute (1..5), frame 0's copy-out (5..6)
    # under frame 1's compute (5..9); the other two copies are not hidden
    spans = [span((0, 1), (1, 5), (5, 6)), span((2, 4), (5, 9), (9, 10))]
    assert hidden_copy_share(spans) == pytest.approx(3 / 5)   # 2 + 1 ms of 1 + 1 + 2 + 1
    assert in_flight_curve(spans) == [(0, 1), (2, 2), (6, 1), (10, 0)]
    assert summary(spans)["max_in_flight"] == 2
    back_to_back = [span((0, 1), (1, 2), (2, 3)), span((3, 4), (4, 5), (5, 6))]
    assert hidden_copy_share(back_to_back) == 0.0
    assert summary(back_to_back)["max_in_flight"] == 1        # one ends as the next starts


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "graphed"])
def test_cuda_streams_match_the_cpu_engine(no_tf32, graphs: bool):
    model, size = demo_model()
    scene = DemoScene(seed=4, size=128, fps=10)
    frames = list(scene_frames(scene, range(12, 30)))
    cpu = [StreamingEngine(model, size).step(p) for p in frames][-1]
    engine = StreamingEngine(model.cuda(), size, "cuda", cuda_graphs=graphs)
    runner = StreamRunner(engine, max_in_flight=2, timeline=True)
    got = run_through(runner, frames)
    assert [p.frame.index for p, _ in got] == [p.frame.index for p in frames]
    assert float(np.abs(got[-1][1].prob - cpu.prob).max()) < 1e-3
    assert len(runner.timeline()) == len(frames)


@pytest.mark.gpu
@needs_cuda
def test_cuda_runner_holds_two_frames_when_not_polled():
    model, size = demo_model()
    frames = list(scene_frames(DemoScene(seed=5, size=128, fps=10), range(8)))
    runner = StreamRunner(StreamingEngine(model.cuda(), size, "cuda", cuda_graphs=True), 2)
    for p in frames:
        runner.submit(p)
    assert runner.max_seen_in_flight == 2 and len(runner.poll(wait=True)) == 2


@pytest.mark.gpu
@needs_cuda
def test_cuda_clip_mode_keep_ratio_crosses_streams():
    """Clip mode's keep ratio lives on the device (``keep_fraction``), so ``record_stream``
    on the copy-out stream accepts it."""
    model, size = demo_model()
    runner = StreamRunner(StreamingEngine(model.cuda(), size, "cuda", mode="clip"), 2)
    got = run_through(runner, list(scene_frames(DemoScene(seed=2, size=128, fps=5), range(6))))
    assert len(got) == 6 and all(0.0 <= r.keep_ratio <= 1.0 for _, r in got)
