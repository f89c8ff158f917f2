"""The console in a real browser: Debian's headless Chromium, driven by Selenium through
Debian's chromedriver, against a real `etl serve` process polling the emulator. Each page is
photographed (to $ETL_SCREENSHOTS when set, else the test's own folder) and must not be blank;
a hostile site name must stay text; a site whose handler fails must stand at the top of "Now
and next", in red; a dispatch that appears in the emulator must appear on "Now and next" by the
page's own refresh, no reload asked."""

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from etl.console.app import REFRESH_SECONDS
from etl.sandbox.emulator import Sandbox
from tests.helpers import at, site, wait_for, wait_listening
from tests.processes import etl, etl_env, finish, free_port, start_etl
from tests.scenarios import active

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script> & Co"
POLL_SECONDS = 2
# a handler that fails for site f, with markup in its error
HANDLER = """#!/bin/sh
if [ "$ETL_SITE_ID" = f ]; then echo 'site controller f: <b>connection refused</b>' >&2; exit 1; fi
"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail(
            "the browser tests need Debian's chromium and chromium-driver: "
            "apt-get install chromium chromium-driver (make test does it as root)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--window-size=1200,1000", f"--user-data-dir={tmp_path / 'chromium'}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def photograph(driver: webdriver.Chrome, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path))
    assert not blank(path), f"{path} is blank"
    return path


def background(element: WebElement) -> tuple[int, ...]:
    """The element's background colour: red, green, blue."""
    colour = element.value_of_css_property("background-color")  # "rgba(253, 226, 225, 1)"
    return tuple(int(part) for part in colour.partition("(")[2].split(",")[:3])


def blank(png: Path) -> bool:
    """Nearly one colour: nothing drawn."""
    colours = Image.open(png).convert("RGB").getcolors(maxcolors=1 << 24) or []
    most = max(count for count, _ in colours)
    return len(colours) < 16 or most > 0.97 * sum(count for count, _ in colours)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_console_in_chromium(
    database_url: str, sandbox: Sandbox, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("ETL_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    earlier = active("earlier", site("b", 40), start_time=at(-120), end_time=at(-90))
    now1 = active("now1", site("a", 12, name=HOSTILE), site("b", 40), site("f", 25))
    sandbox.dispatches = [now1, earlier]
    handler = tmp_path / "handler"
    handler.write_text(HANDLER)
    handler.chmod(0o755)
    env = etl_env(database_url, sandbox, ETL_ACTION_COMMAND=str(handler))
    for step, code in ((("db", "upgrade"), 0), (("run",), 5), (("fetch", "--telemetry"), 0)):
        done = etl(*step, env=env)
        assert done.returncode == code, done.stderr  # run: 5, site f's curtail failed
    port = free_port()
    service = start_etl(
        "serve", "--every", str(POLL_SECONDS), "--listen", f"127.0.0.1:{port}", env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_listening(url + "/console/")

        browser.get(url + "/console/site?id=a")
        assert browser.find_element(By.ID, "site-name").text == HOSTILE
        assert browser.find_elements(By.CSS_SELECTOR, "img[src=x]") == []
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 (no script ran to raise one)
        photograph(browser, shots, "site")

        browser.get(url + "/console/dispatch?id=earlier")
        chart = browser.find_element(By.ID, "chart")
        assert chart.is_displayed() and chart.size["width"] > 400
        (shots / "chart.png").write_bytes(chart.screenshot_as_png)
        assert not blank(shots / "chart.png")
        photograph(browser, shots, "dispatch")

        browser.get(url + "/console/history")
        assert browser.find_element(By.ID, "months").text.count("\n") >= 1  # a month's row
        photograph(browser, shots, "history")

        browser.get(url + "/console/site?id=f")
        assert "curtail retrying" in browser.find_element(By.ID, "failures").text
        photograph(browser, shots, "site-failing")

        browser.get(url + "/console/")
        cards = browser.find_elements(By.CSS_SELECTOR, "section.card")
        assert [c.get_attribute("id") for c in cards] == ["dispatch-now1"]
        assert HOSTILE in cards[0].text and "curtailed 2 of 3, 1 failing" in cards[0].text
        failing = browser.find_element(By.ID, "failing")
        assert failing.location["y"] < cards[0].location["y"]  # at the top
        assert "Site f" in failing.text and "<b>connection refused</b>" in failing.text
        red, green, blue = background(failing)
        assert red > green + 20 and red > blue + 20, (red, green, blue)
        (shots / "failing.png").write_bytes(failing.screenshot_as_png)
        photograph(browser, shots, "now")
        sandbox.dispatches = [*sandbox.dispatches, active("fresh", site("c", 5), start_time=at(5))]
        appeared = time.monotonic()
        wait_for(
            lambda: bool(browser.find_elements(By.ID, "dispatch-fresh")),
            seconds=REFRESH_SECONDS + POLL_SECONDS + 10,
        )
        assert time.monotonic() - appeared <= REFRESH_SECONDS + POLL_SECONDS + 10
        photograph(browser, shots, "now-refreshed")
    finally:
        service.send_signal(signal.SIGTERM)
        assert finish(service, timeout=30) == 0
