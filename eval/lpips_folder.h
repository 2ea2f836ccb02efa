// The images `idsynth eval lpips --images DIR` measures: one subfolder per identity, or, when DIR has
// no subfolder, DIR itself as a single identity.
#pragma once

#include <ATen/Tensor.h>

#include <string>
#include <vector>

namespace idsynth::eval {

// Per identity (subfolders in sorted order), its images as pytorch-fid lists them (list_fid_images),
// stacked as (K, 3, H, W) float RGB in [-1, 1], as lpips' im2tensor. The images of one identity must
// share a size; a file that does not decode or differs in size is named in the error.
std::vector<at::Tensor> read_lpips_identities(const std::string& dir);

}  // namespace idsynth::eval
