"""Block-by-block resampling of a mono stream to 16 kHz, equal to resampling it whole.

Used by :class:`stream.capture.mic.MicSource`, whose device may only record at 44.1 or 48 kHz.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torchaudio
from numpy.lib.stride_tricks import sliding_window_view

from pcmanet.audio.frontend import SAMPLE_RATE  # 16 kHz: the pipeline's audio rate


class StreamingResampler:
    """Resamples a mono stream block by block: (n,) float32 @``orig_rate`` -> (m,) @``new_rate``.

    The filter is torchaudio's windowed sinc (``torchaudio.transforms.Resample``: a kernel
    (new', 1, K), K = 2 * width + orig', for the rates divided by their gcd), applied polyphase:
    output group j (new' samples) is the kernel times input [j * orig' - width, j * orig' + width
    + orig'). The input is carried across calls, starting with ``width`` zeros as torchaudio
    pads the start, so the concatenated output equals ``torchaudio.functional.resample`` of the
    whole signal (to float32 rounding; the whole-signal call also emits the last few samples,
    which here wait for more input). Output sample k sits at input position
    k * orig_rate / new_rate (no delay); the look-ahead is width + orig' input samples (22 @48
    kHz, 458 @44.1 kHz). The products run in ``np.einsum``: no BLAS or torch thread pool, whose
    wake-ups cost milliseconds per small block on a busy CPU.
    """

    def __init__(self, orig_rate: int, new_rate: int = SAMPLE_RATE) -> None:
        self.orig_rate, self.new_rate = orig_rate, new_rate
        self.in_samples = self.out_samples = 0
        self._orig = orig_rate // math.gcd(orig_rate, new_rate)  # orig': inputs per group
        self._identity = orig_rate == new_rate
        if self._identity:
            self._kernel, self._width = np.zeros((1, 1), np.float32), 0
        else:
            resample = torchaudio.transforms.Resample(orig_rate, new_rate, dtype=torch.float32)
            kernel = resample.kernel  # (new', 1, K) float32
            assert isinstance(kernel, torch.Tensor)
            self._kernel = kernel[:, 0, :].numpy().copy()  # (new', K)
            self._width = int(resample.width)
        self._carry = np.zeros(self._width, np.float32)  # input not yet consumed, zero-padded

    def process(self, x: np.ndarray) -> np.ndarray:
        """Feed (n,) float32 @orig_rate; returns the (m,) float32 @new_rate now computable."""
        self.in_samples += int(x.shape[0])
        if self._identity:
            self.out_samples += int(x.shape[0])
            return x.astype(np.float32, copy=False)
        buf = np.concatenate([self._carry, x.astype(np.float32, copy=False)])  # (L,)
        K, o = self._kernel.shape[1], self._orig
        groups = (buf.shape[0] - K) // o + 1 if buf.shape[0] >= K else 0  # new' outputs each
        if groups == 0:
            self._carry = buf
            return np.zeros(0, np.float32)
        frames = sliding_window_view(buf[: (groups - 1) * o + K], K)[::o]  # (groups, K) view
        out = np.einsum("gk,nk->gn", frames, self._kernel).reshape(-1)  # (groups * new',)
        self._carry = buf[groups * o :]
        self.out_samples += int(out.shape[0])
        return out.astype(np.float32, copy=False)

    def input_position(self, out_sample: int) -> float:
        """Input sample position (fractional) of output sample ``out_sample``."""
        return out_sample * self.orig_rate / self.new_rate
