"""The HTTP app in process, with FastAPI's TestClient: fast, no Ray, no model."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def client():
    from serving.app import api

    with TestClient(api, base_url="http://127.0.0.1") as c:
        yield c


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_everything_from_the_app_itself(client, page):
    """No CDN: every URL in the page is this server's own, and each asset it names is served here."""
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    hosts = set(re.findall(r"(?:https?:)?//([A-Za-z0-9.-]+)", r.text))
    assert not hosts, f"{page} references outside hosts: {sorted(hosts)}"
    assets = re.findall(r"""(?:src|href)=["']?(/[^"' >]+)""", r.text) + re.findall(r"""url: ?['"](/[^'"]+)""", r.text)
    assert any(a.endswith(".js") for a in assets), r.text
    for a in assets:
        got = client.get(a)
        assert got.status_code == 200 and len(got.content) > 100, a
    assert client.get("/docs-assets/../config.py").status_code == 404
