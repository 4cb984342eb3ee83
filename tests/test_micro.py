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


def test_smoke_preset_pretrains_the_same_model_on_a_busy_machine(monkeypatch):
    """The tests' tiny model is built with the smoke preset; its weights must not depend on how fast the
    machine is. A clock that runs 10 s per reading (a machine ~30x slower) must give the same weights."""
    import itertools

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import shared.micro as micro

    preset = micro.PRESETS["smoke"]
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    rows = torch.randint(64, (32, 16), generator=torch.Generator().manual_seed(1))

    def pretrained():
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg)
        stats = micro.pretrain(model, rows, steps=preset["steps"], batch_size=4, lr=preset["lr"],
                               max_time_s=preset["max_time_s"], seed=0, log=lambda s: None)
        return stats["steps"], [p.detach().clone() for p in model.parameters()]

    steps, idle = pretrained()
    clock = itertools.count(0.0, 10.0)
    monkeypatch.setattr(micro.time, "time", lambda: next(clock))
    busy_steps, busy = pretrained()
    assert (busy_steps, steps) == (preset["steps"], preset["steps"])
    assert all(torch.equal(a, b) for a, b in zip(idle, busy, strict=True))
