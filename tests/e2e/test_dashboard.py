"""The dashboard in a real browser (SPEC 16): Playwright driving Debian's Chromium against ``voicemon
serve``, on data of two organizations. Every page loads without a console error and fits 375 px; a retry
is clicked through to ``succeeded`` (a small pipeline answers the retry webhook with the re-run's
events); a refused retry shows its reason; an alert is acknowledged with a note; an organization's viewer
sees only its organization, by links and by typed URLs, and is offered no staff action.

Without Chromium the tests are skipped, unless ``CI`` is set (CI installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
from playwright.sync_api import sync_playwright

from tests.api.cli_runner import Cli
from tests.conftest import process_database
from tests.helpers import ServerProcess, ev, wait_for
from voicemon.domain.access import SYSTEM

CHROMIUM = "/usr/bin/chromium"
WIDTHS = (1280, 375)
PAGES = (
    "/",
    "/pipeline",
    "/pipeline?range=7d",
    "/artifacts",
    "/artifacts?status=failed",
    "/charts",
    "/charts?range=90d",
    "/orgs",
    "/events",
    "/events?event_type=artifact_failed",
    "/alerts",
    "/jobs",
)


def _require_chromium() -> None:
    if shutil.which(CHROMIUM) is None:
        message = "Chromium is not installed (apt-get install chromium)"
        if "CI" in os.environ:
            pytest.fail(f"{message}, and CI must run these tests", pytrace=False)
        pytest.skip(message)


class Pipeline:
    """The retry webhook of a pipeline: on each command it re-runs the artifact, posting the run's events
    (transcription to completion) to the server, as a real pipeline reports a retried note."""

    def __init__(self) -> None:
        self.server_url = ""
        self.key = ""
        self.commands: list[dict[str, Any]] = []
        pipeline = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                threading.Thread(target=pipeline.rerun, args=(body,), daemon=True).start()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/retries"

    def rerun(self, command: dict[str, Any]) -> None:
        self.commands.append(command)
        now = int(time.time() * 1000)
        aid, org = command["artifact_id"], command.get("organization_id")
        extra = {"organization_id": org} if org else {}
        events = [
            ev("transcription_started", aid, now, **extra),
            ev("transcription_completed", aid, now + 1, duration_ms=900, **extra),
            ev("artifact_completed", aid, now + 2, **extra),
        ]
        httpx.post(
            f"{self.server_url}/v1/events",
            json={"events": events},
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=10,
        )

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Site:
    url: str
    keys: dict[str, str]
    failed: dict[str, str]  # organization -> an artifact of it that failed in transcription
    pipeline: Pipeline


def _seed(cli: Cli) -> tuple[dict[str, str], dict[str, str]]:
    svc = cli.services()
    try:
        svc.start(migrate_schema=False)
        keys = {
            "staff": svc.keys.create(SYSTEM, "staff", None, "dash-staff").secret,
            "viewer@a": svc.keys.create(SYSTEM, "viewer", "org-a", "dash-viewer-a").secret,
            "ingest": svc.keys.create(SYSTEM, "ingest", None, "dash-ingest").secret,
        }
        now = int(time.time() * 1000)
        batch = []
        failed = {}
        for org in ("org-a", "org-b"):
            svc.orgs.put(SYSTEM, org, f"Team {org[-1].upper()}")
            for i in range(24):
                aid = f"{org}-note-{i}"
                at = now - 10 * 60_000 + i * 1000
                batch.append(ev("artifact_received", aid, at, organization_id=org))
                batch.append(ev("transcription_started", aid, at + 10, organization_id=org))
                if i % 2:
                    batch.append(
                        ev("transcription_completed", aid, at + 900, organization_id=org, duration_ms=890)
                    )
                    batch.append(ev("artifact_completed", aid, at + 950, organization_id=org))
                else:
                    batch.append(
                        ev(
                            "transcription_failed",
                            aid,
                            at + 700,
                            organization_id=org,
                            duration_ms=690,
                            error_code="asr_timeout",
                            error_message="audio could not be decoded",
                        )
                    )
                    batch.append(
                        ev("artifact_failed", aid, at + 710, organization_id=org, error_code="asr_timeout")
                    )
                    failed[org] = aid
        svc.ingest_blocking(batch, SYSTEM)
        svc.alerts.evaluate(SYSTEM)  # 50 % failed: failure-rate alerts of both organizations
    finally:
        svc.stop()
    return keys, failed


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    _require_chromium()
    work = tmp_path_factory.mktemp("dashboard")
    with process_database(tmp_path_factory, "dashboard") as url:
        cli = Cli(work, url)
        cli.upgrade()
        keys, failed = _seed(cli)
        pipeline = Pipeline()
        env = {**cli.env, "VOICEMON_RETRY_WEBHOOK_URL": pipeline.url, "VOICEMON_KEY_CACHE_S": "0"}
        server = ServerProcess(env, work / "serve.log")
        server.start()
        pipeline.server_url, pipeline.key = server.url, keys["staff"]
        try:
            yield Site(server.url, keys, failed, pipeline)
        finally:
            server.stop()
            pipeline.stop()


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Tab:
    """One signed-in browser page that records every console error and uncaught exception."""

    def __init__(self, browser: Any, site: Site, who: str, width: int = 1280) -> None:
        self.site = site
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(f"{site.url}/")
        self.page.fill("#key", site.keys[who])
        self.page.click("form[action='/login'] button[type=submit]")
        self.page.wait_for_url(f"{site.url}/")

    def go(self, path: str) -> Any:
        response = self.page.goto(f"{self.site.url}{path}")
        self.page.wait_for_load_state("networkidle")
        return response

    def text(self) -> str:
        return str(self.page.inner_text("main"))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def staff(browser: Any, site: Site) -> Iterator[Tab]:
    tab = Tab(browser, site, "staff")
    yield tab
    tab.close()


@pytest.fixture
def viewer_a(browser: Any, site: Site) -> Iterator[Tab]:
    tab = Tab(browser, site, "viewer@a")
    yield tab
    tab.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_loads_fits_the_width_and_logs_no_error(browser: Any, site: Site, width: int) -> None:
    tab = Tab(browser, site, "staff", width)
    try:
        for path in (*PAGES, f"/artifacts/{site.failed['org-a']}?org=org-a"):
            response = tab.go(path)
            assert response.status == 200, path
            assert response.headers["content-security-policy"].startswith("default-src 'none'")
            page_width = tab.page.evaluate("document.documentElement.scrollWidth")
            assert page_width <= width, (path, page_width)
        tab.go("/charts?range=24h")
        assert tab.page.locator(".chart canvas").count() >= 8  # uPlot drew every chart
        tab.go("/")
        tab.page.wait_for_selector("#feed table")  # the activity feed arrived through htmx
        assert "asr_timeout" in tab.page.inner_text("#feed")
        assert tab.errors == []
    finally:
        tab.close()


def test_the_overview_says_what_each_figure_covers(staff: Tab) -> None:
    staff.go("/")
    text = staff.text()
    assert "Overview, platform-wide" in text
    for needed in ("Last 60 minutes", "Last 24 hours", "AI cost today", "Open alerts", "live"):
        assert needed in text, needed
    # 50 % failed: org-a's, org-b's and the platform's failure-rate alerts, all critical.
    assert "3 critical" in staff.page.inner_text(".cards")


def test_a_retry_is_clicked_through_to_succeeded(staff: Tab, site: Site) -> None:
    aid = site.failed["org-b"]
    staff.go(f"/artifacts/{aid}?org=org-b")
    staff.page.select_option("select[name=stage]", "transcription")
    staff.page.fill("input[name=reason]", "ASR provider back")
    staff.page.click("form[action$='/retry'] button[type=submit]")
    staff.page.wait_for_load_state("networkidle")
    assert "accepted" in staff.page.inner_text(".flash.ok")
    wait_for(lambda: any(c["artifact_id"] == aid for c in site.pipeline.commands), 20, "the retry command")

    def succeeded() -> bool:
        staff.go(f"/artifacts/{aid}?org=org-b")
        return "succeeded" in staff.page.inner_text("main")

    wait_for(succeeded, 20, "the retry to succeed", poll_s=0.5)
    assert "completed" in staff.page.inner_text("dl.summary")
    assert staff.errors == []


def test_a_refused_retry_shows_why_and_changes_nothing(staff: Tab, site: Site) -> None:
    aid = site.failed["org-a"]
    staff.go(f"/artifacts/{aid}?org=org-a")
    staff.page.select_option("select[name=stage]", "draft_generation")
    staff.page.fill("input[name=reason]", "skip ahead")
    staff.page.click("form[action$='/retry'] button[type=submit]")
    staff.page.wait_for_load_state("networkidle")
    assert "stage_after_failure" in staff.page.inner_text(".flash.bad")
    assert staff.page.locator("h2:has-text('Retries') + p").inner_text() == "none"


def test_an_alert_is_acknowledged_with_a_note(staff: Tab) -> None:
    staff.go("/alerts")
    rule_cell = staff.page.locator("td", has_text=re.compile(r"^failure_rate$"))
    row = staff.page.locator("tbody tr", has_text="Team A").filter(has=rule_cell).first
    note = f"looking into it {uuid.uuid4().hex[:6]}"
    row.locator("input[name=note]").fill(note)
    row.locator("button", has_text="Acknowledge").click()
    staff.page.wait_for_load_state("networkidle")
    assert staff.page.inner_text(".flash.ok").startswith("acknowledged failure_rate")
    acked = staff.page.locator("tbody tr", has_text=note).inner_text()
    assert "Team A" in acked
    assert "acknowledged by dash-staff" in acked
    assert staff.errors == []


def test_an_organization_viewer_sees_only_its_organization(viewer_a: Tab, site: Site) -> None:
    viewer_a.go("/")
    assert "Overview of org-a" in viewer_a.text()
    viewer_a.page.wait_for_selector("#feed table")
    assert "org-b" not in viewer_a.page.inner_text("#feed")
    viewer_a.go("/artifacts")
    listed = viewer_a.page.inner_text("#rows")
    assert "org-a-note" in listed
    assert "org-b" not in listed
    assert viewer_a.page.locator("form[action$='/retry']").count() == 0  # no staff action offered
    viewer_a.go("/alerts")
    assert "Team B" not in viewer_a.text()
    assert viewer_a.page.locator("button", has_text="Acknowledge").count() == 0
    assert viewer_a.errors == []
    # Typed URLs: another organization's artifact and list (the refusal's status is logged by the
    # browser as a failed load, which is what it is).
    response = viewer_a.go(f"/artifacts/{site.failed['org-b']}?org=org-b")
    assert response.status in (403, 404)
    assert "asr_timeout" not in viewer_a.text()
    viewer_a.go("/artifacts?org=org-b")
    assert "forbidden_organization" in viewer_a.text()
    assert "org-b-note" not in viewer_a.text()


def test_sign_in_refuses_a_bad_or_ingest_key_and_actions_need_the_form_token(
    browser: Any, site: Site
) -> None:
    context = browser.new_context()
    page = context.new_page()
    try:
        for key, says in (("vm_0123456789abcdef_nope", "not valid"), (site.keys["ingest"], "cannot sign in")):
            page.goto(f"{site.url}/login")
            page.fill("#key", key)
            page.click("form[action='/login'] button[type=submit]")
            page.wait_for_load_state("networkidle")
            assert says in page.inner_text(".flash.bad")
            assert page.url.startswith(f"{site.url}/login")
        # Signed in, a POST without the CSRF token is refused and acknowledges nothing.
        page.fill("#key", site.keys["staff"])
        page.click("form[action='/login'] button[type=submit]")
        page.wait_for_url(f"{site.url}/")
        before = page.request.get(f"{site.url}/alerts").text()
        forged = page.request.post(f"{site.url}/alerts/any/ack", form={"note": "forged"}, max_redirects=0)
        assert forged.status == 303
        assert forged.headers["location"].startswith("/login")
        assert page.request.get(f"{site.url}/alerts").text().count("acknowledged by") == before.count(
            "acknowledged by"
        )
        page.goto(f"{site.url}/")
        page.click("form[action='/logout'] button")
        page.wait_for_url(f"{site.url}/login")
        page.goto(f"{site.url}/alerts")
        assert page.url.startswith(f"{site.url}/login")
    finally:
        context.close()


def test_staff_name_an_organization_run_a_job_and_read_an_events_json(staff: Tab) -> None:
    staff.go("/orgs")
    row = staff.page.locator("tbody tr", has_text="org-b")
    row.locator("input[name=name]").fill("Bravo United")
    row.locator("button", has_text="Name").click()
    staff.page.wait_for_load_state("networkidle")
    assert "org-b is now named Bravo United" in staff.page.inner_text(".flash.ok")
    assert "Bravo United" in staff.page.inner_text("tbody")

    staff.go("/jobs")
    staff.page.locator("tr", has_text="evaluate-alerts").locator("button", has_text="Run now").click()
    staff.page.wait_for_load_state("networkidle")
    assert "evaluate-alerts: succeeded" in staff.page.inner_text(".flash.ok")
    assert "manual" in staff.page.inner_text("main")

    staff.go("/events?event_type=transcription_failed")
    staff.page.locator("details summary").first.click()
    shown = staff.page.locator("details pre").first.inner_text()
    assert '"error_code": "asr_timeout"' in shown
    assert staff.errors == []


def test_staff_pages_are_neither_offered_nor_open_to_a_viewer(viewer_a: Tab) -> None:
    nav = viewer_a.page.inner_text("header nav")
    assert "Organizations" not in nav
    assert "Jobs" not in nav
    for path in ("/orgs", "/jobs"):
        response = viewer_a.go(path)
        assert response.status == 403, path
        assert "forbidden_role" in viewer_a.text()


def test_staff_change_a_rule_and_a_bad_value_is_refused_with_its_field(staff: Tab, site: Site) -> None:
    staff.go("/alerts")
    staff.page.fill("#mv-queue_depth", "75")
    staff.page.locator("#rule-queue_depth button").click()
    staff.page.wait_for_load_state("networkidle")
    assert "queue_depth changed" in staff.page.inner_text(".flash.ok")
    assert staff.page.input_value("#mv-queue_depth") == "75.0"
    rules = httpx.get(
        f"{site.url}/v1/alert-rules", headers={"Authorization": f"Bearer {site.keys['staff']}"}
    ).json()
    [queue] = [r for r in rules["items"] if r["rule"] == "queue_depth"]
    assert (queue["min_volume"], queue["updated_by"]) == (75, "dash-staff")
    staff.page.fill("#fe-queue_depth", "many")
    staff.page.locator("#rule-queue_depth button").click()
    staff.page.wait_for_load_state("networkidle")
    refusal = staff.page.inner_text(".flash.bad")
    assert "for_evaluations: must be a number" in refusal
    staff.page.fill("#fe-queue_depth", "0")
    staff.page.locator("#rule-queue_depth button").click()
    staff.page.wait_for_load_state("networkidle")
    assert "for_evaluations" in staff.page.inner_text(".flash.bad")
    assert staff.errors == []


def test_load_more_with_a_refused_cursor_says_so(staff: Tab, site: Site) -> None:
    reply = staff.page.request.get(
        f"{site.url}/artifacts?cursor=not-a-cursor", headers={"HX-Request": "true"}
    )
    assert reply.status == 200
    assert "invalid_cursor" in reply.text()
    assert "no artifacts match" not in reply.text()
