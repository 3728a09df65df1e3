// Opening a user's image file with libvips by its format's signature. libvips' own detection
// (new_from_file) offers an unknown file to the sniffer of every loader it was built with (about 30: FITS,
// PDF, SVG, ImageMagick, ...), and some parse untrusted headers eagerly: its FITS loader (cfitsio) allocates
// whatever size a header declares, 4 GiB from a 48-byte file (a fuzz finding,
// tests/fuzz/corpus/image/regression-oom-fits). tessera reads PNG, JPEG, TIFF (BigTIFF too) and WebP, and
// whole-slide formats through OpenSlide, so only those loaders ever see a file.
#pragma once
#include <vips/vips8>

#include <string>

namespace tessera::data {

// Options as for VImage::new_from_file (access, page, level...). Throws vips::VError from the loader, or
// tessera::Error naming the file when no accepted format's signature matches.
vips::VImage load_image(const std::string& path, vips::VOption* options = nullptr);

}  // namespace tessera::data
