#include "tessera/slides/slide_dataset.h"

#include <torch/torch.h>

#include <cstring>
#include <set>
#include <filesystem>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/data/image_io.h"
#include "tessera/core/log.h"
#include "tessera/data/classes.h"
#include "tessera/data/csv_images.h"
#include "tessera/slides/h5.h"

namespace tessera::slides {
namespace fs = std::filesystem;

SlideBag::SlideBag(SlideReaderPtr reader, PatchCoords grid, int64_t workers, std::vector<float> mean,
                   std::vector<float> std)
    : reader_(std::move(reader)), grid_(std::move(grid)), workers_(std::max<int64_t>(0, workers)) {
  TESSERA_CHECK(grid_.count() > 0, "slide '", reader_->path(), "' has zero patches");
  TESSERA_CHECK(mean.size() == std.size() && (mean.empty() || mean.size() == 3), "slide normalisation needs 3 means and 3 stds");
  if (!mean.empty()) {
    mean_ = torch::tensor(mean).view({1, 3, 1, 1});
    std_ = torch::tensor(std).view({1, 3, 1, 1});
  }
}

torch::Tensor SlideBag::gather(const torch::Tensor& idx) const {
  const auto flat = idx.to(torch::kCPU, torch::kLong).contiguous();
  const int64_t k = flat.numel(), P = grid_.patch, N = size(), plane = P * P;
  const auto* i = flat.data_ptr<int64_t>();
  const auto coords = grid_.coords.contiguous();
  const auto* c = coords.data_ptr<int64_t>();
  // The output is allocated before any read, so a prefetched chunk always coexists with the chunk
  // being encoded (a deterministic peak), and patches are converted straight into it (no staging).
  // Reader threads write raw floats: no tensor ops on `out`, whose inference state is the caller's.
  auto out = torch::empty({k, 3, P, P}, torch::kFloat32);
  auto* dst = out.data_ptr<float>();
  float scale[3], shift[3];
  for (int ch = 0; ch < 3; ++ch) {
    const float m = mean_.defined() ? mean_.view(-1)[ch].item<float>() : 0.0f;
    const float s = std_.defined() ? std_.view(-1)[ch].item<float>() : 1.0f;
    scale[ch] = 1.0f / (255.0f * s);  // (v / 255 - m) / s
    shift[ch] = -m / s;
  }
  const auto read_range = [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      TESSERA_CHECK(i[j] >= 0 && i[j] < N, "patch index ", i[j], " out of range [0, ", N, ")");
      const auto patch = read_patch(*reader_, grid_, c[2 * i[j]], c[2 * i[j] + 1]).contiguous();
      const auto* src = patch.data_ptr<uint8_t>();
      float* o = dst + j * 3 * plane;
      for (int64_t p = 0; p < plane; ++p) {
        for (int ch = 0; ch < 3; ++ch) o[ch * plane + p] = src[3 * p + ch] * scale[ch] + shift[ch];
      }
    }
  };
  // Reads run on the bag's pool, whose threads release libvips' per-thread buffers when they end:
  // libvips keeps buffers per calling thread, and threads it did not create leak them otherwise.
  {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    if (!pool_) pool_ = std::make_unique<ThreadPool>(std::max<int64_t>(1, workers_), data::release_vips_thread);
  }
  const int64_t parts = std::min(pool_->size(), k);
  pool_->parallel_for(parts, [&](int64_t t) { read_range(k * t / parts, k * (t + 1) / parts); });
  return out;
}

SlideDataOptions slide_data_options(const Config& c, const std::string& split) {
  SlideDataOptions o;
  o.manifest = c.data.manifest;
  o.split = split;
  o.features = c.data.dataset == "feature_bags";
  o.features_dir = c.slide.features_dir;
  o.cache_dir = c.slide.cache_dir;
  o.backend = c.slide.backend;
  o.grid.patch = c.data.patch;
  o.grid.stride = c.data.stride;
  o.grid.level = static_cast<int>(c.slide.level);
  o.grid.mpp = c.slide.mpp;
  o.grid.tissue.method = c.slide.tissue;
  o.grid.tissue.min_fraction = c.slide.min_tissue;
  o.grid.annotations = c.slide.annotations;
  o.skip_errors = c.slide.skip_errors;
  o.classes = c.data.classes;
  o.read_workers = c.slide.read_workers;
  o.mean = data::parse_floats(c.data.mean, "data.mean");
  o.std = data::parse_floats(c.data.std, "data.std");
  return o;
}

std::vector<Task> manifest_tasks(const std::vector<ManifestEntry>& entries, const std::string& manifest,
                                 const std::string& classes) {
  std::map<std::string, std::vector<std::string>> seen;
  for (const auto& e : entries) {
    for (const auto& [task, label] : e.labels) seen[task].push_back(label);
  }
  TESSERA_CHECK(classes.empty() || seen.size() <= 1, "data.classes names the classes of one label column, but ", manifest,
                " has ", seen.size(), "; leave data.classes empty (each column's names are sorted)");
  std::vector<Task> tasks;
  for (const auto& [task, labels] : seen) {
    const std::string origin = "label column '" + task + "' of " + manifest;
    auto list = data::resolve_classes(classes, labels, origin);
    std::set<int64_t> present;
    for (const auto& l : labels) present.insert(data::class_index(list, l, origin));
    TESSERA_CHECK(present.size() >= 2, origin, " holds only class ", labels.front(),
                  "; a classifier needs slides of at least two classes");
    const int64_t count = list.count > 0 ? list.count : *present.rbegin() + 1;
    if (count == 2) tasks.push_back({task, "sigmoid", 1, false, list.names});
    else tasks.push_back({task, "softmax", count, false, list.names});
  }
  return tasks;
}

namespace {
// The classes of a task as resolved (a binary sigmoid task has two: negative, positive).
data::ClassList classes_of(const Task& t) {
  return data::task_classes(t.classes, t.activation == "sigmoid" ? 2 : t.outputs);
}
}  // namespace

SlideDataset::SlideDataset(SlideDataOptions options) : options_(std::move(options)) {
  auto& o = options_;
  if (o.cache_dir.empty()) o.cache_dir = (fs::path(o.manifest).parent_path() / "tessera-cache").string();
  TESSERA_CHECK(!o.features || !o.features_dir.empty(), "feature bags need slide.features_dir (tessera extract-features --out)");
  const auto all = read_manifest(o.manifest);
  tasks_ = o.tasks.empty() ? manifest_tasks(all, o.manifest, o.classes) : o.tasks;  // the whole manifest: every split agrees
  for (const auto& e : select_split(all, o.split)) {
    try {
      std::map<std::string, int64_t> labels;
      for (const auto& t : tasks_) {
        TESSERA_CHECK(e.labels.count(t.name), "slide '", e.id, "' has no '", t.name, "' label in ", o.manifest);
        labels[t.name] = data::class_index(classes_of(t), e.labels.at(t.name),
                                           o.manifest + ":" + std::to_string(e.label_lines.at(t.name)));
      }
      if (o.features) {
        FeatureBag bag((fs::path(o.features_dir) / (e.id + ".h5")).string());
      } else {
        const auto reader = open_slide(e.path, o.backend);
        cached_tissue_patches(e, *reader, o.grid, o.cache_dir);
      }
      entries_.push_back(e);
      labels_.push_back(std::move(labels));
    } catch (const Error& err) {
      if (!o.skip_errors) fail("slide '", e.id, "' (", e.path, "): ", err.what(), " (or set slide.skip_errors to skip bad slides)");
      log::warn("skipping slide {}: {}", e.id, err.what());
      failures_.push_back({e.id, e.path, "failed", 0, err.what(), 0});
    }
  }
  TESSERA_CHECK(!entries_.empty(), "no usable slides in ", o.manifest, o.split.empty() ? "" : " (split " + o.split + ")",
                failures_.empty() ? "" : "; all failed, first: " + failures_.front().reason);
}

int64_t SlideDataset::label(int64_t index, const std::string& task) const {
  const auto& labels = labels_.at(index);
  return labels.count(task) ? labels.at(task) : -1;
}

std::map<std::string, std::vector<int64_t>> SlideDataset::class_counts() const {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& t : tasks_) {
    auto& counts = out[t.name];
    counts.assign(static_cast<size_t>(classes_of(t).count), 0);
    for (const auto& labels : labels_) ++counts.at(static_cast<size_t>(labels.at(t.name)));
  }
  return out;
}

std::string SlideDataset::source() const {
  return "the " + (options_.split.empty() ? std::string("whole") : options_.split) + " split of data.manifest '" +
         options_.manifest + "'";
}

data::PatchBagPtr SlideDataset::bag(int64_t index) const {
  const auto& e = entries_.at(index);
  if (options_.features) return std::make_shared<FeatureBag>((fs::path(options_.features_dir) / (e.id + ".h5")).string());
  auto reader = open_slide(e.path, options_.backend);
  auto coords = cached_tissue_patches(e, *reader, options_.grid, options_.cache_dir);
  return std::make_shared<SlideBag>(std::move(reader), std::move(coords), options_.read_workers, options_.mean, options_.std);
}

data::Sample SlideDataset::get(int64_t index) const {
  data::Sample s;
  s.bag = bag(index);
  for (const auto& t : tasks_) {
    const int64_t label = labels_.at(index).at(t.name);
    s.labels[t.name] = t.activation == "sigmoid" ? torch::full({1}, static_cast<float>(label)) : torch::tensor(label, torch::kLong);
  }
  return s;
}

torch::Tensor SlideDataset::picture(int64_t index) const {
  TESSERA_CHECK(!options_.features, "feature bags have no picture; use the slide itself");
  const auto reader = open_slide(entries_.at(index).path, options_.backend);
  const int level = reader->level_for_downsample(std::max(reader->levels()[0].width, reader->levels()[0].height) / 1024.0);
  return reader->read_level(level).permute({2, 0, 1}).to(torch::kFloat32).div(255);
}

namespace {
data::DatasetInfo slide_info(bool features) {
  data::DatasetInfo info;
  info.name = features ? "feature_bags" : "slides";
  info.summary = features ? "pre-extracted feature bags (HDF5, CLAM/TRIDENT layout) listed in a slide manifest"
                          : "whole-slide images listed in a manifest, tissue patches streamed from the files";
  info.input = features ? "features" : "slide";
  info.multitask = true;  // one softmax task per label column
  info.make = [](const Config& c, data::Splits splits, const std::vector<Task>* tasks) {
    const auto make = [&](const std::string& split) -> data::DatasetPtr {
      auto o = slide_data_options(c, split);
      if (tasks) {
        o.tasks = *tasks;
      }
      return std::make_shared<SlideDataset>(o);
    };
    const bool has_test = !select_split(read_manifest(c.data.manifest), "test").empty();
    return std::pair<data::DatasetPtr, data::DatasetPtr>{splits.train ? make("train") : nullptr,
                                                         splits.test && has_test ? make("test") : nullptr};
  };
  info.validate = [](const Config& c) {
    TESSERA_CHECK(!c.data.manifest.empty(), "data.dataset ", c.data.dataset,
                  " needs data.manifest (a CSV with slide,label[,split] columns)");
  };
  return info;
}
}  // namespace

data::DatasetInfo slides_dataset() { return slide_info(false); }
data::DatasetInfo feature_bags_dataset() { return slide_info(true); }

}  // namespace tessera::slides
