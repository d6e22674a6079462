"""Real browsers (Debian chromium + chromium-driver via selenium) take part in a study.

At 1366x768 (mouse, devicePixelRatio 1) and as a 390x844 phone (touch, devicePixelRatio 3):
consent -> practice -> inspect at 1:1, with the zoom/pan loupe, the A/B flicker and the whole
image -> vote by key and by button -> completion code. Taps and clicks on the images must
never store an answer (the database is read after each). A third run has JavaScript turned
off and completes the study through the plain forms. Screenshots of every step go to
``test-artifacts/`` at the repository root.

Skips cleanly when selenium, chromium or chromedriver are not installed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from survey_helpers import ServerProcess, make_fake_run

from survey_app.export import export_votes
from survey_app.study import create_study

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
N_TRIALS = 6
IMAGE_HW = (600, 800)  # larger than a desktop pane, so 1:1 crops and the whole view differ
DEVICES = {
    "desktop": {"width": 1366, "height": 768, "dpr": 1.0, "touch": False},
    "phone": {"width": 390, "height": 844, "dpr": 3.0, "touch": True},
}

# Geometry of every pane: the image element's box and the pane's box, in CSS px.
PANES_JS = """
return Array.from(document.querySelectorAll('.viewer .pane')).map(p => {
  const i = p.querySelector('image'), s = p.querySelector('svg');
  const a = i.getBoundingClientRect(), b = s.getBoundingClientRect();
  return {side: p.dataset.side, ix: a.left, iy: a.top, iw: a.width, ih: a.height,
          bx: b.left, by: b.top, bw: b.width, bh: b.height,
          shown: getComputedStyle(p).visibility === 'visible' && b.width > 0,
          w: +i.getAttribute('width'), h: +i.getAttribute('height'), href: i.getAttribute('href')};
});"""

# The decoded size of each image, to show that the width/height attributes are the real
# pixel size (so a CSS-box / attribute ratio is a CSS-px / image-px ratio).
NATURAL_JS = """
const done = arguments[arguments.length - 1];
Promise.all(Array.from(document.querySelectorAll('.viewer image')).map(i => {
  const im = new Image(); im.src = i.getAttribute('href');
  return im.decode().then(() => [im.naturalWidth, im.naturalHeight]);
})).then(done, e => done(String(e)));"""

LOADED_JS = """
const done = arguments[arguments.length - 1];
Promise.all(Array.from(document.querySelectorAll('.viewer image')).map(i => {
  const im = new Image(); im.src = i.getAttribute('href'); return im.decode();
})).then(() => done(true), () => done(false));"""


def _driver(device: str, javascript: bool = True):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.skip("Debian chromium + chromium-driver are not installed "
                    "(apt-get install -y chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    dev = DEVICES[device]
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--disable-sync", "--hide-scrollbars", "--window-size=1400,1000"):
        opts.add_argument(arg)
    # The viewport itself (not the window) gets the device's size and pixel ratio.
    opts.add_experimental_option("mobileEmulation", {"deviceMetrics": {
        "width": dev["width"], "height": dev["height"], "pixelRatio": dev["dpr"],
        "touch": dev["touch"], "mobile": dev["touch"]}})
    if not javascript:
        opts.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2})
    # An explicit driver path keeps Selenium Manager from trying to download one.
    return webdriver.Chrome(service=Service(chromedriver), options=opts)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    run = make_fake_run(tmp / "run", size=IMAGE_HW, resolution=512)
    study = tmp / "study"
    create_study(run, study, resolution=512, trials_per_participant=N_TRIALS, validation=1,
                 progress=False)
    server = ServerProcess(study, threads=4, log_path=tmp / "server.log").start()
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        yield server, study
    finally:
        server.stop()


class Visit:
    """One participant's browser, with the checks the tests share."""

    def __init__(self, driver, site, device: str, name: str):
        from selenium.webdriver.support.ui import WebDriverWait

        self.d, (self.server, self.study) = driver, site
        self.device, self.name = device, name
        self.wait = WebDriverWait(driver, 20)
        self.step = 0

    def by_id(self, element_id: str):
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.ID, element_id)

    def shot(self, what: str) -> None:
        self.step += 1
        path = ARTIFACTS / f"survey_{self.name}_{self.step:02d}_{what}.png"
        self.d.save_screenshot(str(path))
        assert path.stat().st_size > 1000

    def votes(self):
        df = export_votes(self.study)
        return df[df["external_id"] == self.name]

    def progress(self):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        return self.wait.until(ec.presence_of_element_located((By.ID, "progress")))

    def panes(self) -> list[dict]:
        return self.d.execute_script(PANES_JS)

    def wait_images(self) -> None:
        assert self.d.execute_async_script(LOADED_JS) is True

    def tap(self, x: float, y: float) -> None:
        """A short tap (touch) or click (mouse) at viewport CSS coordinates."""
        if DEVICES[self.device]["touch"]:
            self.touch([[(x, y)], [(x, y)]])
        else:
            self.mouse("mousePressed", x, y)
            self.mouse("mouseReleased", x, y)

    def mouse(self, kind: str, x: float, y: float, buttons: int = 1) -> None:
        self.d.execute_cdp_cmd("Input.dispatchMouseEvent", {
            "type": kind, "x": x, "y": y, "button": "left", "buttons": buttons,
            "clickCount": 1})

    def touch(self, frames: list[list[tuple[float, float]]]) -> None:
        """Fingers down at frames[0], through the middle frames, up after the last one."""
        def points(frame):
            return [{"x": x, "y": y, "id": k} for k, (x, y) in enumerate(frame)]
        self.d.execute_cdp_cmd("Input.dispatchTouchEvent",
                               {"type": "touchStart", "touchPoints": points(frames[0])})
        for frame in frames[1:]:
            self.d.execute_cdp_cmd("Input.dispatchTouchEvent",
                                   {"type": "touchMove", "touchPoints": points(frame)})
        self.d.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})

    def press(self, key: str) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.d).send_keys(key).perform()

    def control(self, element_id: str) -> None:
        """Use a control the way this device would: a tap on phones, a click with the mouse."""
        r = self.d.execute_script(
            "const r = document.getElementById(arguments[0]).getBoundingClientRect();"
            "return [r.left + r.width / 2, r.top + r.height / 2];", element_id)
        self.tap(*r)


def _assert_one_to_one(panes: list[dict], dpr: float, natural: list | None = None) -> None:
    """Each image drawn at 1/dpr CSS px per image px, i.e. one image pixel per device pixel."""
    for k, p in enumerate(panes):
        if natural is not None:
            assert natural[k] == [p["w"], p["h"]]
        assert p["iw"] / p["w"] == pytest.approx(1 / dpr, rel=1e-4)
        assert p["ih"] / p["h"] == pytest.approx(1 / dpr, rel=1e-4)


def _offsets(panes: list[dict]) -> list[tuple[float, float, float]]:
    """Where each image sits inside its pane (x, y, scale): equal when the views are in sync."""
    return [(round(p["ix"] - p["bx"], 3), round(p["iy"] - p["by"], 3), round(p["iw"] / p["w"], 5))
            for p in panes]


def _screen_matches_image(visit: Visit, pane: dict) -> None:
    """At devicePixelRatio 1 the screenshot inside the pane equals the image file's pixels."""
    import cv2
    import requests

    cookies = {c["name"]: c["value"] for c in visit.d.get_cookies()}
    body = requests.get(visit.server.url + pane["href"], cookies=cookies, timeout=10).content
    src = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    shot = cv2.imdecode(np.frombuffer(visit.d.get_screenshot_as_png(), np.uint8), cv2.IMREAD_COLOR)
    assert src.shape[:2] == (pane["h"], pane["w"])
    ix, iy = pane["ix"], pane["iy"]
    assert ix == int(ix) and iy == int(iy), "the image is not on whole pixels"
    # The visible part: inside the pane and inside the image, whole pixels only; the pane
    # caption (top left) is left out.
    x0 = int(np.ceil(max(pane["bx"], ix)))
    y0 = int(np.ceil(max(pane["by"] + 40, iy)))
    x1 = int(np.floor(min(pane["bx"] + pane["bw"], ix + pane["w"])))
    y1 = int(np.floor(min(pane["by"] + pane["bh"], iy + pane["h"])))
    assert x1 - x0 > 200 and y1 - y0 > 200
    seen = shot[y0:y1, x0:x1].astype(int)
    truth = src[y0 - int(iy):y1 - int(iy), x0 - int(ix):x1 - int(ix)].astype(int)
    assert np.abs(seen - truth).max() <= 1


@pytest.mark.browser
@pytest.mark.parametrize("device", list(DEVICES))
def test_participant_inspects_and_votes(site, device):
    driver = _driver(device)
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec

    dev = DEVICES[device]
    name = f"browser_{device}"
    try:
        v = Visit(driver, site, device, name)
        driver.get(f"{v.server.url}/?pid={name}")
        assert driver.execute_script("return [innerWidth, innerHeight, devicePixelRatio]") \
            == [dev["width"], dev["height"], dev["dpr"]]
        v.shot("consent")
        v.by_id("consent").click()
        v.control("start")
        progress = v.progress()
        v.wait_images()
        shown_hrefs = [p["href"] for p in v.panes()]

        # --- 1:1 crops around the hole, both sides in sync, pixel exact on a dpr 1 screen.
        panes = v.panes()
        _assert_one_to_one(panes, dev["dpr"], driver.execute_async_script(NATURAL_JS))
        assert len(set(_offsets(panes))) == 1
        cx, cy = (int(driver.find_element("id", "viewer").get_attribute(a)) for a in ("data-cx", "data-cy"))
        for p in panes:  # the crop centre lands in the middle of the pane (to a device pixel)
            assert p["ix"] + cx / dev["dpr"] == pytest.approx(p["bx"] + p["bw"] / 2, abs=1 / dev["dpr"])
            assert p["iy"] + cy / dev["dpr"] == pytest.approx(p["by"] + p["bh"] / 2, abs=1 / dev["dpr"])
        if dev["dpr"] == 1:
            for p in panes:
                _screen_matches_image(v, p)
        v.shot("crop_1to1")

        # --- Taps and clicks on the images never answer (also in every mode below).
        def tap_images():
            for p in v.panes():
                if p["shown"]:
                    v.tap(p["bx"] + p["bw"] * 0.3, p["by"] + p["bh"] * 0.6)
            assert v.votes().empty and v.progress().text == progress.text

        tap_images()

        # --- Loupe: zoom in (wheel / pinch), pan (drag / one finger); both sides follow.
        if dev["touch"]:
            v.control("mode-loupe")
        else:
            v.press("l")
        before = v.panes()
        assert before[0]["iw"] / before[0]["w"] == pytest.approx(2 / dev["dpr"], rel=1e-4)
        p = before[0]
        mx, my = p["bx"] + p["bw"] / 2, p["by"] + p["bh"] / 2
        if dev["touch"]:
            v.touch([[(mx - 20 * k, my), (mx + 20 * k, my)] for k in range(1, 6)])
        else:
            from selenium.webdriver.common.action_chains import ActionChains
            from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

            ActionChains(driver).scroll_from_origin(
                ScrollOrigin.from_viewport(int(mx), int(my)), 0, -300).perform()
        zoomed = v.panes()
        assert zoomed[0]["iw"] > before[0]["iw"] * 1.5
        assert len(set(_offsets(zoomed))) == 1
        if dev["touch"]:
            v.touch([[(mx, my)], [(mx + 30, my + 10)], [(mx + 60, my + 20)]])
        else:
            v.mouse("mousePressed", mx, my)
            v.mouse("mouseMoved", mx + 30, my + 10)
            v.mouse("mouseMoved", mx + 60, my + 20)
            v.mouse("mouseReleased", mx + 60, my + 20)
        dragged = v.panes()
        assert len(set(_offsets(dragged))) == 1
        assert dragged[0]["ix"] - zoomed[0]["ix"] == pytest.approx(60, abs=1)
        assert dragged[0]["iy"] - zoomed[0]["iy"] == pytest.approx(20, abs=1)
        v.shot("loupe")
        tap_images()

        # --- Whole image, then back to the 1:1 crop.
        if dev["touch"]:
            v.control("mode-full")
        else:
            v.press("z")
        full = v.panes()
        for p in full:  # all of it inside the pane
            assert p["ix"] >= p["bx"] - 0.5 and p["ix"] + p["iw"] <= p["bx"] + p["bw"] + 0.5
            assert p["iy"] >= p["by"] - 0.5 and p["iy"] + p["ih"] <= p["by"] + p["bh"] + 0.5
        v.shot("whole_image")
        tap_images()
        if dev["touch"]:
            v.control("mode-crop")
        else:
            v.press("c")
        assert _offsets(v.panes()) == _offsets(panes)

        # --- Flicker: one slot, A and B in exactly the same place; F or a tap swaps.
        if dev["touch"]:
            v.control("mode-flicker")
        else:
            v.press("f")
        a = v.panes()
        assert [p["shown"] for p in a] == [True, False]
        assert (a[0]["bx"], a[0]["by"], a[0]["bw"]) == (a[1]["bx"], a[1]["by"], a[1]["bw"])
        assert len(set(_offsets(a))) == 1
        v.shot("flicker_A")
        if dev["touch"]:
            v.control("flicker-toggle")
        else:
            v.press("f")
        assert [p["shown"] for p in v.panes()] == [False, True]
        v.shot("flicker_B")
        tap_images()  # in flicker mode a tap swaps back to A (and answers nothing)
        assert [p["shown"] for p in v.panes()] == [True, False]

        # --- A hidden tab is timed (Page Visibility API).
        first = driver.current_window_handle
        driver.switch_to.new_window("tab")
        driver.execute_script("return 1")
        import time

        time.sleep(0.6)
        driver.close()
        driver.switch_to.window(first)

        # --- Answer this one in flicker mode by button, then the rest by key and button.
        v.control("choose-right") if dev["touch"] else v.by_id("choose-right").click()
        for i in range(1, N_TRIALS):
            v.wait.until(ec.staleness_of(progress))
            progress = v.progress()
            assert progress.text == f"{i + 1} of {N_TRIALS}"
            v.wait_images()
            hrefs = [p["href"] for p in v.panes()]
            assert not set(hrefs) & set(shown_hrefs)
            shown_hrefs += hrefs
            tap_images() if i == 1 else None
            if i % 2:
                v.press("1" if i % 4 == 1 else Keys.ARROW_LEFT)
            else:
                v.control("choose-right")
            if i == 1:
                v.shot("answered_by_key")
        code = v.wait.until(ec.presence_of_element_located(("id", "completion-code"))).text
        v.shot("done")
        assert len(code) >= 6
    finally:
        driver.quit()

    df = v.votes().sort_values("trial_index")
    assert len(df) == N_TRIALS
    assert df["choice"].tolist() == ["right", "left", "right", "left", "right", "left"]
    assert df["rt_ms_client"].notna().all()
    assert (df["viewport_w"] == dev["width"]).all() and (df["viewport_h"] == dev["height"]).all()

