// Feature bags laid out as CLAM's save_hdf5 writes them, for tests (raw HDF5 calls).
#pragma once
#include <hdf5.h>
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace tessera::testing {

// Extendible datasets chunked one row at a time, features (N, D) float32, coords (M, 2) int64 with
// patch_level / patch_size attributes (M = N in a valid file).
inline void write_clam_layout(const std::string& path, const torch::Tensor& features, const torch::Tensor& coords) {
  const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const auto put = [&](const char* name, const torch::Tensor& t, hid_t type) {
    const hsize_t dims[2] = {static_cast<hsize_t>(t.size(0)), static_cast<hsize_t>(t.size(1))};
    const hsize_t maxdims[2] = {H5S_UNLIMITED, dims[1]}, chunk[2] = {1, dims[1]};
    const hid_t space = H5Screate_simple(2, dims, maxdims);
    const hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(plist, 2, chunk);
    const hid_t d = H5Dcreate2(f, name, type, space, H5P_DEFAULT, plist, H5P_DEFAULT);
    H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.contiguous().data_ptr());
    if (std::string(name) == "coords") {
      const hid_t scalar = H5Screate(H5S_SCALAR);
      for (const auto& [key, value] : std::vector<std::pair<const char*, int64_t>>{{"patch_level", 0}, {"patch_size", 512}}) {
        const hid_t a = H5Acreate2(d, key, H5T_NATIVE_INT64, scalar, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, H5T_NATIVE_INT64, &value);
        H5Aclose(a);
      }
      H5Sclose(scalar);
    }
    H5Dclose(d);
    H5Pclose(plist);
    H5Sclose(space);
  };
  put("features", features, H5T_NATIVE_FLOAT);
  put("coords", coords, H5T_NATIVE_INT64);
  H5Fclose(f);
}

}  // namespace tessera::testing
