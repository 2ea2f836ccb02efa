#!/usr/bin/env bash
# Installs every Debian 12 package idsynth needs to build, test and run. Idempotent and quiet:
# packages already present are skipped, apt's index is refreshed only when something is missing.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build ccache git pkg-config
  # libraries (DESIGN.md): libtorch, OpenCV, TBB, HDF5, yaml-cpp, Boost.Program_options, GoogleTest
  libtorch-dev libopencv-dev libtbb-dev libhdf5-dev libyaml-cpp-dev libboost-program-options-dev libgtest-dev
  # ONNX import, hashing, FID linear algebra, .npz statistics
  libonnx-dev libprotobuf-dev protobuf-compiler libssl-dev libeigen3-dev libzip-dev nlohmann-json3-dev
  # a fast BLAS for libtorch's matrix products (the reference BLAS is ~35x slower)
  libopenblas0-pthread
  # tests: real torch.save files and h5py checks are made with Debian's PyTorch for Python
  python3 python3-torch python3-numpy python3-h5py
  # tests: the pretrained test recogniser is fetched with npm (scripts/fetch-test-models.sh)
  npm
  # tests: report.html rendered headless (tests/eval/report_test.cpp)
  chromium
  # tests: a one-node Slurm cluster for the job-array test (scripts/slurm/local-cluster.sh)
  slurmctld slurmd slurm-client munge
  # tests: the libFuzzer targets of the untrusted-input readers (scripts/fuzz.sh)
  clang libclang-rt-dev
)

missing=()
for p in "${packages[@]}"; do
  # npm may come with a Node.js installed outside Debian's packages; any working npm will do.
  if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
