"""The embedded default model: the committed build matches its recorded sha256, loads through the same
path as a hub model, and the smoke build of the same script works (the tiny_model_dir fixture)."""

import json

import pytest

from shared.micro import COMMITTED_DIR, SIZES, sha256


def test_smoke_build_writes_a_loadable_model_with_its_build_record(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = json.loads((tiny_model_dir / "BUILD.json").read_text())
    assert info["sha256"]["model.safetensors"] == sha256(tiny_model_dir / "model.safetensors")
    assert info["result"]["final_loss"] < 6.0  # it learned something in its seconds of pretraining
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert model.config.vocab_size == len(tok) == SIZES["tiny"]["vocab_size"]
    for dim in ("hidden_size", "intermediate_size", "vocab_size"):
        assert getattr(model.config, dim) % 64 == 0, dim


@pytest.mark.skipif(not (COMMITTED_DIR / "model.safetensors").exists(), reason="no committed embedded model")
def test_committed_model_matches_its_recorded_sha256():
    info = json.loads((COMMITTED_DIR / "BUILD.json").read_text())
    assert info["sha256"]["model.safetensors"] == sha256(COMMITTED_DIR / "model.safetensors")
    assert (COMMITTED_DIR / "model.safetensors").stat().st_size < 25_000_000


@pytest.mark.skipif(not (COMMITTED_DIR / "model.safetensors").exists(), reason="no committed embedded model")
def test_embedded_model_loads_in_4bit_by_name():
    from shared.config import load_config
    from shared.models import load_base, load_tokenizer

    cfg = load_config(None, ["model.name_or_path=embedded:micro-llama"])
    model = load_base(cfg.model, cfg.quantization)
    assert getattr(model, "is_loaded_in_4bit", False)
    tok = load_tokenizer(cfg.model)
    assert tok.eos_token_id is not None and tok.pad_token_id is not None


def test_unknown_embedded_name_is_refused():
    from shared.micro import resolve

    with pytest.raises(ValueError, match="micro-llama"):
        resolve("embedded:giant")


@pytest.mark.skipif(not (COMMITTED_DIR / "model.safetensors").exists(), reason="no committed embedded model")
def test_committed_model_copies_from_context():
    """The property the fine-tune stands on: the base copies a value from its context (recall drills)."""
    from shared.micro import recall_accuracy

    assert recall_accuracy(COMMITTED_DIR, n=30) >= 0.8
