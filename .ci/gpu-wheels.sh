#!/usr/bin/env bash
# Run on a machine with PyPI access (the dev machine), in the repository root: downloads the
# wheels of .ci/gpu-wheels.txt for the lent GPU machine (CPython 3.12, x86-64) into .whl/,
# then trims bitsandbytes to the CUDA 13 and CPU libraries (the machine's torch is cu130;
# the other CUDA builds would take 40 MB of the 64 MiB a call may carry).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
mkdir -p .whl
grep -v '^#' .ci/gpu-wheels.txt | grep . | xargs "$PYTHON" -m pip download --no-deps \
  --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl
"$PYTHON" - <<'PY'
"""Rewrite the bitsandbytes wheel without the libraries of other CUDA versions and ROCm."""
import pathlib
import re
import zipfile

keep = re.compile(r"libbitsandbytes_(cuda13\d|cpu)\.so$")
for wheel in pathlib.Path(".whl").glob("bitsandbytes-*.whl"):
    with zipfile.ZipFile(wheel) as source:
        names = [n for n in source.namelist() if not n.endswith(".so") or keep.search(n)]
        if len(names) == len(source.namelist()):
            continue
        trimmed = wheel.with_suffix(".tmp")
        with zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED) as target:
            for name in names:
                data = source.read(name)
                if name.endswith(".dist-info/RECORD"):
                    lines = data.decode().splitlines()
                    data = "\n".join(
                        line for line in lines if line.split(",")[0] in names or not line
                    ).encode() + b"\n"
                target.writestr(source.getinfo(name), data)
    trimmed.replace(wheel)
    print(f"trimmed {wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB")
PY
du -ch .whl/*.whl | tail -1
