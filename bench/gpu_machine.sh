#!/usr/bin/env bash
# The GPU check (bench/cuda.py) on a lent GPU machine that has torch but not Feldspar's install:
# makes `feldspar` importable from this checkout by links, adds the locked transformers from
# .whl/, then runs the h-350m rows without Mamba kernels (and the compiled step), with
# mamba_ssm's Triton kernels, with causal_conv1d too when its build (started first, in the
# background) has finished, and h-1b with what loaded. Writes JSON and logs under $OUT.
# Usage there: bash bench/gpu_machine.sh   (needs .whl/ with the transformers wheel and the
# mamba_ssm and causal_conv1d sdists; see docs/benchmarks.md, "On a GPU").
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"; ROOT=$PWD; S=/tmp/fs
rm -rf $S && mkdir -p $S/base $S/mamba $S/conv
cp -r app $S/base/feldspar
for d in model retrieval agents ui bench; do ln -s "$ROOT/$d" $S/base/feldspar/$d; done
python3 -m pip install -q --no-deps --no-index --target $S/base .whl/transformers-*.whl || exit 1
tar xzf .whl/mamba_ssm-*.tar.gz -C /tmp && cp -r /tmp/mamba_ssm-*/mamba_ssm $S/mamba/
: > $S/mamba/selective_scan_cuda.py  # Mamba1's CUDA scan: not built, not used by Granite 4.0
(cd /tmp && tar xzf "$ROOT"/.whl/causal_conv1d-*.tar.gz && cd causal_conv1d-* && \
  CAUSAL_CONV1D_FORCE_BUILD=TRUE TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=6 nice -n 19 \
  python3 -m pip install -q --no-deps --no-build-isolation --target $S/conv . > "$OUT/conv_build.log" 2>&1; \
  echo "exit $?" >> "$OUT/conv_build.log") &
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
run() {  # name, seconds, PYTHONPATH extras, args
  local name=$1 limit=$2 extra=$3; shift 3
  echo "== $name" ; PYTHONPATH=$extra$S/base PYTHONUNBUFFERED=1 timeout "$limit" \
    python3 -m feldspar.bench.cuda "$OUT/$name.json" "$@" 2> "$OUT/$name.log"; echo "rc $?"
}
run plain 180 "" granite-4.0-h-350m --compile
run mamba 100 "$S/mamba:" granite-4.0-h-350m
wait_s=0; while ! grep -q '^exit' "$OUT/conv_build.log" 2>/dev/null && [ $wait_s -lt 20 ]; do sleep 5; wait_s=$((wait_s+5)); done
tail -3 "$OUT/conv_build.log"
if grep -q '^exit 0' "$OUT/conv_build.log"; then run kernels 90 "$S/conv:$S/mamba:" granite-4.0-h-350m; K="$S/conv:$S/mamba:"; else K="$S/mamba:"; fi
run h1b 90 "$K" granite-4.0-h-1b
