// Per-slide HDF5 files in the layout CLAM and TRIDENT use: dataset `coords` (N, 2) level-0 (x, y) and,
// for feature bags, `features` (N, D) float32 ((1, N, D) also loads). Patch-coordinate files carry the
// grid as attributes on `coords` (patch_size, patch_level, ...). Files are written under a temporary name
// and renamed, so a killed run never leaves a half-written file behind.
#pragma once
#include <torch/types.h>

#include <map>
#include <memory>
#include <string>

#include "tessera/data/patches.h"
#include "tessera/slides/tissue.h"

namespace tessera::slides {

// Read access to one file; all calls are serialised (the system HDF5 is not thread-safe).
//
// libhdf5 1.10 is not safe on malformed files: the fuzz campaign found it crashing inside its own
// object-header and attribute parsing (tests/fuzz/corpus/h5/regression-segv-libhdf5-*), where no check
// made before a call can help. So the first time a process opens a file (by path, size and modification
// time), a child process (fork) first reads what tessera reads of it (the datasets' shapes, the grid
// attributes, their first and last rows) with its address space limited to 2 GiB more than it started
// with (libhdf5 also allocates what a malformed header declares). If the child dies, or its reads fail,
// the file is refused with an error and the parent never hands it to libhdf5.
class H5File {
 public:
  explicit H5File(const std::string& path);  // errors name the file
  ~H5File();
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;

  const std::string& path() const { return path_; }
  bool has(const std::string& dataset) const;
  std::vector<int64_t> shape(const std::string& dataset) const;
  // Rows [begin, end) of a 2-D (or (1, N, D)) dataset as float32 or int64.
  torch::Tensor rows(const std::string& dataset, int64_t begin, int64_t end, torch::ScalarType type) const;
  // Arbitrary rows in the given order; reads each run of consecutive rows once.
  torch::Tensor gather(const std::string& dataset, const torch::Tensor& idx, torch::ScalarType type) const;
  // The named string and numeric attributes of a dataset, as text (absent ones left out). Each is opened by
  // name: libhdf5 1.10's open-by-index builds a table of every attribute and crashes freeing it when one is
  // malformed (a fuzz finding, tests/fuzz/corpus/h5/regression-segv-libhdf5-attribute-table).
  std::map<std::string, std::string> attributes(const std::string& dataset, const std::vector<std::string>& names) const;

 private:
  struct Unguarded {};
  H5File(const std::string& path, Unguarded);  // opens without the child process's check
  // What the child reads: every call libhdf5 parses metadata or data for, as the readers make them.
  void probe() const;
  std::string path_;
  int64_t file_ = -1;
};

// Coordinates with the grid and a settings hash stored as attributes.
void write_coords(const std::string& path, const PatchCoords& grid, const std::string& settings_hash);
PatchCoords read_coords(const std::string& path);
std::string read_settings_hash(const std::string& path);  // "" when absent or unreadable

// Streams a feature bag to disk: `features` (N, D) float32 + `coords`, written chunk by chunk.
class FeatureWriter {
 public:
  // coords carry the grid attributes (as in coordinate files); attributes go on `features`.
  FeatureWriter(const std::string& path, const PatchCoords& grid, int64_t dim,
                const std::map<std::string, std::string>& attributes);
  ~FeatureWriter();  // without finish(): removes the temporary file
  void write(int64_t begin, const torch::Tensor& features);  // rows [begin, begin + k)
  void finish();  // closes and renames into place

 private:
  std::string path_, tmp_;
  int64_t file_ = -1, rows_ = 0, dim_ = 0;
};

// A feature bag as a PatchBag: the "patches" are feature rows (k, D), read from disk on demand, so
// nothing N-sized is held in memory.
class FeatureBag final : public data::PatchBag {
 public:
  explicit FeatureBag(const std::string& path);
  int64_t size() const override { return rows_; }
  int64_t dim() const { return dim_; }
  torch::Tensor gather(const torch::Tensor& idx) const override;
  torch::Tensor range(int64_t begin, int64_t end) const override;
  bool on_disk() const override { return true; }
  torch::Tensor coords() const;  // (N, 2) int64, or undefined when the file has none

 private:
  std::shared_ptr<H5File> file_;
  int64_t rows_ = 0, dim_ = 0;
};

}  // namespace tessera::slides
