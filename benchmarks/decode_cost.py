"""Where one request's time goes in the serving engine, in process, one thread:

    python -m benchmarks.decode_cost          # the serving benchmark's adapter (python -m benchmarks.serving makes it)
    python -m benchmarks.decode_cost --adapter artifacts/trials/<name> --repeats 20
    python -m benchmarks.decode_cost --adapter <a SmolLM2 SQL adapter>   # any SQL adapter, on its card's base

1. One row. Three ways to answer the same /v1/sql prompts (bundled dev examples, rendered as the app
   renders them for this adapter) on the same 4-bit base, each the median of --repeats requests, and each
   per generated token:
   - the engine (serving/engine.py: Engine.generate, the LoRA unmerged, its own decoding loop);
   - transformers' `generate` on the engine's PeftModel with the adapter on;
   - the same with the adapter disabled: the base alone, what a merged adapter costs (merging changes
     the weights, not the work), which is what `transformers serve` runs in benchmarks/serving.py.
   The two `generate` rows are forced to --new-tokens tokens; the engine stops where the model does, so
   the rows compare per token. Prefill is in every row.
2. Prefill and batching's ceiling. --batch prompts through the engine one at a time and all in one batch,
   first with max_tokens 1 (the prefill and one token) and then with --new-tokens: batching shares the
   decoding steps' weight reads, while a prompt's prefill is already a matrix product. If batched decoding
   cost nothing, batched throughput could be at most (one-at-a-time time) / (one-at-a-time prefill time)
   times the unbatched: the ceiling printed, which benchmarks/serving.py's "batched / unbatched" can only
   approach.
Output: two tables on stdout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from shared.paths import REPO_ROOT

DEFAULT_ADAPTER = REPO_ROOT / "artifacts" / "benchmarks" / "serving-sql-r16-60steps"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.decode_cost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapter", type=Path, default=DEFAULT_ADAPTER, help="a SQL adapter folder (its card names the base it runs on)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16, help="requests of the prefill/batching table (default 16, "
                    "the serving benchmark's clients)")
    args = ap.parse_args(argv)
    if not (args.adapter / "adapter_config.json").exists():
        print(f"no adapter at {args.adapter}: run python -m benchmarks.serving once, or pass --adapter", file=sys.stderr)
        return 2

    import torch

    from serving.engine import Job, engine_for
    from shared.prompts import prompt_ids
    from shared.config import DataConfig
    from shared.data.loaders import load_splits

    engine = engine_for(args.adapter, threads=1)  # the adapter's own base and quantization, as its card says
    engine.add_adapter("a", args.adapter)
    examples = load_splits(DataConfig(task="sql"))["dev"][: max(12, args.batch)]
    prompts = [engine.render("a", {"question": e["question"], "context": e["context"]}) for e in examples]
    model, tok = engine.model, engine.tokenizer

    def timed(fn) -> tuple[float, float]:
        seconds, tokens = [], []
        for i in range(args.repeats):
            start = time.perf_counter()
            tokens.append(fn(prompts[i % len(prompts)]))
            seconds.append(time.perf_counter() - start)
        return statistics.median(seconds), statistics.median(tokens)

    def through_engine(prompt: str) -> int:
        return engine.generate([Job(adapter="a", prompt=prompt, max_tokens=args.new_tokens)])[0].completion_tokens

    def through_generate(prompt: str, adapter: bool) -> int:
        ids = torch.tensor([prompt_ids(tok, prompt)])  # as the engine encodes it (one BOS)
        kw = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                  pad_token_id=tok.pad_token_id)
        with torch.no_grad():
            if adapter:
                model.set_adapter("a")
                model.generate(ids, **kw)
            else:
                with model.disable_adapter():
                    model.generate(ids, **kw)
        return args.new_tokens

    rows = {
        "engine, LoRA unmerged": timed(through_engine),
        "generate, LoRA unmerged": timed(lambda p: through_generate(p, True)),
        "generate, base only": timed(lambda p: through_generate(p, False)),
    }
    base = rows["generate, base only"][0] / rows["generate, base only"][1]
    lengths = [engine.count_tokens(p) for p in prompts]
    print(f"base {engine.model_cfg.name_or_path}, adapter {args.adapter}; prompts of {min(lengths)}-{max(lengths)} "
          f"tokens (mean {statistics.mean(lengths):.0f})")
    print(f"\none row, 1 thread, median of {args.repeats} requests")
    print(f"{'':26}{'s/request':>10}{'tokens':>8}{'ms/token':>10}{'vs base':>9}")
    for name, (seconds, tokens) in rows.items():
        per = seconds / tokens
        print(f"{name:26}{seconds:10.3f}{tokens:8.0f}{1000 * per:10.1f}{per / base:8.2f}x")

    batch = prompts[: args.batch]

    def run(max_tokens: int, together: bool) -> tuple[float, int]:
        start = time.perf_counter()
        groups = [batch] if together else [[p] for p in batch]
        outs = [o for g in groups for o in engine.generate([Job(adapter="a", prompt=p, max_tokens=max_tokens) for p in g])]
        return time.perf_counter() - start, sum(o.completion_tokens for o in outs)

    print(f"\n{len(batch)} requests, 1 thread: one at a time against all in one batch")
    print(f"{'max_tokens':>10}{'one at a time s':>17}{'tokens':>8}{'one batch s':>13}{'tokens':>8}{'batched/unbatched':>19}")
    table = {}
    for max_tokens in (1, args.new_tokens):
        (one_s, one_tok), (all_s, all_tok) = run(max_tokens, False), run(max_tokens, True)
        table[max_tokens] = one_s
        print(f"{max_tokens:>10}{one_s:17.1f}{one_tok:8d}{all_s:13.1f}{all_tok:8d}{one_s / all_s:18.2f}x")
    share = table[1] / table[args.new_tokens]
    print(f"prefill (max_tokens 1) is {share:.0%} of the one-at-a-time time at max_tokens {args.new_tokens}: "
          f"batching's ceiling, were batched decoding free, is {1 / share:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
