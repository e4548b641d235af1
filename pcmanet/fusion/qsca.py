"""QSCA: query-selected cross-attention (docs/pcmanet.md).

One pre-norm residual cross-attention layer between the T audio tokens of a clip and the
T*N visual tokens of the same clip, with no visual-visual and no audio-audio attention:

* audio -> visual: each frame's audio token attends over all T*N visual tokens of its clip;
* visual -> audio: each selected visual token attends over the T audio tokens of its clip.

The block is split for streaming (docs/design.md 5): `frame_tokens` is per-frame work (pooling,
patch embedding, visual K/V) that can be cached; `audio_step` runs the audio chain over a
whole window; `visual_step` updates only the frames being decoded, and within them only the
selected (uncertain) tokens. Confident tokens receive `to_out.bias` alone, as in the
reference, whose scatter sends a zero vector through `to_out` for them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class AudioState:
    """The audio side of one QSCA stage for B clips of T frames.

    token: (B*T, C) audio token after the residual layer; feeds the next stage.
    key, value: (B, h, T, d) per-clip audio keys and values for the visual queries.
    """

    token: Tensor
    key: Tensor
    value: Tensor


class QSCA(nn.Module):
    """Visual tokens (F, N, C) of clips of T frames, audio (F, C) -> visual map (F, C, H, W).

    Args:
        dim: token width C.
        num_heads: attention heads h.
        head_dim: width d per head; inner width h*d.
        scrambled_tokens: reference layout: the (F, N, C) token tensor is reshaped to
            (F, C, h, w) without a transpose. False gives the correct transposed layout.
        query_grad: let gradient flow through the selected visual queries. The reference
            computes them under no_grad (docs/pcmanet.md).
        gather_max_ratio: keep ratio above which the dense path is cheaper than gathering.
        emits_audio: False for the finest stage, whose audio token the reference computes and
            discards: then no visual keys/values are computed, which skips projecting every
            visual token of the largest grid. `v_to_kv` is still held (frozen), so reference
            weights load and parameter counts match the reference.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        head_dim: int = 32,
        scrambled_tokens: bool = True,
        query_grad: bool = False,
        gather_max_ratio: float = 0.4,
        emits_audio: bool = True,
    ) -> None:
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads, self.head_dim = num_heads, head_dim
        self.scrambled_tokens, self.query_grad = scrambled_tokens, query_grad
        self.gather_max_ratio, self.emits_audio = gather_max_ratio, emits_audio
        self.aud_fc = nn.Linear(dim, dim)
        self.patch_embed = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.v_to_q = nn.Linear(dim, inner, bias=False)
        self.v_to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.v_to_kv.requires_grad_(emits_audio)
        self.a_to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    # -- per frame ---------------------------------------------------------------------------
    def frame_tokens(self, visual: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor | None]:
        """(F, C, H, W) -> tokens (F, N, C) and visual keys|values (F, N, 2*h*d), N = gh*gw.

        The keys|values are None when this stage emits no audio token (nothing reads them).
        """
        pooled = F.adaptive_avg_pool2d(visual, grid)                        # (F, C, gh, gw)
        tokens = self.patch_embed(pooled.flatten(2).transpose(1, 2))        # (F, N, C), row-major
        if not self.emits_audio:
            return tokens, None
        return tokens, self.v_to_kv(self.norm(tokens))

    # -- cross-frame: audio chain -------------------------------------------------------------
    def audio_step(self, audio: Tensor, visual_kv: Tensor | None, num_frames: int) -> AudioState:
        """audio (B*T, C) from the previous stage, visual_kv (B*T, N, 2*h*d) -> AudioState.

        Without an audio token to emit (`visual_kv` None) only the audio keys/values are made,
        and the returned token is the projected input (unused by any later stage).
        """
        BT = audio.shape[0]
        T, h, d = num_frames, self.num_heads, self.head_dim
        B = BT // T
        x = self.aud_fc(audio)                                              # (BT, C)
        q, k, v = self.a_to_qkv(self.norm(x)).chunk(3, dim=-1)              # 3 x (BT, h*d)
        key = k.reshape(B, T, h, d).transpose(1, 2)                         # (B, h, T, d)
        value = v.reshape(B, T, h, d).transpose(1, 2)
        if visual_kv is None:
            return AudioState(x, key, value)
        N = visual_kv.shape[1]
        q = q.reshape(B, T, h, d).transpose(1, 2)                           # (B, h, T, d)
        kv = visual_kv.reshape(B, T * N, 2, h, d).permute(2, 0, 3, 1, 4)    # 2 x (B, h, T*N, d)
        y = F.scaled_dot_product_attention(q, kv[0], kv[1])                 # (B, h, T, d)
        token = x + self.to_out(y.transpose(1, 2).reshape(BT, h * d))       # (BT, C) residual
        return AudioState(token, key, value)

    # -- cross-frame: the decoded frames' visual queries -----------------------------------------
    def visual_step(
        self,
        tokens: Tensor,
        clip: Tensor,
        audio: AudioState,
        grid: tuple[int, int],
        out_size: tuple[int, int],
        mask: Tensor | None = None,
        static: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Update the visual tokens of the decoded frames and turn them back into a map.

        tokens: (F, N, C) visual tokens of the F decoded frames.
        clip: (F,) int64, the clip (row of `audio.key`) each frame belongs to.
        mask: (F, 1, gh, gw) with 1 = uncertain = computed as a query; None = every token.
        static: always the dense masked path (fixed shapes, no host synchronisation).
        Returns the map (F, C, H, W) at `out_size` and the keep ratio (0-dim tensor).
        """
        Fq, N, C = tokens.shape
        assert grid[0] * grid[1] == N, f"grid {grid} does not hold N={N} tokens"
        y = tokens + self.to_out.bias                                       # (F, N, C)
        if mask is None:
            ratio = tokens.new_ones(())
            y = y + F.linear(self._dense_attention(tokens, clip, audio), self.to_out.weight)
        else:
            assert mask.shape == (Fq, 1, *grid), f"mask {tuple(mask.shape)} != ({Fq}, 1, {grid})"
            keep = mask.reshape(Fq, N)                                      # (F, N) in token order
            ratio = keep.mean()
            grad = contextlib.nullcontext() if self.query_grad else torch.no_grad()
            # Dense (masked) on CUDA and in static mode: gathering needs the count of selected
            # tokens on the host, a synchronisation that stalls a CUDA stream and breaks a
            # compiled graph.
            if static or tokens.is_cuda or ratio.item() > self.gather_max_ratio:
                with grad:
                    out = self._dense_attention(tokens, clip, audio) * keep[..., None]
                y = y + F.linear(out, self.to_out.weight)
            else:
                flat = keep.reshape(-1).nonzero().squeeze(1)                # (M,) frame*N + token
                with grad:
                    out = self._gather_attention(tokens, clip, audio, flat)  # (M, h*d)
                update = F.linear(out, self.to_out.weight)                  # (M, C)
                y = y.reshape(Fq * N, C).index_add(0, flat, update.to(y.dtype)).reshape(Fq, N, C)
        if self.scrambled_tokens:
            visual = y.reshape(Fq, C, *grid)        # reference: no transpose (scrambles c, n)
        else:
            visual = y.transpose(1, 2).reshape(Fq, C, *grid)                # (F, C, gh, gw)
        if tuple(visual.shape[-2:]) != tuple(out_size):
            visual = F.interpolate(visual, size=out_size, mode="bilinear", align_corners=False)
        return visual, ratio

    def _dense_attention(self, tokens: Tensor, clip: Tensor, audio: AudioState) -> Tensor:
        """Every token a query: (F, N, C) -> attention output (F, N, h*d)."""
        Fq, N, _ = tokens.shape
        h, d = self.num_heads, self.head_dim
        q = self.v_to_q(self.norm(tokens)).reshape(Fq, N, h, d).transpose(1, 2)  # (F, h, N, d)
        y = F.scaled_dot_product_attention(q, audio.key[clip], audio.value[clip])  # (F, h, N, d)
        return y.transpose(1, 2).reshape(Fq, N, h * d)

    def _gather_attention(
        self, tokens: Tensor, clip: Tensor, audio: AudioState, flat: Tensor
    ) -> Tensor:
        """Only the selected tokens, all clips at once: flat (M,) -> output (M, h*d)."""
        Fq, N, C = tokens.shape
        h, d = self.num_heads, self.head_dim
        rows = tokens.reshape(Fq * N, C).index_select(0, flat)              # (M, C)
        q = self.v_to_q(self.norm(rows)).reshape(-1, h, 1, d)               # (M, h, 1, d)
        owner = clip.index_select(0, flat // N)                             # (M,) clip per query
        k = audio.key.index_select(0, owner)                                # (M, h, T, d)
        v = audio.value.index_select(0, owner)
        y = F.scaled_dot_product_attention(q, k, v)                         # (M, h, 1, d)
        return y.reshape(-1, h * d)
