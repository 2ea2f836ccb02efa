// NumPy .npy files of float32/float64 matrices (identity vectors exported from Python).
// The reader accepts format versions 1-3, little-endian '<f4' / '<f8', C order, 1-D or 2-D, and
// checks every header field and the data size against the file before reading.
#pragma once

#include <ATen/Tensor.h>

#include <string>

namespace idsynth {

// A float32 CPU tensor [rows, cols] (a 1-D array becomes one row). Errors name the file and field.
at::Tensor read_npy_matrix(const std::string& path);
// Writes a float32 or float64 CPU tensor of 1 or 2 dims as a version-1 .npy (C order), atomically.
void save_npy(const std::string& path, const at::Tensor& tensor);

}  // namespace idsynth
