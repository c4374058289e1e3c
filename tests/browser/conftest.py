"""Browser fixtures: the real server (``python app.py``, gevent) in a subprocess on a free
port, Debian Chromium driven by Playwright with fake camera and microphone, and Debian
WebKitGTK (Safari's engine) driven by Selenium under Xvfb with mock camera and microphone."""
from __future__ import annotations

import json
import os
import re
import select
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect

from tests.conftest import copy_migrated_sqlite

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
]
WEBKIT_DRIVER = "/usr/bin/WebKitWebDriver"
WEBKIT_BROWSER = "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser"
XVFB = "/usr/bin/Xvfb"
# Mock camera and microphone, granted without a prompt. --full-screen: MiniBrowser's window
# will not go below ~447 px wide with its toolbar; full screen on a phone-sized X screen will.
WEBKIT_ARGS = [
    "--automation", "--full-screen", "--enable-media-stream=true",
    "--enable-mock-capture-devices=true", "--enable-webaudio=true",
]
# How long a test server may take to answer /healthz after it is started.
SERVER_START_SECONDS = 120

# Playwright's expect() gives up after 5 s by default; on a loaded 2-core machine (two test
# workers, each driving a browser and a server) a page can take longer than that to react.
# A passing assertion returns as soon as it holds, so a longer deadline costs nothing.
expect.set_options(timeout=15_000)

OUTPUT = Path(os.environ.get("VV_TEST_OUTPUT", ROOT / "test-output"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# How long one `flask` command may take (a migration on a loaded machine).
FLASK_COMMAND_SECONDS = 180


class FlaskCommands:
    """``flask ...`` commands for one server's environment, run by one warm process
    (tests/browser/flask_worker.py) rather than a new interpreter each: a test that makes
    a join link asks for two commands, and each cold one cost 1.5 s of CPU and more."""

    def __init__(self, env: dict, log_path: Path):
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115  (kept open for the worker's life)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.browser.flask_worker"], cwd=ROOT,
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)

    def run(self, *args: str) -> str:
        """Runs the command; its stdout. A failure raises with what it printed."""
        self.process.stdin.write(json.dumps({"args": list(args)}) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], FLASK_COMMAND_SECONDS)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.close()
            raise RuntimeError(f"flask {' '.join(args)}: no answer within "
                               f"{FLASK_COMMAND_SECONDS} s:\n{self.log_text()}")
        done = json.loads(line)
        if done["code"] != 0:
            raise RuntimeError(f"flask {' '.join(args)} failed:\n{done['stdout']}{done['stderr']}")
        return done["stdout"]

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-20_000:]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log_path: Path
    env: dict
    commands: FlaskCommands

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def flask(self, *args: str) -> str:
        """Run a ``flask`` CLI command against this server's database; returns stdout."""
        return self.commands.run(*args)


def start_server(workdir: Path, *, port: int | None = None, public_url: str | None = None,
                 **env_overrides: str) -> LiveServer:
    """Migrate the database, start ``python app.py`` and wait until /healthz answers.

    Presence timings are short so tests see disconnects quickly without sleeping."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "VV_INSTANCE_PATH": str(workdir / "instance"),
        "VV_DATABASE_URL": f"sqlite:///{workdir / 'app.db'}",
        "VV_SANDBOX_DATABASE_URL": f"sqlite:///{workdir / 'sandbox.db'}",
        "VV_SANDBOX": "1",
        "VV_PORT": str(port),
        "VV_PUBLIC_BASE_URL": public_url or url,
        "VV_PRESENCE_GRACE_SECONDS": "0.3",
        "VV_PRESENCE_SWEEP_SECONDS": "0.2",
        "VV_PRESENCE_RESTART_GRACE_SECONDS": "1",
        "VV_SECRET_KEY": "browser-test-secret-key-0123456789abcdef",
        "VV_LOG_FORMAT": "json",
        **env_overrides,
    }
    env.pop("VV_ASYNC_MODE", None)  # served for real: gevent
    workdir.mkdir(parents=True, exist_ok=True)
    commands = FlaskCommands(env, workdir / "flask-commands.log")
    # As `make demo` does: migrate, then seed the sandbox and register it as an approved EHR.
    # A new SQLite database is a copy of one migrated earlier in this test process, so the
    # server can start (and import, as the commands' process does) at once, beside `demo`:
    # nobody asks it anything before /healthz, which waits for both.
    try:
        if not copy_migrated_sqlite(env["VV_DATABASE_URL"]):
            commands.run("db", "upgrade")
        log_path = workdir / "server.log"
        log = open(log_path, "wb")  # noqa: SIM115  (kept open for the server's lifetime)
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        server = LiveServer(url, process, log_path, env, commands)
        try:
            commands.run("demo")
        except Exception:
            stop_server(server)
            raise
    except Exception:
        commands.close()
        raise
    # Generous: on a loaded 2-core machine, importing the app and gevent alone has taken
    # over 30 s. A server that exits fails at once, with its log.
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            commands.close()
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log_text()}")
        try:
            if requests.get(f"{url}/healthz", timeout=5).ok:
                return server
        except requests.RequestException:
            time.sleep(0.05)  # polling for the port to open, not waiting a fixed time
    process.kill()
    commands.close()
    raise RuntimeError(f"server did not answer /healthz within {SERVER_START_SECONDS} s:\n"
                       f"{server.log_text()}")


def stop_server(server: LiveServer) -> None:
    server.commands.close()
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def live_app(tmp_path_factory):
    """One real gevent server for the browser tests of this session; with REDIS_URL set (CI),
    Socket.IO emits go through Redis as they do with several processes."""
    extra = {"VV_REDIS_URL": os.environ["REDIS_URL"], "VV_REDIS_CHANNEL": f"vv-test-{free_port()}"} \
        if os.environ.get("REDIS_URL") else {}
    server = start_server(tmp_path_factory.mktemp("live"), **extra)
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def browser(playwright_driver):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian chromium")
    launched = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(locale="en-US")
    context.set_default_timeout(10_000)
    opened = context.new_page()
    yield opened
    context.close()


@pytest.fixture
def phone_page(browser):
    """A small phone screen (iPhone SE size), touch, Spanish by default."""
    context = browser.new_context(viewport={"width": 375, "height": 667}, is_mobile=True,
                                  has_touch=True, locale="es-MX")
    context.set_default_timeout(10_000)
    opened = context.new_page()
    yield opened
    context.close()


def reschedule(live_app: LiveServer, appointment_id: str, start, minutes: int = 30) -> None:
    """Move a sandbox appointment (in the sandbox's own database) so a test does not
    depend on the hour it runs at."""
    path = live_app.env["VV_SANDBOX_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        (body,) = connection.execute("SELECT body FROM sandbox_resource WHERE type = 'Appointment' "
                                     "AND id = ?", (appointment_id,)).fetchone()
        resource = json.loads(body)
        resource["start"] = start.isoformat()
        resource["end"] = (start + timedelta(minutes=minutes)).isoformat()
        connection.execute("UPDATE sandbox_resource SET body = ? WHERE type = 'Appointment' "
                           "AND id = ?", (json.dumps(resource), appointment_id))


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot under the test run's output folder."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# Every error the page reports (WebDriver has no console API here): installed after each load.
COLLECT_ERRORS = """if (!window.__errors) {
  window.__errors = [];
  addEventListener("error", (e) => __errors.push(`${e.message} (${e.filename}:${e.lineno})`));
  addEventListener("unhandledrejection", (e) => __errors.push(`unhandled: ${e.reason}`));
  const logError = console.error.bind(console);
  console.error = (...args) => { __errors.push(args.map(String).join(" ")); logError(...args); };
}"""


@dataclass
class WebKit:
    """A WebKitGTK window (Selenium WebDriver) on its own Xvfb screen, with the logs that
    explain a failure."""
    driver: object
    width: int
    height: int
    logs: dict[str, Path]

    def open(self, url: str) -> None:
        """Load a page and start collecting its errors."""
        self.driver.get(url)
        self.collect_errors()

    def arrive(self, path_pattern: str) -> None:
        """After a link was followed: wait until that page has loaded, then collect its errors."""
        self.wait(lambda driver: re.search(path_pattern, driver.current_url)
                  and driver.execute_script("return document.readyState") == "complete",
                  f"a loaded page matching {path_pattern}")
        self.collect_errors()

    def collect_errors(self) -> None:
        self.driver.execute_script(COLLECT_ERRORS)

    def errors(self) -> list[str]:
        return self.driver.execute_script("return window.__errors || []")

    def wait(self, condition, what: str, timeout: float = 15):
        """Poll ``condition(driver)`` until it is truthy; the failure says what was awaited."""
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
            condition, f"WebKit: waited {timeout} s for {what}")

    def by_test_id(self, test_id: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, f'[data-testid="{test_id}"]')

    def screenshot(self, name: str, show: str | None = None) -> Path:
        """Save what the screen shows, scrolled to the element ``show`` (a test id) if given."""
        if show:
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})",
                                       self.by_test_id(show))
        OUTPUT.mkdir(parents=True, exist_ok=True)
        path = OUTPUT / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def log_text(self) -> str:
        return "\n".join(f"--- {name} ({path}):\n{path.read_text(errors='replace')[-4000:]}"
                         for name, path in self.logs.items() if path.exists())


def start_xvfb(workdir: Path, size: str, timeout: float = 15) -> tuple[subprocess.Popen, str]:
    """Xvfb on a display it picks itself (-displayfd: no race with parallel runs)."""
    log = workdir / "xvfb.log"
    with open(log, "wb") as errors:
        process = subprocess.Popen([XVFB, "-displayfd", "1", "-screen", "0", f"{size}x24",
                                    "-nolisten", "tcp"], stdout=subprocess.PIPE, stderr=errors)
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    number = process.stdout.readline().decode().strip() if ready else ""
    if not number.isdigit():
        process.kill()
        process.wait(timeout=5)
        raise RuntimeError(f"Xvfb gave no display within {timeout} s:\n{log.read_text()}")
    return process, f":{number}"


@pytest.fixture(scope="session")
def webkit(tmp_path_factory):
    """WebKitGTK (Debian's webkit2gtk-driver: WebKitWebDriver and MiniBrowser) at 390 x 844,
    the size of a phone, with mock camera and microphone. It has no WebRTC."""
    for path in (WEBKIT_DRIVER, WEBKIT_BROWSER, XVFB):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: `make test` installs webkit2gtk-driver and xvfb")
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.webkitgtk.options import Options
    from selenium.webdriver.webkitgtk.service import Service

    workdir = tmp_path_factory.mktemp("webkit")
    width, height = 390, 844
    xvfb, display = start_xvfb(workdir, f"{width}x{height}")
    logs = {"Xvfb": workdir / "xvfb.log", "WebKitWebDriver": workdir / "webkitwebdriver.log"}
    options = Options()
    options.binary_location = WEBKIT_BROWSER
    for argument in WEBKIT_ARGS:
        options.add_argument(argument)
    driver_log = open(logs["WebKitWebDriver"], "wb")  # noqa: SIM115  (the driver's lifetime)
    service = Service(WEBKIT_DRIVER, log_output=driver_log, env={**os.environ, "DISPLAY": display})
    try:
        driver = webdriver.WebKitGTK(options=options, service=service)
    except WebDriverException as error:
        xvfb.kill()
        xvfb.wait(timeout=10)
        driver_log.close()
        logged = "\n".join(path.read_text(errors="replace") for path in logs.values())
        raise RuntimeError(f"WebKitWebDriver did not start: {error}\n{logged}") from error
    driver.command_executor.client_config.timeout = 60  # per command, not the default 120 s
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    browser = WebKit(driver, width, height, logs)
    try:
        driver.set_window_rect(width=width, height=height)
        size = driver.execute_script("return [innerWidth, innerHeight]")
        if size != [width, height]:
            raise RuntimeError(f"WebKit's viewport is {size}, not {width} x {height}")
        yield browser
    finally:
        try:
            driver.quit()
        finally:
            xvfb.terminate()
            try:
                xvfb.wait(timeout=10)
            except subprocess.TimeoutExpired:
                xvfb.kill()
            driver_log.close()
