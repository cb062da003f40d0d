"""The game (no torch): rounds, the arena services, statistics, export and presentation."""
