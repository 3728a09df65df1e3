// Iterative Patch Selection: a no-gradient pass streams all N patches through the encoder in chunks
// of I and keeps the M highest-scoring ones; only those are encoded again with gradients and
// aggregated. Peak memory depends on M and I, not N.
#pragma once
#include <functional>
#include <vector>

#include "tessera/data/patches.h"
#include "tessera/methods/method.h"
#include "tessera/models/ips_net.h"

namespace tessera {
struct Config;
}

namespace tessera::methods {

struct IpsOptions {
  int64_t M = 100;
  int64_t I = 100;
  std::string shuffle = "none";   // none | batch | instance
  std::string loading = "eager";  // eager | eager_sequential | lazy
  int64_t seq_batch = 1;
  int64_t patch = 50, stride = 50;
  int64_t seed = 0;  // seeds evaluation-time shuffling so evaluation is deterministic
  // Winners encoded with gradients at a time (0: all at once). The step encodes the winners without a
  // graph, back-propagates the aggregator's loss to their embeddings, then re-encodes them chunk by
  // chunk with gradients: peak activations of one chunk, gradients equal to the unchunked pass.
  int64_t grad_chunk = 0;
};

// Selected patches ready for the gradient pass.
struct Selection {
  torch::Tensor patches;  // (B, L, ...) winners on the compute device; undefined when streamed
  // Feature bags: the winners stay on disk and are re-read chunk by chunk (see Ips::embed).
  std::vector<data::PatchBagPtr> streamed;
  torch::Tensor idx;      // (B, L) int64 patch indices, in descending score order
  torch::Tensor mask;     // (B, L) bool, true = padding (images with fewer than L patches); undefined if none
};

// Called with each candidate set's patch indices (G, L) and scores (G, L) during selection.
using ScoreObserver = std::function<void(const torch::Tensor& idx, const torch::Tensor& scores)>;

// The registry's entry for IPS.
MethodInfo ips_method();

class Ips final : public Method {
 public:
  Ips(models::IpsNet net, IpsOptions options, torch::Device device);
  static std::unique_ptr<Ips> from_config(const Config& config, const std::vector<Task>& tasks);

  std::string name() const override { return "ips"; }
  torch::nn::Module& module() override { return *net_; }
  std::vector<Task> tasks() const override { return net_->options().tasks; }
  using Method::train_step;
  StepResult train_step(data::Batch batch, StepContext& context) override;
  void forward_for_statistics(const data::Batch& batch) override;
  TaskTensors predict(const data::Batch& batch) override;
  torch::nn::Module& encoder() override;
  // The M selected patches of image 0 with their final attention.
  PatchScores patch_scores(const data::Batch& batch) override;
  BagScores bag_scores(const data::PatchBagPtr& bag) override;  // attention of every patch (score_all); the top M selected

  // The pieces, for users composing their own loops and for slide streaming.
  std::vector<data::PatchBagPtr> bags(const data::Batch& batch) const;  // host-side, lazy
  // shuffle_gen: generator for patch-order shuffling (undefined: the global one).
  Selection select(const std::vector<data::PatchBagPtr>& bags, const ScoreObserver& observer = {},
                   c10::optional<at::Generator> shuffle_gen = c10::nullopt);
  TaskTensors forward(const Selection& selection);  // gradient pass in the module's current mode
  // The training step after selection: gradient pass (in chunks when grad_chunk > 0), backward and the
  // optimiser step through the context. train_step = select + train_on.
  StepResult train_on(const Selection& selection, const TaskTensors& labels, StepContext& context);
  // Attention scores of the final aggregation over the selected patches (B, L), eval mode.
  torch::Tensor final_scores(const Selection& selection);
  // Attention of the aggregator over all N patches of one bag at once (N), eval mode: the heatmap
  // score. Streams the bag in chunks of I; memory is O(I) plus N floats per head.
  torch::Tensor score_all(const data::PatchBagPtr& bag);

  models::IpsNet net() const { return net_; }
  const IpsOptions& options() const { return options_; }
  torch::Device device() const { return device_; }

 private:
  using Encoder = std::function<torch::Tensor(const torch::Tensor&)>;
  torch::Tensor select_group(const std::vector<data::PatchBagPtr>& group, const Encoder& encoder,
                             const ScoreObserver& observer, c10::optional<at::Generator> gen);
  torch::Tensor embed(const Selection& selection);
  // The step's gradient pass in chunks of options_.grad_chunk (see IpsOptions::grad_chunk).
  TaskTensors chunked_step(const Selection& selection, const TaskTensors& labels, StepContext& context, torch::Tensor& loss);
  // Encoder rows (K, ...) -> (K, D): the backbone chunk by chunk, the head on all rows, current grad mode.
  torch::Tensor encode_in_chunks(const torch::Tensor& rows, int64_t chunk);
  torch::Tensor backbone_in_chunks(const torch::Tensor& rows, int64_t chunk);
  // Streamed selections: the projector's first layer applied chunk by chunk, and its gradient
  // completed after backward by re-reading the winners.
  torch::Tensor streamed_first_layer(const Selection& selection);
  void accumulate_streamed_grad(const Selection& selection);

  torch::Tensor streamed_y_;  // leaf holding the first layer's output during a training step

  models::IpsNet net_;
  IpsOptions options_;
  torch::Device device_;
};

}  // namespace tessera::methods
