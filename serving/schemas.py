"""HTTP request and response bodies: the project's /v1/sql and /v1/code, and the OpenAI-compatible subset.

Apart from the model deployment (serving/generator.py) and the routes (serving/app.py): these only say
what a body may hold. Requests are strict: a field this server does not implement (`logprobs`, `tools`,
`response_format`, `user`, ...) is a 400 naming it, never silently ignored, and a JSON `false` is not a
number. Limits that depend on the config (max_tokens' cap, prompt tokens, schema length) are written into
the served spec by serving/app.py and checked by the routes, with the same error shape (serving/errors.py).

One name per budget: a request's `max_tokens` (OpenAI's `max_completion_tokens` is the same field under
its newer name) is its budget of new tokens; `limits.max_new_tokens` in the config is the server's cap.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.sqlcheck import DIALECTS

MAX_STOP = 4  # stop strings per request, as OpenAI allows
MAX_STOP_CHARS = 64
MAX_SEED = 2**63 - 1  # OpenAI's seed is an int64; torch takes up to 2**64 - 1
MAX_CHOICES = 4  # n: choices per prompt, each a row of the batch
MAX_PROMPTS = 4  # /v1/completions: prompts per request, each a row of the batch


StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True, allow_inf_nan=False)


class Error(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, not_found_error, overloaded_error, "
                      "timeout_error or server_error")
    param: str | None = Field(description="the request field at fault, as the client sent it")
    code: str | None


class ErrorBody(BaseModel):
    """Every failure a client can see, in one shape (OpenAI's)."""

    error: Error


# ------------------------------------------------------------------------------------ the project's


class Sampling(_Strict):
    adapter: str | None = Field(None, min_length=1, max_length=64,
                                description="adapter name (GET /v1/models); default: the route's")
    max_tokens: int | None = Field(None, gt=0, description="this request's budget of new tokens; default and cap "
                                   "from the server config (the cap is this field's maximum in the served spec)")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0: greedy (default); above 0: sampled")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="with temperature > 0: the same seed, the same sample")


class SqlRequest(Sampling):
    question: str = Field(min_length=1, max_length=4000)
    schema_: str = Field(alias="schema", min_length=1, max_length=16_000,
                         description="CREATE TABLE statements, nothing else (maximum: the server's max_schema_chars)")
    dialect: Literal[DIALECTS] = Field("sqlite", description="sqlglot dialect of the answer")  # type: ignore[valid-type]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = Field(description="tokens generated, up to and including the one that ended the text")
    total_tokens: int


class SqlResponse(BaseModel):
    sql: str = Field(description="the query in the requested dialect (the model's text if it is not valid)")
    valid: bool = Field(description="parses, one read-only SELECT/WITH, every table and column in the schema")
    reason: str | None = Field(None, description="why it is not valid")
    dialect: str
    adapter: str = Field(description="the adapter name that answered")
    adapter_id: str = Field(description="<name>@<digest of its folder>: changes when the name is promoted")
    raw: str = Field(description="the model's SQLite text before checks and transpilation")
    usage: Usage


class CodeRequest(Sampling):
    instruction: str = Field(min_length=1, max_length=8000)
    input: str | None = Field(None, max_length=8000, description="optional extra input, e.g. a signature")


class CodeResponse(BaseModel):
    code: str
    valid: bool = Field(description="ast.parse accepts it (nothing is executed)")
    reason: str | None = None
    adapter: str
    adapter_id: str
    usage: Usage


# ------------------------------------------------------------------------------ OpenAI-compatible


class StreamOptions(_Strict):
    include_usage: bool = Field(False, description="a last chunk with `usage` and no choices, before [DONE]")


class _OpenAI(_Strict):
    model: str = Field(min_length=1, max_length=64, description="adapter name (GET /v1/models)")
    max_tokens: int | None = Field(None, gt=0, description="this request's budget of new tokens")
    max_completion_tokens: int | None = Field(None, gt=0, description="the same budget under OpenAI's newer name")
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="choices per prompt, each a row of the batch; 1 when streaming")
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="choice i of n is sampled with seed + i")
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP)] | None = Field(
        None, description=f"up to {MAX_STOP} strings; the text ends before the first, and generation stops there")

    @model_validator(mode="after")
    def _checks(self):
        if self.max_tokens is not None and self.max_completion_tokens is not None \
                and self.max_tokens != self.max_completion_tokens:
            raise ValueError("max_tokens: max_completion_tokens is the same budget under its newer name; send one")
        return self

    @property
    def budget_param(self) -> str:
        """The name the client used for its budget (an error about it names that field)."""
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"

    @property
    def budget(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class CompletionRequest(_OpenAI):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)] = Field(
        description=f"raw text the model continues; a list of 1-{MAX_PROMPTS} such texts, each a row of the batch")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] = Field(description="text, or a list of parts of type text")

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_OpenAI):
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str = Field(description="the adapter id that answered")
    choices: list[CompletionChoice]
    usage: Usage


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "qlora-sweep"
    task: str
    base_model: str = Field(description="the base the adapter was trained on: a hub id, embedded:<name>, or a local "
                            "folder's name")
    adapter_id: str = Field(description="<name>@<digest of its folder>: changes when the name is promoted or rolled back")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    adapters: list[str]
    unavailable: dict[str, str] = Field(description="configured names that cannot be served yet, and why")
