"""The Ray Serve app: a FastAPI ingress (`Api`) in front of an autoscaled model deployment (`Generator`).

    serve run serving/config.yaml                                          # adapters from latest/<task>.json
    serve run serving.app:build_app adapter=~/qlora-sweeps/latest/sql      # one adapter folder
    serve deploy serving/config.yaml                                       # onto a running cluster

`Generator` loads the base once per replica in 4 bit and LoRA adapters by id (`@serve.multiplexed`, LRU);
requests are batched continuously, across adapters: a request joins the running batch at the next decoding
step and leaves it at its own end (serving/engine.py). `Api` holds the routes and the HTTP schemas
(serving/schemas.py), resolves adapter names (serving/registry.py), applies the limits and turns every
failure into one JSON error shape (serving/errors.py). Its user_config carries adapters/defaults/traffic
and limits, so `serve deploy` with a new split (a canary, a rollback) or new limits reconfigures it in place.
"""


import ast  # noqa: I001  (no `from __future__ import annotations`: FastAPI reads the route annotations)
import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from ray.util import metrics

from serving import errors
from serving.config import AppConfig, load_app_config
from serving.errors import APIError
from serving.http import AUTH, CapBodyAndCount, api_key_hash, install_docs
from serving.registry import Registry, Unavailable, public_name
from serving.schemas import (
    ChatRequest, CodeRequest, CodeResponse, CompletionRequest, ModelCard, SqlRequest, SqlResponse, Usage,
)
from serving.sqlcheck import DIALECTS, SchemaError, check_sql, parse_schema
from shared.config import ConfigError
from shared.prompts import extract_answer, prompt_for

RETRY_AFTER_S = "1"

# =============================================================================================== model


class Generator:
    """One replica: the 4-bit base, adapters multiplexed by model id, continuous batching (serving/engine.py):
    requests join and leave the running batch between decoding steps."""

    def __init__(self, base_model: str, threads: int, max_batch_size: int, batch_wait_timeout_s: float):
        from serving.engine import Engine

        self.engine = Engine(base_model, threads=threads, max_batch_size=max_batch_size,
                             batch_wait_s=batch_wait_timeout_s)
        self.paths: dict[str, str] = {}  # model id -> folder, told by the ingress with each request
        self.m_batch = metrics.Histogram("qlora_serve_batch_size", "Rows in one forward pass (prefill or decode step)",
                                         boundaries=[1, 2, 4, 8, 16, 32, 64])
        self.engine.on_step = self.m_batch.observe
        self.m_loads = metrics.Counter("qlora_serve_adapter_loads", "Adapters loaded into a replica", tag_keys=("adapter",))
        self.m_evictions = metrics.Counter("qlora_serve_adapter_evictions", "Adapters evicted (LRU)", tag_keys=("adapter",))
        self.m_load_s = metrics.Histogram("qlora_serve_adapter_load_seconds", "Time to load an adapter",
                                          boundaries=[0.01, 0.05, 0.1, 0.5, 1, 5, 30])

    async def load(self, model_id: str):
        """Loads an adapter by model id (the multiplexed loader; wrapped in @serve.multiplexed below)."""
        path = self.paths[model_id]
        info = await asyncio.to_thread(self.engine.add_adapter, model_id, path)
        name = model_id.split("@", 1)[0]
        self.m_loads.inc(tags={"adapter": name})
        self.m_load_s.observe(info.load_s)
        return _Loaded(self, model_id)

    async def _submit(self, job: dict, ready: asyncio.Event, every_token: bool):
        """The job into the engine's batch; ready is set (on this loop) as it progresses."""
        from serving.engine import Job

        model_id = job["adapter"]
        self.paths[model_id] = job.pop("path")
        loop = asyncio.get_running_loop()
        for _ in range(3):  # an adapter evicted between its load and the submit is loaded again
            await self.load(model_id)
            try:
                return self.engine.submit(Job(**job), notify=lambda: loop.call_soon_threadsafe(ready.set),
                                          every_token=every_token)
            except KeyError:
                continue
        raise RuntimeError("adapters kept being evicted under this request; raise max_adapters_per_replica")

    async def generate(self, job: dict) -> dict:
        ready = asyncio.Event()
        ticket = await self._submit(job, ready, every_token=False)
        try:
            while not ticket.done:
                await ready.wait()
                ready.clear()
            return ticket.result().__dict__
        finally:
            ticket.cancel()  # a call cancelled by its caller (timeout, disconnect) frees its row; no-op once done

    async def stream(self, job: dict) -> AsyncIterator[str]:
        ready = asyncio.Event()
        ticket = await self._submit(job, ready, every_token=True)
        try:
            while True:
                await ready.wait()
                ready.clear()
                piece, done = ticket.take()  # raises the row's error once done
                if piece:
                    yield piece
                if done:
                    return
        finally:
            ticket.cancel()


class _Loaded:
    """What the multiplexed loader returns; Serve calls __del__ when the LRU evicts it."""

    def __init__(self, gen: Generator, model_id: str):
        self.gen, self.model_id = gen, model_id

    def __del__(self):
        gen = self.__dict__.pop("gen", None)
        if gen is not None and self.model_id in gen.engine.adapters:
            gen.engine.remove_adapter(self.model_id)
            gen.m_evictions.inc(tags={"adapter": self.model_id.split("@", 1)[0]})


def generator_deployment(cfg: AppConfig, base_model: str):
    m = cfg.model
    cls = type("Generator", (Generator,), {
        "load": serve.multiplexed(max_num_models_per_replica=m.max_adapters_per_replica)(Generator.load),
    })
    a = m.autoscaling
    return serve.deployment(
        cls, name="Generator",
        ray_actor_options={"num_cpus": m.resources.num_cpus, "num_gpus": m.resources.num_gpus},
        autoscaling_config={
            "min_replicas": a.min_replicas, "initial_replicas": max(a.min_replicas, 1), "max_replicas": a.max_replicas,
            "target_ongoing_requests": a.target_ongoing_requests,
            "upscale_delay_s": a.upscale_delay_s, "downscale_delay_s": a.downscale_delay_s,
        },
        max_ongoing_requests=m.max_ongoing_requests, max_queued_requests=m.max_queued_requests,
    ).bind(base_model, max(1, int(m.resources.num_cpus)), cfg.batching.max_batch_size,
           cfg.batching.batch_wait_timeout_s)


# ============================================================================================= ingress

api = FastAPI(
    title="qlora-sweep serving",
    summary="Text-to-SQL and Python code from QLoRA adapters; OpenAI-compatible completions and chat.",
    version="1",
    docs_url=None, redoc_url=None,  # served offline by serving/http.py
)
errors.install(api)
api.add_middleware(CapBodyAndCount)
install_docs(api)


def _job(adapter, prompt: str, max_new: int, req) -> dict:
    """What the model deployment is asked: serving.engine.Job's fields, plus the adapter's folder."""
    return {"adapter": adapter.model_id, "path": adapter.path, "prompt": prompt, "max_tokens": max_new,
            "temperature": req.temperature, "top_p": req.top_p, "seed": req.seed}


def _usage(prompt_tokens: int, out: dict) -> Usage:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=out["completion_tokens"],
                 total_tokens=prompt_tokens + out["completion_tokens"])


def _cut(text: str, stops: list[str]) -> tuple[str, bool]:
    """text up to the first stop string, and whether one was found."""
    at = min((i for s in stops if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:at], True) if at >= 0 else (text, False)


def _over(args: dict, user_config: dict) -> dict:
    """The ingress's user_config over the app's args: limits key by key, the other keys whole."""
    out = {**args, **user_config}
    if "limits" in user_config:
        out["limits"] = {**args.get("limits", {}), **user_config["limits"]}
    return out


@serve.ingress(api)
class Api:
    def __init__(self, generator: DeploymentHandle, cfg: dict, key_hash: str | None):
        self.args = cfg
        self.cfg = AppConfig.model_validate(cfg)
        self.generator = generator
        self.registry = Registry(self.cfg)
        api.state.key_hash = key_hash
        api.state.max_body_bytes = self.cfg.limits.max_body_bytes
        self.rng = random.Random()
        self.tokenizer = None
        self._poll: asyncio.Task | None = None
        self.m_ttft = metrics.Histogram("qlora_serve_time_to_first_token_seconds", "Streaming: time to first token",
                                        tag_keys=("route",), boundaries=[0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10])
        self.m_tokens = metrics.Counter("qlora_serve_tokens_generated", "Tokens generated", tag_keys=("adapter",))
        self.m_tps = metrics.Histogram("qlora_serve_tokens_per_second", "Generated tokens per second of a request",
                                       tag_keys=("route",), boundaries=[1, 5, 10, 25, 50, 100, 250, 500, 1000])
        self.m_promotions = metrics.Counter("qlora_serve_adapter_promotions", "Adapter names that got a new folder",
                                            tag_keys=("adapter",))

    def reconfigure(self, user_config: dict) -> None:
        """serve deploy with a new user_config, in place: adapters, defaults, traffic (a canary, a rollback)
        and limits, over the app's args (what the user_config leaves out goes back to the args' value)."""
        self.cfg = AppConfig.model_validate(_over(self.args, user_config))
        self.registry = Registry(self.cfg)
        api.state.max_body_bytes = self.cfg.limits.max_body_bytes

    def _start_polling(self) -> None:
        if self._poll is None or self._poll.done():
            self._poll = asyncio.get_running_loop().create_task(self._poll_latest())

    async def _poll_latest(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.latest_poll_s)
            for name in await asyncio.to_thread(self.registry.refresh):
                self.m_promotions.inc(tags={"adapter": name})

    # ---------------------------------------------------------------------------------- helpers

    def _adapter(self, name: str | None, task: str | None, param: str):
        self._start_polling()
        try:
            a = self.registry.get(name) if name else self.registry.default_for(task, self.rng)
        except KeyError:
            raise APIError(404, f"unknown adapter {name!r}; GET /v1/models lists them", param=param,
                           code="model_not_found") from None
        except Unavailable as e:
            raise APIError(503, str(e), param=param, code="adapter_unavailable",
                           headers={"Retry-After": str(int(self.cfg.latest_poll_s))}) from None
        if task and a.task != task:
            raise APIError(400, f"adapter {a.name!r} is a {a.task} adapter, not {task}", param=param,
                           code="wrong_task")
        return a

    def _new_tokens(self, asked: int | None, param: str = "max_tokens") -> int:
        lim = self.cfg.limits
        if asked is None:
            return lim.default_new_tokens
        if asked > lim.max_new_tokens:
            raise APIError(400, f"{param}: {asked} is above this server's limit of {lim.max_new_tokens}",
                           param=param, code="max_tokens_too_large")
        return asked

    def _count(self, prompt: str) -> int:
        if self.tokenizer is None:
            from transformers import AutoTokenizer

            any_adapter = next(iter(self.registry.adapters.values()))
            self.tokenizer = AutoTokenizer.from_pretrained(any_adapter.path)
        n = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"]) + 1
        cap = self.cfg.limits.max_prompt_tokens
        if n > cap:
            raise APIError(400, f"prompt is {n} tokens; this server's limit is {cap}", param="prompt",
                           code="prompt_too_long")
        return n

    async def _run(self, adapter, prompt: str, max_new: int, req) -> dict:
        job = _job(adapter, prompt, max_new, req)
        call = self.generator.options(multiplexed_model_id=adapter.model_id).generate.remote(job)
        try:
            out = await asyncio.wait_for(call, timeout=self.cfg.limits.request_timeout_s)
        except BackPressureError:
            raise APIError(503, "the model deployment is at capacity; retry shortly", code="overloaded",
                           headers={"Retry-After": RETRY_AFTER_S}) from None
        except TimeoutError:
            call.cancel()
            raise APIError(504, f"generation took longer than {self.cfg.limits.request_timeout_s} s",
                           code="timeout") from None
        self.m_tokens.inc(out["completion_tokens"], tags={"adapter": adapter.name})
        return out

    def _record(self, route: str, start: float, tokens: int) -> None:
        took = time.perf_counter() - start
        if tokens and took > 0:
            self.m_tps.observe(tokens / took, tags={"route": route})

    # ------------------------------------------------------------------------------------ routes

    @api.get("/healthz", include_in_schema=True, summary="Liveness: 200 while the ingress runs (no API key)")
    async def healthz(self) -> dict:
        return {"status": "ok", "adapters": sorted(self.registry.adapters),
                "unavailable": self.registry.problems}

    @api.get("/v1/models", dependencies=AUTH, summary="The adapters this server answers with")
    async def models(self) -> dict:
        cards = [ModelCard(id=a.name, created=a.created, task=a.task, base_model=public_name(a.base_model))
                 for a in self.registry.adapters.values()]
        return {"object": "list", "data": [c.model_dump() for c in cards]}

    @api.post("/v1/sql", response_model=SqlResponse, dependencies=AUTH,
              summary="Text-to-SQL: question + CREATE TABLE schema -> checked SQL in your dialect")
    async def sql(self, req: SqlRequest) -> SqlResponse:
        start = time.perf_counter()
        if req.dialect not in DIALECTS:
            raise APIError(400, f"dialect: unknown {req.dialect!r}; one of {', '.join(DIALECTS)}",
                           param="dialect", code="unknown_dialect")
        if len(req.schema_) > self.cfg.limits.max_schema_chars:
            raise APIError(400, f"schema: longer than {self.cfg.limits.max_schema_chars} characters",
                           param="schema", code="schema_too_long")
        try:
            tables = parse_schema(req.schema_)
        except SchemaError as e:
            raise APIError(400, f"schema: {e}", param="schema", code="invalid_schema") from None
        adapter = self._adapter(req.adapter, "sql", "adapter")
        prompt = prompt_for("sql", {"question": req.question, "context": req.schema_})
        n = self._count(prompt)
        out = await self._run(adapter, prompt, self._new_tokens(req.max_tokens), req)
        raw = extract_answer("sql", out["text"])
        check = check_sql(raw, tables, req.dialect)
        self._record("/v1/sql", start, out["completion_tokens"])
        return SqlResponse(sql=check.sql, valid=check.valid, reason=check.reason, dialect=req.dialect,
                           adapter=adapter.name, adapter_id=adapter.model_id, raw=raw, usage=_usage(n, out))

    @api.post("/v1/code", response_model=CodeResponse, dependencies=AUTH,
              summary="Python code: instruction (+ input) -> code, checked with ast.parse (never run)")
    async def code(self, req: CodeRequest) -> CodeResponse:
        start = time.perf_counter()
        adapter = self._adapter(req.adapter, "code", "adapter")
        prompt = prompt_for("code", {"instruction": req.instruction, "input": req.input or ""})
        n = self._count(prompt)
        out = await self._run(adapter, prompt, self._new_tokens(req.max_tokens), req)
        code = extract_answer("code", out["text"])
        try:
            ast.parse(code)
            valid, reason = True, None
        except SyntaxError as e:
            valid, reason = False, f"SyntaxError: {e.msg} (line {e.lineno})"
        self._record("/v1/code", start, out["completion_tokens"])
        return CodeResponse(code=code, valid=valid, reason=reason, adapter=adapter.name, adapter_id=adapter.model_id,
                            usage=_usage(n, out))

    @api.post("/v1/completions", dependencies=AUTH, summary="OpenAI-compatible completions (raw prompt)")
    async def completions(self, req: CompletionRequest):
        prompt = req.prompt if isinstance(req.prompt, str) else (req.prompt[0] if len(req.prompt) == 1 else None)
        if prompt is None:
            raise APIError(400, "prompt: one prompt per request", param="prompt", code="one_prompt")
        adapter = self._adapter(req.model, None, "model")
        return await self._openai("/v1/completions", req, adapter, prompt, chat=False)

    @api.post("/v1/chat/completions", dependencies=AUTH,
              summary="OpenAI-compatible chat: sql adapters take the schema as the system message and the "
              "question as the last user message; code adapters the instruction as the last user message")
    async def chat(self, req: ChatRequest):
        adapter = self._adapter(req.model, None, "model")
        users = [m.content for m in req.messages if m.role == "user"]
        if not users:
            raise APIError(400, "messages: no user message", param="messages", code="no_user_message")
        if adapter.task == "sql":
            schema = "\n".join(m.content for m in req.messages if m.role in ("system", "developer"))
            try:
                parse_schema(schema)
            except SchemaError as e:
                raise APIError(400, f"messages: the system message must be the CREATE TABLE schema: {e}",
                               param="messages", code="invalid_schema") from None
            prompt = prompt_for("sql", {"question": users[-1], "context": schema})
        else:
            prompt = prompt_for("code", {"instruction": users[-1], "input": ""})
        return await self._openai("/v1/chat/completions", req, adapter, prompt, chat=True)

    async def _openai(self, route: str, req, adapter, prompt: str, chat: bool):
        start = time.perf_counter()
        n = self._count(prompt)
        max_new = self._new_tokens(req.max_completion_tokens or req.max_tokens)
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if chat:
            stops.append("###")  # a task answer ends where the prompt format's next section would start
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        if req.stream:
            return StreamingResponse(self._sse(route, req, adapter, prompt, max_new, stops, rid, chat, start),
                                     media_type="text/event-stream")
        out = await self._run(adapter, prompt, max_new, req)
        text, stopped = _cut(out["text"], stops)
        finish = "stop" if stopped or out["finish_reason"] == "stop" else "length"
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text.strip()}, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        self._record(route, start, out["completion_tokens"])
        return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": adapter.name, "system_fingerprint": adapter.model_id, "choices": [choice],
                "usage": _usage(n, out).model_dump()}

    async def _sse(self, route, req, adapter, prompt, max_new, stops, rid, chat, start) -> AsyncIterator[str]:
        job = _job(adapter, prompt, max_new, req)
        obj = "chat.completion.chunk" if chat else "text_completion"
        created = int(time.time())

        def chunk(piece: str | None, finish: str | None) -> str:
            if chat:
                delta = {"content": piece} if piece is not None else {}
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}
            return "data: " + json.dumps({"id": rid, "object": obj, "created": created, "model": adapter.name,
                                          "system_fingerprint": adapter.model_id, "choices": [choice]}) + "\n\n"

        if chat:
            yield chunk(None, None).replace('"delta": {}', '"delta": {"role": "assistant"}')
        text, sent, pieces, first = "", 0, 0, None
        finish = "length"
        try:
            gen = self.generator.options(multiplexed_model_id=adapter.model_id, stream=True).stream.remote(job)
            async for piece in gen:
                pieces += 1
                first = first or time.perf_counter()
                text += piece
                cut, stopped = _cut(text, stops)
                if len(cut) > sent:
                    yield chunk(cut[sent:], None)
                    sent = len(cut)
                if stopped:
                    gen.cancel()
                    finish = "stop"
                    break
            else:
                finish = "stop" if pieces < max_new else "length"
        except BackPressureError:
            yield "data: " + json.dumps(errors.body(503, "the model deployment is at capacity; retry shortly",
                                                    code="overloaded")) + "\n\n"
            return
        if first is not None:
            self.m_ttft.observe(first - start, tags={"route": route})
        yield chunk(None, finish)
        yield "data: [DONE]\n\n"
        self._record(route, start, pieces)


# ============================================================================================ builder


def build_app(args: dict | None = None):
    """The app from its args (serve run/deploy's `args:`, or key=value on the command line, dotted keys
    allowed). Adapters are resolved once here, so a config that cannot serve fails before deploying."""
    args = dict(args or {})
    dotted = {k: v for k, v in args.items() if "." in k}
    tree = {k: v for k, v in args.items() if "." not in k}
    try:
        cfg = load_app_config(tree, dotted)
        registry = Registry(cfg)
        base, _ = registry.base()
    except ConfigError as e:
        raise SystemExit(f"config error: {e}") from None
    a = cfg.model.autoscaling
    ingress = serve.deployment(
        Api, name="Api", num_replicas=1, ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=max(256, 2 * (cfg.model.max_ongoing_requests + cfg.model.max_queued_requests) * a.max_replicas),
        user_config={"adapters": cfg.adapters, "defaults": cfg.defaults,
                     "traffic": {k: [s.model_dump() for s in v] for k, v in cfg.traffic.items()}},
    )
    return ingress.bind(generator_deployment(cfg, base), cfg.model_dump(mode="json"), api_key_hash(cfg.api_key_env))


