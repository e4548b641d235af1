"""Tests for pcmanet.audio: log-mel front end vs a numpy VGGish recipe, VGGish, light encoder."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pcmanet.audio import (
    AUDIO_ENCODERS,
    MIN_EXAMPLE_SAMPLES,
    CheckpointError,
    CheckpointNotFoundError,
    LightAudioEncoder,
    LogMel,
    VGGish,
    build_audio_encoder,
    frames_to_examples,
    load_vggish,
    log_mel,
    num_examples,
    num_frames,
)

SR = 16000
VGGISH_PARAMS = 72_141_184
LOG_FLOOR = math.log(0.01)  # silence


# ---------------------------------------------------------------------------------------------
# Independent numpy rendering of torchvggish's vggish_input.waveform_to_examples (16 kHz input)
# ---------------------------------------------------------------------------------------------


def _np_hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + hz / 700.0)


def _np_mel_matrix() -> np.ndarray:
    """(257, 64) HTK triangles linear in mel at the bin frequencies, DC row zeroed."""
    bins_mel = _np_hz_to_mel(np.linspace(0.0, 8000.0, 257))
    edges = np.linspace(_np_hz_to_mel(np.array(125.0)), _np_hz_to_mel(np.array(7500.0)), 66)
    matrix = np.empty((257, 64))
    for i in range(64):
        lower, center, upper = edges[i : i + 3]
        rising = (bins_mel - lower) / (center - lower)
        falling = (upper - bins_mel) / (upper - center)
        matrix[:, i] = np.maximum(0.0, np.minimum(rising, falling))
    matrix[0, :] = 0.0
    return matrix


def _np_frame(data: np.ndarray, window: int, hop: int) -> np.ndarray:
    """(S, ...) -> (n, window, ...) with n = 1 + (S - window) // hop, no padding."""
    n = 1 + (data.shape[0] - window) // hop
    return np.stack([data[i * hop : i * hop + window] for i in range(n)])


def _np_reference_frames(wave: np.ndarray) -> np.ndarray:
    """(S,) float64 @16 kHz -> log-mel frames (F, 64) float64."""
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi / 400 * np.arange(400))  # periodic Hann
    frames = _np_frame(wave.astype(np.float64), 400, 160)  # (F, 400)
    spectrum = np.abs(np.fft.rfft(frames * window, 512))  # (F, 257) magnitude
    return np.log(spectrum @ _np_mel_matrix() + 0.01)  # (F, 64)


def _np_reference_examples(wave: np.ndarray) -> np.ndarray:
    """(S,) @16 kHz -> (N, 1, 96, 64) float64."""
    return _np_frame(_np_reference_frames(wave), 96, 96)[:, None]


# Pure tones inside the band, at and just outside its edges, and near Nyquist.
_TONES = (60.0, 125.0, 131.0, 440.0, 1000.0, 3999.7, 7490.0, 7500.0, 7600.0, 7990.0)


def _signals(seconds: float = 5.0) -> dict[str, np.ndarray]:
    t = np.arange(int(seconds * SR) + 123) / SR  # not a whole number of frames
    rng = np.random.default_rng(0)
    signals = {f"tone_{f:g}Hz": 0.8 * np.sin(2 * np.pi * f * t + 0.3) for f in _TONES}
    signals["white_noise"] = rng.uniform(-1.0, 1.0, t.shape)
    signals["silence"] = np.zeros_like(t)
    signals["clipped"] = np.clip(4.0 * np.sin(2 * np.pi * 330.0 * t), -1.0, 1.0)  # hits +-1
    return signals


_SIGNALS = _signals()


@pytest.mark.parametrize("name", sorted(_SIGNALS))
def test_log_mel_matches_numpy_recipe(name: str) -> None:
    wave = _SIGNALS[name]
    ref = _np_reference_examples(wave)
    out = log_mel(wave, SR)
    assert out.dtype == torch.float32 and out.shape == ref.shape == (5, 1, 96, 64)
    err = np.abs(out.double().numpy() - ref).max()
    assert err < 1e-4, f"{name}: max abs diff {err:.3g}"


def test_log_mel_silence_is_log_offset() -> None:
    out = log_mel(np.zeros(5 * SR), SR)
    assert torch.allclose(out, torch.full_like(out, LOG_FLOOR))


def test_clipped_signal_reaches_full_scale() -> None:
    assert np.abs(_SIGNALS["clipped"]).max() == 1.0


@pytest.mark.parametrize("name", ["tone_1000Hz", "white_noise", "clipped"])
def test_logmel_module_float32_input(name: str) -> None:
    """The streaming path takes float32 tensors; compare with numpy on the same float32 samples."""
    wave32 = _SIGNALS[name].astype(np.float32)
    ref = _np_reference_frames(wave32.astype(np.float64))
    out = LogMel()(torch.from_numpy(wave32))
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert np.abs(out.double().numpy() - ref).max() < 1e-4


def test_logmel_float32_compute_is_close() -> None:
    wave = torch.from_numpy(_SIGNALS["tone_3999.7Hz"].astype(np.float32))
    exact, fast = LogMel()(wave), LogMel(compute_dtype=torch.float32)(wave)
    assert (exact - fast).abs().max() < 5e-3


def test_logmel_has_no_state_dict() -> None:
    assert LogMel().state_dict() == {}


def test_logmel_batched_equals_rows() -> None:
    waves = torch.from_numpy(np.stack([_SIGNALS["white_noise"], _SIGNALS["tone_440Hz"]]))
    module = LogMel()
    batched = module(waves)  # (2, F, 64)
    assert batched.shape == (2, num_frames(waves.shape[1]), 64)
    for row in range(2):
        torch.testing.assert_close(batched[row], module(waves[row]), atol=1e-6, rtol=0)
    assert module.examples(waves).shape == (2, 5, 1, 96, 64)


def test_logmel_short_chunk_gives_no_frames() -> None:
    assert LogMel()(torch.zeros(399)).shape == (0, 64)
    assert LogMel()(torch.zeros(3, 10)).shape == (3, 0, 64)
    assert LogMel()(torch.zeros(400)).shape == (1, 64)


def test_logmel_streaming_chunks_equal_full_signal() -> None:
    """Ring-buffer use: keep samples from 160 * frames_done on; frames continue exactly."""
    wave = torch.from_numpy(_SIGNALS["white_noise"][: 3 * SR].astype(np.float32))
    module = LogMel()
    full = module(wave)
    rng = np.random.default_rng(1)
    pending, got, pos = wave[:0], [], 0
    while pos < wave.shape[0]:
        step = int(rng.integers(1, 2000))
        pending = torch.cat([pending, wave[pos : pos + step]])
        pos += step
        frames = module(pending)  # (f, 64)
        got.append(frames)
        pending = pending[frames.shape[0] * 160 :]  # drop the samples no later frame needs
    streamed = torch.cat(got)
    assert streamed.shape == full.shape
    torch.testing.assert_close(streamed, full, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("num_samples", "expected"),
    [(15600, 1), (30959, 1), (30960, 2), (5 * SR, 5), (10 * SR, 10), (5 * SR + 123, 5)],
)
def test_example_count(num_samples: int, expected: int) -> None:
    assert num_examples(num_samples) == expected
    frames = 1 + (num_samples - 400) // 160
    assert num_frames(num_samples) == frames
    assert 1 + (frames - 96) // 96 == expected
    assert log_mel(np.zeros(num_samples), SR).shape == (expected, 1, 96, 64)


def test_frames_to_examples_drops_tail() -> None:
    frames = torch.arange(250 * 64, dtype=torch.float32).reshape(250, 64)
    examples = frames_to_examples(frames)
    assert examples.shape == (2, 1, 96, 64)
    assert torch.equal(examples[1, 0], frames[96:192])
    assert frames_to_examples(frames[:95]).shape == (0, 1, 96, 64)


@pytest.mark.parametrize("sample_rate", [44100, 48000])
def test_log_mel_resamples(sample_rate: int) -> None:
    t16, t = np.arange(5 * SR) / SR, np.arange(5 * sample_rate) / sample_rate
    native = log_mel(0.5 * np.sin(2 * np.pi * 1000.0 * t16), SR)
    resampled = log_mel(0.5 * np.sin(2 * np.pi * 1000.0 * t), sample_rate)
    assert resampled.shape == native.shape == (5, 1, 96, 64)
    loud = native > 0  # bands that hold the tone
    assert loud.any()
    assert (resampled - native)[loud].abs().max() < 2e-3
    assert (resampled - native).abs().max() < 0.05


def test_log_mel_accepts_tensor() -> None:
    wave = _SIGNALS["white_noise"]
    from_numpy = log_mel(wave, SR)
    from_tensor = log_mel(torch.from_numpy(wave.astype(np.float32)), SR)
    torch.testing.assert_close(from_numpy, from_tensor, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("wave", "sample_rate", "match"),
    [
        (np.zeros((2, 5 * SR)), SR, "1-D"),
        (np.zeros((5 * SR, 2)), SR, "1-D"),
        (np.zeros(()), SR, "1-D"),
        (np.zeros(5 * SR, dtype=np.int16), SR, "float"),
        (np.zeros(MIN_EXAMPLE_SAMPLES - 1), SR, "15600"),
        (np.zeros(22050 // 2), 22050, "15600"),
        (np.full(5 * SR, np.nan), SR, "NaN"),
        (np.zeros(5 * SR), 0, "sample_rate"),
    ],
)
def test_log_mel_rejects_bad_input(wave: np.ndarray, sample_rate: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        log_mel(wave, sample_rate)


def test_logmel_module_rejects_3d() -> None:
    with pytest.raises(ValueError, match=r"\(S,\) or \(B, S\)"):
        LogMel()(torch.zeros(1, 2, 16000))


# ---------------------------------------------------------------------------------------------
# VGGish
# ---------------------------------------------------------------------------------------------


def _reference_vggish_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in (Path(__file__).parent / "reference" / "vggish_keys.tsv").read_text().splitlines():
        if line.strip():
            key, shape, dtype = line.split("\t")
            assert dtype == "float32"
            shapes[key] = tuple(int(s) for s in shape.strip("[]").split(","))
    return shapes


@pytest.fixture(scope="module")
def vggish() -> VGGish:
    torch.manual_seed(0)
    return VGGish().eval()


@pytest.fixture(scope="module")
def vggish_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A random state_dict with exactly the reference keys and shapes, saved with torch.save."""
    gen = torch.Generator().manual_seed(0)
    state = {
        key: torch.randn(shape, generator=gen) * 0.01
        for key, shape in _reference_vggish_shapes().items()
    }
    path = tmp_path_factory.mktemp("vggish") / "vggish-random.pth"
    torch.save(state, path)
    return path, state


def test_vggish_param_count(vggish: VGGish) -> None:
    assert sum(p.numel() for p in vggish.parameters()) == VGGISH_PARAMS
    assert vggish.out_dim == 128


def test_vggish_state_dict_matches_reference_layout(vggish: VGGish) -> None:
    ref = _reference_vggish_shapes()
    ours = {k: tuple(v.shape) for k, v in vggish.state_dict().items()}
    assert ours == ref
    assert sum(math.prod(s) for s in ref.values()) == VGGISH_PARAMS


def test_vggish_output_shape_and_sign(vggish: VGGish) -> None:
    examples = log_mel(_SIGNALS["white_noise"][: 2 * SR], SR)  # (2, 1, 96, 64)
    with torch.no_grad():
        out = vggish(examples)
    assert out.shape == (2, vggish.out_dim) and torch.isfinite(out).all()
    assert (out >= 0).all()


def test_vggish_flattens_in_tf_order(vggish: VGGish) -> None:
    """Same as torchvggish: transpose(1, 3) then transpose(1, 2), i.e. (N, 6, 4, 512)."""
    x = torch.randn(2, 1, 96, 64)
    with torch.no_grad():
        feats = vggish.features(x)
        assert feats.shape == (2, 512, 6, 4)
        flat = feats.transpose(1, 3).transpose(1, 2).contiguous().view(2, -1)
        torch.testing.assert_close(vggish(x), vggish.embeddings(flat))


def test_vggish_rejects_wrong_example_size(vggish: VGGish) -> None:
    with pytest.raises(AssertionError, match="96"):
        vggish(torch.zeros(1, 1, 95, 64))


def test_load_vggish_round_trip(vggish_file: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, state = vggish_file
    model = load_vggish(path)
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    trainable = load_vggish(str(path), freeze=False)
    assert trainable.training and all(p.requires_grad for p in trainable.parameters())


def test_load_vggish_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pth"
    with pytest.raises(CheckpointNotFoundError, match=r"nope\.pth"):
        load_vggish(path)
    with pytest.raises(FileNotFoundError):
        load_vggish(path)
    with pytest.raises(ValueError):
        load_vggish(path)


def test_load_vggish_truncated_file(
    tmp_path: Path, vggish_file: tuple[Path, dict[str, torch.Tensor]]
) -> None:
    full = vggish_file[0].read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pth"):
        load_vggish(path)


def test_load_vggish_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"this is not a checkpoint" * 100)
    with pytest.raises(CheckpointError, match=r"garbage\.pth"):
        load_vggish(path)


def test_load_vggish_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(CheckpointError, match=r"list\.pth.*not a state_dict"):
        load_vggish(path)


def test_load_vggish_refuses_pickled_module(tmp_path: Path) -> None:
    path = tmp_path / "module.pth"
    torch.save(nn.Linear(2, 2), path)  # needs weights_only=False, which we never use
    with pytest.raises(CheckpointError, match=r"module\.pth"):
        load_vggish(path)


def test_load_vggish_wrong_keys_lists_first_five(tmp_path: Path) -> None:
    path = tmp_path / "prefixed.pth"
    state = {f"module.{k}": torch.zeros(1) for k in _reference_vggish_shapes()}
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_vggish(path)
    msg = str(info.value)
    assert "prefixed.pth" in msg
    assert "missing keys: features.0.weight, features.0.bias" in msg
    assert "unexpected keys: module.features.0.weight" in msg
    assert "(18 in all)" in msg


def test_load_vggish_wrong_shape(tmp_path: Path) -> None:
    path = tmp_path / "shape.pth"
    state = {k: torch.zeros(1) for k in _reference_vggish_shapes()}
    torch.save(state, path)
    with pytest.raises(
        CheckpointError, match=r"shape\.pth.*wrong shapes: features\.0\.weight \[1\]"
    ):
        load_vggish(path)


# ---------------------------------------------------------------------------------------------
# Light encoder and the builder
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("out_dim", "widths"), [(128, (16, 32, 64, 128)), (64, (8, 16)), (32, (4,))]
)
@pytest.mark.parametrize("batch", [1, 3])
def test_light_encoder_shapes_and_grads(out_dim: int, widths: tuple[int, ...], batch: int) -> None:
    torch.manual_seed(0)
    encoder = LightAudioEncoder(out_dim=out_dim, widths=widths)
    out = encoder(torch.randn(batch, 1, 96, 64))
    assert out.shape == (batch, encoder.out_dim) and encoder.out_dim == out_dim
    assert (out >= 0).all() and torch.isfinite(out).all()
    (out + 1).pow(2).sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())


def test_light_encoder_eval_on_logmel() -> None:
    encoder = LightAudioEncoder().eval()
    with torch.no_grad():
        out = encoder(log_mel(_SIGNALS["tone_440Hz"], SR))
    assert out.shape == (5, 128)


def test_build_audio_encoder_by_name() -> None:
    light = build_audio_encoder("light", out_dim=64)
    assert isinstance(light, LightAudioEncoder) and light.out_dim == 64
    assert set(AUDIO_ENCODERS) == {"vggish", "light"}
    with pytest.raises(ValueError, match="vggish, light"):
        build_audio_encoder("resnet")
    with pytest.raises(ValueError, match="only supported"):
        build_audio_encoder("light", weights="x.pth")


def test_build_audio_encoder_vggish(vggish_file: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, state = vggish_file
    model = build_audio_encoder("vggish", weights=str(path))
    assert isinstance(model, VGGish) and model.out_dim == 128
    assert torch.equal(model.state_dict()["embeddings.4.bias"], state["embeddings.4.bias"])
    assert not any(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="out_dim"):
        build_audio_encoder("vggish", out_dim=64, weights=str(path))
    fresh = build_audio_encoder("vggish", out_dim=32)
    assert isinstance(fresh, VGGish) and fresh.out_dim == 32


def test_checkpoint_error_is_the_package_wide_one() -> None:
    import pcmanet

    assert CheckpointError is pcmanet.CheckpointError
    assert issubclass(CheckpointNotFoundError, CheckpointError)
