// Identity vector files: what `idsynth sample`, `generate` and `eval idsim` read as target identities.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <string>

namespace idsynth::generator {

// [N, D] float32 rows from a .npy file (float32/float64), a safetensors file or a torch checkpoint
// (one tensor, or the tensor named "ids"; a single vector is one row). Every row must be finite and
// non-zero; rows come back L2-normalised, with a warning when they were not (Arc2Face expects unit
// vectors). max_width > 0: D may not exceed it (the text encoder's hidden size, which the rows are
// zero-padded to). Errors name the file, the field and what was found.
at::Tensor read_identity_vectors(const std::string& path, int64_t max_width = 0, bool* were_normalised = nullptr);

}  // namespace idsynth::generator
