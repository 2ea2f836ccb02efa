#!/usr/bin/env bash
# Writes shard-v1.h5 beside this script: a version-1 shard made by idsynth's own version-1 writer
# (formats/shard_file.cpp at commit 8e30bc6, the last one that wrote version 1), holding the
# one-image shard that tests/formats/fuzz_regression_test.cpp and tests/dataset/dataset_plan_test.cpp
# expect. Version 1 keeps the JPEG bytes and string attributes as variable-length data; the tests
# read it for compatibility and damage its global heap for findings 7 and 8.
#   tests/formats/data/make-shard-v1.sh      (from a git checkout; needs g++ and libhdf5-dev)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/formats" "$work/core"
git -C "$repo" show 8e30bc6:formats/shard_file.cpp > "$work/formats/shard_file.cpp"
git -C "$repo" show 8e30bc6:formats/shard_file.h > "$work/formats/shard_file.h"
git -C "$repo" show 8e30bc6:core/check.h > "$work/core/check.h"
git -C "$repo" show 8e30bc6:core/file_util.h > "$work/core/file_util.h"
git -C "$repo" show 8e30bc6:core/file_util.cpp > "$work/core/file_util.cpp"
cat > "$work/main.cpp" <<'CPP'
#include "formats/shard_file.h"
int main(int argc, char** argv) {
  idsynth::formats::ShardData d;
  d.shard_index = 0;
  d.dim = 2;
  d.identity_index = {0};
  d.identity_vectors = {0.6f, 0.8f};
  d.labels = {0};
  d.image_index = {0};
  d.attempt = {0};
  d.seed = {1};
  d.similarity = {0.9f};
  d.images = {std::string(300, 'j')};
  d.has_aligned = false;
  d.config = "test";
  d.model_files = "{}";
  idsynth::formats::write_shard(argv[argc - 1], d);
}
CPP
hdf5=$(pkg-config --cflags --libs hdf5-serial 2>/dev/null || echo "-I/usr/include/hdf5/serial -L/usr/lib/x86_64-linux-gnu/hdf5/serial -lhdf5")
g++ -std=c++17 -O1 -I"$work" "$work/main.cpp" "$work/formats/shard_file.cpp" "$work/core/file_util.cpp" $hdf5 -o "$work/make"
"$work/make" "$here/shard-v1.h5"
echo "wrote $here/shard-v1.h5 ($(stat -c %s "$here/shard-v1.h5") bytes)"
