"""The torch side: loading and placing the pipelines, generating, measuring, image metrics.

``python -m core.engine`` runs the command line (``core.engine.cli``): a generation, or the
placement plan with ``--plan``. Nothing outside this wing and ``core.checkpoints`` imports
torch.
"""
