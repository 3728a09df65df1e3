// Checkpoints: a run stopped and resumed equals a run straight through (bitwise, deterministic mode),
// and a failed or half-written checkpoint never replaces a good one.
#include <fstream>

#include <torch/csrc/jit/serialization/pickle.h>

#include "helpers.h"
#include "tessera/core/pickle.h"
#include "tessera/core/runtime.h"
#include "tessera/train/experiment.h"
#include "tessera/train/trainer.h"

namespace tessera {
namespace {

std::map<std::string, torch::Tensor> train_steps(const Config& config, int64_t steps, bool resume) {
  train::apply_runtime(config);
  auto [train_set, test_set] = train::make_datasets(config);
  auto ips = train::make_ips(config, train_set->tasks());
  if (resume) runtime::seed_everything(12345);  // resuming must restore the RNG, not depend on it
  train::Trainer trainer(config, *ips, train_set, test_set);
  trainer.fit(resume, steps);
  std::map<std::string, torch::Tensor> params;
  for (const auto& p : ips->module().named_parameters()) params[p.key()] = p.value().detach().clone();
  for (const auto& b : ips->module().named_buffers()) params[b.key()] = b.value().clone();
  return params;
}

// Every parameter and buffer of two runs, bitwise.
void expect_bitwise_equal(const std::map<std::string, torch::Tensor>& straight,
                          const std::map<std::string, torch::Tensor>& resumed) {
  ASSERT_EQ(straight.size(), resumed.size());
  for (const auto& [name, value] : straight) {
    EXPECT_TRUE(torch::equal(value, resumed.at(name))) << name;
  }
}

TEST(Checkpoint, ResumeEqualsStraightRunBitwise) {
  testing::TempDir dir;
  testing::write_fake_mnist(dir.str());
  auto config = testing::tiny_config(dir.str(), dir.file("straight"));
  config.train.deterministic = true;
  config.ips.shuffle = "instance";     // exercises the RNG state
  config.model.dropout = 0.1;          // so does dropout
  config.data.train_size = 6;          // 3 steps per epoch: step 4 is mid-epoch 2
  config.train.precise_bn = 2;         // the evaluation after epoch 1 recomputes BatchNorm statistics first
  const auto straight = train_steps(config, 4, false);

  config.run_dir = dir.file("resumed");
  train_steps(config, 2, false);
  const auto resumed = train_steps(config, 2, true);
  expect_bitwise_equal(straight, resumed);
}

// The same for fine-tuning a ViT: LoRA adapters and IPS's gradient pass in chunks (4 winners of each of
// 2 images in chunks of 3).
TEST(Checkpoint, ResumeWithChunksAndLoraEqualsStraightRunBitwise) {
  testing::TempDir dir;
  testing::write_fake_mnist(dir.str());
  auto config = testing::tiny_config(dir.str(), dir.file("straight"));
  config.train.deterministic = true;
  config.ips.shuffle = "instance";
  config.data.train_size = 6;
  config.model.encoder = "vit_small_patch16_224";
  config.model.encoder_args = R"({"img_size": 28, "patch_size": 7, "embed_dim": 32, "depth": 2, "num_heads": 2})";
  config.model.lora_rank = 2;
  config.model.lora_targets = "qkv,mlp";
  config.ips.grad_chunk = 3;
  const auto straight = train_steps(config, 4, false);

  config.run_dir = dir.file("resumed");
  train_steps(config, 2, false);
  const auto resumed = train_steps(config, 2, true);
  ASSERT_EQ(straight.size(), resumed.size());
  int adapters = 0;
  for (const auto& [name, value] : straight) {
    EXPECT_TRUE(torch::equal(value, resumed.at(name))) << name;
    adapters += name.find("_lora.") != std::string::npos;
  }
  EXPECT_EQ(adapters, 2 * 3 * 2);  // qkv, fc1, fc2 of 2 blocks, A and B
}

// An interruption (Ctrl-C in the Python layer: TrainHooks::interrupted) stops after the current step with
// a checkpoint of the exact position; resuming then equals the straight run. on_epoch sees every record
// metrics.jsonl gets.
TEST(Checkpoint, InterruptedRunResumesExactlyAndHooksSeeEveryEpoch) {
  testing::TempDir dir;
  testing::write_fake_mnist(dir.str());
  auto config = testing::tiny_config(dir.str(), dir.file("straight"));
  config.train.deterministic = true;
  config.ips.shuffle = "instance";
  config.data.train_size = 6;  // 3 steps per epoch
  config.train.epochs = 2;
  const auto straight = train_steps(config, 0, false);

  config.run_dir = dir.file("interrupted");
  config.train.log_every = 1;  // steps.jsonl: one record per step
  train::apply_runtime(config);
  auto [train_set, test_set] = train::make_datasets(config);
  auto ips = train::make_ips(config, train_set->tasks());
  int64_t polls = 0;
  std::vector<int64_t> epochs_seen;
  train::TrainHooks hooks;
  hooks.interrupted = [&polls] { return ++polls == 4; };  // after step 4: mid-epoch 2
  hooks.on_epoch = [&epochs_seen](const nlohmann::json& record) { epochs_seen.push_back(record["epoch"].get<int64_t>()); };
  const auto record = train::Trainer(config, *ips, train_set, test_set, hooks).fit(false);
  EXPECT_EQ(record["stopped"], "interrupted");
  EXPECT_EQ(record["step"], 4);
  EXPECT_EQ(epochs_seen, std::vector<int64_t>{1});
  // The checkpoint holds the interrupted position itself, not the last periodic one (epoch 1, step 3,
  // from which resuming would replay step 4 and still match the straight run).
  EXPECT_EQ(train::read_checkpoint_info(dir.file("interrupted/checkpoint.pt")).state.step, 4);
  // A record written after the checkpoint (a crash before the next one) is dropped when resuming.
  std::ofstream(dir.file("interrupted/steps.jsonl"), std::ios::app) << R"({"step": 5, "loss": 99.0})" << "\n";
  const auto resumed = train_steps(config, 0, true);
  std::ifstream steps(dir.file("interrupted/steps.jsonl"));
  std::vector<int64_t> logged;
  for (std::string line; std::getline(steps, line);) {
    const auto record = nlohmann::json::parse(line);
    logged.push_back(record["step"].get<int64_t>());
    EXPECT_LT(record["loss"].get<double>(), 50.0) << line;
    EXPECT_GT(record["lr"].get<double>(), 0.0) << line;
  }
  EXPECT_EQ(logged, (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  expect_bitwise_equal(straight, resumed);
}

TEST(Checkpoint, FailedWriteKeepsThePreviousCheckpoint) {
  testing::TempDir dir;
  torch::nn::Linear model(3, 2);
  const auto path = dir.file("checkpoint.pt");
  train::save_checkpoint(path, *model, nullptr, {1, 7, 0}, "a: 1\n");
  const auto good = model->weight.detach().clone();
  // A directory where the temporary file should go makes the write fail midway.
  std::filesystem::create_directories(path + ".tmp");
  torch::nn::Linear other(3, 2);
  EXPECT_THROW(train::save_checkpoint(path, *other, nullptr, {2, 9, 0}, "a: 2\n"), Error);
  torch::nn::Linear loaded(3, 2);
  const auto c = train::load_checkpoint(path, *loaded, nullptr);
  EXPECT_EQ(c.state.step, 7);
  EXPECT_TRUE(torch::equal(loaded->weight, good));
}

TEST(Checkpoint, TruncatedFileGivesAClearError) {
  testing::TempDir dir;
  torch::nn::Linear model(3, 2);
  const auto path = dir.file("checkpoint.pt");
  train::save_checkpoint(path, *model, nullptr, {}, "");
  const auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size / 2);
  try {
    train::load_checkpoint(path, *model, nullptr);
    FAIL() << "no error for a truncated checkpoint";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("corrupt or truncated"), std::string::npos) << e.what();
  }
}

// A checkpoint whose dict is edited: `edit` changes the root dict read back from a valid one.
std::string edited_checkpoint(testing::TempDir& dir, const std::function<void(c10::impl::GenericDict&)>& edit) {
  torch::nn::Linear model(3, 2);
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(0.1));
  model(torch::ones({4, 3})).sum().backward();
  optimizer.step();
  const auto path = dir.file("checkpoint.pt");
  train::save_checkpoint(path, *model, &optimizer, {1, 1, 0}, "a: 1\n", "{}");
  auto root = read_pickle(path).toGenericDict();
  edit(root);
  const auto bytes = torch::pickle_save(root);
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

std::string load_error(const std::string& path) {
  torch::nn::Linear model(3, 2);
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(0.1));
  try {
    train::load_checkpoint(path, *model, &optimizer);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Checkpoint, OptimiserStateRoundTripsByParameterName) {
  testing::TempDir dir;
  const auto path = edited_checkpoint(dir, [](auto&) {});
  torch::nn::Linear model(3, 2);
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(0.5));
  train::load_checkpoint(path, *model, &optimizer);
  EXPECT_DOUBLE_EQ(static_cast<const torch::optim::AdamWOptions&>(optimizer.param_groups()[0].options()).lr(), 0.1);
  // Saved again from the loaded optimiser: the same moments and steps, by parameter name.
  train::save_checkpoint(dir.file("again.pt"), *model, &optimizer, {1, 1, 0}, "a: 1\n", "{}");
  const auto states = [](const std::string& file) {
    return read_pickle(file).toGenericDict().at("optimizer").toGenericDict().at("state").toGenericDict();
  };
  const auto before = states(path), after = states(dir.file("again.pt"));
  ASSERT_EQ(before.size(), 2u);  // weight and bias
  for (const std::string name : {"weight", "bias"}) {
    const auto a = before.at(name).toGenericDict(), b = after.at(name).toGenericDict();
    EXPECT_EQ(a.at("step").toInt(), 1);
    EXPECT_EQ(b.at("step").toInt(), 1);
    for (const std::string field : {"exp_avg", "exp_avg_sq"}) {
      EXPECT_GT(a.at(field).toTensor().abs().sum().item<double>(), 0) << name << " " << field;
      EXPECT_TRUE(torch::equal(a.at(field).toTensor(), b.at(field).toTensor())) << name << " " << field;
    }
  }
}

TEST(Checkpoint, DamagedFieldsAreErrorsNamingTheField) {
  testing::TempDir dir;
  const auto not_int = edited_checkpoint(dir, [](auto& root) {
    auto state = root.at("state").toGenericDict();
    state.insert_or_assign("epoch", c10::IValue("three"));
  });
  EXPECT_NE(load_error(not_int).find("'state.epoch' is not an integer"), std::string::npos) << load_error(not_int);
  const auto no_model = edited_checkpoint(dir, [](auto& root) { root.erase("model"); });
  EXPECT_NE(load_error(no_model).find("'model' is missing"), std::string::npos) << load_error(no_model);
  const auto wrong_moment = edited_checkpoint(dir, [](auto& root) {
    auto state = root.at("optimizer").toGenericDict().at("state").toGenericDict().at("bias").toGenericDict();
    state.insert_or_assign("exp_avg", c10::IValue(torch::zeros({1000})));
  });
  EXPECT_NE(load_error(wrong_moment).find("optimizer.state.bias.exp_avg of shape [1000]"), std::string::npos)
      << load_error(wrong_moment);
  const auto bad_rng = edited_checkpoint(dir, [](auto& root) {
    auto rng = root.at("rng").toGenericDict();
    rng.insert_or_assign("cpu", c10::IValue(torch::zeros({3})));
  });
  EXPECT_NE(load_error(bad_rng).find("'rng.cpu' is not a CPU generator state"), std::string::npos) << load_error(bad_rng);
  const auto newer = edited_checkpoint(dir, [](auto& root) { root.insert_or_assign("format_version", c10::IValue(int64_t{4})); });
  EXPECT_NE(load_error(newer).find("format version 4"), std::string::npos) << load_error(newer);
}

}  // namespace
}  // namespace tessera
