#include "tessera/app/predict.h"

#include <torch/torch.h>

#include <filesystem>

#include "tessera/core/error.h"
#include "tessera/core/memory.h"
#include "tessera/core/run_dir.h"
#include "tessera/core/runtime.h"
#include "tessera/data/image_io.h"
#include "tessera/train/experiment.h"
#include "tessera/train/registry.h"
#ifdef TESSERA_WITH_SLIDES
#include "tessera/slides/geojson.h"
#include "tessera/slides/h5.h"
#include "tessera/slides/heatmap.h"
#include "tessera/slides/slide_dataset.h"
#endif

namespace tessera::app {
namespace fs = std::filesystem;
namespace {

// Outputs per task as lists, plus the predicted class (softmax) or the classes at >= 0.5 (sigmoid).
nlohmann::json describe_outputs(const TaskTensors& outputs, const std::vector<Task>& tasks) {
  nlohmann::json j;
  for (const auto& task : tasks) {
    const auto p = outputs.at(task.name)[0].to(torch::kCPU, torch::kFloat32).contiguous();
    j["outputs"][task.name] = std::vector<float>(p.data_ptr<float>(), p.data_ptr<float>() + p.numel());
    if (task.activation == "softmax" || task.outputs == 1) {  // a class, or one binary label
      const int64_t k = task.activation == "softmax" ? p.argmax().item<int64_t>() : p[0].item<float>() >= 0.5f ? 1 : 0;
      j["predicted"][task.name] = k;
      if (!task.classes.empty()) j["predicted_class"][task.name] = task.class_name(k);
    } else {
      const auto on = p.ge(0.5).nonzero().view(-1).contiguous();
      j["predicted"][task.name] = std::vector<int64_t>(on.data_ptr<int64_t>(), on.data_ptr<int64_t>() + on.numel());
    }
  }
  return j;
}

Prediction predict_image(const PredictOptions& o, train::OpenedRun& run, const std::string& out_dir) {
  const auto picture = data::read_image(o.image);
  auto image = predict_picture(run, picture, "image '" + o.image + "'");
  Prediction p;
  p.result = std::move(image.result);
  p.result["image"] = o.image;
  RunDir target(out_dir);
  if (image.scores.scores.defined()) {
    const auto name = image.scores.outline ? "selection.png" : "patches.png";
    data::write_png(target.file(name), draw_patch_scores(image.picture, image.scores));
    p.files.push_back(target.file(name));
  }
  target.write_text("prediction.json", p.result.dump(2) + "\n");
  p.files.insert(p.files.begin(), target.file("prediction.json"));
  return p;
}

#ifdef TESSERA_WITH_SLIDES
Prediction predict_slide_files(const PredictOptions& o, train::OpenedRun& run, const std::string& out_dir) {
  const auto s = predict_slide(run, o.slide, o.bag);
  Prediction p;
  p.result = s.result;
  RunDir target(out_dir);
  target.write_text("prediction.json", p.result.dump(2) + "\n");
  slides::write_scores_csv(target.file("scores.csv"), s.grid, s.scores, s.selected);
  p.files = {target.file("prediction.json"), target.file("scores.csv")};
  if (o.geojson) {
    nlohmann::json prediction{{"predicted", p.result["predicted"]}};
    if (p.result.contains("predicted_class")) prediction["predicted_class"] = p.result["predicted_class"];
    slides::write_scores_geojson(target.file("scores.geojson"), s.grid, s.scores, s.selected, "attention", prediction);
    p.files.push_back(target.file("scores.geojson"));
  }
  if (s.reader) {
    data::write_png(target.file("heatmap.png"), slides::heatmap_overlay(*s.reader, s.grid, s.scores, o.thumbnail));
    p.files.push_back(target.file("heatmap.png"));
    if (o.tiff) {
      slides::write_heatmap_tiff(target.file("heatmap.tif"), *s.reader, s.grid, s.scores);
      p.files.push_back(target.file("heatmap.tif"));
    }
  }
  return p;
}
#endif

}  // namespace

ImagePrediction predict_picture(train::OpenedRun& run, const torch::Tensor& image, const std::string& what) {
  const auto& spec = run.spec;
  const auto& info = train::find_method(spec.method);
  TESSERA_CHECK(spec.input.kind == "image", "the run was trained on ", spec.input.kind == "slide" ? "slides" : "feature bags",
                "; predict a slide", spec.input.kind == "features" ? " with its feature bag" : "", " instead of ", what);
  const bool any_size = info.any_image_size;
  ImagePrediction p;
  p.picture = data::conform_image(image, spec.input.channels, any_size ? 0 : spec.input.height, any_size ? 0 : spec.input.width, what);
  data::Batch batch;
  batch.images = spec.input.normalization.apply(p.picture, what).unsqueeze(0);
  batch.indices = {0};
  // Methods that explain their prediction give the outputs with the patch scores, in one pass.
  if (!info.picture.empty()) p.scores = run.method->patch_scores(batch);
  p.result = describe_outputs(info.picture.empty() ? run.method->predict(batch) : p.scores.outputs, spec.tasks);
  p.result["method"] = spec.method;
  for (int64_t k = 0; p.scores.scores.defined() && k < p.scores.scores.size(0); ++k) {
    p.result["patches"].push_back({{"row", p.scores.rows[k].item<int64_t>()},
                                   {"col", p.scores.cols[k].item<int64_t>()},
                                   {"score", p.scores.scores[k].item<double>()}});
  }
  return p;
}

#ifdef TESSERA_WITH_SLIDES
SlidePrediction predict_slide(train::OpenedRun& run, const std::string& slide, const std::string& bag_path) {
  const auto& spec = run.spec;
  const std::string& name = run.checkpoint_path;
  TESSERA_CHECK(spec.input.kind != "image", "run '", name, "' was trained on whole images; predict an image instead");
  const bool features = spec.input.kind == "features";
  TESSERA_CHECK(!features || !bag_path.empty(), "run '", name,
                "' was trained on feature bags; pass its feature bag <slide>.h5 (and the slide for a heatmap)");
  TESSERA_CHECK(features || !slide.empty(), "run '", name, "' was trained on slide patches; pass a slide");
  const auto config = spec.config();
  SlidePrediction p;
  if (!slide.empty()) p.reader = slides::open_slide(slide, config.slide.backend);
  data::PatchBagPtr bag;
  if (features) {
    auto feature_bag = std::make_shared<slides::FeatureBag>(bag_path);
    TESSERA_CHECK(feature_bag->dim() == spec.input.features, "feature bag '", bag_path, "' has rows of ",
                  feature_bag->dim(), " features but the run was trained on ", spec.input.features);
    bag = feature_bag;
    p.grid = slides::read_coords(bag_path);
  } else {
    const auto opts = slides::slide_data_options(config, "");
    p.grid = slides::tissue_patches(*p.reader, opts.grid);
    bag = std::make_shared<slides::SlideBag>(p.reader, p.grid, opts.read_workers, opts.mean, opts.std);
  }
  auto scored = run.method->bag_scores(bag);
  TESSERA_ASSERT(scored.scores.defined(), "methods that train on slides score their patches");
  p.scores = scored.scores;
  p.selected = scored.selected;
  p.result = describe_outputs(scored.outputs, spec.tasks);
  p.result["slide"] = slide;
  p.result["bag"] = bag_path;
  p.result["patches"] = bag->size();
  p.result["method"] = spec.method;
  return p;
}
#endif

torch::Tensor draw_patch_scores(const torch::Tensor& image, const methods::Method::PatchScores& ps) {
  auto rgb = (image.size(0) == 1 ? image.expand({3, -1, -1}) : image.slice(0, 0, 3)).clone().mul_(0.8);
  const int64_t H = rgb.size(1), W = rgb.size(2);
  const int64_t t = std::max<int64_t>(1, std::min(H, W) / 400 + 1);
  const auto s = ps.scores.to(torch::kFloat32);
  const auto norm = (s - s.min()) / (s.max() - s.min() + 1e-12);
  using torch::indexing::Slice;
  for (int64_t k = 0; k < ps.rows.size(0); ++k) {
    const float v = norm[k].item<float>();
    const auto colour = torch::tensor({v, 0.2f * (1 - v), 1.0f - v}).view({3, 1, 1});
    const int64_t r0 = ps.rows[k].item<int64_t>(), c0 = ps.cols[k].item<int64_t>();
    const int64_t r1 = std::min(H, r0 + ps.patch_h), c1 = std::min(W, c0 + ps.patch_w);
    if (!ps.outline) {
      auto cell = rgb.index({Slice(), Slice(r0, r1), Slice(c0, c1)});
      cell.mul_(0.55).add_(colour * 0.45);
      continue;
    }
    rgb.index_put_({Slice(), Slice(r0, std::min(r1, r0 + t)), Slice(c0, c1)}, colour);
    rgb.index_put_({Slice(), Slice(std::max(r0, r1 - t), r1), Slice(c0, c1)}, colour);
    rgb.index_put_({Slice(), Slice(r0, r1), Slice(c0, std::min(c1, c0 + t))}, colour);
    rgb.index_put_({Slice(), Slice(r0, r1), Slice(std::max(c0, c1 - t), c1)}, colour);
  }
  return rgb;
}

Prediction predict(const PredictOptions& o) {
  memory::install_tracking();
  runtime::ScopedThreads threads(o.threads);
  TESSERA_CHECK(!o.image.empty() || !o.slide.empty() || !o.bag.empty(), "predict needs --image (or --slide / --bag for slide runs)");
  TESSERA_CHECK(o.image.empty() || (o.slide.empty() && o.bag.empty()), "give either --image or --slide/--bag, not both");
  auto run = train::open_run(o.run);
  const std::string out = o.out.empty() ? (fs::path(o.run) / "predict").string() : o.out;
  if (!o.image.empty()) return predict_image(o, run, out);
#ifdef TESSERA_WITH_SLIDES
  return predict_slide_files(o, run, out);
#else
  fail("--slide and --bag need a build with slide support (TESSERA_WITH_SLIDES=ON)");
#endif
}

}  // namespace tessera::app
