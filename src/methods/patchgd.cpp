#include "tessera/methods/patchgd.h"

#include <torch/torch.h>

#include <cmath>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/core/runtime.h"
#include "tessera/methods/step_context.h"
#include "tessera/models/encoder_registry.h"

namespace tessera::methods {

models::PatchGdHeadOptions patchgd_head_options(const Config& c, int64_t classes) {
  const auto grid = data::PatchGrid::fit(c.data.height, c.data.width, c.data.patch, c.data.patch);
  models::PatchGdHeadOptions h;
  h.latent = c.patchgd.latent;
  h.rows = grid.rows;
  h.cols = grid.cols;
  h.classes = classes;
  models::apply_head_variant(h, c.patchgd.head);
  h.norm = c.patchgd.head_norm;
  h.dropout = c.patchgd.head_dropout;
  return h;
}

int64_t patchgd_head_min_batch(const Config& c) {
  models::PatchGdHeadOptions h;
  models::apply_head_variant(h, c.patchgd.head);
  h.norm = c.patchgd.head_norm;
  return h.has_batch_norm() ? 2 : 1;
}

models::PatchGdNet make_patchgd_net(const Config& c, const std::vector<Task>& tasks, bool with_head) {
  TESSERA_CHECK(tasks.size() == 1 && tasks[0].activation == "softmax", c.train.method,
                " trains one softmax task; the data set '", c.data.dataset, "' has ", tasks.size(), " tasks");
  models::BackboneOptions b;
  b.arch = c.model.encoder;
  b.args = models::model_encoder_args(c.model);
  b.in_channels = c.model.in_channels;
  b.stages = c.model.stages;
  b.width = c.model.width;
  b.width_mult = c.model.width_mult;
  b.out_features = with_head ? c.patchgd.latent : tasks[0].outputs;
  b.freeze_bn = c.model.freeze_bn;
  auto backbone = models::make_backbone(b);
  models::PatchGdHead head{nullptr};
  if (with_head) head = models::PatchGdHead(patchgd_head_options(c, tasks[0].outputs));
  return models::PatchGdNet(backbone, head);
}

PatchGd::PatchGd(models::PatchGdNet net, std::vector<Task> tasks, PatchGdOptions options, torch::Device device)
    : net_(std::move(net)), tasks_(std::move(tasks)), options_(std::move(options)), device_(device) {
  TESSERA_CHECK(net_->head, "PatchGD needs a head on the latent grid");
  TESSERA_CHECK(options_.q > 0 && options_.q <= 1, "PatchGD sampling fraction q must be in (0, 1], got ", options_.q);
  TESSERA_CHECK(options_.patch > 0, "PatchGD patch size must be positive");
  TESSERA_CHECK(options_.fill_mode == "train" || options_.fill_mode == "eval", "unknown PatchGD fill mode '",
                options_.fill_mode, "'");
  net_->to(device_);
  net_->backbone->use_channels_last();
}

std::unique_ptr<PatchGd> PatchGd::from_config(const Config& c, const std::vector<Task>& tasks) {
  PatchGdOptions o;
  o.patch = c.data.patch;
  o.q = c.patchgd.q;
  o.zeta = c.patchgd.zeta;
  o.eps = c.patchgd.eps;
  o.fill_mode = c.patchgd.fill_mode;
  o.fill_chunk = c.patchgd.fill_chunk;
  return std::make_unique<PatchGd>(make_patchgd_net(c, tasks, true), tasks, o, runtime::device_from_name(c.train.device));
}

data::PatchGrid PatchGd::grid(const torch::Tensor& images) const {
  TESSERA_CHECK(images.dim() == 4, "PatchGD expects a batch of images (B, C, H, W), got ", images.sizes());
  const auto g = data::PatchGrid::fit(images.size(2), images.size(3), options_.patch, options_.patch);
  const auto& h = net_->head->options();
  TESSERA_CHECK(g.rows == h.rows && g.cols == h.cols, "images of ", images.size(2), "x", images.size(3), " give a ",
                g.rows, "x", g.cols, " patch grid but the head was built for ", h.rows, "x", h.cols,
                "; set data.height/width to the training image size");
  return g;
}

PatchGdPlan PatchGd::plan(const data::PatchGrid& grid) const {
  PatchGdPlan p;
  p.n = grid.count();
  p.k = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(static_cast<double>(p.n) * options_.q - 1e-9)));
  p.zeta = options_.zeta > 0 ? options_.zeta : static_cast<int64_t>(std::ceil(1.0 / options_.q - 1e-9));
  p.eps = options_.eps > 0 ? options_.eps : p.zeta;
  p.iterations = std::min(p.zeta, (p.n + p.k - 1) / p.k);
  return p;
}

torch::Tensor PatchGd::fill(const torch::Tensor& images, const data::PatchGrid& grid, const torch::Tensor& order,
                            int64_t chunk) {
  torch::NoGradGuard no_grad;
  const int64_t B = images.size(0), s = net_->head->options().latent, n = order.size(0);
  auto z = torch::zeros({B, s, grid.count()}, images.options());
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const auto idx = order.slice(0, begin, std::min(n, begin + chunk));
    const auto patches = data::extract_patches_batch(images, grid, idx);  // (B, k, C, p, p)
    const auto feats = net_->backbone->forward(patches.flatten(0, 1)).view({B, idx.size(0), s});
    z.index_copy_(2, idx, feats.transpose(1, 2).to(z.scalar_type()));  // the grid stays fp32 under autocast
  }
  return z.view({B, s, grid.rows, grid.cols});
}

torch::Tensor PatchGd::fill_in_order(const torch::Tensor& images, int64_t chunk) {
  const auto g = grid(images);
  const auto p = plan(g);
  return fill(images, g, torch::arange(p.n, torch::TensorOptions().dtype(torch::kLong).device(device_)),
              chunk > 0 ? chunk : p.k);
}

torch::Tensor PatchGd::reencode(torch::Tensor& z, const torch::Tensor& images, const data::PatchGrid& grid,
                                const torch::Tensor& idx) {
  const int64_t B = images.size(0), s = z.size(1);
  const auto patches = data::extract_patches_batch(images, grid, idx);
  const auto feats =
      net_->backbone->forward(patches.flatten(0, 1)).view({B, idx.size(0), s}).transpose(1, 2).to(z.scalar_type());
  const auto flat = z.view({B, s, grid.count()});
  // Out of place: the result depends on the backbone only through the k written positions.
  auto with_chunk = flat.detach().index_copy(2, idx, feats);
  {
    torch::NoGradGuard no_grad;
    flat.index_copy_(2, idx, feats.detach());  // later iterations see these values as constants
  }
  return with_chunk.view_as(z);
}

StepResult PatchGd::train_step(data::Batch batch, StepContext& context) {
  const auto precision_scope = autocast();
  const auto images = batch.images.to(device_);
  batch.images = torch::Tensor();
  const auto& task = tasks_[0];
  const auto labels = batch.labels.at(task.name).to(device_);
  const auto g = grid(images);
  const auto p = plan(g);
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(device_);

  net_->train();
  if (options_.fill_mode == "eval") net_->backbone->eval();
  auto z = fill(images, g, torch::randperm(p.n, long_opts), options_.fill_chunk > 0 ? options_.fill_chunk : p.k);
  net_->backbone->train();

  const auto order = torch::randperm(p.n, long_opts);
  StepResult result;
  torch::Tensor logits;
  bool pending = false;
  context.zero_grad();
  for (int64_t it = 0; it < p.iterations; ++it) {
    const auto idx = order.slice(0, it * p.k, std::min(p.n, (it + 1) * p.k));
    logits = net_->head->forward(reencode(z, images, g, idx));
    const auto loss = checked_cross_entropy(logits, labels, "PatchGD");
    const bool step_follows = (it + 1) % p.eps == 0 || it + 1 == p.iterations;
    if (step_follows) {
      context.backward(loss / static_cast<double>(p.eps));
    } else {
      context.accumulate(loss / static_cast<double>(p.eps));
    }
    result.loss = loss.item<double>();
    pending = true;
    if ((it + 1) % p.eps == 0) {
      context.step();
      pending = false;
      // Zeroed here rather than after the step so the last gradients stay readable.
      if (it + 1 < p.iterations) context.zero_grad();
    }
  }
  // The reference never steps when the chunks run out before eps iterations; we do.
  if (pending) context.step();
  result.outputs[task.name] = torch::softmax(logits.detach(), 1, torch::kFloat).to(torch::kCPU);
  return result;
}

void PatchGd::forward_for_statistics(const data::Batch& batch) {
  const auto precision_scope = autocast();
  torch::NoGradGuard no_grad;
  net_->train();
  // Chunks of k positions of every image, as the training step re-encodes them (whatever the fill mode).
  net_->head->forward(fill_in_order(batch.images.to(device_), 0));
}

TaskTensors PatchGd::predict(const data::Batch& batch) {
  const auto precision_scope = autocast();
  c10::InferenceMode guard;
  net_->eval();
  const auto z = fill_in_order(batch.images.to(device_), options_.fill_chunk);
  return {{tasks_[0].name, torch::softmax(net_->head->forward(z), 1, torch::kFloat).to(torch::kCPU)}};
}

Method::PatchScores PatchGd::patch_scores(const data::Batch& batch) {
  const auto precision_scope = autocast();
  c10::InferenceMode guard;
  net_->eval();
  const auto image = batch.images.slice(0, 0, 1).to(device_);
  const auto g = grid(image);
  const auto p = plan(g);
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(device_);
  const auto z = fill(image, g, torch::arange(p.n, long_opts), options_.fill_chunk > 0 ? options_.fill_chunk : p.k);
  const auto all_probs = torch::softmax(net_->head->forward(z), 1, torch::kFloat);
  const auto probs = all_probs[0];
  const int64_t predicted = probs.argmax().item<int64_t>();
  const auto flat = z.flatten(2);                       // (1, s, n)
  const auto baseline = flat.mean(2, /*keepdim=*/true);  // the image's mean column
  std::vector<torch::Tensor> drops;
  constexpr int64_t kChunk = 64;  // occluded copies per head pass
  for (int64_t begin = 0; begin < p.n; begin += kChunk) {
    const int64_t k = std::min(kChunk, p.n - begin);
    auto occluded = flat.expand({k, -1, -1}).clone();
    const auto cells = torch::arange(begin, begin + k, long_opts);
    occluded.index_put_({torch::arange(k, long_opts), torch::indexing::Slice(), cells},
                        baseline.squeeze(2).expand({k, -1}));
    const auto p_occluded = torch::softmax(net_->head->forward(occluded.view({k, z.size(1), g.rows, g.cols})), 1, torch::kFloat);
    drops.push_back(probs[predicted] - p_occluded.select(1, predicted));
  }
  const auto cell = torch::arange(p.n, torch::kLong);
  PatchScores out;
  out.outputs[tasks_[0].name] = all_probs.to(torch::kCPU);
  out.rows = torch::div(cell, g.cols, "floor") * g.stride_h;
  out.cols = cell.remainder(g.cols) * g.stride_w;
  out.scores = torch::cat(drops).to(torch::kCPU);
  out.patch_h = g.patch_h;
  out.patch_w = g.patch_w;
  out.outline = false;
  return out;
}

MethodInfo patchgd_method() {
  MethodInfo m;
  m.name = "patchgd";
  m.config_sections = {"patchgd"};
  m.summary = "Patch Gradient Descent: a latent grid of patch vectors, re-encoded in sampled chunks";
  m.inputs = {"image"};
  m.single_softmax_task = true;
  m.min_batch_size = patchgd_head_min_batch;
  m.memory_knobs = "train.batch_size, patchgd.q (sampling fraction) or data.patch";
  m.picture = "patch grid";
  m.plans_sampling_fraction = true;
  m.make = [](const Config& c, const std::vector<Task>& tasks) -> std::unique_ptr<Method> {
    return PatchGd::from_config(c, tasks);
  };
  m.validate = [](const Config& c) {
    TESSERA_CHECK(c.model.encoder != "projector", "PatchGD encodes image patches; model.encoder projector is for feature bags");
  };
  return m;
}

}  // namespace tessera::methods
