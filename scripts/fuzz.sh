#!/usr/bin/env bash
# Fuzzes every reader of untrusted bytes with libFuzzer (clang, ASan + UBSan), one target each
# (tests/fuzz/fuzz_parsers.h lists them), SECONDS per target (default 60):
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     build, then fuzz all targets (or the ones named)
#   scripts/fuzz.sh build                     only build the targets (build-fuzz/)
#   IDSYNTH_FUZZ_NO_BUILD=1 scripts/fuzz.sh … fuzz with the targets already built
#
# Each target starts from its seed corpus (written by the target itself from ../shared/goldens and
# idsynth's writers, build-fuzz/fuzz/seeds/<target>) plus what earlier runs kept
# (build-fuzz/fuzz/corpus/<target>), with the dictionary tests/fuzz/dict/<target>.dict. A run fails
# on any crash or sanitizer report, a leak, an input slower than 10 s (timeout), one allocation above
# 1 GiB or a process above 2.5 GiB (out of memory); the input is saved under
# build-fuzz/fuzz/crashes/<target>/ and the failing targets are listed at the end. Reproduce one with
# `build-fuzz/tests/fuzz/fuzz_<target> <input>` (IDSYNTH_FUZZ_VERBOSE=1 prints each rejection). Per-target figures (executions, edges covered, CPU time) go to
# build-fuzz/fuzz/summary.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
build=build-fuzz
work=$build/fuzz
all_targets=(safetensors pickle torch_checkpoint onnx recordio bin_pack npy npz hdf5_shard json yaml_config image)
# fuzz_lora (LoRA files) is opt-in: IDSYNTH_FUZZ_LORA=1 builds it (it links the generator models
# library, minutes more of build) and fuzzes it with the rest.
[ -n "${IDSYNTH_FUZZ_LORA:-}" ] && all_targets+=(lora)

mode=fuzz
seconds=60
if [ "${1:-}" = build ]; then mode=build; shift; fi
if [ "$mode" = fuzz ] && [ $# -gt 0 ]; then seconds=$1; shift; fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  # IDSYNTH_FUZZ_EXCLUDE: targets left out of "all" (space-separated), e.g. for CI.
  for t in "${all_targets[@]}"; do
    [[ " ${IDSYNTH_FUZZ_EXCLUDE:-} " == *" $t "* ]] || targets+=("$t")
  done
fi

if [ -z "${IDSYNTH_FUZZ_NO_BUILD:-}" ]; then
  start=$(date +%s)
  # clang and its libFuzzer runtime (not in scripts/install-deps.sh's list of the main build).
  if ! command -v clang++ >/dev/null || ! compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    echo "fuzz.sh: installing clang and libclang-rt-dev"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends clang libclang-rt-dev >/dev/null
  fi
  # The formats layer (HDF5, OpenCV, libzip) and core are instrumented; libtorch and the system
  # libraries are not. Only the libraries the targets link are built.
  cmake -S . -B $build -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIDSYNTH_FUZZ=ON -DIDSYNTH_WERROR=OFF \
    -DIDSYNTH_BUILD_TESTS=OFF -DIDSYNTH_BUILD_BENCH=OFF -DIDSYNTH_FUZZ_LORA=$([ -n "${IDSYNTH_FUZZ_LORA:-}" ] && echo ON || echo OFF) >/dev/null
  cmake --build $build -j"$(nproc)" --target fuzz_all $([ -n "${IDSYNTH_FUZZ_LORA:-}" ] && echo fuzz_lora)
  echo "fuzz.sh: build took $(( $(date +%s) - start )) s"
fi
[ "$mode" = build ] && exit 0

goldens=${IDSYNTH_GOLDENS:-$repo/../shared/goldens}
mkdir -p $work
# The targets write each input to a scratch file here (readers that take a path).
IDSYNTH_FUZZ_TMP=$(mktemp -d /dev/shm/idsynth-fuzz.XXXXXX 2>/dev/null || mktemp -d)
export IDSYNTH_FUZZ_TMP
trap 'rm -rf "$IDSYNTH_FUZZ_TMP"' EXIT
summary=$work/summary.tsv
printf 'target\tseconds\tcpu_s\texecs\texecs_per_s\tedges\tfeatures\tcorpus\tresult\n' > $summary
failed=()
for t in "${targets[@]}"; do
  bin=$build/tests/fuzz/fuzz_$t
  [ -x "$bin" ] || { echo "fuzz.sh: no target $t ($bin)" >&2; exit 2; }
  rm -rf "$work/seeds/$t"
  if ! IDSYNTH_GOLDENS=$goldens IDSYNTH_FUZZ_SEEDS="$work/seeds/$t" "$bin" >"$work/$t.seeds.log" 2>&1; then
    echo "fuzz.sh: $t: writing the seed corpus failed ($work/$t.seeds.log):" >&2
    tail -5 "$work/$t.seeds.log" >&2
    exit 1
  fi
  mkdir -p "$work/corpus/$t" "$work/crashes/$t"
  dict=()
  [ -f tests/fuzz/dict/$t.dict ] && dict=(-dict=tests/fuzz/dict/$t.dict)
  log=$work/$t.log
  t0=$(date +%s)
  rc=0
  # libtorch, OpenCV and HDF5 keep one-time allocations (caches, thread pools) that LeakSanitizer
  # sees as leaks; tests/fuzz/lsan.supp names them. Anything else leaked fails the run.
  # libhdf5 keeps free lists and caches between calls, so every input would look like a leak and
  # trigger a whole-heap scan (6 inputs/s); its target runs without leak detection.
  leaks=1
  [ "$t" = hdf5_shard ] && leaks=0
  # OpenCV sizes the decoded image from the header before reading pixels, up to 2^30 pixels (3 GiB)
  # by default; a 50-byte BMP header asks for 1.4 GB. Decoding runs with the 2^26-pixel cap
  # (8192 x 8192) that docs/reliability.md recommends for deployments.
  OPENCV_IO_MAX_IMAGE_PIXELS=67108864 \
  ASAN_OPTIONS=detect_odr_violation=0:quarantine_size_mb=64:detect_leaks=$leaks \
  LSAN_OPTIONS=suppressions=$repo/tests/fuzz/lsan.supp:print_suppressions=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    /usr/bin/time -f '%U %S' -o "$work/$t.time" \
    "$bin" "$work/corpus/$t" "$work/seeds/$t" "${dict[@]}" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2560 -malloc_limit_mb=1024 -detect_leaks=$leaks -max_len=262144 -print_final_stats=1 \
      -artifact_prefix="$work/crashes/$t/" </dev/null >"$log" 2>&1 || rc=$?
  wall=$(( $(date +%s) - t0 ))
  cpu=$(awk '{printf "%.0f", $1 + $2}' "$work/$t.time" 2>/dev/null || echo "?")
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+[[:space:]].* cov: ' "$log" | tail -1 || true)
  edges=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  result=ok
  if [ $rc -ne 0 ]; then
    result=$(grep -oE 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer): [a-z-]+|runtime error|out-of-memory|timeout' "$log" | head -1 || true)
    result=${result:-"exit $rc"}
    failed+=("$t")
  fi
  eps=$(( ${execs:-0} / (wall > 0 ? wall : 1) ))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$wall" "$cpu" "${execs:-?}" "$eps" "${edges:-?}" "${ft:-?}" \
    "${corp:-?}" "$result" >> $summary
  echo "fuzz.sh: $t: ${wall} s, ${execs:-?} execs, ${edges:-?} edges, $result"
  if [ $rc -ne 0 ]; then
    grep -E -A25 'ERROR: |runtime error' "$log" | head -40 >&2 || tail -30 "$log" >&2
    ls "$work/crashes/$t/" >&2
  fi
done
column -t -s$'\t' $summary
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: FAILED: ${failed[*]} (inputs under $work/crashes/, logs $work/<target>.log)" >&2
  exit 1
fi
