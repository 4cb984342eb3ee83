"""The adapter folder: PEFT files + tokenizer + card.json (resolved config, prompt version, base model
identity, metrics). Serving and export rebuild everything from this folder, never from today's defaults.

    <folder>/adapter_config.json, adapter_model.safetensors   (peft)
    <folder>/tokenizer.json, tokenizer_config.json            (the tokenizer trained with)
    <folder>/card.json                                        (everything else)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from shared.config import ConfigError, TrialConfig, to_dict, validate
from shared.prompts import SUPPORTED_VERSIONS, PromptFormat, format_of, prompt_format, supported

CARD = "card.json"
CARD_FORMAT = "qlora-sweep-adapter/1"


def base_identity(cfg: TrialConfig) -> dict:
    """Which base the adapter was trained on; for the embedded model, the sha256 of its weights too."""
    ident = {"name_or_path": cfg.model.name_or_path, "revision": cfg.model.revision}
    from shared.models import resolve_path

    build = Path(resolve_path(cfg.model)) / "BUILD.json"
    if build.exists():
        info = json.loads(build.read_text())
        ident["sha256"] = info.get("sha256", {})
        ident |= {k: info[k] for k in ("source", "conversion") if k in info}  # a converted base: whence and how
    return ident


def versions() -> dict:
    import bitsandbytes
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "bitsandbytes": bitsandbytes.__version__}


def save_adapter(model, tokenizer, cfg: TrialConfig, metrics: dict, folder: Path, extra: dict | None = None) -> Path:
    """Writes the folder atomically enough: card.json last, so a folder with a card is complete."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    card = {
        "format": CARD_FORMAT,
        "task": cfg.data.task,
        "prompt_version": prompt_format(cfg.model.prompt_format, tokenizer).version,
        "base_model": base_identity(cfg),
        "config": to_dict(cfg),
        "metrics": metrics,
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    tmp = folder / (CARD + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, default=float) + "\n")
    tmp.replace(folder / CARD)
    return folder


def read_card(folder: str | Path) -> tuple[dict, TrialConfig]:
    """card.json -> (card, the TrialConfig it was trained with). Refuses what it cannot serve faithfully."""
    folder = Path(folder)
    path = folder / CARD
    if not path.is_file():
        raise ConfigError(f"adapter folder {str(folder)!r} has no {CARD}: not an adapter written by this project")
    card = json.loads(path.read_text())
    if card.get("format") != CARD_FORMAT:
        raise ConfigError(f"{path}: format {card.get('format')!r} is not {CARD_FORMAT!r}")
    if not supported(card.get("prompt_version")):
        raise ConfigError(
            f"{path}: prompt_version {card.get('prompt_version')!r} is not one this code renders "
            f"({', '.join(SUPPORTED_VERSIONS)})"
        )
    return card, validate(TrialConfig, card["config"], source=str(path))


def base_of(folder: str | Path, quantization_mode: str | None = None):
    """-> (ModelConfig, QuantizationConfig) of the base an adapter folder was trained on, from its card
    (revision and quantization included), after checking that the base here is that very one.
    quantization_mode may override the card's ("4bit"/"16bit"), e.g. to compare."""
    card, cfg = read_card(folder)
    expected = card["base_model"].get("sha256")
    if expected and base_identity(cfg).get("sha256") != expected:
        raise ConfigError(
            f"{folder}: the base {cfg.model.name_or_path!r} here is not the one the adapter was trained on "
            "(weights sha256 differ); rebuild the adapter or restore that base"
        )
    q = cfg.quantization if quantization_mode is None else cfg.quantization.model_copy(update={"mode": quantization_mode})
    return cfg.model, q


def adapter_format(card: dict, tokenizer) -> PromptFormat:
    """The prompt format an adapter was trained with, checked against its tokenizer (shared.prompts.PromptError
    when the tokenizer's chat template is not the one trained with)."""
    return format_of(card["prompt_version"], tokenizer)


def load_adapter(folder: str | Path, quantization_mode: str | None = None):
    """-> (model with the adapter, tokenizer, card): the base as the card says (base_of), the tokenizer it
    was trained with. quantization_mode may override the card's ("4bit"/"16bit"), e.g. to compare."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from shared.models import load_base

    card, _ = read_card(folder)
    model = PeftModel.from_pretrained(load_base(*base_of(folder, quantization_mode)), str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.padding_side = "left"
    adapter_format(card, tokenizer)  # refuses a tokenizer whose chat template is not the one trained with
    return model, tokenizer, card
