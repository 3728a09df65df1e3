#include "tessera/train/registry.h"

#include <algorithm>

#include "tessera/core/error.h"
#include "tessera/core/suggest.h"
#include "tessera/models/encoder_registry.h"
#include "tessera/data/csv_images.h"
#include "tessera/data/megapixel_mnist.h"
#include "tessera/data/scattered_mnist.h"
#include "tessera/data/ultramnist.h"
#include "tessera/methods/full_image.h"
#include "tessera/methods/ips.h"
#include "tessera/methods/patchgd.h"
#ifdef TESSERA_WITH_SLIDES
#include "tessera/slides/slide_dataset.h"
#include "tessera/slides/tissue_tiles.h"
#endif

namespace tessera::train {
namespace {

template <typename Entry>
std::string names(const std::vector<Entry>& entries) {
  std::string out;
  for (const auto& e : entries) out += (out.empty() ? "" : ", ") + e.name;
  return out;
}

template <typename Entry>
const Entry& find(const std::vector<Entry>& entries, const std::string& name, const char* key) {
  const auto it = std::find_if(entries.begin(), entries.end(), [&](const Entry& e) { return e.name == name; });
  if (it == entries.end()) {
    std::vector<std::string> all;
    for (const auto& e : entries) all.push_back(e.name);
    fail(key, " '", name, "' is not one of ", names(entries), did_you_mean(name, all));
  }
  return *it;
}

}  // namespace

const std::vector<methods::MethodInfo>& method_registry() {
  static const std::vector<methods::MethodInfo> table = {
      methods::ips_method(),
      methods::patchgd_method(),
      methods::gd_method(),
      methods::gd_extended_method(),
  };
  return table;
}

const std::vector<data::DatasetInfo>& dataset_registry() {
  static const std::vector<data::DatasetInfo> table = {
      data::megapixel_mnist_dataset(),
      data::ultramnist_dataset(),
      data::scattered_mnist_dataset(),
      data::ultramnist28_dataset(),
      data::csv_dataset(),
#ifdef TESSERA_WITH_SLIDES
      slides::slides_dataset(),
      slides::feature_bags_dataset(),
      slides::tissue_tiles_dataset(),
#endif
  };
  return table;
}

const methods::MethodInfo& find_method(const std::string& name) { return find(method_registry(), name, "train.method"); }
const data::DatasetInfo& find_dataset(const std::string& name) {
#ifndef TESSERA_WITH_SLIDES
  TESSERA_CHECK(name != "slides" && name != "feature_bags" && name != "tissue_tiles", "data.dataset ", name,
                " needs a build with slide support (TESSERA_WITH_SLIDES=ON)");
#endif
  return find(dataset_registry(), name, "data.dataset");
}

void validate(const Config& config) {
  validate_model(config);
  const auto& dataset = find_dataset(config.data.dataset);
  if (dataset.validate) dataset.validate(config);
}

void validate_model(const Config& config) {
  config.validate();
  const auto& method = find_method(config.train.method);
  const auto& dataset = find_dataset(config.data.dataset);
  if (method.validate) method.validate(config);
  TESSERA_CHECK(std::find(method.inputs.begin(), method.inputs.end(), dataset.input) != method.inputs.end(),
                "train.method ", method.name, " cannot train on data.dataset ", dataset.name, " (its samples are ",
                dataset.input, dataset.input == "image" ? "s" : " bags", "); use train.method ips");
  TESSERA_CHECK(!method.single_softmax_task || !dataset.multitask, "train.method ", method.name,
                " trains one softmax task but data.dataset ", dataset.name,
                " has several tasks; use train.method ips, or a single-task data set");
  if (dataset.input == "image") {
    TESSERA_CHECK(config.data.patch <= config.data.height && config.data.patch <= config.data.width, "patch ",
                  config.data.patch, " is larger than the image ", config.data.height, "x", config.data.width,
                  "; lower data.patch");
  }
  if (config.model.encoder != "projector") models::resolve_encoder(config.model.encoder, models::model_encoder_args(config.model));
  TESSERA_CHECK((dataset.input == "features") == (config.model.encoder == "projector"),
                dataset.input == "features" ? "feature bags train with model.encoder projector"
                                            : "model.encoder projector reads feature bags (data.dataset feature_bags)");
}

}  // namespace tessera::train
