// Image files decoded through libvips (PNG, JPEG, TIFF: the extension only names the scratch file;
// libvips sniffs the format from the bytes).
#include "fuzz.h"
#include "tessera/data/image_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = tessera::fuzz::scratch(data, size, ".img");
  return tessera::fuzz::clear_errors_only([&] { tessera::data::read_image(path); });
}
