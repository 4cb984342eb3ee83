"""Base model in 4 bit (or 16 bit), LoRA on top. Thin adapters at the library boundaries.

Heavy imports (torch, transformers, peft, bitsandbytes) happen inside the functions, so config validation
and --help stay fast.
"""

from __future__ import annotations

from pathlib import Path

from shared.config import EMBEDDED_PREFIX, LoraConfig, ModelConfig, QuantizationConfig


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def compute_dtype(q: QuantizationConfig):
    """"auto": bfloat16 where the hardware runs it faster than float32: Ampere+ GPUs, and CPUs with AMX
    tiles. Elsewhere float32 (float16 on older GPUs). AVX512-BF16 alone is not enough: on a 2-core
    AVX512-BF16 CPU without AMX, torch 2.13's bf16 matmul ran 144 GFLOP/s against 293 in float32, a
    4-bit 256 -> 768 layer on 2080 rows (forward and backward) 12.7 ms against 9.2 ms, and a micro trial
    step 2.3 s against 1.6 s; on a CPU with AMX the same layer took 2.8 ms in bf16 against 6.6 ms."""
    import torch

    if q.compute_dtype != "auto":
        return getattr(torch, q.compute_dtype)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_amx() else torch.float32


def cpu_has_amx() -> bool:
    """AMX tiles (Sapphire Rapids and later Xeons), as the CPU reports them to the kernel (Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags and "amx_tile" in flags


def bnb_config(q: QuantizationConfig):
    """QuantizationConfig -> transformers.BitsAndBytesConfig (NF4 + double quantization by default)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=compute_dtype(q),
    )


def peft_config(lora: LoraConfig):
    """LoraConfig -> peft.LoraConfig for a causal LM."""
    import peft

    return peft.LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def embedded_folder(name: str) -> Path:
    """'embedded:<name>' -> its folder: the micro Llama (committed, else built into the cache: ~30 min) or
    SmolLM2-135M-Instruct (converted from its wheel into the cache on first use: ~30 s)."""
    from shared.config import EMBEDDED_MODELS

    short = name.removeprefix(EMBEDDED_PREFIX)
    if short == "micro-llama":
        from shared.micro import resolve
    elif short == "smollm2-135m-instruct":
        from shared.smollm2 import resolve
    else:
        raise ValueError(f"unknown embedded model {name!r}; the embedded ones are "
                         + ", ".join(EMBEDDED_PREFIX + m for m in EMBEDDED_MODELS))
    return resolve(name)


def resolve_path(m: ModelConfig) -> str:
    """'embedded:<name>' -> its folder (built or converted if missing); a hub id or local path passes through."""
    if m.name_or_path.startswith(EMBEDDED_PREFIX):
        return str(embedded_folder(m.name_or_path))
    return str(Path(m.name_or_path).expanduser()) if Path(m.name_or_path).expanduser().exists() else m.name_or_path


def load_tokenizer(m: ModelConfig):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_path(m), revision=m.revision, trust_remote_code=m.trust_remote_code)
    if tok.pad_token is None:  # Llama-2 has none; pad with EOS, masked out of the loss anyway
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # batched generation continues each prompt from its last real token
    return tok


def load_base(m: ModelConfig, q: QuantizationConfig):
    """The frozen base: NF4 4-bit (QLoRA) or 16-bit, on the one device this process has."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = dict(revision=m.revision, trust_remote_code=m.trust_remote_code, device_map={"": device()})
    if q.mode == "4bit":
        kwargs["quantization_config"] = bnb_config(q)
        kwargs["dtype"] = compute_dtype(q)  # non-quantized parts (embeddings, norms) in the compute dtype
    else:
        kwargs["dtype"] = compute_dtype(q) if compute_dtype(q) != torch.float16 else torch.float16
    return AutoModelForCausalLM.from_pretrained(resolve_path(m), **kwargs)


def attach_lora(model, lora: LoraConfig, gradient_checkpointing: bool):
    """prepare_model_for_kbit_training (4 bit) + LoRA adapters; only the adapters are trainable."""
    import peft

    if getattr(model, "is_loaded_in_4bit", False):
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    if gradient_checkpointing:
        model.config.use_cache = False
    model = peft.get_peft_model(model, peft_config(lora))
    restore_cpu_4bit_training_layout(model)  # snapshot the training layout before any evaluation
    return model


def restore_cpu_4bit_training_layout(model) -> int:
    """Keep 4-bit weights in their training layout on CPU across evaluations. Returns layers restored.

    On CPU, the first no-grad forward in eval mode repacks every Linear4bit weight into an inference
    layout, in place (nested absmax flattened to bf16), and never packs it back; training then goes
    through gemv_4bit, which has no autograd kernel, and the LoRA gradients come out wrong (90% off in
    relative norm on a 4-layer Llama, bitsandbytes 0.50.2). bitsandbytes' own inverse is "best-effort" (0.8% off in our test). So the first call
    snapshots each layer's exact training layout (tensor + quant state), and later calls put it back;
    evaluation keeps the fast packed path. Costs a second copy of the 4-bit weights while packed, on CPU
    only. GPUs never repack (returns 0). Called by attach_lora and by the training loop.
    """
    import copy

    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    restored = 0
    for module in model.modules():
        if not isinstance(module, bnb.nn.Linear4bit) or module.weight.device.type != "cpu":
            continue
        qs = getattr(module.weight, "quant_state", None)
        if qs is None:
            continue
        packed = getattr(qs, "packing_format_for_cpu", False)
        saved = getattr(module, "_train_layout", None)
        if not packed and saved is None:
            module._train_layout = (module.weight.data, copy.deepcopy(qs))
        elif packed and saved is not None:
            module.weight.data, module.weight.quant_state = saved[0], copy.deepcopy(saved[1])
            restored += 1
        elif packed:
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(module.weight.data, qs)
            restored += 1
    return restored


def weight_memory_bytes(model) -> int:
    """Bytes of parameters and buffers: what `get_memory_footprint()` reports, for any model."""
    return model.get_memory_footprint()
