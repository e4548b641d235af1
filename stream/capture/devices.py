"""``run_live.py --list-devices``: the cameras and microphones this machine really has.

Cameras are probed, not guessed from names: each candidate is opened with OpenCV and one frame
is read, and the listing gives its resolution and frame rate, or says that it opened but gave no
frame (a UVC camera often has two ``/dev/video*`` nodes, one of which only carries metadata) or
could not be opened. On Linux the candidates are the ``/dev/videoN`` nodes (OpenCV index N);
elsewhere indices 0, 1, ... are tried until two in a row cannot be opened. Microphones are
PortAudio's input devices (:func:`stream.capture.mic.list_audio_devices`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from stream.capture.base import SourceError

MAX_PROBED = 10  # indices tried where there are no /dev/video* nodes to go by


@dataclass(frozen=True)
class CameraProbe:
    """What opening ``source`` (an index or a path) and reading one frame found."""

    source: int | str
    opened: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0

    @property
    def gives_frames(self) -> bool:
        return self.width > 0 and self.height > 0

    def line(self) -> str:
        name = f"{self.source}" + (f" (/dev/video{self.source})" if isinstance(self.source, int)
                                   and sys.platform.startswith("linux") else "")
        if not self.opened:
            return f"  {name}: cannot be opened (busy, or no permission)"
        if not self.gives_frames:
            return f"  {name}: opens but gives no frames (a metadata node?): not usable"
        rate = f"{self.fps:.0f} FPS" if self.fps > 0 else "FPS not reported"
        return f"  {name}: {self.width}x{self.height}, {rate}: --camera {self.source}"


def probe_camera(source: int | str) -> CameraProbe:
    """Open ``source`` with OpenCV, read one frame, release it."""
    import cv2

    cap = cv2.VideoCapture(source)
    try:
        if not cap.isOpened():
            return CameraProbe(source, opened=False)
        ok, frame = cap.read()
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not ok or frame is None or frame.size == 0:
            return CameraProbe(source, opened=True, fps=fps)
        height, width = frame.shape[:2]
        return CameraProbe(source, True, int(width), int(height), fps if fps > 0 else 0.0)
    finally:
        cap.release()


def video_nodes(dev: Path = Path("/dev")) -> list[int]:
    """OpenCV indices of the ``/dev/videoN`` nodes, in order."""
    found = (re.fullmatch(r"video(\d+)", p.name) for p in dev.glob("video*"))
    return sorted(int(m.group(1)) for m in found if m)


def probe_cameras(candidates: Iterable[int | str] | None = None) -> Iterator[CameraProbe]:
    """Probe every candidate (default: the /dev/videoN nodes on Linux, else indices 0.. until
    two in a row cannot be opened)."""
    if candidates is not None or sys.platform.startswith("linux"):
        yield from (probe_camera(c) for c in (video_nodes() if candidates is None
                                              else candidates))
        return
    misses = 0
    for index in range(MAX_PROBED):
        probe = probe_camera(index)
        misses = 0 if probe.opened else misses + 1
        if probe.opened:
            yield probe
        if misses == 2:
            return


def list_devices() -> str:
    """The ``--list-devices`` text: cameras, then microphones."""
    _quiet_opencv()
    cams = list(probe_cameras())
    lines = ["Cameras (each opened and one frame read):"]
    if not cams:
        lines.append("  none found (no /dev/video* nodes): use --video FILE, a stream URL with "
                     "--camera, or --demo")
    lines += [c.line() for c in cams]
    if cams and not any(c.gives_frames for c in cams):
        lines.append("  no camera gives frames")
    lines.append("Microphones (PortAudio inputs):")
    try:
        from stream.capture.mic import list_audio_devices

        lines.append(list_audio_devices())
    except SourceError as e:
        lines.append(f"  {e}")
    return "\n".join(lines)


def _quiet_opencv() -> None:
    """OpenCV logs a warning for every node it cannot open; the listing says it instead."""
    try:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except (ImportError, AttributeError):
        pass
