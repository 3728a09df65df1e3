// What each fuzz harness feeds its input to (readers.h), compiled once for the harnesses and the suite.
#include "readers.h"

#include <torch/torch.h>

#include <fstream>
#include <iterator>

#include "tessera/app/import.h"
#include "tessera/core/config.h"
#include "tessera/core/csv.h"
#include "tessera/core/error.h"
#include "tessera/core/npy.h"
#include "tessera/data/csv_images.h"
#include "tessera/data/image_io.h"
#include "tessera/models/safetensors.h"
#include "tessera/models/state_dict.h"
#include "tessera/train/experiment.h"
#ifdef TESSERA_WITH_SLIDES
#include "tessera/slides/annotations.h"
#include "tessera/slides/h5.h"
#include "tessera/slides/manifest.h"
#endif

namespace tessera::fuzz {

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

namespace {

// The file's first line: `key=value` overrides separated by ';'; the rest: the YAML config.
void read_config(const std::string& path) {
  const std::string text = read_bytes(path);
  const size_t eol = text.find('\n');
  const std::string overrides = eol == std::string::npos ? "" : text.substr(0, eol);
  const std::string yaml_path = path + ".yaml";
  std::ofstream(yaml_path, std::ios::binary) << (eol == std::string::npos ? text : text.substr(eol + 1));
  Config c;
  c.load_yaml(yaml_path);
  for (size_t begin = 0; begin < overrides.size();) {
    size_t end = overrides.find(';', begin);
    if (end == std::string::npos) end = overrides.size();
    const auto item = overrides.substr(begin, end - begin);
    const size_t eq = item.find('=');
    if (eq != std::string::npos) c.set(item.substr(0, eq), item.substr(eq + 1));
    begin = end + 1;
  }
  c.validate();
}

void read_csvs(const std::string& path) {
  try {
    read_csv(path, "fuzzed table");
  } catch (const Error&) {
  }
#ifdef TESSERA_WITH_SLIDES
  try {
    slides::read_manifest(path);
  } catch (const Error&) {
  }
#endif
  data::CsvImagesOptions o;
  o.csv = path;
  data::CsvImages images(o);
}

#ifdef TESSERA_WITH_SLIDES
void read_geojson(const std::string& path) {
  const auto a = slides::read_annotations(path);
  const auto coords = torch::tensor({0, 0, 256, 0, 0, 256, 256, 256}, torch::kLong).view({4, 2});
  slides::annotated_fraction(a, coords, 256, 4);
  slides::overlapping_patches(a, coords, 256);
}

void read_h5(const std::string& path) {
  try {
    slides::read_coords(path);
  } catch (const Error&) {
  }
  slides::FeatureBag bag(path);
  if (bag.size() > 0) bag.range(0, std::min<int64_t>(bag.size(), 4));
}
#endif

void read_npys(const std::string& path) {
  try {
    read_npy(path);
  } catch (const Error&) {
  }
  read_npz(path);
}

}  // namespace

// Feeds the file at path to harness `name`'s reader; a tessera::Error is the expected answer to bad bytes.
void read_as(const std::string& name, const std::string& path) {
  if (name == "pickle") models::read_state_dict(path);
  else if (name == "run") train::open_run(path);
  else if (name == "safetensors") models::read_safetensors(path);
  else if (name == "npy") read_npys(path);
  else if (name == "config") read_config(path);
  else if (name == "reference_config") app::read_reference_ips_config(path, Config{});
  else if (name == "csv") read_csvs(path);
  else if (name == "image") data::read_image(path);
#ifdef TESSERA_WITH_SLIDES
  else if (name == "geojson") read_geojson(path);
  else if (name == "h5") read_h5(path);
#endif
  else fail("no fuzz harness named '", name, "'");
}

}  // namespace tessera::fuzz
