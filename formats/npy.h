// numpy `.npy` arrays and `.npz` archives (a zip of .npy members): identity vectors exported from
// Python, pytorch-fid statistics files (`mu`, `sigma`) and any other array a reference tool saved
// with np.save / np.savez. The one reader and writer of these files in idsynth.
// Format: magic "\x93NUMPY", version (1.0: 2-byte header length; 2.0/3.0: 4-byte), a Python dict
// literal {'descr': '<f8', 'fortran_order': False, 'shape': (D, D), } padded with spaces, then the
// raw data. The parser is bounds-checked: header length, shape product and data size are validated
// against the bytes present before anything is copied.
// Ref: numpy/lib/format.py (NEP 1), numpy/lib/npyio.py (savez, savez_compressed).
#pragma once

#include <ATen/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "core/tensor_dict.h"

namespace idsynth::formats {

// One .npy blob -> CPU tensor. Little-endian f8/f4/f2/i8/i4/i2/i1/u1/b1; C or Fortran order.
// `source` names the file (and member) in errors.
at::Tensor parse_npy(const std::string& bytes, const std::string& source);

// Tensor -> .npy v1.0 blob in C order.
std::string serialize_npy(const at::Tensor& tensor);

// A whole .npy file, any supported dtype and shape.
at::Tensor read_npy(const std::string& path);
// A float32 CPU tensor [rows, cols] from a float32/float64 array of 1 or 2 dims (a 1-D array
// becomes one row). Errors name the file and field.
at::Tensor read_npy_matrix(const std::string& path);
// Writes a tensor as a version-1 .npy (C order), atomically.
void save_npy(const std::string& path, const at::Tensor& tensor);

// Every member of an .npz archive, named without the ".npy" suffix.
TensorDict read_npz(const std::string& path);

// Writes an .npz archive atomically (temporary name, then rename), deflate-compressed like
// np.savez_compressed when `compress`.
void write_npz(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& arrays,
               bool compress = true);

}  // namespace idsynth::formats
