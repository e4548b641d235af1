"""AVSBench evaluation metrics with the official semantics (docs/avsbench.md section 6).

S4/MS3 (binary, one logit map per frame):
- `mask_iou`: the official `mask_iou` ("mIoU", Jaccard) of one batch of frames;
  `frame_ious` gives its per-frame values and `mask_area` the predicted area per frame (what a
  model paints where nothing audible is in view: AVSBench's mIoU hardly sees it).
- `f_score`: the official `Eval_Fmeasure` (beta^2 = 0.3, best of 255 thresholds) of one batch,
  vectorised over thresholds.
- `AVSMeter`: the official test loop's `AverageMeter`: the mean over batches of the per-batch
  values, so a short last batch weighs as much as a full one.

AVSS (semantic, C class logits per frame):
- `semantic_stats`: per-frame, per-class IoU, F and presence of `calc_color_miou_fscore`.
- `SemanticMeter`: the test-set aggregation of avss/test.py (per-class sums over frames).

Everything is computed in float32 like the official code; logits of another dtype are cast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

BETA2 = 0.3                          # F-measure beta^2 used by every AVSBench script
FLOAT64_EPS = 2.220446049250313e-16  # the eps calc_color_miou_fscore adds to the union
_MAX_CHUNK_ELEMS = 1 << 22           # bound on per-chunk element counts (frames are chunked)


def _as_frames(x: Tensor, name: str) -> Tensor:
    """(N, H, W) or (N, 1, H, W) -> (N, H, W)."""
    if x.dim() == 4 and x.shape[1] == 1:
        x = x.squeeze(1)
    assert x.dim() == 3, f"{name} must be (N, H, W) or (N, 1, H, W), got {tuple(x.shape)}"
    return x


def _frame_chunks(num_frames: int, elems_per_frame: int) -> list[slice]:
    """Consecutive frame slices holding at most about _MAX_CHUNK_ELEMS elements each."""
    step = max(1, _MAX_CHUNK_ELEMS // max(1, elems_per_frame))
    return [slice(i, min(i + step, num_frames)) for i in range(0, num_frames, step)]


# ------------------------------------------------------------------------------------------
# S4 / MS3
# ------------------------------------------------------------------------------------------


def mask_iou(logits: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """Official S4/MS3 batch mIoU: logits (N, H, W), target (N, H, W) 0/1 -> 0-dim float32.

    Per frame, P = sigmoid(logits) > 0.5 (strictly: a logit of 0 is background) and
    J = |P and G| / (|P or G| + eps). A frame with an empty GT scores instead the fraction of
    pixels predicted background, |not P and not G| / (H*W + eps). Returns the mean of J over
    the N frames. A singleton channel dim, (N, 1, H, W), is accepted and squeezed.
    """
    ious = frame_ious(logits, target, eps)                                  # (N,)
    return torch.sum(ious) / ious.shape[0]


def frame_ious(logits: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """Per-frame J of `mask_iou`: logits (N, H, W), target (N, H, W) 0/1 -> (N,) float32."""
    logits, target = _as_frames(logits, "logits"), _as_frames(target, "target")
    assert logits.shape == target.shape, f"{tuple(logits.shape)} != {tuple(target.shape)}"
    _, H, W = logits.shape
    pred = (torch.sigmoid(logits.float()) > 0.5).int()                      # (N, H, W)
    gt = target.float()
    empty = gt.sum(2).sum(1) == 0                                           # (N,)
    inter = (pred * gt).sum(2).sum(1)                                       # (N,)
    union = torch.max(pred, gt).sum(2).sum(1)                               # (N,)
    inter_bg = ((1 - gt) * (1 - pred)).sum(2).sum(1)                        # (N,)
    inter = torch.where(empty, inter_bg, inter)
    union = torch.where(empty, torch.full_like(union, float(H * W)), union)
    return inter / (union + eps)


def mask_area(logits: Tensor) -> Tensor:
    """Predicted mask area per frame: logits (N, H, W) -> (N,) float32, the fraction of pixels
    with sigmoid(logits) > 0.5 (the foreground of `mask_iou`)."""
    logits = _as_frames(logits, "logits")
    pred = torch.sigmoid(logits.float()) > 0.5                              # (N, H, W)
    return pred.flatten(1).float().mean(1)


def f_score(
    logits: Tensor, target: Tensor, num_thresholds: int = 255, beta2: float = BETA2
) -> float:
    """Official S4/MS3 batch F-measure (Eval_Fmeasure): logits, target (N, H, W) -> float.

    prob = sigmoid(logits); thresholds thr = linspace(0, 1 - 1e-10, num_thresholds) in float32
    (the last one is exactly 1.0). For each frame with a non-empty GT and each threshold j,
    Y = prob >= thr[j], prec = tp / (sum Y + 1e-20), rec = tp / (sum G + 1e-20) and
    f = (1 + beta2) * prec * rec / (beta2 * prec + rec) with NaN -> 0. The result is the max
    over thresholds of the mean over the kept frames; 0.0 when every GT in the batch is empty.
    Returns a Python float, as the official function does (`.item()`).

    Vectorised: each pixel's threshold level (how many thresholds are <= prob) comes from one
    `searchsorted`; per-threshold counts are reverse cumulative sums of a `bincount` over
    levels. Counts are exact, the float32 formula is the official one, and the kept frames are
    summed sequentially like the official running sum, so the result matches a literal loop.
    """
    logits, target = _as_frames(logits, "logits"), _as_frames(target, "target")
    assert logits.shape == target.shape, f"{tuple(logits.shape)} != {tuple(target.shape)}"
    N, H, W = logits.shape
    prob = torch.sigmoid(logits.float()).reshape(N, H * W)                  # (N, HW)
    gt = target.float().reshape(N, H * W)                                   # (N, HW)
    keep = gt.mean(1) != 0              # frames with an all-zero GT are skipped
    prob, gt = prob[keep], gt[keep]
    if prob.shape[0] == 0:
        return 0.0
    thr = torch.linspace(0, 1 - 1e-10, num_thresholds, dtype=torch.float32, device=prob.device)
    curves = torch.cat(
        [_f_curves(prob[s], gt[s], thr, beta2) for s in _frame_chunks(prob.shape[0], H * W)]
    )                                                                        # (N_kept, K)
    total = torch.zeros_like(curves[0])
    for curve in curves:                # sequential float32 sum, as the official `avg_f += f`
        total += curve
    return (total / curves.shape[0]).max().item()


def _f_curves(prob: Tensor, gt: Tensor, thr: Tensor, beta2: float) -> Tensor:
    """Per-frame F over thresholds: prob (F, P), gt (F, P), thr (K,) ascending -> (F, K) float32."""
    n_pos, tp, gt_sum = _threshold_counts(prob, gt, thr)
    prec = tp / (n_pos + 1e-20)                                             # (F, K)
    rec = tp / (gt_sum[:, None] + 1e-20)                                    # (F, K)
    f = (1 + beta2) * prec * rec / (beta2 * prec + rec)
    return torch.where(torch.isnan(f), torch.zeros_like(f), f)


def _threshold_counts(prob: Tensor, gt: Tensor, thr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Threshold counts: prob, gt (F, P), thr (K,) -> sum Y (F, K), tp (F, K), sum G (F,).

    Y[j] = prob >= thr[j] holds exactly for j < level, level = #{j : thr[j] <= prob}, so the
    counts at threshold j sum the per-level histograms over the levels above j.
    """
    F_, K = prob.shape[0], thr.numel()
    level = torch.searchsorted(thr, prob.contiguous(), right=True)          # (F, P) in [0, K]
    offset = torch.arange(F_, device=prob.device)[:, None] * (K + 1)        # (F, 1)
    bins = (level + offset).flatten()                                       # (F*P,)
    n_at = torch.bincount(bins, minlength=F_ * (K + 1)).view(F_, K + 1)     # (F, K+1)
    g_at = torch.bincount(bins, weights=gt.flatten().double(), minlength=F_ * (K + 1))
    g_at = g_at.view(F_, K + 1)                                             # (F, K+1) float64
    n_pos = n_at.flip(1).cumsum(1).flip(1)[:, 1:]                           # (F, K): levels > j
    tp = g_at.flip(1).cumsum(1).flip(1)[:, 1:]                              # (F, K)
    return n_pos.float(), tp.float(), g_at.sum(1).float()


class AVSMeter:
    """Test-set S4/MS3 scores as the official test loop reports them.

    The official loop adds each batch's `mask_iou` and `Eval_Fmeasure` to an `AverageMeter` and
    divides by the number of batches, so the score depends on the batch grouping (a short last
    batch weighs as much as a full one; each batch picks its own best F threshold). Sums are kept
    in float64; the official meter sums mIoU as float32 tensors, which can differ from these
    sums in the 7th significant digit.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._miou_sum, self._f_sum = 0.0, 0.0
        self.n_batches, self.n_videos, self.n_frames = 0, 0, 0

    def update(self, logits: Tensor, target: Tensor, n_videos: int = 0) -> tuple[float, float]:
        """Scores one batch, logits (N, H, W) or (N, 1, H, W), and adds it; returns (mIoU, F)."""
        miou = float(mask_iou(logits, target))
        fscore = f_score(logits, target)
        self.add(miou, fscore, n_videos=n_videos, n_frames=_as_frames(logits, "logits").shape[0])
        return miou, fscore

    def add(
        self, miou: float | Tensor, fscore: float | Tensor, n_videos: int = 0, n_frames: int = 0
    ) -> None:
        """Adds one batch's already computed mIoU and F (counts are for reporting only)."""
        self._miou_sum += float(miou)
        self._f_sum += float(fscore)
        self.n_batches += 1
        self.n_videos += n_videos
        self.n_frames += n_frames

    @property
    def miou(self) -> float:
        """Mean over batches of the batch mIoU; NaN before the first batch."""
        return self._miou_sum / self.n_batches if self.n_batches else math.nan

    @property
    def fscore(self) -> float:
        """Mean over batches of the batch F-measure; NaN before the first batch."""
        return self._f_sum / self.n_batches if self.n_batches else math.nan

    def summary(self) -> dict[str, float]:
        return {
            "miou": self.miou,
            "fscore": self.fscore,
            "n_batches": self.n_batches,
            "n_videos": self.n_videos,
            "n_frames": self.n_frames,
        }


# ------------------------------------------------------------------------------------------
# AVSS
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SemanticStats:
    """Per-frame, per-class results of `semantic_stats`, each (BF, C)."""

    iou: Tensor      # (BF, C) float32; 0 where the class is absent from prediction and GT
    fscore: Tensor   # (BF, C) float32; 0 unless the class has a true positive
    present: Tensor  # (BF, C) bool; union != 0 (class in the prediction or the GT)


def semantic_stats(logits: Tensor, target: Tensor, beta2: float = BETA2) -> SemanticStats:
    """Official AVSS per-frame stats: logits (BF, C, H, W), target (BF, H, W) -> (BF, C) each.

    Reproduces `calc_color_miou_fscore` frame by frame:
    p = argmax over C of softmax(logits) (ties go to the lowest index). Per frame f and class c,
    with I = #(p==c and g==c), Ap = #(p==c), Ag = #(g==c), U = Ap + Ag - I:
    iou = I / (U + 2.220446049250313e-16), F = (1 + beta2) Pr Re / (beta2 Pr + Re) with
    Pr = I / Ap, Re = I / Ag (no eps, NaN -> 0), present = U != 0. There is no ignore label,
    but as in the official histc, a label >= C is left out of Ag and a negative label drops
    the pixel from every count.
    """
    assert logits.dim() == 4, f"logits must be (BF, C, H, W), got {tuple(logits.shape)}"
    BF, C, H, W = logits.shape
    if target.dim() == 4 and target.shape[1] == 1:
        target = target.squeeze(1)
    assert target.shape == (BF, H, W), f"target {tuple(target.shape)} != {(BF, H, W)}"
    pred = _semantic_argmax(logits)                                         # (BF, H, W) int64
    inter, area_pred, area_gt = _class_areas(pred, target.long(), C)        # 3 x (BF, C)
    union = area_pred + area_gt - inter
    iou = 1.0 * inter / (FLOAT64_EPS + union)
    precision, recall = inter / area_pred, inter / area_gt                  # NaN where 0/0
    f = (1 + beta2) * precision * recall / (beta2 * precision + recall)
    f = torch.where(torch.isnan(f), torch.zeros_like(f), f)
    return SemanticStats(iou=iou, fscore=f, present=union != 0)


def _semantic_argmax(logits: Tensor) -> Tensor:
    """(BF, C, H, W) logits -> (BF, H, W) int64 argmax of the float32 softmax, frame chunks."""
    BF, C, H, W = logits.shape
    pred = torch.empty((BF, H, W), dtype=torch.long, device=logits.device)
    for s in _frame_chunks(BF, C * H * W):
        pred[s] = torch.softmax(logits[s].float(), dim=1).argmax(1)
    return pred


def _class_areas(pred: Tensor, target: Tensor, C: int) -> tuple[Tensor, Tensor, Tensor]:
    """pred, target (BF, H, W) int64 -> I, Ap, Ag, each (BF, C) float32 per-frame class counts."""
    BF = pred.shape[0]
    bins = pred + torch.arange(BF, device=pred.device)[:, None, None] * C    # (BF, H, W)
    valid = target >= 0                # official: prediction masked by (target + 1) > 0
    in_range = valid & (target < C)    # official histc drops labels above the last bin

    def count(index: Tensor) -> Tensor:
        return torch.bincount(index, minlength=BF * C).view(BF, C).float()

    area_pred = count(bins[valid])
    area_gt = count((bins - pred + target)[in_range])
    inter = count(bins[valid & (pred == target)])
    return inter, area_pred, area_gt


class SemanticMeter:
    """Test-set AVSS scores as avss/test.py aggregates them (independent of batch size).

    Per class c, miou_c = sum_f iou[f, c] / sum_f present[f, c] (NaN -> 0) over all frames
    seen, and `miou` is the mean over ALL C classes (classes never present count as 0); F
    likewise. `miou_no_bg` / `fscore_no_bg` keep the official names but drop the LAST class
    index (C - 1), not the background (index 0): a quirk of the official `[:-1]` reproduced on
    purpose. Sums are float64; the official sums float32 per batch (differences ~1e-7).
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        C = self.num_classes
        self._iou_sum = torch.zeros(C, dtype=torch.float64)
        self._f_sum = torch.zeros(C, dtype=torch.float64)
        self._count = torch.zeros(C, dtype=torch.int64)
        self.n_frames = 0

    def update(self, logits: Tensor, target: Tensor) -> SemanticStats:
        """Scores logits (BF, C, H, W) against target (BF, H, W) and adds every frame."""
        stats = semantic_stats(logits, target)
        self.add(stats)
        return stats

    def add(self, stats: SemanticStats) -> None:
        """Adds already computed per-frame stats, each (BF, C)."""
        num_classes = stats.iou.shape[1]
        assert num_classes == self.num_classes, (
            f"stats have {num_classes} classes, meter has {self.num_classes}"
        )
        self._iou_sum += stats.iou.detach().double().sum(0).cpu()
        self._f_sum += stats.fscore.detach().double().sum(0).cpu()
        self._count += stats.present.sum(0).cpu()
        self.n_frames += stats.iou.shape[0]

    @property
    def per_class_iou(self) -> Tensor:
        """(C,) float64 mean IoU over the frames where each class is present; 0 if never."""
        return _safe_ratio(self._iou_sum, self._count)

    @property
    def per_class_fscore(self) -> Tensor:
        """(C,) float64 mean F over the frames where each class is present; 0 if never."""
        return _safe_ratio(self._f_sum, self._count)

    @property
    def class_count(self) -> Tensor:
        """(C,) int64 number of frames where each class is present (the official cls_pc)."""
        return self._count.clone()

    @property
    def miou(self) -> float:
        return self.per_class_iou.mean().item()

    @property
    def fscore(self) -> float:
        return self.per_class_fscore.mean().item()

    @property
    def miou_no_bg(self) -> float:
        """Official "miou_noBg": mean over classes 0..C-2 (drops index C-1, see class doc)."""
        return self.per_class_iou[:-1].mean().item()

    @property
    def fscore_no_bg(self) -> float:
        """Official "f_score_noBg": mean over classes 0..C-2 (drops index C-1)."""
        return self.per_class_fscore[:-1].mean().item()

    def summary(self) -> dict[str, float]:
        return {
            "miou": self.miou,
            "fscore": self.fscore,
            "miou_no_bg": self.miou_no_bg,
            "fscore_no_bg": self.fscore_no_bg,
            "n_frames": self.n_frames,
            "n_classes_seen": int((self._count > 0).sum()),
        }


def _safe_ratio(total: Tensor, count: Tensor) -> Tensor:
    """total / count with 0/0 -> 0, as the official `x[torch.isnan(x)] = 0`."""
    ratio = total / count
    return torch.where(torch.isnan(ratio), torch.zeros_like(ratio), ratio)
