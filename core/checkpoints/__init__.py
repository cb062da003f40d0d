"""Checkpoint builders (torch side): the tiny random FLUX and the synthetic full-size FLUX.

Each writes an ordinary diffusers pipeline folder that ``core.engine`` loads through the
same ``from_pretrained`` path as a hub model.
"""
