"""The micro model: FLUX's architecture trained by the project on shapes it draws itself.

One job per module: ``vocabulary`` (the words and prompts it knows; torch-free, used by the
app), ``scenes`` (drawing), ``checker`` (judging a picture against its prompt),
``components`` (the architecture and tokenizers), ``dataset``, ``train`` (the command),
``decoder`` (a wider VAE in a trained model's latent space) and ``writer`` (the
FluxPipeline folder). This package's ``__init__`` imports nothing, so the
app can read the vocabulary without torch.
"""
