"""serving/engine.py without Ray: adapters by folder on one 4-bit base, mixed-adapter batches, streaming,
eviction, and refusal of an adapter trained on another base."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def two_adapters(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A 4-step SQL adapter, and a copy whose LoRA B matrices are scaled 40x: surely other outputs."""
    import torch
    from safetensors.torch import load_file, save_file

    from shared.config import load_config
    from shared.trial import run_trial

    out = tmp_path_factory.mktemp("engine")
    cfg = load_config(REPO / "configs/sql_micro_smoke.yaml", [
        f"model.name_or_path={tiny_model_dir}", f"output.dir={out}", "output.name=a", "eval.max_examples=2"])
    run_trial(cfg)
    a, b = out / "a", out / "b"
    shutil.copytree(a, b)
    weights = load_file(b / "adapter_model.safetensors")
    save_file({k: (v * 40 if "lora_B" in k else v).to(torch.float32).contiguous() for k, v in weights.items()},
              b / "adapter_model.safetensors")
    return a, b


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from serving.engine import Engine

    return Engine(str(tiny_model_dir), threads=2)


def test_a_mixed_batch_gives_each_row_its_own_adapters_output(engine, two_adapters):
    from serving.engine import Job

    a, b = two_adapters
    engine.add_adapter("a", a)
    engine.add_adapter("b", b)
    prompts = [engine.render("a", {"question": f"How many rows in t{i}?", "context": "CREATE TABLE t (x INT)"})
               for i in range(3)]
    alone = [engine.generate([Job(name, p, 12)])[0].text for name in ("a", "b") for p in prompts]
    mixed = engine.generate([Job(name, p, 12) for name in ("a", "b") for p in prompts])
    assert [o.text for o in mixed] == alone
    assert alone[:3] != alone[3:]  # the two adapters do differ, so the check above means something
    assert all(o.prompt_tokens == engine.count_tokens(p) for o, p in zip(mixed, prompts * 2, strict=True))
    short = engine.generate([Job("a", prompts[0], 3)])[0]
    assert short.completion_tokens <= 3 and (short.finish_reason == "length" or short.completion_tokens < 3)


def test_streaming_pieces_add_up_to_the_batched_text(engine, two_adapters):
    from serving.engine import Job

    engine.add_adapter("a", two_adapters[0])
    p = engine.render("a", {"question": "How many rows?", "context": "CREATE TABLE t (x INT)"})
    whole = engine.generate([Job("a", p, 16)])[0].text
    assert "".join(engine.stream(Job("a", p, 16))) == whole


def test_removed_adapters_are_gone_and_can_come_back(engine, two_adapters):
    from serving.engine import Job

    a, b = two_adapters
    engine.add_adapter("a", a)
    engine.add_adapter("b", b)
    engine.remove_adapter("b")
    assert "b" not in engine.adapters and "b" not in engine.model.peft_config
    with pytest.raises(KeyError, match="b"):
        engine.generate([Job("b", "x", 2)])
    again = engine.add_adapter("b2", b)
    assert again.task == "sql" and engine.generate([Job("b2", "### Task", 2)])[0].completion_tokens <= 2


def test_an_adapter_of_another_base_is_refused(engine, two_adapters, tmp_path):
    from serving.engine import AdapterMismatch

    other = tmp_path / "other"
    shutil.copytree(two_adapters[0], other)
    card = json.loads((other / "card.json").read_text())
    card["base_model"]["sha256"] = {"model.safetensors": "0" * 64}
    (other / "card.json").write_text(json.dumps(card))
    with pytest.raises(AdapterMismatch, match="other weights"):
        engine.add_adapter("other", other)
    assert "other" not in engine.adapters
