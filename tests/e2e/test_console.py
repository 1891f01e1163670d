"""The web console in a real headless Chromium against a real server process."""

import re
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import (
    OWNER,
    PASSWORD,
    ConsoleServer,
    chromium,
    console_server,
    sign_in,
)
from tests.support.settings import pg_uri


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    # A throttled byte path, so that a backup of `bulk` runs long enough to be watched.
    with console_server(tmp_path_factory.mktemp("console"), bandwidth_mbps=0.2,
                        bulk_posts=60_000) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def _backup(server: ConsoleServer) -> str:
    """A completed backup of the source, made through the API."""
    job = server.api("POST", "/api/backups/database", json={"source": "shop"})
    assert job.status_code == 202, job.text
    deadline = time.monotonic() + 120
    while (state := server.api("GET", f"/api/backups/jobs/{job.json()['id']}").json())[
            "status"] not in ("completed", "failed") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert state["status"] == "completed", state
    backup_id: str = state["backupId"]
    return backup_id


def test_sign_in_lands_on_the_overview_and_a_page_needs_a_session(
        server: ConsoleServer, page: Page) -> None:
    page.goto(f"{server.base}/backups")
    expect(page).to_have_url(re.compile(r"/login\?next=/backups$"))
    page.get_by_label("User name").fill(OWNER)
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("login-error")).to_contain_text("Incorrect")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{server.base}/backups")
    expect(page.get_by_test_id("who")).to_contain_text(OWNER)
    cookie = next(c for c in page.context.cookies() if c["name"] == "backvault_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"


def test_overview_numbers_equal_the_api(server: ConsoleServer, page: Page) -> None:
    _backup(server)
    sign_in(page, server.base, OWNER)
    dashboard = server.api("GET", "/api/backups/dashboard").json()
    totals = dashboard["last30Days"]
    assert totals["completed"] >= 1
    expect(page.get_by_test_id("stat-total")).to_have_attribute("data-value",
                                                                str(totals["total"]))
    expect(page.get_by_test_id("stat-completed")).to_have_attribute(
        "data-value", str(totals["completed"]))
    expect(page.get_by_test_id("stat-failed")).to_have_attribute("data-value",
                                                                 str(totals["failed"]))
    expect(page.get_by_test_id("stat-storage")).to_have_attribute(
        "data-value", str(dashboard["storage"]["totalBytes"]))
    expect(page.get_by_test_id("stat-rate")).to_have_attribute(
        "data-value", str(totals["successRate"]))
    expect(page.get_by_test_id("health-shop")).to_contain_text(
        next(h["status"] for h in dashboard["health"] if h["source"] == "shop"))
    expect(page.locator("svg.chart").first).to_be_visible()


def test_start_a_backup_and_watch_it_complete(server: ConsoleServer, page: Page) -> None:
    sign_in(page, server.base, "admin")
    page.goto(f"{server.base}/backups")
    page.get_by_text("Start a database backup").click()
    page.locator("#start-source").fill("bulk")
    page.get_by_test_id("start-backup").click()
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]{24}$"))
    job_id = page.url.rsplit("/", 1)[1]
    seen: list[str] = []
    phases: set[str] = set()
    deadline = time.monotonic() + 120
    # The page refreshes itself (htmx); we only read what it shows.
    while time.monotonic() < deadline:
        status = page.get_by_test_id("job").get_attribute("data-status") or ""
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == "running" and page.get_by_test_id("phase").count():
            phases.add(page.get_by_test_id("phase").first.inner_text())
        if status in ("completed", "failed"):
            break
        page.wait_for_timeout(200)
    assert seen[-1] == "completed", (seen, server.log_path.read_text()[-3000:])
    assert "running" in seen, seen
    assert phases, "no progress was shown while the job ran"
    expect(page.get_by_test_id("job-status")).to_have_text("completed")
    job = server.api("GET", f"/api/backups/jobs/{job_id}").json()
    assert job["status"] == "completed"
    page.get_by_test_id("job-backup").click()
    expect(page.get_by_test_id("backup-status")).to_have_text("completed")


def test_restore_shows_its_plan_first_and_needs_the_confirmation(
        server: ConsoleServer, page: Page) -> None:
    backup_id = _backup(server)
    before = server.api("GET", "/api/backups/jobs", params={"kind": "restore"}).json()["total"]
    sign_in(page, server.base, OWNER)
    page.goto(f"{server.base}/backups/{backup_id}")
    expect(page.locator("#restore-confirm")).to_be_hidden()
    page.get_by_test_id("plan-restore").click()
    expect(page.get_by_test_id("plan")).to_contain_text("Restore plan")
    expect(page.get_by_test_id("plan-target")).to_have_text(server.database)
    confirm = page.locator("#restore-confirm")
    expect(confirm).to_be_visible()
    # Without the name: refused in the page, nothing sent.
    page.get_by_test_id("confirm-restore").click()
    expect(page.get_by_test_id("restore-out")).to_contain_text("to confirm")
    page.get_by_label("Type the target database's name to confirm").fill("some-other-db")
    page.get_by_test_id("confirm-restore").click()
    expect(page.get_by_test_id("restore-out")).to_contain_text(server.database)
    # And the server refuses it too, forced from the page without `confirm`.
    forced = page.evaluate("""async ([url, db]) => {
        const csrf = document.querySelector('meta[name=csrf-token]').content;
        const r = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json',
            'X-CSRF-Token': csrf}, body: JSON.stringify({targetDatabase: db})});
        return r.status; }""", [f"/api/backups/{backup_id}/restore", server.database])
    assert forced in (409, 422), forced
    after = server.api("GET", "/api/backups/jobs", params={"kind": "restore"}).json()["total"]
    assert after == before


def test_an_invalid_cron_is_refused_in_the_form(server: ConsoleServer, page: Page) -> None:
    sign_in(page, server.base, "admin")
    page.goto(f"{server.base}/schedules")
    page.get_by_label("Name").fill("nightly-ui")
    cron = page.get_by_label("Cron (minute hour day month weekday)")
    cron.fill("0 3 * * *")
    expect(page.get_by_test_id("cron-preview").locator("li")).to_have_count(5)
    cron.fill("61 3 * * *")
    expect(page.get_by_test_id("cron-preview")).to_contain_text("minute")
    assert cron.get_attribute("aria-invalid") == "true"
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url)
            if r.method == "POST" and "schedules" in r.url else None)
    page.get_by_test_id("save-schedule").click()
    # A valid one is created and listed with its next run.
    cron.fill("30 2 * * 1")
    expect(page.get_by_test_id("cron-preview").locator("li")).to_have_count(5)
    page.get_by_test_id("save-schedule").click()
    expect(page.get_by_test_id("schedules-table")).to_contain_text("nightly-ui")
    assert len(posts) == 1, posts  # the invalid form was never sent
    names = [s["name"] for s in server.api("GET", "/api/schedules").json()]
    assert "nightly-ui" in names


def test_a_viewer_sees_no_admin_action_and_is_refused_when_forcing(
        server: ConsoleServer, page: Page) -> None:
    backup_id = _backup(server)
    sign_in(page, server.base, "viewer")
    page.goto(f"{server.base}/backups/{backup_id}")
    expect(page.get_by_test_id("backup-status")).to_have_text("completed")
    # The verification history: the read-back right after the backup.
    expect(page.get_by_test_id("verification-history")).to_contain_text("after backup")
    for action in ("verify", "plan-restore", "delete"):
        expect(page.get_by_test_id(action)).to_have_count(0)
    page.goto(f"{server.base}/backups")
    expect(page.get_by_test_id("start-backup")).to_have_count(0)
    page.goto(f"{server.base}/schedules")
    expect(page.get_by_test_id("schedule-form")).to_have_count(0)
    expect(page.get_by_role("link", name="Users")).to_have_count(0)
    forced = page.evaluate("""async (url) => {
        const csrf = document.querySelector('meta[name=csrf-token]').content;
        const r = await fetch(url, {method: 'POST', headers: {'X-CSRF-Token': csrf}});
        return [r.status, (await r.json()).error.code]; }""",
                           f"/api/backups/{backup_id}/verify")
    assert forced == [403, "forbidden"]


def test_a_state_changing_request_without_the_csrf_token_is_refused(
        server: ConsoleServer, page: Page) -> None:
    backup_id = _backup(server)
    sign_in(page, server.base, "admin")
    result = page.evaluate("""async (url) => {
        const r = await fetch(url, {method: 'POST'});
        return [r.status, (await r.json()).error.code]; }""", f"/api/backups/{backup_id}/verify")
    assert result == [403, "csrf_failed"]
    wrong = page.evaluate("""async () => {
        const r = await fetch('/api/backups/database', {method: 'POST',
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': 'forged'},
            body: JSON.stringify({source: 'shop'})});
        return r.status; }""")
    assert wrong == 403
    # The same request with the page's token goes through; bearer clients need none.
    ok = page.evaluate("""async (url) => {
        const csrf = document.querySelector('meta[name=csrf-token]').content;
        const r = await fetch(url, {method: 'POST', headers: {'X-CSRF-Token': csrf}});
        return r.status; }""", f"/api/backups/{backup_id}/verify")
    assert ok == 202
    assert server.api("POST", f"/api/backups/{backup_id}/verify",
                      role="admin").status_code == 202


def test_sign_out_ends_the_session(server: ConsoleServer, page: Page) -> None:
    sign_in(page, server.base, "viewer")
    session = next(c["value"] for c in page.context.cookies()
                   if c["name"] == "backvault_session")
    page.get_by_test_id("sign-out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    assert not [c for c in page.context.cookies() if c["name"] == "backvault_session"]
    page.goto(f"{server.base}/jobs")
    expect(page).to_have_url(re.compile(r"/login\?next=/jobs$"))
    # Signing out without the CSRF token is refused (no forced sign-out from other sites).
    refused = httpx.post(f"{server.base}/logout", cookies={"backvault_session": session})
    assert refused.status_code == 403


def test_sources_show_no_credentials_and_admins_can_test_them(
        server: ConsoleServer, page: Page) -> None:
    sign_in(page, server.base, "admin")
    page.goto(f"{server.base}/sources")
    expect(page.locator("main")).to_contain_text("shop")
    expect(page.locator("main")).to_contain_text("127.0.0.1")
    html = page.content()
    assert "backvault:backvault" not in html
    assert "postgresql://" not in html
    page.get_by_test_id("test-shop").click()
    expect(page.locator("#test-shop")).to_contain_text("Reachable")
    page.context.clear_cookies()
    sign_in(page, server.base, "viewer")
    page.goto(f"{server.base}/sources")
    expect(page.locator("main")).to_contain_text("shop")
    expect(page.get_by_test_id("test-shop")).to_have_count(0)


def test_users_and_audit_pages_are_for_superadmins(server: ConsoleServer, page: Page) -> None:
    sign_in(page, server.base, OWNER)
    page.goto(f"{server.base}/users")
    expect(page.locator("main table")).to_contain_text("viewer")
    page.goto(f"{server.base}/audit")
    expect(page.locator("main table")).to_contain_text("/api/auth/users")
    page.context.clear_cookies()
    sign_in(page, server.base, "admin")
    expect(page.get_by_role("link", name="Audit")).to_have_count(0)
    page.goto(f"{server.base}/users")
    expect(page.get_by_role("alert")).to_contain_text("superadmin")


def test_schedules_are_disabled_edited_and_deleted_from_the_list(
        server: ConsoleServer, page: Page) -> None:
    made = server.api("POST", "/api/schedules", json={
        "name": "toggle-me", "kind": "database", "cron": "0 4 * * *", "sources": ["shop"]})
    assert made.status_code == 201, made.text
    schedule_id = made.json()["id"]
    sign_in(page, server.base, "admin")
    page.goto(f"{server.base}/schedules")
    row = page.locator("tr", has=page.get_by_role("link", name="toggle-me"))
    row.get_by_role("button", name="Disable").click()
    expect(row.get_by_role("button", name="Enable")).to_be_visible()
    assert server.api("GET", f"/api/schedules/{schedule_id}").json()["enabled"] is False
    page.get_by_role("link", name="toggle-me").click()
    page.get_by_label("Cron (minute hour day month weekday)").fill("45 5 * * *")
    expect(page.get_by_test_id("cron-preview").locator("li").first).to_contain_text("05:45")
    page.get_by_test_id("save-schedule").click()
    expect(page.locator("main")).to_contain_text("45 5 * * *")
    assert server.api("GET", f"/api/schedules/{schedule_id}").json()["cron"] == "45 5 * * *"
    page.goto(f"{server.base}/schedules")
    row.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("link", name="toggle-me")).to_have_count(0)
    assert server.api("GET", f"/api/schedules/{schedule_id}").status_code == 404


def test_delete_keeps_the_apis_safety_rules(server: ConsoleServer, page: Page) -> None:
    backup_id = _backup(server)
    sign_in(page, server.base, OWNER)
    page.goto(f"{server.base}/backups/{backup_id}")
    page.get_by_label("Force (below the retention minimum)").check()
    page.get_by_test_id("delete").click()
    # Force without a reason: the API's 422, shown in the page.
    expect(page.locator("#delete-out")).to_contain_text("reason")
    assert server.api("GET", f"/api/backups/{backup_id}").json()["status"] == "completed"
    page.get_by_label("Reason").fill("console test")
    page.get_by_test_id("delete").click()
    expect(page.get_by_test_id("backup-status")).to_have_text("deleted")
    deleted = server.api("GET", f"/api/backups/{backup_id}").json()
    assert deleted["status"] == "deleted"
    assert deleted["deletedBy"] == OWNER


def test_the_backups_list_filters_and_pages_like_the_api(
        server: ConsoleServer, page: Page) -> None:
    _backup(server)
    sign_in(page, server.base, "viewer")
    page.goto(f"{server.base}/backups")
    page.get_by_label("Status").select_option("completed")
    page.get_by_label("Source").fill("shop")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"status=completed.*source=shop"))
    api = server.api("GET", "/api/backups", params={"status": "completed", "source": "shop",
                                                    "limit": 20}).json()
    rows = page.get_by_test_id("backups-table").locator("tbody tr")
    expect(rows).to_have_count(len(api["items"]))
    expect(page.get_by_role("navigation", name="Pages")).to_contain_text(
        f"{api['total']} in all")
    page.get_by_label("Status").select_option("restored")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_test_id("backups-table")).to_contain_text("No backup matches.")


def test_an_admin_adds_and_removes_a_runtime_source(server: ConsoleServer, page: Page) -> None:
    sign_in(page, server.base, "admin")
    page.goto(f"{server.base}/sources")
    uri = pg_uri(server.database)
    page.get_by_label("Name", exact=True).fill("runtime-db")
    page.get_by_label("Connection URI (stored encrypted, never shown again)").fill(uri)
    page.get_by_role("button", name="Add source").click()
    table = page.get_by_test_id("managed-table")
    expect(table).to_contain_text("runtime-db")
    assert uri not in page.content()
    row = table.locator("tr", has_text="runtime-db")
    row.get_by_role("button", name="Remove").click()
    expect(page.locator("#managed-out")).to_contain_text("confirm")
    row.get_by_label("Type runtime-db to remove it").fill("runtime-db")
    row.get_by_role("button", name="Remove").click()
    expect(table).not_to_contain_text("runtime-db")


def test_an_admin_cancels_a_running_job(server: ConsoleServer, page: Page) -> None:
    started = server.api("POST", "/api/backups/database", role="admin",
                         json={"source": "bulk"})
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    sign_in(page, server.base, "admin")
    page.goto(f"{server.base}/jobs/{job_id}")
    page.get_by_test_id("cancel-job").click()
    expect(page.get_by_test_id("job")).to_have_attribute("data-status", "failed",
                                                          timeout=60_000)
    job = server.api("GET", f"/api/backups/jobs/{job_id}").json()
    assert job["status"] == "failed"
    assert job["cancelRequestedBy"] == "admin"
    expect(page.locator("main")).to_contain_text("cancelled")


def test_refreshes_do_not_shift_the_layout(server: ConsoleServer, page: Page) -> None:
    sign_in(page, server.base, OWNER)
    page.evaluate("""() => { window.__shift = 0; new PerformanceObserver((list) => {
        for (const e of list.getEntries()) if (!e.hadRecentInput) window.__shift += e.value;
    }).observe({type: 'layout-shift', buffered: false}); }""")
    server.api("POST", "/api/backups/database", json={"source": "bulk"})
    # The running-jobs box refreshes every 2 s: a job comes and goes meanwhile.
    expect(page.get_by_test_id("active-job")).to_have_count(1, timeout=15_000)
    expect(page.get_by_test_id("active-job")).to_have_count(0, timeout=60_000)
    assert page.evaluate("window.__shift") < 0.01
