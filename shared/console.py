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

def _not_bnb_no_kernels(record: logging.LogRecord) -> bool:
    return record.msg != BNB_NO_KERNELS[1]


def install() -> None:
    """Idempotent by content, not by a flag: a caller that saved and restored the warnings filters (pytest does,
    around every test) may have dropped ours since; installing again puts the filter back, once."""
    logger = logging.getLogger(BNB_NO_KERNELS[0])
    if _not_bnb_no_kernels not in logger.filters:
        logger.addFilter(_not_bnb_no_kernels)
    category, text = TRANSFORMERS_GC_ALIAS
    warnings.filterwarnings("ignore", message=re.escape(text) + r"\Z", category=category)  # replaces a duplicate
