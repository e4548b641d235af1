"""Blocks one by one: shapes, gradients, and the reference rules of QSCA and CIM."""

from __future__ import annotations

import pytest
import torch

from pcmanet.decoder import GuidedFusion, output_head
from pcmanet.fusion import AVGA, QSCA, progress, uncertain_mask


@pytest.mark.parametrize("groups", [1, 4, 8])
@pytest.mark.parametrize("hw", [(7, 7), (14, 10)])
def test_avga_shape_and_gradients(groups, hw):
    block = AVGA(dim=32, groups=groups)
    visual, audio = torch.randn(3, 32, *hw), torch.randn(3, 32)
    out = block(visual, audio)
    assert out.shape == visual.shape and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in block.parameters())


def test_avga_group_maps_are_cosines_of_each_chunk():
    """Each chunk is scaled by cos(chunk, audio_proj) before seq2: check against a loop."""
    torch.manual_seed(0)
    block = AVGA(dim=16, groups=4).eval()
    visual, audio = torch.randn(2, 16, 3, 3), torch.randn(2, 16)
    x = block.seq1(visual)
    a = block.fc(audio)
    chunks = []
    for g in range(4):
        c = x[:, 4 * g: 4 * (g + 1)]
        cos = (torch.nn.functional.normalize(c, dim=1)
               * torch.nn.functional.normalize(a, dim=1)[:, :, None, None]).sum(1, keepdim=True)
        chunks.append(c * cos)
    expected = block.seq2(torch.cat(chunks, 1))
    assert torch.allclose(block(visual, audio), expected, atol=1e-6)


@pytest.mark.parametrize("has_coarser", [False, True])
def test_guided_fusion_and_head_shapes(has_coarser):
    gf, head = GuidedFusion(16, has_coarser), output_head(16, 8, 3)
    low, guide = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)
    high = torch.randn(2, 16, 4, 4) if has_coarser else None
    out = head(gf(low, high, guide))
    assert out.shape == (2, 3, 8, 8)
    out.sum().backward()
    assert all(p.grad is not None for p in [*gf.parameters(), *head.parameters()])
    assert hasattr(gf, "seq2") == has_coarser


def _qsca_inputs(B=2, T=3, N=12, C=32, seed=0):
    torch.manual_seed(seed)
    block = QSCA(C, num_heads=4, head_dim=8)
    visual = torch.randn(B * T, C, 4, 6)
    tokens, kv = block.frame_tokens(visual, (3, 4))                     # N = 12 tokens
    audio = block.audio_step(torch.randn(B * T, C), kv, T)
    clip = torch.arange(B * T) // T
    return block, tokens, kv, audio, clip


def test_qsca_shapes_and_gradients():
    block, tokens, _kv, audio, clip = _qsca_inputs()
    block.query_grad = True
    mask = (torch.rand(6, 1, 3, 4) > 0.5).float()
    out, ratio = block.visual_step(tokens, clip, audio, (3, 4), (6, 8), mask)
    assert out.shape == (6, 32, 6, 8) and audio.token.shape == (6, 32)
    assert float(ratio) == pytest.approx(float(mask.mean()))
    (out.sum() + audio.token.sum()).backward()
    assert all(p.grad is not None for p in block.parameters())


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_gather_equals_dense_and_confident_tokens_get_only_the_bias(ratio):
    """Selected tokens: same as the dense path. Others: x + to_out.bias (reference rule)."""
    block, tokens, _kv, audio, clip = _qsca_inputs(seed=1)
    block.scrambled_tokens = False                                      # read tokens in place
    g = torch.Generator().manual_seed(2)
    mask = (torch.rand(6, 1, 3, 4, generator=g) < ratio).float()
    dense, _ = block.visual_step(tokens, clip, audio, (3, 4), (3, 4), None)
    results = []
    for max_ratio in (0.0, 1.0):                                        # force dense / gather
        block.gather_max_ratio = max_ratio
        out, _ = block.visual_step(tokens, clip, audio, (3, 4), (3, 4), mask)
        results.append(out)
    assert torch.allclose(results[0], results[1], atol=1e-5)
    sel = mask.bool().expand_as(dense)
    assert torch.allclose(results[1][sel], dense[sel], atol=1e-5)
    confident = (tokens + block.to_out.bias).transpose(1, 2).reshape(6, 32, 3, 4)
    assert torch.allclose(results[1][~sel], confident[~sel], atol=1e-6)


def test_visual_queries_attend_only_to_their_own_clip():
    block, tokens, _kv, audio, clip = _qsca_inputs(B=2, T=3)
    base, _ = block.visual_step(tokens[:3], clip[:3], audio, (3, 4), (3, 4), None)
    # Changing clip 1's audio keys must not change clip 0's outputs.
    other = type(audio)(audio.token, audio.key.clone(), audio.value.clone())
    other.key[1] += 5.0
    other.value[1] -= 3.0
    again, _ = block.visual_step(tokens[:3], clip[:3], other, (3, 4), (3, 4), None)
    assert torch.equal(base, again)


def test_audio_token_sees_every_frame_of_its_clip_only():
    torch.manual_seed(0)
    block = QSCA(32, num_heads=4, head_dim=8)
    _tokens, kv = block.frame_tokens(torch.randn(6, 32, 4, 4), (4, 4))
    audio_in = torch.randn(6, 32)
    base = block.audio_step(audio_in, kv, 3).token
    kv2 = kv.clone()
    kv2[2] += 1.0                                                       # last frame of clip 0
    moved = block.audio_step(audio_in, kv2, 3).token
    assert not torch.allclose(moved[:3], base[:3])                      # every frame of clip 0
    assert torch.equal(moved[3:], base[3:])                             # clip 1 untouched


def test_scrambled_reshape_rule():
    """Reference layout: flat index f = c*h*w + i*w + j reads token f // C, channel f % C."""
    block, tokens, _kv, audio, clip = _qsca_inputs()
    out, _ = block.visual_step(tokens, clip, audio, (3, 4), (3, 4), torch.zeros(6, 1, 3, 4))
    y = tokens + block.to_out.bias                                      # all confident
    C, flat = 32, out.reshape(6, -1)
    for f in (0, 5, 37, 200, 383):
        assert flat[1, f] == y[1, f // C, f % C]


def test_query_grad_switch():
    """Reference: no gradient reaches v_to_q through masked stages; with the switch it does."""
    for query_grad in (False, True):
        block, tokens, _kv, audio, clip = _qsca_inputs()
        block.query_grad = query_grad
        out, _ = block.visual_step(tokens, clip, audio, (3, 4), (3, 4), torch.ones(6, 1, 3, 4))
        out.sum().backward()
        got = block.v_to_q.weight.grad
        assert (got is not None and got.abs().sum() > 0) == query_grad
        assert block.to_out.weight.grad is not None and block.to_out.weight.grad.abs().sum() > 0


def test_cim_band_and_progression():
    logits = torch.tensor([[[[-10.0, -4.0, 0.0, 4.0, 10.0, 4.59]]]])    # (1, 1, 1, 6)
    m = uncertain_mask(logits, 0.99)
    assert m.flatten().tolist() == [0, 1, 1, 1, 0, 1]                   # |logit| <= ln 99 = 4.595
    semantic = torch.zeros(1, 3, 1, 2)
    semantic[0, 0, 0, 0] = 20.0                                         # confident class 0
    assert uncertain_mask(semantic, 0.99).flatten().tolist() == [0, 1]  # uniform: p = 1/3
    coarse = torch.tensor([[[[1.0, 0.0]]]])                             # (1, 1, 1, 2)
    fine = torch.ones(1, 1, 2, 4)
    assert progress(fine, coarse)[0, 0].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0]]
