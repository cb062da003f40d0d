"""Spot the Quantized Model: the engine, the game, storage and statistics behind app.py."""
