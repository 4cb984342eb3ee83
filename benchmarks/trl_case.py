"""One benchmark case through TRL's SFTTrainer, the seeds' trainer: the same QLoRA configuration as the
project's 4bit-padded case (same base loaded in 4 bit, same LoRA attached by shared.models, the same tokenized
rows with the prompt masked out of the loss, batch, learning rate and schedule, steps), trained by
`trl.SFTTrainer` instead of shared.train. Started by benchmarks.run in a fresh process, like benchmarks.qlora.

    python -m benchmarks.run --cases 4bit-padded,trl --steps 20      # side by side, one run

Tokens per second count the real (non-pad) tokens of the timed steps, over the wall time of those steps
(a TrainerCallback times each optimizer step), as benchmarks.qlora counts the project's.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def measure_trl(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from shared.config import load_config
    from shared.data.loaders import load_splits
    from shared.models import attach_lora, compute_dtype, device, load_base, load_tokenizer
    from shared.train import IGNORE, encode_all
    from shared.trial import set_threads

    steps, warmup = spec["steps"], spec["warmup"]
    overrides = [*spec.get("overrides", []), f"train.max_steps={warmup + steps}", "train.warmup_steps=0",
                 "train.log_every=1", "train.max_time_s=null"]
    cfg = load_config(spec["config"], overrides)
    threads = set_threads(cfg.train.threads)
    tokenizer = load_tokenizer(cfg.model)
    rows, dropped = encode_all(tokenizer, cfg.data.task, load_splits(cfg.data)["train"], cfg.data.max_seq_len)
    # TRL's pre-tokenized form: input_ids, and completion_mask = 1 where the project's labels are not IGNORE
    data = Dataset.from_list([{"input_ids": r["input_ids"],
                               "completion_mask": [int(label != IGNORE) for label in r["labels"]]} for r in rows])
    model = attach_lora(load_base(cfg.model, cfg.quantization), cfg.lora, cfg.train.gradient_checkpointing)
    bf16 = str(compute_dtype(cfg.quantization)) == "torch.bfloat16"

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.begin, self.seconds = 0.0, []

        def on_step_begin(self, args, state, control, **kw):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.seconds.append(time.perf_counter() - self.begin)

    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="trl-") as out:
        args = SFTConfig(
            output_dir=out, max_steps=warmup + steps, per_device_train_batch_size=cfg.train.batch_size,
            gradient_accumulation_steps=cfg.train.grad_accum_steps, learning_rate=cfg.train.learning_rate,
            lr_scheduler_type=cfg.train.lr_schedule, warmup_steps=0, weight_decay=cfg.train.weight_decay,
            max_grad_norm=cfg.train.max_grad_norm, optim="adamw_torch", bf16=bf16, use_cpu=device() == "cpu",
            logging_steps=1, report_to=[], save_strategy="no", seed=cfg.train.seed, data_seed=cfg.train.seed,
            max_length=cfg.data.max_seq_len, packing=False, completion_only_loss=True, dataloader_num_workers=0,
            gradient_checkpointing=False,  # attach_lora already set it as the config says
            disable_tqdm=True,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                             callbacks=[timer])
        trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h and "num_tokens" in h]
    if len(logs) != warmup + steps or len(timer.seconds) != warmup + steps:
        raise RuntimeError(f"SFTTrainer logged {len(logs)} steps and timed {len(timer.seconds)}, expected {warmup + steps}")
    tokens = [logs[0]["num_tokens"]] + [b["num_tokens"] - a["num_tokens"] for a, b in zip(logs, logs[1:], strict=False)]
    timed = range(warmup, warmup + steps)
    real = sum(tokens[i] for i in timed)
    seconds = sum(timer.seconds[i] for i in timed)
    return {
        "name": spec["name"], "trainer": f"trl.SFTTrainer {__import__('trl').__version__}", "threads": threads,
        "device": device(), "mode": cfg.quantization.mode, "batch_size": cfg.train.batch_size,
        "max_seq_len": cfg.data.max_seq_len, "rank": cfg.lora.rank, "train_examples": len(rows),
        "dropped_too_long": dropped, "warmup_steps": warmup, "timed_steps": steps, "real_tokens": real,
        "seconds": seconds, "tokens_per_s": real / seconds, "step_s_median": sorted(timer.seconds[i] for i in timed)[steps // 2],
        "loss_first": logs[0]["loss"], "loss_last": logs[-1]["loss"], "loss_curve": [h["loss"] for h in logs],
        "gpu_peak_allocated_bytes": torch.cuda.max_memory_allocated() if device() == "cuda" else None,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="One TRL SFTTrainer case in this process (benchmarks.run starts it).")
    ap.add_argument("--case", required=True, help="the case as JSON: name, config, overrides, steps, warmup")
    ap.add_argument("--json-out", required=True, type=Path)
    args = ap.parse_args(argv)
    args.json_out.write_text(json.dumps(measure_trl(json.loads(args.case)), indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
