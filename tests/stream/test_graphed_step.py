"""The static step per batch bucket through static buffers (stream/engine/cuda_graphs.py).

On the CPU a :class:`GraphedStep` runs the step directly on its static buffers: results equal
the eager batched engine, buffers are reused, the smallest bucket holding the batch is used and
warming up touches no stream. On a CUDA machine the same checks run on captured graphs
(skipped without a GPU).
"""

from __future__ import annotations

import copy

import pytest
import torch

from calib.scene_eval import scene_frames
from pcmanet.assets import DEMO_CHECKPOINT
from pcmanet.checkpoint import load_checkpoint
from pcmanet.data.synthetic_demo import DemoScene
from stream.engine.batch import DEFAULT_BUCKETS, BatchedEngine
from stream.engine.cuda_graphs import GraphedStep, GraphedSteps
from stream.engine.engine import CarryConfig, StreamingEngine

SCENES = [DemoScene(seed=s, size=96 + 16 * s, fps=5) for s in range(3)]
READY = [[0], [0, 1], [0, 1, 2], [1, 2], [0, 1, 2], [2], [0, 1]]   # streams with a frame, per step
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def demo() -> tuple[torch.nn.Module, int]:
    model, _cfg, extra = load_checkpoint(DEMO_CHECKPOINT)
    return model, int(extra["data"]["image_size"])


def drive(engine: BatchedEngine) -> list[list[torch.Tensor]]:
    """READY's schedule through ``engine`` -> logits per stream, in order."""
    frames = [[f.paired for f in scene_frames(sc, range(len(READY)))] for sc in SCENES]
    states = [engine.new_stream() for _ in SCENES]
    taken, out = [0] * len(SCENES), [[] for _ in SCENES]
    for ready in READY:
        results = engine.step([(states[s], frames[s][taken[s]]) for s in ready])
        for s, r in zip(ready, results, strict=True):
            taken[s] += 1
            out[s].append(r.logits)
    return out


def worst(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> float:
    return max(float((x.cpu() - y.cpu()).abs().max())
               for xs, ys in zip(a, b, strict=True) for x, y in zip(xs, ys, strict=True))


def scale(a: list[list[torch.Tensor]]) -> float:
    """The largest |logit|, at least 1 (bf16 errors are relative)."""
    return max(1.0, max(float(x.abs().max()) for xs in a for x in xs))



@pytest.mark.parametrize("carry", [False, True], ids=["plain", "carry"])
def test_static_buffers_give_the_eager_engines_logits(demo, carry: bool) -> None:
    model, size = demo
    cfg = CarryConfig(enabled=carry, refresh_every=3)
    graphed = BatchedEngine(model, size, carry=cfg, graphs=True)
    eager = BatchedEngine(model, size, carry=cfg, buckets=DEFAULT_BUCKETS)
    assert graphed.buckets == DEFAULT_BUCKETS                      # graphs imply buckets
    assert worst(drive(graphed), drive(eager)) < 1e-4
    steps = graphed.steps_fn
    assert isinstance(steps, GraphedSteps)
    # batches of 1, 2 and 3 streams ran in the smallest buckets holding them: 1, 2, 4
    assert sorted(P for P, _ in steps.graphs) == [1, 2, 4]
    assert graphed.padded_rows == eager.padded_rows == 2           # the two batches of 3
    assert steps.captured == 0 and steps.replays == 0              # CPU: nothing captured


def test_every_call_reuses_the_static_buffers(demo) -> None:
    model, size = demo
    engine = BatchedEngine(model, size, graphs=True)
    state = engine.new_stream()
    frames = [f.paired for f in scene_frames(SCENES[0], range(5))]
    engine.step([(state, frames[0])])
    g = engine.steps_fn(1, True)
    assert isinstance(g, GraphedStep)
    ptrs = [t.data_ptr() for t in g.static_buffers()]
    assert len(ptrs) == 5                                           # x, mel, control, logits, keep
    outs = [engine.step([(state, p)])[0].logits for p in frames[1:]]
    assert [t.data_ptr() for t in g.static_buffers()] == ptrs
    assert g.calls == 5
    # results are copies: a later call does not change an earlier frame's logits
    assert all(o.data_ptr() != g.logits.data_ptr() for o in outs)  # type: ignore[union-attr]
    assert not torch.equal(outs[0], outs[-1])


def test_warming_a_bucket_touches_no_stream(demo) -> None:
    model, size = demo
    engine = BatchedEngine(model, size, graphs=True, streams=2)
    state = engine.new_stream()
    frames = [f.paired for f in scene_frames(SCENES[1], range(3))]
    engine.step([(state, frames[0])])
    before = {k: v.clone() for k, v in engine.tables.named_buffers()}
    engine.steps_fn.warm([(2, True), (4, True), (1, False)])       # type: ignore[union-attr]
    rows = engine.tables.streams * engine.tables.slots              # the trash rows after these
    for name, buf in engine.tables.named_buffers():
        keep = rows if name.startswith("ring_") else engine.tables.streams
        assert torch.equal(buf[:keep], before[name][:keep]), name
    alone = BatchedEngine(model, size, graphs=True)
    other = alone.new_stream()
    alone.step([(other, frames[0])])
    a = engine.step([(state, frames[1])])[0].logits
    b = alone.step([(other, frames[1])])[0].logits
    assert torch.equal(a, b)


def test_more_streams_than_the_tables_hold_capture_again(demo) -> None:
    model, size = demo
    graphed = BatchedEngine(model, size, graphs=True, streams=1)
    eager = BatchedEngine(model, size, buckets=DEFAULT_BUCKETS, streams=1)
    assert worst(drive(graphed), drive(eager)) < 1e-4               # 3 streams: tables grew
    assert graphed.tables.streams >= 3


def test_channels_last_frames_give_the_same_logits(demo) -> None:
    model, size = demo
    cl = BatchedEngine(copy.deepcopy(model), size, graphs=True, channels_last=True)
    assert cl.channels_last
    g = cl.steps_fn(2, True)
    assert g.x.is_contiguous(memory_format=torch.channels_last)
    assert worst(drive(cl), drive(BatchedEngine(model, size, graphs=True))) < 1e-4


def test_graphs_and_compile_are_exclusive(demo) -> None:
    model, size = demo
    with pytest.raises(ValueError, match="exclusive"):
        BatchedEngine(model, size, graphs=True, compile="on")


# -- on a GPU ---------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graphs_per_bucket_match_the_eager_step(demo, no_tf32, precision: str) -> None:
    model, size = demo
    model = copy.deepcopy(model).cuda()
    graphed = BatchedEngine(model, size, "cuda", graphs=True, precision=precision)
    eager = BatchedEngine(model, size, "cuda", buckets=DEFAULT_BUCKETS, precision=precision)
    assert graphed.channels_last and not eager.graphs      # the model is channels-last now
    a, b = drive(graphed), drive(eager)
    assert worst(a, b) < (1e-3 if precision == "fp32" else 5e-2 * scale(b))
    steps = graphed.steps_fn
    assert isinstance(steps, GraphedSteps)
    assert steps.captured == 3 and steps.replays == len(READY)      # buckets 1, 2 and 4


@pytest.mark.gpu
@needs_cuda
def test_cuda_graphed_streaming_engine_matches_eager(demo, no_tf32) -> None:
    """``cuda_graphs`` on the one-stream engine: the whole step from one graph."""
    model, size = demo
    model = copy.deepcopy(model).cuda()
    eager = StreamingEngine(model, size, "cuda")
    graphed = StreamingEngine(model, size, "cuda", cuda_graphs=True)
    for f in scene_frames(SCENES[2], range(12)):
        a, b = eager.step(f.paired), graphed.step(f.paired)
        assert float((a.logits - b.logits).abs().max()) < 1e-3
        assert a.window == b.window
    assert graphed.graphs is not None and graphed.graphs.replays == 12
