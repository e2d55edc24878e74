"""The dashboard against what a hostile tenant or a careless moment can do, in a real headless
Chromium against a real `kaio server` (the set-up is test_dashboard_browser.py's): a sweep
whose values would hang a naive chart, parameters named like Object's own properties, sign-out
and sign-in links that change whose tab it is, the API reference offline, long label keys and
long, coloured logs. Screenshots go to test-artifacts/dashboard/."""

from __future__ import annotations

import textwrap
import time

import pytest
import test_dashboard_browser as base
from server_support import Api
from test_dashboard_browser import WAIT_S, sweep_labels

pytestmark = pytest.mark.browser

# The same Chromium set-up and per-test tenants (a fixture is found by its name here).
browser = base.browser
tenant = base.tenant

METRICS_JOB = textwrap.dedent(
    """
    import os
    with open("metrics.json", "w") as f:
        f.write(os.environ["METRICS"])
    """
)


def bearer_status(api: Api, token: str) -> int:
    return api.session.get(
        api.url + "/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ).status_code


def wait_until(check, what: str):
    deadline = time.monotonic() + WAIT_S  # a hang detector, never a timing assertion
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"waited for {what}")


# ---- 1. a sweep page cannot hang --------------------------------------------------------------


def test_a_sweep_with_hostile_values_renders(browser, tenant):
    """Two cells whose metric is 1e16 and 1e16 + 2 (the naive tick loop never ends on them),
    with parameters and metrics named constructor and __proto__."""
    api, key = tenant
    cells = [
        ({"lr": 1, "constructor": "c1", "__proto__": "p1"}, "10000000000000000", "3"),
        ({"lr": 2}, "10000000000000002", "5"),
    ]
    for i, (cell, loss, proto) in enumerate(cells):
        metrics = f'{{"loss": {loss}, "__proto__": {proto}, "constructor": {i}}}'
        unique = api.submit(
            {"train.py": METRICS_JOB},
            job_name=f"hostile-{i}",
            env={"METRICS": metrics},
            labels=sweep_labels("huge", "train", f"cell-{i}", cell),
        )
        assert api.wait(unique)["status"] == "Completed"

    browser.sign_in(key)
    browser.go("#/sweep/huge/train")
    browser.wait_text("#sweep-summary", "2 cells, 2 completed")
    browser.wait(lambda: len(browser.css("#sweep-chart > g.series > circle")) == 2, "2 points")
    heads = [b.get_attribute("textContent").rstrip(" ▲▼") for b in browser.css("button.sort")]
    assert heads == [
        "Job",
        "Status",
        "Attempts",
        "lr",
        "constructor",
        "__proto__",
        "loss",
        "__proto__",
        "constructor",
    ]
    table = browser.text("#sweep-table tbody")
    assert "function" not in table and "undefined" not in table and "[object" not in table
    metric_cells = [
        [td.get_attribute("textContent") for td in tr.find_elements("css selector", "td.metric")]
        for tr in browser.css("#sweep-table tbody tr")
    ]
    assert metric_cells == [["1.00e16", "3", "0"], ["1.00e16", "5", "1"]]
    chart = browser.text("#sweep-chart")
    assert "NaN" not in chart and "Infinity" not in chart
    legend = sorted(
        t.get_attribute("textContent") for t in browser.css("#sweep-chart g.legend text")
    )
    assert legend == ["constructor=, __proto__=", "constructor=c1, __proto__=p1"]
    browser.screenshot("sweep-hostile")
    assert browser.console_problems() == []


# ---- 2. sessions end, and do not switch accounts silently -------------------------------------


def test_sign_out_ends_the_token_on_the_server(browser, tenant):
    api, key = tenant
    browser.sign_in(key)
    token = browser.js("return sessionStorage.getItem('kaio.token')")
    assert bearer_status(api, token) == 200
    browser.one("#signout").click()
    browser.one("#api-key")
    wait_until(lambda: bearer_status(api, token) == 401, "the token to be refused")
    assert api.get("/jobs").status_code == 200  # the key's other sessions go on
    assert browser.console_problems() == []


def test_a_link_for_another_account_asks_before_switching(browser, tenant, kaio_server):
    api, key = tenant
    other = Api(kaio_server.url, kaio_server.add_user())
    mine, theirs = api.login["project"]["name"], other.login["project"]["name"]
    browser.sign_in(key)
    token = browser.js("return sessionStorage.getItem('kaio.token')")

    def link_into_the_tab(who: Api) -> None:
        code = who.post("/dashboard/links").json()["code"]
        browser.go(f"#signin={code}")  # as a pasted link arrives: a hash change

    # Refused: the tab stays as it was, where it was.
    browser.go("#/sweeps")
    browser.one("#sweeps")
    link_into_the_tab(other)
    dialog = browser.one("dialog#confirm")
    browser.wait(lambda: dialog.get_attribute("open") is not None, "the question")
    question = browser.text("#confirm-text")
    assert mine in question and theirs in question
    browser.one("#confirm-cancel").click()
    browser.wait(lambda: dialog.get_attribute("open") is None, "the question to close")
    assert browser.text("#project") == mine
    assert browser.js("return sessionStorage.getItem('kaio.token')") == token
    assert browser.driver.current_url.endswith("#/sweeps") and browser.css("#sweeps")

    # A link of the same account needs no question.
    link_into_the_tab(api)
    browser.wait(
        lambda: browser.js("return sessionStorage.getItem('kaio.token')") != token, "new token"
    )
    assert dialog.get_attribute("open") is None and browser.text("#project") == mine
    token = browser.js("return sessionStorage.getItem('kaio.token')")

    # Accepted: the other account, and the first one's token is signed out.
    link_into_the_tab(other)
    browser.wait(lambda: dialog.get_attribute("open") is not None, "the question")
    browser.one("#confirm-ok").click()
    browser.wait(lambda: browser.text("#project") == theirs, "switched")
    wait_until(lambda: bearer_status(api, token) == 401, "the old token to be refused")
    assert browser.console_problems() == []


def test_the_sign_in_page_says_how_to_get_a_link(browser):
    browser.reset()
    hint = browser.text("#signin-hint")
    assert "Run kaio dashboard" in hint and "new tab starts signed out" in hint
    browser.screenshot("sign-in")


# ---- 3. nothing third-party on the origin -----------------------------------------------------


def test_the_api_reference_renders_offline_from_this_origin(browser, tenant):
    browser.driver.get(browser.url + "/docs")
    browser.wait(lambda: len(browser.css(".swagger-ui .opblock")) > 10, "the operations")
    assert "/jobs/presign" in browser.text(".swagger-ui")
    sent = browser.network()
    assert sent and all(r["url"].startswith(browser.url + "/") for r in sent), [
        r["url"] for r in sent
    ]
    assert browser.console_problems() == []


# ---- 5. small things --------------------------------------------------------------------------

LONG_KEYS = {
    "experiment_description_for_the_baseline": "a baseline run with the usual settings",
    "a_label_key_of_sixty_nine_characters_that_goes_on_and_on_and_on_and_x": "short value",
}


def test_long_label_keys_wrap_and_leave_their_values_room(browser, tenant):
    api, key = tenant
    assert [len(k) for k in LONG_KEYS] == [39, 69]
    unique = api.submit({"train.py": "print('hi')"}, job_name="labelled", labels=LONG_KEYS)
    assert api.wait(unique)["status"] == "Completed"
    browser.sign_in(key)
    browser.go(f"#/job/{unique}")
    browser.wait_text("#job-labels", "short value")
    for width in (1280, 390):
        browser.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600},
        )
        try:
            browser.wait(lambda w=width: browser.js("return window.innerWidth") == w, "layout")
            box = browser.js(
                "const dl = document.getElementById('job-labels');"
                "const dds = [...dl.querySelectorAll('dd')];"
                "return {height: dl.getBoundingClientRect().height, width: dl.clientWidth,"
                " values: dds.map((d) => d.getBoundingClientRect().width)}"
            )
        finally:
            browser.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        assert box["height"] < 400, (width, box)  # a few lines each, never a tower
        assert min(box["values"]) >= box["width"] * 0.45, (width, box)
    browser.screenshot("job-long-labels")


LONG_LOG_JOB = textwrap.dedent(
    """
    print("first line of the log", flush=True)
    line = "\\x1b[32mgreen\\x1b[0m \\x1b]0;a title\\x07" + "x" * 80
    for i in range(13000):
        print(f"{i:06d} {line}")
    print("\\x1b[1;31mlast line\\x1b[0m", flush=True)
    """
)


def test_a_long_log_says_what_was_omitted_and_shows_no_escape_codes(browser, tenant):
    api, key = tenant
    unique = api.submit({"train.py": LONG_LOG_JOB}, job_name="chatty")
    assert api.wait(unique)["status"] == "Completed"
    full = b""
    while chunk := api.get(f"/jobs/{unique}/logs", params={"offset": len(full)}).content:
        full += chunk
    assert len(full) > 1_100_000

    browser.sign_in(key)
    browser.go(f"#/job/{unique}")
    browser.wait_text("#log-state", "end of log")
    log = browser.text("#log")
    assert log.endswith("last line\n") and "first line" not in log
    assert "\x1b" not in log and "[32m" not in log and "a title" not in log
    assert log.startswith(("0", "1")) and "green xxxx" in log  # from the start of a line
    notice = browser.one("#log-omitted")
    assert notice.is_displayed()
    assert notice.text == "Earlier output omitted — download the full log"
    browser.one("#log-full").click()
    target = browser.downloads / f"{unique}-algo-1-stdout.log"
    browser.wait(
        lambda: target.exists() and not list(browser.downloads.glob("*.crdownload")),
        "the full log's download",
    )
    assert target.read_bytes() == full
    browser.screenshot("job-long-log")
    assert browser.console_problems() == []
