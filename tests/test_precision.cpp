// Mixed precision: bf16 autocast on the CPU stays close to fp32 for every method, and fp16's dynamic
// loss scaling skips overflowing steps, halves and grows its scale, and resumes exactly.
#include <nlohmann/json.hpp>

#include "dist_common.h"
#include "tessera/core/precision.h"
#include "tessera/models/resnet.h"
#include "tessera/methods/loss_scaler.h"
#include "tessera/train/checkpoint.h"
#include "tessera/core/memory.h"
#include "tessera/train/planner.h"
#include "tessera/train/run_spec.h"
#include "tessera/train/trainer.h"

namespace fs = std::filesystem;
namespace tessera {

namespace {

double cosine(const torch::Tensor& a, const torch::Tensor& b) {
  const auto x = a.flatten().to(torch::kDouble), y = b.flatten().to(torch::kDouble);
  return (x * y).sum().item<double>() / std::max(1e-30, (x.norm() * y.norm()).item<double>());
}

}  // namespace

TEST(Precision, NamesAndAutocastScopes) {
  EXPECT_EQ(parse_precision("bf16"), Precision::bf16);
  EXPECT_EQ(precision_name(Precision::fp16), "fp16");
  EXPECT_THROW(parse_precision("fp8"), Error);
  const auto w = torch::randn({8, 8}), x = torch::randn({4, 8});
  {
    AutocastGuard bf16(Precision::bf16);
    EXPECT_EQ(torch::mm(x, w).scalar_type(), torch::kBFloat16);
    {
      AutocastGuard off(Precision::fp32);  // nested: backward passes run like this
      EXPECT_EQ(torch::mm(x, w).scalar_type(), torch::kFloat);
    }
    EXPECT_EQ(torch::mm(x, w).scalar_type(), torch::kBFloat16) << "the outer scope comes back";
  }
  EXPECT_EQ(torch::mm(x, w).scalar_type(), torch::kFloat);
}

// One training step in bf16: loss within 2 % and every gradient pointing the same way as in fp32
// (cosine > 0.98; bf16 keeps 8 bits of mantissa). Weights, outputs and the loss stay fp32.
class Bf16Step : public ::testing::TestWithParam<std::string> {};

TEST_P(Bf16Step, LossAndGradientsCloseToFp32) {
  testing::TempDir dir;
  testing::fake_mnist_dir(dir);
  auto c = testing::equivalence_config(GetParam(), dir.file("mnist"));
  c.patchgd.eps = 0;  // one optimiser step: the gradients of the same weights are compared
  const auto fp32 = testing::step_gradients(c, 0, 4, false);
  c.train.precision = "bf16";
  const auto bf16 = testing::step_gradients(c, 0, 4, false);
  ASSERT_EQ(fp32.size(), bf16.size());
  int compared = 0;
  for (size_t i = 0; i < fp32.size(); ++i) {
    EXPECT_EQ(bf16[i].scalar_type(), torch::kFloat) << "gradients of fp32 weights are fp32";
    if (fp32[i].abs().max().item<double>() < 1e-6) continue;  // nothing to compare
    EXPECT_GT(cosine(fp32[i], bf16[i]), 0.98) << GetParam() << " parameter " << i;
    ++compared;
  }
  EXPECT_GT(compared, 3);
}

TEST_P(Bf16Step, TrainingLossCloseToFp32) {
  testing::TempDir dir;
  testing::fake_mnist_dir(dir);
  auto c = testing::equivalence_config(GetParam(), dir.file("mnist"));
  const auto loss = [&](const std::string& precision) {
    c.train.precision = precision;
    runtime::seed_everything(7);
    auto [train_set, test_set] = train::make_datasets(c);
    auto method = train::make_method(c, train_set->tasks());
    torch::optim::AdamW optimizer(method->module().parameters(), torch::optim::AdamWOptions(1e-3));
    auto batch = data::collate({train_set->get(0), train_set->get(1)}, {0, 1});
    const auto result = method->train_step(batch, optimizer);
    for (const auto& [task, out] : result.outputs) EXPECT_EQ(out.scalar_type(), torch::kFloat) << task;
    for (const auto& p : method->module().parameters()) EXPECT_EQ(p.scalar_type(), torch::kFloat);
    return result.loss;
  };
  const double a = loss("fp32"), b = loss("bf16");
  EXPECT_NEAR(b, a, 0.02 * std::abs(a)) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Methods, Bf16Step, ::testing::Values("ips", "patchgd", "gd"));

// An inf gradient skips the step (weights and AdamW state untouched) and halves the scale; finite
// steps apply the unscaled gradient, and growth_interval finite steps double the scale.
TEST(LossScaler, InfGradientSkipsTheStepAndHalvesTheScale) {
  torch::manual_seed(0);
  auto w = torch::randn({3}, torch::requires_grad());
  const auto x = torch::tensor({1.0f, 2.0f, 3.0f});
  methods::LossScalerOptions o;
  o.growth_interval = 2;
  methods::LossScaler scaler(o);
  torch::optim::SGD sgd({w}, torch::optim::SGDOptions(0.1));
  methods::StepContext context(sgd, &scaler);

  const auto before = w.detach().clone();
  context.zero_grad();
  context.backward((w * x).sum());
  EXPECT_TRUE(torch::allclose(w.grad(), x * 65536.0f)) << "backward sees the scaled loss";
  w.mutable_grad()[1] = std::numeric_limits<float>::infinity();  // an overflow somewhere in backward
  context.step();
  EXPECT_TRUE(torch::equal(w.detach(), before)) << "the step was skipped";
  EXPECT_EQ(context.steps_skipped(), 1);
  EXPECT_EQ(scaler.scale_value(), 32768.0);
  EXPECT_EQ(scaler.skipped_steps(), 1);

  for (int i = 0; i < 2; ++i) {
    const auto w0 = w.detach().clone();
    context.zero_grad();
    context.backward((w * x).sum());
    context.step();
    EXPECT_TRUE(torch::allclose(w.detach(), w0 - 0.1 * x)) << "the unscaled gradient was applied";
  }
  EXPECT_EQ(scaler.scale_value(), 65536.0) << "two finite steps in a row double the scale";
  EXPECT_EQ(scaler.growth_tracker(), 0);
}

// A one-epoch run on fake MNIST in dir, trained in `precision`, without loader threads.
Config one_epoch_config(testing::TempDir& dir, const std::string& run, const std::string& precision) {
  testing::fake_mnist_dir(dir);
  auto c = testing::tiny_config(dir.file("mnist"), dir.file(run));
  c.train.precision = precision;
  c.train.epochs = 1;
  c.data.workers = 0;
  return c;
}

// An fp16 run (on the CPU: fp32 maths with the scaler) checkpoints the scaler's state and a run
// stopped after one step and resumed ends bit for bit where the uninterrupted one does.
TEST(LossScaler, CheckpointRestoresTheScalerAndResumeIsExact) {
  testing::TempDir dir;
  auto c = one_epoch_config(dir, "a", "fp16");
  c.data.train_size = 6;
  const auto run = [&](const std::string& run_dir, int64_t stop_after) {
    c.run_dir = run_dir;
    runtime::seed_everything(c.train.seed);
    auto [train_set, test_set] = train::make_datasets(c);
    auto method = train::make_method(c, train_set->tasks());
    train::Trainer(c, *method, train_set, test_set).fit(false, stop_after);
    if (stop_after > 0) {
      // A fresh process: the state comes from the checkpoint alone.
      auto again = train::make_method(c, train_set->tasks());
      train::Trainer(c, *again, train_set, test_set).fit(true);
      return again->module().parameters();
    }
    return method->module().parameters();
  };
  const auto whole = run(dir.file("a"), 0);
  const auto state = train::read_checkpoint_info(dir.file("a/checkpoint.pt")).state;
  EXPECT_EQ(state.loss_scale, 65536.0);
  EXPECT_EQ(state.scale_growth_tracker, 3) << "three finite steps since the scale was set";
  const auto resumed = run(dir.file("b"), 1);
  ASSERT_EQ(whole.size(), resumed.size());
  for (size_t i = 0; i < whole.size(); ++i) EXPECT_TRUE(torch::equal(whole[i], resumed[i])) << "parameter " << i;
  EXPECT_EQ(train::read_checkpoint_info(dir.file("b/checkpoint.pt")).state.scale_growth_tracker, 3);

  // A scaler state written by hand comes back as written.
  train::TrainState s;
  s.loss_scale = 1024;
  s.scale_growth_tracker = 7;
  s.skipped_steps = 2;
  torch::nn::Linear model(2, 2);
  train::save_checkpoint(dir.file("s.pt"), *model, nullptr, s, "");
  const auto back = train::read_checkpoint_info(dir.file("s.pt")).state;
  EXPECT_EQ(back.loss_scale, 1024);
  EXPECT_EQ(back.scale_growth_tracker, 7);
  EXPECT_EQ(back.skipped_steps, 2);
}

}  // namespace tessera

namespace tessera {

// IPS's selection encoder (BatchNorm folded, oneDNN layout) in bf16 gives the fp32 features to bf16's
// precision: autocast does not reach oneDNN's convolutions, so the bf16 copy is made explicitly.
TEST(Precision, FoldedEncoderInBf16FollowsFp32) {
  torch::manual_seed(0);
  models::ResNetOptions o;
  o.arch = "resnet18";
  o.stages = 2;
  o.width = 16;
  o.in_channels = 1;
  models::ResNet net(o);
  net->eval();
  net->use_channels_last();
  const auto x = torch::rand({6, 1, 50, 50});
  torch::NoGradGuard no_grad;
  const auto fp32 = net->fold();
  const auto bf16 = fp32.as(torch::kBFloat16);
  const auto a = fp32.forward(x), b = bf16.forward(x);
  EXPECT_EQ(b.scalar_type(), torch::kBFloat16);
  const auto cos = torch::cosine_similarity(a, b.to(torch::kFloat), 1);
  EXPECT_GT(cos.min().item<double>(), 0.995) << cos;
}

}  // namespace tessera

namespace tessera {

// The planner's trial steps run in the run's precision, so budgets see bf16's smaller activations: the
// same step peaks lower in bf16, and a budget between the two peaks fits bf16 only.
TEST(Precision, BudgetTrialsAccountForTheDtype) {
  memory::install_tracking();
  testing::TempDir dir;
  testing::fake_mnist_dir(dir);
  auto c = testing::equivalence_config("gd", dir.file("mnist"));
  c.model.width = 32;
  c.train.batch_size = 4;
  auto [train_set, test_set] = train::make_datasets(c);
  const auto fp32 = train::trial_step(c, train_set);
  c.train.precision = "bf16";
  const auto bf16 = train::trial_step(c, train_set);
  ASSERT_TRUE(fp32.first && bf16.first);
  EXPECT_LT(bf16.second, fp32.second * 0.9) << "bf16 " << bf16.second << " B, fp32 " << fp32.second << " B";
  const int64_t between = (fp32.second + bf16.second) / 2;
  memory::set_budget(between);
  const bool bf16_fits = train::trial_step(c, train_set).first;
  c.train.precision = "fp32";
  const bool fp32_fits = train::trial_step(c, train_set).first;
  memory::set_budget(0);
  EXPECT_TRUE(bf16_fits);
  EXPECT_FALSE(fp32_fits);
}

// A bf16 run trains, checkpoints and reopens in bf16 (the precision is part of its config).
TEST(Precision, Bf16RunTrainsAndReopensInBf16) {
  testing::TempDir dir;
  const auto c = one_epoch_config(dir, "run", "bf16");
  auto [train_set, test_set] = train::make_datasets(c);
  auto method = train::make_method(c, train_set->tasks());
  const auto record = train::Trainer(c, *method, train_set, test_set).fit(false);
  EXPECT_TRUE(std::isfinite(record["test"]["loss"].get<double>()));
  const auto run = train::open_run(c.run_dir);
  EXPECT_EQ(run.method->precision(), Precision::bf16);
}

}  // namespace tessera

namespace tessera {

// Both step benchmarks run in each precision and record it with the same JSON keys.
TEST(Precision, BenchmarksRunInBf16WithTheSameKeys) {
  testing::TempDir dir;
  const auto log = dir.file("log.txt");
  const std::string ips = "bench ips --batch 2 --height 100 --width 100 --patch 20 --M 4 --I 5 --encoder-width 8 "
                          "--steps 1 --warmup 0 --threads 1";
  const std::string pgd = "bench patchgd --batch 2 --size 64 --patch 32 --encoder resnet18 --latent 8 --head pool "
                          "--steps 1 --warmup 0 --threads 1";
  for (const auto& [name, args] : {std::pair<std::string, std::string>{"ips", ips}, {"patchgd", pgd}}) {
    std::vector<nlohmann::json> runs;
    for (const std::string precision : {"fp32", "bf16"}) {
      const auto json = dir.file(name + "-" + precision + ".json");
      ASSERT_EQ(testing::run_cli(args + " --precision " + precision + " --json " + json, log), 0) << testing::read_text(log);
      runs.push_back(nlohmann::json::parse(testing::read_text(json)));
      EXPECT_EQ(runs.back()["settings"]["precision"], precision);
      EXPECT_GT(runs.back()["peak_tensor_bytes"].get<int64_t>(), 0);
    }
    for (const auto& [key, value] : runs[0].items()) EXPECT_TRUE(runs[1].contains(key)) << name << " " << key;
  }
}

}  // namespace tessera
