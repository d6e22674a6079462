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
import time
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
    # Phones allowed: the 390x844 run gets the stacked one-column page, not the gate.
    create_study(run, study, resolution=512, trials_per_participant=N_TRIALS, validation=1,
                 allow_phone=True, progress=False)
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
        for old in ARTIFACTS.glob(f"survey_{name}_*.png"):  # a previous run's steps
            old.unlink()

    def by_id(self, element_id: str):
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.ID, element_id)

    def shot(self, what: str) -> None:
        self.step += 1
        path = ARTIFACTS / f"survey_{self.name}_{self.step:02d}_{what}.png"
        self.d.save_screenshot(str(path))
        assert path.stat().st_size > 1000

    def votes(self):
        """This participant's stored answers, the practice one included."""
        df = export_votes(self.study, include_practice=True)
        return df[df["external_id"] == self.name]

    def tap_images(self, progress_text: str) -> None:
        """Tap (or click) every visible image: no answer is stored, the page stays."""
        before = len(self.votes())
        for p in self.panes():
            if p["shown"]:
                self.tap(p["bx"] + p["bw"] * 0.3, p["by"] + p["bh"] * 0.6)
        assert len(self.votes()) == before and self.progress().text == progress_text

    def use(self, element_id: str, key: str) -> None:
        """A control as this device would use it: a tap on the phone, the key on the desktop."""
        if DEVICES[self.device]["touch"]:
            self.control(element_id)
        else:
            self.press(key)

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
            "const e = document.getElementById(arguments[0]); e.scrollIntoView({block: 'center'});"
            "const r = e.getBoundingClientRect();"
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
    """Where each image sits inside its pane (x, y in CSS px) and its scale."""
    return [(p["ix"] - p["bx"], p["iy"] - p["by"], p["iw"] / p["w"]) for p in panes]


def _assert_in_sync(panes: list[dict], dpr: float) -> None:
    """Every pane shows the same view: same scale, same place to within one device pixel
    (each image is snapped to whole device pixels of its own, possibly fractional, pane)."""
    (x0, y0, s0), *rest = _offsets(panes)
    for x, y, s in rest:
        assert s == pytest.approx(s0, rel=1e-6)
        assert abs(x - x0) < 1 / dpr and abs(y - y0) < 1 / dpr


def _screen_matches_image(visit: Visit, pane: dict, dpr: float, snapped: bool = True) -> None:
    """The screenshot (in device pixels) inside the pane equals the image file's pixels.

    ``snapped``: the script placed the image on whole device pixels (without it, HTML alone
    centres the crop and the image may sit half a pixel off; nearest-neighbour drawing
    keeps its pixels exact).
    """
    import urllib.request

    import cv2

    # The image as served, fetched with the browser's session cookie (tokens are per person).
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in visit.d.get_cookies())
    request = urllib.request.Request(visit.server.url + pane["href"], headers={"Cookie": cookie})
    with urllib.request.urlopen(request, timeout=10) as resp:
        body = resp.read()
    src = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    shot = cv2.imdecode(np.frombuffer(visit.d.get_screenshot_as_png(), np.uint8), cv2.IMREAD_COLOR)
    assert src.shape[:2] == (pane["h"], pane["w"])
    assert shot.shape[1] == round(DEVICES[visit.device]["width"] * dpr)
    dev = {k: pane[k] * dpr for k in ("ix", "iy", "bx", "by", "bw", "bh")}  # device px
    ix, iy = round(dev["ix"]), round(dev["iy"])
    if snapped:
        assert abs(dev["ix"] - ix) < 1e-3 and abs(dev["iy"] - iy) < 1e-3, "not on whole device pixels"
    # The visible part: inside the pane and inside the image, one pixel in from either's
    # edges (Chrome blends the outermost row of a drawn image and a fractional pane edge
    # with the background); the caption (top left) is left out.
    x0 = int(np.ceil(max(dev["bx"], ix))) + 1
    y0 = int(np.ceil(max(dev["by"] + 40 * dpr, iy))) + 1
    x1 = int(np.floor(min(dev["bx"] + dev["bw"], ix + pane["w"]))) - 1
    y1 = int(np.floor(min(dev["by"] + dev["bh"], iy + pane["h"]))) - 1
    assert x1 - x0 > 200 and y1 - y0 > 200
    seen = shot[y0:y1, x0:x1].astype(int)
    # Exact pixels; the place may differ from the layout box by one device pixel (Chrome
    # snaps a layer at a fractional device position when painting).
    errors = {(dx, dy): np.abs(seen - src[y0 - iy + dy:y1 - iy + dy,
                                          x0 - ix + dx:x1 - ix + dx].astype(int)).max()
              for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    assert min(errors.values()) <= 1, errors


@pytest.mark.browser
@pytest.mark.parametrize("device", list(DEVICES))
def test_participant_inspects_and_votes(site, device):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec

    driver = _driver(device)
    dev = DEVICES[device]
    name = f"browser_{device}"
    v = Visit(driver, site, device, name)
    try:
        driver.get(f"{v.server.url}/?pid={name}")
        assert driver.execute_script("return [innerWidth, innerHeight, devicePixelRatio]") \
            == [dev["width"], dev["height"], dev["dpr"]]
        v.shot("consent")
        v.by_id("consent").click()
        v.control("start")

        # --- Practice: badged, not scored, feedback afterwards; a tap answers nothing.
        progress = v.progress()
        assert progress.text == "Practice" and "badge" in progress.get_attribute("class")
        v.wait_images()
        v.shot("practice")
        v.tap_images("Practice")
        preload = driver.execute_script(
            "return Array.from(document.querySelectorAll('link[rel=preload][as=image]'))"
            ".map(l => l.getAttribute('href'))")
        v.control("choose-left")
        v.wait.until(ec.presence_of_element_located(("id", "practice-feedback")))
        v.shot("practice_feedback")
        v.control("continue")

        # --- Trial 1 at 1:1 around the hole, both sides in sync, pixel exact on screen.
        progress = v.progress()
        assert progress.text == f"1 of {N_TRIALS}"
        v.wait_images()
        panes = v.panes()
        assert [p["href"] for p in panes] == preload  # the practice page preloaded this pair
        _assert_one_to_one(panes, dev["dpr"], driver.execute_async_script(NATURAL_JS))
        _assert_in_sync(panes, dev["dpr"])
        viewer = v.by_id("viewer")
        cx, cy = int(viewer.get_attribute("data-cx")), int(viewer.get_attribute("data-cy"))
        for p in panes:  # the crop centre lands in the middle of the pane (to a device pixel)
            assert p["ix"] + cx / dev["dpr"] == pytest.approx(p["bx"] + p["bw"] / 2, abs=1 / dev["dpr"])
            assert p["iy"] + cy / dev["dpr"] == pytest.approx(p["by"] + p["bh"] / 2, abs=1 / dev["dpr"])
        for p in panes:  # one image pixel on one device pixel, exactly
            _screen_matches_image(v, p, dev["dpr"])
        if dev["touch"]:  # phone: one column, the panes stacked
            assert panes[0]["bx"] == panes[1]["bx"] and panes[1]["by"] > panes[0]["by"] + panes[0]["bh"] - 1
        else:
            assert panes[0]["by"] == panes[1]["by"] and panes[1]["bx"] > panes[0]["bx"]
        v.shot("crop_1to1")
        v.tap_images(progress.text)

        # --- Loupe: zoom in (wheel / pinch), pan (drag / one finger); both sides follow.
        v.use("mode-loupe", "l")
        before = v.panes()
        assert before[0]["iw"] / before[0]["w"] == pytest.approx(2 / dev["dpr"], rel=1e-4)
        p = before[0]
        mx, my = p["bx"] + p["bw"] / 2, p["by"] + p["bh"] / 2
        if dev["touch"]:
            v.touch([[(mx - 20 * k, my), (mx + 20 * k, my)] for k in range(1, 6)])
        else:
            ActionChains(driver).scroll_from_origin(
                ScrollOrigin.from_viewport(int(mx), int(my)), 0, -300).perform()
        zoomed = v.panes()
        assert zoomed[0]["iw"] > before[0]["iw"] * 1.5
        _assert_in_sync(zoomed, dev["dpr"])
        if dev["touch"]:
            v.touch([[(mx, my)], [(mx + 30, my + 10)], [(mx + 60, my + 20)]])
        else:
            v.mouse("mousePressed", mx, my)
            v.mouse("mouseMoved", mx + 30, my + 10)
            v.mouse("mouseMoved", mx + 60, my + 20)
            v.mouse("mouseReleased", mx + 60, my + 20, buttons=0)
        dragged = v.panes()
        _assert_in_sync(dragged, dev["dpr"])
        assert dragged[0]["ix"] - zoomed[0]["ix"] == pytest.approx(60, abs=1)
        assert dragged[0]["iy"] - zoomed[0]["iy"] == pytest.approx(20, abs=1)
        v.shot("loupe")
        v.tap_images(progress.text)

        # --- The whole image, then back to the 1:1 crop.
        v.use("mode-full", "z")
        for p in v.panes():  # all of it inside the pane
            assert p["ix"] >= p["bx"] - 0.5 and p["ix"] + p["iw"] <= p["bx"] + p["bw"] + 0.5
            assert p["iy"] >= p["by"] - 0.5 and p["iy"] + p["ih"] <= p["by"] + p["bh"] + 0.5
        v.shot("whole_image")
        v.tap_images(progress.text)
        v.use("mode-crop", "c")
        assert _offsets(v.panes()) == pytest.approx(_offsets(panes))

        # --- Flicker: one slot, A and B in exactly the same place; F or the toggle swaps,
        # and in this mode a tap on the picture swaps too (and still answers nothing).
        v.use("mode-flicker", "f")
        a = v.panes()
        assert [p["shown"] for p in a] == [True, False]
        assert [a[0][k] for k in ("bx", "by", "bw", "bh")] == [a[1][k] for k in ("bx", "by", "bw", "bh")]
        _assert_in_sync(a, dev["dpr"])
        v.shot("flicker_A")
        v.use("flicker-toggle", "f")
        assert [p["shown"] for p in v.panes()] == [False, True]
        v.shot("flicker_B")
        v.tap_images(progress.text)
        assert [p["shown"] for p in v.panes()] == [True, False]

        # --- A hidden tab is timed (Page Visibility API): another tab in front for a while.
        first = driver.current_window_handle
        driver.switch_to.new_window("tab")
        time.sleep(0.6)
        driver.close()
        driver.switch_to.window(first)

        # --- Answer this one (still in flicker mode) by button, the rest by key and button.
        v.control("choose-right")
        for i in range(2, N_TRIALS + 1):
            v.wait.until(ec.staleness_of(progress))
            progress = v.progress()
            assert progress.text == f"{i} of {N_TRIALS}"
            v.wait_images()
            if i % 2:
                v.control("choose-right")
            else:
                v.press("1" if i % 4 == 2 else Keys.ARROW_LEFT)
            if i == 2:
                v.shot("answered_by_key")
        code = v.wait.until(ec.presence_of_element_located(("id", "completion-code"))).text
        v.shot("done")
        assert len(code) >= 6
    except Exception:
        v.shot("FAILED")
        raise
    finally:
        driver.quit()

    df = v.votes().sort_values("trial")
    assert df["kind"].tolist()[0] == "practice" and len(df) == N_TRIALS + 1
    assert df["choice"].tolist() == ["left"] + ["right", "left"] * (N_TRIALS // 2)
    assert df["rt_ms_client"].notna().all() and (df["dpr"] == dev["dpr"]).all()
    assert (df["viewport_w"] == dev["width"]).all() and (df["viewport_h"] == dev["height"]).all()
    inspected, plain = df.iloc[1], df.iloc[2:]
    assert inspected["display_mode"] == "flicker" and inspected["flicker_toggles"] == 2
    assert inspected["zoom_max"] > 3 and inspected["hidden_ms"] >= 400
    assert (plain["display_mode"] == "crop").all() and (plain["zoom_max"] == 1).all()
    assert (plain["flicker_toggles"] == 0).all() and (plain["hidden_ms"] == 0).all()


@pytest.mark.browser
def test_without_javascript(site):
    """Plain forms only: 1:1 crops around the hole by HTML/CSS alone, answers by the buttons."""
    from selenium.webdriver.support import expected_conditions as ec

    driver = _driver("desktop", javascript=False)
    name = "browser_nojs"
    v = Visit(driver, site, "desktop", name)
    try:
        driver.get(f"{v.server.url}/?pid={name}")
        v.by_id("consent").click()
        v.by_id("start").click()
        for i in range(N_TRIALS + 1):
            progress = v.progress()
            assert progress.text == ("Practice" if i == 0 else f"{i} of {N_TRIALS}")
            v.wait_images()
            # The page's own script did not run (WebDriver's probes still can).
            assert driver.execute_script("return document.documentElement.className") == ""
            assert not v.by_id("toolbar").is_displayed()
            panes = v.panes()
            _assert_one_to_one(panes, 1.0)
            viewer = v.by_id("viewer")
            cx, cy = int(viewer.get_attribute("data-cx")), int(viewer.get_attribute("data-cy"))
            for p in panes:  # x = y = 50 % and translate(-cx, -cy): the hole centre mid-pane
                assert p["ix"] + cx == pytest.approx(p["bx"] + p["bw"] / 2, abs=1)
                assert p["iy"] + cy == pytest.approx(p["by"] + p["bh"] / 2, abs=1)
                if i == 1:
                    _screen_matches_image(v, p, 1.0, snapped=False)
            if i <= 1:
                v.shot("practice" if i == 0 else "trial")
                v.tap_images(progress.text)
            v.by_id("choose-left" if i % 2 == 0 else "choose-right").click()
            if i == 0:
                v.wait.until(ec.presence_of_element_located(("id", "practice-feedback")))
                v.by_id("continue").click()
            else:
                v.wait.until(ec.staleness_of(progress))
        code = v.wait.until(ec.presence_of_element_located(("id", "completion-code"))).text
        v.shot("done")
        assert len(code) >= 6
    except Exception:
        v.shot("FAILED")
        raise
    finally:
        driver.quit()
    df = v.votes().sort_values("trial")
    assert len(df) == N_TRIALS + 1
    assert df["choice"].tolist() == ["left", "right"] * (N_TRIALS // 2) + ["left"]
    # Nothing measured in the page: those columns are empty, the server's own time is kept.
    for col in ("rt_ms_client", "viewport_w", "dpr", "display_mode", "zoom_max",
                "flicker_toggles", "hidden_ms"):
        assert df[col].isna().all(), col
    assert df["rt_ms_server"].notna().all()


@pytest.mark.browser
def test_phone_is_turned_away_politely_when_phones_are_not_allowed(tmp_path):
    """The consent page's script sends the viewport with Start; the study's gate answers."""
    from selenium.webdriver.support import expected_conditions as ec

    run = make_fake_run(tmp_path / "run", size=(96, 128))
    study = tmp_path / "study"
    create_study(run, study, resolution=128, trials_per_participant=4, validation=1,
                 progress=False)
    server = ServerProcess(study, threads=2, log_path=tmp_path / "server.log").start()
    driver = _driver("phone")
    v = Visit(driver, (server, study), "phone", "browser_gate")
    try:
        driver.get(f"{server.url}/?pid=browser_gate")
        v.by_id("consent").click()
        v.control("start")
        text = v.wait.until(ec.presence_of_element_located(("id", "small-screen"))).text
        v.shot("small_screen")
        assert "390" in text and "844" in text
    finally:
        driver.quit()
        server.stop()
    assert export_votes(study, include_practice=True).empty


@pytest.mark.browser
def test_admin_page_fits_a_phone(site):
    """Wide tables scroll inside their own box; the page itself never scrolls sideways."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    server, study = site
    driver = _driver("phone")
    v = Visit(driver, site, "phone", "browser_admin")
    try:
        driver.get(f"{server.url}/admin/")
        token = (study / "instance" / "admin_token").read_text(encoding="utf-8").strip()
        driver.find_element(By.NAME, "token").send_keys(token)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        v.wait.until(ec.presence_of_element_located(("id", "progress-table")))
        v.shot("admin")
        width = driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= DEVICES["phone"]["width"]
        assert driver.execute_script("return document.querySelectorAll('.table-wrap').length") >= 3
    finally:
        driver.quit()
