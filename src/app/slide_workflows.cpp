#include "tessera/app/slide_workflows.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <nlohmann/json.hpp>

#include "tessera/app/bench.h"
#include "tessera/core/csv.h"
#include "tessera/core/distributed.h"
#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/precision.h"
#include "tessera/core/run_dir.h"
#include "tessera/core/runtime.h"
#include "tessera/data/csv_images.h"
#include "tessera/data/idx.h"
#include "tessera/methods/ips.h"
#include "tessera/models/encoder_registry.h"
#include "tessera/models/state_dict.h"
#include "tessera/slides/annotations.h"
#include "tessera/slides/h5.h"
#include "tessera/slides/slide_dataset.h"
#include "tessera/train/experiment.h"

namespace tessera::app {
namespace fs = std::filesystem;

std::string make_slides(const MakeSlidesOptions& o) {
  TESSERA_CHECK(!o.out.empty(), "make-slides needs --out");
  TESSERA_CHECK(o.digits > 0, "make-slides: --digits must be at least 1 (positive slides are the ones with digit 'tumours'), got ",
                o.digits);
  TESSERA_CHECK(o.count >= 2, "make-slides: --count must be at least 2 (one negative and one positive training slide), got ",
                o.count);
  fs::create_directories(o.out);
  const auto digits = std::make_shared<data::MnistDigits>(data::load_mnist(o.mnist_dir, "test"));
  std::string manifest = "slide,label,split\n";
  std::string tumours = "slide,x,y,size,digit\n";
  const auto annotation_dir = fs::path(o.out) / kAnnotationDir;
  fs::create_directories(annotation_dir);
  const int64_t total = o.count + o.test_count;
  for (int64_t i = 0; i < total; ++i) {
    auto s = o.slide;
    s.seed = o.slide.seed + static_cast<uint64_t>(i);
    const int64_t label = i % 2;
    s.digits = label ? o.digits : 0;
    const std::string name = fmt::format("slide_{:03d}.tif", i);
    auto regions = nlohmann::json::array();
    for (const auto& box : slides::write_synthetic_slide((fs::path(o.out) / name).string(), s, digits.get())) {
      tumours += fmt::format("{},{},{},{},{}\n", name, box.x, box.y, box.size, box.digit);
      const int64_t x0 = box.x, y0 = box.y, x1 = box.x + box.size, y1 = box.y + box.size;
      const nlohmann::json ring = {{x0, y0}, {x1, y0}, {x1, y1}, {x0, y1}, {x0, y0}};
      regions.push_back({{"type", "Feature"},
                         {"geometry", {{"type", "Polygon"}, {"coordinates", nlohmann::json::array({ring})}}},
                         {"properties", {{"objectType", "annotation"},
                                         {"name", fmt::format("digit {}", box.digit)},
                                         {"classification", {{"name", "Tumor"}, {"color", {200, 0, 0}}}}}}});
    }
    const nlohmann::json collection = {{"type", "FeatureCollection"}, {"features", std::move(regions)}};
    write_file_atomic((annotation_dir / fs::path(name).stem()).string() + ".geojson", collection.dump() + "\n");
    manifest += fmt::format("{},{},{}\n", name, label, i < o.count ? "train" : "test");
    log::info("wrote {} ({}x{}, label {})", name, s.width, s.height, label);
  }
  write_file_atomic((fs::path(o.out) / kTumourFile).string(), tumours);
  const auto path = (fs::path(o.out) / "manifest.csv").string();
  write_file_atomic(path, manifest);
  return path;
}

torch::Tensor tumour_patches(const torch::Tensor& coords, int64_t footprint, const torch::Tensor& boxes) {
  TESSERA_CHECK(coords.dim() == 2 && coords.size(1) == 2, "patch coordinates must be (N, 2), got ", coords.sizes());
  if (boxes.numel() == 0) return torch::zeros({coords.size(0)}, torch::kBool);
  const auto x = coords.select(1, 0).unsqueeze(1), y = coords.select(1, 1).unsqueeze(1);  // (N, 1)
  const auto bx = boxes.select(1, 0).unsqueeze(0), by = boxes.select(1, 1).unsqueeze(0), side = boxes.select(1, 2).unsqueeze(0);
  const auto overlaps = (x < bx + side) & (bx < x + footprint) & (y < by + side) & (by < y + footprint);  // (N, boxes)
  return overlaps.any(1);
}

namespace {

// slide file name -> (boxes, 3) int64 x, y, size.
std::map<std::string, torch::Tensor> read_tumours(const std::string& path) {
  const auto table = read_csv(path, "tumour truth");
  std::map<std::string, std::vector<int64_t>> flat;
  const auto column = [&](const std::string& name) {
    const int c = table.column(name);
    TESSERA_CHECK(c >= 0, "tumour truth '", path, "' has no '", name, "' column; expected slide,x,y,size (tessera make-slides writes it)");
    return static_cast<size_t>(c);
  };
  const size_t cs = column("slide"), cx = column("x"), cy = column("y"), csize = column("size");
  for (size_t r = 0; r < table.rows.size(); ++r) {
    const auto& row = table.rows[r];
    auto& v = flat[fs::path(row.at(cs)).filename().string()];
    for (size_t c : {cx, cy, csize}) {
      const auto value = parse_integer(row.at(c));
      TESSERA_CHECK(value, "tumour truth '", path, "' line ", table.lines[r], ": '", table.header[c],
                    "' must be an integer, got '", row.at(c), "'");
      v.push_back(*value);
    }
  }
  std::map<std::string, torch::Tensor> out;
  for (auto& [slide, v] : flat) out[slide] = torch::tensor(v, torch::kLong).view({-1, 3});
  return out;
}

}  // namespace

LocalizationSummary localize(const LocalizationOptions& o) {
  runtime::ScopedThreads threads(o.threads);
  auto run = train::open_run(o.run);
  TESSERA_CHECK(run.spec.input.kind == "slide", "localization needs a run trained on slide patches; '", o.run,
                "' is a ", run.spec.method, " run on ", run.spec.input.kind, " inputs");
  TESSERA_CHECK(run.spec.tasks.size() == 1, "localization reads one slide-level label; run '", o.run, "' has ",
                run.spec.tasks.size(), " tasks");
  auto options = slides::slide_data_options(run.config, o.split);  // the data paths: the run's config
  options.tasks = run.spec.tasks;
  TESSERA_CHECK(o.truth.empty() || o.annotations.empty(), "localization: give --truth or --annotations, not both");
  TESSERA_CHECK(o.annotation_class.empty() || !o.annotations.empty(), "localization: --class selects annotations; pass --annotations");
  const bool geojson = !o.annotations.empty();
  const std::string truth = geojson ? o.annotations
                            : o.truth.empty() ? (fs::path(options.manifest).parent_path() / kTumourFile).string()
                                              : o.truth;
  TESSERA_CHECK(!geojson || fs::is_directory(truth), "annotation folder '", truth,
                "' not found; pass the folder of <slide id>.geojson files (QuPath's export; make-slides writes ", kAnnotationDir, "/)");
  TESSERA_CHECK(geojson || fs::exists(truth), "tumour truth '", truth, "' not found; pass --truth (tessera make-slides writes ",
                kTumourFile, ") or --annotations");
  const auto tumours = geojson ? std::map<std::string, torch::Tensor>{} : read_tumours(truth);
  int64_t without_file = 0;
  slides::SlideDataset set(options);
  TESSERA_CHECK(set.size() > 0, "the manifest of run '", o.run, "' has no '", o.split, "' slides");

  LocalizationSummary summary;
  int64_t with_tumour = 0;
  const auto& task = run.spec.tasks[0];
  for (int64_t i = 0; i < set.size(); ++i) {
    const auto& entry = set.entry(i);
    const auto bag = std::dynamic_pointer_cast<const slides::SlideBag>(set.bag(i));
    TESSERA_ASSERT(bag, "slide data sets give slide bags");
    SlideLocalization row;
    row.slide = fs::path(entry.path).filename().string();
    row.label = set.label(i, task.name);
    torch::Tensor flags;
    if (geojson) {
      const auto path = slides::annotation_path(truth, entry.id);
      const bool found = fs::exists(path);
      without_file += found ? 0 : 1;
      flags = found ? slides::overlapping_patches(slides::read_annotations(path), bag->grid().coords, bag->grid().footprint,
                                                  o.annotation_class)
                    : torch::zeros({bag->size()}, torch::kBool);
    } else {
      const auto found = tumours.find(row.slide);
      flags = tumour_patches(bag->grid().coords, bag->grid().footprint,
                             found == tumours.end() ? torch::zeros({0, 3}, torch::kLong) : found->second);
    }
    row.patches = bag->size();
    row.tumour_patches = flags.sum().item<int64_t>();
    row.tumour_fraction = static_cast<double>(row.tumour_patches) / static_cast<double>(std::max<int64_t>(1, row.patches));
    const auto scored = run.method->bag_scores(bag);
    TESSERA_ASSERT(scored.scores.defined(), "methods that train on slides score their patches");
    const auto probs = scored.outputs.at(task.name)[0];
    row.probability = task.activation == "sigmoid" ? probs[0].item<double>() : probs[probs.size(0) - 1].item<double>();
    summary.M = std::max(summary.M, scored.selected.sum().item<int64_t>());
    const auto top_scores = scored.scores.masked_select(scored.selected);
    const auto top_flags = flags.masked_select(scored.selected);
    row.top_tumour_patches = top_flags.sum().item<int64_t>();
    row.attention_on_tumour = (top_scores * top_flags.to(torch::kFloat32)).sum().item<double>() / top_scores.sum().item<double>();
    if (row.tumour_patches > 0) {
      summary.mean_attention_on_tumour += row.attention_on_tumour;
      ++with_tumour;
    }
    summary.max_tumour_fraction = std::max(summary.max_tumour_fraction, row.tumour_fraction);
    log::info("{}: label {}, p {:.3f}, {} tissue patches, {} tumour ({:.1f} %), top-{} attention on tumour {:.3f}", row.slide,
              row.label, row.probability, row.patches, row.tumour_patches, 100 * row.tumour_fraction, summary.M,
              row.attention_on_tumour);
    summary.slides.push_back(row);
  }
  if (without_file > 0) {
    log::info("{} of {} '{}' slides have no <id>.geojson in '{}': counted as tumour-free", without_file, set.size(), o.split, truth);
  }
  TESSERA_CHECK(with_tumour > 0, "no '", o.split, "' slide of run '", o.run, "' has a tumour in '", truth,
                "'; localization needs positive slides");
  summary.mean_attention_on_tumour /= static_cast<double>(with_tumour);
  if (!o.out.empty()) {
    nlohmann::json j;
    j["run"] = o.run;
    j["truth"] = truth;
    j["split"] = o.split;
    j["M"] = summary.M;
    j["mean_attention_on_tumour"] = summary.mean_attention_on_tumour;
    j["max_tumour_fraction"] = summary.max_tumour_fraction;
    for (const auto& r : summary.slides) {
      j["slides"].push_back({{"slide", r.slide}, {"label", r.label}, {"probability", r.probability}, {"patches", r.patches},
                             {"tumour_patches", r.tumour_patches}, {"top_tumour_patches", r.top_tumour_patches},
                             {"tumour_fraction", r.tumour_fraction}, {"attention_on_tumour", r.attention_on_tumour}});
    }
    write_file_atomic(o.out, j.dump(2) + "\n");
  }
  return summary;
}

namespace {

// Returns the number of patches encoded.
int64_t extract_one(const ExtractFeaturesOptions& o, const slides::ManifestEntry& e,
                    const std::function<torch::Tensor(const torch::Tensor&)>& encoder, int64_t dim, const std::string& path) {
  const auto reader = slides::open_slide(e.path, o.backend);
  auto grid = slides::cached_tissue_patches(e, *reader, o.grid, o.cache_dir);
  const auto bag = std::make_shared<slides::SlideBag>(reader, grid, o.read_workers, data::parse_floats(o.mean, "--mean"),
                                                      data::parse_floats(o.std, "--std"));
  const std::string source = o.run.empty() ? o.weights : o.run;
  slides::FeatureWriter writer(path, grid, dim, {{"encoder", o.encoder}, {"weights", source}, {"slide", e.path}});
  const int64_t N = bag->size();
  // The next chunk is read while this one is encoded.
  auto pending = std::async(std::launch::async, [&] { return bag->range(0, std::min(o.batch, N)); });
  for (int64_t begin = 0; begin < N; begin += o.batch) {
    const int64_t end = std::min(begin + o.batch, N);
    const auto patches = pending.get();
    if (end < N) pending = std::async(std::launch::async, [&, end] { return bag->range(end, std::min(end + o.batch, N)); });
    c10::InferenceMode inference;
    AutocastGuard precision(parse_precision(o.precision));
    writer.write(begin, encoder(patches.contiguous(at::MemoryFormat::ChannelsLast)).to(torch::kFloat));
  }
  writer.finish();
  return N;
}

// The encoder: a tessera IPS run's (normalisation and patch geometry from its spec), or any registered
// encoder or model folder with its weights, patches read at its input size and normalised as it expects.
models::BackbonePtr load_encoder(ExtractFeaturesOptions& o) {
  if (!o.run.empty()) {
    auto run = train::open_run(o.run);
    auto* ips = dynamic_cast<methods::Ips*>(run.method.get());
    TESSERA_CHECK(ips && run.spec.input.kind != "features", "extract-features --run needs an IPS run with an image encoder; '",
                  o.run, "' is a ", run.spec.method, " run on ", run.spec.input.kind, " inputs");
    TESSERA_CHECK(run.spec.input.channels == 3, "extract-features reads RGB slides; run '", o.run, "' encodes ",
                  run.spec.input.channels, "-channel patches");
    const auto join = [](const std::vector<float>& v) { return fmt::format("{}", fmt::join(v, ",")); };
    o.mean = join(run.spec.input.normalization.mean);
    o.std = join(run.spec.input.normalization.std);
    o.grid.patch = run.spec.input.patch;
    o.grid.stride = run.spec.input.stride;
    o.encoder = run.config.model.encoder;
    log::info("encoder, normalisation and {} px patches from run {}", o.grid.patch, o.run);
    return ips->net()->encoder;
  }
  const auto spec = models::resolve_encoder(o.encoder, o.encoder_args);
  TESSERA_CHECK(spec.preprocessing.channels == 3, "extract-features reads RGB slides; encoder ", o.encoder, " takes ",
                spec.preprocessing.channels, " channels");
  const auto join = [](const std::vector<double>& v) { return fmt::format("{}", fmt::join(v, ",")); };
  if (o.mean.empty()) o.mean = join(spec.preprocessing.mean);
  if (o.std.empty()) o.std = join(spec.preprocessing.std);
  if (o.grid.patch <= 0) o.grid.patch = spec.preprocessing.height;
  if (spec.preprocessing.mpp > 0 && o.grid.mpp <= 0 && o.grid.level == 0) {
    log::info("encoder {} was trained at {} um/px; pass --mpp {} to read patches at that resolution", o.encoder,
              spec.preprocessing.mpp, spec.preprocessing.mpp);
  }
  models::BackboneOptions common;
  common.in_channels = 3;
  common.stages = o.stages;
  common.width = o.width;
  auto net = models::make_encoder(spec, common);
  const auto weights = o.weights.empty() ? spec.weights : o.weights;
  if (!weights.empty()) {
    models::load_encoder_weights(*net, weights, /*strict=*/spec.is_vit());
    o.weights = weights;
  } else {
    log::warn("no --weights: features come from a randomly initialised {} (fine for tests, not for real slides)", o.encoder);
  }
  return net;
}

}  // namespace

ExtractSummary extract_features(ExtractFeaturesOptions o) {
  if (o.grid.patch > 0) slides::check_grid_options(o.grid);  // 0: the encoder's input size, set below
  dist::init_from_env(o.dist_timeout);
  runtime::ScopedThreads threads(o.threads);
  if (o.cache_dir.empty()) o.cache_dir = (fs::path(o.manifest).parent_path() / "tessera-cache").string();
  auto net = load_encoder(o);
  net->eval();
  net->use_channels_last();
  const auto encoder = net->inference_function();
  fs::create_directories(o.out);
  ExtractSummary summary;
  const auto entries = slides::read_manifest(o.manifest);
  std::string error;
  const auto start = std::chrono::steady_clock::now();
  for (size_t i = dist::rank(); i < entries.size() && error.empty(); i += dist::world_size()) {
    if (o.interrupted && o.interrupted()) break;
    const auto& e = entries[i];
    const auto path = (fs::path(o.out) / (e.id + ".h5")).string();
    if (fs::exists(path)) {
      ++summary.existing;
      continue;
    }
    try {
      summary.patches += extract_one(o, e, encoder, net->out_features(), path);
      ++summary.written;
      log::info("extracted {}", path);
    } catch (const Error& err) {
      if (!o.skip_errors) error = fmt::format("slide '{}' ({}): {} (pass --skip-errors to go on)", e.id, e.path, err.what());
      summary.failed.push_back(e.id + ": " + err.what());
    }
  }
  // One summary of every rank's slides (each rank stops at its first error; the others finish theirs).
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  nlohmann::json mine{{"written", summary.written}, {"existing", summary.existing}, {"failed", summary.failed},
                      {"error", error}, {"patches", summary.patches}, {"seconds", summary.seconds}};
  ExtractSummary all;
  for (const auto& text : dist::all_gather_text(mine.dump(), "extract-features summary gather")) {
    const auto j = nlohmann::json::parse(text);
    all.written += j["written"].get<int64_t>();
    all.existing += j["existing"].get<int64_t>();
    all.patches += j["patches"].get<int64_t>();
    all.seconds = std::max(all.seconds, j["seconds"].get<double>());
    for (const auto& f : j["failed"]) all.failed.push_back(f.get<std::string>());
    if (error.empty()) error = j["error"].get<std::string>();
  }
  TESSERA_CHECK(error.empty(), error);
  TESSERA_CHECK(all.failed.empty() || all.written + all.existing > 0, "every slide failed (", all.failed.size(), " of ",
                all.failed.size(), "), first ", all.failed.front());
  if (!o.json.empty() && dist::is_main()) {
    write_bench_json(o.json, {{"command", "extract-features"},
                              {"settings", {{"encoder", o.encoder}, {"encoder_args", o.encoder_args}, {"batch", o.batch},
                                            {"precision", o.precision}, {"read_workers", o.read_workers},
                                            {"threads", o.threads}, {"ranks", dist::world_size()},
                                            {"slides", entries.size()}}},
                              {"written", all.written}, {"existing", all.existing}, {"patches", all.patches},
                              {"seconds", all.seconds}, {"failed", all.failed}});
  }
  return all;
}

}  // namespace tessera::app
