"""Kind gate (ours, not in the reference): the mask keeps the objects of the kind the sound names.

On a small S4 set whose kinds differ only by shape and whose sounds differ only by pitch,
rhythm or voice, PCMANet's fusion learns each *training scene* rather than the link between a
sound and a kind of object: on a new scene with two objects it paints the wrong one about as
often as the right one (docs/training.md, "Round four"). A visual kind head over whole frames
learns the training scenes too (tried: 0.81 of the training objects' kinds, 0.31 of the test
objects', chance 0.25), while a head that names the kind from a *window cut around the object*
learns kinds that hold for new objects (0.9 on the test objects, ``python -m
pcmanet.window_probe``). So the gate works on windows:

1. *proposals*: up to P blobs of the model's own finest mask (probability on a grid of one
   cell per ``stride`` pixels): the most confident cell above ``threshold`` not yet taken seeds
   a region, flood-filled through the cells above ``fill`` (``radius`` x the grid's side steps
   of a 3x3 dilation: a fixed count, so the shapes stay static), and is taken; P times. A
   square around each local maximum, the first version, took in the other object whenever the
   two were close (its window then named one kind for both), and a saturated blob gave several
   tied maxima. With the gate the model's own mask becomes a lukewarm objectness map (0.5-0.7
   inside objects, with holes), so the fill goes through cells above 0.3. On a grid of H/4,
   two objects a pixel or two apart share a cell and merge into one region (pitch: 44 of 200
   test twin frames); on a grid of H/2 they merge far less (28), and the regions trace the
   objects: offline on one trained pitch checkpoint (round six's recipe), test own IoU 0.637
   -> 0.701 from the grid (stride 4 -> 2, radius 0.5 -> 0.3) alone, and on its validation
   split 0.675 -> 0.748;
   Objects that touch (<= 2 pixels apart: 88 of rhythm's 200 test twin frames) still share a
   region, and its one window names one kind for both (own IoU 0.46 on those frames, 0.81
   on the rest). So, with ``split`` > 0, each region is cut in two by colour: two-means over
   its cells' mean colours in a 3x3-cell neighbourhood (the region's most confident cell and
   the cell least like it as seeds, five rounds); the cut stands when the parts' mean colours
   lie more than ``split`` apart (the frame's normalised units) and each part holds >= 5 % of
   the region, else the region stays whole (its second part empty). The neighbourhood mean
   makes a fine texture one colour; distinct colours are what tells two touching objects
   apart here, as in most scenes. Offline on round seven's checkpoints (test own IoU, pitch /
   rhythm / speech): 0.756 / 0.656 / 0.724 -> 0.776 / 0.743 / 0.773 at 1.5 (validation
   0.823 / 0.741 / 0.718 -> 0.830 / 0.822 / 0.770); at 1.0 (mean and spread) pitch lost
   0.12 (cuts where no second object is), at 2.0 rhythm kept its merges;
2. each region's box is cut out as a window (:func:`pcmanet.kind_loss.object_windows`, upright)
   and the gate's own backbone (a copy of the model's at the start of training, so that its
   batch statistics and its gradients are the windows' alone) plus a linear *window head* name
   its kind, averaged over the window turned ``views`` ways (0, 90, 180, 270 degrees: the head
   learns turned windows). With cut regions the window head became what lost most (speech:
   own IoU 0.746 as trained, 0.812 with true windows); averaging 4 turns: test 0.746 -> 0.760
   (speech), 0.718 -> 0.744 (rhythm), 0.776 -> 0.795 (pitch), validation +0.004 to +0.010.
   Four times the windows cost training steps too: 15-minute runs made 674 / 582 steps with
   it against 759 / 761 without (rhythm / speech). With ``blank`` (2) every window, when it
   runs and when it learns, shows only the pixels within 2 of its region, the rest zeroed:
   a window around one part also took in the object that touches it, and the head named
   the pair. The window head then names the test objects' true windows 0.97-0.985 right
   (0.93-0.965 whole), and a part's window names the part: offline, round eight's
   checkpoints fine-tuned 600 window steps either way, test own IoU 0.742 / 0.730 / 0.818
   (whole; rhythm / speech / pitch) against 0.759 / 0.772 / 0.813 (blanked); 0 and 4
   pixels kept gave 0.767 and 0.769 on rhythm;
3. an *audio head* names the kind of the sound: with ``model.gate_audio: shared`` from the
   model's projected audio a0 (the mean of the window's T rows' probabilities); with ``own``
   from the gate's own copy of the audio encoder on the decoded row's own log-mel example (or
   from the row's given embedding). The shared encoder serves the mask loss too, and on the
   rhythm family it never learnt the rhythms under both losses (the head named 0.52 of the
   training clips' sounds after 15 minutes), while a copy trained on the kind loss alone
   names them all within a few hundred steps;
4. every pixel of a region gets ``scale * log(K * match)``, match = sum_c p_window(c)
   p_sound(c), times (match / the frame's best match) ** ``compete`` (the mean over the
   regions that cover it; clamped at ``log 1e-3``); pixels in no region get 0. The term joins
   every stage's logits. Without the competition a region whose window is unsure (match 0.3 of
   a sound it does not hold) kept its lukewarm logits and was half painted; with it (2) the
   same pitch checkpoint's test own IoU went 0.701 -> 0.748 (validation 0.748 -> 0.778).

A sound the window head never sees on an object (silence, an off-screen source) matches no
region, so it pushes the mask down. Training (``model.kind_gate: true``) teaches the window head
on windows around the labelled objects (turned, mirrored, colour channels swapped, jittered in
scale and place: :meth:`pcmanet.kind_loss.KindHead.loss`) and the audio head on every row, both
from the clip's S4 category; the segmentation loss, read after the gate, teaches the rest.

Shapes: frames (F, 3, H, W) and the finest logits (F, 1, H, W) of the decoded rows, a0 of their
windows (B*T, C) -> audio logits (B*T, K), clip (F,) -> term (F, 1, H/s, W/s); proposals
(F, P', H/s, W/s) with P' = P, or 2P when split; windows (V*F*P', 3, H/2, W/2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcmanet.kind_loss import KindHead, backbone_channels, kind_labels, object_windows

FLOOR = 1e-3  # smallest K * match before the log: a mismatch lowers a logit by <= 6.9 * scale
# The scale's start. Adam moves a scalar by about lr per step, so it stays near its start in a
# short run: at 1 a window head 0.8 right moved the other object's logits by only ~ -0.9 and the
# run painted both objects (pitch, 15 min); at 4 a match of 0.8 adds 4.6, one of 0.1 takes 3.6.
SCALE = 4.0
SPLIT_PART = 0.05   # a cut stands only if each part holds >= this share of its region's cells
SPLIT_ROUNDS = 5    # two-means rounds of a cut


class KindGate(nn.Module):
    """Window backbone and head, audio head, and their gate.

    Args:
        backbone: the gate's own timm features_only backbone for windows (the head reads its
            last level).
        audio_dim: C, width of the projected audio embedding a0.
        kinds: the K category names; logit k names ``kinds[k]``.
        peaks: P, proposals per frame.
        threshold: mask probability above which a cell may seed a proposal.
        fill: mask probability above which a cell may join a proposal.
        radius: the flood fill's reach, as a fraction of the frame's side.
        stride: the proposals' grid: one cell per stride x stride pixels.
        compete: regions of a frame compete: each match is multiplied by (match / the frame's
            best match) ** compete before the log (0: each region on its own).
        split: each region is cut in two by colour when its parts' mean colours lie more than
            this apart (normalised frame units; module docstring, item 1); 0: never.
        views: each window is named V times, turned by 0, 90, 180, 270 degrees (the first V),
            and the kind probabilities averaged (the head learns turned windows).
        blank: each window shows only the pixels within this many pixels of its region (the
            rest zeroed: module docstring, item 2); None: the whole window.
        own_audio: the audio head hears each decoded row's own sound (log-mel through
            ``audio_encoder``, or a given embedding of ``audio_dim``) instead of a0.
        audio_encoder: the gate's own audio encoder (log-mel (N, 1, 96, 64) -> (N, D)); None:
            only embeddings can be heard (own_audio) or a0 is (shared).
    """

    def __init__(self, backbone: nn.Module, audio_dim: int, kinds: Sequence[str],
                 peaks: int = 4, threshold: float = 0.5, fill: float = 0.3,
                 radius: float = 0.3, stride: int = 2, compete: float = 2.0,
                 split: float = 1.5, views: int = 4, blank: int | None = 2,
                 own_audio: bool = False,
                 audio_encoder: nn.Module | None = None) -> None:
        super().__init__()
        if len(kinds) < 2:
            raise ValueError(f"the kind gate needs >= 2 kinds, got {list(kinds)}")
        self.kinds = list(kinds)
        if not 0 < fill <= threshold < 1:
            raise ValueError(f"the kind gate needs 0 < fill <= threshold < 1, got {fill}, "
                             f"{threshold}")
        if (stride < 1 or compete < 0 or split < 0 or not 1 <= views <= 4
                or (blank is not None and blank < 0)):
            raise ValueError(f"the kind gate needs stride >= 1, compete >= 0, split >= 0, "
                             f"1 <= views <= 4 and blank None or >= 0, got {stride}, {compete}, "
                             f"{split}, {views}, {blank}")
        self.peaks, self.threshold, self.fill, self.radius = peaks, threshold, fill, radius
        self.stride, self.compete, self.split, self.views = stride, compete, split, views
        self.blank = blank
        self.backbone = backbone
        self.head = KindHead(backbone_channels(backbone), self.kinds)
        self.own_audio = own_audio
        self.audio_encoder = audio_encoder
        self.audio = nn.Linear(audio_dim, len(self.kinds))
        self.scale = nn.Parameter(torch.full((), SCALE))

    def audio_logits(self, heard: Tensor) -> Tensor:
        """What the audio head hears -> kind logits (N, K): shared, the projected audio a0
        (N, C); own, log-mel examples (N, 1, 96, 64) or embeddings (N, D)."""
        if heard.dim() == 4:
            if self.audio_encoder is None:
                raise ValueError("this kind gate has no audio encoder of its own: give it "
                                 "audio embeddings (N, D), not log-mel")
            heard = self.audio_encoder(heard)
        return self.audio(heard)  # type: ignore[no-any-return]

    def sound(self, audio: Tensor, clip: Tensor, T: int) -> Tensor:
        """The audio head's logits -> the sound's kind probabilities of each decoded row (F, K).

        shared: logits of the windows' rows (B*T, K), clip-major, and clip (F,), the window of
        each decoded row: the mean over the row's window of their probabilities. own: logits
        of the decoded rows themselves (F, K): their probabilities."""
        if self.own_audio:
            return audio.float().softmax(1)
        B = audio.shape[0] // T
        probs = audio.float().softmax(1).view(B, T, -1).mean(1)                 # (B, K)
        return probs.index_select(0, clip)

    def grid_prob(self, logits: Tensor) -> Tensor:
        """Finest mask logits (F, 1, H, W) -> mask probability on the proposals' grid
        (F, 1, H/s, W/s) (s: ``stride``)."""
        H, W = logits.shape[-2:]
        g = (max(H // self.stride, 1), max(W // self.stride, 1))
        return F.adaptive_avg_pool2d(torch.sigmoid(logits.detach().float()), g)

    def proposals(self, frames: Tensor, logits: Tensor) -> Tensor:
        """The regions the gate names: frames (F, 3, H, W), finest logits (F, 1, H, W) ->
        (F, P', H/s, W/s), 0/1: :meth:`regions`, each cut in two by :meth:`cut` when
        ``split`` > 0 (P' = 2P), else as they are (P' = P)."""
        prob = self.grid_prob(logits)                                        # (F, 1, h, w)
        regions = self.fill_regions(prob)
        if self.split <= 0:
            return regions
        return self.cut(frames, regions, prob)

    def cut(self, frames: Tensor, regions: Tensor, prob: Tensor) -> Tensor:
        """Each region cut in two by colour (module docstring, item 1): frames (F, 3, H, W),
        regions (F, P, h, w), 0/1, and the mask probability on their grid (F, 1, h, w) ->
        (F, 2P, h, w): the first parts, then the second parts (a region left whole is its
        own first part, with an empty second)."""
        Fn, P, h, w = regions.shape
        colour = F.adaptive_avg_pool2d(frames.detach().float(), (h, w))      # (F, 3, h, w)
        colour = F.avg_pool2d(colour, 3, 1, 1, count_include_pad=False).flatten(2)  # (F, 3, N)
        cells = regions.flatten(2).float()                                   # (F, P, N)
        pick = colour[:, None].expand(-1, P, -1, -1)                         # (F, P, 3, N)

        def at(index: Tensor) -> Tensor:                                     # (F, P) -> (F, P, 3)
            return torch.gather(pick, 3, index[..., None, None].expand(-1, -1, 3, 1))[..., 0]

        def dist(centre: Tensor) -> Tensor:                                  # -> (F, P, N)
            return ((colour[:, None] - centre[..., None]) ** 2).sum(2)

        first = at((cells * prob.flatten(2)).argmax(2))                      # most confident
        second = at((dist(first) * cells).argmax(2))                         # least like it
        for _ in range(SPLIT_ROUNDS):
            two = (dist(second) < dist(first)).to(cells.dtype) * cells        # (F, P, N)
            one = cells - two
            first = (pick * one[:, :, None]).sum(3) / one.sum(2, keepdim=True).clamp_min(1.0)
            second = (pick * two[:, :, None]).sum(3) / two.sum(2, keepdim=True).clamp_min(1.0)
        size = cells.sum(2)                                                  # (F, P)
        cut = ((first - second).norm(dim=2) > self.split) \
            & (one.sum(2) >= SPLIT_PART * size) & (two.sum(2) >= SPLIT_PART * size)
        one = torch.where(cut[..., None], one, cells)
        two = torch.where(cut[..., None], two, torch.zeros_like(cells))
        return torch.cat([one, two], 1).view(Fn, 2 * P, h, w).to(regions.dtype)

    def regions(self, logits: Tensor) -> Tensor:
        """Finest mask logits (F, 1, H, W) -> P proposal regions (F, P, H/s, W/s), 0/1 (s:
        ``stride``).

        Greedy: the most confident cell above ``threshold`` not yet taken seeds a region, which
        is flood-filled through the cells above ``fill`` and then taken; P times (a region is
        empty once no seed is left)."""
        return self.fill_regions(self.grid_prob(logits))

    def fill_regions(self, prob: Tensor) -> Tensor:
        """:meth:`regions` from the mask probability on the grid (F, 1, h, w)."""
        Fn = prob.shape[0]
        g = (prob.shape[-2], prob.shape[-1])
        inside = (prob > self.fill).to(prob.dtype)
        left = (prob * (prob > self.threshold)).flatten(1)                   # (F, h*w) seeds
        cells = torch.arange(g[0] * g[1], device=prob.device)[None]       # (1, h*w)
        steps = max(1, round(self.radius * max(g)))
        out = []
        for _ in range(self.peaks):
            best, at = left.max(1, keepdim=True)                            # (F, 1)
            region = ((cells == at) & (best > 0)).to(prob.dtype).view(Fn, 1, *g)
            for _ in range(steps):
                region = F.max_pool2d(region, 3, 1, 1) * inside
            out.append(region)
            left = left * (1 - region.flatten(1))
        return torch.cat(out, 1)

    def window_kinds(self, frames: Tensor, regions: Tensor) -> Tensor:
        """The window head's kind probabilities of each region's window, the mean over the
        window turned by 0, 90, ... degrees (``views`` of them): frames (F, 3, H, W), regions
        (F, P, h, w) -> (F, P, K) (an empty region's row is meaningless: it covers no pixel)."""
        Fn, P = regions.shape[:2]
        masks = F.interpolate(regions.flatten(0, 1)[:, None], size=frames.shape[-2:],
                              mode="nearest")                                # (F*P, 1, H, W)
        windows = object_windows(frames.repeat_interleave(P, 0).float(), masks, turn=False,
                                 blank=self.blank)
        turned = torch.cat([torch.rot90(windows, k, (2, 3)) for k in range(self.views)])
        logits = self.head(self.backbone(turned.to(frames.dtype)))           # (V*F*P, K)
        probs = logits.float().softmax(1).view(self.views, Fn * P, -1).mean(0)
        return probs.view(Fn, P, -1)

    def term(self, frames: Tensor, logits: Tensor, audio: Tensor, clip: Tensor, T: int
             ) -> tuple[Tensor, Tensor]:
        """The gate's logit term of F decoded rows (F, 1, H/s, W/s) (module docstring) and the
        proposal regions it was made from (F, P', H/s, W/s) (:meth:`proposals`); audio: the
        audio head's logits, of their windows' rows (B*T, K), or with its own audio of the rows
        themselves (F, K) (:meth:`sound`)."""
        regions = self.proposals(frames, logits)                             # (F, P', h, w)
        training = self.backbone.training
        self.backbone.eval()            # proposals leave the windows' batch statistics alone
        with torch.no_grad():                                    # the window head learns apart
            seen = self.window_kinds(frames, regions)                        # (F, P, K)
        self.backbone.train(training)
        return self.term_of(seen, self.sound(audio, clip, T), regions), regions

    def term_of(self, seen: Tensor, sound: Tensor, regions: Tensor) -> Tensor:
        """The term from its parts: the windows' kind probabilities (F, P, K), the sound's
        (F, K) and the regions (F, P, h, w), 0/1 -> (F, 1, h, w) (module docstring, item 4)."""
        match = (seen * sound[:, None]).sum(2)                               # (F, P)
        if self.compete > 0:
            used = regions.flatten(2).amax(2) > 0                            # (F, P)
            best = torch.where(used, match, torch.zeros_like(match)).amax(1, keepdim=True)
            match = match * (match / best.clamp_min(1e-6)) ** self.compete
        cover = regions.sum(1, keepdim=True)                                 # (F, 1, h, w)
        mean = (regions * match[..., None, None]).sum(1, keepdim=True) / cover.clamp_min(1.0)
        K = len(self.kinds)
        term = self.scale * torch.log((K * mean).clamp_min(FLOOR))
        return torch.where(cover > 0, term, torch.zeros_like(term))

    @staticmethod
    def add(logits: Tensor, term: Tensor) -> Tensor:
        """logits (F, K', H, W) + the term (F, 1, h, w) resized to (H, W)."""
        if term.shape[-2:] != logits.shape[-2:]:
            term = F.interpolate(term, size=logits.shape[-2:], mode="bilinear",
                                 align_corners=False)
        return logits + term.to(logits.dtype)


def audio_kind_loss(audio: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of the audio head: logits (N, K), labels (N,) with -1 left out; 0 if none."""
    keep = labels >= 0
    if not bool(keep.any()):
        return audio.new_zeros(())
    return F.cross_entropy(audio.float()[keep], labels[keep])


def clip_sounds(dataset: Any) -> tuple[Tensor, list[str]]:
    """Every frame's audio of an S4 set, with its clip's category -> (N*T, ...) log-mel
    examples (or embeddings), N*T names."""
    sounds, names = [], []
    for i in range(len(dataset)):
        audio = dataset[i]["audio"]                                          # (T, ...)
        sounds.append(audio)
        names += [dataset.clips[i].category] * audio.shape[0]
    return torch.cat(sounds), names


def fit_sounds(gate: KindGate, sounds: tuple[Tensor, list[str]], *, steps: int,
               batch: int = 32, lr: float = 5e-4,
               generator: torch.Generator | None = None) -> float:
    """Train the gate's own audio encoder and its audio head in place to name each example's
    kind (``steps`` Adam steps of ``batch`` examples drawn at random; a name outside the
    gate's kinds is left out); -> the last step's loss."""
    examples, names = sounds
    labels = kind_labels(gate.kinds, names, torch.device("cpu"))
    known = (labels >= 0).nonzero().squeeze(1)
    if len(known) == 0:
        raise ValueError(f"none of the sounds' kinds is among {gate.kinds}")
    device = gate.scale.device
    params = [*gate.audio.parameters(),
              *(gate.audio_encoder.parameters() if gate.audio_encoder is not None else [])]
    opt = torch.optim.Adam(params, lr=lr)
    gate.train()
    loss = torch.zeros(())
    for _ in range(steps):
        idx = known[torch.randint(len(known), (batch,), generator=generator)]
        loss = F.cross_entropy(gate.audio_logits(examples[idx].to(device)),
                               labels[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())
