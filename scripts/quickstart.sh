#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine, offline: install dependencies, build, create a small
# random-weight Arc2Face model, sample identities and draw faces for them. Outputs go to
# quickstart-out/ (model in quickstart-out/model). Real weights: see docs/reproducing-paper.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# Only the program: the tests and benchmarks build with scripts/test.sh.
scripts/build.sh idsynth
bin=build/cli/idsynth
out=${1:-quickstart-out}
mkdir -p "$out"

"$bin" init-model --out "$out/model" --layout diffusers --size tiny --text-hidden-size 64 --with-recognizer
"$bin" weights "$out/model/unet/diffusion_pytorch_model.safetensors" | tail -n 1
"$bin" identities --count 8 --dim 64 --max-similarity 0.3 --seed 1 --out "$out/identities.safetensors"
"$bin" generate --config configs/quickstart.yaml --set output.dir="$out/dataset" --set model.dir="$out/model" \
  --set model.recognizer="$out/model/recognizer.safetensors"
"$bin" merge "$out/dataset"
"$bin" inspect "$out/dataset" --sheet "$out/contact-sheet.png"
"$bin" export --dir "$out/dataset" --out "$out/recordio" --format recordio
echo "quickstart: done, see $out/"
