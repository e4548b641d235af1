"""Where does a kind-gated checkpoint lose IoU? Its twin clips scored with parts of the gate
replaced by the truth.

    python -m pcmanet.gate_eval --checkpoint CKPT --data-root DIR [--split test] [--json]

For every clip with a twin (:func:`pcmanet.twin_eval.twin_pairs`) and each labelled frame, the
model's own decode (the logits before the gate's term), its proposal regions and its window and
audio heads are taken once; the gate's term is then recomputed from its parts
(:meth:`pcmanet.kind_gate.KindGate.term_of`) with

- ``gate``: the heads as they are (equals the model's output; tested);
- ``true_windows``: a region that lies mostly (> 30 %) on the own or the twin's object named
  by that object's kind, other regions as the window head names them;
- ``true_windows_and_sound``: that, and the sound's kind given;
- ``ceiling``: no regions at all, the largest boost the gate can give (``scale * log K``)
  added inside the own object (dilated by 4 pixels) and nothing painted elsewhere: what the
  decode's logits allow with a perfect selection and that boost (not an upper bound: the
  boost also paints the decode's faint rim within those 4 pixels, and with regions cut by
  colour the true windows beat it).

Each is the mean AVSBench IoU with the own object. Counts: ``merged``, frames with a region
lying over both objects (> 20 % of it on each); ``window_right``, regions lying (> 70 %) on the
own object whose window head names its kind, of ``windows``; ``sound_right``, frames whose
audio head names the own kind; ``unknown_kind``, clips left out because their or their twin's
kind is not among the gate's. Shapes follow pcmanet/kind_gate.py.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from pcmanet.checkpoint import CheckpointError
from pcmanet.cli import Parser
from pcmanet.kind_gate import KindGate
from pcmanet.metrics import mask_iou
from pcmanet.model import PCMANet
from pcmanet.twin_eval import emit, load_twins

VARIANTS = ("gate", "true_windows", "true_windows_and_sound", "ceiling")


@torch.no_grad()
def gate_scores(model: PCMANet, items: Mapping[str, Mapping[str, Any]],
                twins: Mapping[str, str]) -> dict[str, Any]:
    """Mean IoU with the own object per variant (module docstring) and the counts."""
    gate = model.gate
    if gate is None:
        raise ValueError("this checkpoint has no kind gate (model.kind_gate: false)")
    model.eval()
    K = len(gate.kinds)
    ious: dict[str, list[float]] = {k: [] for k in VARIANTS}
    counts = {"frames": 0, "merged": 0, "window_right": 0, "windows": 0, "sound_right": 0,
              "unknown_kind": 0}
    for name, other in twins.items():
        A, B = items[name], items[other]
        if A["category"] not in gate.kinds or B["category"] not in gate.kinds:
            counts["unknown_kind"] += 1                  # a kind the gate never learnt
            continue
        ka, kb = gate.kinds.index(A["category"]), gate.kinds.index(B["category"])
        frames = A["frames"]
        T = frames.shape[0]
        model.gate = None
        try:
            raw = model(frames, A["audio"]).logits[0]                           # (T, 1, H, W)
        finally:
            model.gate = gate
        regions = gate.proposals(frames, raw)                                # (T, P', h, w)
        h, w = regions.shape[-2:]
        heard = A["audio"] if gate.own_audio else model.encode_frames(frames, A["audio"]).audio
        sound = gate.sound(gate.audio_logits(heard), torch.zeros(T, dtype=torch.long), T)
        seen = gate.window_kinds(frames, regions)                            # (T, P, K)
        on_a = (F.adaptive_avg_pool2d(A["masks"].float(), (h, w)) > 0.5).float()  # (T, 1, h, w)
        on_b = (F.adaptive_avg_pool2d(B["masks"].float(), (h, w)) > 0.5).float()
        in_a, in_b = (regions * on_a).sum((2, 3)), (regions * on_b).sum((2, 3))  # (T, P)
        size = regions.sum((2, 3))
        true_seen = seen.clone()
        named_a = (in_a >= in_b) & (in_a > 0.3 * size)
        named_b = ~named_a & (in_b > 0.3 * size)
        true_seen[named_a] = F.one_hot(torch.tensor(ka), K).float()
        true_seen[named_b] = F.one_hot(torch.tensor(kb), K).float()
        true_sound = F.one_hot(torch.full((T,), ka), K).float()
        terms = {"gate": gate.term_of(seen, sound, regions),
                 "true_windows": gate.term_of(true_seen, sound, regions),
                 "true_windows_and_sound": gate.term_of(true_seen, true_sound, regions)}
        near = F.max_pool2d(A["masks"].float(), 9, 1, 4) > 0                 # (T, 1, H, W)
        boost = gate.scale * torch.log(torch.tensor(float(K)))
        ceiling = torch.where(near, raw + boost, torch.full_like(raw, -20.0))
        for t in range(T):
            if A["mask_valid"][t] < 1 or B["mask_valid"][t] < 1:
                continue
            truth = A["masks"][t:t + 1, 0]
            for key, term in terms.items():
                ious[key].append(float(mask_iou(KindGate.add(raw[t:t + 1], term[t:t + 1])[:, 0],
                                                truth)))
            ious["ceiling"].append(float(mask_iou(ceiling[t:t + 1, 0], truth)))
            counts["frames"] += 1
            counts["merged"] += int(((in_a[t] > 0.2 * size[t]) & (in_b[t] > 0.2 * size[t])).any())
            mine = (size[t] > 0) & (in_a[t] > 0.7 * size[t])
            counts["windows"] += int(mine.sum())
            counts["window_right"] += int((seen[t].argmax(1) == ka)[mine].sum())
            counts["sound_right"] += int(sound[t].argmax() == ka)
    n = max(counts["frames"], 1)
    return {"clips": len(twins), **{k: sum(v) / n for k, v in ious.items()}, **counts}


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m pcmanet.gate_eval", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-root", required=True)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from pcmanet.data import DataError

    try:
        model, items, twins = load_twins(args.checkpoint, args.data_root, args.split)
        result: dict[str, Any] = gate_scores(model, items, twins)  # type: ignore[arg-type]
    except (CheckpointError, DataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    emit(result, args, lambda r: f"{r['clips']} twin clips, {r['frames']} frames, IoU with "
         "the own object: " + ", ".join(f"{k} {r[k]:.3f}" for k in VARIANTS)
         + f"; merged regions in {r['merged']} frames; window head right on "
         f"{r['window_right']} of {r['windows']} own-object regions; sound right in "
         f"{r['sound_right']} frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
