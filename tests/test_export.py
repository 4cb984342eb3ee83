"""Export merges the adapter into the dequantized base and reports agreement with adapter-on-4-bit."""

import json

import pytest

pytestmark = pytest.mark.slow


def test_export_writes_a_standalone_model_that_agrees_with_the_adapter(smoke_cfg, tmp_path):
    from transformers import AutoModelForCausalLM

    from shared.export import export
    from shared.trial import run_trial

    cfg = smoke_cfg("train.max_steps=12", "train.learning_rate=1e-2", "lora.rank=8")
    adapter = run_trial(cfg)["adapter_path"]
    out = tmp_path / "merged"
    report = export(adapter, out, n_examples=8)

    merged = AutoModelForCausalLM.from_pretrained(out)  # standalone: no peft, no 4-bit config
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert getattr(merged.config, "quantization_config", None) is None
    assert report["examples"] == 8
    assert 0.0 <= report["greedy_agreement"] <= 1.0
    # merged into the weights the adapter was trained against: greedy outputs mostly agree
    assert report["greedy_agreement"] >= 0.5, report
    saved = json.loads((out / "export.json").read_text())
    assert saved["greedy_agreement"] == report["greedy_agreement"]
