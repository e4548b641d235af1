"""A step that raises after it wrote the new frame into the feature ring (in decode) leaves every
stream as it was: nothing inserted, the carry's refresh schedule not advanced, the audio reuse
not moved, and the following frames decode exactly as if the failed frame had never come.
The multi-stream retry (a failed batch run again frame by frame) puts each good frame in once.

The fault is injected into ``decode_rows`` (no real input makes decode fail after encode
succeeded), by call number, so which call fails is decided, not timed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from pcmanet.assets import DEMO_CHECKPOINT
from pcmanet.checkpoint import load_checkpoint
from stream.buffers.frame_ring import FrameRing
from stream.buffers.frames import Frame
from stream.engine.batch import BatchedEngine
from stream.engine.engine import CarryConfig, StreamingEngine
from stream.run.multi import Lane, MultiPipeline
from stream.transport.publish import MaskPublisher
from tests.stream.test_multi_pipeline import Idle
from tests.stream.test_static_step import irregular

CARRY = CarryConfig(enabled=True, refresh_every=3)


class DecodeFault(RuntimeError):
    pass


@pytest.fixture
def model() -> torch.nn.Module:
    model, _cfg, _extra = load_checkpoint(DEMO_CHECKPOINT)
    return model


def fail_calls(monkeypatch: pytest.MonkeyPatch, model: torch.nn.Module, failing: set[int]
               ) -> list[int]:
    """Make ``model.decode_rows`` raise on the given call numbers (0-based); -> the calls."""
    real, calls = model.decode_rows, []

    def decode_rows(*args, **kwargs):
        calls.append(len(calls))
        if calls[-1] in failing:
            raise DecodeFault(f"decode failed on call {calls[-1]}")
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "decode_rows", decode_rows)
    return calls


def test_a_frame_failing_in_decode_leaves_the_stream_as_it_was(model, monkeypatch) -> None:
    frames = irregular(7, 10, 14)
    size = 128
    clean = StreamingEngine(model, size, carry=CARRY, audio_rate_hz=3.0)
    want = [clean.step(p) for k, p in enumerate(frames) if k != 6]   # frame 6 never came
    calls = fail_calls(monkeypatch, model, failing={6})
    engine = StreamingEngine(model, size, carry=CARRY, audio_rate_hz=3.0)
    got = []
    for k, p in enumerate(frames):
        before = (engine.state.stats(), engine.state.index.held, engine.state.last_audio_ns)
        if k == 6:
            with pytest.raises(DecodeFault):
                engine.step(p)
            assert (engine.state.stats(), engine.state.index.held,
                    engine.state.last_audio_ns) == before
            continue
        got.append(engine.step(p))
    assert len(calls) == len(frames)
    for a, b in zip(got, want, strict=True):
        assert a.window == b.window
        assert torch.equal(a.logits, b.logits)
    assert engine.state.stats() == clean.state.stats()


@pytest.fixture
def publisher() -> Iterator[MaskPublisher]:
    with MaskPublisher(f"inproc://step-faults-{uuid.uuid4().hex}", "a", stats_interval_s=None,
                       sndhwm=1000) as pub:
        pub.add_stream("b")
        yield pub


def test_the_retry_after_a_failed_batch_puts_each_frame_in_once(model, monkeypatch,
                                                                 publisher) -> None:
    """Batch [a, b] fails in decode; the retry runs a alone (passes) and b alone (fails):
    a's frame is in its ring once and its carry moved once; b is as before the batch."""
    size = 128
    engine = BatchedEngine(model, size, carry=CARRY)
    lanes = [Lane(name, FrameRing(8), None, [Idle()], engine.new_stream()) for name in "ab"]
    pipe = MultiPipeline(lanes=lanes, engine=engine, publisher=publisher, threshold=0.5,
                         model_name="demo", max_batch=2, max_consecutive_errors=5)
    image = np.full((64, 64, 3), 90, np.uint8)
    for k in range(3):                                        # two good steps first
        for lane in lanes:
            lane.frames.put(Frame(image, (k + 1) * 100_000_000, k))
        if k < 2:
            assert len(pipe.step_once()) == 2
    a, b = lanes[0].state, lanes[1].state
    before = {s: (s.stats(), s.index.held) for s in (a, b)}
    calls = fail_calls(monkeypatch, model, failing={0, 2})   # the batch, then b alone
    done = pipe.step_once()
    assert len(calls) == 3
    assert [lane.name for lane, *_ in done] == ["a"]
    assert a.index.inserted == before[a][0]["cache_inserted"] + 1
    assert a.frames == before[a][0]["frames"] + 1
    assert a.stats()["carry_refreshes"] + a.since_refresh == 3   # one schedule step per frame
    assert (b.stats(), b.index.held) == before[b]
    assert lanes[1].frame_errors == 1 and lanes[0].frame_errors == 0
