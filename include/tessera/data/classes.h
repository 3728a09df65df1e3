// Labels as users write them: class indices (0, 1, ...) or class names (normal, tumor), in CSV image
// lists and slide manifests alike. Names become indices in the sorted order of the names found over
// every split, unless data.classes lists them; the run spec keeps the names for predictions and reports.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tessera::data {

struct ClassList {
  std::vector<std::string> names;  // in index order; empty: the labels are indices
  int64_t count = 0;               // classes; 0 with indices: the largest label + 1
  std::string source;              // where the classes come from, for errors ("data.classes", "the run's spec")
};

// setting: data.classes as written: "" or "0" (from the labels), a number of classes, or names in index
// order ("normal,tumor"). labels: every split's labels as written. origin names the labels in errors.
ClassList resolve_classes(const std::string& setting, const std::vector<std::string>& labels, const std::string& origin);
// The classes a run's task recorded (names, or only their number).
ClassList task_classes(const std::vector<std::string>& names, int64_t count);
// A label as written -> its class index; an unknown name or an index out of range is an error naming
// `where` (file:row) and listing the classes.
int64_t class_index(const ClassList& classes, const std::string& label, const std::string& where);

}  // namespace tessera::data
