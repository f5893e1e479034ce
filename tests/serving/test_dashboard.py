"""The dashboard as a person sees it: Playwright driving Debian's Chromium headless."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.serving.conftest import API_KEY
from tests.serving.live import live_server

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.mark.slow
def test_dashboard_loads_and_try_a_user(shop_model, store_copy, tmp_path):
    if shutil.which("chromium") is None or not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is required under CI=true")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    _, model = shop_model
    errors: list[str] = []
    # --show-examples: the "try a user" chips name single users, hidden by default
    live = live_server(model, store_copy, API_KEY, extra=("--show-examples",))
    with live as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(url + "/")
        page.wait_for_selector("#kpis .kpi")
        page.wait_for_selector("#chart-activity .main-svg")
        page.wait_for_selector("#chart-top-items .main-svg")
        kpis = page.inner_text("#kpis")
        # click the first sample user and wait for the recommendations with explanations
        first_user = page.get_attribute("#sample-users button", "data-user")
        page.click("#sample-users button")
        page.wait_for_selector("#user-recs tr.rec")
        recs = page.locator("#user-recs tr.rec").count()
        why = page.inner_text("#user-recs tr.rec .why")
        history_rows = page.locator("#user-history tr").count()
        typed = page.input_value("#user-input")
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        browser.close()
    assert errors == []
    assert "events" in kpis and "users" in kpis
    # the most active users have seen most of the 80 items, so lists may be shorter than 10
    assert typed == first_user and 1 <= recs <= 10 and history_rows > 1
    assert "is recommended because you liked" in why
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
