"""The viewer's page in a real headless browser (Debian's chromium and chromium-driver, driven
by selenium): known frames and masks published through the real MaskPublisher on 127.0.0.1,
the viewer in its own process, the page's canvas read back and compared pixel by pixel.

Skips, with the command that installs them, where chromium or chromedriver is missing.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest

from stream.transport.frames import FrameOptions
from stream.transport.publish import MaskPublisher
from tests.stream.view_helpers import (
    FRAME,
    MASK_BOX,
    Feeder,
    H,
    W,
    frozen_clock,
    mask_for,
    viewer,
    wait_for,
)

pytestmark = [pytest.mark.races, pytest.mark.slow]

INSTALL = "apt-get install -y --no-install-recommends chromium chromium-driver"
MOVED_BOX = (10, 50, 100, 150)                 # the mask after the publisher restarts
LATE_BOX = (60, 110, 20, 70)                   # the masks-only stream's mask


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip(f"needs chromium and chromedriver: {INSTALL}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("needs selenium: pip install -c constraints.txt -e '.[dev]'")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1000,800", "--disable-background-timer-throttling"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver: Any, page: str) -> None:
    driver.get(page)
    wait_for("the page's WebSocket to open",
             lambda: driver.execute_script("return document.body.dataset.ws") == "open")


def tile(driver: Any, key: str) -> dict[str, Any] | None:
    """The tile of stream ``key`` as the page shows it: its canvas (decoded to BGR), the seq
    drawn, whether it had a frame, its state and figures; None before its first picture."""
    got = driver.execute_script("""
        const t = document.querySelector(`.tile[data-stream="${arguments[0]}"]`);
        if (!t) return null;
        const c = t.querySelector("canvas");
        if (c.dataset.seq === "-1") return null;
        const figs = {};
        t.querySelectorAll("[data-fig]").forEach((e) => { figs[e.dataset.fig] = e.textContent; });
        return {png: c.toDataURL("image/png"), seq: Number(c.dataset.seq),
                hasFrame: c.dataset.hasFrame === "true", state: t.dataset.state || "", figs};
    """, key)
    if got is None:
        return None
    raw = base64.b64decode(got.pop("png").split(",", 1)[1])
    got["image"] = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    return got


def tinted(img: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """(h, w, 3) BGR shown, (h, w, 3) BGR frame under it -> (h, w) bool: nearer to the tint
    draw_overlay gives (half frame, half green) than to the frame itself."""
    shown, under = img.astype(int), frame.astype(int)
    tint = under // 2 + np.array([0, 100, 0])
    return np.abs(shown - tint).sum(-1) < np.abs(shown - under).sum(-1)


def tint_matches(img: np.ndarray, box: tuple[int, int, int, int],
                 frame: np.ndarray = FRAME) -> bool:
    """Tinted everywhere inside ``box`` (2 px in from its edge: JPEG blurs edges) and nowhere
    outside it (3 px out: the outline)."""
    t = tinted(img, frame)
    r0, r1, c0, c1 = box
    outside = np.ones_like(t)
    outside[max(0, r0 - 3):r1 + 3, max(0, c0 - 3):c1 + 3] = False
    return bool(t[r0 + 2:r1 - 2, c0 + 2:c1 - 2].all() and not t[outside].any())


@pytest.fixture
def publisher() -> Iterator[MaskPublisher]:
    with MaskPublisher("tcp://127.0.0.1:*", "cam0", sndhwm=50, frames=FrameOptions(),
                       stats_interval_s=0.2, clock=frozen_clock) as pub:
        yield pub


def test_the_overlay_lies_where_the_published_mask_is(browser: Any,
                                                      publisher: MaskPublisher) -> None:
    assert publisher.endpoint is not None
    with Feeder(publisher) as feed, viewer([publisher.endpoint]) as page:
        feed.set("cam0", mask_for(MASK_BOX), FRAME)
        open_page(browser, page)
        shown = wait_for("cam0 drawn over its frame", lambda: (
            t := tile(browser, "cam0")) and t["hasFrame"] and t)
        img = shown["image"]
        assert img.shape == (H, W, 3)
        assert tint_matches(img, MASK_BOX)
        # the frame is the background: blue-ish left half, grey right half, outside the mask
        assert np.abs(img[5, 10].astype(int) - FRAME[5, 10]).max() < 25
        assert np.abs(img[H - 5, W - 10].astype(int) - FRAME[H - 5, W - 10]).max() < 25
        # inside: half frame, half green, as draw_overlay mixes them
        expect = 0.5 * FRAME[60, 100] + 0.5 * np.array([0, 200, 0])
        assert np.abs(img[60, 100].astype(int) - expect).max() < 25
        assert shown["state"] == "live"
        figs = shown["figs"]
        assert (figs["keep_ratio"], figs["audio_lag_ms"], figs["latency_ms"]) == \
            ("0.75", "5", "15")


def test_the_figures_update(browser: Any, publisher: MaskPublisher) -> None:
    assert publisher.endpoint is not None
    with Feeder(publisher) as feed, viewer([publisher.endpoint]) as page:
        feed.set("cam0", mask_for(MASK_BOX), FRAME)
        open_page(browser, page)
        first = wait_for("cam0's figures", lambda: (t := tile(browser, "cam0")) and
                         t["figs"]["masks"] not in ("", "0") and t)
        wait_for("more masks counted", lambda: int(
            tile(browser, "cam0")["figs"]["masks"]) >= int(first["figs"]["masks"]) + 5)
        later = tile(browser, "cam0")
        assert later is not None and later["seq"] > first["seq"]
        assert int(later["figs"]["seq"]) > int(first["figs"]["seq"])
        wait_for("FPS out shown", lambda: float(tile(browser, "cam0")["figs"]["fps_out"]) > 0)


def test_a_late_masks_only_stream_appears_on_black(browser: Any,
                                                   publisher: MaskPublisher) -> None:
    assert publisher.endpoint is not None
    with Feeder(publisher) as feed, viewer([publisher.endpoint]) as page:
        feed.set("cam0", mask_for(MASK_BOX), FRAME)
        open_page(browser, page)
        wait_for("cam0 drawn", lambda: tile(browser, "cam0"))
        assert tile(browser, "late") is None
        publisher.add_stream("late")
        feed.set("late", mask_for(LATE_BOX), None)
        late = wait_for("the late stream, live", lambda: (
            t := tile(browser, "late")) and t["state"] == "live" and t)
        assert not late["hasFrame"]
        img = late["image"]
        assert tint_matches(img, LATE_BOX, np.zeros_like(FRAME))
        outside = np.ones((H, W), bool)
        outside[LATE_BOX[0] - 3:LATE_BOX[1] + 3, LATE_BOX[2] - 3:LATE_BOX[3] + 3] = False
        assert img[outside].max() < 40          # black around it (JPEG rings a little)
        names = browser.execute_script(
            "return [...document.querySelectorAll('.tile')].map((t) => t.dataset.stream)")
        assert names == ["cam0", "late"]


def test_a_restarted_publisher_resumes_without_a_reload(browser: Any) -> None:
    first = MaskPublisher("tcp://127.0.0.1:*", "cam0", sndhwm=50, frames=FrameOptions(),
                          stats_interval_s=0.2, clock=frozen_clock).start()
    url = first.endpoint
    assert url is not None
    try:
        with viewer([url], "--stale-s", "1") as page:
            with Feeder(first) as feed:
                feed.set("cam0", mask_for(MASK_BOX), FRAME)
                open_page(browser, page)
                wait_for("the first run drawn", lambda: (t := tile(browser, "cam0")) and
                         t["hasFrame"] and tint_matches(t["image"], MASK_BOX))
            first.stop()
            wait_for("the tile to say it is reconnecting",
                     lambda: tile(browser, "cam0")["state"] == "reconnecting")
            with MaskPublisher(url, "cam0", sndhwm=50, frames=FrameOptions(),
                               stats_interval_s=0.2, clock=frozen_clock) as second, \
                    Feeder(second) as feed:
                feed.set("cam0", mask_for(MOVED_BOX), FRAME)
                wait_for("the restarted run drawn, live", lambda: (
                    t := tile(browser, "cam0")) and t["state"] == "live" and t["hasFrame"]
                    and tint_matches(t["image"], MOVED_BOX))
    finally:
        first.stop()
