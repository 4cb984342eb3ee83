"""Serving from the adapter's card: the engine's base is the one the adapter was trained on (model,
revision, quantization), found by the same code as shared.artifacts.load_adapter, and the engine's greedy
text is load_adapter's."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict[str, Path]:
    """Two 2-step SQL adapters of the embedded micro model: one trained on its NF4 base, one on 16 bit."""
    from shared.config import load_config
    from shared.trial import run_trial

    out = tmp_path_factory.mktemp("card")
    for name, extra in (("nf4", []), ("16bit", ["quantization.mode=16bit"])):
        run_trial(load_config(REPO / "configs/sql_micro_smoke.yaml", [
            f"output.dir={out}", f"output.name={name}", "train.max_steps=2", "train.learning_rate=1e-2",
            "eval.max_examples=2", "eval.baseline=false", *extra]))
    return {"nf4": out / "nf4", "16bit": out / "16bit"}


@pytest.mark.parametrize("name, other", [("nf4", "16bit"), ("16bit", "nf4")])
def test_each_adapter_is_served_on_its_own_base_with_load_adapters_greedy_text(adapters, name, other):
    import torch

    from serving.engine import AdapterMismatch, Job, engine_for
    from shared.artifacts import load_adapter

    engine = engine_for(adapters[name], threads=2)
    try:
        engine.add_adapter(name, adapters[name])
        assert bool(getattr(engine.base, "is_loaded_in_4bit", False)) == (name == "nf4")
        model, tokenizer, _ = load_adapter(adapters[name])
        model.eval()
        eos = tokenizer.eos_token_id
        for q in ("How many singers are there?", "What is the name of the oldest person in each city?"):
            schema = "CREATE TABLE people (id INTEGER, name TEXT, age INTEGER, city TEXT)"
            p = engine.render(name, {"question": q, "context": schema})
            ids = torch.tensor([engine._encode(p)])
            with torch.no_grad():
                ref = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=24,
                                     do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
            tokens = ref[0, ids.shape[1]:].tolist()
            tokens = tokens[: tokens.index(eos)] if eos in tokens else tokens
            out = engine.generate([Job(name, p, 24)])[0]
            assert out.text == tokenizer.decode(tokens, skip_special_tokens=True) and out.completion_tokens == len(tokens)
        with pytest.raises(AdapterMismatch, match=f"adapter '{other}' was trained on base 'embedded:micro-llama'"):
            engine.add_adapter(other, adapters[other])  # one engine, one base: the other needs its own
        assert other not in engine.adapters
    finally:
        engine.close()


def test_a_replica_serves_adapters_of_two_bases_each_on_its_own_engine(adapters):
    """The model deployment's class without Ray: an NF4 adapter and a 16-bit one get an engine each (not
    one refused, not both on the first's base), and each answers as its own engine does."""
    import asyncio

    from serving.engine import Job
    from serving.generator import Generator

    gen = Generator(threads=2, preload=[str(adapters["nf4"])])
    try:
        assert len(gen.engines) == 1
        p = "### Task: SQLite query\n"
        outs = {name: asyncio.run(gen.generate(Job(f"{name}@x", p, 12), str(adapters[name]))) for name in ("nf4", "16bit")}
        assert len(gen.engines) == 2
        four = {bool(getattr(e.base, "is_loaded_in_4bit", False)) for e in gen.engines.values()}
        assert four == {True, False}
        for name in ("nf4", "16bit"):
            engine = gen.engine_of[f"{name}@x"]
            assert outs[name].text == engine.generate([Job(f"{name}@x", p, 12)])[0].text
    finally:
        for engine in gen.engines.values():
            engine.close()
