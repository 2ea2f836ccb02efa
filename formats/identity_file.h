// Identity vector files: what `idsynth sample`, `identities`, `generate` and `eval idsim` read as
// target identities or as a gallery of real people's embeddings. The one reader of such files.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <string>

namespace idsynth::formats {

// [N, D] float32 rows, as stored, from a .npy file (float32/float64), a safetensors file or a torch
// checkpoint (one tensor, or the tensor named "ids"; a single vector is one row). Every row must be
// finite. `field` names the config key or option in errors.
at::Tensor read_vector_rows(const std::string& path, const std::string& field = "ids");

// [N, D] float32 rows from a .npy file (float32/float64), a safetensors file or a torch checkpoint
// (one tensor, or the tensor named "ids"; a single vector is one row). Every row must be finite and
// non-zero; rows come back L2-normalised, with a warning when they were not (Arc2Face expects unit
// vectors). max_width > 0: D may not exceed it (the text encoder's hidden size, which the rows are
// zero-padded to). Errors name the file, the field and what was found.
at::Tensor read_identity_vectors(const std::string& path, int64_t max_width = 0, bool* were_normalised = nullptr);

}  // namespace idsynth::formats
