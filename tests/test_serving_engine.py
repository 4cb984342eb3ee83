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
    """float32 compute: in bfloat16 a mixed-adapter batch (PEFT's per-row split) and a one-adapter batch
    round differently, which flipped near ties of the 40x adapter's text in about half the runs."""
    from serving.engine import Engine
    from shared.config import QuantizationConfig

    return Engine(str(tiny_model_dir), QuantizationConfig(compute_dtype="float32"), threads=2)


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
    long = engine.render("b", {"question": "How many rows are there?", "context": "CREATE TABLE t (x INT, y TEXT)"})
    engine.generate([Job("b", long, 2)])
    assert engine.prefixes.kept("b") >= 1  # its prompt was kept for requests that begin alike
    engine.remove_adapter("b")
    assert "b" not in engine.adapters and "b" not in engine.model.peft_config
    assert engine.prefixes.kept("b") == 0  # and went with it
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


# --------------------------------------------------------------------------- continuous batching
# On the committed micro model: a pretrained model whose text depends on every position and pad (the tiny
# smoke model repeats one word, which would hide a wrong position or a misaligned KV cache).


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """An Engine on the embedded micro model with two 2-step SQL adapters ("m1", and "m2" of another seed)."""
    from serving.engine import Engine
    from shared.config import QuantizationConfig, load_config
    from shared.trial import run_trial

    out = tmp_path_factory.mktemp("micro")
    for name, seed in (("m1", 0), ("m2", 1)):
        run_trial(load_config(REPO / "configs/sql_micro_smoke.yaml", [
            f"output.dir={out}", f"output.name={name}", "train.max_steps=2", f"train.seed={seed}",
            "train.learning_rate=1e-2", "eval.max_examples=2", "eval.baseline=false"]))
    # float32 compute: bfloat16 rounds differently for different batch shapes, which can flip a near tie
    # between two tokens; in float32 a row's text alone and in any batch are exactly the same.
    engine = Engine("embedded:micro-llama", QuantizationConfig(compute_dtype="float32"), threads=2)
    engine.add_adapter("m1", out / "m1")
    engine.add_adapter("m2", out / "m2")
    yield engine
    engine.close()


def _prompts(engine, n: int) -> list[str]:
    """SQL prompts of growing length, so that joined rows are padded both ways."""
    cols = ["id INTEGER", "name TEXT", "age INTEGER", "city TEXT", "country TEXT", "salary REAL", "team TEXT"]
    return [engine.render("m1", {"question": f"What is the name of the oldest person in {c.split()[0]} number {i}?",
                                 "context": f"CREATE TABLE people ({', '.join(cols[: 2 + i])})"})
            for i, c in enumerate(cols[:n])]


class _Logits:
    """Records every row's next-token logits, pass by pass (wraps the engine's forward; changes nothing)."""

    def __init__(self, engine):
        self.engine, self.by_ticket = engine, {}

    def __enter__(self):
        forward = self.engine._forward

        def recording(rows, **inputs):
            logits = forward(rows, **inputs)
            for t, row in zip(rows, logits, strict=True):
                if t.finish is None:  # still decoding: these logits pick its next token
                    self.by_ticket.setdefault(id(t), []).append(row.float().clone())
            return logits

        self.engine._forward = recording
        return self

    def __exit__(self, *exc):
        del self.engine._forward

    def of(self, ticket):
        import torch

        return torch.stack(self.by_ticket[id(ticket)])


def assert_bf16_close(ours, ref, ulps: int = 4):
    """Logits of the same rows computed in another batch: equal to within `ulps` units in the last place of bf16
    at each step's largest logit.

    The engine computes in bf16, the compute dtype of the 4-bit layers on CPU, which keeps 8 significant bits:
    one unit in the last place (ulp) at a magnitude in [8, 16) is 2**-4 = 0.0625. Another batch shape (rows
    joining, padding, another attention kernel) makes the matrix kernels sum in another order, so a hidden value
    may round the other way, and the logits move on the scale of the step's largest logit, not of each logit.
    Measured on this CPU: at most 0.56 ulp (0.027 at a largest logit of 15.2). 4 ulps is what bf16 allows on
    any CPU, whatever its kernels; a wrong position, mask or cache moves logits by whole units, 16+ ulps (and
    changes the tokens, which the callers assert exactly). The absolute bound of before (0.02) held on one CPU
    and failed by 0.001 on another of the same kind."""
    import torch

    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = torch.maximum(ours.abs().amax(dim=-1), ref.abs().amax(dim=-1)).clamp(min=2.0**-126)
    ulp = torch.exp2(torch.floor(torch.log2(scale)) - 7)  # bf16: 7 stored mantissa bits
    worst = ((ours - ref).abs().amax(dim=-1) / ulp).max().item()
    assert worst <= ulps, f"logits differ by {worst:.2f} bf16 ulps of the step's largest logit (allowed {ulps})"


def test_greedy_logits_and_text_are_hugging_face_generate_s(micro):
    """The engine's own decoding loop against transformers' generate: the same logits at every step (so
    positions and cache are right, not only the argmax), the same text."""
    import torch

    from serving.engine import Job

    eos = micro.tokenizer.eos_token_id
    for p in _prompts(micro, 2):
        ids = torch.tensor([micro._encode(p)])
        with torch.no_grad():
            ref = micro.model.generate(input_ids=ids, max_new_tokens=24, do_sample=False, adapter_names=["m1"],
                                       pad_token_id=micro.tokenizer.pad_token_id, eos_token_id=eos,
                                       output_logits=True, return_dict_in_generate=True)
        tokens = ref.sequences[0, ids.shape[1]:].tolist()
        tokens = tokens[: tokens.index(eos)] if eos in tokens else tokens
        with _Logits(micro) as rec:
            ticket = micro.submit(Job("m1", p, 24))
            assert ticket.wait(60).text == micro.decode(tokens)
        assert ticket.tokens == tokens  # the same tokens, not only the same text
        ours = rec.of(ticket)
        assert_bf16_close(ours, torch.cat(ref.logits)[: len(ours)].float())


@pytest.mark.parametrize("eager_decode", [False, True], ids=["sdpa", "eager-decode"])
def test_rows_that_join_a_running_batch_get_the_text_and_logits_they_get_alone(micro, eager_decode, monkeypatch):
    """Requests arrive while another decodes: a shorter prompt (the running cache is padded for it), then
    longer ones with the other adapter too (the running rows are padded), and rows leave at different
    steps (the cache is trimmed). Each row's logits, step by step, and text are those it gets alone: the
    joined KV cache, its padding, the positions and the trimming are right. With the CPU's eager attention
    for decoding steps of 3+ rows (alone a row decodes with SDPA), the texts are the same; the logits are
    compared where both runs take the same attention (other kernels round differently, ~1e-2)."""
    import torch

    from serving.engine import Job

    monkeypatch.setattr(micro, "_eager_decode", eager_decode)  # restored after the test

    p = _prompts(micro, 6)
    first_job = Job("m1", p[2], 32)
    groups = {3: [Job("m1", p[0], 24)], 6: [Job("m2", p[5], 24), Job("m1", p[4], 12)]}  # at n tokens of the first
    jobs = [first_job, *groups[3], *groups[6]]
    with _Logits(micro) as rec:
        alone_tickets = [micro.submit(j) for j in jobs[:1]]
        alone_tickets[0].wait(60)
        for j in jobs[1:]:
            alone_tickets.append(micro.submit(j))
            alone_tickets[-1].wait(60)
    alone = [t.result() for t in alone_tickets]
    assert alone[0].completion_tokens > 8 and alone[1].text != alone[3].text  # long enough; texts differ
    assert alone[1].text != micro.generate([Job("m2", p[0], 24)])[0].text  # the two adapters do differ

    later: list = []

    def on_token():  # on the loop thread, between two steps
        n = len(first.tokens)
        if n in groups and not any(t.job is groups[n][0] for t in later):
            later.extend(micro.submit(j) for j in groups[n])

    with _Logits(micro) as rec_together:
        first = micro.submit(first_job, notify=on_token, every_token=True)
        together = [first.wait(60), *(t.wait(60) for t in later)]
    assert len(later) == 3, "the others were submitted while the first was decoding"
    assert [o.text for o in together] == [o.text for o in alone]
    for a, b in zip(alone_tickets, [first, *later], strict=True):
        assert b.tokens == a.tokens  # the same tokens, step by step
        if not eager_decode:
            assert_bf16_close(rec_together.of(b), rec.of(a))


def test_a_short_answer_leaves_the_batch_without_waiting_for_a_long_one(micro):
    from serving.engine import Job

    p = _prompts(micro, 2)
    long_alone = micro.generate([Job("m1", p[0], 40)])[0]
    assert long_alone.completion_tokens > 10  # long enough for the check below to mean something
    seen: list[int] = []
    steps: list[int] = []
    micro.on_step = steps.append
    try:
        long_ = micro.submit(Job("m1", p[0], 40))
        short = micro.submit(Job("m1", p[1], 2), notify=lambda: seen.append(len(long_.tokens)))
        assert short.wait(60).completion_tokens <= 2
        assert long_.wait(60).text == long_alone.text
    finally:
        micro.on_step = None
    assert seen and seen[0] < long_alone.completion_tokens  # answered while the long row still decoded
    assert 2 in steps and steps[-1] == 1  # they shared steps; the long row finished alone


def test_a_cancelled_request_leaves_and_the_others_go_on(micro):
    from serving.engine import Cancelled, Job

    p = _prompts(micro, 2)
    want = micro.generate([Job("m1", p[1], 12)])[0].text
    doomed = micro.submit(Job("m1", p[0], 200))
    other = micro.submit(Job("m1", p[1], 12))
    doomed.cancel()
    with pytest.raises(Cancelled):
        doomed.wait(60)
    assert other.wait(60).text == want
    assert len(doomed.tokens) < 200 and not micro._pins


def test_an_adapter_removed_while_in_use_finishes_its_rows_then_goes(micro):
    from serving.engine import Job

    path = micro.adapters["m2"].path
    micro.add_adapter("m3", path)
    p = _prompts(micro, 1)[0]
    want = micro.generate([Job("m3", p, 16)])[0].text
    ticket = micro.submit(Job("m3", p, 16))
    micro.remove_adapter("m3")
    with pytest.raises(KeyError, match="m3"):
        micro.submit(Job("m3", p, 4))
    assert ticket.wait(60).text == want
    assert "m3" not in micro.model.peft_config and "m3" not in micro.adapters


def test_a_seeded_sample_is_the_same_alone_and_in_a_batch(micro):
    from serving.engine import Job

    p, q = _prompts(micro, 2)
    alone = micro.generate([Job("m1", p, 16, temperature=1.0, top_p=0.9, seed=7)])[0].text
    batch = micro.generate([Job("m1", q, 16), Job("m1", p, 16, temperature=1.0, top_p=0.9, seed=7),
                            Job("m1", p, 16, temperature=1.0, seed=8)])
    assert batch[1].text == alone
    greedy = micro.generate([Job("m1", p, 16)])[0].text
    assert len({alone, batch[2].text, greedy}) > 1  # sampling does change the text


def test_max_batch_size_one_runs_one_request_at_a_time(micro):
    from serving.engine import Job

    steps: list[int] = []
    micro.on_step, micro.max_batch_size = steps.append, 1
    try:
        outs = micro.generate([Job("m1", p, 6) for p in _prompts(micro, 3)])
    finally:
        micro.on_step, micro.max_batch_size = None, 16
    assert len(outs) == 3 and set(steps) == {1}


# ------------------------------------------------------------------------------- one row's failure


def _many_prompts(engine, n: int) -> list[str]:
    return [engine.render("m1", {"question": f"How many people live in city number {i}?",
                                 "context": "CREATE TABLE people (id INTEGER, name TEXT, city TEXT)"}) for i in range(n)]


def test_a_poisoned_row_fails_alone_and_the_15_others_in_its_batch_answer(micro, tmp_path, monkeypatch):
    """Two poisoned rows in one batch with 15 others: an adapter whose weights are NaN (every logit of its
    row is NaN) and a seed torch cannot take. The two fail, each with its own error; the 15 answer, one of
    them with a temperature too small for float32 (1/t overflows: greedy). Against the same batch with two
    healthy rows in the poisoned rows' places (another adapter, a sampled row; each leaving after its first
    token, as the poisoned rows leave): every logit of the 15 is finite at every step, and their prefill
    logits are the healthy batch's, so nothing of a poisoned row leaked into theirs. (Texts are not
    compared: this barely trained adapter has near ties that float32 can flip from run to run.)"""
    import torch
    from safetensors.torch import load_file, save_file

    from serving.engine import Job

    nan = tmp_path / "nan"
    shutil.copytree(micro.adapters["m1"].path, nan)
    weights = load_file(nan / "adapter_model.safetensors")
    save_file({k: (torch.full_like(v, float("nan")) if "lora_B" in k else v).contiguous() for k, v in weights.items()},
              nan / "adapter_model.safetensors")
    micro.add_adapter("nan", nan)
    monkeypatch.setattr(micro, "_eager_decode", False)
    monkeypatch.setattr(micro, "prefixes", None)  # both batches prefill whole prompts: the same shapes
    prompts = _many_prompts(micro, 15)

    def one_batch(first: list[Job], last: Job) -> list:
        steps: list[int] = []
        micro.on_step, micro.max_batch_size = steps.append, 17
        try:
            with _Logits(micro) as rec:
                with micro._cv:  # the loop thread takes none of them before all 17 are queued: one batch
                    tickets = [micro.submit(j) for j in [*first, *(Job("m1", p, 8) for p in prompts[:14]), last]]
                for t in tickets:
                    assert t._done.wait(120)
        finally:
            micro.on_step, micro.max_batch_size = None, 16
        assert steps[0] == 17, steps  # they did share a batch
        return tickets, [rec.of(t) for t in tickets[2:]]

    try:
        healthy, healthy_logits = one_batch([Job("m2", prompts[0], 1), Job("m1", prompts[1], 1, temperature=1.0, seed=3)],
                            Job("m1", prompts[14], 8))
        poisoned, poisoned_logits = one_batch([Job("nan", prompts[0], 8), Job("m1", prompts[1], 8, temperature=1.0, seed=2**70)],
                             Job("m1", prompts[14], 8, temperature=5e-324))
    finally:
        micro.remove_adapter("nan")
    with pytest.raises(FloatingPointError, match="NaN"):
        poisoned[0].result()
    with pytest.raises(ValueError, match="seed"):
        poisoned[1].result()
    assert all(t.result().completion_tokens > 0 for t in poisoned[2:])
    for ours, theirs in zip(poisoned_logits, healthy_logits, strict=True):
        assert bool(torch.isfinite(ours).all())
        # float32, the same batch shape: sums in another order at most (~5e-3 seen, as in the joining test)
        torch.testing.assert_close(ours[0], theirs[0], atol=2e-2, rtol=0)
    assert not micro._pins


def test_a_stop_string_ends_decoding_there(micro):
    """The row leaves the batch at the token that completes the stop string: the text ends before it, the
    usage counts the tokens generated up to there, the finish reason is "stop", and a stream never shows
    the stop string or any part of it."""
    from serving.engine import Job

    p = _prompts(micro, 1)[0]
    full = micro.generate([Job("m1", p, 40)])[0]
    ticket = micro.submit(Job("m1", p, 40))
    ticket.wait(60)
    assert full.completion_tokens >= 12, full  # long enough to stop in the middle
    whole = micro.decode(ticket.tokens)
    stop = whole[len(micro.decode(ticket.tokens[:6])):][:3]  # three characters that start after token 6
    assert len(stop) == 3 and stop.strip(), whole
    at = next(k for k in range(1, len(ticket.tokens) + 1) if stop in micro.decode(ticket.tokens[:k]))
    out = micro.generate([Job("m1", p, 40, stop=(stop, "never seen \x00"))])[0]
    assert out.text == whole[:whole.find(stop)] and out.finish_reason == "stop"
    assert out.completion_tokens == at < full.completion_tokens
    streamed = list(micro.stream(Job("m1", p, 40, stop=(stop,))))
    assert "".join(streamed) == out.text
    for i in range(1, len(stop)):  # no piece ever showed the start of the stop string
        assert not any(piece.endswith(stop[:i]) for piece in streamed[:-1]) or stop[:i] in out.text


# ------------------------------------------------------------------------------------------ prefix caching


def test_prompts_that_begin_alike_prefill_only_the_rest_and_get_the_same_tokens_and_logits(micro, monkeypatch):
    """Three questions on one schema and one on another. With no prefix cache, each alone: the reference. With
    one: the first of the schema alone is kept; then the three others in one prefill, each starting from the
    kept prefix (the schema's rows share most of their prompt with it, the other schema only the template's
    start; all rows' rests end up one block as wide as the longest rest): the forward pass gets only that block,
    and every row's tokens are those of the reference, its logits within bf16 ulps (float32 compute here; the
    prefix's KV was computed in another shape)."""
    from os.path import commonprefix

    from serving.engine import Job
    from serving.kvcache import PrefixStore

    schema = "CREATE TABLE people (id INTEGER, name TEXT, age INTEGER, city TEXT, salary REAL)"
    questions = ["What is the name of the oldest person?", "How many people live in Lisbon?",
                 "What is the average salary by city?"]
    prompts = [micro.render("m1", {"question": q, "context": schema}) for q in questions]
    prompts.append(micro.render("m1", {"question": "How many teams are there?",
                                       "context": "CREATE TABLE teams (id INTEGER, title TEXT, founded INTEGER)"}))
    jobs = [Job("m1", p, 16) for p in prompts]
    ids = [micro._encode(p) for p in prompts]

    monkeypatch.setattr(micro, "prefixes", None)
    with _Logits(micro) as ref_rec:
        ref = [micro.submit(j) for j in jobs[:1]]
        ref[0].wait(60)
        ref += [micro.submit(j) for j in jobs[1:2]]
        ref[1].wait(60)
        ref += [micro.submit(j) for j in jobs[2:]]
        [t.wait(60) for t in ref]

    monkeypatch.setattr(micro, "prefixes", PrefixStore(64 * 2**20))
    reused, widths = [], []
    monkeypatch.setattr(micro, "on_prefill", lambda prompt_tokens, n: reused.append((prompt_tokens, n)))
    forward = micro._forward

    def recording(rows, **inputs):
        widths.append(inputs["input_ids"].shape[1])
        return forward(rows, **inputs)

    micro._forward = recording  # _Logits wraps it, and removes both on leaving
    try:
        with _Logits(micro) as rec:
            first = micro.submit(jobs[0])
            first.wait(60)
            assert micro.prefixes.kept("m1") == 1 and reused == [(len(ids[0]), 0)]
            widths.clear()
            with micro._cv:  # the loop takes all three at once: one prefill
                later = [micro.submit(j) for j in jobs[1:]]
            [t.wait(60) for t in later]
    finally:
        micro.__dict__.pop("_forward", None)
    shared = [len(commonprefix([ids[0], i])) for i in ids[1:]]
    assert shared[0] > len(ids[1]) // 2 and shared[2] < shared[0]  # most of a same-schema prompt; less of the other
    hits = [n if n >= 16 else 0 for n in shared]
    span = max(len(i) - n for i, n in zip(ids[1:], hits))  # the longest rest: the prefill's input block
    # a row with a shorter rest reuses less, so that its prefix and rest meet without padding between them
    assert reused[1:] == [(len(i), max(0, len(i) - span) if n else 0) for i, n in zip(ids[1:], hits)]
    assert reused[1][1] > 0 and widths[0] == span < len(ids[1])  # only the rest went through the model
    for got, want in zip([first, *later], ref, strict=True):
        assert got.tokens == want.tokens and got.result().text == want.result().text
        assert_bf16_close(rec.of(got), ref_rec.of(want))


def test_the_prefix_store_keeps_per_adapter_within_its_budget_least_recently_used_out():
    import torch

    from serving.kvcache import PrefixStore

    def kv(n):  # 2 layers of keys and values [heads 2, n, dim 4], float32
        return [(torch.full((2, n, 4), float(n)), torch.full((2, n, 4), -float(n))) for _ in range(2)]

    entry = sum(k.nbytes + v.nbytes for k, v in kv(10))
    store = PrefixStore(max_bytes=2 * entry, min_tokens=4)
    a, b, c = list(range(10)), list(range(100, 110)), list(range(200, 210))
    store.put("x", a, kv(10))
    assert store.find("y", a + [7]) == (0, None)  # another adapter's KV is never reused
    n, got = store.find("x", a + [7, 8])
    assert n == 10 and got[0][0].shape == (2, 10, 4)
    assert store.find("x", a)[0] == 9  # never the whole prompt: its last token must run for the first logits
    assert store.find("x", a[:3] + [50, 51])[0] == 0  # 3 tokens in common: under min_tokens
    assert store.wanted(20, 5) and not store.wanted(20, 15) and not store.wanted(3, 0)
    store.put("x", b, kv(10))
    store.find("x", a + [1])  # a is used again: b is now the least recently used
    store.put("x", c, kv(10))
    assert store.kept("x") == 2 and store.find("x", b + [1])[0] == 0 and store.find("x", a + [1])[0] == 10
    assert store.bytes == 2 * entry
    store.put("x", list(range(300, 400)), kv(100))  # larger than the whole budget: not kept, nothing evicted
    assert store.kept() == 2
    store.drop("x")
    assert store.kept() == 0 and store.bytes == 0
