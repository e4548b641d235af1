"""The streaming engine: cached per-frame features + newest-frame decode == clip mode (1e-4),
the bounded feature cache, and CIM carry-over across frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calib.scene_eval import scene_frames as calib_scene_frames
from pcmanet.assets import DEMO_CHECKPOINT
from pcmanet.build import build_pcmanet
from pcmanet.checkpoint import load_checkpoint
from pcmanet.data.synthetic_demo import DemoScene
from pcmanet.model import keep_fraction
from pcmanet.variants import reference_config
from stream.buffers.frames import Frame, PairedFrame
from stream.engine.engine import CarryConfig, StreamingEngine
from stream.engine.preprocess import Preprocessor, aa_weights
from stream.engine.ring import WindowIndex, ring_slots

NS = 1_000_000_000


def scene_frames(scene: DemoScene, indices):
    """PairedFrames of the scene: frame i stamped i / fps, with the audio window ending at it."""
    return (f.paired for f in calib_scene_frames(scene, indices))


def demo_model():
    model, _cfg, extra = load_checkpoint(DEMO_CHECKPOINT)
    return model, extra["data"]["image_size"]


def test_newest_frame_equals_clip_mode_on_the_demo_model():
    torch.manual_seed(0)
    model, size = demo_model()
    engine = StreamingEngine(model, size, keep_inputs=True)
    scene = DemoScene(seed=3, size=160, fps=5)
    worst, windows = 0.0, []
    for paired in scene_frames(scene, range(0, 30)):
        result = engine.step(paired)
        windows.append(result.window)
        if paired.frame.index % 3 == 0 or paired.frame.index < 5:
            clip = engine.clip_logits()
            worst = max(worst, float((clip - result.logits).abs().max()))
    assert worst < 1e-4
    assert windows[0] == [0, 0, 0, 0, 0]           # before history exists: oldest repeated
    assert windows[-1] == [9, 14, 19, 24, 29]      # 1 s apart at 5 FPS
    assert result.prob.shape == (160, 160) and result.prob.dtype == np.float32


def _sharpen_heads(model, frames, audio, spread: float = 6.0) -> None:
    """Scale each head's last conv so its logits have std ``spread``: random weights give
    p ~ 0.5 everywhere (all tokens uncertain); this makes CIM masks mixed."""
    with torch.inference_mode():
        logits = model(frames, audio).logits
    for head, out in zip(model.heads, logits, strict=True):
        conv = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        factor = spread / float(out.std())
        conv.weight.data.mul_(factor)
        conv.bias.data.mul_(factor)


@pytest.mark.slow
def test_newest_frame_equals_clip_mode_on_the_reference_resnet50():
    """Reference mode (ResNet-50, VGGish, scrambled tokens, threshold 0.99), random weights."""
    torch.manual_seed(1)
    cfg = reference_config("resnet50", "s4")
    model = build_pcmanet(cfg, with_audio_encoder=True).eval()
    scene = DemoScene(seed=1, size=224, fps=5)
    probe = list(scene_frames(scene, range(20, 25)))
    pre = Preprocessor(224)
    _sharpen_heads(model, torch.cat([pre(p.frame.image) for p in probe]),
                   torch.cat([torch.from_numpy(p.logmel)[None, None] for p in probe]))
    engine = StreamingEngine(model, 224, spacing_s=0.4, keep_inputs=True)
    ratios, worst = [], 0.0
    for paired in scene_frames(scene, range(0, 12)):
        result = engine.step(paired)
        ratios.append(result.keep_ratio)
        if paired.frame.index in (0, 5, 11):
            worst = max(worst, float((engine.clip_logits() - result.logits).abs().max()))
    assert worst < 1e-4
    assert min(ratios) > 0.0 and max(ratios) < 1.0     # masks were mixed: gather paths ran


def test_ring_index_is_bounded_and_keeps_window_frames():
    ring = WindowIndex(ring_slots(4.5, 0.1), horizon_s=4.5, retain_s=0.1, T=5, spacing_s=1.0)
    slots_seen = set()
    for i in range(300):                                # 10 s at 30 FPS
        plan = ring.plan(round(i * NS / 30), i)
        assert plan.write not in {h.slot for h in ring.held}   # never a slot still held
        ring.commit(plan)
        slots_seen.add(plan.write)
    assert len(ring) <= 4.5 / 0.1 + 3                   # ~one per 0.1 s over the horizon
    assert max(slots_seen) < ring.slots
    window = list(plan.frames)
    assert window[-1] == 299
    for j, idx in enumerate(window[:-1]):               # within half a retain step of t - k s
        assert abs(idx - (299 - 30 * (4 - j))) <= 3
    assert ring.inserted == 300 and ring.evicted == 300 - len(ring)
    with pytest.raises(ValueError, match="capture order"):
        ring.plan(0, 0)


def test_a_plan_changes_nothing_until_committed():
    ring = WindowIndex(ring_slots(4.5, 0.1), horizon_s=4.5, retain_s=0.1, T=5, spacing_s=1.0)
    ring.commit(ring.plan(0, 0))
    before = ring.held
    first, again = ring.plan(NS, 1), ring.plan(NS, 1)
    assert first == again and ring.held == before and ring.inserted == 1
    assert first.window == (0, 0, 0, 0, first.write) and first.frames == (0, 0, 0, 0, 1)


def test_carry_over_with_refresh_every_frame_is_the_plain_selection():
    model, size = demo_model()
    plain = StreamingEngine(model, size)
    always = StreamingEngine(model, size, carry=CarryConfig(enabled=True, refresh_every=1))
    scene = DemoScene(seed=5, size=128, fps=10)
    for paired in scene_frames(scene, range(10, 25)):
        a, b = plain.step(paired), always.step(paired)
        assert torch.equal(a.logits, b.logits)


def test_carry_over_on_a_still_scene_computes_the_same_mask():
    """Unchanged pixels and audio: the carried masks contain the frame's own, so nothing moves."""
    model, size = demo_model()
    carry = StreamingEngine(model, size, carry=CarryConfig(enabled=True, refresh_every=100))
    plain = StreamingEngine(model, size)
    scene = DemoScene(seed=5, size=128, fps=10)
    still = next(scene_frames(scene, [40]))
    for k in range(6):
        paired = PairedFrame(Frame(still.frame.image, k * NS // 10, k), still.logmel, 0, 1, False)
        a, b = plain.step(paired), carry.step(paired)
        assert torch.allclose(a.logits, b.logits, atol=1e-5)


def test_carry_over_computes_fewer_queries_on_video():
    model, size = demo_model()
    plain = StreamingEngine(model, size)
    carry = StreamingEngine(model, size, carry=CarryConfig(enabled=True, refresh_every=8,
                                                           change_threshold=0.3))
    scene = DemoScene(seed=2, size=128, fps=15)
    kept_plain, kept_carry = [], []
    for paired in scene_frames(scene, range(30, 75)):
        kept_plain.append(plain.step(paired).keep_ratio)
        kept_carry.append(carry.step(paired).keep_ratio)
    assert np.mean(kept_carry) < np.mean(kept_plain)
    assert carry.state.scheduled_refreshes == pytest.approx(45 / 8, abs=1)


def test_keep_fraction_weights_stages_by_tokens():
    from pcmanet.model import PCMANetOutput

    masks = [torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 8, 8)]
    out = PCMANetOutput([], [], masks, masks)
    assert float(keep_fraction(out)) == pytest.approx((4 + 64) / (4 + 16 + 64))


@pytest.mark.parametrize(("src", "dst"), [(480, 128), (100, 224), (224, 224), (37, 16)])
def test_antialiased_resize_weights_match_torch(src, dst):
    """aa_weights (the formula the CuPy kernel computes) equals torch's antialiased bilinear."""
    x = torch.rand(1, 1, src, src, dtype=torch.float64)
    w = torch.from_numpy(aa_weights(src, dst))
    ours = w @ x[0, 0] @ w.T
    ref = torch.nn.functional.interpolate(x, size=(dst, dst), mode="bilinear",
                                          align_corners=False, antialias=True)[0, 0]
    assert float((ours - ref).abs().max()) < 1e-6


def test_preprocessor_normalises_bgr_frames():
    pre = Preprocessor(64)
    image = np.zeros((48, 80, 3), np.uint8)
    image[..., 2] = 255                                 # pure red in BGR
    x = pre(image)
    assert x.shape == (1, 3, 64, 64)
    assert torch.allclose(x[0, :, 10, 10], torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224,
                                                         -0.406 / 0.225]), atol=1e-5)
    with pytest.raises(ValueError, match="uint8 BGR"):
        pre(np.zeros((48, 80), np.uint8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cupy_preprocessing_matches_torch_on_gpu():
    from stream.engine.preprocess import cupy_available

    if not cupy_available():
        pytest.skip("CuPy is not installed (pip install -c constraints.txt -e '.[gpu]')")
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    a = Preprocessor(128, "cuda", use_cupy=True)(image)
    b = Preprocessor(128, "cuda", use_cupy=False)(image)
    assert float((a - b).abs().max()) < 1e-4


def test_clip_mode_engine_equals_the_streaming_engine():
    """mode='clip' (the whole window re-run every frame, for the benchmark) == streaming."""
    model, size = demo_model()
    stream, clip = StreamingEngine(model, size), StreamingEngine(model, size, mode="clip")
    scene = DemoScene(seed=6, size=128, fps=5)
    for paired in scene_frames(scene, range(0, 24, 3)):
        a, b = stream.step(paired), clip.step(paired)
        assert a.window == b.window
        assert float((a.logits - b.logits).abs().max()) < 1e-4
    with pytest.raises(ValueError, match="mode"):
        StreamingEngine(model, size, mode="batch")


def test_audio_rate_reuses_the_embedding_between_periods():
    """audio_rate_hz=2 at 10 FPS: one audio encoder run per 0.5 s; the frames in between are
    decoded with the last embedding (the very first frame equals the plain engine's)."""
    model, size = demo_model()
    scene = DemoScene(seed=4, size=128, fps=10)
    frames = list(scene_frames(scene, range(0, 20)))
    plain, slow = StreamingEngine(model, size), StreamingEngine(model, size, audio_rate_hz=2.0)
    diffs = []
    for paired in frames:
        a, b = plain.step(paired), slow.step(paired)
        diffs.append(float(np.abs(a.prob - b.prob).max()))
    assert plain.audio_embeddings == 20
    assert slow.audio_embeddings == 4              # frames 0, 5, 10, 15
    assert diffs[0] == 0.0
    assert max(diffs) > 0                          # reused embeddings do change the mask
    with pytest.raises(ValueError, match="audio_rate_hz"):
        StreamingEngine(model, size, audio_rate_hz=0)


@pytest.mark.parametrize("size", [96, 160])
def test_engine_runs_at_other_input_sizes(size):
    """live.engine.input_size: the model at another side; the mask keeps the frame's size."""
    model, _ = demo_model()
    engine = StreamingEngine(model, size)
    scene = DemoScene(seed=2, size=200, fps=5)
    for paired in scene_frames(scene, range(0, 6)):
        r = engine.step(paired)
    assert r.logits.shape[-2:] == (size, size)
    assert r.prob.shape == (200, 200) and np.isfinite(r.prob).all()


def test_bf16_autocast_gives_nearly_the_same_masks():
    """engine precision bf16 (CPU autocast here): float32 probabilities, masks that agree
    with fp32 on almost every pixel."""
    model, size = demo_model()
    scene = DemoScene(seed=5, size=128, fps=5)
    fp32, bf16 = StreamingEngine(model, size), StreamingEngine(model, size, precision="bf16")
    agree = []
    for paired in scene_frames(scene, range(0, 12)):
        a, b = fp32.step(paired), bf16.step(paired)
        assert b.prob.dtype == np.float32
        agree.append(float(((a.prob > 0.5) == (b.prob > 0.5)).mean()))
    assert min(agree) > 0.97
    with pytest.raises(ValueError, match="precision"):
        StreamingEngine(model, size, precision="fp16")


def test_cuda_graphs_are_refused_off_cuda():
    model, size = demo_model()
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        StreamingEngine(model, size, cuda_graphs=True)
