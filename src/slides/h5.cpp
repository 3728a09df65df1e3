#include "tessera/slides/h5.h"

#include <hdf5.h>
#include <torch/torch.h>

#include <csignal>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tessera/core/error.h"

// Provided by a sanitizer runtime when one is linked (make test-asan, make fuzz); null otherwise.
extern "C" void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

namespace tessera::slides {
namespace {

// The attributes tessera reads (on coords): the patch grid and the settings hash of a coordinate cache.
const std::vector<std::string> kGridAttributes = {"patch_size", "patch_level", "footprint", "stride", "mpp",
                                                  "settings_hash"};

// Debian's serial HDF5 is built without thread safety: every call goes through this lock.
std::recursive_mutex& h5_mutex() {
  static std::recursive_mutex m;
  return m;
}

void quiet_errors() {
  static const bool once = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors are reported by us, with the file name
    return true;
  }();
  (void)once;
}

hid_t memory_type(torch::ScalarType type) {
  if (type == torch::kFloat32) return H5T_NATIVE_FLOAT;
  if (type == torch::kInt64) return H5T_NATIVE_INT64;
  fail("HDF5 reads support float32 and int64, not ", c10::toString(type));
}

// Closes an HDF5 handle at scope exit.
struct Handle {
  hid_t id;
  herr_t (*close)(hid_t);
  ~Handle() {
    if (id >= 0) close(id);
  }
};

void write_attribute(hid_t object, const std::string& name, const std::string& value) {
  Handle type{H5Tcopy(H5T_C_S1), H5Tclose};
  H5Tset_size(type.id, std::max<size_t>(1, value.size()));
  Handle space{H5Screate(H5S_SCALAR), H5Sclose};
  Handle attr{H5Acreate2(object, name.c_str(), type.id, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  H5Awrite(attr.id, type.id, value.c_str());
}

void write_attribute(hid_t object, const std::string& name, double value, bool integer) {
  Handle space{H5Screate(H5S_SCALAR), H5Sclose};
  const hid_t type = integer ? H5T_NATIVE_INT64 : H5T_NATIVE_DOUBLE;
  Handle attr{H5Acreate2(object, name.c_str(), type, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  if (integer) {
    const int64_t v = static_cast<int64_t>(value);
    H5Awrite(attr.id, type, &v);
  } else {
    H5Awrite(attr.id, type, &value);
  }
}

hid_t create_dataset(hid_t file, const std::string& name, hid_t type, const std::vector<hsize_t>& dims) {
  Handle space{H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose};
  const hid_t d = H5Dcreate2(file, name.c_str(), type, space.id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  TESSERA_CHECK(d >= 0, "cannot create dataset '", name, "' (", dims.size(), "-D)");
  return d;
}

void write_rows(hid_t dataset, int64_t begin, const torch::Tensor& rows, hid_t type) {
  const auto t = rows.contiguous();
  const hsize_t start[2] = {static_cast<hsize_t>(begin), 0};
  const hsize_t count[2] = {static_cast<hsize_t>(t.size(0)), static_cast<hsize_t>(t.size(1))};
  Handle file_space{H5Dget_space(dataset), H5Sclose};
  H5Sselect_hyperslab(file_space.id, H5S_SELECT_SET, start, nullptr, count, nullptr);
  Handle mem_space{H5Screate_simple(2, count, nullptr), H5Sclose};
  TESSERA_CHECK(H5Dwrite(dataset, type, mem_space.id, file_space.id, H5P_DEFAULT, t.data_ptr()) >= 0,
                "HDF5 write failed (disk full?)");
}

// CLAM's names (patch_size, patch_level) plus what tessera needs to map coordinates back.
void write_grid_attributes(hid_t coords, const PatchCoords& g) {
  write_attribute(coords, "patch_size", static_cast<double>(g.patch), true);
  write_attribute(coords, "patch_level", g.level, true);
  write_attribute(coords, "footprint", static_cast<double>(g.footprint), true);
  write_attribute(coords, "stride", static_cast<double>(g.stride), true);
  write_attribute(coords, "mpp", g.mpp, false);
}

}  // namespace

H5File::H5File(const std::string& path, Unguarded) : path_(path) {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  quiet_errors();
  TESSERA_CHECK(std::filesystem::exists(path), "HDF5 file '", path, "' does not exist");
  file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  TESSERA_CHECK(file_ >= 0, "cannot open '", path, "' as HDF5; the file is corrupt, truncated or not HDF5");
}

H5File::H5File(const std::string& path) : path_(path) {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  quiet_errors();
  TESSERA_CHECK(std::filesystem::exists(path), "HDF5 file '", path, "' does not exist");
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  const auto modified = std::filesystem::last_write_time(path, ec).time_since_epoch().count();
  const std::string key = path + '\n' + std::to_string(size) + '\n' + std::to_string(modified);
  static std::set<std::string> checked;  // under h5_mutex
  if (!checked.count(key)) {
    // The child runs HDF5 (whose lock this thread holds) and the C library only: no other lock another
    // thread may have held at the fork is taken. Its address space may grow by 2 GiB at most: libhdf5
    // allocates what a malformed object header declares (4 GiB from a few hundred bytes, a fuzz finding),
    // which then fails in the child. An error in the child comes back through the pipe and is the
    // parent's, which never gives such a file to libhdf5 itself.
    int pipe_fds[2];
    TESSERA_CHECK(pipe(pipe_fds) == 0, "cannot check '", path, "' (pipe: ", std::strerror(errno), ")");
    const pid_t child = fork();
    if (child < 0) {
      close(pipe_fds[0]);
      close(pipe_fds[1]);
      fail("cannot start the process that checks '", path, "' (fork: ", std::strerror(errno), ")");
    }
    if (child == 0) {
      close(pipe_fds[0]);
      // The lock is held by the forking thread, which does not exist here (a recursive mutex records its
      // owner's thread id): the child's only thread starts with a fresh one.
      new (&h5_mutex()) std::recursive_mutex;
      // The child dies quietly: default signal dispositions, and no sanitizer death callback (a fuzzer's
      // would record the parent's input as its crash).
      for (const int s : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL}) std::signal(s, SIG_DFL);
      if (__sanitizer_set_death_callback != nullptr) __sanitizer_set_death_callback(nullptr);
      long pages = 0;
      if (FILE* statm = std::fopen("/proc/self/statm", "r")) {
        if (std::fscanf(statm, "%ld", &pages) != 1) pages = 0;
        std::fclose(statm);
      }
      if (pages > 0) {
        const rlim_t limit = static_cast<rlim_t>(pages) * sysconf(_SC_PAGESIZE) + (rlim_t{2} << 30);
        const rlimit address_space{limit, limit};
        setrlimit(RLIMIT_AS, &address_space);
      }
      int code = 0;
      try {
        H5File(path, Unguarded{}).probe();
      } catch (const Error& e) {
        const std::string message = e.what();
        const ssize_t written = write(pipe_fds[1], message.data(), message.size());
        code = written >= 0 ? 3 : 4;
      } catch (...) {
        code = 4;
      }
      _exit(code);
    }
    close(pipe_fds[1]);
    std::string message;
    char buffer[4096];
    for (ssize_t n; (n = read(pipe_fds[0], buffer, sizeof(buffer))) != 0;) {
      if (n > 0) message.append(buffer, static_cast<size_t>(n));
      else if (errno != EINTR) break;
    }
    close(pipe_fds[0]);
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 3) throw Error(message);  // the child's error, as is
    TESSERA_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "HDF5 file '", path, "' crashes libhdf5 (",
                  WIFSIGNALED(status) ? std::string("signal ") + std::to_string(WTERMSIG(status))
                                      : "exit status " + std::to_string(WEXITSTATUS(status)),
                  " in a process that read it first): the file is malformed or hostile; write it again (tessera "
                  "preprocess / extract-features) or get it from its source again");
    checked.insert(key);
  }
  file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  TESSERA_CHECK(file_ >= 0, "cannot open '", path, "' as HDF5; the file is corrupt, truncated or not HDF5");
}

void H5File::probe() const {
  for (const char* dataset : {"coords", "features"}) {
    if (!has(dataset)) continue;
    const auto dims = shape(dataset);
    attributes(dataset, kGridAttributes);
    const bool leading_one = dims.size() == 3 && dims[0] == 1;
    if (dims.empty() || (dims.size() == 3 && !leading_one) || dims.size() > 3) continue;  // rows() refuses these
    // The first and last rows, read as rows() reads them (a hyperslab into native memory of one row).
    const hsize_t n = dims[leading_one ? 1 : 0];
    const hsize_t width = dims.size() == 1 ? 1 : dims.back();
    if (n == 0 || width == 0 || width > (hsize_t{1} << 24)) continue;
    Handle d{H5Dopen2(file_, dataset, H5P_DEFAULT), H5Dclose};
    if (d.id < 0) continue;
    std::vector<double> row(width);
    for (const hsize_t r : {hsize_t{0}, n - 1}) {
      Handle space{H5Dget_space(d.id), H5Sclose};
      std::vector<hsize_t> start(dims.size(), 0), count(dims.begin(), dims.end());
      start[leading_one ? 1 : 0] = r;
      count[leading_one ? 1 : 0] = 1;
      H5Sselect_hyperslab(space.id, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
      Handle memory{H5Screate_simple(1, &width, nullptr), H5Sclose};
      H5Dread(d.id, H5T_NATIVE_DOUBLE, memory.id, space.id, H5P_DEFAULT, row.data());
    }
  }
}

H5File::~H5File() {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  if (file_ >= 0) H5Fclose(file_);
}

bool H5File::has(const std::string& dataset) const {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  return H5Lexists(file_, dataset.c_str(), H5P_DEFAULT) > 0;
}

std::vector<int64_t> H5File::shape(const std::string& dataset) const {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  TESSERA_CHECK(has(dataset), "'", path_, "' has no dataset '", dataset, "'");
  Handle d{H5Dopen2(file_, dataset.c_str(), H5P_DEFAULT), H5Dclose};
  TESSERA_CHECK(d.id >= 0, "cannot open dataset '", dataset, "' of '", path_, "'; the file is corrupt or truncated");
  Handle space{H5Dget_space(d.id), H5Sclose};
  const int rank = H5Sget_simple_extent_ndims(space.id);
  TESSERA_CHECK(rank >= 1 && rank <= 8, "dataset '", dataset, "' of '", path_, "' has ", rank,
                " dimensions; expected an array (the file is corrupt or not a tessera/CLAM file)");
  std::vector<hsize_t> dims(rank);
  H5Sget_simple_extent_dims(space.id, dims.data(), nullptr);
  // What the dataset declares against what the file stores: a few bytes of file must not ask for
  // gigabytes (HDF5 reads unwritten chunks as fill values). Compression up to 64x passes.
  const double stored = static_cast<double>(H5Dget_storage_size(d.id));
  double declared = 4;
  for (const hsize_t n : dims) declared *= static_cast<double>(n);
  TESSERA_CHECK(declared <= 64 * stored + (1 << 20), "dataset '", dataset, "' of '", path_, "' declares ",
                dims.size(), "-D sizes needing ", declared, " bytes but the file stores ", stored,
                "; the file is corrupt or hostile");
  return {dims.begin(), dims.end()};
}

torch::Tensor H5File::rows(const std::string& dataset, int64_t begin, int64_t end, torch::ScalarType type) const {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  auto dims = shape(dataset);
  // (1, N, D) as written by some CLAM versions reads like (N, D).
  const bool leading_one = dims.size() == 3 && dims[0] == 1;
  TESSERA_CHECK(dims.size() == 2 || leading_one, "dataset '", dataset, "' in '", path_, "' has ", dims.size(),
                " dimensions; expected (N, D)");
  const int64_t n = dims[leading_one ? 1 : 0], width = dims.back();
  TESSERA_CHECK(begin >= 0 && begin <= end && end <= n, "rows [", begin, ", ", end, ") out of range for '", dataset,
                "' with ", n, " rows in '", path_, "'");
  auto out = torch::empty({end - begin, width}, type);
  if (end == begin) return out;
  Handle d{H5Dopen2(file_, dataset.c_str(), H5P_DEFAULT), H5Dclose};
  Handle file_space{H5Dget_space(d.id), H5Sclose};
  std::vector<hsize_t> start = {static_cast<hsize_t>(begin), 0}, count = {static_cast<hsize_t>(end - begin),
                                                                           static_cast<hsize_t>(width)};
  if (leading_one) {
    start.insert(start.begin(), 0);
    count.insert(count.begin(), 1);
  }
  H5Sselect_hyperslab(file_space.id, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
  Handle mem_space{H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr), H5Sclose};
  TESSERA_CHECK(H5Dread(d.id, memory_type(type), mem_space.id, file_space.id, H5P_DEFAULT, out.data_ptr()) >= 0,
                "cannot read rows [", begin, ", ", end, ") of '", dataset, "' in '", path_,
                "'; the file is corrupt or truncated");
  return out;
}

torch::Tensor H5File::gather(const std::string& dataset, const torch::Tensor& idx, torch::ScalarType type) const {
  const auto flat = idx.to(torch::kCPU, torch::kLong).contiguous();
  const auto sorted = torch::sort(flat);
  const auto values = std::get<0>(sorted).contiguous(), order = std::get<1>(sorted);
  const auto* v = values.data_ptr<int64_t>();
  const int64_t k = values.numel();
  std::vector<torch::Tensor> pieces;
  for (int64_t i = 0; i < k;) {
    int64_t j = i + 1;
    while (j < k && v[j] <= v[j - 1] + 1) ++j;  // a run of consecutive (or repeated) rows
    const auto block = rows(dataset, v[i], v[j - 1] + 1, type);
    pieces.push_back(block.index_select(0, values.slice(0, i, j) - v[i]));
    i = j;
  }
  if (pieces.empty()) return torch::empty({0, shape(dataset).back()}, type);
  auto out = torch::empty_like(torch::cat(pieces));
  out.index_copy_(0, order, torch::cat(pieces));
  return out;
}

std::map<std::string, std::string> H5File::attributes(const std::string& dataset,
                                                      const std::vector<std::string>& names) const {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  std::map<std::string, std::string> out;
  if (!has(dataset)) return out;
  Handle d{H5Oopen(file_, dataset.c_str(), H5P_DEFAULT), H5Oclose};
  TESSERA_CHECK(d.id >= 0, "cannot open '", dataset, "' of '", path_, "'; the file is corrupt or truncated");
  for (const auto& name : names) {
    const htri_t exists = H5Aexists(d.id, name.c_str());
    if (exists == 0) continue;
    Handle a{exists > 0 ? H5Aopen(d.id, name.c_str(), H5P_DEFAULT) : -1, H5Aclose};
    TESSERA_CHECK(a.id >= 0, "cannot read the attribute '", name, "' of '", dataset, "' in '", path_,
                  "'; the file is corrupt or truncated");
    Handle type{H5Aget_type(a.id), H5Tclose};
    Handle space{H5Aget_space(a.id), H5Sclose};
    if (H5Sget_simple_extent_npoints(space.id) != 1) continue;
    const auto cls = H5Tget_class(type.id);
    if (cls == H5T_INTEGER) {
      int64_t v = 0;
      H5Aread(a.id, H5T_NATIVE_INT64, &v);
      out[name] = std::to_string(v);
    } else if (cls == H5T_FLOAT) {
      double v = 0;
      H5Aread(a.id, H5T_NATIVE_DOUBLE, &v);
      out[name] = std::to_string(v);
    } else if (cls == H5T_STRING && !H5Tis_variable_str(type.id)) {
      const size_t size = H5Tget_size(type.id);
      if (size == 0 || size > 65536) continue;  // no attribute tessera reads is longer; never allocate what a header claims
      std::string v(size, '\0');
      H5Aread(a.id, type.id, v.data());
      out[name] = v.substr(0, v.find('\0'));
    } else if (cls == H5T_STRING) {
      char* v = nullptr;
      Handle mem{H5Tcopy(H5T_C_S1), H5Tclose};
      H5Tset_size(mem.id, H5T_VARIABLE);
      const herr_t read = H5Aread(a.id, mem.id, &v);
      if (v != nullptr) {  // freed even when the read failed half-way
        if (read >= 0) out[name] = std::string(v, strnlen(v, 65536));
        H5free_memory(v);
      }
    }
  }
  return out;
}

void write_coords(const std::string& path, const PatchCoords& g, const std::string& settings_hash) {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  quiet_errors();
  TESSERA_CHECK(g.count() > 0, "refusing to write an empty coordinate file '", path, "'");
  const std::string tmp = path + ".tmp";
  {
    Handle file{H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose};
    TESSERA_CHECK(file.id >= 0, "cannot create '", tmp, "'; is the folder writable?");
    Handle d{create_dataset(file.id, "coords", H5T_STD_I64LE, {static_cast<hsize_t>(g.count()), 2}), H5Dclose};
    write_rows(d.id, 0, g.coords.to(torch::kLong), H5T_NATIVE_INT64);
    write_grid_attributes(d.id, g);
    write_attribute(d.id, "settings_hash", settings_hash);
  }
  TESSERA_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot move '", tmp, "' onto '", path, "'");
}

PatchCoords read_coords(const std::string& path) {
  H5File f(path);
  TESSERA_CHECK(f.has("coords"), "'", path, "' has no 'coords' dataset; is it a tessera/CLAM patch file?");
  PatchCoords g;
  const auto dims = f.shape("coords");
  g.coords = f.rows("coords", 0, dims.size() == 3 ? dims[1] : dims[0], torch::kInt64);
  TESSERA_CHECK(g.coords.size(1) == 2, "'", path, "' coords must be (N, 2), got ", g.coords.sizes());
  const auto attrs = f.attributes("coords", kGridAttributes);
  const auto get = [&](const char* key, double fallback) {
    const auto it = attrs.find(key);
    if (it == attrs.end()) return fallback;
    char* end = nullptr;
    const double v = std::strtod(it->second.c_str(), &end);
    TESSERA_CHECK(end != it->second.c_str() && *end == '\0' && std::isfinite(v) && std::abs(v) < 1e12, "'", path,
                  "': the coords attribute '", key, "' must be a number, got '", it->second.substr(0, 40), "'");
    return v;
  };
  g.patch = static_cast<int64_t>(get("patch_size", 256));
  g.level = static_cast<int>(get("patch_level", 0));
  g.footprint = static_cast<int64_t>(get("footprint", static_cast<double>(g.patch)));
  g.stride = static_cast<int64_t>(get("stride", static_cast<double>(g.footprint)));
  g.mpp = get("mpp", 0);
  return g;
}

std::string read_settings_hash(const std::string& path) {
  try {
    const auto attrs = H5File(path).attributes("coords", kGridAttributes);
    const auto it = attrs.find("settings_hash");
    return it == attrs.end() ? "" : it->second;
  } catch (const Error&) {
    return "";
  }
}

FeatureWriter::FeatureWriter(const std::string& path, const PatchCoords& grid, int64_t dim,
                             const std::map<std::string, std::string>& attributes)
    : path_(path), tmp_(path + ".tmp"), rows_(grid.count()), dim_(dim) {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  quiet_errors();
  TESSERA_CHECK(rows_ > 0 && dim > 0, "a feature bag needs rows and a feature dimension, got ", rows_, "x", dim);
  file_ = H5Fcreate(tmp_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  TESSERA_CHECK(file_ >= 0, "cannot create '", tmp_, "'; is the folder writable?");
  Handle c{create_dataset(file_, "coords", H5T_STD_I64LE, {static_cast<hsize_t>(rows_), 2}), H5Dclose};
  write_rows(c.id, 0, grid.coords.to(torch::kLong), H5T_NATIVE_INT64);
  write_grid_attributes(c.id, grid);
  // Contiguous layout: any row is one direct read, which random-access selection needs.
  Handle f{create_dataset(file_, "features", H5T_IEEE_F32LE, {static_cast<hsize_t>(rows_), static_cast<hsize_t>(dim)}),
           H5Dclose};
  for (const auto& [k, v] : attributes) write_attribute(f.id, k, v);
}

FeatureWriter::~FeatureWriter() {
  if (file_ < 0) return;
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  H5Fclose(file_);
  std::remove(tmp_.c_str());
}

void FeatureWriter::write(int64_t begin, const torch::Tensor& features) {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  TESSERA_CHECK(file_ >= 0, "feature writer for '", path_, "' is already finished");
  TESSERA_CHECK(features.dim() == 2 && features.size(1) == dim_ && begin >= 0 && begin + features.size(0) <= rows_,
                "features ", features.sizes(), " at row ", begin, " do not fit ", rows_, "x", dim_);
  Handle d{H5Dopen2(file_, "features", H5P_DEFAULT), H5Dclose};
  write_rows(d.id, begin, features.to(torch::kCPU, torch::kFloat32), H5T_NATIVE_FLOAT);
}

void FeatureWriter::finish() {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  TESSERA_CHECK(file_ >= 0, "feature writer for '", path_, "' is already finished");
  H5Fclose(file_);
  file_ = -1;
  TESSERA_CHECK(std::rename(tmp_.c_str(), path_.c_str()) == 0, "cannot move '", tmp_, "' onto '", path_, "'");
}

FeatureBag::FeatureBag(const std::string& path) : file_(std::make_shared<H5File>(path)) {
  TESSERA_CHECK(file_->has("features"), "'", path, "' has no 'features' dataset; extract features first (tessera extract-features)");
  const auto dims = file_->shape("features");
  TESSERA_CHECK(dims.size() == 2 || (dims.size() == 3 && dims[0] == 1), "'features' in '", path,
                "' must be (N, D) or (1, N, D)");
  rows_ = dims[dims.size() - 2];
  dim_ = dims.back();
  TESSERA_CHECK(rows_ > 0, "feature bag '", path, "' is empty (zero patches)");
  TESSERA_CHECK(dim_ > 0, "feature bag '", path, "' has zero-length feature rows");
  if (file_->has("coords")) {
    const auto c = file_->shape("coords");
    TESSERA_CHECK(c.size() == 2 && c[0] == rows_ && c[1] == 2, "feature bag '", path, "' has ", rows_,
                  " feature rows but 'coords' of shape ", c10::IntArrayRef(c),
                  " (one (x, y) row per feature row expected); the file is damaged: extract its features again");
  }
}

torch::Tensor FeatureBag::gather(const torch::Tensor& idx) const { return file_->gather("features", idx, torch::kFloat32); }

torch::Tensor FeatureBag::range(int64_t begin, int64_t end) const { return file_->rows("features", begin, end, torch::kFloat32); }

torch::Tensor FeatureBag::coords() const {
  if (!file_->has("coords")) return {};
  return file_->rows("coords", 0, file_->shape("coords")[0], torch::kInt64);
}

}  // namespace tessera::slides
