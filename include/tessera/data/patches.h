// Regular patch grids (row-major, no padding, remainder dropped) and bags of patches that a method
// reads by index: held in memory (eager) or cut from the image only when asked for (lazy).
#pragma once
#include <torch/types.h>

#include <memory>

namespace tessera::data {

struct PatchGrid {
  int64_t patch_h = 0, patch_w = 0, stride_h = 0, stride_w = 0;
  int64_t rows = 0, cols = 0;  // nH, nW

  // Validates that at least one patch fits; errors name the sizes.
  static PatchGrid fit(int64_t height, int64_t width, int64_t patch, int64_t stride);
  int64_t count() const { return rows * cols; }
};

// image (C, H, W) -> all patches (N, C, ph, pw), n = i * cols + j.
torch::Tensor extract_patches(const torch::Tensor& image, const PatchGrid& grid);
// image (C, H, W), idx (k) int64 -> patches (k, C, ph, pw), copying only those k.
torch::Tensor extract_patches(const torch::Tensor& image, const PatchGrid& grid, const torch::Tensor& idx);

// images (B, C, H, W), idx (k) int64 -> the same k patches of every image (B, k, C, ph, pw).
torch::Tensor extract_patches_batch(const torch::Tensor& images, const PatchGrid& grid, const torch::Tensor& idx);

class PatchBag {
 public:
  virtual ~PatchBag() = default;
  virtual int64_t size() const = 0;
  // idx (k) int64 -> (k, C, h, w); indices refer to the bag's row-major order.
  virtual torch::Tensor gather(const torch::Tensor& idx) const = 0;
  virtual torch::Tensor range(int64_t begin, int64_t end) const;
  // Read from a file on demand (slides, feature bags): IPS always streams such bags chunk by chunk,
  // whatever the loading mode, so memory never depends on their size.
  virtual bool on_disk() const { return false; }
};
using PatchBagPtr = std::shared_ptr<const PatchBag>;

// Patches already materialised, e.g. all N on the compute device (eager loading).
class TensorBag final : public PatchBag {
 public:
  explicit TensorBag(torch::Tensor patches);  // (N, C, h, w)
  int64_t size() const override { return patches_.size(0); }
  torch::Tensor gather(const torch::Tensor& idx) const override;
  torch::Tensor range(int64_t begin, int64_t end) const override;

 private:
  torch::Tensor patches_;
};

// Patches cut from a host image on request (lazy loading): nothing N-sized is ever allocated.
class ImageGridBag final : public PatchBag {
 public:
  ImageGridBag(torch::Tensor image, PatchGrid grid);  // image (C, H, W)
  int64_t size() const override { return grid_.count(); }
  torch::Tensor gather(const torch::Tensor& idx) const override;
  torch::Tensor range(int64_t begin, int64_t end) const override;

 private:
  torch::Tensor image_;
  PatchGrid grid_;
};

}  // namespace tessera::data
