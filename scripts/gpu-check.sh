#!/usr/bin/env bash
# The GPU checks: builds the libtorch-only targets (models, their nn_* tests, the nn_* benchmarks)
# against the PyTorch installed on a CUDA machine, reruns the nn_* parity tests on the GPU
# (IDSYNTH_TEST_DEVICE=cuda; float32 with TF32 off, plus fp16/bf16 against the float32 goldens),
# runs a few mixed-precision training steps, and times the UNet step, the VAE decode and a whole
# 25-step image in every dtype, and IResNet-50 training steps (float32 and float16 autocast). Needs only python3 with a CUDA torch, cmake, ninja and a C++ compiler.
#
#   scripts/gpu-check.sh [OUT_DIR]
# Environment: IDSYNTH_GOLDENS (default ../shared/goldens), IDSYNTH_GTEST_SOURCE (GoogleTest sources
# when no GTest package is installed, default /usr/src/googletest), JOBS (default nproc),
# GPU_CHECK_BENCHES (default "unet vae image train").
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-build-gpu/results}
mkdir -p "$out"
log() { echo "== $*" | tee -a "$out/summary.txt"; }

python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' \
  | tee "$out/summary.txt" || { echo "gpu-check: python3 with a CUDA torch is required"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$out/summary.txt" 2>&1 || true
torch_dir=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "share/cmake/Torch"))')

log "configure (models only) against $torch_dir"
start=$SECONDS
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DIDSYNTH_MODELS_ONLY=ON -DIDSYNTH_WERROR=OFF -DIDSYNTH_BUILD_TESTS=ON -DIDSYNTH_BUILD_BENCH=ON \
  -DTorch_DIR="$torch_dir" -DIDSYNTH_GTEST_SOURCE="${IDSYNTH_GTEST_SOURCE:-/usr/src/googletest}" \
  >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
# -k 0: one target that fails to compile against this torch does not stop the others.
ninja -C build-gpu -k 0 -j"${JOBS:-$(nproc)}" test_generator test_recognition bench_nn_unet_step bench_nn_train_step >"$out/build.log" 2>&1
build_rc=$?
log "build rc=$build_rc in $((SECONDS - start)) s"
[ $build_rc -ne 0 ] && grep -E "error|FAILED" "$out/build.log" | head -40 | tee -a "$out/summary.txt"

export IDSYNTH_GOLDENS=${IDSYNTH_GOLDENS:-../shared/goldens} IDSYNTH_REQUIRE_GOLDENS=1 IDSYNTH_TEST_DEVICE=cuda
status=0
run() {  # name, command...
  local name=$1; shift
  local t=$SECONDS
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  log "$name rc=$rc in $((SECONDS - t)) s"
  grep -E "measured|max\|diff\||FAILED|PASSED|^unet|^vae|^image|^train step|error" "$out/$name.log" | head -60 >>"$out/summary.txt"
  [ $rc -ne 0 ] && status=1
  return 0
}
[ -x build-gpu/tests/test_generator ] && run test_generator build-gpu/tests/test_generator \
  --gtest_filter='UNetParity.*:VaeParity.*:ClipParity.*:Pipeline*:Scheduler*'
[ -x build-gpu/tests/test_recognition ] && run test_recognition build-gpu/tests/test_recognition --gtest_filter='*Train*'
benches=" ${GPU_CHECK_BENCHES:-unet vae image train} "
if [ -x build-gpu/bench/bench_nn_unet_step ]; then
  [[ $benches == *" unet "* ]] && run bench_unet build-gpu/bench/bench_nn_unet_step --device cuda --what unet --dtype all --iters 5
  [[ $benches == *" vae "* ]] && run bench_vae build-gpu/bench/bench_nn_unet_step --device cuda --what vae --dtype all --iters 3
  [[ $benches == *" image "* ]] && run bench_image build-gpu/bench/bench_nn_unet_step --device cuda --what image --dtype all --iters 2
fi
# The training rate a data loader must sustain (compare with bench_train_throughput's loader rate).
[[ $benches == *" train "* ]] && [ -x build-gpu/bench/bench_nn_train_step ] && run bench_train sh -c \
  'for fp16 in 0 1; do build-gpu/bench/bench_nn_train_step --devices cuda --batch 256 --steps 10 --fp16 $fp16; done'

cat "$out/summary.txt"
exit $((status | (build_rc != 0)))
