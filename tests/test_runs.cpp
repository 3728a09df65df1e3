// Self-describing runs: for every supported method x data set pair, a run trained one step predicts and
// evaluates through the command line exactly as the in-process model does (the training normalisation
// applied from the run spec alone); unsupported pairs fail validation; runs from other versions, damaged
// specs and wrong inputs give one clear error and write nothing.
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>

#include "helpers.h"
#include "tessera/data/image_io.h"
#include "tessera/methods/step_context.h"
#include "tessera/train/experiment.h"
#include "tessera/train/preflight.h"
#include "tessera/train/registry.h"
#include "tessera/train/trainer.h"
#ifdef TESSERA_WITH_SLIDES
#include "tessera/slides/h5.h"
#include "tessera/slides/synthetic.h"
#endif

namespace tessera {
namespace {
namespace fs = std::filesystem;

using testing::error_of;
using testing::read_text;
using testing::run_cli;
using testing::save_tensor;

struct Pair {
  std::string method, dataset;
  bool vit = false;  // a small timm-layout ViT encoder instead of the ResNet
};
std::ostream& operator<<(std::ostream& os, const Pair& p) {
  return os << p.method << "_" << p.dataset << (p.vit ? "_vit" : "");
}

// A tiny configuration of the pair, with its data written under dir; returns the CLI input flag that
// predicts test sample 0 (set after the data sets exist, for generated sets).
Config pair_config(const Pair& p, const testing::TempDir& dir) {
  fs::create_directories(dir.file("mnist"));
  testing::write_fake_mnist(dir.file("mnist"));
  Config c = testing::tiny_config(dir.file("mnist"), dir.file("run"));
  c.data.dataset = p.dataset;
  c.train.method = p.method;
  c.train.epochs = 1;
  c.train.batch_size = 2;
  c.train.warmup_epochs = 0;
  c.data.train_size = 2;  // one step
  c.data.test_size = 3;
  c.data.workers = 0;
  c.patchgd.latent = 8;
  c.patchgd.q = 0.5;
  if (p.dataset == "ultramnist" || p.dataset == "ultramnist28") {
    c.data.height = c.data.width = 140;
    c.data.max_scale = 2;
  } else if (p.dataset == "csv") {
    // RGB images of the user's own, with a normalisation that must be repeated at prediction.
    RunDir images(dir.file("images"));
    torch::manual_seed(3);
    std::string train = "path,label\n", test = "path,label\n";
    for (int i = 0; i < 5; ++i) {
      const auto name = "img" + std::to_string(i) + ".png";
      data::write_png(images.file(name), torch::rand({3, 84, 84}));
      (i < 2 ? train : test) += name + "," + std::to_string(i % 3) + "\n";
    }
    images.write_text("train.csv", train);
    images.write_text("test.csv", test);
    c.data.train_csv = images.file("train.csv");
    c.data.test_csv = images.file("test.csv");
    c.data.height = c.data.width = 84;
    c.data.channels = c.model.in_channels = 3;
    c.data.mean = "0.5,0.4,0.3";
    c.data.std = "0.2,0.25,0.3";
    c.data.classes = "3";
  }
#ifdef TESSERA_WITH_SLIDES
  else if (p.dataset == "slides" || p.dataset == "feature_bags") {
    std::string manifest = "slide,label,split\n";
    fs::create_directories(dir.file("bags"));
    torch::manual_seed(4);
    for (int i = 0; i < 5; ++i) {
      const auto name = "slide" + std::to_string(i) + ".tif";
      manifest += name + "," + std::to_string(i % 2) + "," + (i < 2 ? "train" : "test") + "\n";
      if (p.dataset == "slides") {
        slides::SyntheticSlideOptions o;
        o.width = o.height = 512;
        o.tissue_blobs = 3;
        o.tissue_size = 0.45;
        o.seed = static_cast<uint64_t>(i);
        slides::write_synthetic_slide(dir.file(name), o, nullptr);
      } else {
        slides::PatchCoords grid;
        grid.coords = torch::stack({torch::arange(20) * 64, torch::zeros({20}, torch::kLong)}, 1);
        grid.patch = grid.footprint = grid.stride = 64;
        slides::FeatureWriter w(dir.file("bags/slide" + std::to_string(i) + ".h5"), grid, 16, {});
        w.write(0, torch::randn({20, 16}));
        w.finish();
      }
    }
    write_file_atomic(dir.file("manifest.csv"), manifest);
    c.data.manifest = dir.file("manifest.csv");
    c.data.patch = c.data.stride = 64;
    c.slide.cache_dir = dir.file("cache");
    c.slide.min_tissue = 0.25;
    c.slide.features_dir = dir.file("bags");
    c.ips.loading = "lazy";
    c.model.pos_enc = false;
    if (p.dataset == "slides") {
      c.model.in_channels = 3;
      c.data.mean = "0.8,0.7,0.75";
      c.data.std = "0.1,0.15,0.12";
    } else {
      c.model.encoder = "projector";
      c.model.in_features = c.model.dim = 16;
    }
  }
#endif
  if (p.vit) {
    // 4-px patches tile every patch and image side of these sets; dynamic size lets GD see whole images.
    c.model.encoder = "vit_small_patch16_224";
    c.model.encoder_args = R"({"img_size": 28, "patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2,
                              "init_values": 1e-5, "dynamic_img_size": true})";
  }
  return c;
}

class PairTest : public ::testing::TestWithParam<Pair> {};

TEST_P(PairTest, TrainedRunPredictsAndEvaluatesThroughTheCliAsInProcess) {
  const auto p = GetParam();
  testing::TempDir dir;
  auto c = pair_config(p, dir);
  train::apply_runtime(c);
  auto [train_set, test_set] = train::make_datasets(c);
  auto method = train::make_method(c, train_set->tasks());
  train::Trainer(c, *method, train_set, test_set).fit(false);

  const auto sample = test_set->get(0);
  const auto expected = method->predict(data::collate({sample}, {0}));
  const auto expected_eval = train::evaluate(*method, test_set, c.train.batch_size, 0, 1);

  // The CLI gets what a user has: the picture before normalisation, the image file, the slide or the bag.
  std::string input;
  if (p.dataset == "csv") {
    input = "--image " + dir.file("images/img2.png");
  } else if (p.dataset == "slides") {
    input = "--slide " + dir.file("slide2.tif");
  } else if (p.dataset == "feature_bags") {
    input = "--bag " + dir.file("bags/slide2.h5");
  } else {
    save_tensor(dir.file("input.pt"), test_set->picture(0));
    input = "--image " + dir.file("input.pt");
  }
  const auto log = dir.file("log.txt");
  ASSERT_EQ(run_cli("predict --threads 1 --run " + dir.file("run") + " " + input + " --out " + dir.file("pred"), log), 0)
      << read_text(log);
  const auto result = nlohmann::json::parse(read_text(dir.file("pred/prediction.json")));
  for (const auto& task : method->tasks()) {
    const auto got = result["outputs"][task.name].get<std::vector<float>>();
    const auto want = expected.at(task.name)[0];
    ASSERT_EQ(static_cast<int64_t>(got.size()), want.numel()) << task.name;
    for (size_t k = 0; k < got.size(); ++k) EXPECT_NEAR(got[k], want[k].item<float>(), 1e-5) << task.name << " " << k;
  }
  const auto& info = train::find_method(p.method);
  if (info.picture == "selection" && p.dataset != "slides" && p.dataset != "feature_bags") {
    EXPECT_TRUE(fs::exists(dir.file("pred/selection.png")));
    EXPECT_EQ(result["patches"].size(), static_cast<size_t>(c.ips.M));
  }
  if (info.picture == "patch grid") {
    EXPECT_TRUE(fs::exists(dir.file("pred/patches.png")));
    EXPECT_EQ(result["patches"].size(), static_cast<size_t>((c.data.height / c.data.patch) * (c.data.width / c.data.patch)));
  }
  if (p.dataset == "slides" || p.dataset == "feature_bags") {
    EXPECT_TRUE(fs::exists(dir.file("pred/scores.csv")));
  }

  ASSERT_EQ(run_cli("eval --threads 1 --run " + dir.file("run"), log), 0) << read_text(log);
  const auto text = read_text(log);
  const auto summary = nlohmann::json::parse(text.substr(text.rfind("\n{") + 1));  // the last line
  ASSERT_TRUE(summary.contains("loss")) << text;
  EXPECT_NEAR(summary["loss"].get<double>(), expected_eval["loss"].get<double>(), 1e-5);
  for (const auto& task : method->tasks()) {
    for (const auto& [metric, value] : expected_eval[task.name].items()) {
      EXPECT_NEAR(summary[task.name][metric].get<double>(), value.get<double>(), 1e-5) << task.name << " " << metric;
    }
  }
}

std::vector<Pair> supported_pairs() {
  std::vector<Pair> pairs;
  for (const std::string dataset : {"megapixel_mnist", "ultramnist", "ultramnist28", "csv"}) pairs.push_back({"ips", dataset});
#ifdef TESSERA_WITH_SLIDES
  pairs.push_back({"ips", "slides"});
  pairs.push_back({"ips", "feature_bags"});
#endif
  for (const std::string method : {"patchgd", "gd", "gd_extended"}) {
    for (const std::string dataset : {"ultramnist", "ultramnist28", "csv"}) pairs.push_back({method, dataset});
  }
  // Every method with a ViT encoder (IPS on images and slides).
  for (const std::string method : {"ips", "patchgd", "gd", "gd_extended"}) pairs.push_back({method, "csv", true});
  pairs.push_back({"ips", "megapixel_mnist", true});
#ifdef TESSERA_WITH_SLIDES
  pairs.push_back({"ips", "slides", true});
#endif
  return pairs;
}

INSTANTIATE_TEST_SUITE_P(EveryPair, PairTest, ::testing::ValuesIn(supported_pairs()),
                         [](const auto& info) {
                           return info.param.method + "_" + info.param.dataset + (info.param.vit ? "_vit" : "");
                         });

TEST(Registry, PairsThatCannotTrainFailValidationNamingBoth) {
  for (const std::string method : {"patchgd", "gd", "gd_extended"}) {
    Config c;
    c.train.method = method;
    c.data.dataset = "megapixel_mnist";
    const auto msg = error_of([&] { train::validate(c); });
    EXPECT_NE(msg.find("train.method " + method), std::string::npos) << msg;
    EXPECT_NE(msg.find("megapixel_mnist has several tasks"), std::string::npos) << msg;
#ifdef TESSERA_WITH_SLIDES
    c.data.dataset = "slides";
    c.data.manifest = "m.csv";
    EXPECT_NE(error_of([&] { train::validate(c); }).find("cannot train on data.dataset slides"), std::string::npos);
#endif
  }
  Config c;
  c.train.method = "sgd";
  EXPECT_NE(error_of([&] { train::validate(c); }).find("is not one of ips, patchgd, gd, gd_extended"), std::string::npos);
  EXPECT_EQ(train::method_registry().size(), 4u);
  for (const auto& m : train::method_registry()) EXPECT_TRUE(m.make && !m.memory_knobs.empty()) << m.name;
}

// The IPS reference's first step runs at the schedule's LR of step 1 (not 0); PatchGD's starts at 0.
TEST(Schedule, IpsFirstStepLearnsPatchGdFirstStepIsAtZero) {
  for (const std::string method : {"ips", "patchgd"}) {
    testing::TempDir dir;
    auto c = pair_config({method, "ultramnist"}, dir);
    c.train.warmup_epochs = 1;
    c.data.train_size = 4;  // two steps per epoch: the first is the warm-up's first
    train::apply_runtime(c);
    auto [train_set, test_set] = train::make_datasets(c);
    auto m = train::make_method(c, train_set->tasks());
    const auto before = m->encoder().named_parameters()["conv1.weight"].detach().clone();
    train::Trainer(c, *m, train_set, test_set).fit(false, /*stop_after_steps=*/1);
    const bool moved = !torch::equal(before, m->encoder().named_parameters()["conv1.weight"]);
    EXPECT_EQ(moved, method == "ips") << method;
  }
}

// A label column with one class cannot train a classifier: one error before training, naming it. A
// binary slide label is one sigmoid output (BCE, AUC), as the IPS reference's CAMELYON16 setting.
TEST(BadInput, OneClassLabelsFailBeforeTrainingAndBinarySlidesAreSigmoid) {
  testing::TempDir dir;
  auto c = pair_config({"ips", "csv"}, dir);
  write_file_atomic(dir.file("images/one.csv"), "path,label\nimg0.png,0\nimg1.png,0\n");
  c.data.train_csv = dir.file("images/one.csv");
  c.data.classes = "";
  // The classes come from both lists (the test list has three); the training split's one class is found
  // by the check before training.
  const auto sets = train::make_datasets(c);  // not a structured binding: clang's C++17 cannot capture one
  const auto one = error_of([&] { train::check_data(c, *sets.first, sets.second.get()); });
  EXPECT_NE(one.find("the training split (data.train_csv '" + c.data.train_csv + "') holds one class of task 'label' (2 0)"),
            std::string::npos) << one;
#ifdef TESSERA_WITH_SLIDES
  testing::TempDir slides_dir;
  auto s = pair_config({"ips", "feature_bags"}, slides_dir);
  const auto tasks = train::make_datasets(s).first->tasks();
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].activation, "sigmoid");
  EXPECT_EQ(tasks[0].outputs, 1);
  std::string manifest = "slide,label,split\n";
  for (int i = 0; i < 5; ++i) manifest += "slide" + std::to_string(i) + ".tif,0," + (i < 2 ? "train" : "test") + "\n";
  write_file_atomic(s.data.manifest, manifest);
  const auto msg = error_of([&] { train::make_datasets(s); });
  EXPECT_NE(msg.find("label column 'label'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("holds only class 0"), std::string::npos) << msg;
#endif
}

TEST(StepContext, ChecksThatPendingGradientsAreCompletedBeforeTheStep) {
  torch::nn::Linear model(2, 1);
  torch::optim::SGD sgd(model->parameters(), 0.1);
  methods::StepContext ctx(sgd);
  ctx.zero_grad();
  ctx.backward(model(torch::ones({1, 2})).sum(), methods::StepContext::Gradients::pending);
  const auto msg = error_of([&] { ctx.step(); });
  EXPECT_NE(msg.find("internal error at "), std::string::npos) << msg;
  EXPECT_NE(msg.find("step_context.cpp:"), std::string::npos) << msg;
  ctx.gradients_complete();
  const auto before = model->weight.detach().clone();
  ctx.step();
  EXPECT_EQ(ctx.steps_taken(), 1);
  EXPECT_FALSE(torch::equal(before, model->weight));
}

// A tiny IPS run trained for one epoch, for the bad-input tests.
std::string trained_ips_run(const testing::TempDir& dir) {
  auto c = pair_config({"ips", "megapixel_mnist"}, dir);
  train::apply_runtime(c);
  auto [train_set, test_set] = train::make_datasets(c);
  auto method = train::make_method(c, train_set->tasks());
  train::Trainer(c, *method, train_set, test_set).fit(false);
  return c.run_dir;
}

TEST(RunSpec, WrittenToConfigAndCheckpointWithVersions) {
  testing::TempDir dir;
  const auto run = trained_ips_run(dir);
  const auto yaml = read_text(run + "/config.yaml");
  EXPECT_NE(yaml.find("spec:"), std::string::npos);
  EXPECT_NE(yaml.find("format_version: 2"), std::string::npos);
  EXPECT_NE(yaml.find("libtorch_version:"), std::string::npos);
  const auto info = train::read_checkpoint_info(run + "/checkpoint.pt");
  const auto spec = train::read_run_spec(info, run);
  EXPECT_EQ(spec.method, "ips");
  ASSERT_EQ(spec.tasks.size(), 4u);
  EXPECT_EQ(spec.tasks[3].name, "multi");
  EXPECT_EQ(spec.tasks[3].activation, "sigmoid");
  EXPECT_EQ(spec.input.height, 168);
  EXPECT_EQ(spec.input.patch, 28);
  // The spec rebuilds the network with nothing else: the MNIST files can go.
  fs::remove_all(dir.file("mnist"));
  auto opened = train::open_run(run);
  EXPECT_EQ(opened.method->tasks().size(), 4u);
}

// train.time_limit stops a run after that many seconds of training steps, evaluates, checkpoints the
// exact position; resuming with a larger limit continues from there.
TEST(TimeLimit, StopsEvaluatesAndResumesWhereItStopped) {
  testing::TempDir dir;
  auto c = pair_config({"ips", "megapixel_mnist"}, dir);
  c.data.train_size = 8;  // four steps per epoch
  c.train.time_limit = 1e-6;  // passed by the first step
  train::apply_runtime(c);
  auto [train_set, test_set] = train::make_datasets(c);
  auto method = train::make_method(c, train_set->tasks());
  const auto record = train::Trainer(c, *method, train_set, test_set).fit(false);
  EXPECT_EQ(record.value("stopped", ""), "time_limit");
  EXPECT_TRUE(record.contains("test"));
  const auto state = train::read_checkpoint_info(c.run_dir + "/checkpoint.pt").state;
  EXPECT_EQ(state.step, 1);
  EXPECT_EQ(state.batch_in_epoch, 1);
  EXPECT_GT(state.train_seconds, 0);
  // Resuming within the same limit does nothing; a larger one finishes the epoch from step 2.
  EXPECT_EQ(train::Trainer(c, *method, train_set, test_set).fit(true).value("step", 0), 1);
  c.train.time_limit = 0;
  const auto done = train::Trainer(c, *method, train_set, test_set).fit(true);
  EXPECT_EQ(done.value("step", 0), 4);
  EXPECT_EQ(train::read_checkpoint_info(c.run_dir + "/checkpoint.pt").state.epoch, 1);
}

TEST(RunSpec, ResumingAFinishedRunSaysSoAndSucceeds) {
  testing::TempDir dir;
  const auto run = trained_ips_run(dir);
  const auto log = dir.file("log.txt");
  ASSERT_EQ(run_cli("train --config " + run + "/config.yaml --resume --train.threads 1", log), 0) << read_text(log);
  EXPECT_NE(read_text(log).find("already finished"), std::string::npos) << read_text(log);
}

// Writes <run>/checkpoint.pt from the good checkpoint `clean` with its spec changed by f (weights kept).
void edit_spec(const std::string& clean, const std::string& run, const std::function<void(nlohmann::json&)>& f) {
  auto opened = train::open_run(clean);
  auto spec = train::to_json(opened.spec);
  f(spec);
  train::save_checkpoint(run + "/checkpoint.pt", opened.method->module(), nullptr, opened.checkpoint.state,
                         opened.checkpoint.config_yaml, spec.dump());
}

TEST(RunSpec, BadRunsAndInputsGiveOneClearErrorAndWriteNothing) {
  testing::TempDir dir;
  const auto run = trained_ips_run(dir);
  const auto log = dir.file("log.txt");
  const auto image = dir.file("image.pt");
  save_tensor(image, torch::rand({1, 168, 168}));
  const auto predict_error = [&](const std::string& args) {
    EXPECT_NE(run_cli("predict --run " + run + " " + args + " --out " + dir.file("out"), log), 0);
    EXPECT_FALSE(fs::exists(dir.file("out/prediction.json")));
    return read_text(log);
  };
  // An image with the wrong channel count.
  save_tensor(dir.file("rgb.pt"), torch::rand({3, 168, 168}));
  EXPECT_NE(predict_error("--image " + dir.file("rgb.pt")).find("has 3 channels but the model expects 1"), std::string::npos);
  // A spec that does not match the weights (another task list).
  const auto clean = dir.file("clean.pt");
  fs::copy_file(run + "/checkpoint.pt", clean);
  edit_spec(clean, run, [](nlohmann::json& s) { s["tasks"][0]["classes"] = 7; });
  auto msg = predict_error("--image " + image);
  EXPECT_NE(msg.find("does not match the network its run spec describes"), std::string::npos) << msg;
  // A run from a newer tessera.
  edit_spec(clean, run, [](nlohmann::json& s) { s["format_version"] = 99; });
  msg = predict_error("--image " + image);
  EXPECT_NE(msg.find("format version 99"), std::string::npos) << msg;
  EXPECT_EQ(std::count(msg.begin(), msg.end(), '\n'), 1) << msg;
  // A missing run.
  EXPECT_NE(run_cli("eval --run " + dir.file("nowhere"), log), 0);
  EXPECT_NE(read_text(log).find("nowhere/checkpoint.pt' does not exist"), std::string::npos) << read_text(log);
}

TEST(RunSpec, InitFromRebuildsTheEarlierRunFromItsSpec) {
  testing::TempDir dir;
  auto gd = pair_config({"gd", "ultramnist"}, dir);
  train::apply_runtime(gd);
  auto [train_set, test_set] = train::make_datasets(gd);
  auto earlier = train::make_method(gd, train_set->tasks());
  train::Trainer(gd, *earlier, train_set, test_set).fit(false);
  fs::remove_all(dir.file("mnist"));  // the earlier run's data is not needed
  auto pgd = gd;
  pgd.train.method = "patchgd";
  pgd.model.init_from = gd.run_dir + "/checkpoint.pt";
  auto later = train::make_method(pgd, train_set->tasks());
  const auto before = earlier->encoder().named_parameters();
  const auto after = later->encoder().named_parameters();
  EXPECT_TRUE(torch::equal(before["conv1.weight"], after["conv1.weight"]));
  EXPECT_TRUE(torch::equal(before["layer2.1.conv2.weight"], after["layer2.1.conv2.weight"]));
  EXPECT_NE(before["fc.weight"].sizes(), after["fc.weight"].sizes());  // GD's classifier vs PatchGD's latent projection
}

TEST(RunSpec, CheckpointsFromBeforeRunSpecsUpgradeWithADerivedSpec) {
  testing::TempDir dir;
  const auto run = trained_ips_run(dir);
  auto opened = train::open_run(run);
  // A format-1 checkpoint: the same archive without the spec, as tessera 0.1 wrote it.
  torch::serialize::OutputArchive archive, model;
  opened.method->module().save(model);
  archive.write("format_version", torch::tensor(int64_t{1}));
  archive.write("model", model);
  archive.write("has_optimizer", torch::tensor(int64_t{0}));
  archive.write("state.epoch", torch::tensor(int64_t{1}));
  archive.write("state.step", torch::tensor(int64_t{1}));
  archive.write("state.batch_in_epoch", torch::tensor(int64_t{0}));
  archive.write("rng.cpu", at::detail::getDefaultCPUGenerator().get_state());
  archive.write("config", c10::IValue(opened.checkpoint.config_yaml));
  archive.save_to(run + "/checkpoint.pt");
  // Opened only on request: LibTorch's TorchScript loader can crash on a damaged archive.
  try {
    train::open_run(run);
    FAIL() << "a format-1 checkpoint opened without upgrade-checkpoint";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tessera upgrade-checkpoint --run " + run + "/checkpoint.pt"), std::string::npos)
        << e.what();
  }
  const auto backup = train::upgrade_checkpoint(run);
  EXPECT_EQ(backup, run + "/checkpoint.pt.format1");
  EXPECT_EQ(train::legacy::load(backup, nullptr, nullptr).state.step, 1);
  const auto legacy = train::open_run(run);
  EXPECT_EQ(legacy.checkpoint.format_version, 3);
  EXPECT_EQ(legacy.checkpoint.state.epoch, 1);
  EXPECT_EQ(legacy.spec.tasks.size(), 4u);  // Megapixel MNIST's tasks, from its config alone
  data::Batch batch;
  batch.images = torch::rand({1, 1, 168, 168});
  batch.indices = {0};
  EXPECT_TRUE(torch::allclose(legacy.method->predict(batch).at("max"), opened.method->predict(batch).at("max")));
}

}  // namespace
}  // namespace tessera
