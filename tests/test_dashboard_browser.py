"""The dashboard end to end in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
driven by Selenium through /usr/bin/chromedriver, so nothing is ever downloaded), against a real
`kaio server` running real jobs.

Each test is its own tenant (a fresh API key), so it sees only its own jobs. Nothing here asserts a
duration: every wait is an explicit wait for something on the page, bounded only as a hang
detector. Screenshots (jobs list, a sweep, a job page, at 1280 and 390 px) go to
test-artifacts/dashboard/, printed at the end of the module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from server_support import Api

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts" / "dashboard"
WAIT_S = 45.0  # a hang detector for page waits, never a timing assertion

pytestmark = pytest.mark.browser

INSTALL_HINT = (
    "The dashboard tests drive a real Chromium and need Debian's chromium and chromium-driver "
    "packages: `sudo apt-get install -y chromium chromium-driver` (.ci/run installs them), and "
    "selenium from the dev extras (`.venv/bin/pip install -e '.[dev]'`). Elsewhere, point "
    "KAIO_CHROMIUM and KAIO_CHROMEDRIVER at a Chromium and its matching chromedriver."
)

# Flags for a closed machine: without the background-networking ones Chromium tries to reach
# Google at start-up and this sandbox refuses the connections.
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
]

HOSTILE = "<img src=x onerror=alert(1)>"

LIVE_JOB = textwrap.dedent(
    """
    import os, shutil, sys, time
    host = os.environ["SM_CURRENT_HOST"]
    print("ready", host, flush=True)
    print("warning from", host, file=sys.stderr, flush=True)
    while not os.path.exists(os.environ["GO_FILE"]):
        time.sleep(0.05)
    shutil.copyfile("data.bin", "result.bin")
    print("done", host, flush=True)
    """
)

SLEEPY_JOB = textwrap.dedent(
    """
    import time
    print("ready", flush=True)
    time.sleep(600)
    """
)

SWEEP_JOB = textwrap.dedent(
    """
    import json, os, sys
    lr, depth = float(os.environ["LR"]), int(os.environ["DEPTH"])
    if os.environ.get("FAIL"):
        sys.exit("diverged")
    metrics = {"loss": round(lr * depth, 6), "accuracy": round(1 - lr, 6), "epochs": 3,
               "nested": {"f1": depth / 10}, "note": "not a number", "flag": True}
    with open("metrics.json", "w") as f:
        json.dump(metrics, f)
    print(json.dumps(metrics))
    """
)

HOSTILE_JOB = textwrap.dedent(
    """
    import json, os, sys
    text = os.environ["TEXT"]
    print("out:", text, flush=True)
    print("err:", text, file=sys.stderr, flush=True)
    with open(text + ".txt", "w") as f:
        f.write(text)
    with open("metrics.json", "w") as f:
        json.dump({text: 1.5}, f)
    if os.environ.get("FAIL"):
        sys.exit("failing with " + text)
    """
)


# ---- the browser ------------------------------------------------------------------------------


def _find(env: str, *candidates: str) -> str | None:
    if os.environ.get(env):
        candidates = (os.environ[env],)
    for c in candidates:
        found = c if os.path.isabs(c) and os.access(c, os.X_OK) else shutil.which(c)
        if found:
            return found
    return None


class Browser:
    """One Chromium tab on the session's server, with the waits and checks the tests share."""

    def __init__(self, driver, url: str, downloads: Path):
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.url = url
        self.downloads = downloads
        self._wait = WebDriverWait(driver, WAIT_S, poll_frequency=0.1)
        self.shots: list[Path] = []

    # -- finding and waiting --

    def wait(self, condition, what: str):
        def check(_):
            try:
                return condition()
            except Exception as e:  # stale or not-yet-present elements: look again
                from selenium.common.exceptions import WebDriverException

                if isinstance(e, WebDriverException):
                    return False
                raise

        return self._wait.until(check, f"waited for {what}")

    def css(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def one(self, selector: str):
        return self.wait(lambda: (self.css(selector) or [None])[0], selector)

    def text(self, selector: str) -> str:
        """textContent (rendered or not: the narrow layout hides table heads)."""
        found = self.css(selector)
        return found[0].get_attribute("textContent") if found else ""

    def wait_text(self, selector: str, expected: str) -> str:
        self.wait(lambda: expected in self.text(selector), f"{expected!r} in {selector}")
        return self.text(selector)

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    # -- sessions --

    def reset(self) -> None:
        """A fresh page load with no session."""
        self.driver.get(self.url + "/")
        self.js("sessionStorage.clear()")
        self.driver.get("about:blank")
        self.driver.get(self.url + "/")
        self.one("#api-key")

    def sign_in(self, key: str) -> None:
        from selenium.webdriver.common.keys import Keys

        self.reset()
        field = self.one("#api-key")
        # The field has the focus: typing and Enter sign in, as a keyboard user would.
        assert self.js("return document.activeElement.id") == "api-key"
        field.send_keys(key + Keys.ENTER)
        self.one("#jobs")
        assert self.css("#signout")[0].is_displayed()

    def go(self, hash_route: str) -> None:
        """In-page navigation (a hash change, never a reload)."""
        self.js("location.hash = arguments[0]", hash_route)

    def mark(self) -> None:
        """Tag the window: the tag survives anything but a reload."""
        self.js("window.__kaioNoReload = 'still here'")

    def assert_not_reloaded(self) -> None:
        assert self.js("return window.__kaioNoReload") == "still here"

    # -- checks --

    def assert_no_injection(self) -> None:
        from selenium.common.exceptions import NoAlertPresentException

        assert self.css("img") == [], "server text became an <img> element"
        try:
            alert = self.driver.switch_to.alert
            text = alert.text
            alert.dismiss()
            raise AssertionError(f"an alert fired: {text!r}")
        except NoAlertPresentException:
            pass

    def console_problems(self, allowed: tuple[str, ...] = ()) -> list[str]:
        """Console errors and CSP violations since the last call, minus the expected ones."""
        problems = []
        for entry in self.driver.get_log("browser"):
            message = entry.get("message", "")
            serious = "Content Security Policy" in message or entry.get("level") == "SEVERE"
            if serious and not any(a in message for a in allowed):
                problems.append(message)
        return problems

    def screenshot(self, name: str) -> None:
        """The page at 1280 and 390 CSS px wide; at 390 nothing may overflow sideways."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for width in (1280, 390):
            self.driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600},
            )
            try:
                self.wait(
                    lambda w=width: self.js("return window.innerWidth") == w, f"{width}px layout"
                )
                overflow = self.js(
                    "return document.documentElement.scrollWidth - window.innerWidth"
                )
                assert overflow <= 0, f"{name} at {width}px overflows by {overflow}px"
                height = min(self.js("return document.documentElement.scrollHeight"), 6000)
                self.driver.execute_cdp_cmd(
                    "Emulation.setDeviceMetricsOverride",
                    {
                        "width": width,
                        "height": height,
                        "deviceScaleFactor": 1,
                        "mobile": width < 600,
                    },
                )
                path = ARTIFACTS / f"{name}-{width}.png"
                assert self.driver.save_screenshot(str(path))
                self.shots.append(path)
            finally:
                self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    def network(self) -> list[dict]:
        """Requests the page sent since the last call: url, method, headers, body."""
        sent: dict[str, dict] = {}
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message.get("method") == "Network.requestWillBeSent":
                request = params["request"]
                seen = sent.setdefault(params["requestId"] + request["url"], {})
                seen.update(
                    url=request["url"],
                    method=request["method"],
                    body=request.get("postData", ""),
                    headers={**seen.get("headers", {}), **request["headers"]},
                    id=params["requestId"],
                )
            elif message.get("method") == "Network.requestWillBeSentExtraInfo":
                # The headers as they went on the wire (cookies included, if any).
                for seen in sent.values():
                    if seen.get("id") == params["requestId"]:
                        seen["headers"] = {**seen["headers"], **params["headers"]}
        return [s for s in sent.values() if s["url"].startswith(("http:", "https:"))]


@pytest.fixture(scope="module")
def browser(kaio_server, request, tmp_path_factory):
    chromium = _find("KAIO_CHROMIUM", "/usr/bin/chromium", "chromium", "chromium-browser")
    chromedriver = _find("KAIO_CHROMEDRIVER", "/usr/bin/chromedriver", "chromedriver")
    if not chromium or not chromedriver:
        pytest.fail(f"Chromium or chromedriver not found. {INSTALL_HINT}", pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(f"selenium is not installed. {INSTALL_HINT}", pytrace=False)

    # All in this run's own folder: a fixed path such as /tmp/chromedriver.log would be another
    # run's (another user's: chromedriver then exits at once).
    work = tmp_path_factory.mktemp("chromium")
    profile, downloads = work / "profile", work / "downloads"
    profile.mkdir()
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        },
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # A Service with an explicit path: selenium-manager never runs (it would try to download).
    service = Service(executable_path=chromedriver, log_output=str(work / "chromedriver.log"))
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except Exception as e:
        pytest.fail(f"Chromium did not start ({e}). {INSTALL_HINT}", pytrace=False)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    b = Browser(driver, kaio_server.url, downloads)
    try:
        yield b
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(downloads, ignore_errors=True)
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and capture is not None and b.shots:
            with capture.global_and_fixture_disabled():  # shown even when output is captured
                reporter.write_line(f"\ndashboard screenshots ({len(b.shots)}): {ARTIFACTS}")


@pytest.fixture
def tenant(kaio_server, browser):
    """A fresh user: (their Api, their key), with the browser's logs drained."""
    key = kaio_server.add_user()
    browser.console_problems()
    browser.network()
    return Api(kaio_server.url, key), key


def go_file(tmp_path: Path, name: str) -> Path:
    return tmp_path / f"go-{name}-{uuid.uuid4().hex[:6]}"


def row(browser: Browser, unique: str) -> str:
    return f'#jobs tr[data-unique="{unique}"]'


# ---- scenarios --------------------------------------------------------------------------------


def test_sign_in_with_a_key_and_sign_out(browser, tenant):
    from selenium.webdriver.common.keys import Keys

    api, key = tenant
    browser.reset()
    browser.one("#api-key").send_keys("kaio_not-a-real-key" + Keys.ENTER)
    browser.wait_text("#signin-error", "unknown or revoked")
    assert browser.css("#jobs") == []

    browser.sign_in(key)
    assert browser.text("#project") == api.login["project"]["name"]
    storage = browser.js(
        "return {session: Object.assign({}, sessionStorage), local: localStorage.length,"
        " cookies: document.cookie}"
    )
    assert storage["local"] == 0 and storage["cookies"] == ""
    assert storage["session"]["kaio.token"]
    assert key not in json.dumps(storage), "the API key was kept by the page"
    browser.wait_text("#jobs-empty", "No jobs to show")

    browser.go("#/job/20260101-000000000-not-mine")
    browser.wait_text("h1", "No such job")

    browser.one("#signout").click()
    browser.one("#api-key")
    assert browser.js("return sessionStorage.length") == 0
    assert browser.css("#nav")[0].is_displayed() is False
    assert browser.console_problems(allowed=("status of 403", "status of 404")) == []


def test_an_expired_session_asks_to_sign_in_again(browser, server_factory):
    """The page keeps no key, so it cannot renew its token: when the token expires, the next
    poll's 401 signs the tab out and says why."""
    server = server_factory(token_ttl=5)
    key = server.add_user()
    browser.console_problems()
    short = Browser(browser.driver, server.url, browser.downloads)
    short.sign_in(key)
    short.wait_text("#signin-error", "session ended")
    assert short.js("return sessionStorage.length") == 0
    assert short.console_problems(allowed=("status of 401",)) == []


def test_jobs_update_live_logs_follow_and_outputs_download(browser, tenant, tmp_path):
    api, key = tenant
    data = os.urandom(300_000)
    go_a, go_b = go_file(tmp_path, "a"), go_file(tmp_path, "b")
    secret = "value-never-shown-" + uuid.uuid4().hex
    files = {"train.py": LIVE_JOB, "data.bin": data}
    a = api.submit(files, job_name="live-a", env={"GO_FILE": str(go_a)})
    b = api.submit(
        files, job_name="live-b", env={"GO_FILE": str(go_b), "SECRET": secret}, instance_count=2
    )

    browser.sign_in(key)
    browser.mark()
    # Newest first, live: a goes InProgress -> Completed while the list stays open.
    browser.wait(lambda: browser.text(row(browser, a) + " .badge") == "InProgress", "a running")
    order = [tr.get_attribute("data-unique") for tr in browser.css("#jobs tbody tr[data-unique]")]
    assert order == [b, a]
    assert browser.text(row(browser, b) + ' td[data-label="Instances"]') == "ml.m5.large × 2"
    go_a.touch()
    browser.wait(lambda: browser.text(row(browser, a) + " .badge") == "Completed", "a completed")
    browser.screenshot("jobs-list")
    assert browser.text(row(browser, a) + ' td[data-label="Ended"]').strip() not in ("", "—")
    assert browser.text(row(browser, a) + ' td[data-label="Duration"]').endswith("s")
    browser.assert_not_reloaded()

    # The filters: by status and by text.
    from selenium.webdriver.support.ui import Select

    Select(browser.one("#filter-status")).select_by_value("Completed")
    browser.wait(
        lambda: len(browser.css("#jobs tbody tr[data-unique]")) == 1, "one completed job listed"
    )
    Select(browser.one("#filter-status")).select_by_value("")
    browser.one("#filter-text").send_keys("live-b")
    browser.wait(lambda: len(browser.css("#jobs tbody tr[data-unique]")) == 1, "text filter")
    assert browser.css("#jobs tbody tr[data-unique]")[0].get_attribute("data-unique") == b
    browser.js(
        "const f = document.getElementById('filter-text'); f.value = '';"
        " f.dispatchEvent(new Event('input'))"
    )
    browser.wait(lambda: len(browser.css("#jobs tbody tr[data-unique]")) == 2, "both listed again")

    # b's page, by keyboard: its link is a real link.
    from selenium.webdriver.common.keys import Keys

    link = browser.one(row(browser, b) + " a.job-link")
    browser.js("arguments[0].focus()", link)
    link.send_keys(Keys.ENTER)
    browser.wait_text("#log", "ready algo-1")
    assert browser.text("#job-title .badge") == "InProgress"
    assert browser.one("#action-stop").is_enabled()
    assert not browser.one("#action-delete").is_enabled()
    assert [e.text for e in browser.css("#job-env code")] == ["GO_FILE", "SECRET"]
    assert secret not in browser.driver.page_source
    # Another host and the other stream, while it runs.
    Select(browser.one("#log-host")).select_by_value("algo-2")
    browser.wait_text("#log", "ready algo-2")
    Select(browser.one("#log-stream")).select_by_value("stderr")
    browser.wait_text("#log", "warning from algo-2")
    Select(browser.one("#log-stream")).select_by_value("stdout")
    Select(browser.one("#log-host")).select_by_value("algo-1")
    browser.wait_text("#log", "ready algo-1")

    go_b.touch()
    browser.wait_text("#log", "done algo-1")  # followed live, no reload
    browser.wait(lambda: browser.text("#job-title .badge") == "Completed", "b completed")
    browser.wait_text("#log-state", "end of log")
    history = browser.text("#job-history")
    assert history.index("Pending") < history.index("InProgress") < history.index("Completed")
    browser.wait(lambda: len(browser.css("#output-list a.output-link")) >= 4, "outputs listed")
    paths = [e.get_attribute("data-path") for e in browser.css("#output-list a.output-link")]
    assert "algo-1/result.bin" in paths
    browser.screenshot("job-page")

    # Download an output through its link and compare the bytes.
    browser.one('#output-list a[data-path="algo-1/result.bin"]').click()
    target = browser.downloads / "result.bin"
    browser.wait(
        lambda: target.exists() and not list(browser.downloads.glob("*.crdownload")),
        "the download",
    )
    assert target.read_bytes() == data
    browser.assert_not_reloaded()
    assert browser.console_problems() == []


def test_stop_archive_and_delete_ask_first(browser, tenant):
    from selenium.webdriver.common.keys import Keys

    api, key = tenant
    unique = api.submit({"train.py": SLEEPY_JOB}, job_name="sleepy")
    browser.sign_in(key)
    browser.go(f"#/job/{unique}")
    browser.wait_text("#log", "ready")

    # Stop, then change one's mind: Escape closes the dialog and nothing happens.
    browser.one("#action-stop").click()
    dialog = browser.one("dialog#confirm")
    browser.wait(lambda: dialog.get_attribute("open") is not None, "the dialog")
    assert "Stop this job?" in browser.text("#confirm-title")
    assert "sleepy" in browser.text("#confirm-text")
    assert browser.js("return document.activeElement.id") == "confirm-cancel"
    browser.driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    browser.wait(lambda: dialog.get_attribute("open") is None, "the dialog to close")
    assert api.job(unique)["status"] == "InProgress"

    browser.one("#action-stop").click()
    browser.wait(lambda: browser.css("#confirm-ok")[0].is_displayed(), "the dialog")
    browser.one("#confirm-ok").click()
    browser.wait(lambda: browser.text("#job-title .badge") == "Stopped", "Stopped")
    assert api.job(unique)["status"] == "Stopped"
    browser.wait(lambda: browser.one("#action-delete").is_enabled(), "delete enabled")

    # Archive: gone from the list unless archived jobs are asked for.
    browser.one("#action-archive").click()
    browser.wait(lambda: browser.css("#confirm-ok")[0].is_displayed(), "the dialog")
    browser.one("#confirm-ok").click()
    browser.one("#action-restore")
    assert api.job(unique)["archived"] is True
    browser.go("#/jobs")
    browser.wait_text("#jobs-count", "0 jobs")
    browser.one("#filter-archived").click()
    browser.wait(lambda: browser.css(row(browser, unique)), "the archived job listed")
    assert "archived" in browser.text(row(browser, unique))

    # Delete data: Cancel keeps it, confirming deletes it.
    browser.go(f"#/job/{unique}")
    browser.one("#action-delete").click()
    browser.wait(lambda: browser.css("#confirm-cancel")[0].is_displayed(), "the dialog")
    browser.one("#confirm-cancel").click()
    assert api.job(unique)["data_deleted"] is False
    browser.one("#action-delete").click()
    browser.wait(lambda: browser.css("#confirm-ok")[0].is_displayed(), "the dialog")
    browser.one("#confirm-ok").click()
    browser.wait_text("#outputs", "data was deleted")
    assert api.job(unique)["data_deleted"] is True
    assert not browser.one("#action-delete").is_enabled()
    assert browser.console_problems() == []


def sweep_labels(manifest: str, key: str, name: str, cell: dict) -> dict:
    """What the planner sends (kaio_spec/planner/planning.py: _labels)."""
    return {
        "manifest": manifest,
        "key": key,
        "name": name,
        "cell": json.dumps(cell, separators=(",", ":"), ensure_ascii=False),
    }


def test_a_sweep_shows_a_sortable_table_and_a_chart(browser, tenant):
    api, key = tenant
    submitted = []
    for lr in (0.001, 0.1):
        for depth in (2, 4):
            cell = {"lr": lr, "depth": depth}
            name = f"train-lr{lr}-depth{depth}"  # the display name; job_name has no dots
            job_name = name.replace(".", "-")
            env = {"LR": str(lr), "DEPTH": str(depth)}
            labels = sweep_labels("demo", "train", name, cell)
            if (lr, depth) == (0.1, 4):  # a first attempt that fails, then its retry
                failed = api.submit(
                    {"train.py": SWEEP_JOB},
                    job_name=job_name,
                    env={**env, "FAIL": "1"},
                    labels=labels,
                )
                assert api.wait(failed)["status"] == "Failed"
            submitted.append(
                api.submit({"train.py": SWEEP_JOB}, job_name=job_name, env=env, labels=labels)
            )
    loner = api.submit({"train.py": SWEEP_JOB}, job_name="loner", env={"LR": "1", "DEPTH": "1"})

    # Opened while the cells run: they complete, and their metrics arrive, on the open page.
    browser.sign_in(key)
    browser.mark()
    browser.go("#/sweeps")
    link = browser.one("#sweep-list a.sweep-link")
    assert browser.text("#sweep-list tbody").count("demo") == 1
    assert len(browser.css("#sweep-list tbody tr")) == 1  # the unlabelled job is no sweep
    link.click()
    browser.wait_text("#sweep-summary", "4 cells, 4 completed")
    assert api.wait(loner)["status"] == "Completed"

    def headers() -> list[str]:
        return [
            b.get_attribute("textContent").rstrip(" ▲▼")
            for b in browser.css("#sweep-table button.sort")
        ]

    def column(name: str) -> list[str]:
        index = headers().index(name)
        return [
            r.find_elements("css selector", "td")[index].get_attribute("textContent")
            for r in browser.css("#sweep-table tbody tr")
        ]

    browser.wait(
        lambda: "nested.f1" in headers() and all(column("nested.f1")), "every job's metrics"
    )
    assert headers() == [
        "Job",
        "Status",
        "Attempts",
        "lr",
        "depth",
        "loss",
        "accuracy",
        "epochs",
        "nested.f1",
    ]
    rows = browser.css("#sweep-table tbody tr")
    by_name = {r.find_element("css selector", "a").text: r for r in rows}
    assert set(by_name) == {
        "train-lr0.001-depth2",
        "train-lr0.001-depth4",
        "train-lr0.1-depth2",
        "train-lr0.1-depth4",
    }
    retried = by_name["train-lr0.1-depth4"].find_elements("css selector", "td")
    assert retried[2].text == "2"  # attempts: the failed one and its retry
    assert retried[1].text == "Completed"

    loss_button = '#sweep-table button[data-column=\'["metric","loss"]\']'
    browser.one(loss_button).click()
    browser.wait(lambda: column("loss") == ["0.002", "0.004", "0.2", "0.4"], "loss ascending")
    assert (
        browser.one(loss_button).find_element("xpath", "..").get_attribute("aria-sort")
        == "ascending"
    )
    browser.one(loss_button).click()
    browser.wait(lambda: column("loss") == ["0.4", "0.2", "0.004", "0.002"], "loss descending")
    assert browser.js("return document.activeElement.dataset.column") == '["metric","loss"]'

    # The chart: loss against lr (a log axis: 0.001 to 0.1), one line per depth.
    from selenium.webdriver.support.ui import Select

    Select(browser.one("#chart-y")).select_by_value("loss")
    Select(browser.one("#chart-x")).select_by_value("lr")
    browser.wait(lambda: len(browser.css("#sweep-chart > g.series > circle")) == 4, "4 points")
    chart = browser.one("#sweep-chart")
    assert chart.get_attribute("aria-label") == "loss against lr: 4 points"
    assert "lr (log scale)" in chart.get_attribute("textContent")
    assert len(browser.css("#sweep-chart > g.series > polyline")) == 2
    assert sorted(
        t.get_attribute("textContent") for t in browser.css("#sweep-chart g.legend text")
    ) == [
        "depth=2",
        "depth=4",
    ]
    Select(browser.one("#chart-x")).select_by_value("depth")
    browser.wait(
        lambda: "lr (log scale)" not in browser.one("#sweep-chart").get_attribute("textContent"),
        "redrawn",
    )
    assert len(browser.css("#sweep-chart > g.series > circle")) == 4
    Select(browser.one("#chart-x")).select_by_value("lr")
    browser.screenshot("sweep")
    browser.assert_not_reloaded()
    assert browser.console_problems() == []


def test_hostile_text_renders_as_text(browser, tenant):
    api, key = tenant
    labels = {**sweep_labels(HOSTILE, "k", HOSTILE, {HOSTILE: HOSTILE}), "note": HOSTILE}
    ok = api.submit(
        {"train.py": HOSTILE_JOB}, job_name="hostile", env={"TEXT": HOSTILE}, labels=labels
    )
    bad = api.submit(
        {"train.py": HOSTILE_JOB}, job_name="hostile-fails", env={"TEXT": HOSTILE, "FAIL": "1"}
    )
    assert api.wait(ok)["status"] == "Completed"
    assert api.wait(bad)["status"] == "Failed"

    browser.sign_in(key)
    browser.wait(lambda: len(browser.css("#jobs tbody tr[data-unique]")) == 2, "both jobs listed")
    browser.one("#filter-text").send_keys("<img")
    browser.wait(
        lambda: len(browser.css("#jobs tbody tr[data-unique]")) == 1, "found by a label's text"
    )
    browser.assert_no_injection()

    browser.go(f"#/job/{ok}")
    browser.wait_text("#log", f"out: {HOSTILE}")
    assert browser.text("#job-labels").count(HOSTILE) >= 3
    browser.wait_text("#output-list", f"{HOSTILE}.txt")
    from selenium.webdriver.support.ui import Select

    Select(browser.one("#log-stream")).select_by_value("stderr")
    browser.wait_text("#log", f"err: {HOSTILE}")
    browser.assert_no_injection()

    browser.go(f"#/job/{bad}")
    browser.wait_text("#failure-reason", f"failing with {HOSTILE}")
    browser.assert_no_injection()

    browser.go("#/sweeps")
    browser.wait_text("#sweep-list", HOSTILE)
    browser.one("#sweep-list a.sweep-link").click()
    browser.wait_text("#sweep-title", HOSTILE)
    browser.wait(lambda: browser.text("#sweep-table thead").count(HOSTILE) == 2, "param and metric")
    assert HOSTILE in browser.text("#sweep-table tbody")
    browser.wait(lambda: len(browser.css("#sweep-chart > g.series > circle")) == 1, "the point")
    browser.assert_no_injection()
    assert browser.console_problems() == []


def test_kaio_dashboard_link_signs_in_once(browser, tenant, kaio_server):
    api, key = tenant
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIO_")}
    home = tempfile.mkdtemp(prefix="kaio-dashboard-home-")  # no saved login of the user's
    env.update({"KAIO_HOME": home, "XDG_CONFIG_HOME": os.path.join(home, "config")})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kaio_spec.cli",
            "dashboard",
            "--no-browser",
            "--api",
            kaio_server.url,
        ],
        capture_output=True,
        text=True,
        env={**env, "KAIO_API_KEY": key},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    link = result.stdout.strip()
    assert key not in link

    browser.reset()
    browser.driver.get("about:blank")
    browser.driver.get(link)  # a fresh page load, as from the command
    browser.one("#jobs")
    browser.wait(lambda: browser.text("#project") == api.login["project"]["name"], "signed in")
    assert "signin" not in browser.driver.current_url
    assert urlsplit(browser.driver.current_url).fragment == "/jobs"

    browser.one("#signout").click()
    browser.one("#api-key")
    browser.driver.get(link)  # the same link again, into the open tab: a hash change
    browser.wait_text("#signin-error", "already used or has expired")
    assert browser.css("#jobs") == []
    assert "signin" not in browser.driver.current_url
    assert browser.console_problems(allowed=("status of 403",)) == []


def test_requests_carry_only_the_bearer_token(browser, tenant):
    api, key = tenant
    unique = api.submit(
        {"train.py": SWEEP_JOB},
        job_name="traced",
        env={"LR": "0.5", "DEPTH": "1"},
        labels=sweep_labels("m", "k", "traced", {"lr": 0.5}),
    )
    assert api.wait(unique)["status"] == "Completed"
    browser.sign_in(key)
    browser.wait(lambda: browser.css(row(browser, unique)), "the job listed")
    browser.go(f"#/job/{unique}")
    browser.wait_text("#output-list", "metrics.json")
    browser.wait_text("#log-state", "end of log")
    browser.go("#/sweep/m/k")
    browser.wait(lambda: "0.5" in browser.text("#sweep-table tbody td.metric"), "metrics read")
    token = browser.js("return sessionStorage.getItem('kaio.token')")

    sent = browser.network()
    origin = browser.url
    api_paths = set()
    for r in sent:
        headers = {k.lower(): v for k, v in r["headers"].items()}
        path = urlsplit(r["url"]).path
        assert r["url"].startswith(origin + "/"), f"a request left the server: {r['url']}"
        assert "cookie" not in headers, r
        assert key not in r["url"] and token not in r["url"], r["url"]
        if key in r["body"]:
            assert (r["method"], path) == ("POST", "/login"), r
        if (
            path in ("/login", "/login/link")
            or path == "/"
            or path.startswith(("/dashboard/", "/objects/"))
        ):
            assert "authorization" not in headers, r  # no token where none is needed
        else:
            assert headers.get("authorization") == f"Bearer {token}", r
            api_paths.add(path.split("/")[1])
    assert {"jobs"} == api_paths
    assert any(urlsplit(r["url"]).path.startswith("/objects/") for r in sent)  # metrics.json
    assert any(r["method"] == "POST" and urlsplit(r["url"]).path == "/login" for r in sent)


RANKED_JOB = textwrap.dedent(
    """
    import json, os, sys, time
    lr, depth = float(os.environ["LR"]), int(os.environ["DEPTH"])
    if os.environ.get("FAIL"):
        sys.exit("diverged")
    block = bytearray(32 * 1024 * 1024)  # something for the telemetry to see
    end = time.time() + 1.2
    while time.time() < end:
        sum(range(1000))
    with open("metrics.json", "w") as f:
        json.dump({"accuracy": round(0.9 + lr / 10 + depth / 100, 4), "eval": {"loss": lr}}, f)
    """
)


def test_a_sweep_with_a_declared_metric_marks_its_best_cell_and_its_jobs_show_results(
    browser, tenant
):
    """What `kaio apply` sends for a sweep declaring `metric: {name: accuracy, goal: maximize}`:
    the sweep page ranks the cells best first, marks and names the best, orders names that hold
    decimals naturally, exports the table as CSV and draws parallel coordinates; a job page shows
    its parameters, metrics and telemetry; a job that is no sweep links to none."""
    api, key = tenant
    metric = json.dumps({"name": "accuracy", "goal": "maximize"})
    names = {}
    for lr in (0.05, 0.1, 1.0):
        for depth in (2, 4):
            name = f"lr{lr:g}-d{depth}"
            labels = {**sweep_labels("ranked", "fit", name, {"lr": lr, "depth": depth})}
            labels["metric"] = metric
            env = {"LR": str(lr), "DEPTH": str(depth)}
            if (lr, depth) == (1.0, 4):
                env["FAIL"] = "1"  # the cell that would have been best fails
            if (lr, depth) == (0.05, 2):  # retries: 2, and a first attempt that failed
                labels["retries"] = "2"
                failed = api.submit(
                    {"train.py": RANKED_JOB},
                    job_name=name.replace(".", "-"),
                    env={**env, "FAIL": "1"},
                    labels=labels,
                )
                assert api.wait(failed)["status"] == "Failed"
            names[name] = api.submit(
                {"train.py": RANKED_JOB}, job_name=name.replace(".", "-"), env=env, labels=labels
            )
    plain = api.submit(
        {"train.py": RANKED_JOB},
        job_name="plain",
        env={"LR": "0.5", "DEPTH": "1"},
        labels={"manifest": "ranked", "key": "plain", "name": "plain", "cell": "{}"},
    )
    for unique in [*names.values(), plain]:
        api.wait(unique)

    browser.sign_in(key)
    browser.go("#/sweep/ranked/fit")
    browser.wait_text("#sweep-summary", "best: lr1-d2 (accuracy 1.02)")

    def names_shown() -> list[str]:
        return [a.text for a in browser.css("#sweep-table tbody tr td:first-child a")]

    # Best first by accuracy; the failed cell, with no value, last.
    browser.wait(
        lambda: (
            names_shown() == ["lr1-d2", "lr0.1-d4", "lr0.05-d4", "lr0.1-d2", "lr0.05-d2", "lr1-d4"]
        ),
        "ranked by accuracy",
    )
    retried = browser.one(f'#sweep-table tr[data-unique="{names["lr0.05-d2"]}"]')
    assert retried.find_elements("css selector", "td")[2].text == "2/3"  # attempt 2 of 3
    best = browser.css("#sweep-table tbody tr.best")
    assert len(best) == 1 and "lr1-d2" in best[0].text and "★ best" in best[0].text
    sort_by_name = browser.one("#sweep-table button[data-column='[\"name\"]']")
    sort_by_name.click()
    browser.wait(
        lambda: (
            names_shown() == ["lr0.05-d2", "lr0.05-d4", "lr0.1-d2", "lr0.1-d4", "lr1-d2", "lr1-d4"]
        ),
        "names in natural order",
    )

    browser.one("#sweep-csv").click()  # downloads ranked-fit.csv, the table as shown
    saved = browser.downloads / "ranked-fit.csv"
    browser.wait(lambda: saved.is_file() and saved.read_text().endswith("\n"), "the CSV")
    csv_text = saved.read_text()
    lines = csv_text.splitlines()
    assert lines[0] == "name,status,attempts,lr,depth,accuracy,eval.loss"
    assert lines[1] == "lr0.05-d2,Completed,2,0.05,2,0.925,0.05"
    assert lines[-1] == "lr1-d4,Failed,1,1,4,,"

    parallel = browser.one("#sweep-parallel")
    assert len(browser.css("#sweep-parallel polyline.pc-line")) == 6
    assert len(browser.css("#sweep-parallel polyline.pc-line.best")) == 1
    axes = [t.get_attribute("textContent") for t in browser.css("#sweep-parallel .axis-title")]
    assert axes == ["lr", "depth", "accuracy", "eval.loss"]
    assert "6 cells" in parallel.get_attribute("aria-label")
    browser.screenshot("sweep-ranked")

    # The best job's page: its parameters and metrics, and its telemetry over time.
    browser.go(f"#/job/{names['lr1-d2']}")
    browser.wait_text("#job-params", "lr")
    params = browser.text("#job-params")
    assert "lr" in params and "depth" in params and "2" in params
    browser.wait_text("#job-metrics", "accuracy (maximize)")
    assert "1.02" in browser.text("#job-metrics") and "eval.loss" in browser.text("#job-metrics")
    browser.wait(lambda: browser.css("#job-telemetry svg.telemetry"), "telemetry charts")
    labels = [s.get_attribute("aria-label") for s in browser.css("#job-telemetry svg")]
    assert labels[:2] == ["CPU % over time, 1 instance", "Memory (MB) over time, 1 instance"]
    assert browser.css("#job-telemetry svg polyline")
    assert "peak memory" in browser.text("#job-telemetry")
    assert browser.css("a[href^='#/sweep/']")  # a sweep's job links to its sweep
    browser.screenshot("job-results")

    browser.go(f"#/job/{plain}")
    browser.wait_text("#job-labels", "plain")
    assert not browser.css("a[href^='#/sweep/']")  # no sweep for a job that is none

    # The jobs list: grouped by manifest, each job under its readable name.
    browser.go("#/jobs")
    browser.wait_text("#jobs tr.group", "manifest ranked · 8 jobs")
    assert len(browser.css("#jobs tr.group")) == 1
    first = browser.one(row(browser, names["lr1-d2"]))
    assert first.find_element("css selector", "a.job-link").text == "lr1-d2"
    assert names["lr1-d2"] in first.text  # the unique name beside it
    browser.screenshot("jobs-grouped")
    assert browser.console_problems() == []


def test_a_pipeline_jobs_page_links_its_needs_and_what_needs_it(browser, tenant, tmp_path):
    """Issue 16: kaio apply of prep -> a 2-cell train grid; train's page links prep's, and prep's
    links back to both cells."""
    from apply_support import list_jobs, run_apply

    api, key = tenant
    (tmp_path / "prep.py").write_text("open('rows.txt', 'w').write('3')\n")
    (tmp_path / "train.py").write_text("print(open('inputs/prep/rows.txt').read())\n")
    manifest = tmp_path / "kaio.yaml"
    manifest.write_text(
        "version: 1\nname: chain\nsettings: {poll_seconds: 0.3}\njobs:\n"
        "  prep: {entrypoint: prep.py}\n"
        "  train: {entrypoint: train.py, needs: prep, matrix: {lr: [0.1, 0.5]}}\n"
    )
    result = run_apply(manifest, api.url, key, "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {j["labels"]["name"]: j for j in list_jobs(api.url, key)}
    prep, train = jobs["prep"], jobs["train-lr0.1"]

    browser.sign_in(key)
    browser.go(f"#/job/{train['unique_job_name']}")
    browser.wait_text("#job-needs", prep["job_name"])
    assert browser.text("#job-needed-by") == "—"
    browser.mark()
    browser.one("#job-needs a").click()
    browser.wait_text("#job-title", prep["job_name"])
    assert browser.text("#job-needs") == "—"
    needed_by = browser.wait_text("#job-needed-by", jobs["train-lr0.5"]["job_name"])
    assert train["job_name"] in needed_by
    hrefs = [a.get_attribute("href") for a in browser.css("#job-needed-by a")]
    assert sorted(h.rsplit("/", 1)[1] for h in hrefs) == sorted(
        jobs[n]["unique_job_name"] for n in ("train-lr0.1", "train-lr0.5")
    )
    browser.css(f'#job-needed-by a[href$="{train["unique_job_name"]}"]')[0].click()
    browser.wait_text("#job-title", train["job_name"])
    browser.assert_not_reloaded()
    browser.screenshot("job-links")
    assert browser.console_problems() == []


def test_a_job_page_open_when_its_dependent_is_submitted_links_it(browser, tenant):
    """kaio apply submits a dependent once the job it needs has ended: the open page finds it."""
    api, key = tenant
    # The labels kaio apply gives (planning._labels): the manifest's name, the job's key, and
    # for a job with needs, the job_names it needs (within the same manifest: docs/manifest.md).
    labels = {"manifest": "solo"}
    prep = api.submit(
        {"train.py": "print(1)\n"}, job_name="solo-prep", labels={**labels, "key": "prep"}
    )
    assert api.wait(prep)["status"] == "Completed"
    browser.sign_in(key)
    browser.go(f"#/job/{prep}")
    browser.wait_text("#job-title", "solo-prep")
    browser.wait_text("#job-history", "Completed")
    assert browser.css("#job-links") == []  # needs nothing, needed by nothing yet
    after = api.submit(
        {"train.py": "print(2)\n"},
        job_name="solo-train",
        labels={**labels, "key": "train", "needs": '["solo-prep"]'},
    )
    browser.wait_text("#job-needed-by", "solo-train")
    assert browser.css("#job-needed-by a")[0].get_attribute("href").endswith(f"#/job/{after}")
    assert browser.console_problems() == []
