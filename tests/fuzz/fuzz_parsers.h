// The libFuzzer entry points of tests/fuzz/fuzz_parsers.cpp, one per reader of untrusted bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

// X(name): the parser targets, each built as the executable fuzz_<name>.
#define IDSYNTH_FUZZ_TARGETS(X) \
  X(safetensors) X(pickle) X(torch_checkpoint) X(onnx) X(recordio) X(bin_pack) X(npy) X(npz) X(hdf5_shard) \
  X(json) X(yaml_config) X(image)

namespace idsynth::fuzz {

#define IDSYNTH_FUZZ_DECLARE(name) int name(const uint8_t* data, size_t size);
IDSYNTH_FUZZ_TARGETS(IDSYNTH_FUZZ_DECLARE)
#undef IDSYNTH_FUZZ_DECLARE

// fuzz_lora.cpp (built with -DIDSYNTH_FUZZ_LORA=ON: it links the generator library).
int lora(const uint8_t* data, size_t size);
void write_lora_seeds(const std::string& dir);

// Helpers shared by the entry points: a scratch file per process and tag (in $IDSYNTH_FUZZ_TMP or
// /dev/shm), writing the input there, and running one input with idsynth::Error accepted.
std::string scratch(const char* tag, const char* ext);
void write_bytes(const std::string& path, const void* data, size_t size);
int guarded(const std::function<void()>& body);

// Writes the seed corpus of `target` into `dir`.
void write_seeds(const std::string& target, const std::string& dir);
// Silences idsynth's log (the readers log at info level).
void quiet();

}  // namespace idsynth::fuzz
