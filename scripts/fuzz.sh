#!/usr/bin/env bash
# Builds the libFuzzer target for the untrusted-file parsers with clang (ASan + UBSan) and runs
# it for the given number of seconds (default 60) on a corpus seeded from ../shared/goldens.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIDSYNTH_MODELS_ONLY=ON -DIDSYNTH_FUZZ=ON -DIDSYNTH_NO_PCH=ON -DIDSYNTH_WERROR=OFF \
  -DIDSYNTH_BUILD_TESTS=OFF -DIDSYNTH_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz --target fuzz_parsers
corpus=build-fuzz/corpus
mkdir -p "$corpus"
goldens=${IDSYNTH_GOLDENS:-../shared/goldens}
if [ -d "$goldens" ]; then
  # Seeds: selector byte + a real file of each kind (the small ones).
  for f in "$goldens"/verification/*.bin; do { printf '\x04'; cat "$f"; } > "$corpus/bin-$(basename "$f")"; done
  for f in "$goldens"/scheduler_dpmpp/*.json "$goldens"/unet_tiny/unet/config.json; do
    { printf '\x03'; cat "$f"; } > "$corpus/json-$(basename "$f")"; done
  { printf '\x02'; cat "$goldens"/scheduler_dpmpp/inputs.safetensors; } > "$corpus/st-inputs"
fi
ASAN_OPTIONS=detect_leaks=0 build-fuzz/tests/fuzz/fuzz_parsers "$corpus" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=4096
