// End to end through the tessera command: import a reference IPSNet state dict, predict an image given
// as a tensor file, and check the outputs against the reference implementation's.
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>

#include "helpers.h"
#include "tessera/models/state_dict.h"

namespace tessera {
namespace {

int run(const std::string& args) {
  const std::string cmd = std::string(TESSERA_CLI) + " " + args + " > /dev/null 2>&1";
  return std::system(cmd.c_str());
}

TEST(Cli, ImportReferenceModelThenPredictMatchesReference) {
  testing::TempDir dir;
  const auto ref = models::read_pickle(testing::fixture("ips_reference_mnist.pt")).toGenericDict();
  const auto image = ref.at("image").toTensor()[0].clone();  // (1, 300, 300)
  {
    const auto bytes = torch::pickle_save(image);
    std::ofstream(dir.file("image.pt"), std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  const std::string model = "--model.width 64 --model.heads 8 --model.d_k 16 --model.d_inner 512 "
                            "--data.height 300 --data.width 300 --ips.M 4 --ips.I 8 --train.threads 1";
  ASSERT_EQ(run("import-ips --state-dict " + testing::fixture("ips_reference_mnist.pt") +
                " --key state_dict --run.dir " + dir.file("run") + " " + model),
            0);
  ASSERT_EQ(run("predict --run " + dir.file("run") + " --image " + dir.file("image.pt") + " --out " + dir.file("out")), 0);

  std::ifstream in(dir.file("out/prediction.json"));
  const auto result = nlohmann::json::parse(in);
  const auto outputs = ref.at("outputs").toGenericDict();
  for (const std::string task : {"majority", "max", "top", "multi"}) {
    const auto expected = outputs.at("eval_pred_" + task).toTensor()[0];
    const auto got = result["outputs"][task].get<std::vector<float>>();
    ASSERT_EQ(static_cast<int64_t>(got.size()), expected.numel());
    for (size_t k = 0; k < got.size(); ++k) EXPECT_NEAR(got[k], expected[k].item<float>(), 1e-5) << task << k;
  }
  const auto selected_expected = outputs.at("eval_selected_idx").toTensor()[0];
  ASSERT_EQ(result["patches"].size(), 4u);
  for (int64_t k = 0; k < 4; ++k) {  // 300 px in patches of 50: 6 per row
    const auto& patch = result["patches"][k];
    EXPECT_EQ(patch["row"].get<int64_t>() / 50 * 6 + patch["col"].get<int64_t>() / 50, selected_expected[k].item<int64_t>());
  }
  EXPECT_TRUE(std::filesystem::file_size(dir.file("out/selection.png")) > 0);
}

TEST(Cli, ImportRejectsAStateDictOfAnotherModel) {
  testing::TempDir dir;
  torch::nn::Linear other(2, 2);
  models::StateDict dict{{"weight", other->weight.detach()}};
  // A plain dict of tensors under foreign names.
  c10::impl::GenericDict d(c10::StringType::get(), c10::TensorType::get());
  d.insert("fc.weight", other->weight.detach());
  const auto bytes = torch::pickle_save(d);
  std::ofstream(dir.file("other.pt"), std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  EXPECT_NE(run("import-ips --state-dict " + dir.file("other.pt") + " --run.dir " + dir.file("run")), 0);
  EXPECT_FALSE(std::filesystem::exists(dir.file("run/checkpoint.pt")));
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

// tessera plan: without a budget the peak of one step as configured; with one, the planner's trials
// (the configuration as given first) and a chunk of the gradient pass that fits. Nothing is written
// but the JSON asked for.
TEST(Cli, PlanMeasuresAStepAndPlansChunksUnderABudget) {
  testing::TempDir dir;
  const std::string config = "--data.mnist_dir " + testing::fake_mnist_dir(dir) +
                             " --data.height 168 --data.width 168 --data.patch 28 --data.stride 28 --data.train_size 4"
                             " --data.test_size 2 --data.workers 0 --data.noise_glyphs 5 --train.batch_size 2 --train.threads 1"
                             " --model.encoder vit_small_patch16_224 --model.in_channels 1 --model.heads 2 --model.d_k 8"
                             " --model.d_inner 32 --ips.M 16 --ips.I 8 --run.dir " + dir.file("run") +
                             " --model.encoder_args '{\"img_size\": 28, \"patch_size\": 7, \"embed_dim\": 64, \"depth\": 4, \"num_heads\": 2}'";
  ASSERT_EQ(run("plan " + config + " --json " + dir.file("whole.json")), 0);
  const auto whole = nlohmann::json::parse(testing::read_text(dir.file("whole.json")));
  ASSERT_GT(whole["peak_tensor_bytes"].get<int64_t>(), 0);
  ASSERT_EQ(run("plan " + config + " --ips.grad_chunk 8 --json " + dir.file("chunked.json")), 0);
  const int64_t chunked = nlohmann::json::parse(testing::read_text(dir.file("chunked.json")))["peak_tensor_bytes"];
  ASSERT_LT(chunked, whole["peak_tensor_bytes"].get<int64_t>());
  // A budget between the two: the plan keeps batch 2 and chooses a chunk.
  const int64_t budget = (chunked + whole["peak_tensor_bytes"].get<int64_t>()) / 2 * 100 / 95;
  ASSERT_EQ(run("plan " + config + " --budget " + std::to_string(budget) + " --json " + dir.file("plan.json")), 0);
  const auto plan = nlohmann::json::parse(testing::read_text(dir.file("plan.json")));
  EXPECT_EQ(plan["batch_size"], 2);
  EXPECT_TRUE(plan["settings"].contains("ips.grad_chunk")) << plan.dump();
  EXPECT_EQ(plan["trials"][0]["fits"], false);
  EXPECT_TRUE(plan["trials"][0]["settings"].empty());
  EXPECT_FALSE(std::filesystem::exists(dir.file("run"))) << "plan must not create the run";
}

}  // namespace
}  // namespace tessera
