"""Audio package: VGGish log-mel front end and audio encoders (VGGish, light)."""

from __future__ import annotations

from torch import nn

from .frontend import (
    EXAMPLE_FRAMES,
    HOP_SAMPLES,
    MEL_BANDS,
    MIN_EXAMPLE_SAMPLES,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    LogMel,
    frames_to_examples,
    log_mel,
    num_examples,
    num_frames,
)
from .light import LightAudioEncoder
from .vggish import (
    VGGISH_OUT_DIM,
    CheckpointError,
    CheckpointNotFoundError,
    VGGish,
    load_vggish,
)

AUDIO_ENCODERS = ("vggish", "light")

__all__ = [
    "AUDIO_ENCODERS",
    "EXAMPLE_FRAMES",
    "HOP_SAMPLES",
    "MEL_BANDS",
    "MIN_EXAMPLE_SAMPLES",
    "SAMPLE_RATE",
    "VGGISH_OUT_DIM",
    "WINDOW_SAMPLES",
    "CheckpointError",
    "CheckpointNotFoundError",
    "LightAudioEncoder",
    "LogMel",
    "VGGish",
    "build_audio_encoder",
    "frames_to_examples",
    "load_vggish",
    "log_mel",
    "num_examples",
    "num_frames",
]


def build_audio_encoder(name: str, out_dim: int = 128, weights: str | None = None,
                        summary: bool = False) -> nn.Module:
    """Audio encoder by name: log-mel (N, 1, 96, 64) -> (N, out_dim); ``.out_dim`` is set.

    Args:
        name: "vggish" or "light".
        out_dim: embedding width; the released VGGish weights need 128.
        weights: VGGish checkpoint path, loaded strictly and returned frozen (eval, no grad) as
            PCMANet uses it. Without weights VGGish is randomly initialised and trainable.
        summary: "light" only: add its zero-initialised band-profile / modulation branch.

    Raises:
        ValueError: unknown name, or weights given for "light".
        CheckpointError: the weights file is missing, unreadable or does not fit.
    """
    if name == "vggish" and not summary:
        if weights is None:
            return VGGish(out_dim=out_dim)
        if out_dim != VGGISH_OUT_DIM:
            raise ValueError(f"pretrained VGGish has out_dim={VGGISH_OUT_DIM}, got {out_dim}")
        return load_vggish(weights)
    if name == "light":
        if weights is not None:
            raise ValueError("weights are only supported for the 'vggish' audio encoder")
        return LightAudioEncoder(out_dim=out_dim, summary=summary)
    if summary:
        raise ValueError("audio summary is only supported for the 'light' audio encoder")
    raise ValueError(f"unknown audio encoder {name!r}; valid names: {', '.join(AUDIO_ENCODERS)}")
