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
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from raycluster import RAY, SERVE, _free_port, local_cluster, serve_deploy, wait_healthy

REPO = Path(__file__).resolve().parent.parent
KEY = "test-key-not-a-secret"
SCHEMA = "CREATE TABLE singer (singer_id INTEGER, name TEXT, country TEXT, age INTEGER)"
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
                 f"trial.overrides.model.name_or_path={tiny_model_dir}"],
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
            serve_deploy(path, c["dashboard"], c["env"])
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, c["dashboard"], c["env"])
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
    return next(m["adapter_id"] for m in r.json()["data"] if m["id"] == "sql")


def _login(page, user: str, password: str) -> None:
    page.wait_for_selector("input[type=password]", timeout=60_000)
    page.fill("input[type=text]", user)
    page.fill("input[type=password]", password)
    page.get_by_role("button", name="Login").click()


def _text(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def _wait_text(page, selector: str, *needles: str, timeout_s: float = 60) -> str:
    deadline = time.time() + timeout_s
    while True:
        text = _text(page, selector) if page.locator(selector).count() else ""
        if all(n in text for n in needles):
            return text
        if time.time() > deadline:
            page.screenshot(path=str(Path(os.environ.get("UI_SCREENSHOTS") or "/tmp") / "failed.png"), full_page=True)
            raise AssertionError(f"{selector} never showed {needles}: {text!r}")
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
        _login(page, "tester", "wrong")
        page.wait_for_timeout(2000)
        assert page.locator("#leaderboard").count() == 0  # a wrong key shows nothing
        page.goto(f"{url}/ui/")
        _login(page, "tester", KEY)  # the key, as the login's password

        # Sweeps: the sweep's trials, each once, with their states; its learning curves drawn
        table = _wait_text(page, "#leaderboard", "finished")
        states = [f"stopped by ASHA at step {t['steps']}" if t["state"] == "stopped" else t["state"]
                  for t in summary["trials"]]
        for state in set(states):  # each trial once, with its state
            assert table.count(state) == states.count(state), (state, table)
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

        # Live metrics: from the cluster's Prometheus, after some traffic
        for i in range(12):
            r = requests.post(f"{url}/v1/sql", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                              json={"question": f"How many singers are older than {i}?", "schema": SCHEMA,
                                    "max_tokens": 8})
            assert r.status_code == 200, r.text
            time.sleep(1)
        page.get_by_role("tab", name="Live metrics").click()
        if live["prometheus"]:
            _wait_text(page, "#metrics-status", "From Prometheus", timeout_s=60)
            for chart in ("requests", "latency", "tokens", "batch"):  # (Serve's replica gauge comes when it comes)
                page.wait_for_selector(f"#metric-{chart} svg.marks", timeout=90_000)
            routes = _wait_text(page, "#metric-routes", "/v1/sql", timeout_s=60)  # the requests above, by route
            assert re.search(r"/v1/sql\s+200\s", routes), routes
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


# ------------------------------------------------------------------ the views' data, without Ray or a browser


def _sweep_folder(storage: Path, sweep_id: str, summary: dict | None, progress: dict[str, list[dict]]) -> None:
    folder = storage / sweep_id
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps({"sweep_id": sweep_id, "config": {
        "objective": {"eval_slice": 16}, "trial": {"overrides": {"train.max_steps": 24}},
        "promotion": {"split": "dev", "examples": 5, "level": 0.1}}}))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    for name, rows in progress.items():
        (folder / name).mkdir()
        keys = list(rows[0])
        (folder / name / "progress.csv").write_text(
            ",".join(keys) + "\n" + "\n".join(",".join(str(r[k]) for k in keys) for r in rows) + "\n")


def test_the_sweep_view_says_why_each_trial_ended_and_gives_each_accuracy_its_interval(tmp_path):
    from serving.ui import sweep_list, sweep_view
    from shared.heldout import wilson

    metric = "eval/sql_exec_acc"
    trials = [
        {"trial_number": 0, "state": "finished", "steps": 24, "objective": 0.5, metric: 0.5, "position": 1,
         "sample": {"lora.rank": 8}},
        {"trial_number": 1, "state": "stopped", "steps": 6, "objective": 0.25, metric: 0.25, "position": 2,
         "sample": {"lora.rank": 32}},
        {"trial_number": 2, "state": "failed", "steps": 3, "objective": None, metric: None, "position": None,
         "error": "RuntimeError: out of memory", "sample": {"lora.rank": 64}},
    ]
    summary = {"sweep_id": "sql-x-20261205-010000", "task": "sql", "objective": {"metric": metric, "mode": "max"},
               "selection": {"why": "trial 0 re-scored", "rescored": [
                   {"trial_number": 0, "accuracy": 0.4, "n": 32, "interval": [0.25, 0.57]}]},
               "promotion": {"action": "promoted", "why": "no adapter was served"},
               "importances": {"values": {"lora.rank": 1.0}, "note": "PED-ANOVA over 3 trials"},
               "best_adapter": "/x/sql-x-20261205-010000/best_adapter", "trials": trials}
    progress = {"trial-000-aaaa": [{"train/steps": s, "sweep/objective": s / 48, metric: s / 48, "eval/loss": 3 - s / 12}
                                   for s in (6, 12, 18, 24)],
                "trial-001-bbbb": [{"train/steps": 6, "sweep/objective": 0.25, metric: 0.25, "eval/loss": 2.9}]}
    _sweep_folder(tmp_path, "sql-x-20261205-010000", summary, progress)
    _sweep_folder(tmp_path, "sql-y-20261205-020000", None, {"trial-000-cccc": [
        {"train/steps": 6, "sweep/objective": 0.1, metric: 0.0, "eval/loss": 3.0}]})

    assert sweep_list(str(tmp_path)) == ["sql-y-20261205-020000", "sql-x-20261205-010000"]  # newest first
    head, rows, curves, importances = sweep_view(str(tmp_path), "sql-x-20261205-010000")
    by_trial = {r["trial"]: r for r in rows.to_dict("records")}
    assert by_trial[0]["95% interval"] == "[0.250, 0.570]" and by_trial[0]["on"] == "32 re-scored"
    lo, hi = wilson(4, 16)
    assert by_trial[1]["95% interval"] == f"[{lo:.3f}, {hi:.3f}]" and by_trial[1]["on"] == "16 rung slice"
    assert by_trial[1]["state"] == "stopped by ASHA at step 6"
    assert by_trial[2]["state"] == "failed: RuntimeError: out of memory" and by_trial[2]["95% interval"] == ""
    assert list(rows["trial"])[:2] == [0, 1]  # leaderboard order; the failed trial last
    assert set(curves["trial"]) == {"trial 0", "trial 1 (ASHA stop at 6)"}
    assert curves[curves["trial"] == "trial 0"]["step"].tolist() == [6, 12, 18, 24]
    assert curves.attrs["metric"] == "sweep/objective"
    loss = sweep_view(str(tmp_path), "sql-x-20261205-010000", "eval/loss")[2]
    assert loss.attrs["metric"] == "eval/loss" and loss["value"].max() == 2.9
    assert importances.to_dict("records") == [{"parameter": "lora.rank", "importance": 1.0}]
    assert "re-scored" in head and "promoted" in head

    head, rows, curves, _ = sweep_view(str(tmp_path), "sql-y-20261205-020000")  # still running: no summary
    assert "in progress" in head and rows.to_dict("records")[0]["steps"] == 6 and len(curves) == 1


def test_the_gate_shows_figures_then_promotes_with_the_same_scores_and_refuses_a_stale_check(tmp_path, monkeypatch):
    from serving import ui
    from shared.promotion import point_latest, read_history
    from shared.storage import read_latest

    storage = tmp_path / "store"
    _sweep_folder(storage, "sql-x-20261205-010000", None, {})
    cand, cur, other = (str(storage / "sql-x-20261205-010000" / "best_adapter"), str(tmp_path / "cur"),
                        str(tmp_path / "other"))
    for folder in (cand, cur, other):
        Path(folder).mkdir(parents=True)
    point_latest(str(storage), "sql", cur)
    asked = []
    monkeypatch.setattr("shared.heldout.heldout_examples", lambda location, split, n: [{"question": str(i)} for i in range(n)])

    def score(location, examples):
        asked.append((location, len(examples)))
        return [True] * len(examples) if location == cand else [False] * len(examples)

    text, checked = ui.check_gate(str(storage), "sql", cand, score)
    assert asked == [(cand, 5), (cur, 5)]  # the candidate's sweep's gate: 5 examples, level 0.1
    assert "1.000" in text and "0.000" in text and ": shown better" in text and "level 0.1" in text
    entry = ui.promote_checked(str(storage), "sql", checked, force=False, who="tester (page)")
    assert entry["action"] == "promoted" and entry["who"] == "tester (page)" and entry["source"] == "page"
    assert len(asked) == 2  # promoted on the figures shown, not scored again
    assert read_latest(str(storage), "sql")["adapter"] == str(Path(cand).resolve())
    assert "back to `cur`" in ui.rollback_preview(str(storage), "sql")

    text, checked = ui.check_gate(str(storage), "sql", other, score)
    point_latest(str(storage), "sql", cur)  # someone else moved latest since the check
    with pytest.raises(ValueError, match="changed since the check"):
        ui.promote_checked(str(storage), "sql", checked, force=True)
    assert [e["action"] for e in read_history(str(storage), "sql")] == ["promoted"]


def test_live_metrics_say_which_prometheus_did_not_answer():
    from serving.ui import CHARTS, live_metrics

    status, frames, table = live_metrics(f"http://127.0.0.1:{_free_port()}", 5)
    assert "did not answer" in status and "127.0.0.1" in status
    assert set(frames) == set(CHARTS) and all(df.empty for df in frames.values()) and table.empty


def test_the_sweep_view_reads_a_sweep_in_object_storage(tmp_path):
    from s3server import s3_server

    from serving.ui import candidates, sweep_list, sweep_view
    from shared.storage import put_dir

    metric = "eval/code_pass_at_1"
    summary = {"sweep_id": "code-s3-20261205-030000", "task": "code", "objective": {"metric": metric, "mode": "max"},
               "best_adapter": "s3://sweeps/root/code-s3-20261205-030000/best_adapter",
               "trials": [{"trial_number": 0, "state": "finished", "steps": 12, "objective": 0.2, metric: 0.1875,
                           "position": 1}]}
    _sweep_folder(tmp_path, "code-s3-20261205-030000", summary,
                  {"trial-000-dddd": [{"train/steps": 12, "sweep/objective": 0.2, metric: 0.1875, "eval/loss": 1.0}]})
    with s3_server() as s3:
        root = f"s3://{s3['bucket']}/root"
        put_dir(tmp_path / "code-s3-20261205-030000", f"{root}/code-s3-20261205-030000")
        assert sweep_list(root) == ["code-s3-20261205-030000"]
        head, rows, curves, _ = sweep_view(root, "code-s3-20261205-030000")
        assert rows.to_dict("records")[0]["state"] == "finished" and rows.to_dict("records")[0]["on"] == "16 rung slice"
        assert curves["step"].tolist() == [12]
        assert candidates(root, "code") == [summary["best_adapter"]] and candidates(root, "sql") == []
