#include "tessera/train/resume.h"

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "tessera/core/error.h"
#include "tessera/train/checkpoint.h"

namespace tessera::train {

const std::vector<std::string>& resumable_keys() {
  static const std::vector<std::string> keys = {
      "run.dir",           "train.epochs",     "train.time_limit", "train.threads",      "train.checkpoint_every",
      "train.log_every",   "train.eval_every", "train.dist_timeout", "data.workers",     "data.prefetch",
      "slide.read_workers",
  };
  return keys;
}

Config resume_config(const Config& requested, const std::vector<std::string>& given, bool whole) {
  const auto path = (std::filesystem::path(requested.run_dir) / "checkpoint.pt").string();
  TESSERA_CHECK(std::filesystem::exists(path), "--resume given but '", path,
                "' does not exist; check run.dir, or start without --resume");
  Config stored;
  stored.load_yaml_text(read_checkpoint_info(path).config_yaml, path);
  stored.run_dir = requested.run_dir;  // the run may have moved
  Config asked = requested;
  auto asked_fields = asked.fields();
  auto stored_fields = stored.fields();
  std::string differences;
  for (size_t i = 0; i < asked_fields.size(); ++i) {
    const auto& key = asked_fields[i].key;
    if (!whole && std::find(given.begin(), given.end(), key) == given.end()) continue;
    const auto value = asked_fields[i].get(), before = stored_fields[i].get();
    if (value == before) continue;
    // A planned run (train.auto_batch) stored what its plan chose: the file's values were inputs to it.
    const bool planned = stored.train.auto_batch && (key == "train.batch_size" || key == "patchgd.q" ||
                                                     key == "gd.image_size" || key == "ips.grad_chunk" ||
                                                     key == "model.grad_checkpointing");
    if (planned && whole && std::find(given.begin(), given.end(), key) == given.end()) continue;
    const auto& allowed = resumable_keys();
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) {
      stored_fields[i].set(value);
    } else {
      differences += fmt::format("{}{}: the run has '{}', given '{}'", differences.empty() ? "" : "; ", key, before, value);
    }
  }
  TESSERA_CHECK(differences.empty(), "--resume continues the run in '", requested.run_dir,
                "' with its own config, but what was given changes what it trains (", differences,
                "); resume without these (without -c the run's own config is used) or start a new run.dir; a resumed "
                "run may change only ", [] {
                  std::string out;
                  for (const auto& k : resumable_keys()) out += (out.empty() ? "" : ", ") + k;
                  return out;
                }());
  return stored;
}

}  // namespace tessera::train
