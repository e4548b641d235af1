"""Frame preprocessing: uint8 BGR (H, W, 3) -> normalised RGB (1, 3, S, S) at model size.

The model was trained on frames resized with an antialiased bilinear filter (PIL's BILINEAR),
then ImageNet-normalised (``pcmanet.data.transforms``). :class:`Preprocessor` does the same on
the device the model runs on:

* torch ops (any device): ``interpolate(bilinear, antialias=True)``;
* on CUDA with CuPy installed, one fused raw kernel (resize + BGR->RGB + normalise) on the
  caller's CUDA stream (``cupy.cuda.ExternalStream``; tensors cross via DLPack). It computes the
  same separable triangle filter as torch's antialiased bilinear, written out in
  :func:`aa_weights` (the numpy rendering the tests compare with torch).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pcmanet.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from stream.engine.cupy_check import cupy_mismatch


def aa_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 resampling matrix of torch's antialiased bilinear filter.

    For output pixel i: centre c = s (i + 0.5) with s = in/out, support r = max(s, 1); source
    pixels j in [int(c - r + 0.5), int(c + r + 0.5)) weigh max(0, 1 - |(j - c + 0.5) / max(s, 1)|),
    normalised to sum 1. Downscaling averages over the footprint (no aliasing); upscaling is
    plain bilinear with clamped borders.
    """
    s = in_size / out_size
    support = max(s, 1.0)
    inv = 1.0 / support
    w = np.zeros((out_size, in_size))
    for i in range(out_size):
        c = s * (i + 0.5)
        lo, hi = max(int(c - support + 0.5), 0), min(int(c + support + 0.5), in_size)
        j = np.arange(lo, hi)
        k = np.maximum(0.0, 1.0 - np.abs((j - c + 0.5) * inv))
        w[i, lo:hi] = k / k.sum()
    return w


_KERNEL = r"""
extern "C" __global__ void bgr_to_model(
    const unsigned char* src, float* dst, int H, int W, int S,
    float m0, float m1, float m2, float s0, float s1, float s2) {
  int ox = blockIdx.x * blockDim.x + threadIdx.x;
  int oy = blockIdx.y * blockDim.y + threadIdx.y;
  if (ox >= S || oy >= S) return;
  float sy = (float)H / S, sx = (float)W / S;
  float ry = fmaxf(sy, 1.f), rx = fmaxf(sx, 1.f);
  float cy = sy * (oy + 0.5f), cx = sx * (ox + 0.5f);
  int y0 = max((int)(cy - ry + 0.5f), 0), y1 = min((int)(cy + ry + 0.5f), H);
  int x0 = max((int)(cx - rx + 0.5f), 0), x1 = min((int)(cx + rx + 0.5f), W);
  float acc[3] = {0.f, 0.f, 0.f}, wsum_y = 0.f, wsum_x = 0.f;
  for (int x = x0; x < x1; ++x) wsum_x += fmaxf(0.f, 1.f - fabsf((x - cx + 0.5f) / rx));
  for (int y = y0; y < y1; ++y) {
    float wy = fmaxf(0.f, 1.f - fabsf((y - cy + 0.5f) / ry));
    wsum_y += wy;
    for (int x = x0; x < x1; ++x) {
      float w = wy * fmaxf(0.f, 1.f - fabsf((x - cx + 0.5f) / rx));
      const unsigned char* p = src + ((size_t)y * W + x) * 3;
      acc[0] += w * p[2]; acc[1] += w * p[1]; acc[2] += w * p[0];   // BGR -> RGB
    }
  }
  float norm = 1.f / (255.f * wsum_y * wsum_x);
  size_t plane = (size_t)S * S, o = (size_t)oy * S + ox;
  dst[o] = (acc[0] * norm - m0) / s0;
  dst[plane + o] = (acc[1] * norm - m1) / s1;
  dst[2 * plane + o] = (acc[2] * norm - m2) / s2;
}
"""


def cupy_available() -> bool:
    """Whether CuPy imports and sees a CUDA device."""
    try:
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:
        return False


class Preprocessor:
    """uint8 BGR frames -> (1, 3, S, S) float32 ImageNet-normalised RGB on ``device``.

    Args:
        size: model input side S.
        device: where the output lives (and the work runs).
        use_cupy: None = the CuPy kernel when on CUDA and CuPy is installed; True = require it
            (ValueError otherwise); False = torch ops.
    """

    def __init__(self, size: int, device: torch.device | str = "cpu",
                 use_cupy: bool | None = None) -> None:
        self.size, self.device = size, torch.device(device)
        if self.device.type == "cuda" and use_cupy is not False:
            mismatch = cupy_mismatch()
            if mismatch is not None:
                raise ValueError(mismatch)
        can = self.device.type == "cuda" and cupy_available()
        if use_cupy and not can:
            raise ValueError("use_cupy needs a CUDA device and CuPy "
                             "(pip install -c constraints.txt -e '.[gpu]')")
        self.use_cupy = can if use_cupy is None else use_cupy
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        self._kernel: Any = None

    def __call__(self, image: np.ndarray | Tensor) -> Tensor:
        """image: (H, W, 3) uint8 BGR, numpy or a tensor (already on the device, e.g. copied
        from a pinned buffer) -> (1, 3, S, S) float32."""
        x = torch.as_tensor(image)
        if x.dtype != torch.uint8 or x.dim() != 3 or x.shape[2] != 3:
            raise ValueError(f"expected a (H, W, 3) uint8 BGR frame, got {tuple(x.shape)} "
                             f"{x.dtype}")
        x = x.to(self.device, non_blocking=True)
        if self.use_cupy:
            return self._cupy(x)
        rgb = x.permute(2, 0, 1).flip(0)[None].float().div_(255.0)          # (1, 3, H, W)
        if tuple(rgb.shape[-2:]) != (self.size, self.size):
            rgb = F.interpolate(rgb, size=(self.size, self.size), mode="bilinear",
                                align_corners=False, antialias=True)
        return (rgb - self._mean) / self._std

    def _cupy(self, x: Tensor) -> Tensor:
        import cupy

        if self._kernel is None:
            self._kernel = cupy.RawKernel(_KERNEL, "bgr_to_model")
        H, W, _ = x.shape
        S = self.size
        out = torch.empty((1, 3, S, S), device=self.device)
        stream = torch.cuda.current_stream(self.device)
        with cupy.cuda.ExternalStream(stream.cuda_stream):
            src = cupy.from_dlpack(x.contiguous())
            dst = cupy.from_dlpack(out)
            block = (16, 16)
            grid = (math.ceil(S / 16), math.ceil(S / 16))
            self._kernel(grid, block, (src, dst, np.int32(H), np.int32(W), np.int32(S),
                                       *map(np.float32, IMAGENET_MEAN),
                                       *map(np.float32, IMAGENET_STD)))
        return out
