#include "tessera/data/classes.h"

#include <algorithm>
#include <set>
#include <sstream>

#include "tessera/core/csv.h"
#include "tessera/core/error.h"
#include "tessera/core/suggest.h"

namespace tessera::data {
namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

bool is_index(const std::string& label) { return parse_integer(label).value_or(-1) >= 0; }

std::string listed(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace

ClassList resolve_classes(const std::string& setting, const std::vector<std::string>& labels, const std::string& origin) {
  ClassList out;
  const std::string text = trim(setting);
  if (!text.empty() && text != "0") {
    out.source = "data.classes";
    if (text.find(',') == std::string::npos && is_index(text)) {
      out.count = *parse_integer(text);
    } else {
      std::stringstream in(text);
      std::string item;
      while (std::getline(in, item, ',')) {
        item = trim(item);
        TESSERA_CHECK(!item.empty(), "data.classes '", setting, "' has an empty name; list the class names separated by commas");
        TESSERA_CHECK(std::find(out.names.begin(), out.names.end(), item) == out.names.end(), "data.classes lists '",
                      item, "' twice");
        out.names.push_back(item);
      }
      out.count = static_cast<int64_t>(out.names.size());
      TESSERA_CHECK(out.count >= 2, "data.classes '", setting, "' names one class; a classifier needs at least two");
    }
  }
  const bool names = std::any_of(labels.begin(), labels.end(), [](const std::string& l) { return !is_index(l); });
  if (names && out.names.empty()) {
    TESSERA_CHECK(out.count == 0, origin, " holds class names (e.g. '",
                  *std::find_if(labels.begin(), labels.end(), [](const std::string& l) { return !is_index(l); }),
                  "') but data.classes is the number ", out.count, "; list the names in index order (e.g. --data.classes "
                  "normal,tumor) or leave data.classes empty to sort them");
    const std::set<std::string> sorted(labels.begin(), labels.end());
    out.names.assign(sorted.begin(), sorted.end());
    out.count = static_cast<int64_t>(out.names.size());
    out.source = "the sorted names of " + origin;
  }
  return out;
}

ClassList task_classes(const std::vector<std::string>& names, int64_t count) {
  return {names, count, "the run, trained on " + std::to_string(count) + " classes"};
}

int64_t class_index(const ClassList& classes, const std::string& label, const std::string& where) {
  const auto it = std::find(classes.names.begin(), classes.names.end(), label);
  if (it != classes.names.end()) return it - classes.names.begin();
  const auto index = parse_integer(label);
  if (index && *index >= 0) {
    TESSERA_CHECK(classes.count == 0 || *index < classes.count, where, ": label ", label, " is not a class index below ",
                  classes.count, " (the classes come from ", classes.source,
                  classes.names.empty() ? "" : ": " + listed(classes.names), "); check the label or data.classes");
    return *index;
  }
  TESSERA_CHECK(!classes.names.empty(), where, ": label '", label, "' is not a class index >= 0");
  fail(where, ": label '", label, "' is not one of the classes ", listed(classes.names), did_you_mean(label, classes.names),
       " (data.classes lists the classes; leave it empty to take every name the labels hold)");
}

}  // namespace tessera::data
