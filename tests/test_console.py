"""The console shows progress and results: the stack's known harmless warnings are dropped by their exact
message at the source, and every other warning still shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

LOAD = """
import warnings
from shared.config import LoraConfig, ModelConfig, QuantizationConfig
from shared.models import attach_lora, load_base
model = attach_lora(load_base(ModelConfig(name_or_path=sys.argv[1]), QuantizationConfig()), LoraConfig(rank=4, alpha=8),
                    gradient_checkpointing=True)
import logging
logging.getLogger("bitsandbytes.backends.cpu.ops").warning("another bitsandbytes warning")
warnings.warn("another FutureWarning", FutureWarning)
print("loaded", type(model).__name__)
"""


@pytest.mark.slow
def test_a_4bit_load_prints_none_of_the_known_warnings_and_still_every_other(tiny_model_dir):
    run = subprocess.run([sys.executable, "-c", "import sys\n" + LOAD, str(tiny_model_dir)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0 and "loaded PeftModel" in out, out
    assert "kernels-community" not in out and "is_gradient_checkpointing" not in out, out
    assert "another bitsandbytes warning" in out and "another FutureWarning" in out, out


def test_the_filters_match_exact_messages_only():
    import logging
    import warnings

    from shared import console

    console.install()
    console.install()  # idempotent
    name, message = console.BNB_NO_KERNELS
    logger = logging.getLogger(name)
    assert not all(f(logging.makeLogRecord({"msg": message})) for f in logger.filters)
    assert all(f(logging.makeLogRecord({"msg": message + " (other)"})) for f in logger.filters)
    category, text = console.TRANSFORMERS_GC_ALIAS
    with warnings.catch_warnings(record=True) as seen:
        warnings.filterwarnings("always", append=True)
        warnings.warn(text, category)
        warnings.warn(text + " And more.", category)
        warnings.warn(text, DeprecationWarning)
    assert [str(w.message) for w in seen] == [text + " And more.", text]
