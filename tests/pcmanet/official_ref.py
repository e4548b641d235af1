"""Literal rendering of the official PCMANet forward pass, for tests only.

Written from the PCMANet specification (its model, QSCA, CIM and reference-quirk sections;
summary in docs/model.md). It holds no official code and imports nothing from ``pcmanet/``:
it is an independent check of the product model. It copies the official *way* of computing,
quirks included:

* the official module tree and attribute names, so ``state_dict()`` keys and shapes equal
  ``tests/pcmanet/reference/official_checkpoint_keys*.tsv`` (dead ``resnet.layer3_2/layer4_2`` and
  ``gf4.seq2`` included);
* QSCA token grids from fixed ``AdaptiveAvgPool2d`` sizes 7/7/14/28;
* ``Mask_Attention``: dense per-clip batched matmuls for QSCA4; for QSCA3..1 the gather of the
  selected visual queries, matched against all B*T audio keys with ``-inf`` written per clip in
  a Python loop, then clone-and-scatter under ``torch.no_grad()`` and a multiply by the mask;
* the QSCA output map made by a plain ``reshape`` of (B*T, n, C) tokens to (B*T, C, h, w), no
  transpose (the "scrambled" layout);
* CIM masks from the native-resolution head logits, two-sided 0.01..0.99 band, nearest x2
  progression.

Public names: ``OfficialResNetAVS``, ``OfficialPVTAVS`` (``forward``, plus ``encode``/``decode``),
``OfficialVariant``/``official_variant``, ``build_official``, ``random_official_state_dict``,
``randomize_bn_stats``, ``perturb_for_confidence``, ``random_probe``, ``cim_mask``,
``scrambled_tokens_to_map``, and the blocks ``B2ResNet``, ``PyramidVisionTransformerV2``, ``AVGA``,
``QSCA`` (``QSCAViT``, ``Transformer``, ``PreNorm``, ``MaskAttention`` = official
``Mask_Attention``), ``GF``.

Typical use in a comparison test::

    probe = random_probe(official_variant("resnet", "s4"), seed=0)
    ref = build_official("resnet", "s4", seed=0, probe=probe)  # eval, mixed CIM masks
    ours.load_state_dict(convert(ref.state_dict()))
    out1, out2, out3, out4, per = ref(*probe)

Shapes: B clips, T frames per clip, BT = B*T rows in clip-major order (row b*T + t), C = 256.
The official model only runs at 224x224 input: the CIM mask grids (7, 14, 28) must equal the
next stage's pooled token grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck

DIM = 256  # decoder width C
AUDIO_DIM = 128  # VGGish embedding width
HEADS, DIM_HEAD = 8, 32  # QSCA attention: 8 heads x 32 = 256 inner width
HEAD_HIDDEN = 128  # hidden width of the output heads
TOKEN_GRID = {4: 7, 3: 7, 2: 14, 1: 28}  # QSCA AdaptiveAvgPool2d size per stage
THRESHOLD = 0.99  # CIM: uncertain where 1 - THRESHOLD <= p <= THRESHOLD
AVSS_CLASSES = 71  # 70 classes + background

# ---------------------------------------------------------------------------------------------
# Variants (docs/pcmanet.md)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OfficialVariant:
    """What changes between the six official models."""

    frames: int  # T, hard-coded in the official code
    groups: int  # AVGA group count g
    num_classes: int  # output channels per head
    audio_fc_name: str  # name of the 128 -> 256 audio linear


def official_variant(kind: str, task: str) -> OfficialVariant:
    """kind in {"resnet", "pvt"}, task in {"s4", "ms3", "avss"}."""
    if kind not in ("resnet", "pvt") or task not in ("s4", "ms3", "avss"):
        raise ValueError(f"unknown official model kind={kind!r} task={task!r}")
    return OfficialVariant(
        frames=10 if task == "avss" else 5,
        groups=4 if (kind, task) == ("resnet", "s4") else 8,
        num_classes=AVSS_CLASSES if task == "avss" else 1,
        audio_fc_name="aud_fc" if (kind, task) == ("pvt", "ms3") else "aud_fc1",
    )


# ---------------------------------------------------------------------------------------------
# Backbones
# ---------------------------------------------------------------------------------------------


class B2ResNet(nn.Module):
    """AVSBench ``B2_ResNet``: ResNet-50 (torchvision v1.5 Bottleneck) with two late branches.

    (BT, 3, H, W) -> x1 (BT, 256, H/4, W/4), x2 (BT, 512, H/8), x3 (BT, 1024, H/16),
    x4 (BT, 2048, H/32). ``layer3_2``/``layer4_2`` (input width 512) are built but never called.
    """

    def __init__(self) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, stride=2)
        self.layer3_1 = self._make_layer(256, 6, stride=2)
        self.layer4_1 = self._make_layer(512, 3, stride=2)
        self.inplanes = 512  # the dead second branch starts again from layer2's width
        self.layer3_2 = self._make_layer(256, 6, stride=2)
        self.layer4_2 = self._make_layer(512, 3, stride=2)
        # fallback init of B2_ResNet (used when no ImageNet file is loaded)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        width = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != width:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, width, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(width),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = width
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (BT, 64, H/4, W/4)
        x1 = self.layer1(x)  # (BT, 256, H/4, W/4)
        x2 = self.layer2(x1)  # (BT, 512, H/8, W/8)
        x3 = self.layer3_1(x2)  # (BT, 1024, H/16, W/16)
        x4 = self.layer4_1(x3)  # (BT, 2048, H/32, W/32)
        return [x1, x2, x3, x4]


def _pvt_init(m: nn.Module) -> None:
    """whai362 PVT-v2 ``_init_weights``."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            m.bias.data.zero_()


class DWConv(nn.Module):
    """Depthwise 3x3 conv on tokens: (BT, N, C) with N = H*W -> (BT, N, C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        BT, _, C = x.shape  # (BT, N, C)
        x = x.transpose(1, 2).reshape(BT, C, H, W)  # (BT, C, H, W)
        return self.dwconv(x).flatten(2).transpose(1, 2)  # (BT, N, C)


class PVTMlp(nn.Module):
    """fc1 -> DWConv -> GELU -> fc2 on (BT, N, C)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), H, W)))


class PVTAttention(nn.Module):
    """Spatial-reduction attention: (BT, N, C) -> (BT, N, C); keys from an sr x sr strided conv."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=True)
        self.kv = nn.Linear(dim, dim * 2, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)  # PyTorch default eps 1e-5, as in the original

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        BT, N, C = x.shape
        nh = self.num_heads
        q = self.q(x).reshape(BT, N, nh, C // nh).permute(0, 2, 1, 3)  # (BT, nh, N, d)
        if self.sr_ratio > 1:
            x_ = x.permute(0, 2, 1).reshape(BT, C, H, W)
            x_ = self.sr(x_).reshape(BT, C, -1).permute(0, 2, 1)  # (BT, N', C)
            x_ = self.norm(x_)
        else:
            x_ = x
        kv = self.kv(x_).reshape(BT, -1, 2, nh, C // nh).permute(2, 0, 3, 1, 4)  # (2,BT,nh,N',d)
        k, v = kv[0], kv[1]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)  # (BT, nh, N, N')
        x = (attn @ v).transpose(1, 2).reshape(BT, N, C)
        return self.proj(x)


class PVTBlock(nn.Module):
    """Pre-norm block (LayerNorm eps 1e-6): x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, sr_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = PVTAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = PVTMlp(dim, dim * mlp_ratio)

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        x = x + self.attn(self.norm1(x), H, W)
        return x + self.mlp(self.norm2(x), H, W)


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embed: (BT, Cin, H, W) -> (BT, H'*W', C), H', W'."""

    def __init__(self, patch_size: int, stride: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)  # PyTorch default eps 1e-5, as in the original

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.proj(x)
        _, _, H, W = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), H, W


class PyramidVisionTransformerV2(nn.Module):
    """PVT-v2-b5 (whai362 layout, no classifier head): (BT, 3, H, W) -> 4 maps NCHW.

    Outputs (BT, 64, H/4), (BT, 128, H/8), (BT, 320, H/16), (BT, 512, H/32). Eval only: no
    drop path.
    """

    def __init__(
        self,
        embed_dims: tuple[int, ...] = (64, 128, 320, 512),
        num_heads: tuple[int, ...] = (1, 2, 5, 8),
        mlp_ratios: tuple[int, ...] = (4, 4, 4, 4),
        depths: tuple[int, ...] = (3, 6, 40, 3),
        sr_ratios: tuple[int, ...] = (8, 4, 2, 1),
    ) -> None:
        super().__init__()
        self.num_stages = len(depths)
        for i in range(self.num_stages):
            patch_embed = OverlapPatchEmbed(
                patch_size=7 if i == 0 else 3,
                stride=4 if i == 0 else 2,
                in_chans=3 if i == 0 else embed_dims[i - 1],
                embed_dim=embed_dims[i],
            )
            block = nn.ModuleList(
                PVTBlock(embed_dims[i], num_heads[i], mlp_ratios[i], sr_ratios[i])
                for _ in range(depths[i])
            )
            setattr(self, f"patch_embed{i + 1}", patch_embed)
            setattr(self, f"block{i + 1}", block)
            setattr(self, f"norm{i + 1}", nn.LayerNorm(embed_dims[i], eps=1e-6))
        self.apply(_pvt_init)

    def forward(self, x: Tensor) -> list[Tensor]:
        BT = x.shape[0]
        outs = []
        for i in range(1, self.num_stages + 1):
            x, H, W = getattr(self, f"patch_embed{i}")(x)  # (BT, H*W, C_i)
            for blk in getattr(self, f"block{i}"):
                x = blk(x, H, W)
            x = getattr(self, f"norm{i}")(x)
            x = x.reshape(BT, H, W, -1).permute(0, 3, 1, 2).contiguous()  # (BT, C_i, H, W)
            outs.append(x)
        return outs


# ---------------------------------------------------------------------------------------------
# Decoder blocks
# ---------------------------------------------------------------------------------------------


def conv_bn_relu(c_in: int, c_out: int, kernel: int, groups: int = 1) -> nn.Sequential:
    """Conv (bias) + BN + ReLU; keys .0 and .1."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups, bias=True),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def output_head(dim: int, num_classes: int) -> nn.Sequential:
    """3x3 conv dim->128 (bias), BN, ReLU, 1x1 conv 128->K; keys .0 .1 .3."""
    return nn.Sequential(
        nn.Conv2d(dim, HEAD_HIDDEN, 3, padding=1),
        nn.BatchNorm2d(HEAD_HIDDEN),
        nn.ReLU(inplace=True),
        nn.Conv2d(HEAD_HIDDEN, num_classes, 1),
    )


class AVGA(nn.Module):
    """Audio-visual group attention: x (BT, C, h, w), audio (BT, C) -> (BT, C, h, w)."""

    def __init__(self, dim: int = DIM, groups: int = 8) -> None:
        super().__init__()
        self.groups = groups
        self.seq1 = conv_bn_relu(dim, dim, 1, groups=groups)
        self.seq2 = conv_bn_relu(dim, dim, 1)
        # no activation between the two linears
        self.fc = nn.Sequential(nn.Linear(dim, dim), nn.Linear(dim, dim // groups), nn.ReLU())

    def forward(self, x: Tensor, audio: Tensor) -> Tensor:
        _, C, h, w = x.shape  # (BT, C, h, w)
        x = self.seq1(x)  # (BT, C, h, w)
        a = self.fc(audio)  # (BT, C/g)
        a = a[:, :, None, None].repeat(1, 1, h, w)  # tiled over h x w: (BT, C/g, h, w)
        a = F.normalize(a, dim=1)  # eps 1e-12
        chunks = torch.split(x, C // self.groups, dim=1)  # g x (BT, C/g, h, w)
        out = []
        for chunk in chunks:
            cos = (F.normalize(chunk, dim=1) * a).sum(dim=1, keepdim=True)  # (BT, 1, h, w)
            out.append(chunk * cos)  # the un-normalised chunk times its own map
        return self.seq2(torch.cat(out, dim=1))


def _split_heads(t: Tensor) -> Tensor:
    """(..., L, heads*d) -> (..., heads, L, d); channel = head*d + i (head-major)."""
    *lead, L, _ = t.shape
    return t.reshape(*lead, L, HEADS, DIM_HEAD).transpose(-3, -2)


def _merge_heads(t: Tensor) -> Tensor:
    """(..., heads, L, d) -> (..., L, heads*d)."""
    *lead, nh, L, d = t.shape
    return t.transpose(-3, -2).reshape(*lead, L, nh * d)


class MaskAttention(nn.Module):
    """Official ``Mask_Attention``: x (BT, 1+n, C) [audio token first], mask -> (BT, 1+n, C).

    Per clip of T frames: audio queries attend over all T*n visual keys of the clip, visual
    queries over the T audio keys of the clip; no audio-audio, no visual-visual attention.
    ``mask`` (BT, 1, s, s) with s*s = n, 1 = uncertain = recomputed query, or None (dense).
    """

    def __init__(self, dim: int = DIM, frames: int = 5, dropout: float = 0.0) -> None:
        super().__init__()
        inner = HEADS * DIM_HEAD
        self.frames = frames
        self.scale = DIM_HEAD**-0.5
        self.v_to_q = nn.Linear(dim, inner, bias=False)
        self.v_to_kv = nn.Linear(dim, inner * 2, bias=False)  # rows 0:256 K, 256:512 V
        self.a_to_qkv = nn.Linear(dim, inner * 3, bias=False)  # rows Q, K, V
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        BT, L, C = x.shape  # L = 1 + n
        T = self.frames
        B = BT // T
        assert B * T == BT, f"batch of {BT} frames is not whole clips of T={T}"

        # --- joint per-clip sequence, (n, t) interleaved: (B, L*T, C); first T rows are audio
        joint = x.reshape(B, T, L, C).transpose(1, 2).reshape(B, L * T, C)
        aud, vis = joint[:, :T], joint[:, T:]  # (B, T, C), (B, n*T, C)

        aq, ak, av = (_split_heads(t) for t in self.a_to_qkv(aud).chunk(3, dim=-1))  # (B,h,T,d)
        vk, vv = (_split_heads(t) for t in self.v_to_kv(vis).chunk(2, dim=-1))  # (B,h,nT,d)

        # --- audio -> visual (both paths): T audio queries over all n*T visual keys of the clip
        dots = torch.matmul(aq, vk.transpose(-1, -2)) * self.scale  # (B, h, T, n*T)
        a_out = _merge_heads(torch.matmul(dots.softmax(dim=-1), vv))  # (B, T, inner)

        if mask is None:
            # --- dense visual -> audio: every visual token is a query over its clip's T keys
            vq = _split_heads(self.v_to_q(vis))  # (B, h, n*T, d)
            dots = torch.matmul(vq, ak.transpose(-1, -2)) * self.scale  # (B, h, n*T, T)
            v_out = _merge_heads(torch.matmul(dots.softmax(dim=-1), av))  # (B, n*T, inner)
            out = torch.cat([a_out, v_out], dim=1)  # (B, L*T, inner), (n, t) order
            out = out.reshape(B, L, T, -1).transpose(1, 2).reshape(BT, L, -1)  # (BT, L, inner)
            out = out.contiguous()  # same memory layout as the masked path -> same GEMM
        else:
            v_out = self._gather_visual_queries(x[:, 1:], ak, av, mask)  # (BT, n, inner)
            out = torch.cat([a_out.reshape(BT, 1, -1), v_out], dim=1)  # (BT, L, inner)
        return self.to_out(out)

    def _gather_visual_queries(self, vis: Tensor, ak: Tensor, av: Tensor, mask: Tensor) -> Tensor:
        """vis (BT, n, C) frame-major, ak/av (B, h, T, d), mask (BT, 1, s, s) -> (BT, n, inner).

        Selected rows get their audio attention; unselected rows are zero. No gradient.
        """
        BT, n, C = vis.shape
        T = self.frames
        B = BT // T
        assert mask.numel() == BT * n, f"mask {tuple(mask.shape)} does not match {n} tokens"
        with torch.no_grad():
            flat_mask = mask.reshape(BT * n)  # row-major (frame, token)
            sel = torch.nonzero(flat_mask, as_tuple=True)[0]  # (M,), grouped by clip
            q = _split_heads(self.v_to_q(vis.reshape(BT * n, C)[sel]))  # (h, M, d)
            k_all = ak.transpose(0, 1).reshape(HEADS, BT, DIM_HEAD)  # (h, BT, d), col b*T+t
            v_all = av.transpose(0, 1).reshape(HEADS, BT, DIM_HEAD)  # (h, BT, d)
            dots = torch.matmul(q, k_all.transpose(-1, -2)) * self.scale  # (h, M, BT)
            clip_of_row = torch.div(sel, n * T, rounding_mode="floor")  # (M,)
            for b in range(B):  # -inf into the columns of the other clips, one clip at a time
                rows = clip_of_row == b
                dots[:, rows, : b * T] = float("-inf")
                dots[:, rows, (b + 1) * T :] = float("-inf")
            res = _merge_heads(torch.matmul(dots.softmax(dim=-1), v_all))  # (M, inner)
            # clone a dense-shaped tensor, overwrite the selected rows, zero the rest by the mask
            out = vis.clone().reshape(BT * n, -1)  # (BT*n, inner), inner == C
            out[sel] = res
            out = out.reshape(BT, n, -1) * flat_mask.reshape(BT, n, 1)  # (BT, n, inner)
        return out


class PreNorm(nn.Module):
    """fn(LayerNorm(x)); one LayerNorm (eps 1e-5) shared by audio and visual tokens."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.fn(self.norm(x), mask)


class Transformer(nn.Module):
    """depth x [PreNorm(Mask_Attention)] with residual; no FFN, no final norm."""

    def __init__(self, dim: int, depth: int, frames: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([PreNorm(dim, MaskAttention(dim, frames))]) for _ in range(depth)
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for (attn,) in self.layers:
            x = attn(x, mask) + x  # y = x + Attn(LN(x))
        return x


class PatchFlatten(nn.Module):
    """(BT, C, s, s) -> (BT, s*s, C): einops 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)', p = 1."""

    def forward(self, x: Tensor) -> Tensor:
        BT, C, s1, s2 = x.shape
        x = x.reshape(BT, C, s1, 1, s2, 1).permute(0, 2, 4, 3, 5, 1)  # (BT, h, w, p1, p2, C)
        return x.reshape(BT, s1 * s2, C)  # a contiguous copy, as einops makes


class QSCAViT(nn.Module):
    """ViT-style block (patch 1, depth 1, 8 x 32 heads, no pos-embed, no FFN).

    pooled (BT, C, s, s), audio token (BT, 1, C), mask -> (BT, 1 + s*s, C).
    """

    def __init__(self, dim: int, frames: int) -> None:
        super().__init__()
        self.to_patch_embedding = nn.Sequential(PatchFlatten(), nn.Linear(dim, dim))
        self.dropout = nn.Dropout(0.0)
        self.transformer = Transformer(dim, depth=1, frames=frames)

    def forward(self, pooled: Tensor, audio: Tensor, mask: Tensor | None) -> Tensor:
        tokens = self.to_patch_embedding(pooled)  # (BT, n, C), row-major grid
        x = self.dropout(torch.cat([audio, tokens], dim=1))  # (BT, 1 + n, C), audio first
        return self.transformer(x, mask)


def scrambled_tokens_to_map(tokens: Tensor, h: int, w: int) -> Tensor:
    """Official token -> map step: plain reshape, NO transpose. (BT, n, C) -> (BT, C, h, w).

    Output flat index f = c'*h*w + i*w + j reads token f // C, channel f % C.
    """
    BT, _, C = tokens.shape  # (BT, n, C)
    return tokens.reshape(BT, C, h, w)


class QSCA(nn.Module):
    """Query-selected cross-attention: x (BT, C, H, W), audio (BT, C), mask -> g, audio_out.

    g (BT, C, H, W) is the scrambled token map upsampled to H x W, audio_out (BT, C).
    """

    def __init__(self, in_dim: int, dim: int, size: int, frames: int) -> None:
        super().__init__()
        self.gap = nn.AdaptiveAvgPool2d(size)
        self.aud_fc = nn.Linear(in_dim, dim)
        self.attn = QSCAViT(dim, frames)

    def forward(
        self, x: Tensor, audio: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        H, W = x.shape[-2:]  # x (BT, C, H, W)
        pooled = self.gap(x)  # (BT, C, s, s)
        s = pooled.shape[-1]
        a = self.aud_fc(audio)[:, None]  # (BT, 1, C)
        y = self.attn(pooled, a, mask)  # (BT, 1 + s*s, C)
        audio_out = y[:, 0]  # (BT, C)
        v = scrambled_tokens_to_map(y[:, 1:], s, s)  # (BT, C, s, s), scrambled
        g = F.interpolate(v, size=(H, W), mode="bilinear", align_corners=False)  # (BT, C, H, W)
        return g, audio_out


class GF(nn.Module):
    """Guided fusion: L (BT, C, H, W), H coarser decoder state or None, G (BT, C, H, W) -> same."""

    def __init__(self, dim: int = DIM) -> None:
        super().__init__()
        self.seq1 = conv_bn_relu(dim, dim, 3)
        self.seq2 = conv_bn_relu(dim, dim, 3)  # never called at stage 4 (gf4.seq2 is dead)
        self.seq3 = conv_bn_relu(dim, dim, 3)

    def forward(self, low: Tensor, high: Tensor | None, guide: Tensor) -> Tensor:
        size = low.shape[-2:]
        guide = F.interpolate(guide, size=size, mode="bilinear", align_corners=False)  # no-op
        if high is None:
            return self.seq3(low + self.seq1(guide))
        high = F.interpolate(high, size=size, mode="bilinear", align_corners=False)
        return self.seq3(low + self.seq1(high) + self.seq2(guide))


def cim_mask(logits: Tensor) -> Tensor:
    """CIM own mask from native-resolution logits (BT, K, h, w) -> (BT, 1, h, w) float {0, 1}.

    K == 1: p = sigmoid; K > 1: p = max softmax prob. 1 = uncertain (0.01 <= p <= 0.99), float32.
    """
    logits = logits.float()
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
    else:
        p = logits.softmax(dim=1).max(dim=1, keepdim=True).values
    return ((p >= 1 - THRESHOLD) & (p <= THRESHOLD)).float()


# ---------------------------------------------------------------------------------------------
# Assembled models
# ---------------------------------------------------------------------------------------------


class _OfficialAVS(nn.Module):
    """Shared decoder and forward (docs/pcmanet.md). Subclasses build the backbone first."""

    backbone_attr: str

    def _build_decoder(self, in_channels: tuple[int, ...], variant: OfficialVariant) -> None:
        self.variant = variant
        self.frames = variant.frames
        for k in (4, 3, 2, 1):  # lateral convs conv4..conv1 (registered in this order)
            setattr(self, f"conv{k}", conv_bn_relu(in_channels[k - 1], DIM, 3))
        setattr(self, variant.audio_fc_name, nn.Linear(AUDIO_DIM, DIM))
        for k in (4, 3, 2, 1):
            setattr(self, f"avga{k}", AVGA(DIM, variant.groups))
        for k in (4, 3, 2, 1):
            setattr(self, f"qsca{k}", QSCA(DIM, DIM, TOKEN_GRID[k], variant.frames))
        for k in (4, 3, 2, 1):
            setattr(self, f"gf{k}", GF(DIM))
        for k in (1, 2, 3, 4):
            setattr(self, f"output_conv{k}", output_head(DIM, variant.num_classes))

    def forward(
        self, x: Tensor, audio_feature: Tensor, vid_temporal_mask_flag: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
        """x (BT, 3, 224, 224), audio_feature (BT, 128), flag (BT,) or None.

        Returns out1..out4 (BT, K, 224, 224) logits (finest first) and per = [m4, m3, m2] means.
        The official forward is one function; it is split in two here only so that
        ``perturb_for_confidence`` can reuse the encoder output.
        """
        outs, per = self.decode(*self.encode(x, audio_feature, vid_temporal_mask_flag))
        H, W = x.shape[-2:]
        out1, out2, out3, out4 = (
            F.interpolate(o, size=(H, W), mode="bilinear", align_corners=False) for o in outs
        )
        return out1, out2, out3, out4, per

    def encode(
        self, x: Tensor, audio_feature: Tensor, flag: Tensor | None = None
    ) -> tuple[list[Tensor], Tensor]:
        """Per-frame part: AVGA outputs o1..o4 (BT, C, 56/28/14/7) and a0 (BT, C)."""
        BT = x.shape[0]
        assert BT % self.frames == 0, f"{BT} frames is not whole clips of T={self.frames}"
        assert audio_feature.shape == (BT, AUDIO_DIM), f"audio {tuple(audio_feature.shape)}"
        if flag is not None:  # AVSS: padded frames get a zero audio embedding (before aud_fc1)
            audio_feature = audio_feature * flag.reshape(BT, 1)

        # --- backbone and lateral convs
        feats = getattr(self, self.backbone_attr)(x)  # x1..x4
        f = [getattr(self, f"conv{k}")(feats[k - 1]) for k in (1, 2, 3, 4)]  # (BT, C, h_k, w_k)
        if flag is not None:  # AVSS: padded frames get zero lateral features (after ReLU)
            f = [fk * flag.reshape(BT, 1, 1, 1) for fk in f]
        a0 = getattr(self, self.variant.audio_fc_name)(audio_feature)  # (BT, C)

        # --- AVGA, all fed a0
        o = [getattr(self, f"avga{k}")(f[k - 1], a0) for k in (1, 2, 3, 4)]
        return o, a0

    def decode(self, o: list[Tensor], a0: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Cross-frame part: o1..o4, a0 -> native-resolution logits [out1..out4], per."""
        o1, o2, o3, o4 = o

        # --- stage 4: dense QSCA
        g4, a4 = self.qsca4(o4, a0, None)
        d4 = self.gf4(o4, None, g4)  # (BT, C, 7, 7)
        out4 = self.output_conv4(d4)  # (BT, K, 7, 7)
        m4 = cim_mask(out4)  # (BT, 1, 7, 7)

        # --- stage 3: 7x7 tokens, mask m4
        g3, a3 = self.qsca3(o3, a4, m4)
        d3 = self.gf3(o3, d4, g3)  # (BT, C, 14, 14)
        out3 = self.output_conv3(d3)
        m3 = cim_mask(out3) * F.interpolate(m4, size=out3.shape[-2:], mode="nearest")

        # --- stage 2: 14x14 tokens, mask m3
        g2, a2 = self.qsca2(o2, a3, m3)
        d2 = self.gf2(o2, d3, g2)  # (BT, C, 28, 28)
        out2 = self.output_conv2(d2)
        m2 = cim_mask(out2) * F.interpolate(m3, size=out2.shape[-2:], mode="nearest")

        # --- stage 1: 28x28 tokens, mask m2; the last audio token is discarded
        g1, _ = self.qsca1(o1, a2, m2)
        d1 = self.gf1(o1, d2, g1)  # (BT, C, 56, 56)
        out1 = self.output_conv1(d1)

        return [out1, out2, out3, out4], [m4.mean(), m3.mean(), m2.mean()]


class OfficialResNetAVS(_OfficialAVS):
    """Official ResNet-50 PCMANet (``model/ResNet_AVSModel.py`` per the spec); key prefix resnet."""

    backbone_attr = "resnet"

    def __init__(self, task: str = "s4") -> None:
        super().__init__()
        self.resnet = B2ResNet()
        self._build_decoder((256, 512, 1024, 2048), official_variant("resnet", task))


class OfficialPVTAVS(_OfficialAVS):
    """Official PVT-v2-b5 PCMANet (``model/PVT_AVSModel.py`` per the spec).

    Backbone key prefix ``encoder_backbone.``.
    """

    backbone_attr = "encoder_backbone"

    def __init__(self, task: str = "s4", depths: tuple[int, ...] = (3, 6, 40, 3)) -> None:
        super().__init__()  # ``depths`` other than b5's only to make fast forward tests
        self.encoder_backbone = PyramidVisionTransformerV2(depths=depths)
        self._build_decoder((64, 128, 320, 512), official_variant("pvt", task))


# ---------------------------------------------------------------------------------------------
# Test helpers: non-trivial BN stats, confident heads, ready-made models
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def randomize_bn_stats(model: nn.Module, seed: int, affine: bool = True) -> nn.Module:
    """Give every BatchNorm2d random running stats (and affine params if ``affine``). In place.

    running_mean ~ N(0, 0.1^2), running_var ~ U(0.5, 1.5), weight ~ U(0.8, 1.2),
    bias ~ N(0, 0.05^2). Keeps activations finite through ResNet-50's 16 blocks.
    """
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            if affine:
                m.weight.copy_(torch.rand(c, generator=gen) * 0.4 + 0.8)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.05)
    return model


def random_probe(variant: OfficialVariant, seed: int, clips: int = 1) -> tuple[Tensor, ...]:
    """A seeded random input (x, audio[, flag]) of ``clips`` clips at 224x224 for ``variant``.

    x (BT, 3, 224, 224) ~ N(0, 1), audio (BT, 128) = ReLU(N(0, 1)) like VGGish's post-ReLU
    output; AVSS adds flag (BT,) with the last 3 frames of every clip marked as padding.
    """
    gen = torch.Generator().manual_seed(seed)
    BT = clips * variant.frames
    x = torch.randn(BT, 3, 224, 224, generator=gen)
    audio = torch.relu(torch.randn(BT, AUDIO_DIM, generator=gen))
    if variant.num_classes > 1:
        flag = torch.ones(clips, variant.frames)
        flag[:, -3:] = 0
        return x, audio, flag.reshape(BT)
    return x, audio


class _StopForward(Exception):
    pass


def _probe_head(
    model: _OfficialAVS, stage: int, encoded: tuple[list[Tensor], Tensor]
) -> tuple[Tensor, Tensor | None]:
    """Run ``model.decode(*encoded)`` up to head ``stage``'s last conv (then stop).

    Returns that conv's input (BT, 128, h, w) and the progressive mask m_{stage+1} the stage's own
    mask will be multiplied with, upsampled to (BT, 1, h, w) (None for stage 4).
    """
    logits: dict[int, Tensor] = {}
    captured: list[Tensor] = []

    def grab_logits(k: int):
        def hook(_module: nn.Module, _args: tuple[Tensor, ...], output: Tensor) -> None:
            logits[k] = output

        return hook

    def grab_input(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
        captured.append(args[0])
        raise _StopForward

    handles = [
        getattr(model, f"output_conv{k}").register_forward_hook(grab_logits(k))
        for k in range(stage + 1, 5)
    ]
    handles.append(getattr(model, f"output_conv{stage}")[3].register_forward_pre_hook(grab_input))
    try:
        model.decode(*encoded)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    feat = captured[0]
    prior = None
    for k in range(4, stage, -1):  # m4 = own4; m3 = own3 * up(m4); ...
        own = cim_mask(logits[k])
        prior = own if prior is None else own * F.interpolate(prior, own.shape[-2:], mode="nearest")
    if prior is not None:
        prior = F.interpolate(prior, size=feat.shape[-2:], mode="nearest")
    return feat, prior


@torch.no_grad()
def perturb_for_confidence(
    model: _OfficialAVS,
    seed: int,
    probe: tuple[Tensor, ...] | None = None,
    keep: tuple[float, float, float] = (0.75, 0.55, 0.35),
) -> _OfficialAVS:
    """Rewrite heads 4, 3, 2's last conv (output_convK.3) so the CIM masks are mixed. In place.

    Fresh random weights (from ``seed``) are rescaled and shifted so that, on ``probe`` = (x,
    audio[, flag]) (default: a seeded random clip), the progressive masks m4, m3, m2 keep about
    ``keep`` of the tokens; other inputs from the same distribution land close to it. Sigmoid
    heads are centred on the median logit of the still-kept tokens, then scaled so that the
    right fraction has |logit| <= ln 99; softmax heads (AVSS) are scaled by bisection. Head 1
    makes no mask and is left alone. Call after ``randomize_bn_stats``.
    """
    was_training = model.training
    model.eval()
    probe = probe if probe is not None else random_probe(model.variant, seed)
    encoded = model.encode(*probe)  # the per-frame part does not depend on the heads
    gen = torch.Generator().manual_seed(seed)
    targets = {4: keep[0], 3: keep[1], 2: keep[2]}
    for stage in (4, 3, 2):  # in order: each head changes the masks the next stage sees
        conv = getattr(model, f"output_conv{stage}")[3]
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) / math.sqrt(HEAD_HIDDEN))
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.1)
        feat, prior = _probe_head(model, stage, encoded)  # (BT, 128, h, w), (BT, 1, h, w)
        z = conv(feat)  # (BT, K, h, w)
        live = torch.ones_like(z[:, :1], dtype=torch.bool) if prior is None else prior.bool()
        prior_keep = live.float().mean().item()
        ratio = min(max(targets[stage] / max(prior_keep, 1e-6), 0.05), 0.95)
        if z.shape[1] == 1:
            centre = z[live].median()
            spread = torch.quantile((z[live] - centre).abs(), ratio).clamp_min(1e-6)
            scale = math.log(THRESHOLD / (1 - THRESHOLD)) / spread.item()
            conv.weight.mul_(scale)
            conv.bias.sub_(centre).mul_(scale)
        else:
            lo, hi = math.log(1e-3), math.log(1e4)  # bisection on log(scale)
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                kept = cim_mask(z * math.exp(mid))[live].float().mean().item()
                lo, hi = (mid, hi) if kept > ratio else (lo, mid)
            conv.weight.mul_(math.exp(lo))
            conv.bias.mul_(math.exp(lo))
        _widen_margin(conv, feat, live)
    model.train(was_training)
    return model


def _widen_margin(conv: nn.Conv2d, feat: Tensor, live: Tensor) -> None:
    """Rescale the head slightly so no live token sits on the CIM threshold. In place.

    Calibrating to an exact keep fraction puts one token right at the threshold, where float
    rounding (a different summation order) decides its side. Among scales within +-10 %, pick
    the one whose live tokens stay farthest (in logit space) from the threshold.
    """
    z = conv(feat)  # (BT, K, h, w)
    edge = math.log(THRESHOLD / (1 - THRESHOLD))

    def margin(f: float) -> float:
        out = z * f
        if out.shape[1] == 1:
            dist = (out.abs() - edge).abs()
        else:
            p = torch.softmax(out.double(), dim=1).amax(dim=1, keepdim=True)
            dist = (torch.log(p / (1 - p).clamp_min(1e-300)) - edge).abs()
        return float(dist[live].min())

    best = max((math.exp(t) for t in torch.linspace(-0.1, 0.1, 41).tolist()), key=margin)
    conv.weight.mul_(best)
    conv.bias.mul_(best)


def build_official(
    kind: str, task: str = "s4", seed: int = 0, probe: tuple[Tensor, ...] | None = None
) -> _OfficialAVS:
    """Seeded official model in eval mode, random BN stats, heads perturbed for mixed masks."""
    official_variant(kind, task)  # validates kind and task
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = OfficialResNetAVS(task) if kind == "resnet" else OfficialPVTAVS(task)
    randomize_bn_stats(model, seed)
    model.eval()
    return perturb_for_confidence(model, seed, probe)


def random_official_state_dict(kind: str, task: str = "s4", seed: int = 0) -> dict[str, Tensor]:
    """State dict of ``build_official(kind, task, seed)``: keys as in the official checkpoints."""
    return build_official(kind, task, seed).state_dict()
