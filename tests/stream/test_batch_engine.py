"""The batched engine: a stream's logits in a batch of N equal its logits alone (1e-4), with CIM
carry off and on, with and without bucket padding; per-stream state stays per stream."""

from __future__ import annotations

import pytest
import torch

from calib.scene_eval import scene_frames
from pcmanet.assets import DEMO_CHECKPOINT
from pcmanet.checkpoint import load_checkpoint
from pcmanet.data.synthetic_demo import DemoScene
from stream.engine.batch import DEFAULT_BUCKETS, BatchedEngine, pad_to
from stream.engine.engine import CarryConfig

# Three streams: different scenes (seeds), frame sizes and frame rates. Stream 2 joins late and
# skips every third step, so batches of 1, 2 and 3 occur and streams refresh out of step.
SCENES = [DemoScene(seed=3, size=160, fps=5), DemoScene(seed=8, size=128, fps=5),
          DemoScene(seed=12, size=96, fps=4)]
STEPS = 14


@pytest.fixture(scope="module")
def demo() -> tuple[torch.nn.Module, int]:
    model, _cfg, extra = load_checkpoint(DEMO_CHECKPOINT)
    return model, int(extra["data"]["image_size"])


def schedule() -> list[list[int]]:
    """Per step, the streams that have a frame."""
    steps = []
    for k in range(STEPS):
        ready = [0, 1] if k % 4 != 3 else [1]
        if k >= 3 and k % 3:
            ready.append(2)
        steps.append(ready)
    return steps


def run(engine: BatchedEngine, streams: list[int], together: bool
        ) -> dict[int, list[torch.Tensor]]:
    """Drive the streams through ``schedule()``: one batched step per schedule step
    (``together``), or each stream's frame in a step of its own -> logits per stream."""
    frames = {s: [f.paired for f in scene_frames(SCENES[s], range(STEPS))] for s in streams}
    states = {s: engine.new_stream() for s in streams}
    taken = dict.fromkeys(streams, 0)
    out: dict[int, list[torch.Tensor]] = {s: [] for s in streams}
    for ready in schedule():
        batch = [s for s in ready if s in streams]
        groups = [batch] if together else [[s] for s in batch]
        for group in groups:
            if not group:
                continue
            items = [(states[s], frames[s][taken[s]]) for s in group]
            for s in group:
                taken[s] += 1
            for s, r in zip(group, engine.step(items), strict=True):
                out[s].append(r.logits)
                assert r.prob.shape == SCENES[s].frame(0)[1].shape
    return out


@pytest.mark.parametrize(("carry", "buckets"), [
    (False, None), (True, None), (True, DEFAULT_BUCKETS)], ids=["plain", "carry", "buckets"])
def test_a_stream_in_a_batch_equals_the_stream_alone(demo, carry: bool, buckets) -> None:
    model, size = demo
    cfg = CarryConfig(enabled=carry, refresh_every=4)
    batched = BatchedEngine(model, size, carry=cfg, buckets=buckets)
    together = run(batched, [0, 1, 2], together=True)
    worst = 0.0
    for s in range(3):
        alone = run(BatchedEngine(model, size, carry=cfg), [s], together=False)[s]
        assert len(alone) == len(together[s]) > 0
        for a, b in zip(alone, together[s], strict=True):
            worst = max(worst, float((a - b).abs().max()))
    assert worst < 1e-4, worst
    assert batched.steps == STEPS and batched.rows == sum(len(v) for v in together.values())
    if buckets:
        assert batched.padded_rows > 0          # batches of 3 ran padded to 4


def test_state_stays_per_stream(demo) -> None:
    """Caches, carry schedules and audio reuse are counted per stream, not per batch."""
    model, size = demo
    eng = BatchedEngine(model, size, carry=CarryConfig(enabled=True, refresh_every=4),
                        audio_rate_hz=1.0)
    a, b = eng.new_stream(), eng.new_stream()
    fa = [f.paired for f in scene_frames(SCENES[0], range(8))]      # 5 FPS: 1.6 s
    fb = [f.paired for f in scene_frames(SCENES[2], range(4))]      # 4 FPS: 1 s
    for k in range(8):
        items = [(a, fa[k])] + ([(b, fb[k // 2])] if k % 2 else [])
        eng.step(items)
    assert (a.frames, b.frames) == (8, 4)
    assert a.cache.inserted == 8 and b.cache.inserted == 4
    assert a.scheduled_refreshes == 2 and b.scheduled_refreshes == 1
    assert a.audio_embeddings == 2 and b.audio_embeddings == 1      # once per second each


def test_one_frame_per_stream_per_batch(demo) -> None:
    model, size = demo
    eng = BatchedEngine(model, size)
    s = eng.new_stream()
    f = next(iter(scene_frames(SCENES[0], [0]))).paired
    with pytest.raises(ValueError, match="at most one frame per stream"):
        eng.step([(s, f), (s, f)])


@pytest.mark.parametrize(("n", "buckets", "expected"), [
    (1, None, 1), (3, None, 3), (1, DEFAULT_BUCKETS, 1), (3, DEFAULT_BUCKETS, 4),
    (5, (2, 8), 8), (64, DEFAULT_BUCKETS, 64)])
def test_pad_to_picks_the_smallest_bucket(n: int, buckets, expected: int) -> None:
    assert pad_to(n, buckets) == expected


def test_pad_to_refuses_batches_beyond_the_buckets() -> None:
    with pytest.raises(ValueError, match="exceeds the largest bucket 4"):
        pad_to(5, (1, 2, 4))
