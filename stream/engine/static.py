"""The static step (docs/static_step.md): one fixed-shape function from a batch of frames to logits.

``StaticStep(x (P, 3, S, S), mel (P, 1, 96, 64), control (P, T + 4)) -> (logits (P, K, S, S),
keep (P,))`` for a batch of P rows (streams), padded to a bucket. Inside, with no host
synchronisation, no data-dependent shapes and no allocation a graph could not own:

1. audio: each row's embedding computed (``embed``), or read from the stream's table where
   the host says it is reused (``audio_rate_hz``); the table is updated;
2. ``encode_frames`` on the P frames;
3. the new frames' keys/values and a0 written to their ring slots (``index_copy_``), then the
   P windows (T slots each, clip-major, newest last) gathered (``index_select``): writing first
   gives the repetition of the oldest frame before history exists for free;
4. CIM carry (when on): each row's restriction from its stream's previous masks, input and a0
   (a full refresh where the host's flag says so or the audio moved), the tables updated;
5. ``decode_rows`` of the P newest frames (QSCA dense masked when ``static``), the logits at
   S x S and each row's keep ratio.

``control`` columns: 0 the ring slot written, 1..T the window's ring slots (oldest first),
T + 1 the stream's row in the per-stream tables, T + 2 the refresh flag (1: plain CIM
selection), T + 3 reuse the stream's last audio embedding (1) or use this row's (0).
Upsampling to each source's frame size and the copy to the host stay outside.

The same module runs eagerly, under ``torch.compile(fullgraph=True, dynamic=False)`` on the
CPU, and (issue: the GPU side) captured in a CUDA graph per bucket.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcmanet.model import FrameFeatures, PCMANet
from stream.engine.parts import CarryConfig
from stream.engine.ring import DeviceTables

WRITE, WINDOW = 0, 1  # control columns; then T window columns, stream, refresh, reuse


class StaticStep(nn.Module):
    """One fixed-shape batched step over every stream's device tables (see module doc).

    Args:
        model: PCMANet in eval mode, with an audio encoder.
        tables: the streams' ring and carry tables (updated in place).
        carry: CIM carry-over settings (off: the reference selection, no restriction).
        embed: compute the rows' audio embeddings (False: every row reuses its stream's; the
            audio encoder is then not run at all).
        encode: ``(x, emb) -> FrameFeatures``; default ``model.encode_frames``.
        static: no host synchronisation anywhere (QSCA's dense masked path), as a compiled
            graph or a CUDA graph needs. False: QSCA gathers the selected queries on the CPU,
            which makes the step bit for bit the per-frame engine's (an eager step).
    """

    model: PCMANet
    tables: DeviceTables

    def __init__(self, model: PCMANet, tables: DeviceTables, carry: CarryConfig,
                 embed: bool = True,
                 encode: Callable[[Tensor, Tensor], FrameFeatures] | None = None,
                 static: bool = True) -> None:
        super().__init__()
        self.model, self.tables, self.carry, self.embed = model, tables, carry, embed
        self.static = static
        self._encode = encode or model.encode_frames
        self.T = model.num_frames

    def forward(self, x: Tensor, mel: Tensor, control: Tensor) -> tuple[Tensor, Tensor]:
        """x (P, 3, S, S), mel (P, 1, 96, 64), control (P, T + 4) int64 -> logits (P, K, S, S)
        and keep ratio (P,)."""
        P, T, tb = x.shape[0], self.T, self.tables
        write = control[:, WRITE]                                           # (P,)
        window = control[:, WINDOW:WINDOW + T].reshape(P * T)               # (P*T,) clip-major
        stream = control[:, T + 1]                                          # (P,)
        refresh = control[:, T + 2].bool()                                  # (P,)
        reuse = control[:, T + 3].bool()[:, None]                           # (P, 1)
        # -- audio embedding: this row's, or its stream's last -------------------------------
        last = tb.emb.index_select(0, stream)                               # (P, D)
        emb = torch.where(reuse, last, self.model.embed_audio(mel)) if self.embed else last
        tb.emb.index_copy_(0, stream, emb)
        # -- per frame: encode, then into the ring -------------------------------------------
        feats = self._encode(x, emb)                                        # F = P
        kv: list[Tensor | None] = []
        for k, new in enumerate(feats.kv):
            table = tb.ring_kv(k)
            if table is None or new is None:
                kv.append(None)
                continue
            table.index_copy_(0, write, new.to(table.dtype))                # (R_all, N_k, 2hd)
            kv.append(table.index_select(0, window).to(new.dtype))          # (P*T, N_k, 2hd)
        tb.ring_audio.index_copy_(0, write, feats.audio.to(tb.ring_audio.dtype))
        audio = tb.ring_audio.index_select(0, window).to(feats.audio.dtype)  # (P*T, C)
        # -- CIM carry: restrict the new frames' queries ---------------------------------------
        restrict = self._restrict(x, feats.audio, stream, refresh) if self.carry.enabled else None
        # -- decode the newest frame of each window ------------------------------------------------
        clip = torch.arange(P, device=x.device)                             # (P,) row = window
        S = x.shape[-1]
        out = self.model.decode_rows(audio, kv, feats.maps, feats.tokens, feats.fine, clip,
                                     out_size=(S, S), restrict=restrict, static=self.static)
        out = self.model.gate_output(out, x, audio, clip, heard=mel)       # kind gate, if any
        if self.carry.enabled:
            for table, own in zip(tb.carry_masks(), out.uncertain, strict=True):
                table.index_copy_(0, stream, own)
            tb.carry_image.index_copy_(0, stream, x)
            tb.carry_audio.index_copy_(0, stream, feats.audio)
        if not out.masks:
            return out.logits[0], torch.ones(P, device=x.device)
        kept = torch.stack([m.flatten(1).sum(1) for m in out.masks], 1).sum(1)  # (P,)
        return out.logits[0], kept / sum(m[0].numel() for m in out.masks)

    def _restrict(self, x: Tensor, a0: Tensor, stream: Tensor, refresh: Tensor) -> list[Tensor]:
        """Per CIM stage (P, 1, h, w): 1 where a query may be computed. A row keeps its
        stream's previous own masks, grown where its pixels changed (``change_threshold``)
        and by ``dilate`` tokens; all ones on a refresh (host flag) or a new sound."""
        cfg, tb = self.carry, self.tables
        diff = (x - tb.carry_image.index_select(0, stream)).abs().mean(1, keepdim=True)
        prev_a = tb.carry_audio.index_select(0, stream)                     # (P, C)
        moved = 1 - F.cosine_similarity(a0.float(), prev_a.float(), dim=1)  # (P,)
        full = (refresh | (moved > cfg.audio_change)).float().view(-1, 1, 1, 1)
        out = []
        for table in tb.carry_masks():
            prev = table.index_select(0, stream)                            # (P, 1, h, w)
            grid = (int(prev.shape[-2]), int(prev.shape[-1]))
            changed = (F.adaptive_avg_pool2d(diff, grid)
                       > cfg.change_threshold).to(prev)
            seed = torch.maximum(prev, changed)
            if cfg.dilate:
                r = cfg.dilate
                seed = F.max_pool2d(seed, 2 * r + 1, stride=1, padding=r)
            out.append(torch.maximum(seed, full))
        return out
