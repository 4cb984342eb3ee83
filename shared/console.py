"""Known harmless warnings of the pinned stack, silenced at their source, each by its exact message.

Every other warning still shows. Each entry says why it is harmless; when a pin moves, check it still is.
install() is idempotent and runs when the `shared` package is first imported, before anything imports
bitsandbytes (peft imports it too), so trials in Ray workers, scoring tasks, `python -m shared.trial` and the
Serve replicas print the same clean console.
"""

from __future__ import annotations

import logging
import re
import warnings

# bitsandbytes 0.50.2 on an AVX512-BF16 CPU tries the optional `kernels` package, which would download a
# gemm kernel from a model hub; without it the built-in CPU path runs (what every figure here was measured on).
BNB_NO_KERNELS = ("bitsandbytes.backends.cpu.ops",
                  "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already "
                  "`pip install kernels` and the kernels >= 0.11.1")
# transformers 5.24 deprecates the `is_gradient_checkpointing` property (removed in v6); peft 0.21.2 reads it in
# prepare_model_for_kbit_training and get_peft_model. Same value as its replacement until then.
TRANSFORMERS_GC_ALIAS = (FutureWarning, "`is_gradient_checkpointing` is deprecated and will be removed in v6. "
                                        "Use `is_activation_checkpointing` instead.")

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    name, message = BNB_NO_KERNELS
    logging.getLogger(name).addFilter(lambda record: record.msg != message)
    category, text = TRANSFORMERS_GC_ALIAS
    warnings.filterwarnings("ignore", message=re.escape(text) + r"\Z", category=category)
    _installed = True
