"""The app's page (/ui, serving/ui.py) in a real browser against a live app: Debian's Chromium, headless, driven by
Playwright (which downloads no browser here), on a real local Ray cluster where a real smoke sweep ran as a Ray job
and `serve deploy` serves its storage, with the cluster's Prometheus when Debian's package is installed.

The browser logs in with the server's API key, finds the sweep's trials in the leaderboard and its learning curves
drawn, asks the playground for SQL, runs the promotion gate (its figures shown before any promotion), rolls back,
and sees /v1/models serve the adapter before; the live metrics come from Prometheus. Every view is saved as a
screenshot (UI_SCREENSHOTS=<folder> keeps them; the README's is one of them). Without Ray or a browser, the mount's
own behaviour (off -> 404, the key asked for) is checked with a test client.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from raycluster import RAY, _free_port, local_cluster

REPO = Path(__file__).resolve().parent.parent
SERVE = str(Path(RAY).with_name("serve"))
KEY = "test-key-not-a-secret"
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")


def _train(tiny_model_dir: Path, out: Path, name: str, seed: int) -> Path:
    from shared.config import load_config
    from shared.trial import run_trial

    cfg = load_config(REPO / "configs/sql_micro_smoke.yaml", [
        f"model.name_or_path={tiny_model_dir}", f"output.dir={out}", f"output.name={name}", f"train.seed={seed}",
        "eval.max_examples=2",
    ])
    run_trial(cfg)
    return out / name


def _serve_config(port: int, storage: Path, prometheus_url: str) -> dict:
    cfg = yaml.safe_load((REPO / "serving" / "config.yaml").read_text())
    cfg["http_options"]["port"] = port
    args = cfg["applications"][0]["args"]
    args.update({"adapters": {"sql": "latest:sql"}, "storage_path": str(storage), "latest_poll_s": 1})
    args["limits"].update({"max_new_tokens": 48, "default_new_tokens": 24})
    args["model"].update({"autoscaling": {"min_replicas": 1, "max_replicas": 1}})
    args["page"]["prometheus_url"] = prometheus_url
    return cfg


@pytest.fixture(scope="module")
def live(tiny_model_dir, tmp_path_factory):
    """A cluster (and its Prometheus), a smoke sweep's storage with a second adapter promoted over the sweep's
    winner, and the app serving latest:sql from it behind an API key."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (`make browser-deps` installs Debian's as root)")
    from shared.promotion import promote

    from sweeps import prometheus

    os.environ["QLORA_SERVE_API_KEY"] = KEY  # the cluster's processes inherit it; the config never holds it
    prom_port = _free_port()
    prom_url = prometheus.url(prom_port)
    try:
        with local_cluster(model=str(tiny_model_dir), metrics_report_interval_ms=1000, prometheus_url=prom_url) as c:
            prom = prometheus.start(c["temp"], prom_port, scrape_s=1) if shutil.which("prometheus") else None
            storage = Path(c["storage"])
            job = subprocess.run(
                [RAY, "job", "submit", "--address", c["dashboard"], "--working-dir", str(REPO), "--", sys.executable,
                 "-m", "sweeps.run", "--config", "configs/sweeps/sql_smoke.yaml", f"storage_path={storage}",
                 f"trial.overrides.model.name_or_path={tiny_model_dir}", "search.num_trials=3"],
                env=c["env"], cwd=REPO, capture_output=True, text=True, timeout=900)
            assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
            sweep_id = next(p.name for p in storage.iterdir() if p.name.startswith("sql-smoke-"))
            winner = storage / sweep_id / "best_adapter"
            assert json.loads((storage / "latest" / "sql.json").read_text())["adapter"] == str(winner.resolve())
            other = _train(tiny_model_dir, tmp_path_factory.mktemp("other"), "sql-other", 7)
            promote(str(storage), "sql", str(other), scorer=lambda location, examples: [True] * len(examples),
                    examples=[{"question": "q"}], digest="test", level=0.05, force=True, source="test")
            port = _free_port()
            path = Path(c["temp"]) / "serve.yaml"
            path.write_text(yaml.safe_dump(_serve_config(port, storage, prom_url)))
            out = subprocess.run([SERVE, "deploy", str(path), "--address", c["dashboard"]], env=c["env"], cwd=REPO,
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stdout + out.stderr
            url = f"http://127.0.0.1:{port}"
            deadline = time.time() + 300
            while True:
                try:
                    if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                assert time.time() < deadline, "the app did not come up in 300 s"
                time.sleep(2)
            yield {"url": url, "storage": storage, "sweep_id": sweep_id, "winner": winner, "other": other,
                   "prometheus": prom is not None}
            subprocess.run([SERVE, "shutdown", "-y", "--address", c["dashboard"]], env=c["env"], capture_output=True,
                           timeout=120)
            if prom is not None:
                prometheus.stop(c["temp"])
    finally:
        os.environ.pop("QLORA_SERVE_API_KEY", None)


def _sql_model_id(url: str) -> str:
    r = requests.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    r.raise_for_status()
    return next(m["id"] for m in r.json()["data"] if m["id"].startswith("sql@"))


def _text(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def _wait_text(page, selector: str, *needles: str, timeout_s: float = 60) -> str:
    deadline = time.time() + timeout_s
    while True:
        text = _text(page, selector) if page.locator(selector).count() else ""
        if all(n in text for n in needles):
            return text
        assert time.time() < deadline, f"{selector} never showed {needles}: {text!r}"
        page.wait_for_timeout(500)


@pytest.mark.ray
@pytest.mark.browser
@pytest.mark.timeout(1500)
def test_the_page_in_a_browser_shows_the_sweep_writes_sql_gates_and_rolls_back(live, tmp_path):
    from playwright.sync_api import sync_playwright

    from serving.registry import load

    shots = Path(os.environ.get("UI_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    storage, url = live["storage"], live["url"]
    summary = json.loads((storage / live["sweep_id"] / "summary.json").read_text())
    outside = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(url) else None)
        page.goto(f"{url}/ui/")
        # the key, as the login's password
        page.fill("input[type=text]", "tester")
        page.fill("input[type=password]", "wrong")
        page.keyboard.press("Enter")
        page.wait_for_timeout(1500)
        assert page.locator("#leaderboard").count() == 0  # a wrong key shows nothing
        page.fill("input[type=password]", KEY)
        page.keyboard.press("Enter")

        # Sweeps: the sweep's trials, each once, with their states; its learning curves drawn
        table = _wait_text(page, "#leaderboard", "finished")
        for t in summary["trials"]:
            state = "stopped by ASHA" if t["state"] == "stopped" else t["state"]
            assert state in table, (state, table)
        assert len(page.locator("#leaderboard tbody tr").all()) == len(summary["trials"])
        assert live["sweep_id"] in _text(page, "#sweep-head")
        page.wait_for_selector("#curves svg.marks", timeout=30_000)
        page.screenshot(path=str(shots / "sweeps.png"), full_page=True)

        # Playground: SQL for a schema, checked, and (when valid) run on a database synthesized from it
        page.get_by_role("tab", name="Playground").click()
        page.locator("#pg-sql-go").click()
        verdict = _wait_text(page, "#pg-sql-verdict", "adapter")
        assert "valid" in verdict
        assert _text(page, "#pg-sql .cm-content").strip()
        page.screenshot(path=str(shots / "playground.png"), full_page=True)

        # Served adapters: what latest names, the gate's figures before any click, then a rollback
        page.get_by_role("tab", name="Served adapters").click()
        head = _wait_text(page, "#served-head", "latest/sql", live["other"].name)
        assert "sql@" in head
        assert "back to" in _wait_text(page, "#rollback-preview", live["sweep_id"])
        before = _sql_model_id(url)
        page.locator("#gate-check").click()
        figures = _wait_text(page, "#gate-figures", "candidate", "p =", timeout_s=300)
        assert "first 32 examples" in figures  # the sweep's own gate: promotion.examples of sql_smoke.yaml
        page.screenshot(path=str(shots / "served.png"), full_page=True)
        page.locator("#rollback").click()
        assert "rolled back" in _wait_text(page, "#served-action", "rolled back")
        want = load("sql", str(live["winner"]), str(storage)).model_id
        deadline = time.time() + 60
        while _sql_model_id(url) != want:
            assert time.time() < deadline, f"/v1/models still serves {_sql_model_id(url)}, not {want}"
            time.sleep(1)
        assert want != before
        history = json.loads((storage / "latest" / "sql.history.json").read_text())
        assert history[-1]["action"] == "rolled_back" and history[-1]["who"] == "tester (page)"
        assert "rolled_back" in _wait_text(page, "#history", "rolled_back")

        # Live metrics: from the cluster's Prometheus, the app's request series among them
        page.get_by_role("tab", name="Live metrics").click()
        if live["prometheus"]:
            _wait_text(page, "#metrics-status", "From Prometheus", timeout_s=60)
            page.wait_for_selector("#metric-requests svg.marks", timeout=90_000)
        else:
            assert "did not answer" in _wait_text(page, "#metrics-status", "Prometheus")
        page.screenshot(path=str(shots / "metrics.png"), full_page=True)
        browser.close()
    assert not outside, f"the page asked for something outside the app: {outside[:5]}"


def test_the_page_is_off_with_page_enabled_false_and_asks_for_the_key_when_there_is_one(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from serving.app import Service, create_app, install
    from serving.config import load_app_config
    from serving.http import api_key_hash
    from test_serving_routes import FakeGenerator, adapter_folder

    folder = adapter_folder(tmp_path / "sql", "sql")
    monkeypatch.setenv("T_PAGE_KEY", KEY)
    off = create_app()
    install(off, Service(FakeGenerator(), load_app_config({"adapters": {"sql": str(folder)},
                                                          "page": {"enabled": False}})))
    r = TestClient(off).get("/ui/")
    assert r.status_code == 404 and "page.enabled" in r.json()["error"]["message"]

    on = create_app()
    install(on, Service(FakeGenerator(), load_app_config({"adapters": {"sql": str(folder)}}), api_key_hash("T_PAGE_KEY")))
    with TestClient(on) as client:
        assert client.get("/ui/").status_code == 200  # the page (its login form)
        assert client.get("/ui/config").status_code == 401  # its contents: not without the key
        assert client.post("/ui/login", data={"username": "x", "password": "wrong"}).status_code == 400
        assert client.post("/ui/login", data={"username": "x", "password": KEY}).status_code == 200
        assert client.get("/ui/config").status_code == 200
