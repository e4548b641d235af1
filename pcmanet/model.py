"""PCMANet wiring (docs/pcmanet.md): backbone -> lateral convs -> AVGA -> QSCA/GF/heads, with CIM.

The forward pass is split in two, so the streaming engine can cache per-frame work
(docs/design.md 5):

* `encode_frames`: everything that depends on one frame only: backbone, lateral convs,
  audio projection, AVGA and each stage's QSCA visual tokens and keys/values.
* `decode`: the cross-frame part for chosen frames of whole windows: the audio-token chain
  through the four QSCA stages over every frame of the window, then, for the decoded frames
  only, the selected visual queries, GF and the heads, coarse to fine, with CIM masks.

Clip mode, `forward`, is `encode_frames` followed by `decode` of every frame, so a frame
decoded alone from cached features equals the clip-mode result for that frame.
Stage lists are finest first: index 0 is stage 1 (stride 4), index 3 is stage 4 (stride 32).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcmanet.decoder import MaskRefiner
from pcmanet.fusion import cim
from pcmanet.fusion.qsca import QSCA
from pcmanet.kind_gate import KindGate


@dataclass
class FrameFeatures:
    """Per-frame features of F frames, cacheable frame by frame (all tensors lead with F).

    maps: AVGA outputs per stage, (F, C, H_k, W_k), finest first.
    tokens: QSCA visual tokens per stage, (F, N_k, C).
    kv: QSCA visual keys|values per stage, (F, N_k, 2*h*d); None at the finest stage, whose
        audio token nothing reads.
    audio: projected audio embedding a0, (F, C).
    fine: the mask refiner's projected stride-2 features (F, r, H/2, W/2); None without one.
    """

    maps: list[Tensor]
    tokens: list[Tensor]
    kv: list[Tensor | None]
    audio: Tensor
    fine: Tensor | None = None

    def __len__(self) -> int:
        return int(self.audio.shape[0])

    def apply(self, fn: Callable[[Tensor], Tensor]) -> FrameFeatures:
        """The same features with `fn` applied to every tensor (e.g. a cast or a clone)."""
        return FrameFeatures([fn(m) for m in self.maps], [fn(t) for t in self.tokens],
                             [None if k is None else fn(k) for k in self.kv], fn(self.audio),
                             None if self.fine is None else fn(self.fine))

    @staticmethod
    def combine(parts: list[FrameFeatures], fn: Callable[[list[Tensor]], Tensor]) -> FrameFeatures:
        """Field-wise `fn` over the parts' tensors (None fields stay None)."""
        def each(xs: tuple[Tensor | None, ...]) -> Tensor | None:
            return None if xs[0] is None else fn(list(xs))  # type: ignore[arg-type]

        return FrameFeatures(
            [fn(list(x)) for x in zip(*(p.maps for p in parts), strict=True)],
            [fn(list(x)) for x in zip(*(p.tokens for p in parts), strict=True)],
            [each(x) for x in zip(*(p.kv for p in parts), strict=True)],
            fn([p.audio for p in parts]),
            each(tuple(p.fine for p in parts)),
        )

    @staticmethod
    def cat(parts: list[FrameFeatures]) -> FrameFeatures:
        """Concatenate along frames (e.g. cached frames into a window)."""
        return FrameFeatures.combine(parts, torch.cat)


@dataclass
class PCMANetOutput:
    """logits: four stage logits, finest first, each (F, K, H, W) at the input resolution
    (the refined finest logits first, with a MaskRefiner).
    keep_ratios: fraction of visual tokens selected as queries at stages 3, 2, 1
    (the reference's `per` = [mean(m4), mean(m3), mean(m2)]).
    masks: the CIM masks [m4 (F, 1, h4, w4), m3, m2] that selected them.
    uncertain: the frames' own progressive CIM masks, same shapes, before any `restrict`
        (equal to `masks` when decode had no `restrict`); the streaming engine carries them
        to the next frame.
    kind_audio: with a kind gate (:meth:`PCMANet.gate_output`), its audio head's kind logits
        of every window row (B*T, K), or of the decoded rows (F, K) when the gate has its own
        audio encoder, for the training loss; None before or without one.
    kind_regions: with a kind gate, its proposal regions of the decoded rows (F, P, H/s, W/s),
        0/1 (:meth:`pcmanet.kind_gate.KindGate.regions`), for the training loss.
    """

    logits: list[Tensor]
    keep_ratios: list[Tensor]
    masks: list[Tensor]
    uncertain: list[Tensor]
    kind_audio: Tensor | None = None
    kind_regions: Tensor | None = None


def keep_fraction(out: PCMANetOutput) -> Tensor:
    """Token-weighted keep ratio over the CIM-selected stages (0-dim tensor; 1.0 if none)."""
    if not out.masks:
        return torch.ones((), device=out.logits[0].device)   # where the logits are (CUDA too)
    kept = torch.stack([m.sum() for m in out.masks]).sum()
    total = sum(m.numel() for m in out.masks)
    return kept / total


def token_grids(sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Token grid of each stage: the next coarser stage's map size; the coarsest keeps its own.

    For 224x224 input (maps 56/28/14/7) this gives 28/14/7/7, the reference grids, and each
    CIM mask (made at the coarser stage's resolution) matches the grid it selects from.
    """
    return [sizes[k + 1] for k in range(len(sizes) - 1)] + [sizes[-1]]


class PCMANet(nn.Module):
    """Frames (B*T, 3, H, W) and audio of the same frames, clip-major -> PCMANetOutput.

    Args:
        backbone: timm features_only model giving four levels (strides 4..32).
        audio_encoder: maps log-mel examples (B*T, 1, 96, 64) to embeddings (B*T, D); None
            when the caller passes embeddings. Its `out_dim` is D.
        audio_proj: Linear(D, C), the reference `aud_fc1`.
        lateral, avga, qsca, gf, heads: one module per stage, finest first.
        num_frames: T, frames per clip.
        threshold: CIM threshold (0.99 in the reference).
        freeze_audio: run the audio encoder without gradient, in eval mode (reference recipe).
        refiner: optional stride-2 MaskRefiner (not in the reference); the backbone then gives
            a fifth level first, at stride 2, and output 0 is the refined finest logits.
        gate: optional KindGate (not in the reference, pcmanet/kind_gate.py): after the decode,
            its term joins every stage's logits (:meth:`gate_output`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        audio_encoder: nn.Module | None,
        audio_proj: nn.Linear,
        lateral: nn.ModuleList,
        avga: nn.ModuleList,
        qsca: nn.ModuleList,
        gf: nn.ModuleList,
        heads: nn.ModuleList,
        num_frames: int,
        threshold: float,
        freeze_audio: bool = True,
        refiner: MaskRefiner | None = None,
        gate: KindGate | None = None,
    ) -> None:
        super().__init__()
        self.refiner = refiner
        self.gate = gate
        self.backbone, self.audio_encoder, self.audio_proj = backbone, audio_encoder, audio_proj
        self.lateral, self.avga, self.qsca, self.gf, self.heads = lateral, avga, qsca, gf, heads
        self.num_frames, self.threshold, self.freeze_audio = num_frames, threshold, freeze_audio

    @property
    def embed_dim(self) -> int:
        return int(self.audio_proj.in_features)

    # -- audio -------------------------------------------------------------------------------
    def embed_audio(self, audio: Tensor) -> Tensor:
        """Embeddings (F, D) pass through; log-mel (F, 1, 96, 64) goes through the encoder."""
        if audio.dim() == 2:
            assert audio.shape[1] == self.embed_dim, (
                f"audio embeddings {tuple(audio.shape)} must be (F, {self.embed_dim})")
            return audio
        if self.audio_encoder is None:
            raise ValueError(
                f"got audio of shape {tuple(audio.shape)} but this model has no audio encoder: "
                f"pass embeddings (F, {self.embed_dim})")
        if self.freeze_audio:
            self.audio_encoder.eval()
            with torch.no_grad():
                return self.audio_encoder(audio)  # type: ignore[no-any-return]
        return self.audio_encoder(audio)  # type: ignore[no-any-return]

    # -- per frame ---------------------------------------------------------------------------
    def encode_frames(
        self, frames: Tensor, audio: Tensor, frame_mask: Tensor | None = None
    ) -> FrameFeatures:
        """frames (F, 3, H, W) normalised, audio (F, D) or (F, 1, 96, 64) -> FrameFeatures.

        frame_mask: (F,) 1 for real frames, 0 for padding (AVSS): zeroes the padded frames'
        audio embedding and lateral features, as the reference does.
        """
        emb = self.embed_audio(audio)                                       # (F, D)
        if frame_mask is not None:
            emb = emb * frame_mask[:, None]
        a0 = self.audio_proj(emb)                                           # (F, C)
        feats = self.backbone(frames)                                       # 4 x (F, C_k, H_k, W_k)
        fine = None
        if self.refiner is not None:                                        # stride-2 level first
            fine = self.refiner.project(feats[0])                           # (F, r, H/2, W/2)
            if frame_mask is not None:
                fine = fine * frame_mask[:, None, None, None]
            feats = feats[1:]
        maps = []
        for x, lateral, avga in zip(feats, self.lateral, self.avga, strict=True):
            x = lateral(x)                                                  # (F, C, H_k, W_k)
            if frame_mask is not None:
                x = x * frame_mask[:, None, None, None]
            maps.append(avga(x, a0))
        grids = token_grids([tuple(m.shape[-2:]) for m in maps])            # type: ignore[misc]
        tokens: list[Tensor] = []
        kv: list[Tensor | None] = []
        for m, grid, qsca in zip(maps, grids, self.qsca, strict=True):
            t, k = qsca.frame_tokens(m, grid)  # type: ignore[operator]
            tokens.append(t)
            kv.append(k)
        return FrameFeatures(maps, tokens, kv, a0, fine)

    # -- cross-frame -------------------------------------------------------------------------
    def decode(
        self,
        feats: FrameFeatures,
        targets: Tensor | None = None,
        out_size: tuple[int, int] | None = None,
        restrict: list[Tensor] | None = None,
    ) -> PCMANetOutput:
        """Decode chosen frames of B whole windows of T frames (clip-major).

        feats: FrameFeatures of B*T frames.
        targets: (F,) int64 row indices of the frames to decode; None = every frame.
        out_size: (H, W) of the returned logits; None = the stage's own resolution.
        restrict: optional masks [(F, 1, h4, w4), m3-shaped, m2-shaped], 1 = may be a query:
            each CIM mask is multiplied by it before it selects queries (the streaming
            engine's carry-over of the previous frame's masks). None: the reference selection.
        """
        T = self.num_frames
        BT = len(feats)
        if BT % T:
            raise ValueError(f"{BT} frames do not form whole clips of T={T} (clip-major rows)")
        if targets is None:
            targets = torch.arange(BT, device=feats.audio.device)
        clip = torch.div(targets, T, rounding_mode="floor")                 # (F,)
        return self.decode_rows(
            feats.audio, feats.kv, [m.index_select(0, targets) for m in feats.maps],
            [t.index_select(0, targets) for t in feats.tokens],
            None if feats.fine is None else feats.fine.index_select(0, targets),
            clip, out_size=out_size, restrict=restrict)

    def decode_rows(
        self,
        audio: Tensor,
        kv: list[Tensor | None],
        maps: list[Tensor],
        tokens: list[Tensor],
        fine: Tensor | None,
        clip: Tensor,
        out_size: tuple[int, int] | None = None,
        restrict: list[Tensor] | None = None,
        static: bool = False,
    ) -> PCMANetOutput:
        """:meth:`decode` from what it reads: the window's audio side and the decoded rows.

        audio: (B*T, C) projected audio embeddings of the B windows, clip-major.
        kv: per stage (B*T, N_k, 2*h*d) visual keys|values of the windows' frames (None at the
            finest stage).
        maps, tokens, fine: the F decoded frames' AVGA maps (F, C, H_k, W_k), QSCA tokens
            (F, N_k, C) and refiner features (F, r, H/2, W/2) or None.
        clip: (F,) int64 window (0..B-1) of each decoded frame.
        static: fixed shapes and no host synchronisation (QSCA's dense masked path), for
            ``torch.compile(fullgraph=True)`` and CUDA graphs.
        """
        T = self.num_frames
        grids = token_grids([tuple(m.shape[-2:]) for m in maps])            # type: ignore[misc]
        state: Tensor | None = None                                         # GF output, coarser
        mask: Tensor | None = None                                          # CIM mask, this stage
        own: Tensor | None = None                                           # ... unrestricted
        logits: list[Tensor] = []
        masks: list[Tensor] = []
        uncertain: list[Tensor] = []
        ratios: list[Tensor] = []
        for k in reversed(range(len(self.qsca))):                           # stage 4 -> stage 1
            qsca: QSCA = self.qsca[k]                                       # type: ignore[assignment]
            a = qsca.audio_step(audio, kv[k], T)
            low = maps[k]                                                   # (F, C, H_k, W_k)
            guide, ratio = qsca.visual_step(tokens[k], clip, a, grids[k],
                                            tuple(low.shape[-2:]), mask,    # type: ignore[arg-type]
                                            static=static)
            if mask is not None:
                ratios.append(ratio)
            state = self.gf[k](low, state, guide)                           # (F, C, H_k, W_k)
            out = self.heads[k](state)                                      # (F, K, H_k, W_k)
            if k == 0 and self.refiner is not None:                         # -> (F, K, H/2, W/2)
                assert fine is not None, "a refiner model's features carry `fine`"
                out = self.refiner(fine, state, out)
            logits.append(out)
            if k > 0:
                # Uncertain tokens at this resolution, restricted to the coarser stage's.
                fresh = cim.uncertain_mask(out, self.threshold)
                mask = cim.progress(fresh, mask)
                if restrict is None:
                    own = mask
                else:
                    own = cim.progress(fresh, own)
                    mask = mask * restrict[len(masks)]
                masks.append(mask)
                uncertain.append(own)
            audio = a.token
        logits.reverse()                                                    # finest first
        if out_size is not None:
            logits = [F.interpolate(x, size=out_size, mode="bilinear", align_corners=False)
                      for x in logits]
        return PCMANetOutput(logits, ratios, masks, uncertain)

    def forward(
        self, frames: Tensor, audio: Tensor, frame_mask: Tensor | None = None,
        targets: Tensor | None = None, grad_rows: Tensor | None = None,
    ) -> PCMANetOutput:
        """Clip mode: frames (B*T, 3, H, W), audio (B*T, D) or (B*T, 1, 96, 64) -> logits.

        targets: (F,) rows to decode (e.g. S4 training's labelled first frames); None = all.
            The other frames still enter through QSCA's cross-frame audio step, so in eval
            mode the logits of those rows equal the full decode's.
        grad_rows: (G,) rows whose per-frame encoding keeps its gradient; the other rows are
            encoded under no_grad (a training economy for S4, where only the first frame of a
            clip is labelled). None = every row keeps it. Ignored when grad is disabled.
        """
        BT = frames.shape[0]
        if BT % self.num_frames:
            raise ValueError(
                f"{BT} frames do not form whole clips of T={self.num_frames} (clip-major rows)")
        if audio.shape[0] != BT:
            raise ValueError(f"{BT} frames but {audio.shape[0]} audio rows; they must match")
        if grad_rows is None or not torch.is_grad_enabled() or len(grad_rows) == BT:
            feats = self.encode_frames(frames, audio, frame_mask)
        else:
            feats = self._encode_split(frames, audio, frame_mask, grad_rows)
        out = self.decode(feats, targets=targets,
                          out_size=tuple(frames.shape[-2:]))                # type: ignore[arg-type]
        if self.gate is None:
            return out
        rows = torch.arange(BT, device=frames.device) if targets is None else targets
        return self.gate_output(out, frames.index_select(0, rows), feats.audio,
                                torch.div(rows, self.num_frames, rounding_mode="floor"),
                                heard=audio.index_select(0, rows) if self.gate.own_audio
                                else None)

    def gate_output(self, out: PCMANetOutput, frames: Tensor, audio: Tensor, clip: Tensor,
                    heard: Tensor | None = None) -> PCMANetOutput:
        """The kind gate's term added to every stage's logits of a decode (identity without
        a gate).

        out: the decode of F rows, its finest logits at the frames' size (F, 1, H, W);
        frames: those rows' frames (F, 3, H, W); audio: their windows' a0 (B*T, C),
        clip-major; clip: (F,) window of each row; heard: the rows' own audio, log-mel
        (F, 1, 96, 64) or embeddings (F, D), which a gate with its own audio encoder hears
        (``model.gate_audio: own``; its kind_audio is then (F, K)).
        """
        if self.gate is None:
            return out
        if self.gate.own_audio:
            if heard is None:
                raise ValueError("this kind gate hears each row's own audio: pass heard")
            kind_audio = self.gate.audio_logits(heard)                      # (F, K)
        else:
            kind_audio = self.gate.audio_logits(audio)                      # (B*T, K)
        term, regions = self.gate.term(frames, out.logits[0], kind_audio, clip,
                                       self.num_frames)                     # (F, 1, H/s, W/s)
        return replace(out, logits=[KindGate.add(x, term) for x in out.logits],
                       kind_audio=kind_audio, kind_regions=regions)

    def _encode_split(self, frames: Tensor, audio: Tensor, frame_mask: Tensor | None,
                      grad_rows: Tensor) -> FrameFeatures:
        """encode_frames with gradient only through grad_rows (G,); rows keep their order."""
        BT = frames.shape[0]
        keep = torch.zeros(BT, dtype=torch.bool, device=frames.device)
        keep[grad_rows] = True
        rest = (~keep).nonzero().squeeze(1)                                 # (BT-G,)
        rows = keep.nonzero().squeeze(1)                                    # (G,) sorted

        def pick(x: Tensor | None, idx: Tensor) -> Tensor | None:
            return None if x is None else x.index_select(0, idx)

        with torch.no_grad():
            cold = self.encode_frames(frames[rest], audio[rest], pick(frame_mask, rest))
        warm = self.encode_frames(frames[rows], audio[rows], pick(frame_mask, rows))

        def join(xs: list[Tensor]) -> Tensor:
            a, b = xs
            out = b.new_zeros((BT, *b.shape[1:]))
            return out.index_copy(0, rest, a.to(b.dtype)).index_copy(0, rows, b)

        return FrameFeatures.combine([cold, warm], join)
