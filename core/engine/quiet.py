"""Two harmless start-up messages, silenced (``silence_harmless_messages``).

Each is a logging record from a library, dropped by a filter on its logger that matches
a stable piece of the message, so every other message of those loggers still shows:

- bitsandbytes 0.50, on a CPU with AVX512-BF16, tries the optional ``kernels`` package for
  a faster NF4 matmul when it is imported, and without it logs "Failed to load CPU
  gemm_4bit_forward from kernels-community … pip install kernels". It then uses its own
  CPU kernel, which the project measures; nothing is missing.
- transformers 5 logs "… requires torchvision (not installed); falling back to …Pil …
  Install torchvision …" when diffusers' FluxPipeline imports CLIP's image processor. The
  pipelines never process an image input (text to image only), and the PIL fallback is
  the processor transformers had before; torchvision is not needed.
"""

from __future__ import annotations

import logging

# (logger name, a stable piece of the message)
HARMLESS: tuple[tuple[str, str], ...] = (
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward"),
    ("transformers.utils.import_utils", "Install torchvision to use the default backend"),
)


class _DropHarmless(logging.Filter):
    def __init__(self, piece: str) -> None:
        super().__init__()
        self.piece = piece

    def filter(self, record: logging.LogRecord) -> bool:
        return self.piece not in str(record.msg)


def silence_harmless_messages() -> None:
    """Install the filters (idempotent); call before bitsandbytes or diffusers is imported."""
    for name, piece in HARMLESS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropHarmless) for f in logger.filters):
            logger.addFilter(_DropHarmless(piece))
