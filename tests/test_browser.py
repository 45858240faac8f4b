"""The web app in a real headless Chromium: load the page, paint a keyframe, save, propagate,
see the results, correct a propagated frame into a keyframe. Screenshots of failures go to
test-artifacts/ (tests/conftest.py)."""

from __future__ import annotations

import shutil
import threading
import time

import cv2
import numpy as np
import pytest

from dataset.synthetic import make_synthetic_clip
from webapp.server import AppConfig, make_app_server

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
    ),
]

TOKEN = "browser-test-token"


@pytest.fixture
def served(tmp_path, parity_weights):
    """The app on a free local port over a 6-frame clip (keyframes 0 and 5), propagating with the
    parity weights (no finetuning)."""
    make_synthetic_clip(tmp_path / "ws", "clip", num_frames=6, size=(60, 84), keyframes=(0, 5), seed=2,
                        gt_root=tmp_path / "gt")  # fmt: skip
    server, app = make_app_server(AppConfig(tmp_path / "ws", tmp_path / "results", TOKEN, load=parity_weights, port=0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", tmp_path / "ws" / "clip"
    app.extensions["trimap_runner"].cancel()
    server.shutdown()


@pytest.fixture
def browser(tmp_path, request):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    request.node.browser = driver  # for the screenshot of a failure
    yield driver
    driver.quit()


def wait_for(driver, condition, timeout: float = 30, message: str = ""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition(driver)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {message}; status: {driver.find_element('id', 'status').text!r}")


def stroke(driver, element, points):
    """A mouse stroke over ``element`` through ``points`` (fractions of its width and height)."""
    from selenium.webdriver.common.action_chains import ActionChains

    size = element.size
    offsets = [(round((fx - 0.5) * size["width"]), round((fy - 0.5) * size["height"])) for fx, fy in points]
    actions = ActionChains(driver).move_to_element_with_offset(element, *offsets[0]).click_and_hold()
    for (x0, y0), (x1, y1) in zip(offsets, offsets[1:]):
        actions = actions.move_by_offset(x1 - x0, y1 - y0)
    actions.release().perform()


def source_of(driver) -> str:
    return driver.find_element("id", "frame-source").get_attribute("data-source")


def test_paint_save_propagate_review_and_correct(served, browser):
    url, clip = served
    before = cv2.imread(str(clip / "00000_trimap.png"), cv2.IMREAD_GRAYSCALE)
    browser.get(f"{url}/?token={TOKEN}")
    wait_for(browser, lambda d: source_of(d) == "keyframe", message="the first keyframe to load")
    assert browser.find_element("css selector", "#clips li[data-clip='clip']").get_attribute("class") == "selected"

    # paint foreground across the top left of keyframe 00000, then save it
    browser.find_element("id", "brush-fg").click()
    overlay = browser.find_element("id", "overlay-canvas")
    stroke(browser, overlay, [(0.08, 0.1), (0.3, 0.1), (0.3, 0.2)])
    assert "edited, not saved" in browser.find_element("id", "frame-source").text
    browser.find_element("id", "save").click()
    wait_for(browser, lambda d: "saved" in d.find_element("id", "status").text, message="the save")
    after = cv2.imread(str(clip / "00000_trimap.png"), cv2.IMREAD_GRAYSCALE)
    assert set(np.unique(after)) <= {0, 128, 255}
    painted = (after == 255) & (before != 255)
    assert painted[:15, :30].sum() > 20, "the stroke reached the file"
    assert (clip / "00000_trimap.orig.png").exists()

    # propagate, wait for the job, and see the propagated frames
    browser.find_element("id", "run-propagate").click()
    wait_for(browser, lambda d: d.find_element("id", "job-state").get_attribute("data-state") == "done",
             timeout=180, message="the propagation job")  # fmt: skip
    wait_for(browser, lambda d: d.execute_script("return window.trimapApp.clip.result.fused.length") == 6,
             message="the fused frames")  # fmt: skip
    assert browser.find_element("id", "uncertainty-figure").is_displayed()
    browser.find_element("id", "next").click()  # frame 00001: propagated
    wait_for(browser, lambda d: source_of(d) == "propagated", message="a propagated frame")
    labels = browser.execute_script("return Array.from(window.trimapApp.labels)")
    assert set(labels) <= {0, 1, 2} and len(labels) == 60 * 84

    # correct the propagated frame and save it: it becomes a keyframe
    browser.find_element("id", "brush-bg").click()
    stroke(browser, overlay, [(0.9, 0.9), (0.7, 0.9)])
    browser.find_element("id", "save").click()
    wait_for(browser, lambda d: source_of(d) == "keyframe", message="the corrected frame to become a keyframe")
    assert (clip / "00001_trimap.png").exists()
    timeline = browser.find_element("id", "timeline")
    stroke(browser, timeline, [(3.5 / 6, 0.5)])  # a click on frame 00003 of the timeline
    wait_for(browser, lambda d: d.execute_script("return window.trimapApp.index") == 3, message="frame 3")
