"""The web UI (issue 14 items 1-2): the CLI's pipeline behind the page, and a real headless Chromium that uploads a
bundled sample, moves the temperature slider, runs, and gets the CLI's pixels back; a bad upload shows the error.

Chromium and its driver come from Debian (the Makefile's test set-up installs them with apt-get); where they are
missing the browser test is skipped with a message saying so. Only 127.0.0.1 is ever served.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

gradio = pytest.importorskip(
    "gradio", reason="gradio is not installed: `make install` installs the [ui] extra"
)

from nightflow.cli import main  # noqa: E402
from nightflow.data.io import read_image, write_image  # noqa: E402
from nightflow.demo import samples  # noqa: E402
from nightflow.errors import UserError  # noqa: E402
from nightflow.ui import AUTO, AUTO_LABEL, Runner, bundled_models, launch  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MODEL = "lolisrflow-x2"


pytestmark = pytest.mark.usefixtures("one_thread")


def _cli(src: Path, out: Path, *extra: str) -> np.ndarray:
    assert main(["enhance", str(src), "--model", MODEL, "-o", str(out), "--quiet", *extra]) == 0
    return read_image(out)


def test_runner_writes_the_cli_files_16_bit_kept(tmp_path):
    src = tmp_path / "dark16.png"
    write_image(src, (read_image(samples()[0]).astype(np.uint16) * 257)[:48, :64])
    out = Runner(tmp_path / "ui").run(src, MODEL, 0.5, 0.0, 2, 3, True)
    assert read_image(out["main"]).dtype == np.uint16 and len(out["samples"]) == 2 and out["heat"].is_file()
    cli = _cli(
        src, tmp_path / "cli.png", "--temperature", "0.5", "--seed", "3", "--samples", "2", "--uncertainty"
    )
    assert np.array_equal(read_image(out["main"]), cli)
    for i, path in enumerate(out["samples"]):
        assert np.array_equal(read_image(path), read_image(tmp_path / f"cli_s0{i}.png"))
    assert not np.array_equal(read_image(out["samples"][0]), read_image(out["samples"][1]))
    assert bundled_models() and all(m["bundled"] for m in bundled_models())


def test_runner_at_temperature_0_draws_samples_at_the_models_own_as_the_cli_does_without_one(tmp_path):
    """The slider's 0 means the CLI's default (mean-path main output, samples at the model's own temperature),
    not --temperature 0, which would hand out copies of the main output and a blank heat-map."""
    src = tmp_path / "dark.png"
    write_image(src, read_image(samples()[0])[:40, :56])
    out = Runner(tmp_path / "ui").run(src, MODEL, 0.0, 0.0, 2, 5, False)
    a, b = (read_image(p) for p in out["samples"])
    assert not np.array_equal(a, b)
    assert np.array_equal(
        read_image(out["main"]), _cli(src, tmp_path / "cli.png", "--seed", "5", "--samples", "2")
    )
    assert np.array_equal(a, read_image(tmp_path / "cli_s00.png"))


def test_runner_auto_picks_the_jpeg_model_for_a_jpeg_upload_as_the_cli_does(tmp_path):
    from PIL import Image

    runner = Runner(tmp_path / "ui")
    crop = read_image(samples()[0])[:32, :40]
    png, jpg = tmp_path / "dark.png", tmp_path / "dark.jpg"
    write_image(png, crop)
    Image.fromarray(crop).save(jpg, quality=90)
    assert runner.run(png, AUTO, 0.0, 0.0, 0, 0, False, 2)["model"] == "lolisrflow-x2"
    out = runner.run(jpg, AUTO, 0.0, 0.0, 0, 0, False, 2)
    assert out["model"] == "lolisrflow-x2-jpeg"
    assert np.array_equal(read_image(out["main"]), _cli_auto(jpg, tmp_path / "cli.png"))


def _cli_auto(src: Path, out: Path) -> np.ndarray:
    assert main(["enhance", str(src), "-o", str(out), "--quiet"]) == 0
    return read_image(out)


def test_runner_refuses_bad_uploads_and_settings_with_the_cli_errors(tmp_path):
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"this is not a picture")
    runner = Runner(tmp_path / "ui")
    with pytest.raises(UserError, match="cannot read image"):
        runner.run(bad, MODEL, 0.0, 0.0, 0, 0, False)
    with pytest.raises(UserError, match="temperature must be a finite number"):
        runner.run(samples()[0], MODEL, 5.0, 0.0, 0, 0, False)


def test_runner_keeps_only_the_last_jobs_files(tmp_path, monkeypatch):
    monkeypatch.setattr("nightflow.ui.KEEP_JOBS", 2)
    src = tmp_path / "small.png"
    write_image(src, read_image(samples()[0])[:32, :32])
    runner = Runner(tmp_path / "ui")
    outs = [runner.run(src, MODEL, 0.0, 0.0, 0, 0, False)["main"] for _ in range(3)]
    assert [p.is_file() for p in outs] == [False, True, True]
    assert len([d for d in (tmp_path / "ui").iterdir() if d.is_dir()]) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    app = launch("127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "SKIPPED: no chromium/chromedriver (the Makefile installs them with apt-get where apt exists)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking"):
        options.add_argument(flag)
    options.add_argument("--window-size=1400,1200")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(driver, what, timeout: float = 90.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(what)


def _open(driver, url: str):
    from selenium.webdriver.common.by import By

    driver.get(url)
    return _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#upload input[type=file]"))


def _status(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, "#status").text


def test_browser_upload_slider_run_matches_the_cli(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    sample = samples()[0]
    _open(browser, server).send_keys(str(sample))
    _wait(browser, lambda d: sample.stem in d.find_element(By.CSS_SELECTOR, "#upload").text)  # name shown
    slider = browser.find_element(By.CSS_SELECTOR, "#temperature input[type=range]")
    # focus it (a click can land on a neighbouring slider's label in some layouts); Home then 10 steps of 0.05
    # right is 0.5 exactly
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].focus();", slider)
    slider.send_keys(Keys.HOME)
    for _ in range(10):
        slider.send_keys(Keys.ARROW_RIGHT)
    number = browser.find_element(By.CSS_SELECTOR, "#temperature input[type=number]")
    _wait(browser, lambda d: float(number.get_attribute("value")) == 0.5, timeout=10)
    started = time.monotonic()
    browser.find_element(By.CSS_SELECTOR, "#run").click()
    _wait(browser, lambda d: "done:" in _status(d) or "error" in _status(d))
    assert "done: 320×200 (×2, lolisrflow-x2)" in _status(browser), _status(browser)  # auto: a PNG
    images = browser.find_elements(By.CSS_SELECTOR, "#compare img")
    assert len(images) >= 2 and all(img.get_attribute("src") for img in images)  # before and after shown
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#downloads a[href]")]
    main_link = next(h for h in links if h.split("?")[0].endswith("_x2.png"))
    assert main_link.startswith(server)
    with urllib.request.urlopen(main_link, timeout=30) as response:
        (tmp_path / "ui.png").write_bytes(response.read())
    cli = _cli(sample, tmp_path / "cli.png", "--temperature", "0.5", "--seed", "0")
    assert np.array_equal(read_image(tmp_path / "ui.png"), cli)  # the page's download is the CLI's output
    shot = Path(os.environ.get("NIGHTFLOW_UI_SCREENSHOT", tmp_path / "ui-screenshot.png"))
    # the whole form from its title (docs/ui.png is this shot)
    browser.execute_script("window.scrollTo(0, 0);")
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000 and time.monotonic() - started < 120


def test_browser_bad_upload_shows_the_error(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    _open(browser, server).send_keys(str(bad))
    _wait(browser, lambda d: "broken" in d.find_element(By.CSS_SELECTOR, "#upload").text)
    browser.find_element(By.CSS_SELECTOR, "#run").click()
    _wait(browser, lambda d: "error" in _status(d))
    assert "cannot read image" in _status(browser)
    assert not browser.find_elements(By.CSS_SELECTOR, "#compare img[src]")
    # the scale picker offers that scale's zoo models
    four = [m["name"] for m in bundled_models() if m["scale"] == 4]
    if four:
        # led by the automatic choice where both x4 models it picks from are bundled
        from nightflow.commands.enhance import auto_pair
        from nightflow.models.zoo import canonical

        want = AUTO_LABEL if {canonical(n) for n in auto_pair(4)} <= set(four) else four[0]
        browser.find_element(By.CSS_SELECTOR, "#scale input[value='4']").click()
        model = browser.find_element(By.CSS_SELECTOR, "#model input")
        _wait(browser, lambda d: model.get_attribute("value") == want, timeout=20)


def test_ui_command_help_and_a_busy_port_is_a_user_error(capsys):
    with pytest.raises(SystemExit):
        main(["ui", "--help"])
    text = capsys.readouterr().out
    assert "--port P" in text and "127.0.0.1" in text and "exit codes:" in text
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["ui", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("nightflow ui: error: cannot serve on 127.0.0.1") and "--port" in err
