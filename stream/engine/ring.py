"""The feature ring (docs/static_step.md): what older frames give the newest decode, on the device.

An older frame contributes to the newest frame's decode only through its QSCA keys/values
(stages 2-4) and its projected audio embedding a0 (the audio-token chain); its maps, tokens and
refiner features are never read again. So each stream keeps a ring of ``slots`` on the device:

* :class:`DeviceTables`: preallocated tensors for every stream (``kv[k]`` (R_all, N_k, 2*h*d),
  ``audio`` (R_all, C), R_all = streams * slots + 1, the last row a trash slot for padded
  batch rows) and the per-stream CIM carry and audio-reuse tables. A step writes the new
  frame's row with ``index_copy_`` and reads its window with ``index_select``.
* :class:`WindowIndex`: the host side of one stream's ring: which slot holds which frame (by
  capture time), the retention policy, the window choice (:func:`window_indices`) and slot
  allocation. :meth:`WindowIndex.plan` computes a step's write slot and window without changing
  anything; :meth:`WindowIndex.commit` applies it once the step has succeeded, so a step that
  raises leaves the stream exactly as it was (its write went to a slot nobody reads).

Retention (as before the ring): the newest frame is always held; older frames are retained at
most one per ``retain_s`` and only while they can still be chosen for a window (``horizon_s``
behind the newest; one frame at or before that cutoff stays, as the nearest to it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pcmanet.model import FrameFeatures
from stream.buffers.frames import NS_PER_S
from stream.buffers.sync import window_indices


def ring_slots(horizon_s: float, retain_s: float) -> int:
    """Slots one stream's ring needs: every frame the retention can hold, plus the slot the
    next frame is written to before the oldest is let go.

    Held at once: the newest, the older ones spaced >= retain_s within horizon_s (at most
    horizon/retain + 1 of them) and one at or before the cutoff."""
    return math.floor(horizon_s / retain_s) + 4


@dataclass(frozen=True)
class Held:
    """One frame in a stream's ring: capture time, the source's frame number, its slot."""

    t_capture_ns: int
    frame_index: int
    slot: int


@dataclass(frozen=True)
class Plan:
    """One step of one stream, before it is committed.

    write: the slot the new frame is written to; window: the T slots of its window, oldest
    first (the new frame's slot last); frames: their frame numbers; held: the ring after it.
    """

    write: int
    window: tuple[int, ...]
    frames: tuple[int, ...]
    held: tuple[Held, ...]


class WindowIndex:
    """Host side of one stream's ring: retention, window choice and slots (see module doc).

    Args:
        slots: ring size R (:func:`ring_slots`).
        horizon_s: how far back frames are kept.
        retain_s: minimum spacing of retained older frames.
        T: frames per window.
        spacing_s: time between window frames.
    """

    def __init__(self, slots: int, horizon_s: float, retain_s: float, T: int,
                 spacing_s: float) -> None:
        self.slots, self.T, self.spacing_s = slots, T, spacing_s
        self.horizon_ns, self.retain_ns = round(horizon_s * NS_PER_S), round(retain_s * NS_PER_S)
        self.held: tuple[Held, ...] = ()
        self.inserted = self.evicted = 0

    def plan(self, t_capture_ns: int, frame_index: int) -> Plan:
        """Where the new frame goes and which slots its window reads; changes nothing."""
        held = list(self.held)
        if held and t_capture_ns < held[-1].t_capture_ns:
            raise ValueError("frames must enter the ring in capture order")
        used = {h.slot for h in held}
        write = next((s for s in range(self.slots) if s not in used), None)
        if write is None:
            raise RuntimeError(f"feature ring full ({self.slots} slots): retention bug")
        # The previous newest stays only if it is retain_s after the last retained one.
        if len(held) >= 2 and held[-1].t_capture_ns - held[-2].t_capture_ns < self.retain_ns:
            held.pop()
        held.append(Held(t_capture_ns, frame_index, write))
        cutoff = t_capture_ns - self.horizon_ns
        drop = 0
        while drop < len(held) - 1 and held[drop + 1].t_capture_ns <= cutoff:
            drop += 1  # keep one frame at or before the cutoff: it is the nearest to it
        held = held[drop:]
        idx = window_indices([h.t_capture_ns for h in held], T=self.T, spacing_s=self.spacing_s)
        return Plan(write, tuple(held[i].slot for i in idx),
                    tuple(held[i].frame_index for i in idx), tuple(held))

    def commit(self, plan: Plan) -> None:
        """Apply a planned step (the frame is in its slot now)."""
        self.evicted += len(self.held) + 1 - len(plan.held)
        self.inserted += 1
        self.held = plan.held

    def __len__(self) -> int:
        return len(self.held)

    def stats(self) -> dict[str, int]:
        return {"held": len(self.held), "inserted": self.inserted, "evicted": self.evicted}


def _table(rows: int, like: Tensor, dtype: torch.dtype | None) -> Tensor:
    return torch.zeros((rows, *like.shape[1:]), dtype=dtype or like.dtype, device=like.device)


class DeviceTables(nn.Module):
    """Every stream's device state for the static step, preallocated (buffers, so a compiled
    step owns them and a CUDA graph can capture their updates).

    ring_kv.{k}: (streams * slots + 1, N_k, 2*h*d) QSCA keys/values of stage k (stages that
        emit an audio token); ring_audio: (streams * slots + 1, C) projected audio a0. The last
        row is the trash slot that padded batch rows write to and read from.
    emb: (streams + 1, D) each stream's last audio embedding (``audio_rate_hz`` reuse).
    carry_mask.{j}: (streams + 1, 1, h, w) each stream's previous own CIM masks [m4, m3, m2];
        carry_image: (streams + 1, 3, S, S) its previous input; carry_audio: (streams + 1, C)
        its previous a0. The last row of each belongs to padded rows.

    Args:
        probe: one frame's features (F = 1), for the shapes.
        emb: (1, D) an audio embedding, for its shape.
        image: (1, 3, S, S) an input, for its shape.
        streams: streams held; slots: ring slots per stream.
        dtype: ring storage dtype (None: as computed; float16 halves it).
    """

    ring_audio: Tensor
    emb: Tensor
    carry_image: Tensor
    carry_audio: Tensor

    def __init__(self, probe: FrameFeatures, emb: Tensor, image: Tensor, streams: int,
                 slots: int, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.streams, self.slots = streams, slots
        rows = streams * slots + 1
        self.stages = [k for k, kv in enumerate(probe.kv) if kv is not None]
        for k in self.stages:
            self.register_buffer(f"ring_kv_{k}", _table(rows, probe.kv[k], dtype))  # type: ignore[arg-type]
        self.register_buffer("ring_audio", _table(rows, probe.audio, dtype))
        self.register_buffer("emb", _table(streams + 1, emb, None))
        # CIM masks of stages 4, 3, 2 live at the map sizes of stages 4, 3, 2 (finest first).
        for j, k in enumerate(reversed(range(1, len(probe.maps)))):
            like = probe.maps[k][:, :1]                                     # (1, 1, H_k, W_k)
            self.register_buffer(f"carry_mask_{j}", _table(streams + 1, like, None))
        self.masks = len(probe.maps) - 1
        self.register_buffer("carry_image", _table(streams + 1, image, None))
        self.register_buffer("carry_audio", _table(streams + 1, probe.audio, None))

    @property
    def trash_slot(self) -> int:
        return self.streams * self.slots

    @property
    def trash_stream(self) -> int:
        return self.streams

    def ring_kv(self, k: int) -> Tensor | None:
        """Stage k's key/value table, None where the stage emits no audio token."""
        return getattr(self, f"ring_kv_{k}") if k in self.stages else None  # type: ignore[no-any-return]

    def carry_masks(self) -> list[Tensor]:
        return [getattr(self, f"carry_mask_{j}") for j in range(self.masks)]

    def bytes_per_stream(self) -> int:
        """Ring bytes one stream holds (keys/values and audio of its slots)."""
        tables = [t for t in (*(self.ring_kv(k) for k in self.stages), self.ring_audio)
                  if t is not None]
        per_row = sum(t[0].numel() * t.element_size() for t in tables)
        return per_row * self.slots

    def grow(self, streams: int) -> None:
        """Room for ``streams`` streams; every held row keeps its place (the trash rows move
        to the new ends)."""
        if streams <= self.streams:
            return
        old_ring, old_rows = self.streams * self.slots, self.streams
        for name, buf in list(self.named_buffers()):
            rows = streams * self.slots + 1 if name.startswith("ring_") else streams + 1
            keep = old_ring if name.startswith("ring_") else old_rows
            new = buf.new_zeros((rows, *buf.shape[1:]))
            new[:keep] = buf[:keep]
            setattr(self, name, new)
        self.streams = streams
