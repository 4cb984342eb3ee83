"""The Ray Serve app: the HTTP routes and `build_app`. A FastAPI ingress (`Api`) in front of an autoscaled
model deployment (`Generator`, serving/generator.py).

    serve run serving/config.yaml                                          # adapters from latest/<task>.json
    serve run serving.app:build_app adapter=~/qlora-sweeps/latest/sql      # one adapter folder
    serve deploy serving/config.yaml                                       # onto a running cluster

One shape from HTTP to the engine: a route validates its body (serving/schemas.py), resolves the adapter
(serving/registry.py), renders the prompt (shared/prompts.py), checks the limits, and sends a typed
`serving.engine.Job` to the model deployment, which batches it continuously with everyone else's.
Failures become one JSON error shape (serving/errors.py); the body cap, request metrics, API key and the
offline docs are serving/http.py; the page at /ui is serving/ui.py. `Api`'s user_config carries
adapters/defaults/traffic and limits, so `serve deploy` with a new split (a canary, a rollback) or new limits
reconfigures it in place.

Routes run without Ray too: `create_app()` + `install(app, Service(generator, cfg))` with any object that
has the Generator's `generate(job, folder)` and `stream(job, folder)` (the route tests pass a fake).
"""

import ast  # noqa: I001  (no `from __future__ import annotations`: FastAPI reads the route annotations)
import asyncio
import json
import random
import re
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import StreamingResponse
from ray import serve

from serving import errors, ui
from serving.config import AppConfig, load_app_config
from serving.engine import Job, Output, base_key
from serving.errors import APIError
from serving.http import AUTH, CapBodyAndCount, api_key_hash, install_docs, put, settings
from serving.registry import Registry, Unavailable, public_name
from serving.schemas import (
    ChatChoice, ChatRequest, ChatResponse, CodeRequest, CodeResponse, CompletionChoice, CompletionRequest,
    CompletionResponse, ErrorBody, Health, ModelCard, ModelList, SqlRequest, SqlResponse, Usage,
)
from serving.sqlcheck import SchemaError, check_sql, parse_schema
from shared.artifacts import base_of
from shared.config import ConfigError
from shared.prompts import PromptError, PromptFormat, format_of, prompt_ids

RETRY_AFTER_S = "1"


class Overloaded(Exception):
    """The model deployment refused the request (its queue is full): 503 with Retry-After."""


class ReplicaGone(Exception):
    """The model replica died or became unreachable during the request: retried once, then 503."""


# ====================================================================================== the service


class Service:
    """What the routes need across requests: the config, the adapter names, the model deployment,
    tokenizers (prompt limits are checked before anything reaches the model) and metrics."""

    def __init__(self, generator, cfg: AppConfig, key_hash: str | None = None):
        from ray.util import metrics

        self.generator, self.key_hash = generator, key_hash
        self.configure(cfg)
        self.rng = random.Random()
        self.tokenizers: dict[str, object] = {}  # base key -> its tokenizer, from an adapter folder
        self._poll: asyncio.Task | None = None
        self.m_ttft = metrics.Histogram("qlora_serve_time_to_first_token_seconds", "Streaming: time to first token",
                                        tag_keys=("route",), boundaries=[0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10])
        self.m_tokens = metrics.Counter("qlora_serve_tokens_generated", "Tokens generated", tag_keys=("adapter",))
        self.m_tps = metrics.Histogram("qlora_serve_tokens_per_second", "Generated tokens per second of a request",
                                       tag_keys=("route",), boundaries=[1, 5, 10, 25, 50, 100, 250, 500, 1000])
        self.m_promotions = metrics.Counter("qlora_serve_adapter_promotions", "Adapter names that got a new folder",
                                            tag_keys=("adapter",))

    def configure(self, cfg: AppConfig) -> None:
        self.cfg, self.registry = cfg, Registry(cfg)

    def _start_polling(self) -> None:
        if self._poll is None or self._poll.done():
            self._poll = asyncio.get_running_loop().create_task(self._poll_latest())

    async def _poll_latest(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.latest_poll_s)
            await self.refresh_latest()

    async def refresh_latest(self) -> None:
        """Re-reads the latest/<task> pointers now (the poller's work; the page's, right after it moves one)."""
        for name in await asyncio.to_thread(self.registry.refresh):
            self.m_promotions.inc(tags={"adapter": name})

    def adapter(self, name: str | None, task: str | None, param: str):
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
            raise APIError(400, f"adapter {a.name!r} is a {a.task} adapter, not {task}", param=param, code="wrong_task")
        return a

    def max_tokens(self, budget: int | None, param: str) -> int:
        """The request's budget of new tokens, checked against the server's cap (limits.max_new_tokens)."""
        lim = self.cfg.limits
        if budget is None:
            return lim.default_new_tokens
        if budget > lim.max_new_tokens:
            raise APIError(400, f"{param}: {budget} is above this server's limit of {lim.max_new_tokens}",
                           param=param, code="max_tokens_too_large")
        return budget

    def tokenizer(self, adapter):
        if adapter.base not in self.tokenizers:
            from transformers import AutoTokenizer

            self.tokenizers[adapter.base] = AutoTokenizer.from_pretrained(adapter.path)
        return self.tokenizers[adapter.base]

    def prompt_format(self, adapter) -> PromptFormat:
        """How the adapter's prompts are rendered and its answers cut: as its card says it was trained."""
        try:
            return format_of(adapter.prompt_version, self.tokenizer(adapter))
        except PromptError as e:
            raise APIError(503, f"adapter {adapter.name!r} cannot be prompted as trained: {e}", param="model",
                           code="adapter_unavailable") from None

    def count(self, adapter, prompt: str, param: str) -> int:
        """Prompt tokens (with the start token), refused above limits.max_prompt_tokens: never truncated."""
        n = len(prompt_ids(self.tokenizer(adapter), prompt))
        cap = self.cfg.limits.max_prompt_tokens
        if n > cap:
            raise APIError(400, f"{param}: the prompt is {n} tokens; this server's limit is {cap}", param=param,
                           code="prompt_too_long")
        return n

    async def run(self, adapter, job: Job) -> Output:
        """One generation, within limits.request_timeout_s. A replica that dies under it: retried once on
        another (generation has no side effects), then 503 with Retry-After."""
        timeout = self.cfg.limits.request_timeout_s
        deadline = time.monotonic() + timeout
        for attempt in (1, 2):
            try:
                out = await asyncio.wait_for(self.generator.generate(job, adapter.path),
                                             max(0.001, deadline - time.monotonic()))
                break
            except TimeoutError:
                raise APIError(504, f"generation took longer than {timeout} s", code="timeout") from None
            except Overloaded:
                raise APIError(503, "the model deployment is at capacity; retry shortly", code="overloaded",
                               headers={"Retry-After": RETRY_AFTER_S}) from None
            except ReplicaGone:
                if attempt == 2:
                    raise APIError(503, "the model replica is unavailable; retry shortly", code="replica_unavailable",
                                   headers={"Retry-After": RETRY_AFTER_S}) from None
        self.m_tokens.inc(out.completion_tokens, tags={"adapter": adapter.name})
        return out

    def record(self, route: str, start: float, tokens: int) -> None:
        took = time.perf_counter() - start
        if tokens and took > 0:
            self.m_tps.observe(tokens / took, tags={"route": route})


def _service(request: Request) -> Service:
    return settings(request.app).service


SVC = Depends(_service)


def install(app: FastAPI, service: Service) -> None:
    """The service behind an app's routes (once per replica, and again on reconfigure)."""
    put(app, service=service, key_hash=service.key_hash, max_body_bytes=service.cfg.limits.max_body_bytes)


def _usage(prompt_tokens: int, outs: list[Output]) -> Usage:
    done = sum(o.completion_tokens for o in outs)
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=done, total_tokens=prompt_tokens + done)


# ========================================================================================== routes

ERRORS = {
    400: "bad input: the message and `param` name the field",
    401: "missing or wrong API key (only when the server has one)",
    404: "unknown adapter",
    413: "body larger than limits.max_body_bytes",
    500: "an unexpected failure, with a request id to find it in the server log",
    503: "overloaded, a replica unavailable, or an adapter not exported yet: retry after Retry-After seconds",
    504: "generation ran past limits.request_timeout_s",
}


def _errors(*statuses: int) -> dict:
    return {s: {"model": ErrorBody, "description": ERRORS[s]} for s in statuses}


GENERATES = _errors(400, 401, 404, 413, 500, 503, 504)
SSE_EVENT = {"type": "object", "required": ["data"], "properties": {  # one event (OpenAPI 3.1: `schema` is per event)
    "data": {"type": "string", "description": "a chunk (JSON), an error body (JSON) after which the stream ends, or [DONE]"}}}
SSE = {200: {"content": {"text/event-stream": {"schema": SSE_EVENT}},
             "description": "JSON, or with stream: true server-sent events (`data: {chunk}` ... `data: [DONE]`)"}}

router = APIRouter()


@router.get("/healthz", response_model=Health, responses=_errors(500),
            summary="Liveness: 200 while the ingress runs (no API key)")
async def healthz(svc: Service = SVC) -> Health:
    return Health(adapters=sorted(svc.registry.adapters), unavailable=svc.registry.problems)


def _card(a) -> ModelCard:
    return ModelCard(id=a.name, created=a.created, task=a.task, base_model=public_name(a.base_model),
                     adapter_id=a.model_id)


@router.get("/v1/models", response_model=ModelList, dependencies=AUTH, responses=_errors(401, 413, 500),
            summary="The adapters this server answers with")
async def models(svc: Service = SVC) -> ModelList:
    return ModelList(data=[_card(a) for a in svc.registry.adapters.values()])


@router.get("/v1/models/{model}", response_model=ModelCard, dependencies=AUTH, responses=_errors(401, 404, 413, 500, 503),
            summary="One adapter by name")
async def model(model: str, svc: Service = SVC) -> ModelCard:
    return _card(svc.adapter(model, None, "model"))


@router.post("/v1/sql", response_model=SqlResponse, dependencies=AUTH, responses=GENERATES,
             summary="Text-to-SQL: question + CREATE TABLE schema -> checked SQL in your dialect")
async def sql(req: SqlRequest, svc: Service = SVC) -> SqlResponse:
    start = time.perf_counter()
    if len(req.schema_) > svc.cfg.limits.max_schema_chars:
        raise APIError(400, f"schema: longer than {svc.cfg.limits.max_schema_chars} characters", param="schema",
                       code="schema_too_long")
    try:
        tables = parse_schema(req.schema_)
    except SchemaError as e:
        raise APIError(400, f"schema: {e}", param="schema", code="invalid_schema") from None
    adapter = svc.adapter(req.adapter, "sql", "adapter")
    fmt = svc.prompt_format(adapter)
    prompt = fmt.prompt("sql", {"question": req.question, "context": req.schema_})
    n = svc.count(adapter, prompt, "question")
    out = await svc.run(adapter, _job(adapter, prompt, svc.max_tokens(req.max_tokens, "max_tokens"), req))
    raw = fmt.answer("sql", out.text)
    check = check_sql(raw, tables, req.dialect)
    svc.record("/v1/sql", start, out.completion_tokens)
    return SqlResponse(sql=check.sql, valid=check.valid, reason=check.reason, dialect=req.dialect, adapter=adapter.name,
                       adapter_id=adapter.model_id, raw=raw, usage=_usage(n, [out]))


@router.post("/v1/code", response_model=CodeResponse, dependencies=AUTH, responses=GENERATES,
             summary="Python code: instruction (+ input) -> code, checked with ast.parse (never run)")
async def code(req: CodeRequest, svc: Service = SVC) -> CodeResponse:
    start = time.perf_counter()
    adapter = svc.adapter(req.adapter, "code", "adapter")
    fmt = svc.prompt_format(adapter)
    prompt = fmt.prompt("code", {"instruction": req.instruction, "input": req.input or ""})
    n = svc.count(adapter, prompt, "instruction")
    out = await svc.run(adapter, _job(adapter, prompt, svc.max_tokens(req.max_tokens, "max_tokens"), req))
    text = fmt.answer("code", out.text)
    try:
        ast.parse(text)
        valid, reason = True, None
    except SyntaxError as e:
        valid, reason = False, f"SyntaxError: {e.msg} (line {e.lineno})"
    svc.record("/v1/code", start, out.completion_tokens)
    return CodeResponse(code=text, valid=valid, reason=reason, adapter=adapter.name, adapter_id=adapter.model_id,
                        usage=_usage(n, [out]))


def _job(adapter, prompt: str, max_tokens: int, req, stop: tuple[str, ...] = (), seed_offset: int = 0) -> Job:
    seed = None if req.seed is None else req.seed + seed_offset
    return Job(adapter.model_id, prompt, max_tokens, req.temperature, req.top_p, seed, stop)


@router.post("/v1/completions", response_model=CompletionResponse, dependencies=AUTH, responses={**GENERATES, **SSE},
             summary="OpenAI-compatible completions (raw prompt; a list of prompts and n choices are rows of the batch)")
async def completions(req: CompletionRequest, svc: Service = SVC):
    adapter = svc.adapter(req.model, None, "model")
    prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    return await _openai(svc, "/v1/completions", req, adapter, prompts, "prompt", chat=False)


_CREATE = re.compile(r"\bCREATE\s+TABLE\b", re.I)


def split_schema(text: str) -> tuple[str, str]:
    """A user message holding CREATE TABLE statements and a question -> (the statements, the rest)."""
    tables, rest, at = [], [], 0
    for m in _CREATE.finditer(text):
        if m.start() < at:
            continue
        open_at = text.find("(", m.end())
        if open_at < 0:
            break
        depth, i = 0, open_at
        while i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
            if depth == 0:
                break
        if i < len(text) and text[i] == ";":
            i += 1
        rest.append(text[at:m.start()])
        tables.append(text[m.start():i].strip())
        at = i
    rest.append(text[at:])
    return "\n".join(tables), " ".join(" ".join(rest).split())


@router.post("/v1/chat/completions", response_model=ChatResponse, dependencies=AUTH, responses={**GENERATES, **SSE},
             summary="OpenAI-compatible chat: sql adapters take the schema as the system message (or the CREATE TABLE "
             "statements in the user message) and the question as the last user message; code adapters the "
             "instruction as the last user message")
async def chat(req: ChatRequest, svc: Service = SVC):
    adapter = svc.adapter(req.model, None, "model")
    users = [m.text for m in req.messages if m.role == "user"]
    if not users:
        raise APIError(400, "messages: no user message", param="messages", code="no_user_message")
    if adapter.task == "sql":
        schema = "\n".join(m.text for m in req.messages if m.role in ("system", "developer"))
        question = users[-1]
        if not schema.strip():
            schema, question = split_schema(users[-1])
        try:
            parse_schema(schema)
        except SchemaError as e:
            raise APIError(400, f"messages: the CREATE TABLE schema (a system message, or in the user message): {e}",
                           param="messages", code="invalid_schema") from None
        if not question:
            raise APIError(400, "messages: the user message holds no question beside the schema", param="messages",
                           code="no_question")
        prompt = svc.prompt_format(adapter).prompt("sql", {"question": question, "context": schema})
    else:
        prompt = svc.prompt_format(adapter).prompt("code", {"instruction": users[-1], "input": ""})
    return await _openai(svc, "/v1/chat/completions", req, adapter, [prompt], "messages", chat=True)


async def _openai(svc: Service, route: str, req, adapter, prompts: list[str], prompt_param: str, chat: bool):
    start = time.perf_counter()
    if req.stream and len(prompts) * req.n > 1:
        param = "n" if req.n > 1 else "prompt"
        raise APIError(400, f"{param}: streaming answers one choice; send n: 1 and one prompt", param=param,
                       code="stream_one_choice")
    counts = [svc.count(adapter, p, prompt_param) for p in prompts]
    budget = svc.max_tokens(req.budget, req.budget_param)
    stops = req.stops + (svc.prompt_format(adapter).stops if chat else ())
    jobs = [_job(adapter, p, budget, req, stops, j) for p in prompts for j in range(req.n)]
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    if req.stream:
        return await _stream(svc, route, req, adapter, jobs[0], counts[0], rid, chat, start)
    outs = await asyncio.gather(*(svc.run(adapter, j) for j in jobs))
    svc.record(route, start, sum(o.completion_tokens for o in outs))
    usage = _usage(sum(counts), outs)
    head = dict(id=rid, created=int(time.time()), model=adapter.name, system_fingerprint=adapter.model_id, usage=usage)
    if chat:
        return ChatResponse(**head, choices=[ChatChoice(index=i, message={"content": o.text.strip()},
                                                        finish_reason=o.finish_reason) for i, o in enumerate(outs)])
    return CompletionResponse(**head, choices=[CompletionChoice(index=i, text=o.text, finish_reason=o.finish_reason)
                                               for i, o in enumerate(outs)])


async def _stream(svc: Service, route: str, req, adapter, job: Job, prompt_tokens: int, rid: str, chat: bool,
                  start: float):
    """Server-sent events. The first item is awaited here, so that a refusal (overload, timeout, a replica
    gone) is still an HTTP status; a failure after it is an error event, and the stream ends."""
    items = _items(svc, adapter, job)
    try:
        first = await asyncio.wait_for(anext(items), svc.cfg.limits.request_timeout_s)
    except TimeoutError:
        await items.aclose()
        raise APIError(504, f"generation took longer than {svc.cfg.limits.request_timeout_s} s", code="timeout") from None
    except Overloaded:
        raise APIError(503, "the model deployment is at capacity; retry shortly", code="overloaded",
                       headers={"Retry-After": RETRY_AFTER_S}) from None
    except ReplicaGone:
        raise APIError(503, "the model replica is unavailable; retry shortly", code="replica_unavailable",
                       headers={"Retry-After": RETRY_AFTER_S}) from None
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    obj = "chat.completion.chunk" if chat else "text_completion"
    created = int(time.time())

    def event(choices: list, usage: Usage | None = None) -> str:
        body = {"id": rid, "object": obj, "created": created, "model": adapter.name,
                "system_fingerprint": adapter.model_id, "choices": choices}
        if include_usage:
            body["usage"] = usage.model_dump() if usage else None
        return f"data: {json.dumps(body)}\n\n"

    def choice(piece: str | None, finish: str | None) -> dict:
        if chat:
            return {"index": 0, "delta": {"content": piece} if piece is not None else {}, "finish_reason": finish}
        return {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}

    async def events() -> AsyncIterator[str]:
        if chat:
            yield event([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}])
        item, first_at = first, None
        try:
            while not isinstance(item, Output):
                first_at = first_at or time.perf_counter()
                yield event([choice(item, None)])
                item = await anext(items)
        except Exception as e:  # the stream has begun: an error event, then the end
            status = 503 if isinstance(e, (Overloaded, ReplicaGone)) else 500
            if status == 500:
                errors.log.exception("stream %s failed", rid)
            yield "data: " + json.dumps(errors.body(status, "generation failed during the stream; retry",
                                                    code="stream_failed")) + "\n\n"
            return
        finally:
            await items.aclose()
        if first_at is not None:
            svc.m_ttft.observe(first_at - start, tags={"route": route})
        svc.m_tokens.inc(item.completion_tokens, tags={"adapter": adapter.name})
        yield event([choice(None, item.finish_reason)])
        if include_usage:
            yield event([], _usage(prompt_tokens, [item]))
        yield "data: [DONE]\n\n"
        svc.record(route, start, item.completion_tokens)

    return StreamingResponse(events(), media_type="text/event-stream")


async def _items(svc: Service, adapter, job: Job) -> AsyncIterator[str | Output]:
    async for item in svc.generator.stream(job, adapter.path):
        yield item


# ============================================================================================ the app


def create_app() -> FastAPI:
    """The FastAPI app: routes, error shape, body cap and metrics, offline docs, and a spec that carries
    the limits of the config it serves."""
    app = FastAPI(
        title="qlora-sweep serving",
        summary="Text-to-SQL and Python code from QLoRA adapters; OpenAI-compatible completions and chat.",
        version="1",
        docs_url=None, redoc_url=None,  # served offline by serving/http.py
    )
    errors.install(app)
    app.add_middleware(CapBodyAndCount)
    install_docs(app)
    app.include_router(router)
    app.mount(ui.PATH, ui.PageMount())  # the page; built at its first request (page.enabled: false -> 404)
    app.openapi = lambda: _spec(app)
    return app


def _spec(app: FastAPI) -> dict:
    """FastAPI's spec, made true: no 422 (this server answers bad input 400, in the error shape), the
    config's limits as constraints (max_tokens' cap, the schema's length), and the API key where it is
    needed. The prompt's token limit cannot be a JSON Schema constraint (tokens are not characters): it is
    in the descriptions, `x-max-prompt-tokens`, and a 400 `prompt_too_long`."""
    svc = getattr(settings(app), "service", None)
    made = getattr(settings(app), "spec", None)
    if made and made[0] is (svc.cfg if svc else None):  # made for this config (a reconfigure makes it again)
        return made[1]
    spec = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    limits = svc.cfg.limits if svc else None
    for path, ops in spec["paths"].items():
        for op in ops.values():
            op["responses"].pop("422", None)
            if svc and svc.key_hash and path != "/healthz":
                op["security"] = [{"bearer": []}, {"apiKey": []}]
            if limits and "requestBody" in op:
                op["x-max-prompt-tokens"] = limits.max_prompt_tokens
    schemas = spec.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    if limits:
        for name in ("SqlRequest", "CodeRequest", "CompletionRequest", "ChatRequest"):
            props = schemas.get(name, {}).get("properties", {})
            for field in ("max_tokens", "max_completion_tokens"):
                for option in props.get(field, {}).get("anyOf", []):
                    if option.get("type") == "integer":
                        option["maximum"] = limits.max_new_tokens
            if "schema" in props:
                props["schema"]["maxLength"] = min(props["schema"].get("maxLength", limits.max_schema_chars),
                                                   limits.max_schema_chars)
    if svc and svc.key_hash:
        spec.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"}, "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    settings(app).spec = (svc.cfg if svc else None, spec)
    return spec


api = create_app()


def _over(args: dict, user_config: dict) -> dict:
    """The ingress's user_config over the app's args: limits key by key, the other keys whole."""
    out = {**args, **user_config}
    if "limits" in user_config:
        out["limits"] = {**args.get("limits", {}), **user_config["limits"]}
    return out


class ServeGenerator:
    """The model deployment through its Serve handle, with Serve's failures as the app's own
    (Overloaded, ReplicaGone); a call cancelled by its caller (timeout, disconnect) is cancelled there."""

    def __init__(self, handle):
        self.handle = handle

    @staticmethod
    def _translated(e: BaseException) -> BaseException | None:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

        if isinstance(e, BackPressureError):
            return Overloaded(str(e))
        if isinstance(e, (ActorDiedError, ActorUnavailableError, RayActorError, DeploymentUnavailableError,
                          ReplicaUnavailableError)):
            return ReplicaGone(str(e))
        return None

    async def generate(self, job: Job, folder: str) -> Output:
        call = self.handle.options(multiplexed_model_id=job.adapter).generate.remote(job, folder)
        try:
            return await call
        except asyncio.CancelledError:
            call.cancel()
            raise
        except Exception as e:
            mine = self._translated(e)
            if mine is None:
                raise
            raise mine from None

    async def stream(self, job: Job, folder: str) -> AsyncIterator[str | Output]:
        gen = self.handle.options(multiplexed_model_id=job.adapter, stream=True).stream.remote(job, folder)
        try:
            async for item in gen:
                yield item
        except Exception as e:
            mine = self._translated(e)
            if mine is None:
                raise
            raise mine from None
        finally:
            gen.cancel()


@serve.ingress(api)
class Api:
    """The ingress replica: the app's routes over a Service on the model deployment's handle."""

    def __init__(self, generator, cfg: dict, key_hash: str | None):
        self.args = cfg
        install(api, Service(ServeGenerator(generator), AppConfig.model_validate(cfg), key_hash))

    def reconfigure(self, user_config: dict) -> None:
        """serve deploy with a new user_config, in place: adapters, defaults, traffic (a canary, a rollback)
        and limits, over the app's args (what the user_config leaves out goes back to the args' value)."""
        svc = settings(api).service
        svc.configure(AppConfig.model_validate(_over(self.args, user_config)))
        install(api, svc)


def build_app(args: dict | None = None):
    """The app from its args (serve run/deploy's `args:`, or key=value on the command line, dotted keys
    allowed). Adapters are resolved once here, so a config that cannot serve fails before deploying; the
    bases of the adapters found are loaded when a model replica starts.

    `serve run serving.app:build_app ...` calls this before it starts or joins Ray, so the Ray token is made
    here first where none exists (mode 600; a new local Ray would write one readable by all). Under `serve
    run serving/config.yaml` Ray is up before this runs; a token file it left readable by others is
    tightened here."""
    from serving.generator import generator_deployment
    from shared.ray_local import RayAuthError, ensure_token

    try:
        ensure_token()
    except RayAuthError as e:
        raise SystemExit(f"error: {e}") from None
    args = dict(args or {})
    dotted = {k: v for k, v in args.items() if "." in k}
    tree = {k: v for k, v in args.items() if "." not in k}
    try:
        cfg = load_app_config(tree, dotted)
        registry = Registry(cfg)
        registry.require_some()
        preload: dict[str, str] = {}
        for a in registry.adapters.values():
            preload.setdefault(base_key(*base_of(a.path)), a.path)
    except ConfigError as e:
        raise SystemExit(f"config error: {e}") from None
    a = cfg.model.autoscaling
    ingress = serve.deployment(
        Api, name="Api", num_replicas=1, ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=max(256, 2 * (cfg.model.max_ongoing_requests + cfg.model.max_queued_requests) * a.max_replicas),
        user_config={"adapters": cfg.adapters, "defaults": cfg.defaults,
                     "traffic": {k: [s.model_dump() for s in v] for k, v in cfg.traffic.items()}},
    )
    return ingress.bind(generator_deployment(cfg, list(preload.values())), cfg.model_dump(mode="json"),
                        api_key_hash(cfg.api_key_env))
