"""HTTP request and response bodies: the project's /v1/sql and /v1/code, and the OpenAI-compatible subset.

Apart from the model deployment (serving/engine.py) and the routes (serving/app.py): these only say what
a body may hold. Limits that depend on the config (max_tokens, prompt tokens, body size) are checked by
the routes, with the same error shape (serving/errors.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# ------------------------------------------------------------------------------------ the project's


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Sampling(_Strict):
    adapter: str | None = Field(None, description="adapter name (GET /v1/models); default: the route's")
    max_tokens: int | None = Field(None, gt=0, description="new tokens at most; default and cap from the server config")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0: greedy (default); above 0: sampled")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, description="with temperature > 0: the same seed, the same sample")


class SqlRequest(Sampling):
    question: str = Field(min_length=1, max_length=4000)
    schema_: str = Field(alias="schema", min_length=1, description="CREATE TABLE statements, nothing else")
    dialect: str = Field("sqlite", description="sqlglot dialect of the answer: sqlite, postgres, mysql, bigquery, ...")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
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


class _OpenAI(BaseModel):
    # OpenAI clients send fields this server does not use (user, logprobs=None, ...): ignored, not refused.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, description="adapter name (GET /v1/models)")
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: Literal[1] = 1
    stream: bool = False
    seed: int | None = Field(None, ge=0)
    stop: str | list[str] | None = None


class CompletionRequest(_OpenAI):
    prompt: str | list[str] = Field(description="raw text the model continues (one prompt)")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str


class ChatRequest(_OpenAI):
    messages: list[ChatMessage] = Field(min_length=1)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "qlora-sweep"
    task: str
    base_model: str = Field(description="the base the adapter was trained on: a hub id, embedded:<name>, or a local folder's name")
