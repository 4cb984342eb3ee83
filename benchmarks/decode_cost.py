"""Where one request's time goes in the serving engine, in process, one row, one thread:

    python -m benchmarks.decode_cost          # the serving benchmark's adapter (python -m benchmarks.serving makes it)
    python -m benchmarks.decode_cost --adapter artifacts/trials/<name> --repeats 20

Three ways to answer the same /v1/sql-style prompts (bundled dev examples) on the same 4-bit base, each
the median of --repeats requests, and each per generated token:
- the engine (serving/engine.py: Engine.generate, the LoRA unmerged, its own decoding loop);
- transformers' `generate` on the engine's PeftModel with the adapter on;
- the same with the adapter disabled: the base alone, what a merged adapter costs (merging changes
  the weights, not the work), which is what `transformers serve` runs in benchmarks/serving.py.
The two `generate` rows are forced to --new-tokens tokens; the engine stops where the model does, so the
rows compare per token. Prefill is in every row. Output: a table on stdout.
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
    ap.add_argument("--adapter", type=Path, default=DEFAULT_ADAPTER, help="a SQL adapter of the micro model")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--new-tokens", type=int, default=32)
    args = ap.parse_args(argv)
    if not (args.adapter / "adapter_config.json").exists():
        print(f"no adapter at {args.adapter}: run python -m benchmarks.serving once, or pass --adapter", file=sys.stderr)
        return 2

    import torch

    from serving.engine import Engine, Job
    from shared.config import DataConfig, QuantizationConfig
    from shared.data.loaders import load_splits

    engine = Engine("embedded:micro-llama", QuantizationConfig(), threads=1)
    engine.add_adapter("a", args.adapter)
    examples = load_splits(DataConfig(task="sql"))["dev"][:12]
    prompts = [f"### Task: SQLite query\n### Schema:\n{e['context']}\n### Question: {e['question']}\n### SQL:\n"
               for e in examples]
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
        ids = tok(prompt, return_tensors="pt").input_ids
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
    print(f"one row, 1 thread, median of {args.repeats} requests; adapter {args.adapter.name}")
    print(f"{'':26}{'s/request':>10}{'tokens':>8}{'ms/token':>10}{'vs base':>9}")
    for name, (seconds, tokens) in rows.items():
        per = seconds / tokens
        print(f"{name:26}{seconds:10.3f}{tokens:8.0f}{1000 * per:10.1f}{per / base:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
