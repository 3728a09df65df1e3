// safetensors files (the format model hubs share weights in): an 8-byte little-endian header length N,
// N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the
// data, C order, little-endian. Reading checks every header entry before a byte of data is copied.
#pragma once
#include <torch/types.h>

#include <map>
#include <string>

namespace tessera::models {

using StateDict = std::map<std::string, torch::Tensor>;

// Every tensor of the file (F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL), in its own dtype. A file
// whose header is not JSON, whose offsets leave the file, overlap, or disagree with dtype x shape, or
// whose shape is absurd, is one tessera::Error naming the file and the entry.
StateDict read_safetensors(const std::string& path);

// Writes the tensors (contiguous copies, C order) atomically (temporary file, then rename).
void write_safetensors(const std::string& path, const StateDict& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace tessera::models
