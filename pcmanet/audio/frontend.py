"""VGGish log-mel front end in torch (torchaudio STFT), equal to the torchvggish numpy recipe.

Recipe (``vggish_input.waveform_to_examples``, see docs/avsbench.md section 4):

* 16 kHz mono; frames of 400 samples (25 ms), hop 160 (10 ms), no centring or padding, so
  ``frames = 1 + (S - 400) // 160`` and frame k covers samples ``[160 k, 160 k + 400)``;
* periodic Hann window, 512-point FFT, **magnitude** spectrum (257 bins);
* 64 HTK mel bands (``1127 ln(1 + f / 700)``) over 125-7500 Hz, triangles linear in *mel*
  evaluated at the bin frequencies ``linspace(0, 8000, 257)``, DC row zeroed;
* ``ln(mel + 0.01)``;
* examples of 96 frames (0.96 s), hop 96, incomplete tail dropped.

The arithmetic runs in float64 by default, as numpy does in torchvggish: float32 FFT noise next to
a loud tone moves near-silent bands by up to ~1e-3 after the log, float64 keeps the result within
float32 rounding (~3e-7) of the numpy recipe. The output is float32.

Streaming: :class:`LogMel` maps any 1-D chunk to its complete frames, and frame k of a chunk
depends only on samples ``[160 k, 160 k + 400)`` of that chunk. A ring that has turned samples
``[0, S)`` into ``num_frames(S)`` frames keeps samples from ``HOP_SAMPLES * num_frames(S)`` on and
appends new audio to them; the frames it gets next continue the full-signal frame sequence exactly.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torchaudio.functional as AF
from torch import Tensor, nn

SAMPLE_RATE = 16000  # Hz, VGGish input rate
WINDOW_SAMPLES = 400  # 25 ms analysis window
HOP_SAMPLES = 160  # 10 ms frame hop
FFT_SIZE = 512  # next power of two above WINDOW_SAMPLES
MEL_BANDS = 64
MEL_LOW_HZ = 125.0
MEL_HIGH_HZ = 7500.0
LOG_OFFSET = 0.01  # ln(mel + LOG_OFFSET); silence gives ln(0.01) = -4.605
EXAMPLE_FRAMES = 96  # 0.96 s per example
EXAMPLE_HOP_FRAMES = 96  # examples do not overlap
# Fewest 16 kHz samples that give one example: 96 frames = 400 + 95 * 160 = 15600 (0.975 s).
MIN_EXAMPLE_SAMPLES = WINDOW_SAMPLES + (EXAMPLE_FRAMES - 1) * HOP_SAMPLES


def num_frames(num_samples: int) -> int:
    """Complete log-mel frames in ``num_samples`` samples at 16 kHz (0 if shorter than a window)."""
    if num_samples < WINDOW_SAMPLES:
        return 0
    return 1 + (num_samples - WINDOW_SAMPLES) // HOP_SAMPLES


def num_examples(num_samples: int) -> int:
    """Complete 96-frame examples in ``num_samples`` samples at 16 kHz (5 s -> 5)."""
    frames = num_frames(num_samples)
    if frames < EXAMPLE_FRAMES:
        return 0
    return 1 + (frames - EXAMPLE_FRAMES) // EXAMPLE_HOP_FRAMES


def hz_to_mel(hz: Tensor) -> Tensor:
    """HTK mel scale, ``1127 ln(1 + f / 700)``, elementwise."""
    return 1127.0 * torch.log1p(hz / 700.0)


def vggish_mel_matrix(
    num_bands: int = MEL_BANDS,
    num_bins: int = FFT_SIZE // 2 + 1,
    sample_rate: int = SAMPLE_RATE,
    low_hz: float = MEL_LOW_HZ,
    high_hz: float = MEL_HIGH_HZ,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """VGGish's mel filter matrix: (num_bins, num_bands), as ``spectrogram_to_mel_matrix``.

    Unlike ``torchaudio.functional.melscale_fbanks`` (triangles linear in Hz), each triangle here is
    linear in mel, evaluated at the mel value of each FFT bin frequency; row 0 (DC) is zeroed.
    """
    bins_mel = hz_to_mel(torch.linspace(0.0, sample_rate / 2, num_bins, dtype=torch.float64))
    low, high = hz_to_mel(torch.tensor([low_hz, high_hz], dtype=torch.float64))
    edges = torch.linspace(float(low), float(high), num_bands + 2, dtype=torch.float64)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]  # each (num_bands,)
    rising = (bins_mel[:, None] - lower) / (center - lower)  # (num_bins, num_bands)
    falling = (upper - bins_mel[:, None]) / (upper - center)  # (num_bins, num_bands)
    matrix = torch.minimum(rising, falling).clamp_min(0.0)
    matrix[0] = 0.0  # VGGish drops the DC bin
    return matrix.to(dtype)


def frames_to_examples(frames: Tensor) -> Tensor:
    """Cut log-mel frames into non-overlapping examples: (..., F, M) -> (..., N, 1, 96, M).

    ``N = 1 + (F - 96) // 96`` (0 when F < 96); the incomplete tail is dropped.
    """
    if frames.dim() < 2:
        raise ValueError(f"frames must be (..., F, bands), got shape {tuple(frames.shape)}")
    *lead, F, M = frames.shape
    if F < EXAMPLE_FRAMES:  # unfold refuses a window longer than the axis
        return frames.new_zeros((*lead, 0, 1, EXAMPLE_FRAMES, M))
    examples = frames.unfold(-2, EXAMPLE_FRAMES, EXAMPLE_HOP_FRAMES)  # (..., N, M, 96)
    examples = examples.transpose(-1, -2)  # (..., N, 96, M)
    return examples.unsqueeze(-3).contiguous()  # (..., N, 1, 96, M)


class LogMel(nn.Module):
    """VGGish log-mel frames: wave (S,) or (B, S) float @16 kHz -> (F, 64) or (B, F, 64) float32.

    ``F = 1 + (S - 400) // 160``; frame k depends only on samples ``[160 k, 160 k + 400)``, so
    this is also the incremental (streaming) entry point, see the module docstring. A chunk
    shorter than 400 samples gives F = 0. The module has no state_dict entries.

    Args:
        compute_dtype: dtype of the STFT, filter and log; float64 (default) matches torchvggish's
            numpy to float32 rounding, float32 is faster and within ~1e-3 after the log.
    """

    window: Tensor
    mel_matrix: Tensor

    def __init__(self, compute_dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        # Periodic Hann, 0.5 - 0.5 cos(2 pi n / 400); built directly in compute_dtype.
        window = torch.hann_window(WINDOW_SAMPLES, periodic=True, dtype=compute_dtype)
        self.register_buffer("window", window, persistent=False)  # (400,)
        mel = vggish_mel_matrix(dtype=compute_dtype)  # (257, 64)
        self.register_buffer("mel_matrix", mel, persistent=False)
        self.out_dim = mel.shape[1]

    def forward(self, wave: Tensor) -> Tensor:
        if wave.dim() not in (1, 2):
            raise ValueError(f"wave must be (S,) or (B, S), got shape {tuple(wave.shape)}")
        *lead, S = wave.shape
        x = wave.to(self.mel_matrix.dtype)
        if S < WINDOW_SAMPLES:  # not one complete frame yet
            return x.new_zeros((*lead, 0, self.out_dim), dtype=torch.float32)
        # torch.stft centres the 400-sample window inside each 512-sample frame (56 zeros each
        # side); padding the wave by 56 on both sides puts frame k on samples [160k, 160k + 400).
        side = (FFT_SIZE - WINDOW_SAMPLES) // 2
        x = nn.functional.pad(x, (side, side))  # (..., S + 112)
        spec = AF.spectrogram(
            x,
            pad=0,
            window=self.window,
            n_fft=FFT_SIZE,
            hop_length=HOP_SAMPLES,
            win_length=WINDOW_SAMPLES,
            power=1.0,  # magnitude, not power
            normalized=False,
            center=False,
        )  # (..., 257, F)
        mel = spec.transpose(-1, -2) @ self.mel_matrix  # (..., F, 64)
        return torch.log(mel + LOG_OFFSET).to(torch.float32)

    def examples(self, wave: Tensor) -> Tensor:
        """Wave (S,) or (B, S) @16 kHz -> examples (N, 1, 96, 64) or (B, N, 1, 96, 64) float32."""
        return frames_to_examples(self(wave))


@functools.lru_cache(maxsize=4)
def _default_log_mel(device: torch.device) -> LogMel:
    return LogMel().to(device)


def _as_wave(wave: np.ndarray | Tensor) -> Tensor:
    """Validate a mono float wave and return it as a float64 tensor (S,)."""
    if isinstance(wave, np.ndarray):
        if not np.issubdtype(wave.dtype, np.floating):
            raise ValueError(
                f"wave must be float in [-1, 1], got dtype {wave.dtype}; "
                "divide int16 PCM by 32768 first"
            )
        tensor = torch.from_numpy(np.array(wave, dtype=np.float64, ndmin=0))
    elif isinstance(wave, Tensor):
        if not wave.is_floating_point():
            raise ValueError(
                f"wave must be float in [-1, 1], got dtype {wave.dtype}; "
                "divide int16 PCM by 32768 first"
            )
        tensor = wave.detach().to(torch.float64)
    else:
        raise TypeError(f"wave must be a numpy array or torch tensor, got {type(wave).__name__}")
    if tensor.dim() != 1:
        raise ValueError(
            f"wave must be 1-D mono (S,), got shape {tuple(tensor.shape)}; "
            "average the channels first"
        )
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError("wave contains NaN or Inf")
    return tensor


def log_mel(wave: np.ndarray | Tensor, sample_rate: int) -> Tensor:
    """VGGish input examples of a mono wave: (S,) float in [-1, 1] -> (N, 1, 96, 64) float32.

    Resamples to 16 kHz with ``torchaudio.functional.resample`` when ``sample_rate != 16000``
    (torchvggish uses resampy, so resampled values differ slightly from AVSBench's).
    ``N = num_examples(S16)`` where S16 is the length at 16 kHz; a 5 s clip gives 5 examples.

    Raises:
        ValueError: wave not 1-D, not float, not finite, or shorter than one example
            (15600 samples at 16 kHz, 0.975 s); sample_rate not positive.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    x = _as_wave(wave)  # (S,) float64
    if sample_rate != SAMPLE_RATE:
        x = AF.resample(x, orig_freq=sample_rate, new_freq=SAMPLE_RATE)  # (S16,)
    if x.shape[0] < MIN_EXAMPLE_SAMPLES:
        need_s = MIN_EXAMPLE_SAMPLES / SAMPLE_RATE
        need_in = math.ceil(MIN_EXAMPLE_SAMPLES * sample_rate / SAMPLE_RATE)
        raise ValueError(
            f"wave too short for one VGGish example: needs at least {MIN_EXAMPLE_SAMPLES} samples "
            f"at 16 kHz ({need_s:.3f} s, about {need_in} at {sample_rate} Hz), "
            f"got {x.shape[0]} at 16 kHz"
        )
    with torch.no_grad():
        return _default_log_mel(x.device).examples(x)  # (N, 1, 96, 64)
