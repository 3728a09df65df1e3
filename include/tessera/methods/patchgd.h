// Patch Gradient Descent: a latent grid Z (B, s, rows, cols) holds one backbone vector per patch. A
// no-gradient fill pass encodes every patch; then each inner iteration re-encodes a sampled chunk of
// k = ceil(N q) patches with gradients, writes them into (a detached) Z, classifies Z with the head
// and back-propagates, so the backbone only ever holds k * B patches' activations.
#pragma once
#include "tessera/data/patches.h"
#include "tessera/methods/method.h"
#include "tessera/models/patchgd_net.h"

namespace tessera {
struct Config;
}

namespace tessera::methods {

struct PatchGdOptions {
  int64_t patch = 128;
  double q = 0.125;                  // sampling fraction per inner iteration
  int64_t zeta = 0;                  // inner iterations; 0: ceil(1 / q)
  int64_t eps = 0;                   // iterations per optimiser step; 0: zeta (one step per batch)
  std::string fill_mode = "train";  // train (reference: batch statistics) | eval
  int64_t fill_chunk = 0;            // positions per no-gradient chunk; 0: k
};

// Sizes of one training step on a grid of n patches.
struct PatchGdPlan {
  int64_t n = 0, k = 0, zeta = 0, eps = 0;
  int64_t iterations = 0;  // min(zeta, chunks of k): the last chunk may come before zeta
};

// The registry's entry for PatchGD.
MethodInfo patchgd_method();

class PatchGd final : public Method {
 public:
  PatchGd(models::PatchGdNet net, std::vector<Task> tasks, PatchGdOptions options, torch::Device device);
  static std::unique_ptr<PatchGd> from_config(const Config& config, const std::vector<Task>& tasks);

  std::string name() const override { return "patchgd"; }
  torch::nn::Module& module() override { return *net_; }
  std::vector<Task> tasks() const override { return tasks_; }
  using Method::train_step;
  StepResult train_step(data::Batch batch, StepContext& context) override;
  void forward_for_statistics(const data::Batch& batch) override;
  TaskTensors predict(const data::Batch& batch) override;
  torch::nn::Module& encoder() override { return *net_->backbone; }
  // Occlusion over the latent grid for image 0: each patch's score is how much the predicted class's
  // probability drops when its Z column is replaced by the mean column of the image (no gradients;
  // one head pass per patch, batched).
  PatchScores patch_scores(const data::Batch& batch) override;

  // The pieces, for tests and users composing their own loops.
  data::PatchGrid grid(const torch::Tensor& images) const;
  PatchGdPlan plan(const data::PatchGrid& grid) const;
  // Z (B, s, rows, cols) with every position in `order` encoded in the backbone's current mode, chunk
  // positions at a time, without gradients.
  torch::Tensor fill(const torch::Tensor& images, const data::PatchGrid& grid, const torch::Tensor& order, int64_t chunk);
  // fill() of every position in grid order; chunk 0: k.
  torch::Tensor fill_in_order(const torch::Tensor& images, int64_t chunk);
  // Encodes the patches at positions idx with gradients and returns Z with them written in (a new
  // tensor, differentiable only through those positions); z itself receives the detached vectors.
  torch::Tensor reencode(torch::Tensor& z, const torch::Tensor& images, const data::PatchGrid& grid,
                         const torch::Tensor& idx);
  models::PatchGdNet net() const { return net_; }
  const PatchGdOptions& options() const { return options_; }

 private:
  models::PatchGdNet net_;
  std::vector<Task> tasks_;
  PatchGdOptions options_;
  torch::Device device_;
};

// The head of config.patchgd on the patch grid of config.data, for `classes` outputs.
models::PatchGdHeadOptions patchgd_head_options(const Config& config, int64_t classes);

// Smallest training batch with config's head (PatchGD and GD-extended): a head with BatchNorm may
// see 1x1 maps, which need two samples; the pooling heads take one.
int64_t patchgd_head_min_batch(const Config& config);

// The PatchGD network of config.model for a data set's single softmax task.
models::PatchGdNet make_patchgd_net(const Config& config, const std::vector<Task>& tasks, bool with_head);

}  // namespace tessera::methods
