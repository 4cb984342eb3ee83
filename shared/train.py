"""Tokenizing with the prompt masked out of the loss, padded or packed batches, and the training loop."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

from shared.config import TrainConfig
from shared.prompts import PLAIN, PromptFormat, prompt_ids

IGNORE = -100  # label value the loss skips: prompt and pad tokens


def encode(tokenizer, task: str, example: dict, max_seq_len: int, fmt: PromptFormat = PLAIN) -> dict | None:
    """One example -> input_ids and labels (prompt tokens labelled IGNORE). None if it does not fit.

    Prompt and completion are tokenized apart and concatenated, exactly as generation sees the prompt.
    An example longer than max_seq_len is dropped from training rather than cut: a cut schema or a cut
    answer teaches the wrong thing.
    """
    prompt = prompt_ids(tokenizer, fmt.prompt(task, example))
    answer = tokenizer(fmt.completion(task, example), add_special_tokens=False)["input_ids"]
    answer = answer + [tokenizer.eos_token_id]  # the chat format's end of turn is the tokenizer's EOS
    ids = prompt + answer
    if len(ids) > max_seq_len:
        return None
    return {"input_ids": ids, "labels": [IGNORE] * len(prompt) + answer}


def encode_all(tokenizer, task: str, examples: list[dict], max_seq_len: int,
               fmt: PromptFormat = PLAIN) -> tuple[list[dict], int]:
    """-> (encoded examples, how many were dropped for length)."""
    rows = [encode(tokenizer, task, ex, max_seq_len, fmt) for ex in examples]
    kept = [r for r in rows if r is not None]
    return kept, len(rows) - len(kept)


def pad_batch(rows: list[dict], pad_id: int) -> dict:
    """Right-padded batch with an attention mask; pad positions are IGNORE in the labels."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pack_batch(rows: list[dict], pad_id: int, width: int) -> dict:
    """Examples laid end to end in rows of `width` tokens, with no attention across examples.

    position_ids restart at 0 for every example and no attention_mask is passed: transformers then
    builds a block-diagonal causal mask from the position_ids (masking_utils.find_packed_sequence_indices),
    so an example attends only to itself, exactly as when padded. First-fit decreasing: longest first,
    each into the first row with room, which leaves less room unused than first-fit in arrival order.
    """
    import torch

    bins: list[list[dict]] = []
    for r in sorted(rows, key=lambda r: -len(r["input_ids"])):
        for b in bins:
            if sum(len(x["input_ids"]) for x in b) + len(r["input_ids"]) <= width:
                b.append(r)
                break
        else:
            bins.append([r])
    ids = torch.full((len(bins), width), pad_id, dtype=torch.long)
    labels = torch.full((len(bins), width), IGNORE, dtype=torch.long)
    pos = torch.zeros((len(bins), width), dtype=torch.long)
    for i, b in enumerate(bins):
        at = 0
        for r in b:
            n = len(r["input_ids"])
            ids[i, at : at + n] = torch.tensor(r["input_ids"])
            labels[i, at : at + n] = torch.tensor(r["labels"])
            pos[i, at : at + n] = torch.arange(n)
            at += n
        pos[i, at:] = torch.arange(width - at)  # the tail of pads is one more (ignored) sequence
    return {"input_ids": ids, "position_ids": pos, "labels": labels}


def batches(rows: list[dict], batch_size: int, seed: int, *, packing: bool, pad_id: int, width: int):
    """Endless shuffled (batch, real_tokens) pairs. A packed batch holds about batch_size full rows."""
    rng = random.Random(seed)
    order = list(range(len(rows)))
    while True:
        rng.shuffle(order)
        if packing:
            mean = sum(len(r["input_ids"]) for r in rows) / len(rows)
            per_batch = max(batch_size, int(batch_size * width / mean * 0.95))
            for i in range(0, len(order) - per_batch + 1, per_batch):
                chunk = [rows[j] for j in order[i : i + per_batch]]
                yield pack_batch(chunk, pad_id, width), sum(len(r["input_ids"]) for r in chunk)
        else:
            for i in range(0, len(order) - batch_size + 1, batch_size):
                chunk = [rows[j] for j in order[i : i + batch_size]]
                yield pad_batch(chunk, pad_id), sum(len(r["input_ids"]) for r in chunk)


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.lr_schedule == "constant":
            return 1.0
        frac = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return max(0.0, 1 - frac) if cfg.lr_schedule == "linear" else 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    return f


def autocast(model):
    """bf16 autocast where the base computes in bf16 (the LoRA matmuls and attention follow it)."""
    import contextlib

    import torch

    dev = next(model.parameters()).device.type
    dtype = getattr(model.config, "dtype", None) or getattr(model.config, "torch_dtype", None)
    q = getattr(model.config, "quantization_config", None)
    qdtype = getattr(q, "bnb_4bit_compute_dtype", None) if q is not None and not isinstance(q, dict) else None
    if isinstance(q, dict):
        qdtype = q.get("bnb_4bit_compute_dtype")
    if torch.bfloat16 in (dtype, qdtype) or "bfloat16" in (str(dtype), str(qdtype)):
        return torch.autocast(dev, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train(model, rows: list[dict], cfg: TrainConfig, *, pad_id: int, packing: bool, width: int,
          on_log: Callable[[int, dict], None] | None = None,
          on_eval: Callable[[int], bool] | None = None, eval_every: int | None = None,
          on_save: Callable[[int, float], None] | None = None) -> dict:
    """The training loop: AdamW on the trainable (LoRA) parameters, warmup + schedule, clipping.

    on_log(step, {"train/loss", "train/lr", "train/tokens_per_s"}) every cfg.log_every steps.
    on_eval(step) every eval_every steps (the sweep reports and checkpoints there); returning False stops.
    on_save(step, train_seconds) every cfg.save_every_steps steps (snapshots of the adapter).
    Stops at cfg.max_steps or after cfg.max_time_s of training.
    """
    import torch

    from shared.models import restore_cpu_4bit_training_layout

    if not rows:
        raise ValueError("no training examples left (all longer than data.max_seq_len?)")
    torch.manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    stream = batches(rows, cfg.batch_size, cfg.seed, packing=packing, pad_id=pad_id, width=width)
    dev = next(model.parameters()).device
    restore_cpu_4bit_training_layout(model)
    model.train()
    start = time.time()
    window_loss, window_tokens, window_start = [], 0, time.time()
    history, step = [], 0
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.max_steps, desc="train", unit="step", mininterval=2.0)
    for step in range(1, cfg.max_steps + 1):
        for _ in range(cfg.grad_accum_steps):
            batch, n_tokens = next(stream)
            batch = {k: v.to(dev) for k, v in batch.items()}
            with autocast(model):
                loss = model(**batch).loss / cfg.grad_accum_steps
            loss.backward()
            window_loss.append(loss.item() * cfg.grad_accum_steps)
            window_tokens += n_tokens
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            elapsed = time.time() - window_start
            entry = {
                "train/loss": sum(window_loss) / len(window_loss),
                "train/lr": sched.get_last_lr()[0],
                "train/tokens_per_s": window_tokens / max(elapsed, 1e-9),
            }
            history.append({"step": step, **entry})
            bar.set_postfix(loss=f"{entry['train/loss']:.3f}")
            if on_log:
                on_log(step, entry)
            window_loss, window_tokens, window_start = [], 0, time.time()
        if on_save and cfg.save_every_steps and step % cfg.save_every_steps == 0 and step < cfg.max_steps:
            on_save(step, time.time() - start)
            restore_cpu_4bit_training_layout(model)
            model.train()
        if on_eval and eval_every and step % eval_every == 0 and step < cfg.max_steps:
            keep_going = on_eval(step)
            restore_cpu_4bit_training_layout(model)
            model.train()
            if keep_going is False:
                break
        if cfg.max_time_s and time.time() - start > cfg.max_time_s:
            break
    bar.close()
    return {"steps": step, "train_seconds": time.time() - start, "history": history}
