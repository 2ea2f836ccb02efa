#include "formats/identity_file.h"

#include <ATen/ATen.h>

#include "core/check.h"
#include "core/file_util.h"
#include "core/log.h"
#include "formats/npy.h"
#include "core/weights.h"

namespace idsynth::formats {

at::Tensor read_vector_rows(const std::string& path, const std::string& field) {
  IDSYNTH_CHECK(file_exists(path), path, ": ", field, ": file not found");
  at::Tensor ids;
  if (path.size() >= 4 && path.compare(path.size() - 4, 4, ".npy") == 0) {
    ids = read_npy_matrix(path);
  } else {
    const TensorDict d = read_weights(path);
    IDSYNTH_CHECK(d.size() == 1 || d.contains("ids"), path, ": ", field,
                  ": expected one tensor or a tensor named 'ids', found ", d.size(), " tensors");
    ids = d.size() == 1 ? d.items()[0].second : d.at("ids");
    IDSYNTH_CHECK(ids.is_floating_point(), path, ": ", field, ": expected floating-point values, found ",
                  ids.scalar_type());
    if (ids.dim() == 1) ids = ids.unsqueeze(0);
  }
  ids = ids.to(at::kFloat).contiguous();
  IDSYNTH_CHECK(ids.dim() == 2 && ids.size(0) > 0 && ids.size(1) > 0, path, ": ", field,
                ": expected a non-empty [N, D] matrix, found ", ids.sizes());
  const at::Tensor bad = at::logical_not(at::isfinite(ids)).any(1).nonzero();
  IDSYNTH_CHECK(bad.numel() == 0, path, ": ", field, ": row ", bad.numel() ? bad[0][0].item<int64_t>() : 0,
                " contains NaN or Inf (", bad.numel(), " bad rows)");
  return ids;
}

at::Tensor read_identity_vectors(const std::string& path, int64_t max_width, bool* were_normalised) {
  const at::Tensor ids = read_vector_rows(path, "ids");
  IDSYNTH_CHECK(max_width <= 0 || ids.size(1) <= max_width, path, ": ids: expected width D <= ", max_width,
                " (the text encoder's hidden_size), found ", ids.size(1));
  const at::Tensor norms = ids.norm(2, 1, true);
  IDSYNTH_CHECK(norms.min().item<double>() > 0, path, ": ids: a row is all zeros and cannot be normalised");
  const bool unit = (norms - 1).abs().max().item<double>() <= 1e-3;
  if (!unit) LOG_WRN(path, ": ID rows were not L2-normalised; normalising them (Arc2Face expects unit vectors)");
  if (were_normalised) *were_normalised = unit;
  return ids / norms;
}

}  // namespace idsynth::formats
