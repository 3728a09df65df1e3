// Slide preprocessing: tissue patch coordinates per slide, cached under a hash of the settings and
// the slide file, so a rerun (or training) reuses them; runs over a manifest are parallel, resumable
// (finished slides are skipped) and leave a summary and inspection thumbnails.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "tessera/slides/manifest.h"
#include "tessera/slides/tissue.h"

namespace tessera::slides {

// Hex hash of the grid settings and the identity (absolute path, size, modification time) of the slide
// file and, with grid.annotations, of its annotation file.
std::string settings_hash(const ManifestEntry& slide, const PatchGridOptions& grid);
// <cache_dir>/coords/<id>-<hash>.h5
std::string coords_path(const std::string& cache_dir, const ManifestEntry& slide, const PatchGridOptions& grid);
// The slide's tissue patches, restricted to its annotated regions when grid.annotations names a folder
// (the slide's <id>.geojson must exist there; a slide whose regions hold no tissue patch is an error).
PatchCoords slide_patches(const ManifestEntry& slide, const SlideReader& reader, const PatchGridOptions& grid,
                          TissueMask* mask_out = nullptr);
// The slide's coordinates from the cache, computing (slide_patches) and caching them first when absent.
PatchCoords cached_tissue_patches(const ManifestEntry& slide, const SlideReader& reader, const PatchGridOptions& grid,
                                  const std::string& cache_dir, bool* was_cached = nullptr);

// The mask level as a picture (3, h, w) in [0, 1], at most max_side: tissue tinted green, kept patches outlined.
torch::Tensor draw_thumbnail(const SlideReader& slide, const TissueMask& mask, const PatchCoords& grid, int64_t max_side);

struct PreprocessOptions {
  std::string manifest, out_dir;  // out_dir is the cache directory training reads (slide.cache_dir)
  PatchGridOptions grid;
  std::string backend = "auto";
  int64_t workers = 2;        // slides processed at once
  bool skip_errors = false;   // record bad slides and go on
  int64_t thumbnail = 1024;   // longest side of inspection thumbnails; 0: none
  double dist_timeout = 300;  // data-parallel launches: seconds a rank waits for the others
  // Asked before each slide (any thread); true stops the run: slides in progress finish, no new one
  // starts, and the summary lists the slides reached. Empty: never.
  std::function<bool()> interrupted;
};

struct SlideOutcome {
  std::string id, path, status;  // done | cached | failed
  int64_t patches = 0;
  std::string reason;
  double seconds = 0;
};

struct PreprocessSummary {
  std::vector<SlideOutcome> slides;  // manifest order
  int64_t count(const std::string& status) const;
};

// Writes <out>/coords/*.h5, <out>/thumbnails/<id>.png, <out>/summary.json and summary.csv. Without
// skip_errors the first failure stops the run (after writing the summary) with an error naming the slide.
// Launched as several ranks (torchrun, SLURM, tessera launch), rank r takes slides r, r + W, ... and rank
// 0 writes the one summary of them all.
PreprocessSummary preprocess_slides(const PreprocessOptions& options);

}  // namespace tessera::slides
