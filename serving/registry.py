"""Adapter names -> adapter folders, as the ingress sees them: resolved from the config, `latest:<task>`
pointers re-read on a timer, the canary split, all without touching the model.

A resolved adapter gets a model id `<name>@<8 hex>` (a digest of its folder and card): that is the id
Serve multiplexes on. When `latest/sql.json` starts naming a new folder, `sql` gets a new model id; the
next request loads it by id on whichever replica it lands, and the old one ages out of the replicas'
LRU. Nothing restarts.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from serving.config import LATEST, AppConfig
from serving.engine import base_key
from shared.artifacts import CARD, read_card
from shared.config import ConfigError
from shared.storage import is_uri, local_adapter, read_latest


@dataclass(frozen=True)
class Adapter:
    name: str
    model_id: str  # what Serve multiplexes on
    path: str
    task: str
    prompt_version: str  # how its prompts are rendered (shared.prompts)
    base_model: str
    base: str  # serving.engine.base_key of its card: adapters with the same share an engine and a tokenizer
    created: int  # the card's mtime: OpenAI's `created`


class Unavailable(LookupError):
    """The name is configured but points at nothing yet (no sweep wrote latest/<task>.json)."""


def resolve(where: str, storage_path: str) -> Path:
    """A folder, or latest:<task> -> the folder the pointer names now."""
    if not where.startswith(LATEST):
        return Path(where).expanduser().resolve()
    task = where[len(LATEST):]
    if is_uri(storage_path):  # a bucket: pointer read through pyarrow, the adapter copied to a local cache once
        latest = read_latest(storage_path, task)
        if latest is None:
            raise Unavailable(f"no sweep has exported a {task} adapter yet ({storage_path}/latest/{task}.json)")
        return local_adapter(latest["adapter"])
    pointer = Path(storage_path).expanduser() / "latest" / f"{task}.json"
    if not pointer.is_file():
        raise Unavailable(f"no sweep has exported a {task} adapter yet (no latest/{task}.json in the storage path)")
    return Path(json.loads(pointer.read_text())["adapter"]).expanduser().resolve()


_PATH = re.compile(r"(?<![\w:/.~])~?/[^\s'\"]+")


def without_paths(message: str) -> str:
    """A message as a client may read it: every absolute server path cut to its last part (an adapter
    folder to its own name), so that answers never show where the server keeps its files."""
    return _PATH.sub(lambda m: Path(m.group()).name or "/", message)


def public_name(name_or_path: str) -> str:
    """A base model as a client may read it: a hub id or embedded:<name> as is, a local folder by its name."""
    if name_or_path.startswith(("/", "~", ".")) or Path(name_or_path).expanduser().exists():
        return Path(name_or_path).name
    return name_or_path


def load(name: str, where: str, storage_path: str) -> Adapter:
    path = resolve(where, storage_path)
    card, cfg = read_card(path)
    digest = hashlib.sha256(f"{path}\n{(path / CARD).read_text()}".encode()).hexdigest()[:8]
    return Adapter(name, f"{name}@{digest}", str(path), cfg.data.task, card["prompt_version"], cfg.model.name_or_path,
                   base_key(cfg.model, cfg.quantization), int((path / CARD).stat().st_mtime))


class Registry:
    def __init__(self, cfg: AppConfig):
        self.cfg = cfg
        self.adapters: dict[str, Adapter] = {}
        self.problems: dict[str, str] = {}  # name -> why it is not available
        self.refresh()

    def refresh(self) -> list[str]:
        """Re-resolves every name; returns the names whose adapter changed (promotions)."""
        changed = []
        for name, where in self.cfg.adapters.items():
            try:
                a = load(name, where, self.cfg.storage_path)
            except (Unavailable, ConfigError, OSError, ValueError, KeyError) as e:
                self.problems[name] = without_paths(str(e))
                continue
            self.problems.pop(name, None)
            if self.adapters.get(name) != a:
                changed.append(name)
                self.adapters[name] = a
        return changed

    def require_some(self) -> None:
        """Refuses a config of which no adapter can be served yet (at deploy time, before any replica)."""
        if not self.adapters:
            problems = "; ".join(f"{n}: {p}" for n, p in self.problems.items())
            raise ConfigError(f"adapters: none can be served yet ({problems})")

    def get(self, name: str) -> Adapter:
        if name in self.adapters:
            return self.adapters[name]
        if name in self.problems:
            raise Unavailable(f"adapter {name!r} is not available: {self.problems[name]}")
        raise KeyError(name)

    def default_for(self, task: str, rng: random.Random | None = None) -> Adapter:
        """The route's adapter: a weighted pick from traffic.<task>, else defaults.<task>, else the one named
        like the task, else the only available adapter of that task."""
        splits = [s for s in self.cfg.traffic.get(task, []) if s.adapter in self.adapters]
        if splits:
            pick = (rng or random).choices([s.adapter for s in splits], weights=[s.weight for s in splits])[0]
            return self.adapters[pick]
        if task in self.cfg.defaults:
            return self.get(self.cfg.defaults[task])
        if task in self.adapters:
            return self.adapters[task]
        of_task = [a for a in self.adapters.values() if a.task == task]
        if len(of_task) == 1:
            return of_task[0]
        if task in self.problems:
            return self.get(task)  # raises: why the adapter named like the task is not there
        raise Unavailable(f"no default {task} adapter: set defaults.{task} to one of: {', '.join(self.cfg.adapters)}")
