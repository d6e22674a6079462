"""A real browser (Debian chromium + chromium-driver via selenium) completes a study.

Skips cleanly when selenium, chromium or chromedriver are not installed. Screenshots of a
trial page and the completion page go to ``test-artifacts/`` at the repository root.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from survey_helpers import ServerProcess, make_fake_run

from survey_app.export import export_votes
from survey_app.study import create_study

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
N_TRIALS = 6


def _driver():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.skip("Debian chromium + chromium-driver are not installed "
                    "(apt-get install -y chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,900", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    # An explicit driver path keeps Selenium Manager from trying to download one.
    return webdriver.Chrome(service=Service(chromedriver), options=opts)


@pytest.mark.browser
def test_browser_completes_a_study(tmp_path):
    driver = _driver()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    run = make_fake_run(tmp_path / "run", size=(240, 320))
    study = tmp_path / "study"
    create_study(run, study, resolution=128, trials_per_participant=N_TRIALS, validation=1,
                 progress=False)
    server = ServerProcess(study, workers=4, log_path=tmp_path / "server.log").start()
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        wait = WebDriverWait(driver, 20)
        driver.get(f"{server.url}/?pid=browser_1")
        driver.find_element(By.ID, "consent").click()
        driver.find_element(By.ID, "start").click()
        for i in range(N_TRIALS):
            progress = wait.until(ec.presence_of_element_located((By.ID, "progress")))
            assert progress.text == f"{i + 1} of {N_TRIALS}"
            # Both images really load (decoded, non-zero size).
            wait.until(lambda d: d.execute_script(
                "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"))
            if i == 1:
                driver.save_screenshot(str(ARTIFACTS / "survey_trial.png"))
            if i % 3 == 0:
                driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
            elif i % 3 == 1:
                driver.find_element(By.TAG_NAME, "body").send_keys("2")
            else:
                driver.find_element(By.ID, "choose-right").click()
            wait.until(ec.staleness_of(progress))
        code = wait.until(ec.presence_of_element_located((By.ID, "completion-code"))).text
        driver.save_screenshot(str(ARTIFACTS / "survey_done.png"))
        assert len(code) == 10
        width, height = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    finally:
        driver.quit()
        server.stop()
    df = export_votes(study)
    assert len(df) == N_TRIALS and (df["external_id"] == "browser_1").all()
    assert df["choice"].tolist() == ["left", "right", "right"] * (N_TRIALS // 3)
    # JavaScript filled the hidden fields: response time in the page and the viewport.
    assert df["rt_ms_client"].notna().all()
    assert (df["viewport_w"] == width).all() and (df["viewport_h"] == height).all()
    assert (ARTIFACTS / "survey_trial.png").stat().st_size > 1000
