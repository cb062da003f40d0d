"""``python -m core.bench.fingerprint --out DIR``: sha256 of what must not change in a refactor.

It makes, from fixed seeds, the outputs issue 28 promises stay byte-identical:

* the tiny model's images: ``python -m core.engine --model tiny --device cpu`` for two
  prompts and seeds (every variant's PNG);
* the statistics: a database of synthetic generations with 3,000 answered rounds drawn by
  ``python -m core.bench.simulate --bulk-guesses 3000 --mode both --seed 0``, then
  ``python -m core.game.stats --db`` on it (summary.json's shape).

and prints one ``sha256  name`` line per output (the command's result, on stdout). Run it in
two checkouts and ``diff`` the two listings: equal lines are byte-identical outputs. Timings
(the engine's stats.json, the simulator's report) are left out: they differ run to run.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

# (prompt, seed) of the tiny model's images.
IMAGES = (("a red fox in snow", 7), ("a lighthouse at dusk", 11))
GUESSES = 3000


def _run(*args: str, stdout: Path | None = None) -> None:
    """Runs ``python -m ARGS`` in this checkout, its stdout to ``stdout`` (or discarded)."""
    with open(stdout or Path("/dev/null"), "wb") as out:
        subprocess.run([sys.executable, "-m", *args], check=True, stdout=out)


def make(out: Path) -> dict[str, str]:
    """Writes the outputs under ``out``; returns name -> sha256 of each, sorted by name."""
    out.mkdir(parents=True, exist_ok=True)
    for k, (prompt, seed) in enumerate(IMAGES):
        folder = out / f"tiny-{k}"
        _run(
            "core.engine", "--model", "tiny", "--device", "cpu", "--prompt", prompt,
            "--seed", str(seed), "--out", str(folder),
        )  # fmt: skip
    db = out / "stats.db"
    db.unlink(missing_ok=True)
    _run(
        "core.bench.simulate", "--db", str(db), "--bulk-guesses", str(GUESSES),
        "--mode", "both", "--seed", "0", "--accuracy", "bf16=0.45,int8=0.55,nf4=0.7",
        "--cant-tell", "0.1", "--generations", "40",
    )  # fmt: skip
    _run("core.game.stats", "--db", str(db), stdout=out / "stats.json")
    files = sorted([*out.glob("tiny-*/*.png"), out / "stats.json"])
    return {str(f.relative_to(out)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.bench.fingerprint",
        description="sha256 of the tiny model's images and of the stats JSON, from fixed seeds",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the outputs")
    args = parser.parse_args(argv)
    for name, digest in make(args.out).items():
        sys.stdout.write(f"{digest}  {name}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
