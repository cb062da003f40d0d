"""Tools: the benchmark (torch side), its report, and simulated players (data side)."""
