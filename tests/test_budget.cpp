// Enforced memory budgets: a step that needs more than the budget fails with a message naming the
// knobs and leaves the earlier checkpoint intact; the planner's batch fits and the next one does not.
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "helpers.h"
#include "tessera/app/train.h"
#include "tessera/core/memory.h"
#include "tessera/train/experiment.h"
#include "tessera/train/planner.h"
#include "tessera/train/trainer.h"

namespace tessera {
namespace {

Config tiny_patchgd(const std::string& mnist, const std::string& run) {
  auto c = testing::tiny_config(mnist, run);
  c.train.method = "patchgd";
  c.data.dataset = "ultramnist";
  c.data.height = c.data.width = 140;
  c.data.patch = c.data.stride = 28;
  c.data.max_scale = 2;
  c.data.train_size = 16;
  c.patchgd.q = 0.25;
  c.patchgd.latent = 16;
  c.patchgd.head = "smaller";
  c.train.epochs = 1;
  c.train.weight_decay = 0;
  return c;
}

std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Live bytes halfway between two trial peaks measured above `baseline` live bytes.
int64_t between(int64_t baseline, int64_t peak_a, int64_t peak_b) { return baseline + (peak_a - baseline + peak_b - baseline) / 2; }

struct BudgetGuard {
  ~BudgetGuard() { memory::set_budget(0); }
};

TEST(Budget, ExceededStepFailsClearlyAndKeepsTheCheckpoint) {
  testing::TempDir dir;
  testing::write_fake_mnist(dir.str());
  auto config = tiny_patchgd(dir.str(), dir.file("run"));
  train::apply_runtime(config);
  auto [train_set, test_set] = train::make_datasets(config);
  {
    auto method = train::make_method(config, train_set->tasks());
    train::Trainer(config, *method, train_set, test_set).fit(false);
  }
  const auto checkpoint = dir.file("run/checkpoint.pt");
  const auto good = bytes_of(checkpoint);
  ASSERT_FALSE(good.empty());

  config.train.epochs = 2;
  auto method = train::make_method(config, train_set->tasks());
  int64_t param_bytes = 0;
  for (const auto& p : method->module().parameters()) param_bytes += p.numel() * 4;
  const int64_t batch_bytes = config.train.batch_size * 140 * 140 * 4;
  train::Trainer trainer(config, *method, train_set, test_set);
  BudgetGuard guard;
  // Room for the loader's batches and the gradients, not for AdamW's two state tensors per parameter.
  memory::set_budget(memory::cpu_live_bytes() + 4 * batch_bytes + param_bytes);
  std::string message;
  try {
    trainer.fit(/*resume=*/false);  // a new run in the same directory: its first step fails
  } catch (const memory::BudgetExceeded& e) {
    message = e.what();
  }
  ASSERT_FALSE(message.empty()) << "the step fitted a budget it should not have";
  EXPECT_NE(message.find("memory budget exceeded"), std::string::npos) << message;
  EXPECT_NE(message.find("patchgd training step"), std::string::npos) << message;
  EXPECT_NE(message.find("lower train.batch_size, patchgd.q"), std::string::npos) << message;
  EXPECT_EQ(bytes_of(checkpoint), good);
}

TEST(Budget, PlannerPicksTheLargestBatchThatFits) {
  testing::TempDir dir;
  testing::write_fake_mnist(dir.str());
  auto config = tiny_patchgd(dir.str(), dir.file("run"));
  train::apply_runtime(config);
  auto train_set = train::make_datasets(config).first;
  BudgetGuard guard;
  const int64_t baseline = memory::cpu_live_bytes();
  config.train.batch_size = 2;
  const auto [fits2, peak2] = train::trial_step(config, train_set);
  config.train.batch_size = 12;
  const auto [fits12, peak12] = train::trial_step(config, train_set);
  ASSERT_TRUE(fits2 && fits12);
  ASSERT_GT(peak12, peak2);
  // The planner plans against 95 % of the budget; aim that between the two trials.
  const int64_t budget = between(baseline, peak2, peak12) * 100 / 95;
  memory::set_budget(budget);

  const auto plan = train::plan_batch(config, train_set, /*max_batch=*/16);
  EXPECT_EQ(memory::budget(), budget);
  memory::set_budget(budget * 95 / 100);  // what the planner plans against, leaving headroom
  EXPECT_GT(plan.batch_size, 2);
  EXPECT_LT(plan.batch_size, 12);
  EXPECT_DOUBLE_EQ(plan.q, 0.25);
  config.train.batch_size = plan.batch_size;
  EXPECT_TRUE(train::trial_step(config, train_set).first);
  config.train.batch_size = plan.batch_size + 1;
  EXPECT_FALSE(train::trial_step(config, train_set).first);
  EXPECT_GE(plan.trials.size(), 3u);
}

TEST(Budget, PlannerLowersPatchGdSamplingWhenTheSmallestBatchDoesNotFit) {
  testing::TempDir dir;
  testing::write_fake_mnist(dir.str());
  auto config = tiny_patchgd(dir.str(), dir.file("run"));
  config.patchgd.q = 1.0;
  train::apply_runtime(config);
  auto train_set = train::make_datasets(config).first;
  BudgetGuard guard;
  const int64_t baseline = memory::cpu_live_bytes();
  config.train.batch_size = 2;
  const auto [fits_all, peak_all] = train::trial_step(config, train_set);
  config.patchgd.q = 0.125;
  const auto [fits_eighth, peak_eighth] = train::trial_step(config, train_set);
  ASSERT_TRUE(fits_all && fits_eighth);
  ASSERT_GT(peak_all, peak_eighth);
  memory::set_budget(between(baseline, peak_all, peak_eighth) * 100 / 95);
  config.patchgd.q = 1.0;
  const auto plan = train::plan_batch(config, train_set, 16);
  EXPECT_LT(plan.q, 1.0);
  EXPECT_GE(plan.batch_size, 2);
}

TEST(Budget, PlannerDownscalesGdWhenNotEvenOneImageFits) {
  testing::TempDir dir;
  testing::write_fake_mnist(dir.str());
  auto config = tiny_patchgd(dir.str(), dir.file("run"));
  config.train.method = "gd";
  train::apply_runtime(config);
  auto train_set = train::make_datasets(config).first;
  BudgetGuard guard;
  const int64_t baseline = memory::cpu_live_bytes();
  config.train.batch_size = 1;
  const auto [fits_native, peak_native] = train::trial_step(config, train_set);
  config.gd.image_size = 70;  // the planner's first halving of the 140-px canvas
  const auto [fits_half, peak_half] = train::trial_step(config, train_set);
  ASSERT_TRUE(fits_native && fits_half);
  ASSERT_GT(peak_native, peak_half);
  config.gd.image_size = 0;
  memory::set_budget(between(baseline, peak_native, peak_half) * 100 / 95);
  const auto plan = train::plan_batch(config, train_set, /*max_batch=*/8);
  EXPECT_EQ(plan.image_size, 70);
  EXPECT_GE(plan.batch_size, 1);
  EXPECT_EQ(plan.to_json(config)["image_size"], 70);
}

TEST(Budget, ImpossibleBudgetSaysWhatToDo) {
  testing::TempDir dir;
  testing::write_fake_mnist(dir.str());
  auto config = tiny_patchgd(dir.str(), dir.file("run"));
  config.train.method = "gd";
  train::apply_runtime(config);
  auto train_set = train::make_datasets(config).first;
  BudgetGuard guard;
  memory::set_budget(memory::cpu_live_bytes() + 4096);
  std::string message;
  try {
    train::plan_batch(config, train_set, 16);
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("raise train.memory_budget"), std::string::npos) << message;
}

// The budget is checked before the run directory is touched: an earlier run in it stays byte for byte.
TEST(Budget, TooSmallForPatchGdsSmallestChunkFailsBeforeTraining) {
  testing::TempDir dir;
  testing::write_fake_mnist(dir.str());
  auto config = tiny_patchgd(dir.str(), dir.file("run"));
  app::train(config, /*resume=*/false);
  const std::vector<std::string> files{"checkpoint.pt", "config.yaml", "metrics.jsonl", "train.log"};
  std::map<std::string, std::string> before;
  for (const auto& f : files) before[f] = bytes_of(dir.file("run/" + f));
  ASSERT_FALSE(before["checkpoint.pt"].empty());

  BudgetGuard guard;
  const auto expect_error = [&](const Config& c, const std::string& expected) {
    std::string message;
    try {
      app::train(c, /*resume=*/false);
    } catch (const Error& e) {
      message = e.what();
    }
    EXPECT_NE(message.find(expected), std::string::npos) << message;
    for (const auto& f : files) EXPECT_EQ(bytes_of(dir.file("run/" + f)), before[f]) << f << " was written";
  };
  // Peaks of PatchGD's smallest step (batch 2, one patch per inner iteration) and of a large one.
  train::apply_runtime(config);
  auto train_set = train::make_datasets(config).first;
  auto smallest = config;
  smallest.train.batch_size = 2;
  smallest.patchgd.q = 1.0 / 25;
  auto large = config;
  large.train.batch_size = 12;
  large.patchgd.q = 1.0;
  const int64_t baseline = memory::cpu_live_bytes();
  const auto [fits_small, peak_small] = train::trial_step(smallest, train_set);
  const auto [fits_large, peak_large] = train::trial_step(large, train_set);
  ASSERT_TRUE(fits_small && fits_large);
  ASSERT_GT(peak_large, peak_small);
  train_set.reset();

  // Below the smallest step: no configuration of PatchGD fits.
  large.train.memory_budget = std::to_string(baseline + (peak_small - baseline) * 3 / 4);
  expect_error(large, "even its smallest step, batch 2 with one patch per inner iteration (its smallest chunk), needs more");
  // Between the two: the error points at the planner.
  large.train.memory_budget = std::to_string(between(baseline, peak_small, peak_large));
  expect_error(large, "pass --train.auto_batch true to find what fits");
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

// IPS fine-tuning a ViT: 16 winners of 36 patches per image; activations of the gradient pass dominate.
Config tiny_vit_ips(const std::string& mnist, const std::string& run) {
  auto c = testing::tiny_config(mnist, run);
  c.model.encoder = "vit_small_patch16_224";
  c.model.encoder_args = R"({"img_size": 28, "patch_size": 7, "embed_dim": 64, "depth": 4, "num_heads": 2})";
  c.ips.M = 16;
  c.ips.I = 8;
  c.data.workers = 0;
  c.train.batch_size = 2;
  return c;
}

// A budget the unchunked gradient pass exceeds and chunks of 8 fit: the planner takes the requested
// batch with the cheapest chunk that fits, and the budget check names that setting as the fix.
TEST(Budget, PlannerChoosesIpsGradChunksWhenTheBatchDoesNotFitWhole) {
  testing::TempDir dir;
  testing::write_fake_mnist(dir.str());
  auto config = tiny_vit_ips(dir.str(), dir.file("run"));
  train::apply_runtime(config);
  auto train_set = train::make_datasets(config).first;
  BudgetGuard guard;
  const int64_t baseline = memory::cpu_live_bytes();
  const auto [fits_whole, peak_whole] = train::trial_step(config, train_set);
  auto chunked = config;
  chunked.ips.grad_chunk = 16;
  const auto [fits_chunked, peak_chunked] = train::trial_step(chunked, train_set);
  ASSERT_TRUE(fits_whole && fits_chunked);
  ASSERT_LT(peak_chunked - baseline, (peak_whole - baseline) * 3 / 4) << "chunks of 16 of 32 winners must save memory";
  config.train.memory_budget = "test";
  memory::set_budget(between(baseline, peak_chunked, peak_whole) * 100 / 95);

  const auto plan = train::plan_batch(config, train_set, /*max_batch=*/2);
  EXPECT_EQ(plan.batch_size, 2);
  ASSERT_FALSE(plan.settings.empty());
  EXPECT_EQ(plan.settings.front().first, "ips.grad_chunk");
  const int64_t chunk = std::stoll(plan.settings.front().second);
  EXPECT_GE(chunk, 1);
  EXPECT_LE(chunk, 16);
  EXPECT_EQ(plan.trials.front()["fits"], false) << "the configuration as given is tried first";
  const auto record = plan.to_json(config);
  EXPECT_EQ(record["settings"]["ips.grad_chunk"], plan.settings.front().second);
  auto planned = config;
  plan.apply(planned);
  EXPECT_EQ(planned.ips.grad_chunk, chunk);

  // Training the configuration as given: the error names the chunk that fits.
  const auto message = testing::error_of([&] { train::check_budget(config, train_set); });
  EXPECT_NE(message.find("ips.grad_chunk 0"), std::string::npos) << message;
  EXPECT_NE(message.find("--ips.grad_chunk"), std::string::npos) << message;
}

TEST(Budget, TooSmallForOneChunkOfOnePatchNamesTheKnobs) {
  testing::TempDir dir;
  testing::write_fake_mnist(dir.str());
  auto config = tiny_vit_ips(dir.str(), dir.file("run"));
  train::apply_runtime(config);
  auto train_set = train::make_datasets(config).first;
  config.train.memory_budget = "short of the smallest step";
  BudgetGuard guard;
  const int64_t baseline = memory::cpu_live_bytes();
  auto smallest = config;
  smallest.train.batch_size = 1;
  smallest.ips.grad_chunk = 1;
  smallest.model.grad_checkpointing = true;
  const auto [fits, peak] = train::trial_step(smallest, train_set);
  ASSERT_TRUE(fits);
  memory::set_budget(baseline + (peak - baseline) * 4 / 5);  // the model fits, its smallest step does not
  const auto planned = testing::error_of([&] { train::plan_batch(config, train_set, 2); });
  EXPECT_NE(planned.find("ips.grad_chunk 1, model.grad_checkpointing true"), std::string::npos) << planned;
  EXPECT_NE(planned.find("raise train.memory_budget"), std::string::npos) << planned;
  const auto checked = testing::error_of([&] { train::check_budget(config, train_set); });
  EXPECT_NE(checked.find("even its smallest step, batch 1 with ips.grad_chunk 1, model.grad_checkpointing true"),
            std::string::npos)
      << checked;
}

}  // namespace
}  // namespace tessera
