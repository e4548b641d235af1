"""The assembled model: shapes, gradients, streaming split, variants, parameter counts."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pcmanet.build import build_pcmanet, count_parameters
from pcmanet.model import FrameFeatures, token_grids
from pcmanet.variants import PCMANET_VARIANTS, reference_config


def _tiny(tiny_cfg, **changes):
    return build_pcmanet(replace(tiny_cfg, **changes), with_audio_encoder=False)


def _clip(B, T, D, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B * T, 3, size, size, generator=g), torch.rand(B * T, D, generator=g)


def test_forward_shapes_and_gradients(tiny_cfg):
    model = _tiny(tiny_cfg).train()
    frames, audio = _clip(2, 5, tiny_cfg.audio.embed_dim)
    out = model(frames, audio)
    assert len(out.logits) == 4
    assert all(x.shape == (10, 1, 64, 64) for x in out.logits)
    assert len(out.keep_ratios) == 3 and all(0 <= float(r) <= 1 for r in out.keep_ratios)
    sum(x.mean() for x in out.logits).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad
    # The finest stage's visual K/V only feed the discarded audio token: held, frozen, unused.
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == [
        "qsca.0.v_to_kv.weight"]


@pytest.mark.parametrize("T", [1, 3, 5])
def test_multiclass_head_and_num_frames(tiny_cfg, T):
    model = _tiny(tiny_cfg, num_classes=71, num_frames=T).eval()
    frames, audio = _clip(2, T, tiny_cfg.audio.embed_dim)
    out = model(frames, audio)
    assert out.logits[0].shape == (2 * T, 71, 64, 64)


def test_rejects_partial_clips(tiny_cfg):
    model = _tiny(tiny_cfg).eval()
    frames, audio = _clip(1, 4, tiny_cfg.audio.embed_dim)
    with pytest.raises(ValueError, match="whole clips of T=5"):
        model(frames, audio)


def test_token_grids_match_reference_at_224():
    grids = token_grids([(56, 56), (28, 28), (14, 14), (7, 7)])
    assert grids == [(28, 28), (14, 14), (7, 7), (7, 7)]


def _perturb_refiner(model):
    """The refiner's output conv starts at zero; give it weights so its path really counts."""
    if model.refiner is not None:
        torch.nn.init.normal_(model.refiner.out.weight, std=0.5)


@pytest.mark.parametrize("confident,refine", [(False, 0), (True, 0), (True, 8)])
def test_streaming_newest_frame_equals_clip_mode(tiny_cfg, confident, refine):
    """Decode only the last frame of each window from per-frame features: same logits
    (with and without the stride-2 mask refiner, whose features the cache then carries)."""
    torch.manual_seed(0)
    model = _tiny(tiny_cfg, refine_dim=refine).eval()
    _perturb_refiner(model)
    if confident:  # push the heads' outputs apart so the CIM masks are mixed 0/1
        for head in model.heads:
            head[-1].weight.data *= 200.0
    frames, audio = _clip(2, 5, tiny_cfg.audio.embed_dim, seed=3)
    with torch.no_grad():
        clip_out = model(frames, audio)
        # Per-frame features computed one frame at a time, as a cache would hold them.
        parts = [model.encode_frames(frames[i:i + 1], audio[i:i + 1]) for i in range(10)]
        feats = FrameFeatures.cat(parts)
        targets = torch.tensor([4, 9])
        stream_out = model.decode(feats, targets, out_size=(64, 64))
    if confident:
        assert 0.0 < float(clip_out.keep_ratios[-1]) < 1.0
    for a, b in zip(clip_out.logits, stream_out.logits, strict=True):
        assert (a[targets] - b).abs().max() < 1e-4


@pytest.mark.parametrize("refine", [0, 8])
def test_training_economies_keep_the_chosen_rows_logits(tiny_cfg, refine):
    """forward(targets=rows) decodes only those rows, and forward(grad_rows=rows) encodes the
    other frames without gradient: in eval mode both give the full forward's logits for the
    rows, and the backbone's gradient then comes from the grad rows alone."""
    torch.manual_seed(0)
    model = _tiny(tiny_cfg, refine_dim=refine).eval()
    _perturb_refiner(model)
    for head in model.heads:  # mixed CIM masks, so the query gather paths run too
        head[-1].weight.data *= 200.0
    frames, audio = _clip(2, 5, tiny_cfg.audio.embed_dim, seed=4)
    rows = torch.tensor([0, 5])                       # S4 training: the first frame of each clip
    with torch.no_grad():
        full = model(frames, audio)
    assert 0.0 < float(full.keep_ratios[-1]) < 1.0
    part = model(frames, audio, targets=rows, grad_rows=rows)
    for a, b in zip(full.logits, part.logits, strict=True):
        assert b.shape[0] == 2 and (a[rows] - b).abs().max() < 1e-4
    part.logits[0].sum().backward()
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    # Only the grad rows reach the backbone: the frames outside them have no influence.
    frames_g = frames.clone().requires_grad_(True)
    model.zero_grad()
    model(frames_g, audio, targets=rows, grad_rows=rows).logits[0].sum().backward()
    assert frames_g.grad is not None
    per_frame = frames_g.grad.abs().flatten(1).sum(1)  # (10,)
    assert bool((per_frame[rows] > 0).all())
    others = torch.ones(10, dtype=torch.bool)
    others[rows] = False
    assert float(per_frame[others].sum()) == 0.0


def test_refiner_starts_as_the_unrefined_model_and_learns(tiny_cfg):
    """A refiner added to a trained model changes nothing until it learns (its output conv
    starts at zero); it then trains end to end: every parameter of it gets a gradient."""
    torch.manual_seed(0)
    plain = _tiny(tiny_cfg).eval()
    refined = _tiny(tiny_cfg, refine_dim=8).eval()
    missing, unexpected = refined.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("refiner.") for k in missing)
    frames, audio = _clip(1, 5, tiny_cfg.audio.embed_dim, seed=5)
    with torch.no_grad():
        a, b = plain(frames, audio).logits, refined(frames, audio).logits
    assert (a[1] - b[1]).abs().max() < 1e-5          # the coarser stages are untouched
    # Output 0 is the stage-1 logits upsampled twice (stride 4 -> 2 -> input) instead of once.
    assert (a[0] - b[0]).abs().max() < 0.05 * a[0].abs().max()
    refined.train()
    refined(frames, audio).logits[0].sum().backward()
    assert all(p.grad is not None for p in refined.refiner.parameters())


def test_refiner_needs_a_stride2_level(tiny_cfg):
    cfg = replace(tiny_cfg, refine_dim=8, backbone=replace(
        tiny_cfg.backbone, name="pvt_v2_b0", out_indices=(0, 1, 2, 3)))
    with pytest.raises(ValueError, match=r"stride-2 backbone level.*refine_dim=0"):
        build_pcmanet(cfg, with_audio_encoder=False)


def test_frame_mask_zeroes_padded_frames(tiny_cfg):
    """AVSS padding: a padded frame's audio and lateral features are zeroed."""
    model = _tiny(tiny_cfg, num_frames=4).eval()
    frames, audio = _clip(1, 4, tiny_cfg.audio.embed_dim)
    flag = torch.tensor([1.0, 1.0, 0.0, 0.0])
    with torch.no_grad():
        f1 = model.encode_frames(frames, audio, flag)
        f2 = model.encode_frames(torch.randn_like(frames), audio * 7, flag)
    assert torch.equal(f1.maps[0][2:], f2.maps[0][2:])
    assert torch.equal(f1.audio[2:], f2.audio[2:])


@pytest.mark.parametrize("name", ["resnet18_light", "mobilenetv3_light", "efficientnet_b0_light"])
def test_light_variants_run(name):
    model = build_pcmanet(PCMANET_VARIANTS[name], with_audio_encoder=False).eval()
    frames, audio = _clip(1, 5, 128, size=96)
    with torch.no_grad():
        out = model(frames, audio)
    assert out.logits[0].shape == (5, 1, 96, 96)


def test_reference_parameter_counts():
    """43,096,900 on the forward path; the reference's 65,750,596 adds the dropped keys."""
    from tests.conftest import read_key_table

    model = build_pcmanet(reference_config("resnet50", "s4"), with_audio_encoder=False)
    assert count_parameters(model) == 43_096_900
    table = read_key_table("official_checkpoint_keys.tsv")
    params = {k: s for k, (s, _) in table.items()
              if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    numel = {k: int(torch.Size(s).numel()) for k, s in params.items()}
    assert sum(numel.values()) == 65_750_596
    dropped = sum(n for k, n in numel.items()
                  if k.startswith(("resnet.layer3_2", "resnet.layer4_2", "gf4.seq2")))
    assert count_parameters(model) + dropped == 65_750_596
