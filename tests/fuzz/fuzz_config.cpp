// YAML configs with overrides: the input's first line holds `key=value` overrides separated by ';',
// the rest is the YAML file.
#include "fuzz.h"
#include "tessera/core/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const size_t eol = text.find('\n');
  const std::string overrides = eol == std::string::npos ? "" : text.substr(0, eol);
  const std::string yaml = eol == std::string::npos ? text : text.substr(eol + 1);
  const auto path = tessera::fuzz::scratch(reinterpret_cast<const uint8_t*>(yaml.data()), yaml.size(), ".yaml");
  return tessera::fuzz::clear_errors_only([&] {
    tessera::Config c;
    c.load_yaml(path);
    for (size_t begin = 0; begin < overrides.size();) {
      size_t end = overrides.find(';', begin);
      if (end == std::string::npos) end = overrides.size();
      const auto item = overrides.substr(begin, end - begin);
      const size_t eq = item.find('=');
      if (eq != std::string::npos) c.set(item.substr(0, eq), item.substr(eq + 1));
      begin = end + 1;
    }
    c.validate();
  });
}
