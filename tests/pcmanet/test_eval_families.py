"""Evaluation-only sound families (pcmanet.data.eval_families / eval_sounds): layout, twins,
determinism, one-axis sounds, and disjointness from the demo generator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pcmanet.data import build_dataset
from pcmanet.data.eval_families import FAMILY_CLASSES, main, read_twins, write_family
from pcmanet.data.eval_sounds import (
    FAMILIES,
    PITCH_HZ,
    PITCH_JITTER,
    RHYTHMS,
    STRIKE_PARTIALS_HZ,
    family_sound,
)
from pcmanet.data.synthetic_classes import OBJECT_CLASSES, SoundRecipe
from pcmanet.data.synthetic_sound import SAMPLE_RATE
from tests.conftest import REPO

SIZES = {"train": 4, "val": 2, "test": 3}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module", params=FAMILIES)
def family_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp(request.param)
    write_family(root, request.param, SIZES, size=64, seed=3)
    return request.param, root


def test_the_s4_loader_reads_every_split(family_root: tuple[str, Path]) -> None:
    family, root = family_root
    names = {c.name for c in FAMILY_CLASSES[family]}
    for split, n in SIZES.items():
        ds = build_dataset("s4", str(root), split, image_size=64)
        assert len(ds) == n
        item = ds[0]
        assert item["frames"].shape == (5, 3, 64, 64) and item["audio"].shape == (5, 1, 96, 64)
        assert item["category"] in names
        labelled = 1 if split == "train" else 5
        assert int(item["mask_valid"].sum()) == labelled and item["masks"][0].sum() > 0


def test_twins_share_frames_and_differ_in_sound_and_mask(family_root: tuple[str, Path]) -> None:
    _, root = family_root
    twins = read_twins(root, "test")
    assert len(twins) == 2 and all(twins[b] == a for a, b in twins.items())  # the odd 3rd: none
    ds = build_dataset("s4", str(root), "test", image_size=64)
    items = {ds.clips[i].name: ds[i] for i in range(len(ds))}
    a, b = sorted(twins)
    assert items[a]["category"] != items[b]["category"]
    assert bool((items[a]["frames"] == items[b]["frames"]).all())
    assert not bool((items[a]["audio"] == items[b]["audio"]).all())
    # visible masks of two objects never overlap: the twin's object is elsewhere
    assert float((items[a]["masks"] * items[b]["masks"]).sum()) == 0.0


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    for d, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_family(tmp_path / d, "pitch", {"train": 2, "test": 2}, size=48, seed=seed)
    a, b, c = (_files(tmp_path / d) for d in "abc")
    assert a == b
    assert a.keys() != c.keys() or a != c


def test_cli_writes_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    args = ["--family", "rhythm", "--out", str(tmp_path), "--train", "2", "--val", "0",
            "--test", "2", "--size", "48"]
    assert main(args) == 0 and "2 twin pairs" in capsys.readouterr().out
    assert main(args) == 2 and "exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def _spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE), np.abs(np.fft.rfft(x))


def test_pitch_classes_differ_in_pitch_only() -> None:
    rng = np.random.default_rng(0)
    spectra = []
    for k, f0 in enumerate(PITCH_HZ):
        f, mag = _spectrum(family_sound("pitch", k, 2 * SAMPLE_RATE, rng))
        assert f[np.argmax(mag)] == pytest.approx(f0, rel=2 * PITCH_JITTER)
        # the same harmonic shape: partial n's level relative to the fundamental's
        peak = f[np.argmax(mag)]
        levels = [np.sqrt((mag[np.abs(f - n * peak) < 20] ** 2).sum()) for n in range(1, 5)]
        spectra.append(np.asarray(levels) / levels[0])
    assert np.allclose(spectra, [n ** -1.2 for n in range(1, 5)], atol=0.06), spectra


def test_rhythm_classes_share_a_spectrum_and_differ_in_timing() -> None:
    rng = np.random.default_rng(1)
    bands, rates = [], []
    for k, (cycle, hits) in enumerate(RHYTHMS):
        x = family_sound("rhythm", k, 4 * SAMPLE_RATE, rng)
        f, mag = _spectrum(x)
        coarse = np.array([mag[(f >= lo) & (f < lo + 250)].sum() for lo in range(250, 4000, 250)])
        bands.append(coarse / coarse.sum())
        env = np.abs(x).reshape(-1, 160).max(1)  # 10 ms peaks
        rates.append(int(((env[1:] > 0.5 * env.max()) & (env[:-1] <= 0.5 * env.max())).sum()))
        assert rates[-1] == pytest.approx(4 * len(hits) / cycle, abs=3)
    assert max(np.abs(b - bands[0]).max() for b in bands) < 0.03
    assert len(set(rates)) == len(RHYTHMS)


def test_families_are_disjoint_from_the_demo_generator() -> None:
    # none of the families' objects carries a demo sound recipe (their sounds are eval_sounds')
    assert all(c.sound == SoundRecipe() for cs in FAMILY_CLASSES.values() for c in cs)
    demo_f0 = [c.sound.f0 for c in OBJECT_CLASSES if c.sound.f0 > 0]
    for f0 in PITCH_HZ:  # no pitch within reach of a demo fundamental (voice: +-5 %)
        lo, hi = f0 * (1 - PITCH_JITTER), f0 * (1 + PITCH_JITTER)
        assert all(hi < d * 0.95 or lo > d * 1.05 for d in demo_f0), f0
    for d in demo_f0:  # the strike's partials are not one demo voice's harmonic series
        assert not all(abs(p / d - round(p / d)) < 0.05 for p in STRIKE_PARTIALS_HZ)
    demo_names = {c.name for c in OBJECT_CLASSES}
    assert not demo_names & {c.name for cs in FAMILY_CLASSES.values() for c in cs}


def test_the_demo_training_path_never_imports_the_families() -> None:
    code = ("import sys, pcmanet.train, pcmanet.evaluate, pcmanet.swap_eval, "
            "pcmanet.data.synthetic, stream.run.app; "
            "bad = [m for m in sys.modules if m.startswith('pcmanet.data.eval_')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
