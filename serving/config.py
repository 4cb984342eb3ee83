"""The serving app's typed config: the arguments of `serving.app:build_app`.

    serve run serving/config.yaml                                  # its `args:` are this tree
    serve run serving.app:build_app adapters.sql=~/qlora-sweeps/latest/sql   # key=value, dotted
    AppConfig from load_app_config(tree_or_yaml, overrides)

Adapters are named: a request picks one by name (`model` in the OpenAI routes, `adapter` in /v1/sql and
/v1/code), or gets the route's default. A name maps to an adapter folder, or to `latest:<task>`, the
newest best adapter of a sweep (`<storage_path>/latest/<task>.json`), re-read every `latest_poll_s`
seconds so that a new sweep's winner is picked up without restarting anything. `traffic` splits a
route's default between adapters (a canary). Set in the Serve config's `deployments: [{name: Api,
user_config: {traffic: ...}}]`, a change takes effect on `serve deploy` without restarting any replica
(serving/config.yaml shows how); a change to `args:` redeploys the model replicas.

No secret is ever in this config: `api_key_env` names the environment variable that holds the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.config import ConfigError, apply_overrides, read_yaml, validate

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
LATEST = "latest:"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Limits(_Section):
    max_body_bytes: int = Field(65_536, gt=0)  # larger bodies get 413 before they are parsed
    max_prompt_tokens: int = Field(1024, gt=0)  # longer prompts get 400 (not silently truncated)
    max_new_tokens: int = Field(256, gt=0)  # the largest max_tokens a request may ask for
    default_new_tokens: int = Field(128, gt=0)  # when a request does not say
    request_timeout_s: float = Field(60.0, gt=0)  # generation longer than this gets 504
    max_schema_chars: int = Field(16_000, gt=0)  # /v1/sql: CREATE TABLE text

    @model_validator(mode="after")
    def _defaults_fit(self):
        if self.default_new_tokens > self.max_new_tokens:
            raise ValueError(f"default_new_tokens ({self.default_new_tokens}) is above max_new_tokens ({self.max_new_tokens})")
        return self


class Batching(_Section):
    # Continuous batching: up to max_batch_size requests decode together; a request joins at the next
    # step and leaves at its own end. 1: one request at a time (no batching).
    max_batch_size: int = Field(16, gt=0)
    batch_wait_timeout_s: float = Field(0.0, ge=0)  # an idle replica's first request waits this long for company
    # Prefix caching: the KV of prompts that began a new prefix, kept per adapter up to this many MB per base in a
    # replica; a request whose prompt begins like a kept one (same CREATE TABLE text) prefills only the rest. 0: off
    prefix_cache_mb: float = Field(256, ge=0)


class Autoscaling(_Section):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, gt=0)
    target_ongoing_requests: float = Field(4, gt=0)  # per replica: above it Serve adds replicas
    upscale_delay_s: float = Field(5, ge=0)
    downscale_delay_s: float = Field(30, ge=0)

    @model_validator(mode="after")
    def _order(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self


class Resources(_Section):
    num_cpus: float = Field(1, gt=0)  # per model replica; its torch threads
    num_gpus: float = Field(0, ge=0, le=1)  # 1 on a GPU cluster: one replica per GPU


class ModelDeployment(_Section):
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    resources: Resources = Field(default_factory=Resources)
    # Back-pressure: a replica works on at most max_ongoing_requests; beyond that requests queue in the
    # caller, and beyond max_queued_requests callers get 503 with Retry-After.
    max_ongoing_requests: int = Field(16, gt=0)
    max_queued_requests: int = Field(32, ge=0)
    max_adapters_per_replica: int = Field(4, gt=0)  # LoRA adapters kept loaded; least recently used go


class Split(_Section):
    adapter: str
    weight: float = Field(gt=0)


class Page(_Section):
    """The app's page (serving/ui.py): sweeps, served adapters, a playground, live metrics."""

    enabled: bool = True  # /ui; behind the API key when the server has one (the login's password)
    # Where the live metrics come from: a Prometheus scraping the cluster (sweeps/local_cluster.py starts one).
    prometheus_url: str = "http://127.0.0.1:9090"
    metrics_minutes: int = Field(15, gt=0, le=24 * 60)  # how far back the live charts go


class AppConfig(_Section):
    # name -> adapter folder or latest:<task>; the names requests use.
    adapters: dict[str, str] = Field(min_length=1)
    # The adapter each route uses when a request names none: {"sql": name, "code": name}.
    defaults: dict[Literal["sql", "code"], str] = Field(default_factory=dict)
    # Weighted split of a route's default between adapters: {"sql": [{adapter: a, weight: 9}, {adapter: b, weight: 1}]}.
    traffic: dict[Literal["sql", "code"], list[Split]] = Field(default_factory=dict)
    storage_path: str = "~/qlora-sweeps"  # where latest:<task> pointers are read (sweeps/run.py writes them)
    latest_poll_s: float = Field(10.0, gt=0)
    limits: Limits = Field(default_factory=Limits)
    batching: Batching = Field(default_factory=Batching)
    model: ModelDeployment = Field(default_factory=ModelDeployment)
    api_key_env: str = Field("QLORA_SERVE_API_KEY", pattern=r"^[A-Z_][A-Z0-9_]*$")
    page: Page = Field(default_factory=Page)

    @field_validator("adapters")
    @classmethod
    def _names(cls, v: dict[str, str]):
        for name, where in v.items():
            if not NAME.match(name):
                raise ValueError(f"adapters: name {name!r} must be 1-64 of letters, digits, _.:- ")
            if where.startswith(LATEST) and where[len(LATEST):] not in ("sql", "code"):
                raise ValueError(f"adapters.{name}: {where!r}: latest: takes a task, sql or code")
        return v

    @model_validator(mode="after")
    def _refs(self):
        for task, name in self.defaults.items():
            if name not in self.adapters:
                raise ValueError(f"defaults.{task}: {name!r} is not one of adapters: {', '.join(self.adapters)}")
        for task, splits in self.traffic.items():
            for s in splits:
                if s.adapter not in self.adapters:
                    raise ValueError(f"traffic.{task}: {s.adapter!r} is not one of adapters: {', '.join(self.adapters)}")
        return self


def load_app_config(source: str | Path | dict | None = None, overrides: list[str] | dict | None = None) -> AppConfig:
    """A YAML path (the args, or a Serve config file holding them) or a tree (serve's `args:`), plus dotted
    overrides -> AppConfig, or ConfigError naming the key.

    A flat `adapter=<folder or latest:task>` (serve run serving.app:build_app adapter=...) is the
    shorthand for one adapter named after its task (sql or code, from its card)."""
    if source is None:
        tree: dict = {}
    elif isinstance(source, dict):
        tree = dict(source)
    else:
        tree = read_yaml(source)
        if "applications" in tree:  # a Serve config file (serving/config.yaml): this app's args
            apps = [a for a in tree["applications"] if str(a.get("import_path", "")).startswith("serving.app:")]
            if not apps:
                raise ConfigError(f"{source}: no application with import_path serving.app:build_app")
            tree = dict(apps[0].get("args") or {})
    tree = apply_overrides(tree, overrides or [])
    if "adapter" in tree:
        where = str(tree.pop("adapter"))
        tree.setdefault("adapters", {})[_task_of(where)] = where
    if not tree.get("adapters"):
        raise ConfigError("adapters: name at least one adapter (adapter=<folder> or adapters.<name>=<folder|latest:task>)")
    return validate(AppConfig, tree, source=str(source) if source is not None and not isinstance(source, dict) else "args")


def _task_of(where: str) -> str:
    if where.startswith(LATEST):
        return where[len(LATEST):]
    from shared.artifacts import read_card

    _, cfg = read_card(Path(where).expanduser())
    return cfg.data.task
