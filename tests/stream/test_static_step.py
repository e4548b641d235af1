"""The feature ring and the static step against the engine they replaced.

The oracle is that engine itself (``tests/stream/reference_engine.py``: per-frame features in a
list per stream, CIM carry on the host, one ``model.decode`` of the cached windows). Over 200+
steps with irregular timestamps, dropped frames, a late-joining stream and batches padded to a
bucket, every stream's newest-frame logits, window and keep ratio equal it bit for bit (eager
step), with CIM carry off and on; clip mode agrees within 1e-4. The step traces as one graph
(no graph break) for the demo, ResNet-50 and PVT-v2-b5 variants; compiled, it equals eager.
"""

from __future__ import annotations

import random

import pytest
import torch

from calib.scene_eval import scene_frames
from pcmanet.assets import DEMO_CHECKPOINT
from pcmanet.build import build_pcmanet
from pcmanet.checkpoint import load_checkpoint
from pcmanet.data.synthetic_demo import DemoScene
from pcmanet.variants import reference_config
from stream.buffers.frames import Frame, PairedFrame
from stream.engine.batch import DEFAULT_BUCKETS, BatchedEngine
from stream.engine.compiled import StepVariants, compile_unavailable
from stream.engine.engine import CarryConfig, StreamingEngine
from tests.stream.reference_engine import ReferenceEngine

MS = 1_000_000


@pytest.fixture(scope="module")
def demo() -> tuple[torch.nn.Module, int]:
    model, _cfg, extra = load_checkpoint(DEMO_CHECKPOINT)
    return model, int(extra["data"]["image_size"])


def irregular(seed: int, fps: float, count: int, start_s: float = 0.0) -> list[PairedFrame]:
    """``count`` frames of a demo scene whose capture times jitter by up to +-40 % of the
    frame period and skip frames now and then (drops before the engine)."""
    rng = random.Random(seed)
    scene = DemoScene(seed=seed, size=96, fps=fps)
    base = [f.paired for f in scene_frames(scene, range(2 * count))]
    out: list[PairedFrame] = []
    t = round(start_s * 1e9)
    for p in base:
        if rng.random() < 0.2:                       # dropped before the engine
            t += round(1e9 / fps)
            continue
        t += round(1e9 / fps * rng.uniform(0.6, 1.4))
        out.append(PairedFrame(Frame(p.frame.image, t, p.frame.index), p.logmel, None, None,
                               False))
        if len(out) == count:
            break
    return out


def schedule(streams: list[list[PairedFrame]], joins: list[int]) -> list[list[tuple[int, int]]]:
    """Per step, (stream, frame number) of the streams that have a frame: stream s joins at
    step joins[s] and then has one frame per step, except that it skips every 7th step."""
    steps, taken, k = [], [0] * len(streams), -1
    while any(t < len(f) for t, f in zip(taken, streams, strict=True)):
        k += 1
        ready = []
        for s, frames in enumerate(streams):
            if k >= joins[s] and taken[s] < len(frames) and (k + s) % 7:
                ready.append((s, taken[s]))
                taken[s] += 1
        if ready:
            steps.append(ready)
    return steps


@pytest.mark.slow
@pytest.mark.parametrize(("carry", "buckets"), [(True, None), (False, DEFAULT_BUCKETS)],
                         ids=["carry", "plain-padded"])
def test_ring_engine_equals_the_engine_it_replaced(demo, carry: bool, buckets) -> None:
    """3 streams (one joining late), 220 irregular frames in all: logits, windows and keep
    ratios bit for bit. Padded to a bucket, the audio encoder runs on the padded batch (the
    old engine embedded only the rows that needed it), a batch-size-dependent op order: then
    within 1e-4 (1.5e-5 seen), the batch contract."""
    model, size = demo
    cfg = CarryConfig(enabled=carry, refresh_every=4)
    streams = [irregular(3, 12, 90), irregular(8, 9, 70), irregular(12, 15, 60, 2.0)]
    ring = BatchedEngine(model, size, carry=cfg, buckets=buckets)
    ref = ReferenceEngine(model, size, carry=cfg, buckets=buckets)
    ring_states = [ring.new_stream() for _ in streams]
    ref_states = [ref.new_stream() for _ in streams]
    steps = schedule(streams, joins=[0, 0, 25])
    worst, keeps = 0.0, []
    for ready in steps:
        items = [(s, streams[s][i]) for s, i in ready]
        got = ring.step([(ring_states[s], p) for s, p in items])
        want = ref.step([(ref_states[s], p) for s, p in items])
        for g, w in zip(got, want, strict=True):
            worst = max(worst, float((g.logits - w.logits).abs().max()))
            assert g.window == w.window
            assert abs(g.keep_ratio - w.keep_ratio) <= (0.01 if buckets else 0.0)
            keeps.append(g.keep_ratio)
    assert worst <= (1e-4 if buckets else 0.0), worst
    assert len(keeps) == 220
    assert any(len(ready) == 3 for ready in steps)      # batches of 3 (padded to 4 in buckets)
    assert (ring.padded_rows > 0) == bool(buckets)
    for a, b in zip(ring_states, ref_states, strict=True):
        assert a.stats()["cache_held"] == b.cache.stats()["held"]
        assert a.stats()["cache_evicted"] == b.cache.stats()["evicted"]
        assert a.scheduled_refreshes == b.carry.scheduled_refreshes
    if carry:
        assert min(keeps) < max(keeps)                   # the carry did restrict queries


@pytest.mark.slow
def test_ring_engine_equals_clip_mode_over_irregular_frames(demo) -> None:
    """The newest frame decoded from the ring == the whole window through the model, 1e-4."""
    model, size = demo
    engine = StreamingEngine(model, size, keep_inputs=True)
    worst = 0.0
    for k, paired in enumerate(irregular(5, 10, 200)):
        result = engine.step(paired)
        if k % 10 == 0 or k < 5:
            worst = max(worst, float((engine.clip_logits() - result.logits).abs().max()))
    assert worst < 1e-4
    assert len(engine.state.inputs) == len(engine.cache)   # inputs kept only for held frames


@pytest.mark.parametrize("audio_rate_hz", [None, 2.0])
def test_audio_reuse_and_carry_tables_stay_per_stream(demo, audio_rate_hz) -> None:
    """Two streams in one batch each reuse their own audio embedding and carry their own
    masks: each equals its run alone."""
    model, size = demo
    cfg = CarryConfig(enabled=True, refresh_every=5)
    a, b = irregular(1, 10, 30), irregular(2, 10, 30)
    both = BatchedEngine(model, size, carry=cfg, audio_rate_hz=audio_rate_hz)
    sa, sb = both.new_stream(), both.new_stream()
    together = [both.step([(sa, p), (sb, q)]) for p, q in zip(a, b, strict=True)]
    for k, frames in enumerate((a, b)):
        alone = BatchedEngine(model, size, carry=cfg, audio_rate_hz=audio_rate_hz)
        s = alone.new_stream()
        for pair, p in zip(together, frames, strict=True):
            r = alone.step([(s, p)])[0]
            assert float((r.logits - pair[k].logits).abs().max()) < 1e-4
    if audio_rate_hz:
        assert sa.audio_embeddings < 30 and sb.audio_embeddings < 30


def test_tables_grow_with_streams_and_keep_their_rows(demo) -> None:
    model, size = demo
    engine = BatchedEngine(model, size)
    first = engine.new_stream()
    frames = irregular(4, 10, 8)
    before = [engine.step([(first, p)])[0].logits for p in frames[:4]]
    others = [engine.new_stream() for _ in range(2)]           # 1 -> 2 -> 4 stream rows
    assert engine.tables.streams == 4
    after = engine.step([(first, frames[4]), (others[0], frames[0])])[0]
    ref = BatchedEngine(model, size)
    s = ref.new_stream()
    for p in frames[:4]:
        ref.step([(s, p)])
    alone = ref.step([(s, frames[4])])[0]                     # a batch of 2 vs 1: 1e-4
    assert alone.window == after.window
    assert float((alone.logits - after.logits).abs().max()) < 1e-4
    assert len(before) == 4


def _reference_model(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_pcmanet(reference_config(variant, "s4"), with_audio_encoder=True).eval()


def _explain(model: torch.nn.Module, size: int, carry: bool) -> object:
    engine = BatchedEngine(model, size, carry=CarryConfig(enabled=carry),
                           audio_rate_hz=1.0 if carry else None)
    step = engine.steps_fn.steps[(True, True)]
    tb = engine.tables
    control = torch.tensor([[tb.trash_slot] * (model.num_frames + 1) + [tb.trash_stream, 1, 0]]
                           * 2)
    x, mel = torch.zeros(2, 3, size, size), torch.zeros(2, 1, 96, 64)
    with torch.inference_mode():
        return torch._dynamo.explain(step)(x, mel, control)


@pytest.mark.parametrize("carry", [False, True], ids=["plain", "carry"])
def test_the_demo_step_traces_as_one_graph(demo, carry: bool) -> None:
    model, size = demo
    ex = _explain(model, size, carry)
    assert ex.graph_break_count == 0, ex.break_reasons
    assert ex.graph_count == 1


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["resnet50", "pvt_v2_b5"])
def test_the_reference_steps_trace_as_one_graph(variant: str) -> None:
    ex = _explain(_reference_model(variant), 224, carry=True)
    assert ex.graph_break_count == 0, ex.break_reasons
    assert ex.graph_count == 1


def test_reference_r50_feature_ring_fits_40_mb_per_stream() -> None:
    """Keys/values and audio tokens of every slot a stream can hold, fp32, R50 at 224."""
    engine = BatchedEngine(_reference_model("resnet50"), 224)
    per_stream = engine.feature_bytes_per_stream()
    assert per_stream <= 40 * 2**20, per_stream / 2**20
    assert engine.slots >= 4.5 / 0.1                     # one slot per 0.1 s of the horizon


@pytest.mark.slow
def test_in_process_compiled_demo_step_equals_eager(demo) -> None:
    """torch.compile(fullgraph=True) of the demo step in this process (the CUDA and bf16 way;
    the CPU in fp32 compiles ahead of time: tests/stream/test_aot_step.py), run on 25 frames
    with carry: within 1e-3 of the eager step (QSCA dense masked instead of gathered,
    inductor's fused ops)."""
    why = compile_unavailable(torch.device("cpu"))
    if why is not None:
        pytest.skip(why)
    model, size = demo
    cfg = CarryConfig(enabled=True, refresh_every=4)
    compiled = BatchedEngine(model, size, carry=cfg, compile="on")
    compiled.steps_fn = StepVariants(model, compiled.tables, cfg, None, "on",
                                     compiled._autocast, aot=False)
    compiled.steps_fn.warm([(1, True)])
    assert compiled.steps_fn.compiled_variants == 1
    eager = BatchedEngine(model, size, carry=cfg)
    sc, se = compiled.new_stream(), eager.new_stream()
    worst = 0.0
    for p in irregular(6, 10, 25):
        a, b = compiled.step([(sc, p)])[0], eager.step([(se, p)])[0]
        worst = max(worst, float((a.logits - b.logits).abs().max()))
        assert a.window == b.window
        assert abs(a.keep_ratio - b.keep_ratio) < 0.02
    assert worst < 1e-3, worst
    assert compiled.steps_fn(1, True) is compiled.steps_fn._compiled[(1, True)]


@pytest.fixture(scope="module", params=["shared", "own"])
def gated_demo(demo, request) -> tuple[torch.nn.Module, int]:
    """The demo weights plus a kind gate (pcmanet/kind_gate.py) whose heads are random and whose
    term is strong, so that it really reshapes the masks the engine returns; its audio head
    hears a0 (shared) or each frame's own log-mel through its own encoder (own)."""
    from dataclasses import replace

    _model, cfg, _extra = load_checkpoint(DEMO_CHECKPOINT)
    torch.manual_seed(0)
    model = build_pcmanet(replace(cfg, kind_gate=True, kinds=("a", "b", "c"),
                                  gate_audio=request.param))
    model.load_state_dict(demo[0].state_dict(), strict=False)
    for p in model.gate.parameters():
        torch.nn.init.normal_(p, std=0.5)
    model.gate.scale.data.fill_(3.0)
    return model.eval(), demo[1]


def test_a_gated_model_streams_as_its_clip_mode_and_traces_as_one_graph(gated_demo) -> None:
    """The gate reads the decoded frame, its mask and its window's audio: the ring engine's
    newest-frame logits equal clip mode (1e-4), the gate did change them, and the step with the
    gate still traces as one graph."""
    model, size = gated_demo
    engine = StreamingEngine(model, size, keep_inputs=True)
    gate, worst, moved = model.gate, 0.0, 0.0
    for k, paired in enumerate(irregular(7, 10, 30)):
        result = engine.step(paired)
        if k % 5 == 4:
            worst = max(worst, float((engine.clip_logits() - result.logits).abs().max()))
            model.gate = None
            moved = max(moved, float((engine.clip_logits() - result.logits).abs().max()))
            model.gate = gate
    assert worst < 1e-4
    assert moved > 0.5
    ex = _explain(model, size, carry=True)
    assert ex.graph_break_count == 0, ex.break_reasons
    assert ex.graph_count == 1
