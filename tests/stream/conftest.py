"""Fixtures for stream tests: a real microphone (a private PulseAudio daemon, see audio_env);
fp32 convolutions without TF32 for the CUDA comparisons."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from tests.stream.audio_env import PulseAudioEnv, PulseUnavailable
from tests.stream.test_network_camera import udp_stream  # noqa: F401  (shared fixture)


@pytest.fixture(scope="session")
def pulse_env() -> Iterator[PulseAudioEnv]:
    """A PulseAudio null sink whose monitor PortAudio records as "pulse"/"default".

    Skips (with the reason) where PulseAudio, PortAudio or ALSA's pulse plugin is missing."""
    env = PulseAudioEnv()
    try:
        env.start()
        try:
            import sounddevice as sd
        except OSError as e:
            raise PulseUnavailable(f"{e} (apt-get install libportaudio2)") from e
        names = [d["name"] for d in sd.query_devices() if d["max_input_channels"] > 0]
        if "pulse" not in names:
            raise PulseUnavailable(
                f"PortAudio sees no 'pulse' input (inputs: {names}); "
                "apt-get install libasound2-plugins"
            )
    except PulseUnavailable as e:
        env.close()
        pytest.skip(f"no PulseAudio microphone: {e}")
    try:
        yield env
    finally:
        env.close()


@pytest.fixture
def no_tf32() -> Iterator[None]:
    """fp32 convolutions in fp32 on a GPU (cuDNN's TF32 default would blur a comparison)."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before
