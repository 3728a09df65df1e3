#include "tessera/app/embed.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/npy.h"
#include "tessera/data/image_io.h"
#include "tessera/train/experiment.h"

namespace tessera::app {

torch::Tensor preprocess_for_encoder(const torch::Tensor& image, const models::Preprocessing& p, bool resize) {
  TESSERA_ASSERT(image.dim() == 3, "expected (C, H, W), got ", image.sizes());
  auto x = image.to(torch::kFloat);
  const int64_t H = x.size(1), W = x.size(2);
  if (resize && (H != p.height || W != p.width)) {
    // timm's eval transform: Resize(floor(size / crop_pct)) on the shorter side, then CenterCrop(size).
    const auto scale = static_cast<int64_t>(std::floor(static_cast<double>(std::max(p.height, p.width)) / p.crop_pct));
    const bool tall = H > W;
    const int64_t short_side = tall ? W : H, long_side = tall ? H : W;
    const auto new_long = static_cast<int64_t>(static_cast<double>(scale) * long_side / short_side);
    const int64_t nh = tall ? new_long : scale, nw = tall ? scale : new_long;
    const auto batch = x.unsqueeze(0);
    const std::vector<int64_t> size{nh, nw};
    x = (p.interpolation == "bilinear" ? at::_upsample_bilinear2d_aa(batch, at::IntArrayRef(size), false)
                                       : at::_upsample_bicubic2d_aa(batch, at::IntArrayRef(size), false))
            .squeeze(0)
            .clamp_(0, 1);
    TESSERA_CHECK(nh >= p.height && nw >= p.width, "an image of ", H, "x", W, " cannot be centre-cropped to ", p.height,
                  "x", p.width, " after resizing to ", nh, "x", nw);
    const auto top = static_cast<int64_t>(std::round((nh - p.height) / 2.0));
    const auto left = static_cast<int64_t>(std::round((nw - p.width) / 2.0));
    x = x.slice(1, top, top + p.height).slice(2, left, left + p.width);
  }
  const auto mean = torch::tensor(std::vector<float>(p.mean.begin(), p.mean.end())).view({-1, 1, 1});
  const auto std = torch::tensor(std::vector<float>(p.std.begin(), p.std.end())).view({-1, 1, 1});
  return ((x - mean) / std).contiguous();
}

models::BackbonePtr load_encoder(const models::EncoderSpec& spec, const std::string& weights) {
  models::BackboneOptions common;
  common.in_channels = spec.preprocessing.channels;
  common.stages = 4;  // a whole torchvision CNN, as its weights come
  auto net = models::make_encoder(spec, common);
  const auto file = weights.empty() ? spec.weights : weights;
  if (!file.empty()) {
    models::load_encoder_weights(*net, file, /*strict=*/spec.is_vit());
  } else {
    log::warn("encoder {} has no weights (give --weights): its features are random (fine for tests, not for data)",
              spec.source);
  }
  net->eval();
  return net;
}

namespace {

std::vector<std::string> image_list(const EmbedOptions& o) {
  auto paths = o.images;
  if (!o.list.empty()) {
    std::ifstream in(o.list);
    TESSERA_CHECK(in, "cannot read the image list '", o.list, "'");
    for (std::string line; std::getline(in, line);) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (!line.empty()) paths.push_back(line);
    }
  }
  TESSERA_CHECK(!paths.empty(), "no images to embed; give --images or --list");
  for (const auto& p : paths) {  // before the encoder is built: a typo should not cost a model load
    TESSERA_CHECK(std::filesystem::is_regular_file(p), "image '", p, "' does not exist",
                  o.list.empty() ? "" : " (check --list " + o.list + ")");
  }
  return paths;
}

}  // namespace

EmbedResult embed(const EmbedOptions& o) {
  TESSERA_CHECK(o.batch > 0, "--batch must be positive, got ", o.batch);
  TESSERA_CHECK(!o.out.empty(), "give --out features.npy");
  const auto paths = image_list(o);
  const auto spec = models::resolve_encoder(o.encoder, o.encoder_args);
  auto net = load_encoder(spec, o.weights);
  const auto start = std::chrono::steady_clock::now();
  std::vector<torch::Tensor> rows;
  c10::InferenceMode inference;
  AutocastGuard precision(o.precision);
  std::vector<torch::Tensor> pending;
  const auto flush = [&] {
    if (pending.empty()) return;
    rows.push_back(net->forward(torch::stack(pending)).to(torch::kFloat));
    pending.clear();
  };
  for (const auto& path : paths) {
    auto image = data::conform_image(data::read_image(path), spec.preprocessing.channels, 0, 0, "image '" + path + "'");
    auto x = preprocess_for_encoder(image, spec.preprocessing, !o.no_resize);
    if (!pending.empty() && pending.front().sizes() != x.sizes()) flush();  // a batch holds one size
    pending.push_back(x);
    if (static_cast<int64_t>(pending.size()) == o.batch) flush();
  }
  flush();
  for (const auto& r : rows) {
    TESSERA_CHECK(r.sizes().slice(1) == rows.front().sizes().slice(1), "the encoder gives every token (global_pool '') ",
                  "and the images differ in size, so their features differ in shape; embed images of one size");
  }
  const auto features = torch::cat(rows);
  write_npy(o.out, features);
  EmbedResult result;
  result.images = static_cast<int64_t>(paths.size());
  result.shape = features.sizes().vec();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

void export_encoder(const ExportEncoderOptions& o) {
  TESSERA_CHECK(!o.out.empty(), "give --out FOLDER");
  TESSERA_CHECK(o.run.empty() != o.encoder.empty(), "give either --run RUN or --encoder NAME|FOLDER");
  if (!o.encoder.empty()) {
    const auto spec = models::resolve_encoder(o.encoder, o.encoder_args);
    auto net = load_encoder(spec, o.weights);
    models::export_encoder_folder(spec, *net, o.out);
    return;
  }
  auto run = train::open_run(o.run);
  const auto config = run.spec.config();
  TESSERA_CHECK(config.model.encoder != "projector", "run '", o.run, "' trains on feature bags and has no image encoder");
  auto spec = models::resolve_encoder(config.model.encoder, models::model_encoder_args(config.model));
  auto* encoder = dynamic_cast<models::BackboneImpl*>(&run.method->encoder());
  TESSERA_ASSERT(encoder, "the run's encoder is not a backbone");
  // The run's own input: its patches, channels and normalisation.
  spec.preprocessing.channels = run.spec.input.channels;
  spec.preprocessing.crop_pct = 1.0;
  const auto& norm = run.spec.input.normalization;
  if (!norm.empty()) {
    spec.preprocessing.mean.assign(norm.mean.begin(), norm.mean.end());
    spec.preprocessing.std.assign(norm.std.begin(), norm.std.end());
  } else {
    spec.preprocessing.mean.assign(run.spec.input.channels, 0.0);
    spec.preprocessing.std.assign(run.spec.input.channels, 1.0);
  }
  if (!spec.args.contains("in_chans") && run.spec.input.channels != 3) spec.args["in_chans"] = run.spec.input.channels;
  encoder->eval();
  models::export_encoder_folder(spec, *encoder, o.out);
}

}  // namespace tessera::app
