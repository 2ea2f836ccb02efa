#!/usr/bin/env bash
# Configures and builds idsynth into build/ (Release). Arguments starting with -D go to cmake's
# configure step (e.g. -DTorch_DIR=/opt/libtorch/share/cmake/Torch for a CUDA libtorch); any other
# argument names a target to build instead of everything, e.g. `scripts/build.sh idsynth`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
export CCACHE_BASEDIR="$PWD"
defines=()
targets=()
for a in "$@"; do
  case "$a" in
    -D*) defines+=("$a") ;;
    *) targets+=(--target "$a") ;;
  esac
done
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "${defines[@]}" >/dev/null
cmake --build build -j"$(nproc)" "${targets[@]}"
