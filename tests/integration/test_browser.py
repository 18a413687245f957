"""A new user's journey in a real browser (playwright driving Debian's chromium, headless),
against a live registry on real PostgreSQL, Redis and a celery worker process.

sign up → register a model → commit its keys → submit a stolen copy → watch progress live →
open the report → download it → `hallmark audit` passes on the downloaded file; plus the
error paths a user meets, each asserting the page text, and the report page on a phone.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from registry.demo import export_onnx, stolen_and_independent, train_marked_model
from verifier.cli import main as hallmark

pytestmark = pytest.mark.django_db(transaction=True)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "a long browser password"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread while the browser
    # lives; Django's (synchronous) test-database teardown would refuse to run beside it.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            yield b
            b.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture(scope="module")
def marked_and_stolen():  # type: ignore[no-untyped-def]
    marked = train_marked_model(seed=0)
    stolen, _ = stolen_and_independent(marked)
    return marked, stolen


def _sign_up(page, base: str, username: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/signup/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("button:has-text('Create account')")
    page.wait_for_url(f"{base}/dashboard/")


def test_a_new_user_registers_verifies_and_audits_in_the_browser(
        browser, live_server, celery_worker, file_server, marked_and_stolen, tmp_path):
    marked, stolen = marked_and_stolen
    served, folder = file_server
    export_onnx(stolen, folder / "browser-stolen.onnx")
    base = live_server.url
    page = browser.new_page()
    page.set_default_timeout(30_000)

    _sign_up(page, base, "browser-alice")
    page.click("text=Register a model")
    page.fill("input[name=name]", "digits")
    page.fill("input[name=version]", "1")
    page.click("button:has-text('Register')")
    page.wait_for_url(f"{base}/models/**")
    model_url = page.url
    for scheme, blob in marked.keys.items():
        key = tmp_path / f"{scheme}.key"
        key.write_bytes(blob)
        page.set_input_files("input[name=key]", str(key))
        page.click("button:has-text('Commit')")
        assert f"Committed {scheme} key" in page.inner_text("body")
    assert "log index" in page.inner_text("body").lower()

    page.click("text=Submit a suspect")
    page.fill("input[name=url]", f"{served}/browser-stolen.onnx")
    page.select_option("select[name=target]", label="digits v1")
    page.click("button:has-text('Submit')")
    page.wait_for_url(f"{base}/verifications/**")
    page.evaluate("window.__notReloaded = true")  # gone if the page reloads
    page.wait_for_selector("#report a", timeout=240_000)
    assert page.evaluate("window.__notReloaded === true"), "the progress page reloaded itself"

    page.click("#report a")
    page.wait_for_url(f"{base}/reports/**")
    assert "Attributed" in page.inner_text("main")
    with page.expect_download() as download:
        page.click("text=Download the signed report")
    report = tmp_path / "report.json"
    download.value.save_as(report)
    assert hallmark(["audit", str(report)]) == 0

    # The same report on a phone: no horizontal scrolling.
    phone = browser.new_page(viewport={"width": 390, "height": 844})
    phone.goto(page.url)
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    phone.close()

    # Error paths, each with the words a user reads.
    page.goto(f"{base}/models/new/")
    page.fill("input[name=name]", "digits")
    page.fill("input[name=version]", "1")
    page.click("button:has-text('Register')")
    assert "bump the version" in page.inner_text("main")
    page.fill("input[name=version]", "2")
    page.fill("input[name=artifact_sha256]", "not-a-hash")
    page.click("button:has-text('Register')")
    assert "64 lowercase hex" in page.inner_text("main")
    page.goto(model_url)
    page.set_input_files("input[name=key]", str(tmp_path / "report.json"))
    page.click("button:has-text('Commit')")
    assert "not a usable Hallmark key" in page.inner_text("main")
    page.goto(f"{base}/no/such/page/")
    assert "Not Found" in page.inner_text("body")
    page.close()


def test_a_wrong_password_is_refused_with_a_message(browser, live_server):
    page = browser.new_page()
    _sign_up(page, live_server.url, "browser-bob")
    page.click("button:has-text('Log out')")
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "browser-bob")
    page.fill("input[name=password]", "not the password")
    page.click("button:has-text('Log in')")
    assert "enter a correct username and password" in page.inner_text("main").lower()
    assert "Sign up" in page.inner_text("main")  # the way forward for someone without an account
    page.close()
