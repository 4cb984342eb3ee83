"""serving/config.py and serving/registry.py: the app's arguments, adapter names, latest pointers and the
canary split, without Ray or a model (adapter folders here hold only a card)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from serving.config import load_app_config
from serving.registry import Registry, Unavailable
from shared.artifacts import CARD_FORMAT
from shared.config import ConfigError
from shared.prompts import PROMPT_VERSION


def _card(folder: Path, task: str = "sql", base: str = "embedded:micro-llama", sha: str | None = "abc") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    card = {"format": CARD_FORMAT, "task": task, "prompt_version": PROMPT_VERSION,
            "base_model": {"name_or_path": base, "revision": None, **({"sha256": {"model.safetensors": sha}} if sha else {})},
            "config": {"model": {"name_or_path": base}, "data": {"task": task}}}
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def _latest(storage: Path, task: str, adapter: Path) -> None:
    (storage / "latest").mkdir(parents=True, exist_ok=True)
    (storage / "latest" / f"{task}.json").write_text(json.dumps({"adapter": str(adapter)}))


@pytest.mark.parametrize("args, says", [
    ({}, "adapters: name at least one adapter"),
    ({"adapters": {"sql": "x"}, "surprise": 1}, "unknown key 'surprise'"),
    ({"adapters": {"bad name!": "x"}}, "must be 1-64 of letters"),
    ({"adapters": {"sql": "latest:sequel"}}, "latest: takes a task"),
    ({"adapters": {"sql": "x"}, "defaults": {"sql": "nope"}}, "defaults.sql: 'nope' is not one of adapters"),
    ({"adapters": {"sql": "x"}, "traffic": {"sql": [{"adapter": "nope", "weight": 1}]}}, "traffic.sql: 'nope'"),
    ({"adapters": {"sql": "x"}, "traffic": {"sql": [{"adapter": "sql", "weight": 0}]}}, "weight"),
    ({"adapters": {"sql": "x"}, "model": {"autoscaling": {"min_replicas": 3, "max_replicas": 2}}}, "min_replicas (3)"),
    ({"adapters": {"sql": "x"}, "limits": {"default_new_tokens": 500}}, "default_new_tokens (500) is above"),
    ({"adapters": {"sql": "x"}, "api_key_env": "my key"}, "api_key_env"),
    ({"adapters": {"sql": "x"}, "model": {"resources": {"num_gpus": 2}}}, "num_gpus"),
])
def test_bad_args_name_the_key(args, says):
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        load_app_config(args)


def test_dotted_overrides_and_the_one_adapter_shorthand(tmp_path):
    folder = _card(tmp_path / "best_adapter", task="code")
    cfg = load_app_config({"adapter": str(folder)}, ["limits.max_new_tokens=200", "model.autoscaling.max_replicas=3"])
    assert cfg.adapters == {"code": str(folder)}
    assert cfg.limits.max_new_tokens == 200 and cfg.model.autoscaling.max_replicas == 3
    assert load_app_config({"adapter": "latest:sql"}).adapters == {"sql": "latest:sql"}
    shipped = load_app_config(Path(__file__).resolve().parent.parent / "serving" / "config.yaml")
    assert shipped.adapters == {"sql": "latest:sql", "code": "latest:code"}


def test_latest_pointers_resolve_and_promotions_are_noticed(tmp_path):
    a, b = _card(tmp_path / "a"), _card(tmp_path / "b")
    code = _card(tmp_path / "c", task="code")
    storage = tmp_path / "sweeps"
    _latest(storage, "sql", a)
    cfg = load_app_config({"adapters": {"sql": "latest:sql", "code": "latest:code", "code-1": str(code)},
                           "storage_path": str(storage)})
    reg = Registry(cfg)
    first = reg.get("sql")
    assert first.path == str(a.resolve()) and first.model_id.startswith("sql@") and first.task == "sql"
    with pytest.raises(Unavailable, match="no sweep has exported a code adapter yet"):
        reg.get("code")
    with pytest.raises(KeyError):
        reg.get("nope")
    assert reg.default_for("code").name == "code-1"  # the only code adapter there is
    assert reg.refresh() == []  # nothing changed
    _latest(storage, "sql", b)
    assert reg.refresh() == ["sql"]
    assert reg.get("sql").path == str(b.resolve()) and reg.get("sql").model_id != first.model_id
    assert reg.get("sql").base == reg.get("code-1").base  # the same base: one engine, one tokenizer


def test_adapters_are_grouped_by_their_whole_base_and_an_app_needs_one(tmp_path):
    """The base key is the card's model (revision included) and quantization: another revision or a 16-bit
    adapter is another base (its own engine on the replica)."""
    x, y, z = _card(tmp_path / "x"), _card(tmp_path / "y"), _card(tmp_path / "z")
    for folder, change in ((y, {"quantization": {"mode": "16bit"}}), (z, {"model": {"name_or_path": "embedded:micro-llama",
                                                                                    "revision": "v2"}})):
        card = json.loads((folder / "card.json").read_text())
        card["config"].update(change)
        (folder / "card.json").write_text(json.dumps(card))
    reg = Registry(load_app_config({"adapters": {"x": str(x), "y": str(y), "z": str(z)}}))
    assert len({a.base for a in reg.adapters.values()}) == 3
    reg.require_some()
    cfg = load_app_config({"adapters": {"sql": "latest:sql"}, "storage_path": str(tmp_path / "empty")})
    with pytest.raises(ConfigError, match="none can be served yet"):
        Registry(cfg).require_some()


def test_traffic_splits_the_default_by_weight(tmp_path):
    cfg = load_app_config({
        "adapters": {"sql": str(_card(tmp_path / "a")), "next": str(_card(tmp_path / "b"))},
        "traffic": {"sql": [{"adapter": "sql", "weight": 9}, {"adapter": "next", "weight": 1}]},
    })
    reg, rng = Registry(cfg), random.Random(0)
    picks = [reg.default_for("sql", rng).name for _ in range(2000)]
    # weight 1 of 10 over 2000 seeded draws: 0.10, binomial sd 0.0067, so +-0.03 is 4.5 sd (and Random(0) is fixed)
    assert 0.07 < picks.count("next") / len(picks) < 0.13
    rolled_back = Registry(load_app_config({**cfg.model_dump(), "traffic": {}}))
    assert {rolled_back.default_for("sql", rng).name for _ in range(50)} == {"sql"}


def test_the_grafana_dashboard_charts_metrics_the_code_exports():
    """Every metric a panel queries is one the code defines (Ray adds ray_ and, for counters, _total)."""
    import re

    repo = Path(__file__).resolve().parent.parent
    defined = {}
    for f in [*(repo / "serving").glob("*.py"), *(repo / "sweeps").glob("*.py")]:
        for kind, name in re.findall(r"(Counter|Histogram|Gauge)\(\s*\"(qlora_\w+)\"", f.read_text()):
            defined[name] = kind
    exported = set()
    for name, kind in defined.items():
        exported |= {f"ray_{name}_total"} if kind == "Counter" else (
            {f"ray_{name}_bucket", f"ray_{name}_sum", f"ray_{name}_count"} if kind == "Histogram" else {f"ray_{name}"})
    dash = json.loads((repo / "serving" / "grafana_dashboard.json").read_text())
    used = {m for p in dash["panels"] for t in p["targets"] for m in re.findall(r"ray_qlora_\w+", t["expr"])}
    assert len(dash["panels"]) >= 8 and used
    assert used <= exported, sorted(used - exported)
    assert {"ray_qlora_serve_requests_total", "ray_qlora_serve_time_to_first_token_seconds_bucket",
            "ray_qlora_serve_batch_rows_total", "ray_qlora_serve_adapter_evictions_total", "ray_qlora_sweep_trials"} <= used


def test_problems_and_model_cards_name_adapters_never_server_paths(tmp_path):
    """What a client reads (/healthz problems, 503 messages, /v1/models) carries no absolute server path."""
    from serving.registry import public_name, without_paths

    empty = tmp_path / "no-card"
    empty.mkdir()
    cfg = load_app_config({"adapters": {"sql": "latest:sql", "broken": str(empty)},
                           "storage_path": str(tmp_path / "sweeps")})
    reg = Registry(cfg)
    assert set(reg.problems) == {"sql", "broken"}
    for problem in reg.problems.values():
        assert str(tmp_path) not in problem and "/tmp" not in problem, problem
    assert "'no-card' has no card.json" in reg.problems["broken"]
    with pytest.raises(Unavailable) as e:
        reg.get("broken")
    assert str(tmp_path) not in str(e.value)
    assert without_paths("model at /srv/models/x/adapter_config.json, see ~/y/z") == "model at adapter_config.json, see z"
    assert without_paths("no route GET http://host/v1/sql") == "no route GET http://host/v1/sql"
    assert public_name(str(tmp_path / "tiny-llama")) == "tiny-llama"
    assert public_name("embedded:micro-llama") == "embedded:micro-llama"
    assert public_name("meta-llama/Llama-2-7b-hf") == "meta-llama/Llama-2-7b-hf"
