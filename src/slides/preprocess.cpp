#include "tessera/slides/preprocess.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>

#include "tessera/core/distributed.h"
#include "tessera/core/error.h"
#include "tessera/core/run_dir.h"
#include "tessera/core/thread_pool.h"
#include "tessera/core/log.h"
#include "tessera/data/image_io.h"
#include "tessera/slides/annotations.h"
#include "tessera/slides/h5.h"

namespace tessera::slides {
namespace fs = std::filesystem;

namespace {

std::string file_identity(const std::string& path) {
  std::error_code ec;
  const auto abs = fs::absolute(path, ec).string();
  const auto size = fs::file_size(path, ec);
  const auto mtime = fs::last_write_time(path, ec).time_since_epoch().count();
  return fmt::format("{}|{}|{}", abs, size, mtime);
}

}  // namespace

std::string settings_hash(const ManifestEntry& slide, const PatchGridOptions& grid) {
  std::string text = settings_key(grid) + "|" + file_identity(slide.path);
  if (!grid.annotations.empty()) text += "|annotations=" + file_identity(annotation_path(grid.annotations, slide.id));
  uint64_t h = 1469598103934665603ULL;  // FNV-1a 64
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ULL;
  return fmt::format("{:016x}", h);
}

std::string coords_path(const std::string& cache_dir, const ManifestEntry& slide, const PatchGridOptions& grid) {
  return (fs::path(cache_dir) / "coords" / (slide.id + "-" + settings_hash(slide, grid) + ".h5")).string();
}

PatchCoords slide_patches(const ManifestEntry& slide, const SlideReader& reader, const PatchGridOptions& grid,
                          TissueMask* mask_out) {
  auto coords = tissue_patches(reader, grid, mask_out);
  if (grid.annotations.empty()) return coords;
  try {
    coords = keep_annotated(std::move(coords), read_annotations(annotation_path(grid.annotations, slide.id)));
  } catch (const Error& e) {
    fail("slide '", slide.path, "': ", e.what());
  }
  return coords;
}

PatchCoords cached_tissue_patches(const ManifestEntry& slide, const SlideReader& reader, const PatchGridOptions& grid,
                                  const std::string& cache_dir, bool* was_cached) {
  const auto path = coords_path(cache_dir, slide, grid);
  const auto hash = settings_hash(slide, grid);
  if (fs::exists(path) && read_settings_hash(path) == hash) {
    if (was_cached) *was_cached = true;
    return read_coords(path);
  }
  if (was_cached) *was_cached = false;
  auto coords = slide_patches(slide, reader, grid);
  fs::create_directories(fs::path(path).parent_path());
  write_coords(path, coords, hash);
  return coords;
}

torch::Tensor draw_thumbnail(const SlideReader& slide, const TissueMask& mask, const PatchCoords& grid, int64_t max_side) {
  // The picture from the level nearest max_side (finer than the mask when the mask level is small).
  const auto& l0 = slide.levels().front();
  const int level = slide.level_for_downsample(
      std::max(1.0, std::min(mask.downsample, static_cast<double>(std::max(l0.width, l0.height)) / max_side)));
  auto img = slide.read_level(level).permute({2, 0, 1}).to(torch::kFloat32).div(255).unsqueeze(0);
  const double scale = std::min(1.0, static_cast<double>(max_side) / std::max(img.size(2), img.size(3)));
  namespace F = torch::nn::functional;
  const std::vector<int64_t> size = {std::max<int64_t>(1, std::llround(img.size(2) * scale)),
                                     std::max<int64_t>(1, std::llround(img.size(3) * scale))};
  img = F::interpolate(img, F::InterpolateFuncOptions().size(size).mode(torch::kArea)).squeeze(0);
  const auto m = F::interpolate(mask.mask.to(torch::kFloat32).view({1, 1, mask.mask.size(0), mask.mask.size(1)}),
                                F::InterpolateFuncOptions().size(size).mode(torch::kNearest))
                     .view({1, size[0], size[1]});
  const auto green = torch::tensor({0.1f, 0.8f, 0.2f}).view({3, 1, 1});
  img = img * (1 - 0.35 * m) + green * (0.35 * m);
  // Kept patches outlined in blue where they are large enough to see.
  const double to_thumb = scale / slide.levels()[level].downsample;  // level-0 pixels -> thumbnail pixels
  const int64_t side = static_cast<int64_t>(grid.footprint * to_thumb);
  if (side >= 4) {
    const auto c = (grid.coords.to(torch::kFloat64) * to_thumb).round().to(torch::kLong).contiguous();
    const auto* p = c.data_ptr<int64_t>();
    const auto blue = torch::tensor({0.1f, 0.2f, 0.9f}).view({3, 1});
    for (int64_t i = 0; i < c.size(0); ++i) {
      const int64_t x0 = std::min(p[2 * i], size[1] - 1), y0 = std::min(p[2 * i + 1], size[0] - 1);
      const int64_t x1 = std::min(x0 + side, size[1]), y1 = std::min(y0 + side, size[0]);
      for (const int64_t y : {y0, y1 - 1}) img.select(1, y).slice(1, x0, x1).copy_(blue.expand({3, x1 - x0}));
      for (const int64_t x : {x0, x1 - 1}) img.select(2, x).slice(1, y0, y1).copy_(blue.expand({3, y1 - y0}));
    }
  }
  return img.clamp(0, 1);
}

int64_t PreprocessSummary::count(const std::string& status) const {
  return std::count_if(slides.begin(), slides.end(), [&](const SlideOutcome& s) { return s.status == status; });
}

namespace {

void write_summary(const fs::path& dir, const PreprocessSummary& summary) {
  nlohmann::json j;
  j["done"] = summary.count("done");
  j["cached"] = summary.count("cached");
  j["failed"] = summary.count("failed");
  j["slides"] = nlohmann::json::array();
  std::string csv = "id,slide,status,patches,seconds,reason\n";
  for (const auto& s : summary.slides) {
    if (s.status.empty()) continue;  // not reached (run stopped early)
    j["slides"].push_back({{"id", s.id}, {"slide", s.path}, {"status", s.status}, {"patches", s.patches},
                           {"seconds", s.seconds}, {"reason", s.reason}});
    std::string reason = s.reason;
    std::replace(reason.begin(), reason.end(), ',', ';');
    csv += fmt::format("{},{},{},{},{:.2f},{}\n", s.id, s.path, s.status, s.patches, s.seconds, reason);
  }
  write_file_atomic((dir / "summary.json").string(), j.dump(2) + "\n");
  write_file_atomic((dir / "summary.csv").string(), csv);
}

}  // namespace

namespace {

// Every rank's outcomes merged into `summary` (each rank filled only its own slides).
void gather_outcomes(PreprocessSummary& summary) {
  nlohmann::json mine = nlohmann::json::array();
  for (size_t i = 0; i < summary.slides.size(); ++i) {
    const auto& s = summary.slides[i];
    if (s.status.empty()) continue;
    mine.push_back({{"i", i}, {"id", s.id}, {"slide", s.path}, {"status", s.status}, {"patches", s.patches},
                    {"seconds", s.seconds}, {"reason", s.reason}});
  }
  for (const auto& text : dist::all_gather_text(mine.dump(), "preprocess summary gather")) {
    for (const auto& s : nlohmann::json::parse(text)) {
      summary.slides[s["i"].get<size_t>()] = {s["id"].get<std::string>(),     s["slide"].get<std::string>(),
                                               s["status"].get<std::string>(), s["patches"].get<int64_t>(),
                                               s["reason"].get<std::string>(), s["seconds"].get<double>()};
    }
  }
}

}  // namespace

PreprocessSummary preprocess_slides(const PreprocessOptions& o) {
  dist::init_from_env(o.dist_timeout);
  check_grid_options(o.grid);
  TESSERA_CHECK(o.workers >= 1 && o.workers <= 256, "workers must be in [1, 256], got ", o.workers);
  const auto entries = read_manifest(o.manifest);
  TESSERA_CHECK(!o.out_dir.empty(), "preprocessing needs an output folder (--out)");
  const fs::path out(o.out_dir);
  fs::create_directories(out / "coords");
  if (o.thumbnail > 0) fs::create_directories(out / "thumbnails");
  PreprocessSummary summary;
  summary.slides.resize(entries.size());
  std::atomic<bool> stop{false};
  std::mutex mutex;
  std::string first_error;
  const auto work = [&](int64_t i) {
    {
      if (stop || (o.interrupted && o.interrupted())) {
        stop = true;
        return;
      }
      const auto& e = entries[i];
      SlideOutcome r{e.id, e.path, "", 0, "", 0};
      const auto start = std::chrono::steady_clock::now();
      try {
        const auto path = coords_path(o.out_dir, e, o.grid);
        if (fs::exists(path) && read_settings_hash(path) == settings_hash(e, o.grid)) {
          r.status = "cached";
          r.patches = read_coords(path).count();
        } else {
          const auto reader = open_slide(e.path, o.backend);
          TissueMask mask;
          const auto coords = slide_patches(e, *reader, o.grid, &mask);
          if (o.thumbnail > 0) {
            data::write_png((out / "thumbnails" / (e.id + ".png")).string(), draw_thumbnail(*reader, mask, coords, o.thumbnail));
          }
          write_coords(path, coords, settings_hash(e, o.grid));
          r.status = "done";
          r.patches = coords.count();
        }
      } catch (const std::exception& err) {
        r.status = "failed";
        r.reason = err.what();
        std::lock_guard<std::mutex> lock(mutex);
        if (!o.skip_errors && first_error.empty()) {
          first_error = err.what();
          stop = true;
        }
      }
      r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      log::info("{} {}: {} ({} patches)", r.status, e.id, r.reason.empty() ? "ok" : r.reason, r.patches);
      std::lock_guard<std::mutex> lock(mutex);
      summary.slides[i] = r;
    }
  };
  std::vector<int64_t> mine;  // this rank's slides
  for (int64_t i = dist::rank(); i < static_cast<int64_t>(entries.size()); i += dist::world_size()) mine.push_back(i);
  {
    // Workers may use libvips: they free its per-thread buffers as they end.
    ThreadPool pool(o.workers, data::release_vips_thread);
    pool.parallel_for(static_cast<int64_t>(mine.size()), [&](int64_t k) { work(mine[k]); });
  }
  gather_outcomes(summary);
  if (dist::is_main()) write_summary(out, summary);
  if (first_error.empty() && !o.skip_errors) {  // another rank's failure stops this one too
    for (const auto& s : summary.slides) {
      if (s.status == "failed") {
        first_error = s.id + " (" + s.path + "): " + s.reason;
        break;
      }
    }
  }
  if (!first_error.empty()) {
    fail(first_error, " (preprocessing stopped; finished slides are kept and skipped on the next run; pass --skip-errors to go on past bad slides)");
  }
  std::vector<SlideOutcome> reached;
  for (auto& s : summary.slides) {
    if (!s.status.empty()) reached.push_back(s);
  }
  summary.slides = reached;
  const auto failed = summary.count("failed");
  if (failed > 0 && failed == static_cast<int64_t>(summary.slides.size())) {
    const auto& first = summary.slides.front();
    fail("every slide failed (", failed, " of ", failed, "; ", (out / "summary.json").string(), " lists why), first ", first.id,
         " (", first.path, "): ", first.reason);
  }
  return summary;
}

}  // namespace tessera::slides
