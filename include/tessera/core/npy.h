// NumPy's .npy arrays (what Python users load features with: np.load) and .npz archives of them.
#pragma once
#include <torch/types.h>

#include <map>
#include <string>

namespace tessera {

// Writes a float32, float64, int64 or int32 tensor as a C-order .npy file (format 1.0), atomically.
void write_npy(const std::string& path, const torch::Tensor& tensor);

// Reads a little-endian C-order .npy (f4, f8, i8, i4, u1) into a tensor. A header that is not NumPy's,
// a shape that does not match the file's size, or Fortran order is an error naming the file.
torch::Tensor read_npy(const std::string& path);

// Every array of an .npz archive (np.savez: stored, uncompressed members), by name without ".npy".
std::map<std::string, torch::Tensor> read_npz(const std::string& path);

}  // namespace tessera
