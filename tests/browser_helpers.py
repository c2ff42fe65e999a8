"""Test helper: a real headless Chromium (Debian's ``chromium``, driven by Playwright with
``executable_path``; no browser download) for the served page's tests."""

from __future__ import annotations

import shutil

import pytest
from playwright import sync_api

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:  # .ci/run installs it; a developer machine without it says so plainly
    pytest.fail("Chromium is not installed (apt-get install chromium); the browser tests need it", pytrace=False)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


__all__ = ["CHROMIUM", "browser"]
