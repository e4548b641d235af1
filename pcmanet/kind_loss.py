"""Auxiliary object-kind loss (S4 training): the backbone has to name the sounding object's kind
from a window cut around it.

The segmentation loss teaches the backbone only through the decoder; on a 150-clip set of flat
shapes in random colours it learns each training scene rather than the kinds
(``python -m pcmanet.visual_probe``: near-chance test accuracy at every level after such a
fine-tune). A head on the backbone's features *averaged inside the mask of the full frame*
learnt the 150 training objects too (tried; test twin scores fell). What works is the classic
recipe: cut a window around the labelled object, turn it (a random multiple of 90 degrees, a
random mirror), swap its colour channels at random, and classify the window. On the pitch
family the demo backbone so fine-tuned names the kind of 0.9 of the test objects within
two minutes (``python -m pcmanet.window_probe``). Here that classification runs beside the
segmentation loss on the same backbone, so that the features the decoder reads learn kinds
that hold for new objects. (They do; the segmentation did not pick by them within a 15-minute
pitch run: docs/training.md, "Round four".)

The window is centred on the mask's bounding box, 1.5 times the box's longer side, resized to
half the frame's side: every object fills about two thirds of its window (windows at the
object's own scale in the frame, tried first, taught the kinds much more slowly: test accuracy
0.64 after 600 probe steps against 0.9). A linear head reads the backbone's last level,
averaged over the window. Under ``train.kind_loss`` the head is a training aid: not part of
the model and not in best.pt (last.pt keeps it, to resume). The kind gate
(pcmanet/kind_gate.py) keeps such a head, on a backbone of its own, inside the model.

Shapes: frames (F, 3, H, W) and masks (F, 1, H, W) of the labelled rows, windows
(F, 3, H/2, W/2), logits (F, K) over the K training categories.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def masked_mean(feature: Tensor, masks: Tensor) -> Tensor:
    """(F, C, h, w) features and (F, 1, H, W) 0/1 masks -> (F, C) means inside each mask."""
    m = F.interpolate(masks.to(feature.dtype), size=feature.shape[-2:], mode="area")
    return (feature * m).sum((2, 3)) / m.sum((2, 3)).clamp_min(1e-6)


def object_windows(frames: Tensor, masks: Tensor, generator: torch.Generator | None = None,
                   turn: bool = True, jitter: float = 0.0, blank: int | None = None) -> Tensor:
    """Windows around each (non-empty) mask's object, turned, mirrored and channel-swapped at
    random: frames (F, 3, H, W), masks (F, 1, H, W) -> (F, 3, H // 2, W // 2); the window is
    1.5 times the box's longer side (plus 3 pixels), so every object fills about two thirds of
    it whatever its size in the frame; outside the frame is zero.

    turn: False keeps the windows upright (the kind gate's windows at inference; no host
    synchronisation then). jitter: j > 0 scales each window by a random factor in [1-j, 1+j]
    and moves its centre by up to j/3 of its side (training for imprecise boxes).
    blank: b >= 0 keeps only the pixels within b pixels of the mask and zeroes the rest (the
    frames' mean colour, normalised): the window shows its object's silhouette and no touching
    neighbour (the kind gate's windows); None keeps the whole window."""
    if blank is not None:
        near = masks.to(frames.dtype)
        if blank > 0:
            near = F.max_pool2d(near, 2 * blank + 1, 1, blank)
        frames = frames * (near > 0.5).to(frames.dtype)
    Fn, _, H, W = frames.shape
    out_h, out_w = H // 2, W // 2
    ys = torch.arange(H, device=masks.device, dtype=frames.dtype)
    xs = torch.arange(W, device=masks.device, dtype=frames.dtype)
    m = masks[:, 0] > 0.5                                                  # (F, H, W)
    rows, cols = m.any(2), m.any(1)                                        # (F, H), (F, W)
    big = torch.tensor(float(max(H, W) * 4), dtype=frames.dtype, device=frames.device)
    y0 = torch.where(rows, ys, big).amin(1)
    y1 = torch.where(rows, ys, -big).amax(1)
    x0 = torch.where(cols, xs, big).amin(1)
    x1 = torch.where(cols, xs, -big).amax(1)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2                                  # (F,) pixels
    side = 1.5 * torch.maximum(y1 - y0, x1 - x0) + 3                     # (F,) the box's frame
    if jitter > 0:
        u = torch.rand(3, Fn, generator=generator).to(frames) * 2 - 1       # (3, F) in [-1, 1]
        cy, cx = cy + u[1] * jitter * side / 3, cx + u[2] * jitter * side / 3
        side = side * (1 + jitter * u[0])
    # affine_grid works in [-1, 1] over the frame; align_corners=False pixel centres
    theta = frames.new_zeros(Fn, 2, 3)
    theta[:, 0, 0] = side / W
    theta[:, 1, 1] = side / H
    theta[:, 0, 2] = (2 * cx + 1) / W - 1
    theta[:, 1, 2] = (2 * cy + 1) / H - 1
    grid = F.affine_grid(theta, [Fn, 3, out_h, out_w], align_corners=False)
    win = F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if not turn:
        return win
    turned = []
    for i in range(Fn):
        k = int(torch.randint(4, (1,), generator=generator))
        w = torch.rot90(win[i], k, (1, 2))
        if bool(torch.randint(2, (1,), generator=generator)):
            w = w.flip(2)
        turned.append(w[torch.randperm(3, generator=generator)])
    return torch.stack(turned)


def kind_labels(kinds: Sequence[str], names: Sequence[str], device: torch.device) -> Tensor:
    """Category names -> (N,) int64 indices into ``kinds``; -1 for a name it does not know."""
    index = {k: i for i, k in enumerate(kinds)}
    return torch.tensor([index.get(n, -1) for n in names], dtype=torch.int64, device=device)


class KindHead(nn.Module):
    """Linear head over the spatial mean of the backbone's last level.

    Args:
        channels: channels of every backbone level, in order.
        classes: the training categories; logit k is ``classes[k]``.
    """

    def __init__(self, channels: Sequence[int], classes: Sequence[str]) -> None:
        super().__init__()
        self.classes = list(classes)
        self.index = {c: k for k, c in enumerate(self.classes)}
        self.linear = nn.Linear(channels[-1], len(self.classes))

    def forward(self, levels: Sequence[Tensor]) -> Tensor:
        """levels: backbone outputs of F windows -> logits (F, K)."""
        return self.linear(levels[-1].float().mean((2, 3)))                 # type: ignore[no-any-return]

    def loss(self, backbone: nn.Module, batch: dict[str, Any], rows: Tensor,
             generator: torch.Generator | None = None, jitter: float = 0.0) -> Tensor:
        """Cross-entropy of the kind of each row's target object, from a window around it.

        rows: indices into the batch's B*T clip-major rows (the labelled, decoded ones); rows
        without a target (an empty mask: silence, a sound from out of view) or whose category
        the head does not know are left out; 0 when none is left.
        """
        T = batch["mask_valid"].shape[1]
        masks = batch["masks"].flatten(0, 1).index_select(0, rows)          # (F, 1, H, W)
        names = [batch["category"][int(r) // T] for r in rows]
        labels = kind_labels(self.classes, names, masks.device)
        keep = (masks.flatten(1).sum(1) > 0) & (labels >= 0)                 # (F,)
        if not bool(keep.any()):
            return masks.new_zeros(())
        idx = keep.nonzero().squeeze(1)
        frames = batch["frames"].flatten(0, 1).index_select(0, rows.index_select(0, idx))
        windows = object_windows(frames.float(), masks.index_select(0, idx), generator,
                                 jitter=jitter)
        return F.cross_entropy(self(backbone(windows)), labels.index_select(0, idx))


def labelled_objects(dataset: Any) -> tuple[Tensor, Tensor, list[str]]:
    """Every labelled frame of an S4 set with a non-empty mask -> frames (N, 3, H, W), masks
    (N, 1, H, W), N category names."""
    frames, masks, names = [], [], []
    for i in range(len(dataset)):
        item = dataset[i]
        for r in item["mask_valid"].nonzero().squeeze(1).tolist():
            if item["masks"][r].sum() > 0:
                frames.append(item["frames"][r])
                masks.append(item["masks"][r])
                names.append(dataset.clips[i].category)
    if not frames:
        raise ValueError("no labelled frame with an object in the set: nothing to name")
    return torch.stack(frames), torch.stack(masks), names


def fit_windows(backbone: nn.Module, head: KindHead, objects: tuple[Tensor, Tensor, list[str]],
                *, steps: int, batch: int = 32, lr: float = 5e-4, jitter: float = 0.0,
                blank: int | None = None, generator: torch.Generator | None = None,
                every: int = 0, report: Callable[[int, Tensor], None] | None = None) -> None:
    """Train ``backbone`` and ``head`` in place to name each object's kind from a window around
    it (:func:`object_windows`: turned, mirrored, channel-swapped, jittered by ``jitter``,
    blanked outside the mask by ``blank``):
    ``steps`` Adam steps of ``batch`` windows drawn at random from ``objects`` (frames
    (N, 3, H, W), masks (N, 1, H, W), N names; a name the head does not know is left out).
    report(step, loss) runs every ``every`` steps and after the last (0: never)."""
    frames, masks, names = objects
    labels = kind_labels(head.classes, names, torch.device("cpu"))
    known = (labels >= 0).nonzero().squeeze(1)
    if len(known) == 0:
        raise ValueError(f"none of the objects' kinds is among {head.classes}")
    device = next(backbone.parameters()).device
    opt = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=lr)
    backbone.train()
    for step in range(1, steps + 1):
        idx = known[torch.randint(len(known), (batch,), generator=generator)]
        windows = object_windows(frames[idx].float(), masks[idx], generator, jitter=jitter,
                                 blank=blank)
        loss = F.cross_entropy(head(backbone(windows.to(device))), labels[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if report is not None and every and (step % every == 0 or step == steps):
            report(step, loss.detach())
            backbone.train()


def backbone_channels(backbone: nn.Module, image_size: int = 64) -> list[int]:
    """Channels of each level the backbone returns (one small forward without gradient)."""
    param = next(backbone.parameters())
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.zeros(1, 3, image_size, image_size, device=param.device))
    backbone.train(was_training)
    return [int(x.shape[1]) for x in out]
