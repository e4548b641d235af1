"""Live config files: YAML -> LiveConfig, fragments in order, errors that name key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcmanet.config import ConfigError
from stream.run.config import LiveConfig, load_live_config


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_and_fragments_in_order(tmp_path):
    assert load_live_config() == LiveConfig()
    a = write(tmp_path, "a.yaml", "live:\n  sync: {av_offset_ms: 40}\n  publish: {encoding: png}\n")
    b = write(tmp_path, "b.yaml", "live:\n  sync: {av_offset_ms: -12.5}\n")
    cfg = load_live_config([a, b], ["live.engine.carry.enabled=true"])
    assert cfg.sync.av_offset_ms == -12.5 and cfg.publish.encoding == "png"
    assert cfg.engine.carry.enabled and cfg.engine.carry.refresh_every == 8


@pytest.mark.parametrize(("text", "expected"), [
    ("live:\n  engine: {thread: 2}\n", "live.engine.thread: unknown key"),
    ("live:\n  engine: {threads: two}\n", "live.engine.threads: expected int"),
    ("live:\n  publish: {encoding: jpeg}\n", "live.publish.encoding must be one of"),
    ("live:\n  engine: {carry: {refresh_every: 0}}\n", "refresh_every >= 1"),
    ("live:\n  engine: {input_size: 100}\n", "live.engine.input_size must be a multiple of 32"),
    ("live:\n  engine: {audio_rate_hz: 0}\n", "live.engine.audio_rate_hz must be > 0"),
    ("live:\n  sync: {pairing: soon}\n",
     "live.sync.pairing must be one of latest, exact, got 'soon'"),
    ("live:\n  sync: {pairing: 1}\n", "live.sync.pairing: expected str"),
    ("live:\n  sync: {max_lag_ms: -5}\n", "live.sync.max_lag_ms must be >= 0"),
    ("model: {dim: 3}\n", "model: unknown top-level key"),
    ("live: [1, 2]\n", "live: expected a mapping"),
])
def test_bad_files_name_the_key_and_the_file(tmp_path, text, expected):
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_live_config([path])
    assert expected in str(err.value) and str(path) in str(err.value)


def test_pairing_policy_defaults_to_latest_and_flows_to_the_pipeline(tmp_path):
    """YAML -> SyncSettings -> the LivePipeline's Pairer, as run_live builds it."""
    from stream.buffers.audio_ring import AudioRing
    from stream.buffers.frame_ring import FrameRing
    from stream.buffers.sync import PairingPolicy
    from stream.run.pipeline import LivePipeline

    cfg = load_live_config()
    assert cfg.sync.pairing == "latest" and cfg.sync.max_lag_ms == 40.0
    path = write(tmp_path, "exact.yaml", "live:\n  sync: {pairing: exact, max_wait_ms: 30}\n")
    cfg = load_live_config([path], ["live.sync.max_lag_ms=25"])
    assert cfg.sync.pairing == "exact" and cfg.sync.max_lag_ms == 25.0
    pipeline = LivePipeline(frames=FrameRing(2), audio=AudioRing(16000 * 2), sources=[],
                            engine=None, publisher=None, threshold=0.5,  # type: ignore[arg-type]
                            model_name="m", pairing=PairingPolicy(cfg.sync.pairing),
                            max_lag_ms=cfg.sync.max_lag_ms, max_wait_ms=cfg.sync.max_wait_ms)
    assert pipeline.pairer is not None and pipeline.pairer.policy is PairingPolicy.EXACT
    assert pipeline.pairer._max_lag_ns == 25_000_000 and pipeline.pairer._max_wait_ns == 30_000_000
