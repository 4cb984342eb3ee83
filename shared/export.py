"""Merge an adapter into its base and save a standalone 16-bit model, with a check that it still agrees.

    python -m shared.export --adapter artifacts/trials/sql-r32-... --out artifacts/merged/sql-micro

The base is the 4-bit NF4 base the adapter was trained on, dequantized to 16 bit (so the merged weights
are what the adapter actually saw, not the original full-precision weights), with the LoRA deltas added.
Merging is a known source of silent quality loss (rounding of W + BA in 16 bit, or re-quantizing), so
the command generates greedily on the dev slice with both the adapter-on-4-bit model and the merged model
and reports how often their outputs agree, and both models' task scores. export.json holds the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def merge(folder: Path):
    """-> (merged 16-bit model, tokenizer, card, config)."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from shared.artifacts import read_card
    from shared.models import load_base

    card, cfg = read_card(folder)
    base = load_base(cfg.model, cfg.quantization)
    if getattr(base, "is_loaded_in_4bit", False):
        base = base.dequantize()  # NF4 -> compute dtype, the weights the adapter was trained against
    merged = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.padding_side = "left"
    return merged, tokenizer, card, cfg


def export(folder: Path, out: Path, n_examples: int = 50) -> dict:
    from shared.artifacts import load_adapter
    from shared.evaluate import generate
    from shared.artifacts import adapter_format
    from shared.tasks import get_task
    from shared.trial import load_data

    merged, tokenizer, card, cfg = merge(folder)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)

    examples = load_data(cfg)["dev"][:n_examples]
    fmt = adapter_format(card, tokenizer)
    prompts = [fmt.prompt(cfg.data.task, ex) for ex in examples]
    kw = dict(max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size, max_prompt_tokens=cfg.data.max_seq_len)
    merged_out = generate(merged, tokenizer, prompts, **kw)
    del merged
    adapter_model, tok4, _ = load_adapter(folder)
    adapter_out = generate(adapter_model, tok4, prompts, **kw)

    task = get_task(cfg.data.task, cfg.eval)
    metric = task.metric
    a = [fmt.answer(cfg.data.task, x) for x in adapter_out]
    m = [fmt.answer(cfg.data.task, x) for x in merged_out]
    report = {
        "adapter": str(folder),
        "merged": str(out),
        "examples": len(prompts),
        "greedy_agreement": sum(x == y for x, y in zip(a, m, strict=True)) / len(prompts),
        f"adapter_4bit/{metric.split('/', 1)[1]}": task.score(a, examples)[metric],
        f"merged_16bit/{metric.split('/', 1)[1]}": task.score(m, examples)[metric],
    }
    (out / "export.json").write_text(json.dumps({**report, "card": card}, indent=2) + "\n")
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared.export", description=__doc__.split("\n")[0])
    ap.add_argument("--adapter", type=Path, required=True, help="adapter folder written by a trial or a sweep")
    ap.add_argument("--out", type=Path, required=True, help="folder for the merged standalone model")
    ap.add_argument("--examples", type=int, default=50, help="dev examples to compare outputs on")
    args = ap.parse_args(argv)
    from shared.config import ConfigError

    try:
        report = export(args.adapter, args.out, args.examples)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for k, v in report.items():
        print(f"{k:28s} {v:.3f}" if isinstance(v, float) else f"{k:28s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
