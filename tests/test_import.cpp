// Importing reference models: IPSNets in settings beyond the shared fixture (task sets and orders, one
// or three channels, ResNet-18/50, positional encoding on and off, D_v != D_k, the feature-bag
// projector, a state dict saved on a GPU) and PatchGD backbone + head pairs in two head variants. Each
// imported run predicts through the command line what the reference modules predict (reference
// modules and outputs written by tests/gen_reference_models.py with Debian's python3-torch).
#include <caffe2/serialize/inline_container.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>

#include "helpers.h"
#include "tessera/core/pickle.h"
#include "tessera/train/experiment.h"
#ifdef TESSERA_WITH_SLIDES
#include "tessera/slides/h5.h"
#endif

namespace tessera {
namespace {
namespace fs = std::filesystem;

using testing::read_text;
using testing::run_cli;
using testing::save_tensor;

void generate(const std::string& dir, const std::string& which) {
  const auto cmd = std::string("/usr/bin/python3 ") + TESSERA_TESTS_DIR + "/gen_reference_models.py " + dir + " " + which;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "needs python3-torchvision (scripts/install-deps.sh installs it): " << cmd;
}

// The reference's outputs for one case: {input, outputs: {task: (1, K)}}.
c10::impl::GenericDict expected(const std::string& path) { return read_pickle(path).toGenericDict(); }

void expect_outputs(const nlohmann::json& result, const c10::impl::GenericDict& outputs, double tolerance) {
  for (const auto& item : outputs) {
    const auto task = item.key().toStringRef();
    const auto want = item.value().toTensor()[0];
    ASSERT_TRUE(result["outputs"].contains(task)) << task << " missing in " << result.dump();
    const auto got = result["outputs"][task].get<std::vector<float>>();
    ASSERT_EQ(static_cast<int64_t>(got.size()), want.numel()) << task;
    for (size_t k = 0; k < got.size(); ++k) EXPECT_NEAR(got[k], want[k].item<float>(), tolerance) << task << " " << k;
  }
}

class ReferenceIps : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    generate(dir_->str(), "ips");
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string file(const std::string& name) { return dir_->file(name); }
  static testing::TempDir* dir_;
};
testing::TempDir* ReferenceIps::dir_ = nullptr;

TEST_F(ReferenceIps, GpuSavedRgbSingleTaskResNet18WithoutPositionsAndWiderValues) {
  const auto log = file("sign.log");
  // The file was saved on a GPU: its storages are tagged cuda:0.
  caffe2::serialize::PyTorchStreamReader archive(file("ips_sign.pt"));
  const auto [data, size] = archive.getRecord("data.pkl");
  EXPECT_NE(std::string(static_cast<const char*>(data.get()), size).find("cuda:0"), std::string::npos);
  ASSERT_EQ(run_cli("import-ips --state-dict " + file("ips_sign.pt") + " --reference-config " + file("ips_sign.yml") +
                        " --height 128 --width 160 --run.dir " + file("sign_run"),
                    log),
            0)
      << read_text(log);
  const auto ref = expected(file("ips_sign_expected.pt"));
  save_tensor(file("sign.pt"), ref.at("input").toTensor());
  ASSERT_EQ(run_cli("predict --threads 1 --run " + file("sign_run") + " --image " + file("sign.pt") + " --out " + file("sign_out"), log), 0)
      << read_text(log);
  expect_outputs(nlohmann::json::parse(read_text(file("sign_out/prediction.json"))), ref.at("outputs").toGenericDict(), 1e-5);
  const auto spec = train::open_run(file("sign_run")).spec;
  EXPECT_EQ(spec.config().model.d_v, 32);
  EXPECT_FALSE(spec.config().model.pos_enc);
  EXPECT_EQ(spec.input.channels, 3);
}

TEST_F(ReferenceIps, TasksOutOfIdOrderSigmoidAndSoftmaxOnAGreyResNet50WithPositions) {
  const auto log = file("multi.log");
  ASSERT_EQ(run_cli("import-ips --state-dict " + file("ips_multi.pt") + " --reference-config " + file("ips_multi.yml") +
                        " --height 120 --width 120 --mean 0.5 --std 0.25 --run.dir " + file("multi_run"),
                    log),
            0)
      << read_text(log);
  const auto run = train::open_run(file("multi_run"));
  ASSERT_EQ(run.spec.tasks.size(), 3u);
  EXPECT_EQ(run.spec.tasks[0].name, "count");  // id 0 reads token 0
  EXPECT_EQ(run.spec.tasks[1].name, "present");
  EXPECT_EQ(run.spec.tasks[1].activation, "sigmoid");
  EXPECT_EQ(run.spec.input.normalization.mean, std::vector<float>{0.5f});
  // The run normalises what it is given: feed x such that (x - 0.5) / 0.25 is the reference's input.
  const auto ref = expected(file("ips_multi_expected.pt"));
  save_tensor(file("multi.pt"), ref.at("input").toTensor() * 0.25 + 0.5);
  ASSERT_EQ(run_cli("predict --threads 1 --run " + file("multi_run") + " --image " + file("multi.pt") + " --out " + file("multi_out"), log), 0)
      << read_text(log);
  expect_outputs(nlohmann::json::parse(read_text(file("multi_out/prediction.json"))), ref.at("outputs").toGenericDict(), 1e-5);
}

#ifdef TESSERA_WITH_SLIDES
TEST_F(ReferenceIps, FeatureBagProjectorModel) {
  const auto log = file("features.log");
  ASSERT_EQ(run_cli("import-ips --state-dict " + file("ips_features.pt") + " --reference-config " + file("ips_features.yml") +
                        " --run.dir " + file("features_run"),
                    log),
            0)
      << read_text(log);
  const auto ref = expected(file("ips_features_expected.pt"));
  const auto rows = ref.at("input").toTensor();
  slides::PatchCoords grid;
  grid.coords = torch::stack({torch::arange(rows.size(0)) * 256, torch::zeros({rows.size(0)}, torch::kLong)}, 1);
  grid.patch = grid.footprint = grid.stride = 256;
  slides::FeatureWriter writer(file("bag.h5"), grid, rows.size(1), {});
  writer.write(0, rows);
  writer.finish();
  ASSERT_EQ(run_cli("predict --threads 1 --run " + file("features_run") + " --bag " + file("bag.h5") + " --out " + file("features_out"), log), 0)
      << read_text(log);
  expect_outputs(nlohmann::json::parse(read_text(file("features_out/prediction.json"))), ref.at("outputs").toGenericDict(), 1e-5);
}
#endif

TEST_F(ReferenceIps, MismatchedConfigsFailNamingTheFieldAndWriteNothing) {
  const auto log = file("bad.log");
  auto yaml = read_text(file("ips_sign.yml"));
  const auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(file(name)) << text;
    return file(name);
  };
  const auto import = [&](const std::string& config, const std::string& run) {
    EXPECT_NE(run_cli("import-ips --state-dict " + file("ips_sign.pt") + " --reference-config " + config +
                          " --height 128 --width 160 --run.dir " + file(run),
                      log),
              0);
    EXPECT_FALSE(fs::exists(file(run + "/checkpoint.pt")));
    return read_text(log);
  };
  auto vgg = yaml;
  vgg.replace(vgg.find("enc_type: resnet18"), 18, "enc_type: vgg16");
  auto msg = import(write("vgg.yml", vgg), "vgg_run");
  EXPECT_NE(msg.find("enc_type 'vgg16' is not supported"), std::string::npos) << msg;
  EXPECT_NE(msg.find("vgg.yml"), std::string::npos) << msg;
  auto renamed = yaml;
  renamed.replace(renamed.find("name: sign"), 10, "name: signs");
  msg = import(write("renamed.yml", renamed), "renamed_run");
  EXPECT_NE(msg.find("no output layer for task 'signs'"), std::string::npos) << msg;
  auto wrong_d = yaml;
  wrong_d.replace(wrong_d.find("D: 512"), 6, "D: 128");
  msg = import(write("wrong_d.yml", wrong_d), "wrong_d_run");
  EXPECT_NE(msg.find("D is 128 but a resnet18 with 4 stages gives 512"), std::string::npos) << msg;
  msg = import(file("ips_multi.yml"), "multi_mismatch_run");  // another model's config for this state dict
  EXPECT_NE(msg.find("has no output layer for task 'count'"), std::string::npos) << msg;
}

TEST(ReferencePatchGd, BackboneAndHeadVariantsPredictAsTheReferenceModules) {
  testing::TempDir dir;
  generate(dir.str(), "patchgd");
  const auto log = dir.file("log.txt");
  for (const std::string variant : {"smaller", "larger"}) {
    ASSERT_EQ(run_cli("import-patchgd --checkpoint " + dir.file("patchgd_" + variant + ".pt") +
                          " --height 128 --width 128 --patch 32 --run.dir " + dir.file(variant),
                      log),
              0)
        << read_text(log);
    EXPECT_NE(read_text(log).find("head " + variant), std::string::npos) << read_text(log);
    const auto ref = expected(dir.file("patchgd_" + variant + "_expected.pt"));
    save_tensor(dir.file("image.pt"), ref.at("image").toTensor());
    ASSERT_EQ(run_cli("predict --threads 1 --run " + dir.file(variant) + " --image " + dir.file("image.pt") + " --out " +
                          dir.file(variant + "_out"),
                      log),
              0)
        << read_text(log);
    const auto result = nlohmann::json::parse(read_text(dir.file(variant + "_out/prediction.json")));
    const auto got = result["outputs"]["label"].get<std::vector<float>>();
    const auto want = ref.at("probs").toTensor();
    ASSERT_EQ(static_cast<int64_t>(got.size()), want.numel());
    for (size_t k = 0; k < got.size(); ++k) EXPECT_NEAR(got[k], want[k].item<float>(), 1e-4) << variant << " " << k;
    EXPECT_TRUE(fs::exists(dir.file(variant + "_out/patches.png")));
  }
  // An image of another size than the run's: one clear error, nothing written.
  save_tensor(dir.file("small.pt"), torch::rand({3, 64, 64}));
  EXPECT_NE(run_cli("predict --run " + dir.file("smaller") + " --image " + dir.file("small.pt") + " --out " + dir.file("small_out"), log), 0);
  EXPECT_NE(read_text(log).find("is 64x64 but the run expects 128x128"), std::string::npos) << read_text(log);
  EXPECT_FALSE(fs::exists(dir.file("small_out/prediction.json")));
  // Not a PatchGD checkpoint: one clear error, no run.
  EXPECT_NE(run_cli("import-patchgd --checkpoint " + dir.file("patchgd_smaller_expected.pt") +
                        " --height 128 --width 128 --patch 32 --run.dir " + dir.file("bad"),
                    log),
            0);
  EXPECT_NE(read_text(log).find("has no 'model1_weights' entry"), std::string::npos) << read_text(log);
  EXPECT_FALSE(fs::exists(dir.file("bad/checkpoint.pt")));
}

}  // namespace
}  // namespace tessera
