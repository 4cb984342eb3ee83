"""The end of the main job: deploy the sweeps' best adapters and ask them something.

    python -m serving.demo                 # after `make demo`'s sweeps: serve deploy serving/config.yaml, then
                                           # one text-to-SQL and one code request, answers printed

Deploys serving/config.yaml (adapters from <storage_path>/latest/<task>.json) with `serve deploy` onto the
running cluster, waits for /healthz, sends a bundled example of each task that has an adapter, and prints the
answers, the endpoint and the dashboard. The SQL question is on a held-out schema (the `test_unseen` split: no
table or column name of it was in training), and the answer and the expected query are run on its small
database, in the project's sandboxed SQL executor, with their rows shown. The app keeps running;
`serve shutdown -y` or `make stop` ends it.

    python -m serving.demo --storage-path ~/qlora-sweeps-smollm2 --sql-example ../shared/data/spider/dev_14db.jsonl
                                           # another storage's winners; the SQL question of a JSONL record
                                           # (question, context: its CREATE TABLE schema), e.g. a Spider one
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

from shared.config import DataConfig
from shared.data.loaders import load_splits
from shared.paths import REPO_ROOT


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=REPO_ROOT / "serving" / "config.yaml", help="Serve config to deploy")
    ap.add_argument("--address", default=os.environ.get("RAY_DASHBOARD_ADDRESS", "http://127.0.0.1:8265"),
                    help="the Ray dashboard (serve deploy goes through it)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for the app to come up")
    ap.add_argument("--storage-path", help="serve the winners of this storage instead of the config's storage_path")
    ap.add_argument("--sql-example", type=Path, help="ask the SQL adapter the first record of this JSONL (question, "
                    "context) instead of a bundled dev example")
    args = ap.parse_args(argv)

    serve_cfg = yaml.safe_load(args.config.read_text())
    if args.storage_path:  # the same app, another storage: deployed from a copy of the config
        for app in serve_cfg["applications"]:
            app["args"]["storage_path"] = args.storage_path
        copy = Path(tempfile.mkdtemp(prefix="serve-demo-")) / args.config.name
        copy.write_text(yaml.safe_dump(serve_cfg, sort_keys=False))
        args.config = copy
    http = serve_cfg.get("http_options", {})
    url = f"http://{http.get('host', '127.0.0.1')}:{http.get('port', 8000)}"
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
    serve = str(Path(sys.executable).with_name("serve"))
    print(f"serve deploy {args.config} --address {args.address}", flush=True)
    out = subprocess.run([serve, "deploy", str(args.config), "--address", args.address], env=env, text=True,
                         capture_output=True)
    if out.returncode:
        print(out.stdout + out.stderr, file=sys.stderr)
        return 1

    deadline = time.time() + args.timeout
    health: dict = {}
    while time.time() < deadline:
        try:
            r = requests.get(f"{url}/healthz", timeout=5)
            if r.status_code == 200:
                health = r.json()
                break
        except requests.RequestException:
            pass
        time.sleep(2)
    else:
        status = subprocess.run([serve, "status", "--address", args.address], env=env, text=True, capture_output=True)
        print(f"the app did not answer /healthz in {args.timeout:.0f} s:\n{status.stdout}", file=sys.stderr)
        return 1

    key = os.environ.get("QLORA_SERVE_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answered = 0
    for task in ("sql", "code"):
        if task not in health.get("adapters", []):
            print(f"\n[{task}] no adapter: {health.get('unavailable', {}).get(task, 'not configured')}")
            continue
        splits = load_splits(DataConfig(task=task, source="bundled"))
        example = splits["test_unseen"][0] if task == "sql" else splits["dev"][0]
        if task == "sql" and args.sql_example:
            with open(args.sql_example) as f:
                record = json.loads(f.readline())
            example = {"question": record["question"], "context": record["context"],
                       "answer": record.get("answer") or record.get("query", "")}
        if task == "sql":
            route, body = "/v1/sql", {"question": example["question"], "schema": example["context"], "dialect": "sqlite"}
        else:
            route, body = "/v1/code", {"instruction": example["instruction"], "input": example.get("input") or None}
        start = time.perf_counter()
        r = requests.post(url + route, json=body, headers=headers, timeout=120)
        took = time.perf_counter() - start
        print(f"\n[{task}] POST {url}{route}  ({r.status_code}, {took:.2f} s)")
        print("request:  " + json.dumps(body)[:600])
        if r.status_code != 200:
            print("error:    " + r.text[:600])
            continue
        answer = r.json()
        answered += 1
        if task == "sql":
            print(f"answer:   {answer['sql']}\nvalid:    {answer['valid']}{'' if answer['valid'] else ' - ' + answer['reason']}")
            print(f"expected: {example['answer']}")
            if example.get("db_path") and answer["valid"]:
                show_results(example, answer["sql"])
        else:
            print(f"answer:\n{answer['code']}\nvalid:    {answer['valid']}")
        print(f"adapter:  {answer['adapter_id']}")

    print(f"\nendpoint:  {url}  (OpenAPI docs: {url}/docs; OpenAI-compatible: {url}/v1)")
    print(f"page:      {url}/ui  (sweeps, served adapters, playground, live metrics)")
    print(f"dashboard: {args.address}  (Serve tab: the app, its replicas and logs)")
    print("stop:      serve shutdown -y   (or `make stop`: the whole local cluster)")
    return 0 if answered else 1


def show_results(example: dict, sql: str, max_rows: int = 5) -> bool:
    """Runs the answer and the expected query on the example's database (sandboxed, read-only), prints the
    first rows of each and whether they match as the scorer compares them. Returns the match."""
    from shared.execution.sql import has_order_by, results_match, run_queries

    got, want = run_queries([(example["db_path"], sql), (example["db_path"], example["answer"])])
    for label, res in (("result", got), ("expected result", want)):
        shown = "; ".join(map(str, (res.rows or [])[:max_rows]))
        more = f" ... ({len(res.rows)} rows)" if res.rows and len(res.rows) > max_rows else ""
        print(f"{label + ':':17s} {shown + more if res.ok else res.error}")
    same = got.ok and want.ok and results_match(got.rows, want.rows, ordered=has_order_by(example["answer"]))
    print(f"correct:          {'yes' if same else 'no'} (on {Path(example['db_path']).name})")
    return same


if __name__ == "__main__":
    sys.exit(main())
