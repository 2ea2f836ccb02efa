#include "eval/lpips_folder.h"

#include <ATen/ATen.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <filesystem>

#include "core/check.h"
#include "eval/fid.h"
#include "formats/image.h"

namespace idsynth::eval {

namespace {

at::Tensor read_identity(const std::vector<std::string>& paths) {
  std::vector<at::Tensor> images;
  for (const auto& p : paths) {
    const cv::Mat rgb = formats::read_image_rgb(p);  // header checked before decoding
    // from_blob borrows rgb's pixels; the float conversion copies them before rgb goes away.
    const at::Tensor t = at::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, at::kByte).permute({2, 0, 1}).to(at::kFloat);
    if (!images.empty())
      IDSYNTH_CHECK(t.sizes() == images.front().sizes(), p, ": expected ", images.front().size(2), "x",
                    images.front().size(1), " like the other images, found ", rgb.cols, "x", rgb.rows);
    images.push_back(t / 127.5 - 1);
  }
  return at::stack(images);
}

}  // namespace

std::vector<at::Tensor> read_lpips_identities(const std::string& dir) {
  IDSYNTH_CHECK(std::filesystem::is_directory(dir), dir, ": --images: expected a folder, found ",
                std::filesystem::exists(dir) ? "a file" : "nothing");
  std::vector<std::string> folders;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.is_directory()) folders.push_back(e.path().string());
  std::sort(folders.begin(), folders.end());
  if (folders.empty()) folders.push_back(dir);
  std::vector<at::Tensor> identities;
  for (const auto& f : folders) identities.push_back(read_identity(list_fid_images(f)));
  return identities;
}

}  // namespace idsynth::eval
