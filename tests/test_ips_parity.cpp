// Parity with the reference Python IPS implementation (benbergner/ips) on its own saved tensors.
#include "helpers.h"
#include "tessera/data/patches.h"
#include "tessera/methods/ips.h"
#include "tessera/models/state_dict.h"

namespace tessera {
namespace {

struct Reference {
  c10::IValue value;
  c10::impl::GenericDict root() const { return value.toGenericDict(); }
  torch::Tensor get(const std::string& section, const std::string& key) const {
    return root().at(section).toGenericDict().at(key).toTensor();
  }
  torch::Tensor get(const std::string& key) const { return root().at(key).toTensor(); }
};

class IpsParity : public ::testing::Test {
 protected:
  void SetUp() override {
    ref.value = models::read_pickle(testing::fixture("ips_reference_mnist.pt"));
    models::IpsNetOptions o;
    o.encoder.arch = "resnet18";
    o.encoder.in_channels = 1;
    o.encoder.stages = 2;
    o.aggregator.heads = 8;
    o.aggregator.d_k = 16;
    o.aggregator.d_inner = 512;
    o.aggregator.dropout = 0;
    o.aggregator.attn_dropout = 0;
    o.tasks = {{"majority", "softmax", 10}, {"max", "softmax", 10}, {"top", "softmax", 10}, {"multi", "sigmoid", 10}};
    o.pos_enc = true;
    methods::IpsOptions io;
    io.M = 4;
    io.I = 8;
    io.patch = io.stride = 50;
    ips = std::make_unique<methods::Ips>(models::IpsNet(o), io, torch::kCPU);
    models::StateDict dict;
    for (const auto& item : ref.root().at("state_dict").toGenericDict()) {
      dict[item.key().toStringRef()] = item.value().toTensor();
    }
    models::load_state_dict(ips->module(), models::map_reference_ips(dict), /*strict=*/true);
    batch.images = ref.get("image");
    for (const std::string task : {"majority", "max", "top", "multi"}) batch.labels[task] = ref.get("labels", task);
    batch.indices = {0, 1};
  }
  Reference ref;
  std::unique_ptr<methods::Ips> ips;
  data::Batch batch;
};

TEST_F(IpsParity, PatchesMatchReferencePatching) {
  const auto grid = data::PatchGrid::fit(300, 300, 50, 50);
  ASSERT_EQ(grid.count(), 36);
  for (int64_t b = 0; b < 2; ++b) {
    EXPECT_TRUE(torch::equal(data::extract_patches(batch.images[b], grid), ref.get("patches")[b]));
  }
}

TEST_F(IpsParity, EvalSelectionScoresAndPredictions) {
  ips->module().eval();
  torch::Tensor first_scores;
  const auto selection = ips->select(ips->bags(batch), [&](const torch::Tensor&, const torch::Tensor& scores) {
    if (!first_scores.defined()) first_scores = scores.clone();
  });
  EXPECT_TRUE(torch::equal(selection.idx, ref.get("outputs", "eval_selected_idx")))
      << selection.idx << "\nvs reference\n" << ref.get("outputs", "eval_selected_idx");
  ASSERT_EQ(first_scores.sizes(), ref.get("outputs", "eval_first_scores").sizes());
  EXPECT_LT((first_scores - ref.get("outputs", "eval_first_scores")).abs().max().item<double>(), 1e-5);

  const auto outputs = ips->predict(batch);
  for (const std::string task : {"majority", "max", "top", "multi"}) {
    const auto diff = (outputs.at(task) - ref.get("outputs", "eval_pred_" + task)).abs().max().item<double>();
    EXPECT_LT(diff, 1e-5) << task;
  }
}

TEST_F(IpsParity, TrainLossAndGradients) {
  ips->module().train();
  const auto selection = ips->select(ips->bags(batch));
  const auto loss = methods::multitask_loss(ips->forward(selection), batch.labels, ips->tasks());
  EXPECT_NEAR(loss.item<double>(), ref.get("outputs", "train_loss").item<double>(), 1e-5);
  loss.backward();

  const auto params = ips->module().named_parameters();
  int64_t compared = 0;
  for (const auto& item : ref.root().at("outputs").toGenericDict()) {
    const std::string key = item.key().toStringRef();
    if (key.rfind("grad.", 0) != 0) continue;
    const auto name = models::map_reference_ips({{key.substr(5), torch::Tensor()}}).begin()->first;
    ASSERT_TRUE(params.contains(name)) << name;
    const auto& grad = params[name].grad();
    ASSERT_TRUE(grad.defined()) << name;
    const auto expected = item.value().toTensor();
    const double rel = (grad - expected).norm().item<double>() / (expected.norm().item<double>() + 1e-12);
    EXPECT_LT(rel, 1e-4) << name;
    ++compared;
  }
  EXPECT_EQ(compared, 51);
}

}  // namespace
}  // namespace tessera
