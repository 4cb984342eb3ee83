"""The measurements of one benchmark case, run in a fresh process so its peak memory is its own.

    python -m benchmarks.qlora --case '{"name": "4bit-padded", "config": "configs/sql_micro.yaml",
        "overrides": ["model.name_or_path=/tmp/micro-full"], "steps": 30, "warmup": 3}' --json-out r.json

`benchmarks.run` starts one such process per case, one after another, and prints the table; this module
is the case itself. A case is the real trial path: `load_base` (4 or 16 bit) -> `attach_lora` ->
`train` on `encode_all`ed bundled data (or, for a synthetic model, random token ids), with every knob
from the trial config. What it adds is bookkeeping:

- weight memory: `get_memory_footprint()` of the base before LoRA (parameters and buffers; it leaves
  out the quantization constants, which are no parameters), and the bytes of the 4-bit layers alone
  (packed weights + absmax + nested constants) against those layers' 16-bit size;
- peak memory: on GPU `torch.cuda.max_memory_allocated()`; on CPU the process's peak RSS
  (`ru_maxrss`), absolute and over the RSS right after the imports (torch, transformers, peft,
  bitsandbytes: ~390 MB on its own);
- speed: `train` runs warmup + timed steps with `log_every=1`, so its history holds tokens/s of every
  step; the real (non-pad) tokens of each step come from replaying `batches` with the same seed, which
  yields exactly the batches `train` consumed. Tokens/s = real tokens of the timed steps / their
  seconds; a step is batch collation + forward + backward + clipping + optimizer step, never loading.

A synthetic model (random weights, any Llama dimensions) is written to disk by `write_random_llama` and
loaded through the same `load_base`; memory and speed need no trained weights.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

# Llama-2-7B's dimensions (its config.json on the hub): 6.74 B parameters.
LLAMA2_7B = {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
}
MODEL_DIMS = {"llama2-7b": LLAMA2_7B}
# Above this a synthetic model is measured on a GPU only: a 7B QLoRA step on 2 CPU cores takes minutes
# and its figures would say nothing about a GPU trial.
CPU_MAX_SYNTHETIC_PARAMS = 1_000_000_000
MB = 1024 * 1024


# ------------------------------------------------------------------------------------ synthetic models


def llama_config(fields: dict):
    from transformers import LlamaConfig

    return LlamaConfig(**fields)


def count_parameters(fields: dict) -> int:
    """Parameters of a Llama with these config fields, built on the meta device (no memory, no time)."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config(fields))
    return sum(p.numel() for p in model.parameters())


def write_random_llama(out: Path, fields: dict, *, seed: int = 0, shard_bytes: int = 2 << 30) -> Path:
    """A randomly initialized Llama saved as bf16 safetensors shards, one shard in memory at a time.

    Llama-2-7B is 13.5 GB in bf16: building it as a module first would need that much RAM (27 GB in
    fp32). The model is built on the meta device for its tensor names and shapes only; each tensor is
    drawn (normal, std = initializer_range; norms = 1) and written when its shard is full.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    config = llama_config(fields)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in LlamaForCausalLM(config).state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    gen = torch.Generator().manual_seed(seed)
    weight_map, shard, shard_size, total, n = {}, {}, 0, 0, 0

    def flush():
        nonlocal shard, shard_size, n
        n += 1
        name = f"model-{n:05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
        shard, shard_size = {}, 0

    for key, shape in shapes.items():
        if len(shape) == 1:  # RMSNorm weights
            t = torch.ones(shape, dtype=torch.bfloat16)
        else:
            t = torch.empty(shape, dtype=torch.bfloat16).normal_(0.0, config.initializer_range, generator=gen)
        shard[key] = t
        shard_size += t.numel() * t.element_size()
        total += t.numel() * t.element_size()
        if shard_size >= shard_bytes:
            flush()
    if shard:
        flush()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    config.dtype = torch.bfloat16
    config.save_pretrained(out)
    return out


def synthetic_rows(vocab_size: int, seq_len: int, n: int, seed: int) -> list[dict]:
    """Random token ids, labels = ids: full rows, no pad tokens, every token in the loss."""
    import torch

    ids = torch.randint(0, vocab_size, (n, seq_len), generator=torch.Generator().manual_seed(seed))
    return [{"input_ids": r, "labels": r} for r in ids.tolist()]


# --------------------------------------------------------------------------------------------- memory


def current_rss_bytes() -> int:
    """Resident set size now (Linux /proc; elsewhere the peak so far, the best there is)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak_rss_bytes()


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def layer_bytes(model) -> dict:
    """Bytes of the layers 4-bit quantization applies to, as they are in this model, and at 16 bit.

    4-bit model: every bnb Linear4bit, counting the packed weight, the bias and the quantization
    constants (absmax, and with double quantization the nested absmax, code maps and offset; shared
    tensors once). 16-bit model: the nn.Linear layers the quantizer would convert (all but the output
    head), at their own dtype. `as_16bit` is those layers' size at 2 bytes per parameter.
    """
    import torch

    try:
        import bitsandbytes as bnb

        linear4bit = bnb.nn.Linear4bit
    except ImportError:
        linear4bit = ()
    head = model.get_output_embeddings()
    seen: set[int] = set()

    def size(t) -> int:
        if not isinstance(t, torch.Tensor) or t.data_ptr() in seen:
            return 0
        seen.add(t.data_ptr())
        return t.numel() * t.element_size()

    quantized = count = as_16bit = footprint_counted = 0
    # Logical parameters: a packed 4-bit weight holds two per byte; its quant state knows the real shape.
    parameters = sum(
        math.prod(p.quant_state.shape) if getattr(p, "quant_state", None) is not None else p.numel()
        for p in model.parameters()
    )
    for module in model.modules():
        if linear4bit and isinstance(module, linear4bit):
            qs = module.weight.quant_state
            parts = [module.weight.data, module.bias, qs.absmax, qs.code, getattr(qs, "offset", None)]
            if qs.nested:
                parts += [qs.state2.absmax, qs.state2.code]
            quantized += sum(size(t) for t in parts)
            counted = [t for t in (module.weight, module.bias) if t is not None]  # packed uint8 + bias
            footprint_counted += sum(t.numel() * t.element_size() for t in counted)
            as_16bit += math.prod(qs.shape) * 2 + (module.bias.numel() * 2 if module.bias is not None else 0)
            count += 1
        elif isinstance(module, torch.nn.Linear) and module is not head:
            params = [module.weight] + ([module.bias] if module.bias is not None else [])
            quantized += sum(size(p) for p in params)
            as_16bit += sum(p.numel() * 2 for p in params)
            count += 1
    return {"bytes": quantized, "as_16bit_bytes": as_16bit, "count": count, "footprint_counted": footprint_counted,
            "parameters": parameters}


# ---------------------------------------------------------------------------------------------- speed


def step_tokens(rows: list[dict], cfg, pad_id: int, n_steps: int) -> list[tuple[int, int]]:
    """(real tokens, token slots) of each optimizer step `train` takes: the same `batches` stream, same seed."""
    from shared.train import batches

    stream = batches(rows, cfg.train.batch_size, cfg.train.seed, packing=cfg.data.packing, pad_id=pad_id,
                     width=cfg.data.max_seq_len)
    out = []
    for _ in range(n_steps):
        real = slots = 0
        for _ in range(cfg.train.grad_accum_steps):
            batch, n = next(stream)
            real, slots = real + n, slots + batch["input_ids"].numel()
        out.append((real, slots))
    return out


# ----------------------------------------------------------------------------------------------- case


def import_stack() -> None:
    """Everything a case imports, before the baseline RSS is read, so the delta is model and training."""
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:  # a 16-bit case runs without it
        pass


def measure(spec: dict, rss_after_imports: int) -> dict:
    """One case: the spec names the trial config, its overrides, the steps, and for a synthetic model
    its vocab_size (the sequence length is the config's data.max_seq_len). Returns every figure (bytes,
    seconds, tokens) as plain data."""
    import torch

    from shared.config import load_config
    from shared.models import (
        attach_lora,
        compute_dtype,
        device,
        load_base,
        load_tokenizer,
        weight_memory_bytes,
    )
    from shared.train import encode_all, train
    from shared.trial import set_threads

    steps, warmup = spec["steps"], spec["warmup"]
    overrides = [*spec.get("overrides", []), f"train.max_steps={warmup + steps}", "train.warmup_steps=0",
                 "train.log_every=1", "train.max_time_s=null"]
    cfg = load_config(spec["config"], overrides)
    threads = set_threads(cfg.train.threads)
    dev = device()
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()

    synthetic = spec.get("synthetic")
    if synthetic:
        per_step = cfg.train.batch_size * cfg.train.grad_accum_steps
        rows = synthetic_rows(synthetic["vocab_size"], cfg.data.max_seq_len, 4 * per_step, cfg.train.seed)
        pad_id, dropped = 0, 0
    else:
        from shared.data.loaders import load_splits

        tokenizer = load_tokenizer(cfg.model)
        rows, dropped = encode_all(tokenizer, cfg.data.task, load_splits(cfg.data)["train"], cfg.data.max_seq_len)
        pad_id = tokenizer.pad_token_id
    tokens = step_tokens(rows, cfg, pad_id, warmup + steps)
    gc.collect()
    rss_after_data = current_rss_bytes()

    start = time.perf_counter()
    base = load_base(cfg.model, cfg.quantization)
    load_s = time.perf_counter() - start
    weights = weight_memory_bytes(base)
    layers = layer_bytes(base)
    model = attach_lora(base, cfg.lora, cfg.train.gradient_checkpointing)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    gc.collect()
    rss_after_load = current_rss_bytes()
    gpu_after_load = torch.cuda.memory_allocated() if dev == "cuda" else None

    result = train(model, rows, cfg.train, pad_id=pad_id, packing=cfg.data.packing, width=cfg.data.max_seq_len)
    if dev == "cuda":
        torch.cuda.synchronize()
    history = result["history"]
    if len(history) != warmup + steps:
        raise RuntimeError(f"train ran {len(history)} steps, expected {warmup + steps}")
    timed = range(warmup, warmup + steps)
    seconds = [tokens[i][0] / history[i]["train/tokens_per_s"] for i in timed]
    real = sum(tokens[i][0] for i in timed)
    slots = sum(tokens[i][1] for i in timed)
    peak_rss = peak_rss_bytes()
    # The same model at 16 bit: what the footprint counted for the 4-bit layers, swapped for 2 bytes/param.
    as_16bit = weights - layers["footprint_counted"] + layers["as_16bit_bytes"] if layers["footprint_counted"] else weights
    return {
        "name": spec["name"],
        "device": dev,
        "threads": threads,
        "mode": cfg.quantization.mode,
        "compute_dtype": str(compute_dtype(cfg.quantization)).removeprefix("torch."),
        "packing": cfg.data.packing,
        "gradient_checkpointing": cfg.train.gradient_checkpointing,
        "batch_size": cfg.train.batch_size,
        "grad_accum_steps": cfg.train.grad_accum_steps,
        "max_seq_len": cfg.data.max_seq_len,
        "rank": cfg.lora.rank,
        "train_examples": len(rows),
        "dropped_too_long": dropped,
        "parameters": layers["parameters"],
        "trainable_parameters": trainable,
        "load_s": load_s,
        "weight_memory_bytes": weights,
        "weight_memory_as_16bit_bytes": as_16bit,
        "quantized_layers_bytes": layers["bytes"],
        "quantized_layers_as_16bit_bytes": layers["as_16bit_bytes"],
        "quantized_layers": layers["count"],
        "rss_after_imports_bytes": rss_after_imports,
        "rss_after_data_bytes": rss_after_data,
        "rss_after_load_bytes": rss_after_load,
        "peak_rss_bytes": peak_rss,
        "peak_rss_delta_bytes": peak_rss - rss_after_imports,
        "gpu_after_load_bytes": gpu_after_load,
        "gpu_peak_allocated_bytes": torch.cuda.max_memory_allocated() if dev == "cuda" else None,
        "gpu_peak_reserved_bytes": torch.cuda.max_memory_reserved() if dev == "cuda" else None,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "real_tokens": real,
        "token_slots": slots,
        "pad_fraction": 1 - real / slots,
        "real_tokens_per_step": real / steps,
        "seconds": sum(seconds),
        "tokens_per_s": real / sum(seconds),
        "step_s_median": sorted(seconds)[len(seconds) // 2],
        "loss_first": history[0]["train/loss"],
        "loss_last": history[-1]["train/loss"],
        "loss_curve": [h["train/loss"] for h in history],
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="One benchmark case in this process (benchmarks.run starts these).")
    ap.add_argument("--case", required=True, help="the case as JSON: name, config, overrides, steps, warmup")
    ap.add_argument("--json-out", required=True, type=Path, help="file to write the figures to")
    args = ap.parse_args(argv)
    spec = json.loads(args.case)
    import_stack()
    gc.collect()
    rss = current_rss_bytes()
    figures = measure(spec, rss)
    args.json_out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")  # train's progress bar: noise in a benchmark log
    main()
