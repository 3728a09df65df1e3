// Pixels libvips wrote into memory (VImage::write_to_memory), owned: freed with g_free when the owner
// goes, also when a conversion after the write throws (the memory budget does that by design).
#pragma once
#include <vips/vips8>

#include <cstddef>
#include <memory>

namespace tessera::data {

struct GFree {
  void operator()(void* p) const { g_free(p); }
};
using VipsBuffer = std::unique_ptr<void, GFree>;

inline VipsBuffer write_to_memory(const vips::VImage& image, size_t* size) {
  return VipsBuffer(image.write_to_memory(size));
}

}  // namespace tessera::data
