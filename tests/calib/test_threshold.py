"""calib.threshold: the sweep on generated AVSBench-layout data, the recommendation rule and
the fragment that run_live accepts."""

from __future__ import annotations

import json

import pytest

from calib.threshold import Setting, main, parse_thresholds, recommend
from stream.run.config import load_live_config

ROWS = [Setting(0.6, 0.80, 0.90, 0.01, 40.0), Setting(0.9, 0.83, 0.91, 0.05, 45.0),
        Setting(0.99, 0.834, 0.92, 0.20, 60.0), Setting(0.995, 0.836, 0.92, 0.30, 70.0)]


def test_recommend_takes_the_fewest_queries_within_the_allowed_drop():
    assert recommend(ROWS, max_miou_drop=0.005).threshold == 0.99
    assert recommend(ROWS, max_miou_drop=0.01).threshold == 0.9
    assert recommend(ROWS, max_miou_drop=0.0).threshold == 0.995


def test_recommend_with_a_time_target_takes_the_most_accurate_within_it():
    assert recommend(ROWS, target_ms=50).threshold == 0.9
    assert recommend(ROWS, target_ms=100).threshold == 0.995
    with pytest.raises(ValueError, match="no threshold runs within 30 ms"):
        recommend(ROWS, target_ms=30)


def test_thresholds_outside_the_cim_range_are_refused():
    assert parse_thresholds("0.9, 0.6,0.9") == [0.6, 0.9]
    for bad in ("0.4", "1.0", "a,b", ""):
        with pytest.raises(Exception, match="--thresholds"):
            parse_thresholds(bad)


def test_sweep_on_generated_data_writes_a_fragment_run_live_accepts(s4_small, tmp_path, capsys):
    out, js = tmp_path / "th.yaml", tmp_path / "th.json"
    assert main(["--data-root", str(s4_small), "--task", "s4", "--split", "val",
                 "--thresholds", "0.6,0.9,0.995", "--out", str(out), "--json", str(js)]) == 0
    report = json.loads(js.read_text())
    rows = {s["threshold"]: s for s in report["settings"]}
    assert sorted(rows) == [0.6, 0.9, 0.995] and report["clips"] == 8
    # a higher threshold marks more tokens uncertain: more queries are computed
    assert rows[0.6]["keep_ratio"] < rows[0.995]["keep_ratio"]
    for s in rows.values():
        assert 0 <= s["miou"] <= 1 and 0 <= s["fscore"] <= 1 and s["ms_per_clip"] > 0
    # the demo model segments the generated clips (it was trained on data like them)
    assert max(s["miou"] for s in rows.values()) > 0.5
    chosen = report["recommended"]["threshold"]
    assert load_live_config([out]).engine.cim_threshold == chosen
    assert "recommended: cim_threshold" in capsys.readouterr().out


def test_missing_data_is_one_error_line(tmp_path, capsys):
    assert main(["--data-root", str(tmp_path / "nowhere"), "--thresholds", "0.9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nowhere" in err
