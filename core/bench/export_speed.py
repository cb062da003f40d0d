"""Time the export against the ``sqlite3`` shell's CSV dump of the same tables.

``python -m core.bench.export_speed --db DB [--runs 3]`` runs, ``--runs`` times each and
in turn: ``python -m core.game.export`` with every format, the same with ``--format csv``,
the ``PRAGMA quick_check`` every ``Store`` start runs, and the ``sqlite3`` command-line
shell writing the same four tables as CSV (the floor a plain dump sets on this machine;
it writes floats with 15 significant digits, so it is lossy where the export is exact).

Each is a child process; its wall time, CPU time (user + system, all threads) and peak
RSS come from ``os.wait4``. It prints JSON: the best and worst run of each, the ratio of
the export's best wall time to the shell's, and the load average before and after (other
jobs on the machine inflate wall times).

Without the ``sqlite3`` shell on PATH, the ratio is not measured and the output says so
(on Debian: ``apt-get install sqlite3``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_QUICK_CHECK = (
    "import sqlite3, sys; from pathlib import Path; "
    "c = sqlite3.connect(Path(sys.argv[1]).as_uri() + '?mode=ro', uri=True); "
    "assert c.execute('PRAGMA quick_check(5)').fetchall() == [('ok',)]"
)


def _measure(argv: list[str]) -> dict[str, float]:
    """Run ``argv`` to completion; its wall seconds, CPU seconds and peak RSS (MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {err[-500:]}")
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is in KiB on Linux
    }


def _runs(results: list[dict[str, float]]) -> dict[str, Any]:
    best = min(results, key=lambda r: r["wall_s"])
    return {
        "best": best,
        "worst": max(results, key=lambda r: r["wall_s"]),
        "runs": len(results),
    }


def measure(db: Path, runs: int) -> dict[str, Any]:
    """Time the three commands ``runs`` times each on ``db``; see the module docstring."""
    export = [sys.executable, "-m", "core.game.export", "--db", str(db), "--out"]
    shell = shutil.which("sqlite3")
    timings: dict[str, list[dict[str, float]]] = {"all_formats": [], "csv": [], "quick_check": []}
    # What every Store start runs on this file (a Python child, so the same SQLite library).
    check = [sys.executable, "-c", _QUICK_CHECK, str(db.resolve())]
    if shell:
        timings["sqlite3_shell_csv"] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="spot-export-speed-") as tmp:
        for i in range(runs):
            out = Path(tmp) / str(i)
            timings["all_formats"].append(_measure([*export, str(out / "all")]))
            timings["csv"].append(_measure([*export, str(out / "csv"), "--format", "csv"]))
            timings["quick_check"].append(_measure(check))
            if shell:
                dump = out / "shell"
                dump.mkdir(parents=True)
                commands = []
                # The tables the export wrote (this module imports nothing heavy: a child's
                # peak RSS counts its parent's pages from before exec).
                for table in sorted(p.stem for p in (out / "csv").glob("*.csv")):
                    commands += [f".once {dump / table}.csv", f"SELECT * FROM {table};"]
                timings["sqlite3_shell_csv"].append(
                    _measure([shell, "-readonly", "-csv", "-header", str(db), *commands])
                )
            shutil.rmtree(out)
    report: dict[str, Any] = {name: _runs(results) for name, results in timings.items()}
    if shell:
        floor = report["sqlite3_shell_csv"]["best"]["wall_s"]
        for name in ("all_formats", "csv"):
            best = report[name]["best"]["wall_s"]
            report[name]["ratio_to_sqlite3_shell"] = round(best / floor, 2)
    else:
        report["sqlite3_shell_csv"] = (
            "not measured: no sqlite3 shell on PATH (on Debian: apt-get install sqlite3)"
        )
    report["load_average_1min"] = {"before": load_before[0], "after": os.getloadavg()[0]}
    report["cpus"] = os.cpu_count()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.bench.export_speed",
        description="Time the export (all formats, CSV only) against the sqlite3 shell.",
    )
    parser.add_argument("--db", type=Path, required=True, help="an existing game database")
    parser.add_argument("--runs", type=int, default=3, help="runs of each command (default 3)")
    args = parser.parse_args(argv)
    if not args.db.is_file():
        parser.exit(2, f"{parser.prog}: error: no database at {args.db}\n")
    if args.runs < 1:
        parser.exit(2, f"{parser.prog}: error: --runs must be at least 1\n")
    json.dump(measure(args.db, args.runs), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
