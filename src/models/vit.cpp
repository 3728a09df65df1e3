#include "tessera/models/vit.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>
#include <map>

#include "tessera/core/error.h"
#include "tessera/core/precision.h"
#include "tessera/models/onednn_linear.h"

namespace tessera::models {
namespace {

// A Linear module's maths through the fastest GEMM for its operands (onednn_linear.h).
torch::Tensor linear(const torch::nn::Linear& layer, const torch::Tensor& x, const Lora& adapter = nullptr) {
  auto y = fast_linear(x, layer->weight, layer->bias);
  return adapter ? y + adapter->delta(x) : y;
}

// The adapter of a Linear site when the options target it, registered as <name>_lora.
Lora adapter(torch::nn::Module& parent, const std::string& name, const torch::nn::Linear& layer, const LoraOptions& o,
             LoraTarget target) {
  if (!o.enabled() || !(o.targets & target)) return nullptr;
  return parent.register_module(name + "_lora", Lora(layer->options.in_features(), layer->options.out_features(), o));
}

torch::nn::LayerNorm layer_norm(int64_t dim) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6));  // timm's ViT norm_layer
}

// Holds one parameter under timm's name: patch_embed.proj, ls1.gamma.
class PatchEmbedImpl : public torch::nn::Module {
 public:
  PatchEmbedImpl(int64_t in_chans, int64_t dim, int64_t patch) {
    proj = register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_chans, dim, patch).stride(patch)));
  }
  torch::nn::Conv2d proj{nullptr};
};
TORCH_MODULE(PatchEmbed);

class LayerScaleImpl : public torch::nn::Module {
 public:
  LayerScaleImpl(int64_t dim, double init) { gamma = register_parameter("gamma", torch::full({dim}, init)); }
  torch::Tensor gamma;
};
TORCH_MODULE(LayerScale);

// A block whose activations are not kept: its forward runs without gradients and the backward pass runs
// it again with them (timm's grad_checkpointing). The block's parameters are inputs, so their gradients
// flow through the engine like any other (hooks, data-parallel reducers). Autocast is repeated.
class RecomputedBlock : public torch::autograd::Function<RecomputedBlock> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, VitBlockImpl* block,
                               at::TensorList params) {
    ctx->save_for_backward({x});
    ctx->saved_data["block"] = reinterpret_cast<int64_t>(block);  // the module outlives its graph
    ctx->saved_data["autocast"] = static_cast<int64_t>(cpu_autocast_dtype());
    torch::NoGradGuard no_grad;
    return block->forward(x);
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_output) {
    auto* block = reinterpret_cast<VitBlockImpl*>(ctx->saved_data["block"].toInt());
    const auto dtype = static_cast<c10::ScalarType>(ctx->saved_data["autocast"].toInt());
    torch::AutoGradMode enable_grad(true);
    AutocastGuard precision(dtype == torch::kBFloat16 ? Precision::bf16 : dtype == torch::kHalf ? Precision::fp16
                                                                                                  : Precision::fp32);
    const auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    const auto y = block->forward(x);
    std::vector<torch::Tensor> inputs{x};
    std::vector<bool> wanted;
    for (auto& p : block->parameters()) {
      wanted.push_back(p.requires_grad());
      if (p.requires_grad()) inputs.push_back(p);
    }
    const auto grads = torch::autograd::grad({y}, inputs, {grad_output[0]}, /*retain_graph=*/false,
                                             /*create_graph=*/false, /*allow_unused=*/true);
    torch::autograd::tensor_list result{grads[0], torch::Tensor()};  // x, block pointer
    size_t next = 1;
    for (bool w : wanted) result.push_back(w ? grads[next++] : torch::Tensor());
    return result;
  }
};

}  // namespace

void VitOptions::check() const {
  TESSERA_CHECK(embed_dim > 0 && depth >= 0 && num_heads > 0 && patch_size > 0 && img_size > 0 && in_chans > 0,
                "ViT arguments: embed_dim, num_heads, patch_size, img_size and in_chans must be positive and depth >= 0");
  TESSERA_CHECK(embed_dim % num_heads == 0, "ViT embed_dim ", embed_dim, " is not divisible by num_heads ", num_heads);
  TESSERA_CHECK(img_size % patch_size == 0 || dynamic_img_size, "ViT img_size ", img_size,
                " is not a multiple of patch_size ", patch_size);
  TESSERA_CHECK(mlp_ratio > 0 && mlp_hidden() > 0, "ViT mlp_ratio must be positive, got ", mlp_ratio);
  TESSERA_CHECK(mlp_layer != VitMlp::kSwiGluPacked || mlp_hidden() % 2 == 0, "SwiGLUPacked needs an even hidden width; ",
                "embed_dim x mlp_ratio = ", mlp_hidden());
  TESSERA_CHECK(class_token || (global_pool != VitPool::kToken && global_pool != VitPool::kClsMean),
                "global_pool token needs class_token true");
  TESSERA_CHECK(reg_tokens >= 0, "ViT reg_tokens must be >= 0");
  TESSERA_CHECK(trainable_blocks >= -1, "trainable_blocks must be -1 (all) or the number of last blocks to train");
  TESSERA_CHECK(num_classes >= 0, "num_classes must be >= 0");
  TESSERA_CHECK(lora.rank >= 0, "lora_rank must be >= 0 (0: no adapters), got ", lora.rank);
  TESSERA_CHECK(!lora.enabled() || trainable_blocks < 0, "LoRA adapters (lora_rank ", lora.rank, ") train instead of the ",
                "blocks' weights; drop trainable_blocks (model.train_blocks) or lora_rank (model.lora_rank)");
}

VitAttentionImpl::VitAttentionImpl(int64_t dim, int64_t heads, bool qkv_bias, const LoraOptions& lora) : heads_(heads) {
  qkv = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(dim, 3 * dim).bias(qkv_bias)));
  proj = register_module("proj", torch::nn::Linear(dim, dim));
  qkv_lora = adapter(*this, "qkv", qkv, lora, kLoraQkv);
  proj_lora = adapter(*this, "proj", proj, lora, kLoraProj);
}

torch::Tensor VitAttentionImpl::forward(const torch::Tensor& x) {
  const int64_t B = x.size(0), N = x.size(1), C = x.size(2), hd = C / heads_;
  const auto qkv_out = linear(qkv, x, qkv_lora).reshape({B, N, 3, heads_, hd}).permute({2, 0, 3, 1, 4});
  const auto q = qkv_out[0], k = qkv_out[1], v = qkv_out[2];
  torch::Tensor out;
#if TORCH_VERSION_MAJOR >= 2
  out = at::scaled_dot_product_attention(q, k, v);  // flash / memory-efficient kernels where the build has them
#else
  // LibTorch 1.13 has no fused CPU kernel: timm's own non-fused path.
  const auto attn = torch::matmul(q * (1.0 / std::sqrt(static_cast<double>(hd))), k.transpose(-2, -1)).softmax(-1);
  out = torch::matmul(attn, v);
#endif
  return linear(proj, out.transpose(1, 2).reshape({B, N, C}), proj_lora);
}

VitMlpBlockImpl::VitMlpBlockImpl(int64_t dim, int64_t hidden, VitMlp kind, VitAct act, const LoraOptions& lora)
    : kind_(kind), act_(act) {
  if (kind == VitMlp::kSwiGlu) {
    fc1_g = register_module("fc1_g", torch::nn::Linear(dim, hidden));
    fc1_x = register_module("fc1_x", torch::nn::Linear(dim, hidden));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, dim));
    fc1_g_lora = adapter(*this, "fc1_g", fc1_g, lora, kLoraMlp);
    fc1_x_lora = adapter(*this, "fc1_x", fc1_x, lora, kLoraMlp);
  } else {
    fc1 = register_module("fc1", torch::nn::Linear(dim, hidden));
    fc2 = register_module("fc2", torch::nn::Linear(kind == VitMlp::kSwiGluPacked ? hidden / 2 : hidden, dim));
    fc1_lora = adapter(*this, "fc1", fc1, lora, kLoraMlp);
  }
  fc2_lora = adapter(*this, "fc2", fc2, lora, kLoraMlp);
}

torch::Tensor VitMlpBlockImpl::forward(const torch::Tensor& x) {
  const auto act = [this](const torch::Tensor& t) { return act_ == VitAct::kSilu ? torch::silu(t) : torch::gelu(t); };
  if (kind_ == VitMlp::kSwiGlu) return linear(fc2, act(linear(fc1_g, x, fc1_g_lora)) * linear(fc1_x, x, fc1_x_lora), fc2_lora);
  auto h = linear(fc1, x, fc1_lora);
  if (kind_ == VitMlp::kSwiGluPacked) {
    const auto halves = h.chunk(2, -1);  // GluMlp(gate_last=False): act(first half) * second half
    h = act(halves[0]) * halves[1];
  } else {
    h = act(h);
  }
  return linear(fc2, h, fc2_lora);
}

VitBlockImpl::VitBlockImpl(const VitOptions& o) {
  norm1 = register_module("norm1", layer_norm(o.embed_dim));
  attn = register_module("attn", VitAttention(o.embed_dim, o.num_heads, o.qkv_bias, o.lora));
  if (o.init_values > 0) ls1 = register_module("ls1", LayerScale(o.embed_dim, o.init_values))->gamma;
  norm2 = register_module("norm2", layer_norm(o.embed_dim));
  mlp = register_module("mlp", VitMlpBlock(o.embed_dim, o.mlp_hidden(), o.mlp_layer, o.act_layer, o.lora));
  if (o.init_values > 0) ls2 = register_module("ls2", LayerScale(o.embed_dim, o.init_values))->gamma;
}

torch::Tensor VitBlockImpl::forward(const torch::Tensor& x) {
  auto a = attn->forward(norm1->forward(x));
  auto y = x + (ls1.defined() ? a * ls1 : a);
  auto m = mlp->forward(norm2->forward(y));
  return y + (ls2.defined() ? m * ls2 : m);
}

VisionTransformerImpl::VisionTransformerImpl(VitOptions options) : options_(std::move(options)) {
  const auto& o = options_;
  o.check();
  patch_embed_proj = register_module("patch_embed", PatchEmbed(o.in_chans, o.embed_dim, o.patch_size))->proj;
  const int64_t grid = o.img_size / o.patch_size;
  if (o.class_token) cls_token = register_parameter("cls_token", torch::randn({1, 1, o.embed_dim}) * 1e-6);
  if (o.reg_tokens > 0) reg_token = register_parameter("reg_token", torch::randn({1, o.reg_tokens, o.embed_dim}) * 1e-6);
  const int64_t embed_len = grid * grid + (o.no_embed_class ? 0 : o.num_prefix_tokens());
  pos_embed = register_parameter("pos_embed", torch::randn({1, embed_len, o.embed_dim}) * 0.02);
  if (o.pre_norm) norm_pre = register_module("norm_pre", layer_norm(o.embed_dim));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.depth; ++i) blocks->push_back(VitBlock(o));
  if (o.final_norm && !o.use_fc_norm()) norm = register_module("norm", layer_norm(o.embed_dim));
  if (o.final_norm && o.use_fc_norm()) fc_norm = register_module("fc_norm", layer_norm(o.embed_dim));
  if (o.num_classes > 0) head = register_module("head", torch::nn::Linear(o.pooled_dim(), o.num_classes));
  if (o.lora.enabled()) {
    // Only the adapters train; the base weights are read in place by every forward.
    for (auto& p : named_parameters()) {
      if (p.key().find("_lora.") == std::string::npos) p.value().set_requires_grad(false);
    }
  }
  if (o.trainable_blocks >= 0) {
    // Everything before the last K blocks stays as loaded; the final norms and the head still train.
    for (auto& p : patch_embed_proj->parameters()) p.set_requires_grad(false);
    for (auto* t : {&cls_token, &reg_token, &pos_embed}) {
      if (t->defined()) t->set_requires_grad(false);
    }
    if (norm_pre) {
      for (auto& p : norm_pre->parameters()) p.set_requires_grad(false);
    }
    const int64_t first = std::max<int64_t>(0, o.depth - o.trainable_blocks);
    for (int64_t i = 0; i < first; ++i) {
      for (auto& p : blocks[i]->parameters()) p.set_requires_grad(false);
    }
  }
}

std::vector<std::pair<std::string, torch::Tensor>> VisionTransformerImpl::merged_state() const {
  std::map<std::string, const LoraImpl*> adapters;  // site (e.g. blocks.0.attn.qkv) -> its adapter
  for (const auto& m : named_modules()) {
    const auto* lora = m.value()->as<LoraImpl>();
    if (lora) adapters[m.key().substr(0, m.key().size() - std::string("_lora").size())] = lora;
  }
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : named_parameters()) {
    if (p.key().find("_lora.") != std::string::npos) continue;
    auto value = p.value().detach();
    const auto dot = p.key().rfind('.');
    const auto site = adapters.find(p.key().substr(0, dot));
    if (site != adapters.end() && p.key().substr(dot + 1) == "weight") value = site->second->merged(value);
    out.emplace_back(p.key(), value);
  }
  for (const auto& b : named_buffers()) out.emplace_back(b.key(), b.value().detach());
  return out;
}

torch::Tensor resample_abs_pos_embed(const torch::Tensor& pos_embed, int64_t rows, int64_t cols, int64_t prefix) {
  const int64_t tokens = pos_embed.size(1);
  if (rows * cols + prefix == tokens && rows == cols) return pos_embed;
  const auto side = static_cast<int64_t>(std::sqrt(static_cast<double>(tokens - prefix)));
  TESSERA_ASSERT(side * side == tokens - prefix, "pos_embed has ", tokens - prefix, " patch positions, not a square");
  const int64_t dim = pos_embed.size(2);
  const auto patch_part = pos_embed.slice(1, prefix).to(torch::kFloat).reshape({1, side, side, dim}).permute({0, 3, 1, 2});
  const std::vector<int64_t> size{rows, cols};
  auto resized = at::_upsample_bicubic2d_aa(patch_part, at::IntArrayRef(size), /*align_corners=*/false);
  resized = resized.permute({0, 2, 3, 1}).reshape({1, rows * cols, dim}).to(pos_embed.scalar_type());
  return prefix > 0 ? torch::cat({pos_embed.slice(1, 0, prefix), resized}, 1) : resized;
}

torch::Tensor VisionTransformerImpl::position_embedding(int64_t rows, int64_t cols) const {
  const auto& o = options_;
  if (!o.dynamic_img_size) return pos_embed;
  return resample_abs_pos_embed(pos_embed, rows, cols, o.no_embed_class ? 0 : o.num_prefix_tokens());
}

torch::Tensor VisionTransformerImpl::forward_features(const torch::Tensor& x) {
  const auto& o = options_;
  TESSERA_CHECK(x.dim() == 4 && x.size(1) == o.in_chans, "the ViT expects images (B, ", o.in_chans, ", H, W), got ",
                x.sizes());
  const int64_t H = x.size(2), W = x.size(3);
  if (o.dynamic_img_size) {
    TESSERA_CHECK(H % o.patch_size == 0 && W % o.patch_size == 0, "image of ", H, "x", W,
                  " px: this ViT's sides must be multiples of its patch size ", o.patch_size,
                  "; crop or resize the input (or set data.patch to a multiple)");
  } else {
    TESSERA_CHECK(H == o.img_size && W == o.img_size, "image of ", H, "x", W, " px: this ViT takes ", o.img_size, "x",
                  o.img_size, " px; resize the input, or give the encoder {\"dynamic_img_size\": true} in its arguments");
  }
  const int64_t rows = H / o.patch_size, cols = W / o.patch_size;
  auto t = patch_embed_proj->forward(x).flatten(2).transpose(1, 2);  // (B, rows*cols, D)
  const int64_t B = t.size(0);
  const auto pos = position_embedding(rows, cols);
  std::vector<torch::Tensor> prefix;
  if (o.class_token) prefix.push_back(cls_token.expand({B, -1, -1}).to(t.scalar_type()));
  if (o.reg_tokens > 0) prefix.push_back(reg_token.expand({B, -1, -1}).to(t.scalar_type()));
  if (o.no_embed_class) {
    t = t + pos;
    if (!prefix.empty()) {
      prefix.push_back(t);
      t = torch::cat(prefix, 1);
    }
  } else {
    if (!prefix.empty()) {
      prefix.push_back(t);
      t = torch::cat(prefix, 1);
    }
    t = t + pos;
  }
  if (norm_pre) t = norm_pre->forward(t);
  const bool recompute = o.checkpoint_blocks && is_training() && torch::GradMode::is_enabled();
  for (size_t i = 0; i < blocks->size(); ++i) {
    auto* block = blocks[i]->as<VitBlockImpl>();
    if (recompute) {
      std::vector<torch::Tensor> params;
      for (auto& p : block->parameters()) params.push_back(p);
      t = RecomputedBlock::apply(t, block, at::TensorList(params));  // each parameter an input of the node
    } else {
      t = block->forward(t);
    }
  }
  return norm ? norm->forward(t) : t;
}

torch::Tensor VisionTransformerImpl::pool(const torch::Tensor& tokens) const {
  const int64_t prefix = options_.num_prefix_tokens();
  switch (options_.global_pool) {
    case VitPool::kToken: return tokens.select(1, 0);
    case VitPool::kAvg: return tokens.slice(1, prefix).mean(1);
    case VitPool::kNone: return tokens;
    case VitPool::kClsMean: return torch::cat({tokens.select(1, 0), tokens.slice(1, prefix).mean(1)}, -1);
  }
  TESSERA_ASSERT(false, "unhandled pooling");
}

torch::Tensor VisionTransformerImpl::features(const torch::Tensor& x) {
  const auto tokens = forward_features(x);
  const int64_t rows = x.size(2) / options_.patch_size, cols = x.size(3) / options_.patch_size;
  return tokens.slice(1, options_.num_prefix_tokens()).transpose(1, 2).reshape({x.size(0), -1, rows, cols});
}

torch::Tensor VisionTransformerImpl::project(const torch::Tensor& pooled) {
  auto y = fc_norm ? fc_norm->forward(pooled) : pooled;
  return head ? head->forward(y) : y;
}

torch::Tensor VisionTransformerImpl::forward(const torch::Tensor& x) { return project(pool(forward_features(x))); }

}  // namespace tessera::models
