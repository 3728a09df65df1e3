// The registries: every training method and every data set tessera knows, in one explicit table each
// (the library is static, so self-registering objects would be dropped by the linker). The trainer,
// planner, validation, run specs and the CLI look entries up here instead of comparing names.
// Adding a method or a data set: its own files, plus one line in src/train/registry.cpp.
#pragma once
#include <string>
#include <vector>

#include "tessera/core/config.h"
#include "tessera/data/dataset.h"
#include "tessera/methods/method.h"

namespace tessera::train {

const std::vector<methods::MethodInfo>& method_registry();
const std::vector<data::DatasetInfo>& dataset_registry();
// Errors list the registered names.
const methods::MethodInfo& find_method(const std::string& name);
const data::DatasetInfo& find_dataset(const std::string& name);

// Config::validate, then the method's own checks and whether it pairs with the data set's kind: what
// rebuilding a network needs (no data set paths).
void validate_model(const Config& config);
// validate_model, then the data set's own checks: what training needs.
void validate(const Config& config);

}  // namespace tessera::train
