"""The torch side: loading and placing the pipelines, generating, measuring, image metrics.

``python -m core.engine`` runs the command line (``core.engine.cli``): a generation, or the
placement plan with ``--plan``. Nothing outside this wing and ``core.checkpoints`` imports
torch.
"""

from core.engine.quiet import silence_harmless_messages

silence_harmless_messages()  # before anything here imports bitsandbytes or diffusers
