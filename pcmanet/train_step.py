"""One training step's forward and loss: which rows are decoded, and the multi-stage loss.

S4 training clips label only their first frame: only labelled rows are decoded (and, with
``encoder_grad="labelled"``, back-propagated into the encoder). MS3 labels all five; with
``decode_frames=k`` each step decodes k of them per clip, drawn at random (torch's RNG), which
makes MS3 steps about as cheap as S4 steps while every labelled frame is still seen over the run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pcmanet.evaluate import forward_batch
from pcmanet.kind_gate import audio_kind_loss
from pcmanet.kind_loss import kind_labels
from pcmanet.losses import bce_iou_loss, semantic_stage_loss
from pcmanet.model import PCMANet, PCMANetOutput


def labelled_rows(batch: dict[str, Any]) -> Tensor | None:
    """(F,) clip-major rows of a binary (S4/MS3) batch that carry a mask, or None when every
    row does or the batch is AVSS (whose loss weighs every frame)."""
    if batch["masks"].dtype == torch.int64:
        return None
    valid = batch["mask_valid"].flatten()                                   # (B*T,)
    return None if bool((valid == 1).all()) else valid.nonzero().squeeze(1)


def decoded_rows(batch: dict[str, Any], decode_frames: int | None) -> Tensor | None:
    """(F,) clip-major rows to decode: the labelled rows (:func:`labelled_rows`), and with
    ``decode_frames=k`` at most k of each clip's, drawn at random; None: every row."""
    rows = labelled_rows(batch)
    if decode_frames is None or batch["masks"].dtype == torch.int64:
        return rows
    B, T = batch["mask_valid"].shape
    valid = batch["mask_valid"].flatten() == 1                              # (B*T,)
    if rows is None and decode_frames >= T:
        return None
    keep = []
    for b in range(B):
        mine = valid[b * T:(b + 1) * T].nonzero().squeeze(1) + b * T       # this clip's labelled
        keep.append(mine[torch.randperm(len(mine))[:decode_frames]].sort().values)
    return torch.cat(keep)


def train_forward(net: nn.Module, batch: dict[str, Any], encoder_grad: str,
                  decode_frames: int | None = None) -> tuple[PCMANetOutput, Tensor | None]:
    """Forward a training batch; returns the output and the rows its logits cover (None: all).

    Only the labelled rows are decoded (in eval mode their logits equal the full decode's; in
    training the decoder's batch norms see only these rows). With
    encoder_grad="labelled" the unlabelled frames are also encoded without gradient: they
    still feed QSCA's cross-frame audio step, but the backbone learns from labelled frames
    only (about 2x faster S4 steps on a CPU; the reference recipe is "all").
    decode_frames: at most this many labelled frames per clip are decoded (MS3), see
    :func:`decoded_rows`; None: all of them.
    """
    rows = decoded_rows(batch, decode_frames)
    out = forward_batch(net, batch, targets=rows,
                        grad_rows=rows if encoder_grad == "labelled" else None)
    return out, rows


def gate_loss(model: PCMANet, out: PCMANetOutput, batch: dict[str, Any], rows: Tensor | None,
              jitter: float = 0.15, views: int = 4) -> Tensor:
    """The kind gate's own losses (pcmanet/kind_gate.py): its window backbone and head on
    ``views`` windows around each decoded row's target object (each turned, mirrored,
    channel-swapped and jittered by ``jitter`` at random)
    plus its audio head on every row, both against the clip's S4 category (a category outside
    the gate's kinds is left out)."""
    gate = model.gate
    assert gate is not None and out.kind_audio is not None, "a model with a kind gate"
    B, T = batch["mask_valid"].shape
    if rows is None:
        rows = torch.arange(B * T, device=out.kind_audio.device)
    labels = kind_labels(gate.kinds, batch["category"], out.kind_audio.device)   # (B,)
    seen = gate.head.loss(gate.backbone, batch, rows.repeat(views), jitter=jitter)
    return seen + audio_kind_loss(out.kind_audio, labels.repeat_interleave(T))


def clip_loss(model_out: list[Tensor], batch: dict[str, Any], weights: tuple[float, ...],
              rows: Tensor | None = None) -> Tensor:
    """Multi-stage loss on the labelled frames (`mask_valid`): BCE + soft-IoU or masked CE.

    model_out: stage logits of every row (rows=None) or of `rows` only (train_forward).
    """
    masks, valid = batch["masks"], batch["mask_valid"].flatten()            # (B, T, ...), (B*T,)
    if masks.dtype == torch.int64:                                          # AVSS labels
        labels = masks.flatten(0, 1)                                        # (B*T, H, W)
        return semantic_stage_loss(model_out, labels, valid, weights)
    target = masks.flatten(0, 1)                                            # (B*T, 1, H, W)
    if rows is None:
        rows = valid.nonzero().squeeze(1)                                   # labelled frames
        model_out = [x.index_select(0, rows) for x in model_out]
    target = target.index_select(0, rows)
    return sum((w * bce_iou_loss(x, target) for w, x in zip(weights, model_out, strict=True)),
               torch.zeros(()))
