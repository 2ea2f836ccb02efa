#!/usr/bin/env bash
# Fetches the small pretrained models that the real-model tests use into <repo>/.test-data/
# (git-ignored). Test data only: the weights' provenance is unclear, so they are never committed.
#   faceplugin-face-recognition-js@0.0.1 -> .test-data/faceplugin/package/model/fr_feature.onnx
# Idempotent: does nothing when the files are present and their checksums match.
# Tests find the folder through IDSYNTH_TEST_MODELS, else <repo>/.test-data.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${IDSYNTH_TEST_MODELS:-$repo/.test-data}"
pkg="faceplugin-face-recognition-js@0.0.1"
tarball="faceplugin-face-recognition-js-0.0.1.tgz"
model="$dest/faceplugin/package/model/fr_feature.onnx"
sha="87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581"

if [[ -f "$model" ]] && echo "$sha  $model" | sha256sum --check --status; then
  echo "fetch-test-models: $model present"
  exit 0
fi
command -v npm >/dev/null || { echo "fetch-test-models: npm not found (apt-get install npm)" >&2; exit 1; }
mkdir -p "$dest/faceplugin"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# npm pack downloads only the tarball; nothing is installed and no package scripts run.
(cd "$tmp" && npm pack --silent "$pkg" >/dev/null)
tar -xzf "$tmp/$tarball" -C "$dest/faceplugin" package/model/fr_feature.onnx
echo "$sha  $model" | sha256sum --check --status || {
  echo "fetch-test-models: checksum mismatch for $model (expected $sha)" >&2
  exit 1
}
echo "fetch-test-models: wrote $model"
