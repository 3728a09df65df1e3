// Files written by Python's torch.save (zip archives, or the legacy format), read without Python.
#pragma once
#include <ATen/core/ivalue.h>

#include <string>

namespace tessera {

// Any torch.save'd object: state dicts (OrderedDicts included), dicts of tensors, single tensors.
// Tensors saved on a GPU are loaded onto the CPU. Errors name the file.
c10::IValue read_pickle(const std::string& path);

// Whether the file starts as a zip archive does (torch.save's default format, TorchScript archives).
bool is_zip(const std::string& path);

}  // namespace tessera
