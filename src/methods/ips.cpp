#include "tessera/methods/ips.h"

#include <torch/torch.h>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/core/runtime.h"
#include "tessera/methods/step_context.h"
#include "tessera/models/encoder_registry.h"

#include <future>

namespace tessera::methods {
namespace {

TaskTensors to_cpu_detached(const TaskTensors& t) {
  TaskTensors out;
  for (const auto& [k, v] : t) out[k] = v.detach().to(torch::kCPU);
  return out;
}

}  // namespace

Ips::Ips(models::IpsNet net, IpsOptions options, torch::Device device)
    : net_(std::move(net)), options_(std::move(options)), device_(device) {
  TESSERA_CHECK(options_.M > 0 && options_.I > 0, "IPS needs M > 0 and I > 0, got M=", options_.M, " I=", options_.I);
  TESSERA_CHECK(options_.shuffle == "none" || options_.shuffle == "batch" || options_.shuffle == "instance",
                "unknown IPS shuffle '", options_.shuffle, "'");
  TESSERA_CHECK(options_.grad_chunk >= 0, "ips.grad_chunk must be >= 0, got ", options_.grad_chunk);
  TESSERA_CHECK(options_.loading == "eager" || options_.loading == "eager_sequential" || options_.loading == "lazy",
                "unknown IPS loading '", options_.loading, "'");
  net_->to(device_);
}

std::unique_ptr<Ips> Ips::from_config(const Config& c, const std::vector<Task>& tasks) {
  IpsOptions o;
  o.M = c.ips.M;
  o.I = c.ips.I;
  o.shuffle = c.ips.shuffle;
  o.loading = c.ips.loading;
  o.seq_batch = c.ips.seq_batch;
  o.grad_chunk = c.ips.grad_chunk;
  o.patch = c.data.patch;
  o.stride = c.data.stride;
  o.seed = c.train.seed;
  models::IpsNet net(models::ips_net_options(c.model, tasks));
  return std::make_unique<Ips>(net, o, runtime::device_from_name(c.train.device));
}

std::vector<data::PatchBagPtr> Ips::bags(const data::Batch& batch) const {
  if (!batch.bags.empty()) return batch.bags;
  TESSERA_CHECK(!net_->options().features, "this IPS network encodes feature rows (model.encoder projector); give it feature bags");
  TESSERA_CHECK(batch.images.dim() == 4, "IPS expects a batch of images (B, C, H, W), got ", batch.images.sizes());
  const int64_t channels = net_->options().encoder.in_channels;
  TESSERA_CHECK(batch.images.size(1) == channels, "images have ", batch.images.size(1),
                " channels but the encoder expects ", channels, "; set model.in_channels");
  const auto grid = data::PatchGrid::fit(batch.images.size(2), batch.images.size(3), options_.patch, options_.stride);
  std::vector<data::PatchBagPtr> out;
  for (int64_t b = 0; b < batch.size(); ++b) out.push_back(std::make_shared<data::ImageGridBag>(batch.images[b], grid));
  return out;
}

torch::Tensor Ips::select_group(const std::vector<data::PatchBagPtr>& group, const Encoder& encoder,
                                const ScoreObserver& observer, c10::optional<at::Generator> gen) {
  const int64_t G = static_cast<int64_t>(group.size()), N = group.front()->size();
  const int64_t M = options_.M, I = options_.I, D = net_->dim();
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong);
  if (M >= N) return torch::arange(N, long_opts).unsqueeze(0).expand({G, N}).contiguous();

  // Scan order per image; shuffling breaks ties between equal scores (e.g. blank patches) at random.
  torch::Tensor order;
  if (options_.shuffle == "batch") {
    order = torch::randperm(N, gen, long_opts).unsqueeze(0).expand({G, N}).contiguous();
  } else if (options_.shuffle == "instance") {
    std::vector<torch::Tensor> perms;
    for (int64_t g = 0; g < G; ++g) perms.push_back(torch::randperm(N, gen, long_opts));
    order = torch::stack(perms);
  }
  const auto fetch = [&](int64_t begin, int64_t end) {
    std::vector<torch::Tensor> chunks;
    for (int64_t g = 0; g < G; ++g) {
      chunks.push_back(order.defined() ? group[g]->gather(order[g].slice(0, begin, end)) : group[g]->range(begin, end));
    }
    // One image: no cat, so a prefetched chunk is never held twice.
    const auto joined = chunks.size() == 1 ? chunks.front() : torch::cat(chunks);
    return joined.to(device_, /*non_blocking=*/true);  // (G*k, C, h, w)
  };
  const auto scan_idx = [&](int64_t begin, int64_t end) {
    return order.defined() ? order.slice(1, begin, end).to(device_)
                           : torch::arange(begin, end, long_opts.device(device_)).unsqueeze(0).expand({G, end - begin});
  };

  // Bags read from files (slides, feature bags) read the next chunk on a second thread while the
  // current one is encoded; in-memory bags cut chunks on demand, on this thread.
  const auto policy = group.front()->on_disk() ? std::launch::async : std::launch::deferred;
  const auto start = [&](int64_t begin, int64_t end) { return std::async(policy, fetch, begin, end); };
  auto pending = start(0, M);
  auto first = pending.get();
  if (M < N) pending = start(M, std::min(M + I, N));
  // The first M fill the memory, encoded I at a time like every later chunk (the encoder is per-patch in
  // eval mode), so the selection's activations are I patches' whatever M is.
  torch::Tensor mem_emb;
  if (G * M <= I) {
    mem_emb = encoder(first).view({G, M, D});
  } else {
    std::vector<torch::Tensor> parts;
    for (int64_t begin = 0; begin < G * M; begin += I) parts.push_back(encoder(first.slice(0, begin, std::min(begin + I, G * M))));
    mem_emb = torch::cat(parts).view({G, M, D});
  }
  first = torch::Tensor();
  auto mem_idx = scan_idx(0, M);
  for (int64_t begin = M; begin < N; begin += I) {
    const int64_t end = std::min(begin + I, N);
    auto chunk = pending.get();
    if (end < N) pending = start(end, std::min(end + I, N));
    const auto iter_emb = encoder(chunk).view({G, end - begin, D});
    chunk = torch::Tensor();
    const auto all_emb = torch::cat({mem_emb, iter_emb}, 1);
    const auto all_idx = torch::cat({mem_idx, scan_idx(begin, end)}, 1);
    const auto pos = net_->positions(all_idx);
    const auto scores = net_->aggregator->scores(pos.defined() ? all_emb + pos : all_emb);
    if (observer) observer(all_idx, scores);
    const auto top = std::get<1>(torch::topk(scores, M, -1));
    mem_emb = all_emb.gather(1, top.unsqueeze(-1).expand({G, M, D}));
    mem_idx = all_idx.gather(1, top);
  }
  return mem_idx;
}

Selection Ips::select(const std::vector<data::PatchBagPtr>& bags, const ScoreObserver& observer,
                      c10::optional<at::Generator> shuffle_gen) {
  const auto precision_scope = autocast();
  TESSERA_CHECK(!bags.empty(), "IPS selection needs at least one image");
  for (size_t b = 0; b < bags.size(); ++b) {
    TESSERA_CHECK(bags[b]->size() > 0, "image ", b, " of the batch has zero patches; check the patch size and the image");
  }
  const int64_t B = static_cast<int64_t>(bags.size());
  // Feature rows are wide (2048 floats each): lazily loaded bags keep their winners on disk.
  const bool streams = net_->options().features && bags.front()->on_disk();
  std::vector<torch::Tensor> winners(B), winner_idx(B);
  {
    c10::InferenceMode inference;
    // BatchNorm folded into the convolutions = eval-mode encoder, without touching the module's mode.
    const auto encoder = net_->frozen_encoder();
    // eager: every patch of the batch on the device first; eager_sequential: seq_batch images at a
    // time; lazy: patches stay on the host and only each chunk moves.
    const int64_t group_limit = options_.loading == "eager_sequential" ? options_.seq_batch : B;
    const auto on_device = [&](const data::PatchBagPtr& bag) -> data::PatchBagPtr {
      if (options_.loading == "lazy" || bag->on_disk()) return bag;
      return std::make_shared<data::TensorBag>(bag->range(0, bag->size()).to(device_));
    };
    std::vector<data::PatchBagPtr> staged(B);
    if (options_.loading == "eager") {
      for (int64_t b = 0; b < B; ++b) staged[b] = on_device(bags[b]);
    }
    for (int64_t start = 0; start < B;) {
      // A group: consecutive images with the same patch count, at most group_limit of them.
      int64_t end = start + 1;
      while (end < B && end - start < group_limit && bags[end]->size() == bags[start]->size()) ++end;
      std::vector<data::PatchBagPtr> group;
      for (int64_t b = start; b < end; ++b) group.push_back(staged[b] ? staged[b] : on_device(bags[b]));
      const auto idx = select_group(group, encoder, observer, shuffle_gen).to(torch::kCPU);
      for (int64_t b = start; b < end; ++b) {
        winner_idx[b] = idx[b - start];
        if (!streams) winners[b] = group[b - start]->gather(winner_idx[b]).to(device_);
      }
      start = end;
    }
  }
  // Back in normal mode: clones turn inference tensors into ordinary ones usable by autograd.
  int64_t L = 0;
  for (const auto& w : winner_idx) L = std::max(L, w.size(0));
  Selection s;
  if (streams) {
    s.streamed = bags;
  } else {
    auto shape = winners.front().sizes().vec();
    shape.insert(shape.begin(), B);
    shape[1] = L;
    s.patches = torch::zeros(shape, winners.front().options());
  }
  s.idx = torch::zeros({B, L}, torch::kLong);
  bool padded = false;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = winner_idx[b].size(0);
    if (!streams) s.patches[b].slice(0, 0, n).copy_(winners[b]);
    s.idx[b].slice(0, 0, n).copy_(winner_idx[b]);
    padded |= n < L;
  }
  if (padded) {
    s.mask = torch::ones({B, L}, torch::kBool);
    for (int64_t b = 0; b < B; ++b) s.mask[b].slice(0, 0, winner_idx[b].size(0)).fill_(false);
    s.mask = s.mask.to(device_);
  }
  s.idx = s.idx.to(device_);
  return s;
}

namespace {
// Calls f(b, begin, end, rows) for the winners of each image in chunks of at most I, re-read from the
// image's bag (padding entries skipped).
template <typename F>
void for_each_winner_chunk(const Selection& s, int64_t I, torch::Device device, F&& f) {
  const int64_t B = s.idx.size(0), L = s.idx.size(1);
  const auto idx = s.idx.to(torch::kCPU);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = s.mask.defined() ? L - s.mask[b].sum().item<int64_t>() : L;
    for (int64_t begin = 0; begin < n; begin += I) {
      const int64_t end = std::min(begin + I, n);
      f(b, begin, end, s.streamed[b]->gather(idx[b].slice(0, begin, end)).to(device));
    }
  }
}
}  // namespace

torch::Tensor Ips::streamed_first_layer(const Selection& s) {
  auto y = torch::zeros({s.idx.size(0), s.idx.size(1), net_->dim()}, torch::TensorOptions().device(device_));
  torch::NoGradGuard no_grad;
  for_each_winner_chunk(s, options_.I, device_, [&](int64_t b, int64_t begin, int64_t end, const torch::Tensor& x) {
    y[b].slice(0, begin, end).copy_(net_->projector->first(x));
  });
  return y;
}

void Ips::accumulate_streamed_grad(const Selection& s) {
  TESSERA_CHECK(streamed_y_.defined() && streamed_y_.grad().defined(), "streamed IPS step lost its first-layer gradient");
  const auto dy = streamed_y_.grad();
  for_each_winner_chunk(s, options_.I, device_, [&](int64_t b, int64_t begin, int64_t end, const torch::Tensor& x) {
    net_->projector->accumulate_first_grad(x, dy[b].slice(0, begin, end));
  });
  streamed_y_ = torch::Tensor();
}

torch::Tensor Ips::embed(const Selection& s) {
  const int64_t B = s.idx.size(0), L = s.idx.size(1), D = net_->dim();
  torch::Tensor emb;
  if (!s.streamed.empty()) {
    auto y = streamed_first_layer(s);
    if (torch::GradMode::is_enabled()) {
      y.requires_grad_(true);
      streamed_y_ = y;
    }
    if (!s.mask.defined()) {
      emb = net_->projector->rest(y.flatten(0, 1)).view({B, L, D});
    } else {
      const auto valid = s.mask.logical_not();
      const auto packed = net_->projector->rest(y.index({valid}));
      emb = torch::zeros({B, L, D}, packed.options()).index_put({valid}, packed);
    }
  } else {
    // Without gradients a chunked configuration encodes in chunks too: evaluation and precise-BN passes
    // then hold one chunk's activations and see the BatchNorm batches training saw.
    const int64_t chunk = torch::GradMode::is_enabled() ? 0 : options_.grad_chunk;
    if (!s.mask.defined()) {
      emb = encode_in_chunks(s.patches.flatten(0, 1), chunk).view({B, L, D});
    } else {
      // Only real patches go through the encoder, so padding never enters BatchNorm statistics.
      const auto valid = s.mask.logical_not();
      const auto packed = encode_in_chunks(s.patches.index({valid}), chunk);
      emb = torch::zeros({B, L, D}, packed.options()).index_put({valid}, packed);
    }
  }
  const auto pos = net_->positions(s.idx);
  return pos.defined() ? emb + pos : emb;
}

torch::Tensor Ips::encode_in_chunks(const torch::Tensor& rows, int64_t chunk) {
  return net_->head(backbone_in_chunks(rows, chunk));
}

torch::Tensor Ips::backbone_in_chunks(const torch::Tensor& rows, int64_t chunk) {
  const int64_t K = rows.size(0);
  if (chunk <= 0 || chunk >= K) return net_->backbone(rows);
  std::vector<torch::Tensor> parts;
  for (int64_t begin = 0; begin < K; begin += chunk) parts.push_back(net_->backbone(rows.slice(0, begin, std::min(begin + chunk, K))));
  return torch::cat(parts);
}

TaskTensors Ips::chunked_step(const Selection& s, const TaskTensors& labels, StepContext& context, torch::Tensor& loss) {
  const int64_t B = s.idx.size(0), L = s.idx.size(1), D = net_->dim(), chunk = options_.grad_chunk;
  // Only real patches are encoded (padding never enters BatchNorm statistics), in the same chunks in
  // both passes, so each chunk's embeddings are those its gradients are taken through.
  const auto valid = s.mask.defined() ? s.mask.logical_not() : torch::Tensor();
  const auto rows = valid.defined() ? s.patches.index({valid}) : s.patches.flatten(0, 1);
  const int64_t K = rows.size(0);
  torch::Tensor leaf;
  {
    torch::NoGradGuard no_grad;
    // Training mode as in the gradient pass; BatchNorm running statistics are updated once per step,
    // by the gradient pass, so they are restored after this one.
    std::vector<torch::Tensor> buffers;
    for (const auto& b : net_->buffers()) buffers.push_back(b.clone());
    leaf = backbone_in_chunks(rows, chunk);
    size_t i = 0;
    for (auto& b : net_->buffers()) b.copy_(buffers[i++]);
  }
  leaf = leaf.detach().requires_grad_(true);
  // The head (a projector's BatchNorm) runs on all winners at once, as in the unchunked pass.
  const auto packed = net_->head(leaf);
  const auto emb = valid.defined() ? torch::zeros({B, L, D}, packed.options()).index_put({valid}, packed) : packed.view({B, L, D});
  const auto pos = net_->positions(s.idx);
  const auto outputs = net_->aggregate(pos.defined() ? emb + pos : emb, s.mask);
  loss = multitask_loss(outputs, labels, tasks());
  check_finite_loss(loss, "IPS");
  // The aggregator's gradients are final here; the encoder's arrive chunk by chunk, and data-parallel
  // reduction waits for the last chunk.
  context.backward(loss, StepContext::Gradients::pending);
  TESSERA_ASSERT(leaf.grad().defined(), "the IPS loss does not depend on the winners' embeddings");
  const auto grad = leaf.grad();
  for (int64_t begin = 0; begin < K; begin += chunk) {
    const int64_t end = std::min(begin + chunk, K);
    const auto out = net_->backbone(rows.slice(0, begin, end));
    if (!out.requires_grad()) break;  // feature rows: nothing before the head to train
    context.backward_outputs({out}, {grad.slice(0, begin, end).to(out.scalar_type())});
  }
  context.gradients_complete();
  return outputs;
}

TaskTensors Ips::forward(const Selection& s) {
  const auto precision_scope = autocast();
  return net_->aggregate(embed(s), s.mask);
}

torch::Tensor Ips::final_scores(const Selection& s) {
  const auto precision_scope = autocast();
  c10::InferenceMode inference;
  const bool was_training = net_->is_training();
  net_->eval();
  auto scores = net_->aggregator->scores(embed(s), s.mask);
  net_->train(was_training);
  return scores.to(torch::kCPU);
}

torch::Tensor Ips::score_all(const data::PatchBagPtr& bag) {
  const auto precision_scope = autocast();
  c10::InferenceMode inference;
  const auto encoder = net_->frozen_encoder();
  const int64_t N = bag->size(), I = options_.I;
  TESSERA_CHECK(N > 0, "cannot score a bag with zero patches");
  const auto read = [&](int64_t begin, int64_t end) { return std::async(std::launch::async, [=] { return bag->range(begin, end); }); };
  auto pending = read(0, std::min(I, N));
  std::vector<torch::Tensor> parts;
  for (int64_t begin = 0; begin < N; begin += I) {
    const int64_t end = std::min(begin + I, N);
    const auto x = pending.get().to(device_);
    if (end < N) pending = read(end, std::min(end + I, N));
    auto emb = encoder(x).unsqueeze(0);
    const auto pos = net_->positions(torch::arange(begin, end, torch::TensorOptions().dtype(torch::kLong).device(device_)).unsqueeze(0));
    if (pos.defined()) emb = emb + pos;
    parts.push_back(net_->aggregator->logits(emb).squeeze(0).flatten(0, 1).to(torch::kCPU));  // (H*T, k)
  }
  return torch::softmax(torch::cat(parts, 1), 1, torch::kFloat).mean(0);
}

Method::BagScores Ips::bag_scores(const data::PatchBagPtr& bag) {
  data::Batch batch;
  batch.bags = {bag};
  batch.indices = {0};
  BagScores out;
  out.outputs = predict(batch);
  out.scores = score_all(bag);
  const auto top = std::get<1>(out.scores.topk(std::min<int64_t>(options_.M, out.scores.size(0))));
  out.selected = torch::zeros({out.scores.size(0)}, torch::kBool).index_fill_(0, top, true);
  return out;
}

StepResult Ips::train_step(data::Batch batch, StepContext& context) {
  const auto precision_scope = autocast();
  net_->train();
  const auto selection = select(bags(batch));
  batch.images = torch::Tensor();  // only the M winners are needed from here on
  batch.bags.clear();
  return train_on(selection, batch.labels, context);
}

StepResult Ips::train_on(const Selection& selection, const TaskTensors& labels, StepContext& context) {
  const auto precision_scope = autocast();
  net_->train();
  context.zero_grad();
  if (options_.grad_chunk > 0 && selection.streamed.empty()) {
    torch::Tensor loss;
    const auto outputs = chunked_step(selection, labels, context, loss);
    context.step();
    return {loss.item<double>(), to_cpu_detached(outputs)};
  }
  const auto outputs = forward(selection);
  const auto loss = multitask_loss(outputs, labels, tasks());
  check_finite_loss(loss, "IPS");
  const bool streamed = !selection.streamed.empty();
  context.backward(loss, streamed ? StepContext::Gradients::pending : StepContext::Gradients::complete);
  if (streamed) {
    accumulate_streamed_grad(selection);
    context.gradients_complete();
  }
  context.step();
  return {loss.item<double>(), to_cpu_detached(outputs)};
}

void Ips::forward_for_statistics(const data::Batch& batch) {
  const auto precision_scope = autocast();
  // Selection as in training (eval-mode encoder), with a fixed generator so the pass is deterministic.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(options_.seed) * 7919ULL);
  const auto selection = select(bags(batch), {}, gen);
  torch::NoGradGuard no_grad;
  net_->train();
  forward(selection);
}

torch::nn::Module& Ips::encoder() {
  TESSERA_CHECK(!net_->options().features, "a feature-bag IPS network has no image encoder to load weights into");
  return *net_->encoder;
}

Method::PatchScores Ips::patch_scores(const data::Batch& batch) {
  const auto precision_scope = autocast();
  net_->eval();
  const auto one = data::Batch{batch.images.defined() ? batch.images.slice(0, 0, 1) : torch::Tensor(),
                               batch.bags.empty() ? std::vector<data::PatchBagPtr>{} : std::vector<data::PatchBagPtr>{batch.bags.front()},
                               {}, {0}};
  TESSERA_CHECK(one.images.defined(), "selection pictures are drawn for images; slides get heatmaps (predict --slide)");
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(options_.seed) * 7919ULL);
  const auto selection = select(bags(one), {}, gen);
  const auto grid = data::PatchGrid::fit(one.images.size(2), one.images.size(3), options_.patch, options_.stride);
  const auto idx = selection.idx[0].to(torch::kCPU);
  const auto grid_rows = torch::div(idx, grid.cols, "floor");
  PatchScores out;
  out.rows = grid_rows * grid.stride_h;
  out.cols = (idx - grid_rows * grid.cols) * grid.stride_w;
  out.scores = final_scores(selection)[0];
  {
    c10::InferenceMode inference;
    out.outputs = to_cpu_detached(forward(selection));
  }
  out.patch_h = grid.patch_h;
  out.patch_w = grid.patch_w;
  return out;
}

MethodInfo ips_method() {
  MethodInfo m;
  m.name = "ips";
  m.config_sections = {"ips"};
  m.summary = "Iterative Patch Selection: score all patches without gradients, train on the M best";
  m.inputs = {"image", "slide", "features"};
  m.memory_knobs = "train.batch_size, ips.grad_chunk, ips.M, ips.I or data.patch";
  m.memory_settings = [](const Config& c) {
    // Chunks of the gradient pass (powers of two below the configured one), then the same with each ViT
    // block recomputed in the backward pass.
    std::vector<MethodInfo::Settings> out;
    if (c.model.encoder == "projector") return out;
    const bool vit = models::resolve_encoder(c.model.encoder, c.model.encoder_args).is_vit();
    for (const bool recompute : {false, true}) {
      if (recompute && !vit) break;
      if (!recompute && c.model.grad_checkpointing) continue;
      for (int64_t chunk = 32; chunk >= 1; chunk /= 2) {
        if (c.ips.grad_chunk > 0 && (chunk > c.ips.grad_chunk || (!recompute && chunk == c.ips.grad_chunk))) continue;
        if (chunk >= c.train.batch_size * c.ips.M) continue;
        MethodInfo::Settings s{{"ips.grad_chunk", std::to_string(chunk)}};
        if (recompute) s.emplace_back("model.grad_checkpointing", "true");
        out.push_back(s);
      }
    }
    return out;
  };
  m.validate_grid = [](const Config& c, const data::PatchGrid& grid) {
    TESSERA_CHECK(c.ips.M <= grid.count(), "ips.M ", c.ips.M, " is more than the ", grid.count(), " patches of a ",
                  c.data.height, "x", c.data.width, " image (", grid.rows, " x ", grid.cols, " at data.patch ",
                  c.data.patch, ", data.stride ", c.data.stride, "); set ips.M to at most ", grid.count(),
                  " (and ips.I, the patches scored at a time, below it)");
  };
  m.picture = "selection";
  m.any_image_size = true;  // a patch grid of any size; positions index the grid
  m.schedule_from_one = true;
  m.make = [](const Config& c, const std::vector<Task>& tasks) -> std::unique_ptr<Method> {
    return Ips::from_config(c, tasks);
  };
  return m;
}

TaskTensors Ips::predict(const data::Batch& batch) {
  const auto precision_scope = autocast();
  net_->eval();
  // Evaluation shuffles (if at all) from a generator seeded by the batch, never the global RNG.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(
      static_cast<uint64_t>(options_.seed) * 7919ULL + static_cast<uint64_t>(batch.indices.empty() ? 0 : batch.indices.front()));
  const auto selection = select(bags(batch), {}, gen);
  c10::InferenceMode inference;
  return to_cpu_detached(forward(selection));
}

}  // namespace tessera::methods
