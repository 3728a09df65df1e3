#include "tessera/methods/loss_scaler.h"

#include <torch/torch.h>

#include <cmath>

#include "tessera/core/error.h"

namespace tessera::methods {

LossScaler::LossScaler(LossScalerOptions options)
    : options_(options),
      scale_(torch::full({1}, options.init_scale, torch::kFloat)),
      growth_tracker_(torch::zeros({1}, torch::kInt)) {
  TESSERA_CHECK(options_.init_scale > 0 && options_.growth_factor > 1 && options_.backoff_factor > 0 &&
                    options_.backoff_factor < 1 && options_.growth_interval > 0,
                "loss scaler: need init_scale > 0, growth_factor > 1, 0 < backoff_factor < 1, growth_interval > 0");
}

void LossScaler::to_device(const torch::Device& device) {
  if (scale_.device() == device) return;
  scale_ = scale_.to(device);
  growth_tracker_ = growth_tracker_.to(device);
}

torch::Tensor LossScaler::scale(const torch::Tensor& loss) const {
  return loss * scale_.to(loss.device(), loss.scalar_type()).squeeze();
}

bool LossScaler::unscale(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  if (grads.empty()) return true;
  to_device(grads[0].device());
  const auto inv_scale = scale_.reciprocal();
  if (grads[0].is_cuda()) {
    auto found_inf = torch::zeros({1}, scale_.options());
    at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale);
    return found_inf.item<float>() == 0.0f;
  }
  for (const auto& g : grads) {
    if (!torch::isfinite(g).all().item<bool>()) return false;
  }
  for (auto& g : grads) g.mul_(inv_scale.to(g.scalar_type()));
  return true;
}

void LossScaler::update(bool found_inf) {
  if (found_inf) ++skipped_;
  if (scale_.is_cuda()) {
    const auto found = torch::full({1}, found_inf ? 1.0f : 0.0f, scale_.options());
    at::_amp_update_scale_(scale_, growth_tracker_, found, options_.growth_factor, options_.backoff_factor,
                           options_.growth_interval);
    return;
  }
  if (found_inf) {
    scale_.mul_(options_.backoff_factor);
    growth_tracker_.zero_();
    return;
  }
  growth_tracker_.add_(1);
  if (growth_tracker_.item<int64_t>() >= options_.growth_interval) {
    scale_.mul_(options_.growth_factor);
    growth_tracker_.zero_();
  }
}

double LossScaler::scale_value() const { return scale_.item<double>(); }
int64_t LossScaler::growth_tracker() const { return growth_tracker_.item<int64_t>(); }

void LossScaler::restore(double scale, int64_t growth_tracker, int64_t skipped_steps) {
  TESSERA_CHECK(scale > 0 && std::isfinite(scale) && growth_tracker >= 0, "loss scaler state (scale ", scale,
                ", growth tracker ", growth_tracker, ") is invalid; the checkpoint is damaged");
  scale_.fill_(scale);
  growth_tracker_.fill_(growth_tracker);
  skipped_ = skipped_steps;
}

}  // namespace tessera::methods
