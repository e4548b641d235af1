"""The README's main command: the shipped demo model on the synthetic live scene."""

from __future__ import annotations

import re

from pcmanet.assets import DEMO_CHECKPOINT
from pcmanet.smoke import main
from tests.conftest import REPO


def test_shipped_demo_model_segments_the_demo_scene(capsys):
    assert DEMO_CHECKPOINT.is_file(), "the demo checkpoint ships with the package"
    assert main(["--seconds", "7"]) == 0                      # streaming == clip mode
    out = capsys.readouterr().out
    ious = [float(x) for x in re.findall(r"IoU (\d\.\d+)", out)]
    assert len(ious) == 3
    # t = 5, 6, 7 s of seed 7: one object sounds throughout; the model finds it.
    assert min(ious) > 0.5, out


def test_random_weight_config_runs(capsys):
    config = str(REPO / "configs" / "test_tiny.yaml")
    assert main(["--config", config, "--seconds", "5", "--size", "64"]) == 0
    assert "random weights" in capsys.readouterr().out
