"""The multi-stream pipeline, driven synchronously: rings are filled by the test, and
``MultiPipeline.step_once`` runs one scheduling pass and one batched step, so every assertion is
about what happened, never about when. Masks go over a real ZeroMQ socket (inproc)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from pcmanet.assets import DEMO_CHECKPOINT
from pcmanet.checkpoint import load_checkpoint
from stream.buffers.frame_ring import FrameRing
from stream.buffers.frames import Frame
from stream.capture.base import _SourceThread
from stream.engine.batch import BatchedEngine
from stream.run.multi import Lane, MultiPipeline, RoundRobin
from stream.transport.publish import MaskPublisher
from stream.transport.subscribe import MaskSubscriber

GOOD = np.full((64, 64, 3), 90, np.uint8)                    # (H, W, 3) uint8 BGR
GREY = np.full((64, 64), 90, np.uint8)                       # a camera gone greyscale
MS = 1_000_000


class Idle(_SourceThread):
    """A source that is never started: the test writes its ring."""

    def __init__(self) -> None:
        super().__init__("test-source", lambda: 0, lambda s: None)


@pytest.fixture(scope="module")
def engine_parts():
    model, _, extra = load_checkpoint(DEMO_CHECKPOINT)
    return model, int(extra["data"]["image_size"])


@pytest.fixture
def publisher() -> Iterator[MaskPublisher]:
    with MaskPublisher(f"inproc://multi-{uuid.uuid4().hex}", "s0", stats_interval_s=None,
                       sndhwm=10_000) as pub:
        yield pub


def build(engine_parts, publisher: MaskPublisher, n: int, max_batch: int, ring: int = 8,
          take: str = "newest", max_errors: int = 3) -> MultiPipeline:
    model, size = engine_parts
    engine = BatchedEngine(model, size)
    lanes = [Lane(f"s{i}", FrameRing(ring), None, [Idle()], engine.new_stream(), take=take)
             for i in range(n)]
    for lane in lanes[1:]:
        publisher.add_stream(lane.name)
    return MultiPipeline(lanes=lanes, engine=engine, publisher=publisher, threshold=0.5,
                         model_name="demo", max_batch=max_batch,
                         max_consecutive_errors=max_errors)


def feed(lane: Lane, count: int, start: int = 0, image: np.ndarray = GOOD) -> None:
    for i in range(start, start + count):
        lane.frames.put(Frame(image, (i + 1) * 40 * MS, i))


def test_round_robin_serves_every_ready_stream_in_turn(engine_parts, publisher) -> None:
    """5 streams always ready, batches of 2: each served every ceil(5/2) = 3 steps."""
    pipe = build(engine_parts, publisher, n=5, max_batch=2)
    served: list[list[str]] = []
    for step in range(15):
        for lane in pipe.lanes:
            feed(lane, 1, start=step)
        served.append([lane.name for lane, _ in pipe.scheduler.pick(pipe.lanes)])
    assert all(len(s) == 2 for s in served)
    counts = {lane.name: sum(lane.name in s for s in served) for lane in pipe.lanes}
    assert counts == dict.fromkeys(counts, 6)                # 15 steps x 2 / 5 streams
    for name in counts:                                      # never more than 3 steps apart
        steps = [k for k, s in enumerate(served) if name in s]
        assert max(np.diff(steps)) <= math.ceil(5 / 2)


def test_round_robin_skips_streams_without_a_frame() -> None:
    rr = RoundRobin(max_batch=8)
    assert rr.pick([]) == []
    with pytest.raises(ValueError):
        RoundRobin(0)


def test_saturated_engine_drops_per_stream_and_publishes_the_newest(engine_parts,
                                                                     publisher) -> None:
    """Three streams deliver 1, 4 and 7 frames before a step: each gets its newest frame
    segmented, and its older frames are counted as dropped in its own ring."""
    pipe = build(engine_parts, publisher, n=3, max_batch=8)
    sub = MaskSubscriber(publisher.url, topic="mask/", context=None)
    try:
        assert publisher.wait_for_subscriber("mask/s0", 5)
        for lane, k in zip(pipe.lanes, (1, 4, 7), strict=True):
            feed(lane, k)
        done = pipe.step_once()
        assert [(lane.name, p.frame.index) for lane, p, _, _ in done] == \
            [("s0", 0), ("s1", 3), ("s2", 6)]
        for item in done:
            pipe.publish(item)
        got = [sub.recv(5) for _ in range(3)]
    finally:
        sub.close()
    assert [(m.header["stream"], m.header["seq"], m.header["frame_index"]) for m in got] == \
        [("s0", 0, 0), ("s1", 0, 3), ("s2", 0, 6)]           # one seq per stream
    assert [m.mask.shape for m in got] == [(64, 64)] * 3
    drops = {lane.name: lane.frames.stats()["dropped"] for lane in pipe.lanes}
    assert drops == {"s0": 0, "s1": 3, "s2": 6}
    stats = pipe.counters()
    assert stats["batch"] == {"steps": 1, "rows": 3, "padded_rows": 0, "mean_size": 3.0}
    s2 = stats["streams"]["s2"]
    assert s2["state"] == "running" and s2["frame_ring"]["dropped"] == 6
    assert s2["engine"]["published"] == 1 and s2["latency_ms"]["masks"] == 1


def test_take_all_processes_every_frame_in_order(engine_parts, publisher) -> None:
    pipe = build(engine_parts, publisher, n=2, max_batch=8, take="all")
    feed(pipe.lanes[0], 3)
    feed(pipe.lanes[1], 1)
    order = []
    while done := pipe.step_once():
        order.append([(lane.name, p.frame.index) for lane, p, _, _ in done])
    assert order == [[("s0", 0), ("s1", 0)], [("s0", 1)], [("s0", 2)]]
    assert all(lane.frames.stats()["dropped"] == 0 for lane in pipe.lanes)


def test_a_stream_whose_frames_keep_failing_ends_alone(engine_parts, publisher) -> None:
    """s1's camera goes greyscale: its frames fail (the batch is retried frame by frame), s1
    ends as failed after 3 in a row, and s0 and s2 are segmented in every step."""
    pipe = build(engine_parts, publisher, n=3, max_batch=8, max_errors=3)
    per_step = []
    for step in range(5):
        feed(pipe.lanes[0], 1, start=step)
        feed(pipe.lanes[1], 1, start=step, image=GREY)
        feed(pipe.lanes[2], 1, start=step)
        per_step.append(sorted(lane.name for lane, _, _, _ in pipe.step_once()))
    assert per_step == [["s0", "s2"]] * 5
    bad = pipe.lanes[1]
    assert bad.status == "failed" and bad.frame_errors == 3
    assert bad.error is not None and bad.error.startswith("3 frames in a row failed")
    assert "expected a (H, W, 3) uint8 BGR frame" in bad.error
    assert [lane.status for lane in pipe.lanes] == ["running", "failed", "running"]
    assert pipe.lanes[0].state.frames == pipe.lanes[2].state.frames == 5
    assert pipe.counters()["streams"]["s1"]["state"] == "failed"


def test_a_stream_whose_source_failed_ends_alone(engine_parts, publisher) -> None:
    pipe = build(engine_parts, publisher, n=2, max_batch=8)
    src = pipe.lanes[0].sources[0]
    src.error = RuntimeError("camera unplugged")
    pipe.lanes[0].check_sources()
    pipe.lanes[1].check_sources()
    assert pipe.lanes[0].status == "failed" and "camera unplugged" in str(pipe.lanes[0].error)
    assert pipe.lanes[1].status == "running"
    feed(pipe.lanes[0], 1)                                   # its ring is closed: dropped
    feed(pipe.lanes[1], 1)
    assert [lane.name for lane, _, _, _ in pipe.step_once()] == ["s1"]
