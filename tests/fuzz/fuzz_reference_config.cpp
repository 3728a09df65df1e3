// The IPS reference's YAML configs (tessera import-ips --reference-config).
#include "fuzz.h"
#include "tessera/app/import.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = tessera::fuzz::scratch(data, size, ".yml");
  return tessera::fuzz::clear_errors_only([&] { tessera::app::read_reference_ips_config(path, tessera::Config{}); });
}
