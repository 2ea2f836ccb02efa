#!/usr/bin/env bash
# Configures and builds idsynth into build/ (Release). Extra arguments go to cmake, e.g.
#   scripts/build.sh -DTorch_DIR=/opt/libtorch/share/cmake/Torch   (a CUDA libtorch)
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
export CCACHE_BASEDIR="$PWD"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j"$(nproc)"
