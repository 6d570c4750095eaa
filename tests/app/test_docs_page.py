"""The API's docs work offline: ground segments often have no internet, so /docs and /redoc
load their scripts and styles from this service, and a real browser with no route outside
the machine renders the operations."""

from __future__ import annotations

import re
import shutil
import subprocess

import httpx
import pytest

from tests.workers.servers import http_service

PAGES = ("/docs", "/redoc")
# Every host name resolves to nothing but the loopback address: a page that needs a CDN stays blank.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


@pytest.fixture()
def server(service_env, tmp_path) -> str:
    """uvicorn serving the app on a free loopback port; its base URL."""
    uvicorn = ["uvicorn", "app.main:app", "--host", "127.0.0.1"]
    with http_service(uvicorn, tmp_path, tmp_path / "uvicorn.log") as (_, base):
        yield base


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium is not installed (`apt-get install chromium`; .ci/run does this)")
    return binary


def test_the_root_sends_a_visitor_to_the_docs(server):
    answer = httpx.get(server + "/")
    assert answer.status_code in (307, 308) and answer.headers["location"] == "/docs"


@pytest.mark.parametrize("page", PAGES)
def test_the_docs_pages_load_everything_from_this_service(server, page):
    html = httpx.get(server + page).text
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert any(a.endswith(".js") for a in assets), html
    assert not re.search(r"https?://", html), f"{page} names another host:\n{html}"
    for asset in assets:
        answer = httpx.get(server + asset)
        assert answer.status_code == 200 and len(answer.content) > 0, asset


@pytest.mark.parametrize("page", PAGES)
def test_a_browser_without_network_renders_the_operations(server, chromium, tmp_path, page):
    """The page as sent names no operation; only its scripts, run on the fetched OpenAPI
    document, write them into the DOM."""
    assert "/v1/compress" not in httpx.get(server + page).text
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'profile'}", OFFLINE, "--virtual-time-budget=30000",
                          "--dump-dom", server + page], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-3000:]
    assert "/v1/compress" in dom.stdout and "/v1/jobs/{job_id}" in dom.stdout, dom.stdout[-3000:]
