#include "tessera/methods/gradient_reducer.h"

#include <torch/torch.h>

#include <chrono>

#include "tessera/core/distributed.h"
#include "tessera/core/error.h"

namespace tessera::methods {

GradientReducer::GradientReducer(std::vector<torch::Tensor> params, int64_t bucket_bytes) : params_(std::move(params)) {
  bucket_of_.assign(params_.size(), -1);
  offset_.assign(params_.size(), 0);
  filled_.assign(params_.size(), false);
  // Reverse registration order approximates the order autograd produces gradients in.
  int64_t bytes = 0;
  for (int64_t i = static_cast<int64_t>(params_.size()) - 1; i >= 0; --i) {
    const auto& p = params_[i];
    if (!p.requires_grad()) continue;
    if (buckets_.empty() || bytes >= bucket_bytes) {
      buckets_.emplace_back();
      bytes = 0;
    }
    auto& b = buckets_.back();
    bucket_of_[i] = static_cast<int64_t>(buckets_.size()) - 1;
    offset_[i] = bytes / static_cast<int64_t>(sizeof(float));
    b.params.push_back(i);
    bytes += p.numel() * static_cast<int64_t>(sizeof(float));
  }
  for (auto& b : buckets_) {
    int64_t numel = 0;
    for (const auto i : b.params) numel += params_[i].numel();
    b.flat = torch::zeros({numel}, params_[b.params[0]].options().dtype(torch::kFloat).requires_grad(false));
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    if (bucket_of_[i] < 0) continue;
    hooks_.push_back(params_[i].register_hook([this, i](const torch::Tensor& grad) {
      on_gradient(static_cast<int64_t>(i), grad);
    }));
  }
}

GradientReducer::~GradientReducer() {
  size_t h = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (bucket_of_[i] >= 0) params_[i].remove_hook(hooks_[h++]);
  }
}

void GradientReducer::arm() {
  std::lock_guard<std::mutex> lock(mutex_);
  armed_ = true;
}

void GradientReducer::on_gradient(int64_t i, const torch::Tensor& grad) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_ || filled_[i]) return;
  auto& b = buckets_[bucket_of_[i]];
  const auto& p = params_[i];
  // The hook sees this pass's contribution; the gradient after accumulation is the one to reduce.
  torch::NoGradGuard no_grad;
  auto slot = b.flat.slice(0, offset_[i], offset_[i] + p.numel());
  if (p.grad().defined()) {
    slot.copy_((p.grad() + grad).reshape(-1));
  } else {
    slot.copy_(grad.reshape(-1));
  }
  filled_[i] = true;
  ++b.ready;
  launch_ready();
}

void GradientReducer::launch(Bucket& b) {
  b.wait = dist::all_reduce_sum_async(b.flat, "gradient all-reduce");
}

// Buckets start in index order on every rank (collectives must match), each once all its gradients are in.
void GradientReducer::launch_ready() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].ready == static_cast<int64_t>(buckets_[next_launch_].params.size())) {
    launch(buckets_[next_launch_++]);
  }
}

void GradientReducer::finish() {
  const auto start = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  std::lock_guard<std::mutex> lock(mutex_);
  // Gradients that no armed hook delivered (an unarmed pass, or completed after backward).
  std::vector<float> had_grad(params_.size(), 0.0f);
  for (size_t i = 0; i < params_.size(); ++i) {
    if (bucket_of_[i] < 0) continue;
    const auto& g = params_[i].grad();
    had_grad[i] = g.defined() ? 1.0f : 0.0f;
    if (filled_[i]) continue;
    auto& b = buckets_[bucket_of_[i]];
    TESSERA_ASSERT(!b.wait, "a launched bucket is missing a gradient");
    auto slot = b.flat.slice(0, offset_[i], offset_[i] + params_[i].numel());
    if (g.defined()) {
      slot.copy_(g.reshape(-1));
    } else {
      slot.zero_();
    }
    filled_[i] = true;
    ++b.ready;
  }
  launch_ready();
  auto any_grad = torch::tensor(had_grad);
  dist::all_reduce_sum(any_grad, "gradient all-reduce");
  const auto received = any_grad.accessor<float, 1>();  // one read per parameter, no per-element tensors
  for (auto& b : buckets_) b.wait();
  const double world = static_cast<double>(dist::world_size());
  for (auto& b : buckets_) {
    b.flat.div_(world);
    for (const auto i : b.params) {
      auto& p = params_[i];
      if (received[i] == 0.0f) continue;
      const auto reduced = b.flat.slice(0, offset_[i], offset_[i] + p.numel()).view(p.sizes());
      if (p.grad().defined()) {
        p.mutable_grad().copy_(reduced);
      } else {
        p.mutable_grad() = reduced.to(p.scalar_type()).clone();
      }
    }
    b.ready = 0;
    b.wait = nullptr;
  }
  std::fill(filled_.begin(), filled_.end(), false);
  next_launch_ = 0;
  armed_ = false;
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace tessera::methods
