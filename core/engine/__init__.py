"""The torch side: loading and placing the pipelines, generating, measuring, image metrics.

``python -m core.engine`` runs the generation command line (``core.engine.generation``).
Nothing outside this wing and ``core.checkpoints`` imports torch.
"""
