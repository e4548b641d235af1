"""One training step's forward and loss: which rows are decoded, and the multi-stage loss.

S4 training clips label only their first frame: only labelled rows are decoded (and, with
``encoder_grad="labelled"``, back-propagated into the encoder). MS3 labels all five; with
``decode_frames=k`` each step decodes k of them per clip, drawn at random (torch's RNG), which
makes MS3 steps about as cheap as S4 steps while every labelled frame is still seen over the run.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcmanet.evaluate import forward_batch
from pcmanet.kind_gate import audio_kind_loss
from pcmanet.kind_loss import kind_labels, object_windows
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


WINDOW_JITTER = 0.15  # the gate's training windows: scale and place jittered by up to this


def gate_loss(model: PCMANet, out: PCMANetOutput, batch: dict[str, Any], rows: Tensor | None,
              jitter: float = WINDOW_JITTER, views: int = 4, match: float = 0.5) -> Tensor:
    """The kind gate's own losses (pcmanet/kind_gate.py), against the clip's S4 category (a
    category outside the gate's kinds, or a row without a target object, is left out):

    - its window backbone and head on ``views`` windows around each decoded row's target
      object (each turned, mirrored, channel-swapped and jittered by ``jitter`` at random), and
      on a window around each of the row's *proposal regions* that matches the target
      (IoU >= ``match`` on the regions' grid): the windows the gate names when it runs, whose
      boxes are as loose or tight as the model's mask makes them (one batch, one pass);
    - its audio head on every row it heard (the windows' rows, or with its own audio encoder
      the decoded rows).
    """
    gate = model.gate
    assert gate is not None and out.kind_audio is not None and out.kind_regions is not None, \
        "a model with a kind gate"
    B, T = batch["mask_valid"].shape
    device = out.kind_audio.device
    if rows is None:
        rows = torch.arange(B * T, device=device)
    labels = kind_labels(gate.kinds, batch["category"], device)             # (B,)
    row_labels = labels.index_select(0, torch.div(rows, T, rounding_mode="floor"))  # (F,)
    heard = row_labels if gate.own_audio else labels.repeat_interleave(T)  # a row per logit row
    audio = audio_kind_loss(out.kind_audio, heard)
    masks = batch["masks"].flatten(0, 1).index_select(0, rows).float()       # (F, 1, H, W)
    keep = ((masks.flatten(1).sum(1) > 0) & (row_labels >= 0)).nonzero().squeeze(1)
    if len(keep) == 0:
        return audio
    frames = batch["frames"].flatten(0, 1).index_select(0, rows.index_select(0, keep)).float()
    masks, row_labels = masks.index_select(0, keep), row_labels.index_select(0, keep)
    regions = out.kind_regions.index_select(0, keep)                         # (G, P, h, w)
    g, p = matching_regions(regions, masks, match)
    found = F.interpolate(regions[g, p][:, None], size=frames.shape[-2:],
                          mode="nearest")                                   # (M, 1, H, W)
    windows = object_windows(frames.repeat(views, 1, 1, 1), masks.repeat(views, 1, 1, 1),
                             jitter=jitter, blank=gate.blank)
    if len(g):
        windows = torch.cat([windows, object_windows(frames.index_select(0, g), found,
                                                     blank=gate.blank)])
    names = torch.cat([row_labels.repeat(views), row_labels.index_select(0, g)])
    seen = F.cross_entropy(gate.head(gate.backbone(windows)), names)
    return seen + audio


def matching_regions(regions: Tensor, masks: Tensor, match: float) -> tuple[Tensor, Tensor]:
    """Proposal regions (G, P, h, w), 0/1, and target masks (G, 1, H, W) -> (row, region)
    index pairs (M,), (M,) of the regions whose IoU with their row's target, on the regions'
    grid, is >= ``match`` (> 0)."""
    grid = (int(regions.shape[-2]), int(regions.shape[-1]))
    target = (F.adaptive_avg_pool2d(masks.float(), grid) > 0.5).to(regions.dtype)
    inter = (regions * target).sum((2, 3))                                  # (G, P)
    union = regions.sum((2, 3)) + target.sum((2, 3)) - inter
    hit = (inter >= match * union) & (inter > 0)
    g, p = hit.nonzero().unbind(1)
    return g, p


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
