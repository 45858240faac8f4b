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

    # the element as shown (a zoomed canvas is scaled by a CSS transform, which element.size leaves out)
    width, height = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]",
                                          element)  # fmt: skip
    offsets = [(round((fx - 0.5) * width), round((fy - 0.5) * height)) for fx, fy in points]
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


def labels_of(driver) -> np.ndarray:
    return np.array(driver.execute_script("return Array.from(window.trimapApp.labels)"), np.uint8)


def cutouts(driver) -> int:
    return int(driver.find_element("id", "cutout-state").get_attribute("data-done") or 0)


def test_box_strokes_zoom_undo_save_and_the_review_queue(served, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    url, clip = served
    browser.get(f"{url}/?token={TOKEN}")
    wait_for(browser, lambda d: source_of(d) == "keyframe", message="the first keyframe to load")
    thumbs = browser.find_elements("css selector", "#strip img")
    assert len(thumbs) == 6
    thumbs[2].click()  # frame 00002: no trimap yet
    wait_for(browser, lambda d: d.execute_script("return window.trimapApp.index") == 2 and source_of(d) == "none",
             message="frame 2 from the strip")  # fmt: skip
    wait_for(browser, lambda d: d.execute_script("return document.querySelector('#strip img').naturalWidth") > 0,
             message="a thumbnail")  # fmt: skip
    body = browser.find_element("tag name", "body")
    overlay = browser.find_element("id", "overlay-canvas")

    # a box around the middle: GrabCut cuts something out, with a band
    body.send_keys("x")
    stroke(browser, overlay, [(0.15, 0.1), (0.85, 0.9)])
    wait_for(browser, lambda d: cutouts(d) == 1, message="the cut-out from the box")
    from_box = labels_of(browser)
    assert set(np.unique(from_box)) == {0, 1, 2}
    assert (from_box.reshape(60, 84)[:, :5] == 0).all()  # outside the box: background
    # a "not the subject" stroke: the cut-out is made again and the stroke is background
    body.send_keys("h")
    stroke(browser, overlay, [(0.45, 0.45), (0.55, 0.5)])
    wait_for(browser, lambda d: cutouts(d) == 2, message="the cut-out with a stroke")
    strokes = np.array(browser.execute_script("return Array.from(window.trimapApp.strokes)"), np.uint8)
    assert (strokes == 2).sum() > 5 and (labels_of(browser)[strokes == 2] == 0).all()

    # undo and redo with the keys
    ActionChains(browser).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL).perform()
    assert np.array_equal(labels_of(browser), from_box)
    ActionChains(browser).key_down(Keys.CONTROL).key_down(Keys.SHIFT).send_keys("z").key_up(Keys.SHIFT).key_up(
        Keys.CONTROL).perform()  # fmt: skip
    assert not np.array_equal(labels_of(browser), from_box)

    # zoom in with the wheel, back to fit with 0; painting still lands where the pointer is
    fitted = browser.execute_script("return window.trimapApp.zoom")
    browser.execute_script(
        "document.getElementById('stage').dispatchEvent(new WheelEvent('wheel', {deltaY: -500, clientX: 300, "
        "clientY: 300, bubbles: true, cancelable: true}))"
    )
    assert browser.execute_script("return window.trimapApp.zoom") > 1.5 * fitted
    body.send_keys("0")
    assert abs(browser.execute_script("return window.trimapApp.zoom") - fitted) < 1e-6
    body.send_keys("f")
    before = labels_of(browser).reshape(60, 84)
    stroke(browser, overlay, [(0.05, 0.9), (0.12, 0.95)])  # the bottom-left corner
    painted = (labels_of(browser).reshape(60, 84) == 2) & (before != 2)
    assert painted[45:, :15].sum() > 3 and painted[:30].sum() == 0

    # save with S: the file is the page's trimap
    body.send_keys("s")
    wait_for(browser, lambda d: source_of(d) == "keyframe", message="the save")
    saved = cv2.imread(str(clip / "00002_trimap.png"), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(np.array([0, 128, 255], np.uint8)[labels_of(browser).reshape(60, 84)], saved)

    # propagate, then R steps through the frames worst first, keyframes left out
    browser.find_element("id", "run-propagate").click()
    wait_for(browser, lambda d: d.find_element("id", "job-state").get_attribute("data-state") == "done",
             timeout=180, message="the propagation job")  # fmt: skip
    wait_for(browser, lambda d: d.execute_script("return window.trimapApp.review.length") == 3,
             message="the review queue (frames 1, 3 and 4)")  # fmt: skip
    queue = browser.execute_script("return window.trimapApp.review")
    scores = browser.execute_script("return window.trimapApp.clip.result.uncertainty.frames")
    assert queue == sorted(queue, key=lambda s: -scores[s]) and set(queue) == {"00001", "00003", "00004"}
    shown = "return window.trimapApp.clip.stems[window.trimapApp.index]"
    for expected in queue[:2]:
        body.send_keys("r")
        wait_for(browser, lambda d, e=expected: d.execute_script(shown) == e, message=f"review frame {expected}")
    assert "review 2/3" in browser.find_element("id", "review-state").text


@pytest.fixture
def served_random(tmp_path):
    """The app finetuning from random weights (a config without TRAIN.LOAD_CKPT, as template.yaml)."""
    make_synthetic_clip(tmp_path / "ws", "clip", num_frames=6, size=(60, 84), keyframes=(0, 5), seed=2,
                        gt_root=tmp_path / "gt")  # fmt: skip
    cfg = tmp_path / "my.yaml"
    cfg.write_text("TRAIN:\n  BASE_LR: 1.0e-6\n")
    server, app = make_app_server(AppConfig(tmp_path / "ws", tmp_path / "results", TOKEN, cfg=cfg, port=0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    app.extensions["trimap_runner"].cancel()
    server.shutdown()


def test_a_newcomer_sees_the_random_start_the_warnings_and_what_a_cut_out_made(served_random, browser):
    browser.get(f"{served_random}/?token={TOKEN}")
    wait_for(browser, lambda d: source_of(d) == "keyframe", message="the first keyframe to load")
    # the network's start is said in the page, not only in a job's log
    note = wait_for(browser, lambda d: d.find_element("id", "start-note").text, message="the random-start note")
    assert "RANDOM weights" in note and browser.find_element("id", "start-note").is_displayed()
    # finetuning is set from the page, proposed for a random start
    browser.find_element("css selector", "#run-settings summary").click()
    rate = browser.find_element("id", "set-finetune_lr")
    assert rate.is_enabled() and float(rate.get_attribute("value")) == 1e-4
    assert browser.find_element("id", "set-finetune_schedule").get_attribute("value") == "poly"
    # a small box gets a band in proportion, and a cut-out on a frame without a trimap is a new trimap
    browser.find_elements("css selector", "#strip img")[2].click()
    wait_for(browser, lambda d: source_of(d) == "none", message="frame 2")
    browser.find_element("tag name", "body").send_keys("x")
    stroke(browser, browser.find_element("id", "overlay-canvas"), [(0.4, 0.35), (0.6, 0.65)])
    wait_for(browser, lambda d: cutouts(d) == 1, message="the cut-out from the box")
    assert int(browser.find_element("id", "band").get_attribute("value")) < 10, "a 17x18 px box: a narrow band"
    assert browser.find_element("id", "frame-source").text == "new trimap, not saved"
    # a job that ended with warnings says so, and lists them where they cannot scroll out
    browser.execute_script(
        "showJob({id: 9, clip: 'clip', kind: 'matte', state: 'done', stage: 2, stages: 2, step: 'tgm.py encode', "
        "progress: null, message: 'finished', log: [], seconds: 10.1, warning_count: 1, "
        "warnings: ['matte: 5 of 6 frames: no sure foreground: alpha 0 (00001, 00002, 00003, 00004, 00005)']})"
    )
    state = browser.find_element("id", "job-state")
    assert "done with 1 warning" in state.text and state.get_attribute("class") == "warning"
    assert "no sure foreground" in browser.find_element("id", "job-warnings").text
    # the download link is styled like the buttons, not the browser's blue
    browser.execute_script("document.getElementById('download-video').hidden = false")
    colour = browser.execute_script("return getComputedStyle(document.getElementById('download-video')).color")
    assert colour not in ("rgb(0, 0, 238)", "rgb(85, 26, 139)"), colour
