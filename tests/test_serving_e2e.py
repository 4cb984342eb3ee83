"""The serving app end to end on a real local Ray cluster: `ray start --head`, `serve deploy` of a config
like serving/config.yaml, real HTTP on 127.0.0.1 to every route (streaming too), every kind of bad input,
the API key, promotion through the `latest` pointer and a canary split with no failed request,
back-pressure as 503, the sweep-style metrics, and the official `openai` client.

Adapters are 4-step trials of the tiny smoke model (seconds each): what they say is nonsense, but every
path a real adapter takes is taken.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml
from raycluster import (
    RAY, SERVE, _free_port, beyond_loopback, cluster_pids, listening_sockets, local_cluster, serve_deploy, wait_healthy,
)

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parent.parent
KEY = "test-key-not-a-secret"
SCHEMA = "CREATE TABLE singer (singer_id INTEGER, name TEXT, country TEXT, age INTEGER)"


def _train(tiny_model_dir: Path, out: Path, name: str, task: str, seed: int) -> Path:
    from shared.config import load_config
    from shared.trial import run_trial

    cfg = load_config(REPO / f"configs/{task}_micro_smoke.yaml", [
        f"model.name_or_path={tiny_model_dir}", f"output.dir={out}", f"output.name={name}", f"train.seed={seed}",
        "eval.max_examples=2",
    ])
    run_trial(cfg)
    return out / name


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("adapters")
    return {
        "sql-a": _train(tiny_model_dir, out, "sql-a", "sql", 0),
        "sql-b": _train(tiny_model_dir, out, "sql-b", "sql", 1),
        "sql-c": _train(tiny_model_dir, out, "sql-c", "sql", 2),
        "code": _train(tiny_model_dir, out, "code", "code", 0),
    }


def _point_latest(storage: Path, task: str, adapter: Path) -> None:
    (storage / "latest").mkdir(parents=True, exist_ok=True)
    tmp = storage / "latest" / f".{task}.json"
    tmp.write_text(json.dumps({"task": task, "adapter": str(adapter)}))
    tmp.replace(storage / "latest" / f"{task}.json")


def _config(port: int, storage: Path, adapters: dict[str, Path], traffic: dict | None = None,
            api: dict | None = None) -> dict:
    """serving/config.yaml with the test's adapters; traffic goes where a canary goes, the ingress's
    user_config in `deployments:`, so that redeploying it reconfigures the ingress and restarts nothing."""
    cfg = yaml.safe_load((REPO / "serving" / "config.yaml").read_text())
    cfg["http_options"]["port"] = port
    args = cfg["applications"][0]["args"]
    args.update({
        "adapters": {"sql": "latest:sql", "sql-b": str(adapters["sql-b"]), "code": str(adapters["code"])},
        "defaults": {"sql": "sql"},
        "storage_path": str(storage), "latest_poll_s": 1,
    })
    args["limits"].update({"max_new_tokens": 48, "default_new_tokens": 16, "max_prompt_tokens": 256})
    args["model"].update({"max_ongoing_requests": 2, "max_queued_requests": 2,
                          "autoscaling": {"min_replicas": 1, "max_replicas": 1}})
    args["batching"] = {"max_batch_size": 4, "batch_wait_timeout_s": 0.01}
    user_config = {**({"traffic": traffic} if traffic is not None else {}), **(api or {})}
    if user_config:
        cfg["applications"][0]["deployments"] = [{"name": "Api", "user_config": user_config}]
    return cfg


@pytest.fixture(scope="module")
def served(tiny_model_dir, adapters, tmp_path_factory):
    """The app deployed with `serve deploy` on a cluster whose environment holds the API key."""
    import os

    os.environ["QLORA_SERVE_API_KEY"] = KEY  # the cluster's processes inherit it; the config never holds it
    try:
        with local_cluster() as cluster:
            pass_env = cluster["env"]
            storage = Path(cluster["storage"])
            _point_latest(storage, "sql", adapters["sql-a"])
            port = _free_port()
            path = Path(cluster["temp"]) / "serve.yaml"

            def deploy(traffic=None, api=None):
                path.write_text(yaml.safe_dump(_config(port, storage, adapters, traffic, api)))
                serve_deploy(path, cluster["dashboard"], pass_env, timeout_s=120)

            deploy()
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, cluster["dashboard"], pass_env)
            yield {**cluster, "url": url, "deploy": deploy, "storage": storage, "adapters": adapters}
            subprocess.run([SERVE, "shutdown", "-y", "--address", cluster["dashboard"]], env=pass_env,
                           capture_output=True, timeout=120)
    finally:
        os.environ.pop("QLORA_SERVE_API_KEY", None)


def _auth(key: str = KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}


def _post(served, path: str, body=None, raw: bytes | None = None, headers: dict | None = None) -> requests.Response:
    h = {"content-type": "application/json", **_auth(), **(headers or {})}
    data = raw if raw is not None else json.dumps(body).encode()
    return requests.post(served["url"] + path, data=data, headers=h, timeout=120)


@contextlib.contextmanager
def _traffic(served, body: dict):
    """A client sending `body` to /v1/sql again and again while the block runs; yields its (status,
    adapter_id) list as it grows."""
    results, stop = [], threading.Event()

    def send():
        while not stop.is_set():
            r = _post(served, "/v1/sql", body)
            results.append((r.status_code, r.json().get("adapter_id")))

    t = threading.Thread(target=send)
    t.start()
    try:
        yield results
    finally:
        stop.set()
        t.join()


def _error_shape(r: requests.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert "Traceback" not in r.text and "File \"" not in r.text
    return body["error"]


# ------------------------------------------------------------------------------------------ routes


def test_every_route_answers(served):
    url = served["url"]
    health = requests.get(f"{url}/healthz", timeout=10)  # no key needed
    assert health.status_code == 200 and health.json()["status"] == "ok"

    models = requests.get(f"{url}/v1/models", headers=_auth(), timeout=10).json()
    assert {m["id"]: m["task"] for m in models["data"]} == {"sql": "sql", "sql-b": "sql", "code": "code"}
    assert all("path" not in m and "/" not in m["base_model"] for m in models["data"]), models  # ids, no server paths

    r = _post(served, "/v1/sql", {"question": "How many singers are there?", "schema": SCHEMA, "dialect": "postgres"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["adapter"] == "sql" and out["adapter_id"].startswith("sql@") and out["dialect"] == "postgres"
    assert isinstance(out["valid"], bool) and (out["valid"] or out["reason"])
    assert 0 < out["usage"]["completion_tokens"] <= 16  # the server's default_new_tokens

    r = _post(served, "/v1/code", {"instruction": "Write a function add(a, b) that returns a + b.", "max_tokens": 8})
    assert r.status_code == 200, r.text
    assert r.json()["adapter"] == "code" and r.json()["usage"]["completion_tokens"] <= 8

    r = _post(served, "/v1/completions", {"model": "sql-b", "prompt": "### Task", "max_tokens": 5, "temperature": 0})
    assert r.status_code == 200 and r.json()["object"] == "text_completion" and r.json()["model"] == "sql-b"

    r = _post(served, "/v1/chat/completions", {"model": "sql", "temperature": 0, "max_tokens": 8, "messages": [
        {"role": "system", "content": SCHEMA}, {"role": "user", "content": "How many singers are there?"}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"

    spec = requests.get(f"{url}/openapi.json", timeout=10).json()
    assert {"/v1/sql", "/v1/code", "/v1/completions", "/v1/chat/completions", "/v1/models", "/healthz"} <= set(spec["paths"])
    docs = requests.get(f"{url}/docs", timeout=10)
    assert docs.status_code == 200 and "cdn." not in docs.text and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert requests.get(f"{url}/docs-assets/swagger-ui-bundle.js", timeout=10).status_code == 200


def test_a_stop_string_ends_generation_and_the_usage_says_so(served):
    body = {"model": "sql", "prompt": "### Task: SQLite query\n", "max_tokens": 40, "temperature": 0}
    whole = _post(served, "/v1/completions", body).json()
    text = whole["choices"][0]["text"]
    if len(text) < 6:
        pytest.skip(f"the tiny model's text is too short to stop inside: {text!r}")
    stop = text[3:6]
    cut = _post(served, "/v1/completions", {**body, "stop": [stop]}).json()
    assert cut["choices"][0]["text"] == text[:text.find(stop)] and cut["choices"][0]["finish_reason"] == "stop"
    assert cut["usage"]["completion_tokens"] < whole["usage"]["completion_tokens"]


def test_a_fuzzer_over_the_live_spec_with_every_check_finds_nothing(served):
    """schemathesis against the deployed app over real HTTP (test_serving_routes.py runs it in process too)."""
    from test_serving_routes import fuzz_schema, run_fuzzer

    failures = run_fuzzer(fuzz_schema(url=served["url"], headers=_auth()), 8, headers=_auth())
    assert not failures, "\n\n".join(failures)


def _sse(r: requests.Response) -> list:
    events = [line[len("data: "):] for line in r.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_streaming_gives_the_same_text_as_one_response(served):
    body = {"model": "sql", "prompt": "### Task: SQLite query\n", "max_tokens": 12, "temperature": 0}
    whole = _post(served, "/v1/completions", body).json()["choices"][0]["text"]
    r = requests.post(served["url"] + "/v1/completions", json={**body, "stream": True}, headers=_auth(), stream=True,
                      timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    chunks = _sse(r)
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")

    chat = {"model": "code", "max_tokens": 10, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": "Write add(a, b)."}]}
    r = requests.post(served["url"] + "/v1/chat/completions", json=chat, headers=_auth(), stream=True, timeout=60)
    chunks = _sse(r)
    assert chunks[0]["object"] == "chat.completion.chunk" and chunks[0]["choices"][0]["delta"] == {"role": "assistant"}


# --------------------------------------------------------------------------------------- bad input

BAD = [
    ("/v1/sql", None, b"{not json", 400, None),
    ("/v1/sql", {"question": "x"}, None, 400, "schema"),
    ("/v1/sql", {"question": 3, "schema": SCHEMA}, None, 400, "question"),
    ("/v1/sql", {"question": "x", "schema": SCHEMA, "surprise": 1}, None, 400, "surprise"),
    ("/v1/sql", {"question": "x", "schema": "DROP TABLE singer"}, None, 400, "schema"),
    ("/v1/sql", {"question": "x", "schema": "CREATE TABLE t (a INT); DELETE FROM t"}, None, 400, "schema"),
    ("/v1/sql", {"question": "x", "schema": SCHEMA, "dialect": "postgress"}, None, 400, "dialect"),
    ("/v1/sql", {"question": "x", "schema": SCHEMA, "adapter": "nope"}, None, 404, "adapter"),
    ("/v1/sql", {"question": "x", "schema": SCHEMA, "adapter": "code"}, None, 400, "adapter"),
    ("/v1/sql", {"question": "x", "schema": SCHEMA, "max_tokens": 49}, None, 400, "max_tokens"),
    ("/v1/sql", {"question": "x", "schema": SCHEMA, "max_tokens": 0}, None, 400, "max_tokens"),
    ("/v1/sql", {"question": "x", "schema": SCHEMA, "temperature": -1}, None, 400, "temperature"),
    ("/v1/sql", None, json.dumps({"question": "x" * 70_000, "schema": SCHEMA}).encode(), 413, None),
    ("/v1/code", {"instruction": "word " * 400}, None, 400, "instruction"),
    ("/v1/code", {}, None, 400, "instruction"),
    ("/v1/completions", {"model": "nope", "prompt": "x"}, None, 404, "model"),
    ("/v1/completions", {"model": "sql", "prompt": "x", "n": 5}, None, 400, "n"),
    ("/v1/completions", {"model": "sql", "prompt": []}, None, 400, "prompt"),
    ("/v1/completions", {"model": "sql", "prompt": "x", "logprobs": 2}, None, 400, "logprobs"),
    ("/v1/completions", {"model": "sql", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, None, 400, "stop"),
    ("/v1/code", {"instruction": "x", "temperature": 5e-324, "seed": False}, None, 400, "seed"),
    ("/v1/completions", {"model": "sql", "prompt": "x", "max_tokens": 10_000}, None, 400, "max_tokens"),
    ("/v1/chat/completions", {"model": "sql", "messages": []}, None, 400, "messages"),
    ("/v1/chat/completions", {"model": "sql", "messages": [{"role": "wizard", "content": "x"}]}, None, 400, "messages.0.role"),
    ("/v1/chat/completions", {"model": "sql", "messages": [{"role": "user", "content": "x"}]}, None, 400, "messages"),
]


@pytest.mark.parametrize("path, body, raw, status, param", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_gets_4xx_in_one_shape_and_names_the_problem(served, path, body, raw, status, param):
    r = _post(served, path, body, raw)
    assert r.status_code == status, r.text
    err = _error_shape(r)
    assert err["message"]
    if param:
        assert err["param"] == param or param in err["message"], err


def test_a_chunked_body_is_capped_by_what_arrives_and_read_whole_below_the_cap(served):
    """No Content-Length (a generator body is sent chunked): the cap counts the bytes as they arrive."""
    def chunked(payload: bytes, size: int = 4096):
        yield from (payload[i:i + size] for i in range(0, len(payload), size))

    h = {"content-type": "application/json", **_auth()}
    big = json.dumps({"question": "x" * 70_000, "schema": SCHEMA}).encode()
    r = requests.post(served["url"] + "/v1/sql", data=chunked(big), headers=h, timeout=60)
    assert r.status_code == 413 and _error_shape(r)["code"] == "body_too_large"
    small = json.dumps({"question": "x", "schema": "DROP TABLE singer"}).encode()
    r = requests.post(served["url"] + "/v1/sql", data=chunked(small, 7), headers=h, timeout=60)
    assert r.status_code == 400 and _error_shape(r)["param"] == "schema"  # the whole body reached the route


def test_routes_need_the_key_but_healthz_does_not(served):
    url = served["url"]
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
    for headers in ({}, _auth("wrong"), {"X-API-Key": "wrong"}):
        r = requests.get(f"{url}/v1/models", headers=headers, timeout=10)
        assert r.status_code == 401 and _error_shape(r)["type"] == "authentication_error"
    assert requests.get(f"{url}/v1/models", headers={"X-API-Key": KEY}, timeout=10).status_code == 200
    r = requests.post(f"{url}/v1/code", json={"instruction": "x"}, timeout=10)
    assert r.status_code == 401


def test_after_all_the_bad_input_the_replica_still_answers(served):
    r = _post(served, "/v1/sql", {"question": "How many singers are there?", "schema": SCHEMA})
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------------------- promotion, canary


def _generator_pids(served) -> set[int]:
    out = subprocess.run([RAY, "list", "actors", "--address", served["gcs"], "--format", "json", "--detail",
                          "--filter", "state=ALIVE", "--limit", "1000"],
                         env=served["env"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {a["pid"] for a in json.loads(out.stdout) if "Generator" in (a.get("class_name") or "")}


def test_a_new_latest_adapter_is_picked_up_with_no_failed_request(served):
    before = _post(served, "/v1/sql", {"question": "How many singers?", "schema": SCHEMA}).json()["adapter_id"]
    pids = _generator_pids(served)
    body = {"question": "How many singers?", "schema": SCHEMA, "max_tokens": 4}
    with _traffic(served, body) as results:
        time.sleep(2)
        _point_latest(served["storage"], "sql", served["adapters"]["sql-c"])  # a new sweep's best adapter
        deadline = time.time() + 60
        while not any(a and a != before for _, a in results[-3:]):
            assert time.time() < deadline, results[-5:]
            time.sleep(0.5)
        time.sleep(2)
    assert all(s == 200 for s, _ in results), [r for r in results if r[0] != 200]
    ids = [a for _, a in results]
    assert ids[0] == before and ids[-1] != before and ids[-1].startswith("sql@")
    assert _generator_pids(served) == pids  # no replica restarted


def test_gated_promotion_and_rollback_under_traffic_fail_no_request(served):
    """sweeps.promote on the served storage while a client sends requests: a candidate the paired test does
    not show better is refused and the served adapter stays; forced, it is served; rolled back, the one
    before is served again. Every request of the client answers 200, and no replica restarts."""
    from shared.heldout import examples_digest, heldout_examples
    from shared.storage import read_latest
    from shared.promotion import promote, read_history, rollback
    from sweeps.promote import local_scorer

    storage = str(served["storage"])
    current = read_latest(storage, "sql")["adapter"]
    candidate = next(str(served["adapters"][n]) for n in ("sql-b", "sql-c", "sql-a")
                     if str(Path(served["adapters"][n]).resolve()) != str(Path(current).resolve()))
    body = {"question": "How many singers?", "schema": SCHEMA, "max_tokens": 4}
    before = _post(served, "/v1/sql", body).json()["adapter_id"]
    pids = _generator_pids(served)

    def served_becomes(results, predicate):  # the last 3 answers came from the adapter the predicate wants
        deadline = time.time() + 60
        while not (results and all(predicate(a) for _, a in results[-3:])):
            assert time.time() < deadline, results[-5:]
            time.sleep(0.5)

    examples = heldout_examples(candidate, "test", 8)
    gate = {"scorer": local_scorer(threads=1), "examples": examples, "digest": examples_digest(examples),
            "level": 0.05}
    with _traffic(served, body) as results:
        refused = promote(storage, "sql", candidate, **gate)
        # 4-step adapters of a 0.1 M model: no difference a paired test at 0.05 could show on 8 examples
        assert refused["action"] == "rejected" and refused["figures"]["n"] == 8, refused
        assert "not shown better" in refused["why"] and read_latest(storage, "sql")["adapter"] == current
        time.sleep(3)  # > latest_poll_s: the registry has looked again
        served_becomes(results, lambda a: a == before)
        forced = promote(storage, "sql", candidate, force=True, **gate)
        assert forced["action"] == "promoted" and forced["forced"], forced
        served_becomes(results, lambda a: a != before)
        back = rollback(storage, "sql")
        assert back["to"] == forced["from"]
        served_becomes(results, lambda a: a == before)
    assert all(s == 200 for s, _ in results), [r for r in results if r[0] != 200]
    assert [e["action"] for e in read_history(storage, "sql")[-3:]] == ["rejected", "promoted", "rolled_back"]
    assert _generator_pids(served) == pids


def test_a_canary_split_and_a_rollback_by_redeploying_traffic(served):
    pids = _generator_pids(served)
    served["deploy"]({"sql": [{"adapter": "sql", "weight": 1}, {"adapter": "sql-b", "weight": 1}]})
    seen: dict[str, int] = {}
    deadline = time.time() + 120
    while len(seen) < 2:
        r = _post(served, "/v1/sql", {"question": "How many singers?", "schema": SCHEMA, "max_tokens": 2})
        assert r.status_code == 200, r.text
        seen[r.json()["adapter"]] = seen.get(r.json()["adapter"], 0) + 1
        assert time.time() < deadline, seen
    assert set(seen) == {"sql", "sql-b"}
    served["deploy"]({})  # rollback: no traffic split
    deadline = time.time() + 60
    names = []
    while time.time() < deadline:
        names = [_post(served, "/v1/sql", {"question": "How many?", "schema": SCHEMA, "max_tokens": 2}).json()["adapter"]
                 for _ in range(8)]
        if set(names) == {"sql"}:
            break
        time.sleep(1)
    assert set(names) == {"sql"}
    assert _generator_pids(served) == pids  # the model replica kept running through both deploys


def test_a_generation_past_the_request_timeout_gets_504_and_the_replica_goes_on(served):
    """A shorter timeout through the ingress's user_config (in place), then back to the config's."""
    pids = _generator_pids(served)
    slow = {"instruction": "Write a long function.", "max_tokens": 48}
    served["deploy"](api={"limits": {"request_timeout_s": 0.05}})
    try:
        deadline = time.time() + 60
        while (r := _post(served, "/v1/code", slow)).status_code != 504 and time.time() < deadline:
            time.sleep(1)  # until the ingress is reconfigured
        assert r.status_code == 504, r.text
        err = _error_shape(r)
        assert err["type"] == "timeout_error" and err["code"] == "timeout" and "0.05 s" in err["message"]
    finally:
        served["deploy"]()
    deadline = time.time() + 60
    while (r := _post(served, "/v1/code", slow)).status_code != 200 and time.time() < deadline:
        time.sleep(1)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] > 0
    assert _generator_pids(served) == pids  # reconfigured in place: the model replica kept running


# ----------------------------------------------------------------------------------- back-pressure


def test_overload_gets_503_with_retry_after_not_a_hang(served):
    body = {"instruction": "Write a long function.", "max_tokens": 48, "temperature": 1.0}
    with ThreadPoolExecutor(24) as pool:
        rs = list(pool.map(lambda _: _post(served, "/v1/code", body), range(24)))
    codes = [r.status_code for r in rs]
    assert set(codes) <= {200, 503}, [(r.status_code, r.text[:400]) for r in rs if r.status_code not in (200, 503)]
    assert 503 in codes and 200 in codes, codes
    for r in rs:
        if r.status_code == 503:
            assert r.headers.get("Retry-After") and _error_shape(r)["type"] == "overloaded_error"
    assert _post(served, "/v1/code", {"instruction": "x", "max_tokens": 2}).status_code == 200


# ------------------------------------------------------------------------------------------ metrics


def test_serving_metrics_reach_the_clusters_prometheus_endpoint(served):
    assert _post(served, "/v1/sql", {"question": "x"}).status_code == 400  # counted under its status
    assert _post(served, "/v1/sql", {"question": "How many singers?", "schema": SCHEMA, "max_tokens": 4}).status_code == 200
    want = {"ray_qlora_serve_requests", "ray_qlora_serve_latency_seconds", "ray_qlora_serve_batch_size",
            "ray_qlora_serve_batch_rows", "ray_qlora_serve_prompt_tokens",
            "ray_qlora_serve_adapter_loads", "ray_qlora_serve_tokens_generated"}
    deadline = time.time() + 90
    found: set[str] = set()
    while time.time() < deadline and not want <= found:
        text = requests.get(served["metrics"], timeout=10).text
        found = {m.group(1) for m in re.finditer(r"^(ray_qlora_serve_[a-z_]+?)(?:_bucket|_count|_sum|_total)?\{", text, re.M)}
        time.sleep(3)
    assert want <= found, sorted(found)
    print("\n".join(line for line in text.splitlines() if line.startswith("ray_qlora_serve_requests")))
    assert re.search(r'ray_qlora_serve_requests(_total)?\{[^}]*status="400"', text)


# ------------------------------------------------------------------------------------------ openai


def test_the_official_openai_client_talks_to_it(served):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=served["url"] + "/v1", api_key=KEY, max_retries=0)
    assert {m.id for m in client.models.list()} == {"sql", "sql-b", "code"}
    done = client.completions.create(model="sql", prompt="### Task", max_tokens=4, temperature=0)
    assert done.choices[0].finish_reason in ("stop", "length") and done.usage.completion_tokens <= 4
    chat = client.chat.completions.create(model="code", max_tokens=6, temperature=0,
                                          messages=[{"role": "user", "content": "Write add(a, b)."}])
    assert chat.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(model="code", max_tokens=6, temperature=0, stream=True,
                                            messages=[{"role": "user", "content": "Write add(a, b)."}])
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces).strip() == chat.choices[0].message.content
    assert client.models.retrieve("sql").id == "sql"
    chunks = list(client.chat.completions.create(model="code", max_tokens=6, temperature=0, stream=True,
                                                 stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "Write add(a, b)."}]))
    assert chunks[-1].usage.completion_tokens > 0 and not chunks[-1].choices
    two = client.completions.create(model="sql", prompt="### Task", max_tokens=3, n=2, temperature=0)
    assert [c.index for c in two.choices] == [0, 1] and two.choices[0].text == two.choices[1].text
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        client.completions.create(model="sql", prompt="x", max_tokens=2, logprobs=2)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served["url"] + "/v1", api_key="wrong", max_retries=0).models.list()


def test_the_served_cluster_listens_beyond_loopback_only_where_the_readme_says(served):
    """The local default with the app deployed: the Serve proxy on 127.0.0.1, and nothing beyond loopback but
    the documented exceptions (sweeps.local_cluster.LOOPBACK_EXCEPTIONS: the replicas' gRPC servers)."""
    sockets = listening_sockets(cluster_pids(served["temp"], served["gcs"]))
    proxy_port = int(served["url"].rsplit(":", 1)[1])
    assert [ip for _, ip, port in sockets if port == proxy_port] == ["127.0.0.1"], sockets
    assert not beyond_loopback(sockets), beyond_loopback(sockets)
