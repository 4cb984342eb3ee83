"""The HTTP app in process, with FastAPI's TestClient and a fake generator: fast, no Ray, no model.

The fake answers the way the Generator does (serving/generator.py: `generate(job, folder)` -> Output,
`stream(job, folder)` -> pieces then the Output), records the typed jobs it is sent, and can be slow,
full or lose its replica on purpose. Adapter folders hold a card and the embedded model's tokenizer (the
routes count prompt tokens with it).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.engine import Job, Output
from shared.artifacts import CARD_FORMAT
from shared.prompts import PROMPT_VERSION

REPO = Path(__file__).resolve().parent.parent
SCHEMA = "CREATE TABLE singer (singer_id INTEGER, name TEXT, country TEXT, age INTEGER)"
KEY = "test-key-not-a-secret"


class FakeGenerator:
    """Text "w1 w2 w3 ..." one word a token, cut at the job's stop strings; delay_s a token (a slow
    generator); `full`: Overloaded; `gone`: that many calls lose their replica first."""

    def __init__(self):
        self.jobs: list[Job] = []
        self.delay_s, self.full, self.gone, self.cancelled = 0.0, False, 0, 0

    def _refuse(self):
        from serving.app import Overloaded, ReplicaGone

        if self.full:
            raise Overloaded("queue full")
        if self.gone:
            self.gone -= 1
            raise ReplicaGone("replica died")

    async def _words(self, job: Job):
        text = ""
        for i in range(job.max_tokens):
            if self.delay_s:
                try:
                    await asyncio.sleep(self.delay_s)
                except asyncio.CancelledError:
                    self.cancelled += 1
                    raise
            text += f" w{i + 1}"
            cut = min((text.find(s) for s in job.stop if s in text), default=-1)
            if cut >= 0:
                yield text[:cut], i + 1, "stop"
                return
            yield text, i + 1, None
        yield text, job.max_tokens, "length"

    async def generate(self, job: Job, folder: str) -> Output:
        self.jobs.append(job)
        self._refuse()
        async for text, n, finish in self._words(job):
            if finish:
                return Output(text, 3, n, finish)

    async def stream(self, job: Job, folder: str):
        self.jobs.append(job)
        self._refuse()
        sent = ""
        async for text, n, finish in self._words(job):
            if text[len(sent):]:
                yield text[len(sent):]
                sent = text
            if finish:
                yield Output(text, 3, n, finish)
                return


def adapter_folder(folder: Path, task: str) -> Path:
    """A card and the embedded model's tokenizer: all the ingress reads of an adapter."""
    folder.mkdir(parents=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(REPO / "shared" / "embedded" / "micro-llama" / f, folder / f)
    card = {"format": CARD_FORMAT, "task": task, "prompt_version": PROMPT_VERSION,
            "base_model": {"name_or_path": "embedded:micro-llama", "revision": None},
            "config": {"model": {"name_or_path": "embedded:micro-llama"}, "data": {"task": task}}}
    (folder / "card.json").write_text(json.dumps(card))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("route-adapters")
    return {"sql": adapter_folder(out / "sql", "sql"), "code": adapter_folder(out / "code", "code")}


def make_client(folders, key: str | None = None, **limits):
    from serving.app import Service, create_app, install
    from serving.config import load_app_config
    from serving.http import api_key_hash

    cfg = load_app_config({"adapters": {k: str(v) for k, v in folders.items()},
                           "limits": {"max_new_tokens": 48, "default_new_tokens": 16, **limits}})
    fake = FakeGenerator()
    app = create_app()
    install(app, Service(fake, cfg, api_key_hash("T_KEY") if key is None else key))
    return TestClient(app, base_url="http://127.0.0.1"), fake


@pytest.fixture
def client(folders):
    c, fake = make_client(folders)
    with c:
        c.fake = fake
        yield c


def _error(r, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    if param is not None:
        assert body["error"]["param"] == param and param in body["error"]["message"], body
    return body["error"]


# ------------------------------------------------------------------------------------------- docs


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


# ----------------------------------------------------------------------------------------- models


def test_models_are_named_by_id_and_retrievable_one_by_one(client, folders):
    listed = client.get("/v1/models").json()
    assert {m["id"] for m in listed["data"]} == {"sql", "code"}
    assert str(folders["sql"].parent) not in json.dumps(listed) and all("path" not in m for m in listed["data"])
    one = client.get("/v1/models/sql").json()
    assert one["id"] == "sql" and one["task"] == "sql" and one["object"] == "model"
    _error(client.get("/v1/models/nope"), 404, "model")


# ------------------------------------------------------------------------------ one typed job


def test_the_route_sends_one_typed_job_with_the_budget_and_stops(client):
    r = client.post("/v1/completions", json={"model": "sql", "prompt": "### Task", "max_completion_tokens": 5,
                                             "temperature": 0, "stop": ["w4"]})
    assert r.status_code == 200, r.text
    job = client.fake.jobs[-1]
    assert isinstance(job, Job) and job.max_tokens == 5 and job.stop == ("w4",) and job.adapter.startswith("sql@")
    choice = r.json()["choices"][0]
    assert choice["text"] == " w1 w2 w3 " and choice["finish_reason"] == "stop"
    assert r.json()["usage"]["completion_tokens"] == 4  # the engine's count, not the text's

    r = client.post("/v1/sql", json={"question": "How many singers?", "schema": SCHEMA})
    assert r.status_code == 200 and client.fake.jobs[-1].max_tokens == 16  # the server's default_new_tokens


def test_n_choices_and_several_prompts_are_rows_of_the_batch(client):
    r = client.post("/v1/completions", json={"model": "sql", "prompt": ["a", "b"], "n": 2, "max_tokens": 2,
                                             "temperature": 1, "seed": 7})
    assert r.status_code == 200, r.text
    assert [c["index"] for c in r.json()["choices"]] == [0, 1, 2, 3]
    assert [j.seed for j in client.fake.jobs[-4:]] == [7, 8, 7, 8]  # choice i of n: seed + i
    assert r.json()["usage"]["completion_tokens"] == 8
    _error(client.post("/v1/completions", json={"model": "sql", "prompt": "a", "n": 2, "stream": True}), 400, "n")
    _error(client.post("/v1/completions", json={"model": "sql", "prompt": "a", "n": 5}), 400, "n")


def test_a_sql_chat_without_a_system_message_takes_the_schema_from_the_user_message(client):
    from shared.prompts import prompt_for

    r = client.post("/v1/chat/completions", json={"model": "sql", "max_tokens": 3, "messages": [
        {"role": "user", "content": [{"type": "text", "text": f"{SCHEMA};\n"}, {"type": "text", "text": "How many singers?"}]}]})
    assert r.status_code == 200, r.text
    job = client.fake.jobs[-1]
    assert job.prompt == prompt_for("sql", {"question": "How many singers?", "context": SCHEMA + ";"})
    assert job.stop == ("###",)  # a chat answer ends where the prompt format's next section would start
    assert r.json()["choices"][0]["message"] == {"role": "assistant", "content": "w1 w2 w3"}
    _error(client.post("/v1/chat/completions", json={"model": "sql", "messages": [
        {"role": "user", "content": "How many singers?"}]}), 400, "messages")


@pytest.mark.parametrize("body, param", [
    ({"logprobs": True}, "logprobs"), ({"tools": []}, "tools"), ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"user": "u1"}, "user"), ({"seed": False}, "seed"), ({"seed": 2**64}, "seed"), ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": ""}, "stop"), ({"max_completion_tokens": 49}, "max_completion_tokens"), ({"max_tokens": 49}, "max_tokens"),
    ({"max_tokens": 4, "max_completion_tokens": 5}, "max_tokens"), ({"temperature": "hot"}, "temperature"),
    ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
])
def test_what_the_server_does_not_implement_or_allow_is_a_400_naming_the_field(client, body, param):
    chat = {"model": "code", "messages": [{"role": "user", "content": "Write add(a, b)."}], **body}
    _error(client.post("/v1/chat/completions", json=chat), 400, param)


@pytest.mark.parametrize("body, param", [
    ({"model": "sql", "prompt": []}, "prompt"),
    ({"model": "sql", "prompt": "x" * 2000 + " ".join(str(i) for i in range(3000))}, "prompt"),
    ({"model": "code", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages.0.content.0.type"),
])
def test_prompts_the_server_cannot_take_name_the_field(client, body, param):
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    _error(client.post(path, json=body), 400, param)


# -------------------------------------------------------------------------------------- streams


def _events(r) -> list:
    lines = [line[len("data: "):] for line in r.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(e) for e in lines[:-1]]


def test_a_stream_takes_its_finish_reason_and_usage_from_the_engine(client):
    body = {"model": "code", "max_tokens": 6, "stream": True, "stop": "w3", "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Write add(a, b)."}]}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _events(r)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant"}
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == " w1 w2 "
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "stop"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 3
    plain = _events(client.post("/v1/completions", json={"model": "sql", "prompt": "x", "max_tokens": 4, "stream": True}))
    assert plain[-1]["choices"][0]["finish_reason"] == "length" and "usage" not in plain[-1]


# ------------------------------------------------------------------------------ slow and refused


def test_a_generation_past_the_timeout_is_a_504_and_is_cancelled(folders):
    c, fake = make_client(folders, request_timeout_s=0.3)
    fake.delay_s = 5.0  # a token every 5 s: surely past 0.3 s
    with c:
        err = _error(c.post("/v1/code", json={"instruction": "Write a long function."}), 504)
        assert err["type"] == "timeout_error" and "0.3 s" in err["message"]
        _error(c.post("/v1/completions", json={"model": "sql", "prompt": "x", "stream": True}), 504)
    assert fake.cancelled == 2  # the generation was stopped, not left running


def test_a_full_deployment_is_a_503_with_retry_after(client):
    client.fake.full = True
    for path, body in (("/v1/code", {"instruction": "x"}), ("/v1/completions", {"model": "sql", "prompt": "x", "stream": True})):
        r = client.post(path, json=body)
        assert _error(r, 503)["type"] == "overloaded_error" and r.headers["Retry-After"]


def test_a_replica_that_dies_under_a_request_is_retried_once_then_503(client):
    client.fake.gone = 1
    assert client.post("/v1/code", json={"instruction": "x", "max_tokens": 2}).status_code == 200
    client.fake.gone = 2
    r = client.post("/v1/code", json={"instruction": "x", "max_tokens": 2})
    assert _error(r, 503)["code"] == "replica_unavailable" and r.headers["Retry-After"]


def test_the_body_cap_and_the_api_key(folders):
    from serving.http import api_key_hash
    import os

    os.environ["T_KEY"] = KEY
    try:
        c, _ = make_client(folders, key=api_key_hash("T_KEY"), max_body_bytes=1000)
    finally:
        del os.environ["T_KEY"]
    with c:
        assert c.get("/healthz").status_code == 200
        _error(c.get("/v1/models"), 401)
        h = {"Authorization": f"Bearer {KEY}"}
        assert c.get("/v1/models", headers=h).status_code == 200
        _error(c.post("/v1/sql", json={"question": "x" * 2000, "schema": SCHEMA}, headers=h), 413)
        spec = c.get("/openapi.json").json()
        assert spec["paths"]["/v1/sql"]["post"]["security"] and "security" not in spec["paths"]["/healthz"]["get"]


# ------------------------------------------------------------------------------------------ spec


def test_the_spec_lists_every_status_the_server_sends_and_the_configs_limits(client):
    spec = client.get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        for op in ops.values():
            assert "422" not in op["responses"], path
    for path in ("/v1/sql", "/v1/code", "/v1/completions", "/v1/chat/completions"):
        responses = spec["paths"][path]["post"]["responses"]
        assert set(responses) == {"200", "400", "401", "404", "413", "500", "503", "504"}, path
        assert responses["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert "text/event-stream" in spec["paths"]["/v1/completions"]["post"]["responses"]["200"]["content"]
    props = spec["components"]["schemas"]["CompletionRequest"]["properties"]
    assert {"type": "integer", "exclusiveMinimum": 0, "maximum": 48} in props["max_tokens"]["anyOf"]
    assert props["n"]["maximum"] == 4 and "HTTPValidationError" not in spec["components"]["schemas"]
    assert spec["paths"]["/v1/sql"]["post"]["x-max-prompt-tokens"] == 1024


# ------------------------------------------------------------------------------------------ fuzzer

# What JSON Schema cannot say, the fuzzer is told: a request of the right shape may still be refused 400
# (a `schema` that is not CREATE TABLE statements, a prompt over limits.max_prompt_tokens: tokens are not
# characters) or 413 (strings within their maxLength whose JSON escapes pass limits.max_body_bytes). Both
# statuses are in the spec of every route that can send them. Everything else is schemathesis' default.
FUZZ = {
    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "404", "413", "5xx"]},
               "negative_data_rejection": {"expected-statuses": ["400", "401", "404", "405", "413"]}},
    "generation": {"max-examples": 40},
}


def fuzz_schema(app=None, url: str | None = None, headers: dict | None = None):
    import schemathesis

    cfg = schemathesis.Config.from_dict(FUZZ)
    if url:
        return schemathesis.openapi.from_url(url + "/openapi.json", config=cfg, headers=headers)
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=cfg)


def run_fuzzer(schema, max_examples: int, headers: dict | None = None) -> list[str]:
    """Every operation of the spec, max_examples cases each (positive and negative); the failures found."""
    from hypothesis import HealthCheck, given, settings

    failures = []
    for result in schema.get_all_operations():
        op = result.ok()

        @given(case=op.as_strategy())
        @settings(max_examples=max_examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate(headers=headers)

        try:
            check()
        except Exception as e:  # schemathesis' failures, one group per operation
            failures.append(f"{op.label}: {str(e)[:3000]}")
    return failures


def test_a_fuzzer_over_the_spec_with_every_check_finds_nothing(folders):
    """schemathesis over /openapi.json, every check (status codes, content types and response bodies
    against the spec, server errors, positive and negative data, unsupported methods), every operation."""
    c, _ = make_client(folders)
    failures = run_fuzzer(fuzz_schema(c.app), 40)
    assert not failures, "\n\n".join(failures)


# ---------------------------------------------------------------- one poisoned request, real engine


@pytest.mark.slow
def test_a_poisoned_request_among_15_leaves_the_15_others_200(tiny_model_dir, tmp_path):
    """The real Generator in process (no Ray): 16 concurrent requests, one of them to an adapter whose
    weights are NaN (its row's logits are all NaN). That one is a 500 in the error shape; the 15 are 200."""
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from safetensors.torch import load_file, save_file

    from serving.app import Service, create_app, install
    from serving.config import load_app_config
    from serving.generator import Generator
    from shared.config import load_config
    from shared.trial import run_trial

    run_trial(load_config(REPO / "configs/sql_micro_smoke.yaml", [
        f"model.name_or_path={tiny_model_dir}", f"output.dir={tmp_path}", "output.name=sql", "eval.max_examples=2"]))
    shutil.copytree(tmp_path / "sql", tmp_path / "nan")
    weights = load_file(tmp_path / "nan" / "adapter_model.safetensors")
    save_file({k: (torch.full_like(v, float("nan")) if "lora_B" in k else v).contiguous() for k, v in weights.items()},
              tmp_path / "nan" / "adapter_model.safetensors")
    cfg = load_app_config({"adapters": {"sql": str(tmp_path / "sql"), "nan": str(tmp_path / "nan")}})
    gen = Generator(threads=2, max_batch_size=16, preload=[str(tmp_path / "sql")])
    steps: list[int] = []
    for engine in gen.engines.values():
        engine.on_step = steps.append
    app = create_app()
    install(app, Service(gen, cfg))
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        def ask(i: int):
            body = {"model": "nan" if i == 7 else "sql", "prompt": f"### Task {i}", "max_tokens": 12, "temperature": 0}
            return c.post("/v1/completions", json=body)

        with ThreadPoolExecutor(16) as pool:
            rs = list(pool.map(ask, range(16)))
    for engine in gen.engines.values():
        engine.close()
    assert [r.status_code for i, r in enumerate(rs) if i != 7] == [200] * 15, [r.text[:200] for r in rs]
    assert _error(rs[7], 500)["code"] == "internal" and "NaN" not in rs[7].text  # no internals in the answer
    assert max(steps) > 1  # requests did share forward passes
