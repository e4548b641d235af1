"""calib.budget: the choice rule on known measurements, and a real (short) run over two
candidates that writes a fragment run_live accepts."""

from __future__ import annotations

import json
import os

import pytest

from calib.budget import Candidate, Measured, choose, main
from stream.run.config import load_live_config


def row(size, p99, acc, fps_out=30.0, dropped=0):
    return Measured(Candidate(None, size, 1, None), fps_out, 30.0, p99, p99 / 2, dropped, 300,
                    acc)


def test_choice_is_the_most_accurate_that_keeps_up_and_meets_p99():
    rows = [row(96, 40, 0.70), row(128, 60, 0.80), row(160, 90, 0.83),
            row(192, 50, 0.90, fps_out=20.0),        # falls behind the source
            row(224, 45, 0.95, dropped=30)]          # drops 10 % before the engine
    assert choose(rows, target_p99=None).candidate.input_size == 160
    assert choose(rows, target_p99=80).candidate.input_size == 128
    with pytest.raises(ValueError, match="no candidate meets the budget; the closest"):
        choose(rows, target_p99=30)


def test_accuracy_ties_go_to_the_lower_p99():
    rows = [row(128, 60, 0.800), row(160, 45, 0.797), row(192, 40, 0.70)]
    assert choose(rows, target_p99=None).candidate.input_size == 160


def test_a_target_is_required(capsys):
    with pytest.raises(SystemExit):
        main(["--sizes", "96"])
    assert "--target-fps and/or --target-p99" in capsys.readouterr().err


def test_real_run_over_two_sizes_writes_the_choice(tmp_path, capsys):
    out, js = tmp_path / "budget.yaml", tmp_path / "budget.json"
    code = main(["--target-fps", "10", "--sizes", "96,own", "--threads", "1",
                 "--duration", "4", "--warmup", "1", "--seeds", "0",
                 "--out", str(out), "--json", str(js)])
    report = json.loads(js.read_text())
    measured = report["measured"]
    assert len(measured) == 2
    for m in measured:
        assert m["fps_source"] == 10.0 and m["captured"] > 20 and m["p99_ms"] > 0
        assert 0 <= m["accuracy"] <= 1
    # 10 FPS is a third of what the demo model sustains on an idle machine. Whether a
    # candidate kept up is the tool's verdict, recomputed here from its own figures.
    for m in measured:
        keeps_up = m["fps_out"] >= 0.95 * m["fps_source"] and m["dropped"] <= 0.01 * m["captured"]
        assert m["meets"] == keeps_up, m
    meeting = [m for m in measured if m["meets"]]
    if not meeting:
        # Falling behind is a fault only where the machine had the cores to spare: the load
        # average over the run (this run included) says whether other work took them.
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
        closest = max(measured, key=lambda m: m["fps_out"])
        assert load > cores, (f"no candidate kept up with 10 FPS on a machine with spare cores "
                              f"(load {load:.1f} on {cores}): {closest}")
        assert code == 1 and report["chosen"] is None and not out.exists()
        assert "no candidate meets the budget" in capsys.readouterr().err
        pytest.skip(f"the machine was loaded (load {load:.1f} on {cores} cores): no candidate "
                    "kept up, and the tool refused to choose, as it should")
    chosen = report["chosen"]
    assert code == 0 and chosen is not None
    assert chosen["accuracy"] >= max(m["accuracy"] for m in meeting) - 0.005
    engine = load_live_config([out]).engine
    assert engine.threads == 1 and engine.input_size == chosen["candidate"]["input_size"]
