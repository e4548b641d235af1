"""Self-checks of the literal official-model reference in ``official_ref.py``.

These test the reference only (key layout, parameter counts, the official way of computing),
never the product model. Heavy checks use one ResNet-50 S4 clip (B = 1, T = 5, 224x224).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.pcmanet.official_ref import (
    AUDIO_DIM,
    AVSS_CLASSES,
    DIM,
    B2ResNet,
    MaskAttention,
    OfficialPVTAVS,
    OfficialResNetAVS,
    PyramidVisionTransformerV2,
    build_official,
    cim_mask,
    official_variant,
    random_probe,
    scrambled_tokens_to_map,
)

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
TSV = {"resnet": "official_checkpoint_keys.tsv", "pvt": "official_checkpoint_keys_pvt.tsv"}
MODELS = {"resnet": OfficialResNetAVS, "pvt": OfficialPVTAVS}


def _read_tsv(kind: str) -> list[tuple[str, str, str]]:
    path = REFERENCE_DIR / TSV[kind]
    return [tuple(line.split("\t")) for line in path.read_text().splitlines() if line]


def _layout(model: torch.nn.Module) -> list[tuple[str, str, str]]:
    """state_dict as tsv rows: key, [shape], dtype."""
    return [
        (k, str(list(v.shape)), str(v.dtype).removeprefix("torch."))
        for k, v in model.state_dict().items()
    ]


def _meta_model(kind: str, task: str) -> torch.nn.Module:
    with torch.device("meta"):  # shapes only: no memory, no init cost (PVT-b5 is 95 M params)
        return MODELS[kind](task)


def _expected_layout(kind: str, task: str) -> list[tuple[str, str, str]]:
    """The S4 tsv rewritten per docs/pcmanet.md for the other tasks."""
    rows = _read_tsv(kind)
    g = 4 if (kind, task) == ("resnet", "s4") else 8
    out = []
    for key, shape, dtype in rows:
        if re.fullmatch(r"avga\d\.seq1\.0\.weight", key):
            shape = f"[256, {256 // g}, 1, 1]"
        elif re.fullmatch(r"avga\d\.fc\.1\.weight", key):
            shape = f"[{256 // g}, 256]"
        elif re.fullmatch(r"avga\d\.fc\.1\.bias", key):
            shape = f"[{256 // g}]"
        elif task == "avss" and re.fullmatch(r"output_conv\d\.3\.weight", key):
            shape = f"[{AVSS_CLASSES}, 128, 1, 1]"
        elif task == "avss" and re.fullmatch(r"output_conv\d\.3\.bias", key):
            shape = f"[{AVSS_CLASSES}]"
        if (kind, task) == ("pvt", "ms3") and key.startswith("aud_fc1."):
            key = key.replace("aud_fc1.", "aud_fc.")
        out.append((key, shape, dtype))
    return out


# ---------------------------------------------------------------------------------------------
# Layout and size
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["resnet", "pvt"])
def test_s4_state_dict_equals_official_key_list(kind):
    rows = _read_tsv(kind)
    assert len(rows) == {"resnet": 758, "pvt": 1318}[kind]
    assert _layout(_meta_model(kind, "s4")) == rows  # keys, order, shapes, dtypes


@pytest.mark.parametrize("kind", ["resnet", "pvt"])
@pytest.mark.parametrize("task", ["ms3", "avss"])
def test_other_task_state_dicts_follow_section_9(kind, task):
    assert _layout(_meta_model(kind, task)) == _expected_layout(kind, task)


@pytest.mark.parametrize(
    ("kind", "task", "count"),
    [
        ("resnet", "s4", 65_750_596),
        ("resnet", "ms3", 65_684_932),
        ("resnet", "avss", 65_721_052),
        ("pvt", "s4", 95_068_740),
        ("pvt", "ms3", 95_068_740),
        ("pvt", "avss", 95_104_860),
    ],
)
def test_parameter_counts(kind, task, count):
    assert sum(p.numel() for p in _meta_model(kind, task).parameters()) == count


def test_resnet_s4_section_7_split():
    model = _meta_model("resnet", "s4")

    def size(prefix):
        return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))

    dead = size("resnet.layer3_2.") + size("resnet.layer4_2.")
    assert dead == 22_063_104
    assert size("resnet.") == 45_571_136
    assert size("avga1.") == 165_696 and size("qsca1.") == 591_104
    assert size("gf1.") == 1_771_776 and size("output_conv1.") == 295_425
    total = sum(p.numel() for p in model.parameters())
    assert total - dead - size("gf4.seq2.") == 43_096_900  # params on the forward path


# ---------------------------------------------------------------------------------------------
# Backbones against independent implementations
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def test_b2_resnet_matches_torchvision_resnet50():
    from torchvision.models import resnet50

    torch.manual_seed(0)
    ours, tv = B2ResNet().eval(), resnet50().eval()
    sd = {
        re.sub(r"^layer([34])\.", r"layer\1_1.", k): v
        for k, v in tv.state_dict().items()
        if not k.startswith("fc.")
    }
    missing = ours.load_state_dict(sd, strict=False).missing_keys
    assert missing and all(re.match(r"layer[34]_2\.", k) for k in missing)
    x = torch.randn(1, 3, 96, 96)
    feats = ours(x)
    y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    for layer, f in zip((tv.layer1, tv.layer2, tv.layer3, tv.layer4), feats, strict=True):
        y = layer(y)
        torch.testing.assert_close(f, y, rtol=0, atol=0)


@torch.no_grad()
def test_pvt_matches_timm_pvt_v2():
    from timm.models.pvt_v2 import PyramidVisionTransformerV2 as TimmPVT
    from timm.models.pvt_v2 import checkpoint_filter_fn

    depths = (1, 2, 2, 1)  # b5 widths, heads, sr and mlp ratios; fewer blocks for speed
    torch.manual_seed(0)
    ours = PyramidVisionTransformerV2(depths=depths).eval()
    for p in ours.parameters():  # break the zero-bias / unit-norm init so every term matters
        p.add_(torch.randn_like(p) * 0.02)
    timm_model = TimmPVT(
        depths=depths,
        embed_dims=(64, 128, 320, 512),
        num_heads=(1, 2, 5, 8),
        mlp_ratios=(4, 4, 4, 4),
        sr_ratios=(8, 4, 2, 1),
        num_classes=0,
    ).eval()
    timm_model.load_state_dict(checkpoint_filter_fn(ours.state_dict(), timm_model), strict=True)
    x = torch.randn(2, 3, 64, 96)
    y = timm_model.patch_embed(x)
    for stage, f in zip(timm_model.stages, ours(x), strict=True):
        y = stage(y)
        torch.testing.assert_close(f, y, rtol=1e-4, atol=1e-4)


def test_pvt_layer_norm_eps():
    pvt = _meta_model("pvt", "s4").encoder_backbone
    assert pvt.patch_embed1.norm.eps == 1e-5 and pvt.block1[0].attn.norm.eps == 1e-5
    assert pvt.block3[39].norm1.eps == 1e-6 and pvt.block4[2].norm2.eps == 1e-6
    assert pvt.norm4.eps == 1e-6 and not hasattr(pvt.block4[0].attn, "sr")


# ---------------------------------------------------------------------------------------------
# Mask_Attention
# ---------------------------------------------------------------------------------------------


def _naive_mask_attention(attn: MaskAttention, x: torch.Tensor, mask: torch.Tensor | None):
    """Per clip, per head, in float64, straight from docs/pcmanet.md"""
    BT, L, C = x.shape
    T, n = attn.frames, L - 1
    x = x.double()
    wq_a, wk_a, wv_a = attn.a_to_qkv.weight.double().split(C)
    wk_v, wv_v = attn.v_to_kv.weight.double().split(C)
    wq_v = attn.v_to_q.weight.double()
    keep = torch.ones(BT, n, dtype=torch.float64) if mask is None else mask.reshape(BT, n).double()
    out = torch.zeros(BT, L, C, dtype=torch.float64)
    for b in range(BT // T):
        rows = slice(b * T, (b + 1) * T)
        aud, vis = x[rows, 0], x[rows, 1:].reshape(T * n, C)  # (T, C), (T*n, C) frame-major
        for h in range(8):
            cs = slice(32 * h, 32 * (h + 1))
            qa, ka, va = aud @ wq_a[cs].T, aud @ wk_a[cs].T, aud @ wv_a[cs].T  # (T, 32)
            qv, kv, vv = vis @ wq_v[cs].T, vis @ wk_v[cs].T, vis @ wv_v[cs].T  # (T*n, 32)
            out[rows, 0, cs] = ((qa @ kv.T) / math.sqrt(32)).softmax(-1) @ vv
            v_out = ((qv @ ka.T) / math.sqrt(32)).softmax(-1) @ va  # (T*n, 32)
            out[rows, 1:, cs] = (v_out * keep[rows].reshape(T * n, 1)).reshape(T, n, 32)
    lin = attn.to_out[0]
    return (out @ lin.weight.double().T + lin.bias.double()).float()


def _attention_inputs(clips: int, T: int = 5, s: int = 7, seed: int = 0):
    torch.manual_seed(seed)
    attn = MaskAttention(DIM, frames=T).eval()
    x = torch.randn(clips * T, 1 + s * s, DIM)
    mask = (torch.rand(clips * T, 1, s, s) < 0.4).float()
    return attn, x, mask


@torch.no_grad()
def test_mask_attention_all_ones_mask_equals_dense_to_the_bit_b1():
    attn, x, _ = _attention_inputs(clips=1)
    ones = torch.ones(5, 1, 7, 7)
    assert torch.equal(attn(x, ones), attn(x, None))


@torch.no_grad()
def test_mask_attention_all_ones_mask_equals_dense_b3():
    attn, x, _ = _attention_inputs(clips=3, s=14)
    torch.testing.assert_close(attn(x, torch.ones(15, 1, 14, 14)), attn(x, None))


@torch.no_grad()
@pytest.mark.parametrize("clips", [1, 3])
def test_mask_attention_matches_naive_per_clip_formula(clips):
    attn, x, mask = _attention_inputs(clips=clips)
    expected_dense = _naive_mask_attention(attn, x, None)
    expected_masked = _naive_mask_attention(attn, x, mask)
    torch.testing.assert_close(attn(x, None), expected_dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attn(x, mask), expected_masked, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_mask_attention_confident_tokens_get_only_the_to_out_bias():
    attn, x, mask = _attention_inputs(clips=2)
    y = attn(x, mask)
    confident = mask.reshape(10, 49) == 0
    assert 0 < confident.sum() < confident.numel()
    bias = attn.to_out[0].bias
    assert torch.equal(y[:, 1:][confident], bias.expand(int(confident.sum()), DIM))
    torch.testing.assert_close(y[:, 0], attn(x, None)[:, 0])  # audio part ignores the mask


@torch.no_grad()
def test_mask_attention_empty_and_other_clip_isolation():
    attn, x, _ = _attention_inputs(clips=2)
    y = attn(x, torch.zeros(10, 1, 7, 7))
    assert torch.equal(y[:, 1:], attn.to_out[0].bias.expand(10, 49, DIM))
    # changing clip 1 must not change anything in clip 0
    x2 = x.clone()
    x2[5:] = torch.randn_like(x2[5:])
    mask = torch.ones(10, 1, 7, 7)
    assert torch.equal(attn(x, mask)[:5], attn(x2, mask)[:5])


def test_mask_attention_gradient_cut_in_masked_path():
    attn, x, mask = _attention_inputs(clips=1)
    attn(x, mask)[:, 1:].sum().backward()  # visual outputs only (the audio token is dropped)
    assert attn.v_to_q.weight.grad is None
    assert attn.to_out[0].weight.grad is not None and attn.to_out[0].bias.grad is not None
    attn.zero_grad(set_to_none=True)
    attn(x, None)[:, 1:].sum().backward()
    assert attn.v_to_q.weight.grad is not None and attn.v_to_q.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# Small rules: scrambled reshape, CIM
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [7, 14])
def test_scrambled_reshape_rule(s):
    BT, n, C = 2, s * s, DIM
    tokens = torch.arange(BT * n * C, dtype=torch.float64).reshape(BT, n, C)
    out = scrambled_tokens_to_map(tokens, s, s)  # (BT, C, s, s)
    assert out.shape == (BT, C, s, s)
    flat = out.reshape(BT, -1)
    f = torch.arange(C * s * s)
    c_prime, i, j = f // (s * s), (f // s) % s, f % s
    assert torch.equal(out[:, c_prime, i, j], flat[:, c_prime * s * s + i * s + j])
    assert torch.equal(flat, tokens[:, f // C, f % C])  # token floor(f/256), channel f mod 256
    assert not torch.equal(out, tokens.transpose(1, 2).reshape(BT, C, s, s))


def test_cim_mask_two_sided_band():
    # |logit| <= ln 99 = 4.595 is uncertain
    logits = torch.tensor([-6.0, -4.7, -4.5, 0.0, 4.5, 4.7, 6.0]).reshape(1, 1, 1, 7)
    assert cim_mask(logits).flatten().tolist() == [0, 0, 1, 1, 1, 0, 0]
    avss = torch.zeros(1, AVSS_CLASSES, 1, 3)
    avss[0, 5, 0, 1] = 10.0  # p = e^10 / (e^10 + 70) ~ 0.9968 -> confident
    avss[0, 5, 0, 2] = 8.0  # p ~ 0.977 -> uncertain
    assert cim_mask(avss).flatten().tolist() == [1, 0, 1]  # uniform 1/71 >= 0.01 is uncertain


# ---------------------------------------------------------------------------------------------
# Full forward (ResNet-50 S4, one clip)
# ---------------------------------------------------------------------------------------------


DEAD_OR_LIVE = ("resnet.layer3_2", "resnet.layer4_2", "gf4.seq2", "gf3.seq2")


@pytest.fixture(scope="module")
def resnet_s4():
    """One perturbed ResNet-50 S4 model and one clip, run once: encode, decode, forward."""
    x, audio = probe = random_probe(official_variant("resnet", "s4"), seed=0)
    model = build_official("resnet", "s4", seed=0, probe=probe)
    calls = dict.fromkeys(DEAD_OR_LIVE, 0)
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda *_, name=name: calls.__setitem__(name, calls[name] + 1)
        )
        for name in DEAD_OR_LIVE
    ]
    try:
        with torch.no_grad():
            outputs = model(x, audio)
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        encoded = model.encode(x, audio)
        native, per = model.decode(*encoded)
    return {
        "model": model,
        "encoded": encoded,
        "native": native,
        "per": per,
        "outputs": outputs,
        "calls": calls,
    }


def test_resnet_s4_forward_shapes_masks_and_dead_modules(resnet_s4):
    assert not resnet_s4["model"].training
    *outs, per = resnet_s4["outputs"]
    for out in outs:
        assert out.shape == (5, 1, 224, 224) and torch.isfinite(out).all()
    assert resnet_s4["calls"] == {
        "resnet.layer3_2": 0,
        "resnet.layer4_2": 0,
        "gf4.seq2": 0,
        "gf3.seq2": 1,
    }
    # perturb_for_confidence calibrated the heads on this very input: mixed masks
    ratios = [float(r) for r in per]
    assert ratios == pytest.approx([0.75, 0.55, 0.35], abs=0.06)  # _widen_margin moves it a little
    assert ratios[0] >= ratios[1] >= ratios[2]


def test_resnet_s4_masks_come_from_native_logits(resnet_s4):
    n1, n2, n3, n4 = resnet_s4["native"]
    assert [t.shape[-1] for t in (n1, n2, n3, n4)] == [56, 28, 14, 7]
    m4 = cim_mask(n4)
    m3 = cim_mask(n3) * F.interpolate(m4, scale_factor=2.0, mode="nearest")
    m2 = cim_mask(n2) * F.interpolate(m3, scale_factor=2.0, mode="nearest")
    per = [float(p) for p in resnet_s4["outputs"][4]]
    assert per == [float(m.mean()) for m in (m4, m3, m2)]
    assert per == [float(p) for p in resnet_s4["per"]]
    for native, up in zip((n1, n2, n3, n4), resnet_s4["outputs"][:4], strict=True):
        expected = F.interpolate(native, size=(224, 224), mode="bilinear", align_corners=False)
        assert torch.equal(up, expected)


def test_resnet_s4_gradient_flow_section_6(resnet_s4):
    """Backward through the decoder: the parameters listed in section 6 get no gradient."""
    model, (o, a0) = resnet_s4["model"], resnet_s4["encoded"]
    model.zero_grad(set_to_none=True)
    outs, _ = model.decode(o, a0)
    sum(out.float().square().mean() for out in outs).backward()

    def no_grad(name):
        grad = model.get_parameter(name).grad
        return grad is None or not grad.any()

    fn = "attn.transformer.layers.0.0.fn"
    for k in (1, 2, 3):
        for name in ("aud_fc.weight", "aud_fc.bias", "attn.transformer.layers.0.0.norm.weight"):
            assert no_grad(f"qsca{k}.{name}"), f"qsca{k}.{name}"
        for name in ("v_to_q", "v_to_kv", "a_to_qkv"):
            assert no_grad(f"qsca{k}.{fn}.{name}.weight"), f"qsca{k} {name}"
        assert not no_grad(f"qsca{k}.{fn}.to_out.0.weight")
        assert not no_grad(f"qsca{k}.attn.to_patch_embedding.1.weight")
    assert no_grad(f"qsca4.{fn}.v_to_kv.weight")
    q4 = model.get_parameter(f"qsca4.{fn}.a_to_qkv.weight").grad
    assert not q4[:DIM].any() and q4[DIM:].any()  # Q rows zero, K/V rows train
    assert not no_grad(f"qsca4.{fn}.v_to_q.weight") and not no_grad("qsca4.aud_fc.weight")
    assert no_grad("gf4.seq2.0.weight") and not no_grad("gf3.seq2.0.weight")
    model.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------------------------
# Other variants, cheaply
# ---------------------------------------------------------------------------------------------


class _StubBackbone(torch.nn.Module):
    """Cheap per-frame stand-in for B2ResNet: (BT, 3, 224, 224) -> ResNet-50 widths and sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.ModuleList(torch.nn.Conv2d(3, c, 1) for c in (256, 512, 1024, 2048))

    def forward(self, x):
        return [p(F.avg_pool2d(x, 4 * 2**i)) for i, p in enumerate(self.proj)]


@torch.no_grad()
def test_avss_padded_frames_are_cut_off():
    """AVSS: a padded frame's content (image and audio) cannot change any output."""
    torch.manual_seed(0)
    model = OfficialResNetAVS("avss").eval()
    model.resnet = _StubBackbone()  # the flag acts after the backbone; keep the test fast
    x, audio, flag = random_probe(model.variant, seed=1)  # T = 10, last 3 frames padded
    assert x.shape == (10, 3, 224, 224) and flag.tolist() == [1.0] * 7 + [0.0] * 3
    x2, audio2 = x.clone(), audio.clone()
    x2[7:], audio2[7:] = torch.randn_like(x2[7:]), torch.rand_like(audio2[7:])
    (o, a0), (o2, a02) = model.encode(x, audio, flag), model.encode(x2, audio2, flag)
    # decode is a function of (o, a0) only, so equal encodings mean equal outputs
    assert torch.equal(a0, a02) and all(torch.equal(p, q) for p, q in zip(o, o2, strict=True))
    assert torch.equal(a0[7], model.aud_fc1.bias)  # the zero embedding goes into aud_fc1
    x3 = x.clone()
    x3[:7] = torch.randn_like(x3[:7])  # a real frame's content does change the encoding
    assert not torch.equal(model.encode(x3, audio, flag)[0][0], o[0])
    (n1, _, _, n4), per = model.decode(o, a0)
    assert n1.shape == (10, AVSS_CLASSES, 56, 56) and n4.shape == (10, AVSS_CLASSES, 7, 7)
    assert all(0.0 <= float(p) <= 1.0 for p in per)


@torch.no_grad()
def test_pvt_ms3_small_forward_shapes():
    """OfficialPVTAVS with a shallow encoder: the decoder wiring, ``aud_fc`` naming, g = 8."""
    torch.manual_seed(0)
    model = OfficialPVTAVS("ms3", depths=(1, 1, 1, 1)).eval()
    assert hasattr(model, "aud_fc") and not hasattr(model, "aud_fc1")
    assert model.avga1.fc[1].out_features == 32
    x, audio = torch.randn(5, 3, 224, 224), torch.rand(5, AUDIO_DIM)
    *outs, per = model(x, audio)
    assert [tuple(o.shape) for o in outs] == [(5, 1, 224, 224)] * 4 and len(per) == 3
