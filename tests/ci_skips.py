"""In CI (``CI=true``) a test skipped for a missing system package fails the run.

Device tests skip, with the install line, where PortAudio, PulseAudio or ffmpeg is missing, so a
laptop without them still passes. In CI those packages are installed by ``.ci/run``; if that
failed, the skips would leave CI green while the microphone and network-camera paths went
untested. This plugin (loaded by ``tests/conftest.py``) turns such a skip into a failure unless
its reason is in :data:`EXPECTED`, the explicit allow-list of skips CI may show.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator
from typing import Any

import pytest

#: A skip reason that names a missing system package or audio stack.
SYSTEM_PACKAGE = re.compile(r"apt-get install|PulseAudio|PortAudio|ffmpeg|libportaudio",
                            re.IGNORECASE)

#: Skips CI may show (a text of the reason -> why it is expected there).
EXPECTED = {
    "needs a CUDA GPU": "CI machines have no GPU",
    "CuPy is not installed": "the gpu extra is not installed without a GPU",
    "this machine has audio input devices besides PulseAudio":
        "the no-input-device test needs a machine without sound cards",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unexpected(reason: str) -> bool:
    """A skip for a missing system package that is not on the allow-list."""
    return bool(SYSTEM_PACKAGE.search(reason)) and not any(ok in reason for ok in EXPECTED)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]
                              ) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not (report.skipped and in_ci() and isinstance(report.longrepr, tuple)):
        return
    reason = str(report.longrepr[2])
    if unexpected(reason):
        report.outcome = "failed"
        report.longrepr = (f"CI=true: skipped for a missing system package ({reason}); "
                           ".ci/run installs it (see CONTRIBUTING.md, system packages), or add "
                           "the reason to EXPECTED in tests/ci_skips.py")
