#include "tessera/data/patches.h"

#include <torch/torch.h>

#include "tessera/core/error.h"

namespace tessera::data {

PatchGrid PatchGrid::fit(int64_t height, int64_t width, int64_t patch, int64_t stride) {
  TESSERA_CHECK(patch > 0 && stride > 0, "patch and stride must be positive, got ", patch, " and ", stride);
  TESSERA_CHECK(patch <= height && patch <= width, "patch ", patch, "x", patch, " is larger than the image ", height,
                "x", width, "; use a smaller patch or a larger image");
  PatchGrid g;
  g.patch_h = g.patch_w = patch;
  g.stride_h = g.stride_w = stride;
  g.rows = (height - patch) / stride + 1;
  g.cols = (width - patch) / stride + 1;
  return g;
}

namespace {
torch::Tensor grid_view(const torch::Tensor& image, const PatchGrid& g) {
  TESSERA_CHECK(image.dim() == 3, "expected an image (C, H, W), got shape ", image.sizes());
  const auto fitted = PatchGrid::fit(image.size(1), image.size(2), g.patch_h, g.stride_h);
  TESSERA_CHECK(fitted.rows == g.rows && fitted.cols == g.cols, "image ", image.sizes(),
                " does not match the patch grid ", g.rows, "x", g.cols);
  // (C, rows, cols, ph, pw) strided view, no copy.
  return image.unfold(1, g.patch_h, g.stride_h).unfold(2, g.patch_w, g.stride_w);
}
}  // namespace

torch::Tensor extract_patches(const torch::Tensor& image, const PatchGrid& grid) {
  return grid_view(image, grid).permute({1, 2, 0, 3, 4}).reshape({grid.count(), image.size(0), grid.patch_h, grid.patch_w});
}

torch::Tensor extract_patches(const torch::Tensor& image, const PatchGrid& grid, const torch::Tensor& idx) {
  const auto view = grid_view(image, grid);
  const auto flat = idx.to(view.device(), torch::kLong);
  TESSERA_CHECK(flat.numel() == 0 || (flat.min().item<int64_t>() >= 0 && flat.max().item<int64_t>() < grid.count()),
                "patch index out of range [0, ", grid.count(), ")");
  const auto rows = torch::div(flat, grid.cols, "floor");
  const auto cols = flat - rows * grid.cols;
  // Advanced indexing on the two grid dims gathers only the k requested patches: (C, k, ph, pw).
  return view.index({torch::indexing::Slice(), rows, cols}).transpose(0, 1).contiguous();
}

torch::Tensor extract_patches_batch(const torch::Tensor& images, const PatchGrid& grid, const torch::Tensor& idx) {
  TESSERA_CHECK(images.dim() == 4, "expected a batch of images (B, C, H, W), got shape ", images.sizes());
  const auto fitted = PatchGrid::fit(images.size(2), images.size(3), grid.patch_h, grid.stride_h);
  TESSERA_CHECK(fitted.rows == grid.rows && fitted.cols == grid.cols, "images ", images.sizes(),
                " do not match the patch grid ", grid.rows, "x", grid.cols);
  const auto view = images.unfold(2, grid.patch_h, grid.stride_h).unfold(3, grid.patch_w, grid.stride_w);
  const auto flat = idx.to(images.device(), torch::kLong);
  const auto rows = torch::div(flat, grid.cols, "floor");
  const auto cols = flat - rows * grid.cols;
  using torch::indexing::Slice;
  return view.index({Slice(), Slice(), rows, cols}).permute({0, 2, 1, 3, 4}).contiguous();  // (B, k, C, ph, pw)
}

torch::Tensor PatchBag::range(int64_t begin, int64_t end) const {
  return gather(torch::arange(begin, end, torch::kLong));
}

TensorBag::TensorBag(torch::Tensor patches) : patches_(std::move(patches)) {
  TESSERA_CHECK(patches_.dim() >= 2, "a patch bag holds (N, ...) patches or feature rows, got shape ", patches_.sizes());
}

torch::Tensor TensorBag::gather(const torch::Tensor& idx) const {
  return patches_.index_select(0, idx.to(patches_.device(), torch::kLong));
}

torch::Tensor TensorBag::range(int64_t begin, int64_t end) const { return patches_.slice(0, begin, end); }

ImageGridBag::ImageGridBag(torch::Tensor image, PatchGrid grid) : image_(std::move(image)), grid_(grid) {
  grid_view(image_, grid_);  // validates shape against the grid
}

torch::Tensor ImageGridBag::gather(const torch::Tensor& idx) const { return extract_patches(image_, grid_, idx); }

torch::Tensor ImageGridBag::range(int64_t begin, int64_t end) const {
  if (begin == 0 && end == size()) return extract_patches(image_, grid_);  // one strided copy
  return PatchBag::range(begin, end);
}

}  // namespace tessera::data
