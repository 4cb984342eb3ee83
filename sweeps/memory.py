"""An estimate of a QLoRA trial's peak GPU memory, from the model's dimensions and the trial config alone.

    from sweeps.memory import estimate, model_dims
    est = estimate(cfg, model_dims(cfg.model))   # MemoryEstimate; est.peak_gb, est.lines()

The sweep refuses a config whose estimate does not fit the GPU a trial will get, before launching it
(sweeps/run.py for the largest corner of the search space, sweeps/trainable.py again on the real device).

What is counted, for a Llama-shaped decoder (q/k/v/o + gate/up/down linears per layer; Mistral, Qwen and
most open decoders have this shape):
  base        4-bit linears: 0.5 byte/param + quantization constants (blocks of 64: an fp32 absmax each,
              0.0625 byte/param; with double quantization an 8-bit absmax + one fp32 per 256 blocks,
              0.0159 byte/param: the QLoRA paper's 0.127 bit/param). Embeddings, LM head and norms stay
              unquantized and prepare_model_for_kbit_training casts them to fp32 (4 bytes). 16-bit mode:
              every parameter in the compute dtype.
  lora        r x (in + out) per adapted linear, in fp32 with its gradient and AdamW's two moments:
              16 bytes/param.
  activations what backward keeps, per token and layer, in the compute dtype: about 16 x hidden +
              5 x intermediate values (norm inputs/outputs, q/k/v before and after RoPE, attention output,
              residuals, gate/up/act/product, and LoRA dropout's copies of each adapted input). SDPA
              attention keeps no seq^2 matrix. With gradient checkpointing only each layer's input is kept,
              plus one layer's full set while it is recomputed.
  logits      batch x seq x vocab: the compute-dtype logits, their fp32 upcast, log-softmax and gradient
              (2 + 12 bytes each in bf16): for Llama-2's 32 k vocabulary this rivals the whole base.
  overhead    the largest linear dequantized (forward and backward), 10% allocator fragmentation and
              0.5 GB of CUDA context.
Limits: worst case of a padded batch (every row max_seq_len long); eager attention would add
batch x heads x seq^2 per layer; the estimate is arithmetic, not a measurement; GPU trials report their
measured peak (gpu/peak_memory_gb) beside it, so the two can be compared in the leaderboard.
For Llama-2-7B, r=16, batch 4 x 512 tokens with checkpointing it gives 8.4 GB (the QLoRA paper trains 7B
on one 24 GB GPU); without checkpointing at batch 8, 43 GB (does not fit 24 GB; activations are 32 GB).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from shared.config import EMBEDDED_PREFIX, ConfigError, ModelConfig, TrialConfig

GB = 1e9
CUDA_CONTEXT_GB = 0.5
FRAGMENTATION = 1.10
LORA_BYTES_PER_PARAM = 16  # fp32 weight + fp32 grad + AdamW exp_avg + exp_avg_sq
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelDims:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool

    @classmethod
    def from_config(cls, c: dict) -> ModelDims:
        """From a transformers config.json (as a dict)."""
        heads = c["num_attention_heads"]
        return cls(
            hidden_size=c["hidden_size"],
            intermediate_size=c["intermediate_size"],
            num_hidden_layers=c["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=c.get("num_key_value_heads") or heads,
            head_dim=c.get("head_dim") or c["hidden_size"] // heads,
            vocab_size=c["vocab_size"],
            tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
        )

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear in one decoder layer."""
        h, i = self.hidden_size, self.intermediate_size
        q, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


# Llama-2-7B (meta-llama/Llama-2-7b-hf config.json), for tests and for the arithmetic in the docstring.
LLAMA2_7B = ModelDims(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, head_dim=128, vocab_size=32000, tie_word_embeddings=False)


def model_dims(model: ModelConfig) -> ModelDims:
    """The base model's dimensions, from its config.json: a local folder, the embedded model (committed or
    cached build; its preset dimensions if not built yet, so checking never builds it), or a hub id
    (config.json only, through transformers' cache)."""
    src = model.name_or_path
    if src.startswith(EMBEDDED_PREFIX + "smollm2"):
        from shared.smollm2 import DIMS

        return ModelDims.from_config(DIMS)
    if src.startswith(EMBEDDED_PREFIX):
        from shared.micro import COMMITTED_DIR, EMBEDDED_NAME, SIZES
        from shared.paths import cache_dir

        for folder in (COMMITTED_DIR, cache_dir() / "models" / EMBEDDED_NAME):
            if (folder / "config.json").exists():
                return ModelDims.from_config(json.loads((folder / "config.json").read_text()))
        s = SIZES["full"]
        return ModelDims.from_config(
            {**s, "num_key_value_heads": s["num_attention_heads"], "tie_word_embeddings": True}
        )
    local = Path(src).expanduser()
    if (local / "config.json").exists():
        return ModelDims.from_config(json.loads((local / "config.json").read_text()))
    try:
        from transformers import AutoConfig

        c = AutoConfig.from_pretrained(src, revision=model.revision, trust_remote_code=model.trust_remote_code)
    except Exception as e:  # noqa: BLE001 - any failure means: dimensions unknown
        raise ConfigError(
            f"model.name_or_path: cannot read the config of {src!r} to check rank and memory ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); log in to the hub or use a local folder"
        ) from None
    return ModelDims.from_config(c.to_dict())


@dataclass(frozen=True)
class MemoryEstimate:
    base_gb: float
    lora_gb: float
    activations_gb: float
    logits_gb: float
    overhead_gb: float
    lora_params: int

    @property
    def peak_gb(self) -> float:
        return self.base_gb + self.lora_gb + self.activations_gb + self.logits_gb + self.overhead_gb

    def lines(self) -> str:
        parts = {k: v for k, v in asdict(self).items() if k.endswith("_gb")}
        terms = ", ".join(f"{k.removesuffix('_gb')} {v:.2f}" for k, v in parts.items())
        return f"{terms} = {self.peak_gb:.2f} GB"


def adapted_linears(target_modules) -> tuple[str, ...]:
    """Which linears of a layer LoRA adapts: all seven for "all-linear", else the named ones."""
    if target_modules == "all-linear":
        return LINEARS
    return tuple(m for m in LINEARS if m in target_modules)


def estimate(cfg: TrialConfig, dims: ModelDims) -> MemoryEstimate:
    """Peak GPU memory of one training step of this trial, in GB (see the module docstring)."""
    compute_bytes = 4 if cfg.quantization.compute_dtype == "float32" else 2
    shapes = dims.linear_shapes()
    linear_params = dims.num_hidden_layers * sum(i * o for i, o in shapes.values())
    embed = dims.vocab_size * dims.hidden_size * (1 if dims.tie_word_embeddings else 2)
    norms = dims.hidden_size * (2 * dims.num_hidden_layers + 1)
    if cfg.quantization.mode == "4bit":
        constants = (1 / 64 + 4 / (64 * 256)) if cfg.quantization.double_quant else 4 / 64
        base = linear_params * (0.5 + constants) + (embed + norms) * 4
    else:
        base = (linear_params + embed + norms) * compute_bytes

    adapted = adapted_linears(cfg.lora.target_modules)
    lora_params = dims.num_hidden_layers * sum(cfg.lora.rank * sum(shapes[m]) for m in adapted)

    tokens = cfg.train.batch_size * cfg.data.max_seq_len
    h, i, layers = dims.hidden_size, dims.intermediate_size, dims.num_hidden_layers
    per_layer = tokens * (16 * h + 5 * i) * compute_bytes
    if cfg.train.gradient_checkpointing:
        activations = layers * tokens * h * compute_bytes + per_layer
    else:
        activations = layers * per_layer
    logits = tokens * dims.vocab_size * (compute_bytes + 12)
    largest = max(a * b for a, b in shapes.values()) * compute_bytes * 2
    subtotal = base + lora_params * LORA_BYTES_PER_PARAM + activations + logits + largest
    overhead = largest + subtotal * (FRAGMENTATION - 1) + CUDA_CONTEXT_GB * GB
    return MemoryEstimate(
        base_gb=base / GB, lora_gb=lora_params * LORA_BYTES_PER_PARAM / GB, activations_gb=activations / GB,
        logits_gb=logits / GB, overhead_gb=overhead / GB, lora_params=lora_params,
    )


def refusal(est: MemoryEstimate, gpu_memory_gb: float, what: str) -> str | None:
    """A message if `est` does not fit a GPU of gpu_memory_gb, else None."""
    if est.peak_gb <= gpu_memory_gb:
        return None
    return (
        f"{what} needs an estimated {est.peak_gb:.1f} GB of GPU memory ({est.lines()}) but the GPU has "
        f"{gpu_memory_gb:.1f} GB: lower lora.rank, train.batch_size or data.max_seq_len, or turn on "
        "train.gradient_checkpointing"
    )
