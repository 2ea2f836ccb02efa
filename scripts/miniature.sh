#!/usr/bin/env bash
# The whole mission in miniature, trained and measured on this machine (docs/miniature.md):
# drawn faces -> a miniature recogniser ("ArcFace") and a miniature Arc2Face (VAE, then ID encoder +
# UNet) -> new identities -> `generate` with the ID filter -> an FR model trained on the synthetic
# shards only -> verification on drawn identities it has never seen, beside an FR model of the same
# size trained on the drawn faces themselves.
#
#   scripts/miniature.sh [OUT]         32 min on 2 cores here; OUT defaults to miniature-out
#   scripts/miniature.sh --ci [OUT]    the CI-sized variant (a few minutes, smaller everything)
#
# Every stage is a normal idsynth command with a config under configs/miniature/; the script only
# sets paths and sizes. Writes OUT/report.html, OUT/summary.md, OUT/stages.tsv (time per stage),
# OUT/contact-sheet.png and OUT/fr-synthetic/model.safetensors. A stage whose output exists is
# skipped, so a rerun after an interruption goes on where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

variant=full
if [[ "${1:-}" == "--ci" ]]; then variant=ci; shift; fi
out=${1:-miniature-out}
bin=${IDSYNTH_BIN:-build/cli/idsynth}
if [[ ! -x "$bin" ]]; then
  scripts/install-deps.sh
  scripts/build.sh idsynth
fi
cfg=configs/miniature
mkdir -p "$out"

# Sizes: image side; identities x images of drawn faces; training steps; synthetic identities x
# images. Both FR models train for the same number of steps.
if [[ $variant == full ]]; then
  size=32 real_ids=400 real_imgs=12 rec_epochs=3 vae_steps=300 gen_steps=1500
  syn_ids=200 syn_imgs=12 fr_steps=600 bin_ids=300 bin_pairs=1200
else
  size=16 real_ids=150 real_imgs=10 rec_epochs=4 vae_steps=150 gen_steps=400
  syn_ids=60 syn_imgs=8 fr_steps=100 bin_ids=100 bin_pairs=400
fi
cores=$(nproc)
log_level=${IDSYNTH_LOG_LEVEL:-info}
threads=${IDSYNTH_THREADS:-$cores}

stages="$out/stages.tsv"
[[ -f "$stages" ]] || printf 'stage\tseconds\n' > "$stages"
# stage NAME DONE_FILE COMMAND...: runs COMMAND unless DONE_FILE exists, prefixes its log lines
# with the stage name and records its time.
stage() {
  local name=$1 done_file=$2
  shift 2
  if [[ -e "$done_file" ]]; then
    echo "== $name: done before ($done_file)"
    return
  fi
  echo "== $name ($(date +%H:%M:%S))"
  local start ms
  start=$(date +%s%N)
  "$@" 2>&1 | sed -u "s/^/[$name] /"
  ms=$((($(date +%s%N) - start) / 1000000))
  printf '%s\t%d.%d\n' "$name" $((ms / 1000)) $((ms % 1000 / 100)) >> "$stages"
}
# idsynth with the run's log level and thread count
ids() { "$bin" --threads "$threads" --log-level "$log_level" "$@"; }
# Two independent stages side by side, each with half the cores: small models use two cores
# poorly, so this is faster than one after the other.
side_by_side() {
  local half=$((cores / 2))
  ((half >= 1)) || half=1
  (threads=$half; "$1") & local a=$!
  (threads=$half; "$2") & local b=$!
  local status=0
  wait $a || status=$?
  wait $b || status=$?
  return $status
}

# 1. Drawn faces: the "real" people (seed 1), and two verification packs of people neither model
#    has seen (seeds 1000 and 2000).
draw() {
  ids draw-faces --identities $real_ids --images-per-identity $real_imgs --seed 1 --size $size --format recordio \
    --out "$out/drawn-train" --sheet "$out/drawn-faces.png"
  ids draw-faces --identities $bin_ids --images-per-identity 10 --seed 1000 --size $size --format bin --pairs $bin_pairs \
    --out "$out/verify-unseen.bin"
  ids draw-faces --identities $bin_ids --images-per-identity 10 --seed 2000 --size $size --format bin --pairs $bin_pairs \
    --out "$out/verify-unseen-2.bin"
}
stage draw-faces "$out/verify-unseen-2.bin" draw

# 2. The miniature recogniser ("ArcFace": its vectors condition the generator and filter the
#    dataset) and the miniature Arc2Face's VAE, side by side.
recognizer() {
  stage recognizer "$out/recognizer/model.safetensors" \
    ids train --config $cfg/recognizer.yaml --set run.output="$out/recognizer" \
    --set data.paths="[$out/drawn-train]" --set schedule.epochs=$rec_epochs
}
vae() {
  stage init-model "$out/init-model/model_index.json" \
    ids init-model --out "$out/init-model" --size miniature --text-hidden-size 64 --seed 4
  stage vae "$out/vae/model/vae/config.json" \
    ids train-generator --config $cfg/vae.yaml --set run.output="$out/vae" \
    --set model.dir="$out/init-model" --set data.paths="[$out/drawn-train]" --set data.resolution=$size \
    --set schedule.max_steps=$vae_steps
}
side_by_side recognizer vae

# 3. The miniature Arc2Face: ID encoder and UNet trained together on (drawn face, ID vector) pairs.
stage generator "$out/generator/model/scheduler/scheduler_config.json" \
  ids train-generator --config $cfg/generator.yaml --set run.output="$out/generator" \
  --set model.dir="$out/vae/model" --set data.paths="[$out/drawn-train]" \
  --set data.recognizer="$out/recognizer/model.safetensors" --set data.resolution=$size --set schedule.max_steps=$gen_steps \
  --set checkpoint.every_steps=$((gen_steps / 4)) --set samples.every_steps=$((gen_steps / 2))

# 4. The mission loop on new identities: sample them, generate the dataset, train on it alone.
#    The miniature recogniser uses few directions of its 32-d space (drawn faces vary in fewer ways
#    than real ones), so new identities are drawn from the Gaussian fitted to the training faces'
#    vectors (--like, the cache train-generator wrote) rather than isotropically as for ArcFace.
stage identities "$out/identities.safetensors" \
  ids identities --count $syn_ids --dim 32 --max-similarity 0.9 --seed 5 --like "$out/generator/id_vectors.safetensors" \
  --out "$out/identities.safetensors"
stage generate "$out/dataset/manifest.json" \
  ids generate --config $cfg/generate.yaml --set model.dir="$out/generator/model" \
  --set model.recognizer="$out/recognizer/model.safetensors" --set identities.from_file="$out/identities.safetensors" --set identities.count=$syn_ids \
  --set output.dir="$out/dataset" --set output.images_per_identity=$syn_imgs --set generation.height=$size \
  --set generation.width=$size
stage contact-sheet "$out/contact-sheet.png" ids inspect "$out/dataset" --sheet "$out/contact-sheet.png"

# 5. The FR model on the synthetic shards only, and the real-data baseline of the same size on the
#    drawn faces, side by side.
fr_synthetic() {
  stage fr-synthetic "$out/fr-synthetic/model.safetensors" \
    ids train --config $cfg/fr.yaml --set run.output="$out/fr-synthetic" --set data.paths="[$out/dataset]" \
    --set schedule.epochs=1000 --set schedule.max_steps=$fr_steps
}
fr_real() {
  stage fr-real "$out/fr-real/model.safetensors" \
    ids train --config $cfg/fr.yaml --set run.output="$out/fr-real" --set data.paths="[$out/drawn-train]" \
    --set data.image=auto --set schedule.epochs=1000 --set schedule.max_steps=$fr_steps
}
side_by_side fr_synthetic fr_real

# 6. Evaluation: both recognisers on the unseen people; ID similarity of the generated faces to
#    their target vectors (the miniature recogniser is the judge); one report.
for run in fr-synthetic fr-real; do
  stage "verify-$run" "$out/eval/$run/metrics.json" \
    ids eval verify --recognizer "$out/$run/model.safetensors" --bin "$out/verify-unseen.bin" "$out/verify-unseen-2.bin" \
    --out "$out/eval/$run"
done
stage idsim "$out/eval/idsim/metrics.json" \
  ids eval idsim --recognizer "$out/recognizer/model.safetensors" --dataset "$out/dataset" --out "$out/eval/idsim"
ids eval report --title "idsynth miniature ($variant)" --run synthetic="$out/eval/fr-synthetic" \
  --run synthetic="$out/eval/idsim" --run real="$out/eval/fr-real" --out "$out"

# The ID filter's acceptance rate, from the dataset manifest.
count() { grep -m1 "\"$1\"" "$out/dataset/manifest.json" | tr -dc '0-9'; }
kept=$(count images) wrong=$(count rejected_identity) no_face=$(count rejected_no_face)
echo "ID filter: $kept faces kept of $((kept + wrong + no_face)) drawn ($((100 * kept / (kept + wrong + no_face)))%)" |
  tee "$out/filter.txt"
echo "== time per stage (s)"
column -t "$stages" 2>/dev/null || cat "$stages"
echo "miniature: done, see $out/report.html"
