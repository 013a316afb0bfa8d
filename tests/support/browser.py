"""A real headless Chromium (Debian's chromium + chromium-driver) driven by selenium, for the web UI.

`make setup` installs both (scripts/setup-system.sh); tests skip, naming
what is missing, only when they are not installed. Nothing is downloaded:
the driver and browser paths are given, so selenium-manager never runs.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver",)
WINDOW = (1366, 860)  # a laptop screen


def _first(paths: tuple[str, ...], name: str) -> str | None:
    for p in paths:
        if os.access(p, os.X_OK):
            return p
    return shutil.which(name)


def missing_reason() -> str | None:
    """Why no browser test can run here (None: chromium, its driver and selenium are installed)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if _first(CHROMIUM_CANDIDATES, "chromium") is None:
        return "chromium is not installed (make setup installs Debian's chromium)"
    if _first(DRIVER_CANDIDATES, "chromedriver") is None:
        return "chromedriver is not installed (make setup installs Debian's chromium-driver)"
    return None


def start_browser() -> Any:
    """A headless Chromium session that records the console (read it with `console_errors`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium fetch a browser or driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = _first(CHROMIUM_CANDIDATES, "chromium") or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-sync", "--disable-component-update",
                "--disable-default-apps", "--metrics-recording-only", "--password-store=basic"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=_first(DRIVER_CANDIDATES, "chromedriver") or "")
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(30)
    return driver


# Chrome logs every 4xx/5xx answer to fetch() as a console error of source "network"; the UI shows
# API refusals to the user on purpose, so a test names the ones it provokes.
_NETWORK_RE = re.compile(r"^(?P<url>\S+) - Failed to load resource: the server responded with a status of "
                         r"(?P<status>\d{3})")


def console_errors(driver: Any, expected: Callable[[str, int], bool] = lambda url, status: False) -> list[str]:
    """Console entries of level SEVERE (and warnings from scripts) since the last call, minus
    the API refusals `expected(url path, status)` allows."""
    bad = []
    for entry in driver.get_log("browser"):
        level, msg, source = entry.get("level"), entry.get("message", ""), entry.get("source")
        if level not in ("SEVERE", "WARNING"):
            continue
        m = _NETWORK_RE.match(msg)
        if source == "network" and m:
            path = re.sub(r"^https?://[^/]+", "", m["url"])
            if expected(path, int(m["status"])):
                continue
        bad.append(f"{level} {source}: {msg}")
    return bad


def wait_for(driver: Any, pred: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition") -> Any:
    """Poll `pred` (which may raise selenium's lookup errors while the page changes) until truthy."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = pred()
            if value:
                return value
        except (NoSuchElementException, StaleElementReferenceException) as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}"
                         + (f" (last: {type(last).__name__})" if last else "")
                         + f"\nURL {driver.current_url}\n{driver.find_element('tag name', 'body').text[:3000]}")
