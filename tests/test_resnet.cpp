// ResNet parity with torchvision (reference outputs made by Debian's python3-torchvision at test time),
// and BatchNorm folding equal to the eval-mode module.
#include <cstdlib>

#include "helpers.h"
#include "tessera/models/encoder_registry.h"
#include "tessera/models/resnet.h"
#include "tessera/models/state_dict.h"

namespace tessera {
namespace {

void generate_reference(const std::string& dir, const std::string& which = "resnet") {
  const std::string cmd =
      std::string("/usr/bin/python3 ") + TESSERA_TESTS_DIR + "/gen_torchvision_reference.py " + dir + " " + which;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "needs python3-torchvision (scripts/install-deps.sh installs it): " << cmd;
}

class TorchvisionParity : public ::testing::TestWithParam<std::string> {};

TEST_P(TorchvisionParity, OutputsMatchForTheSameWeights) {
  testing::TempDir dir;
  generate_reference(dir.str());
  const std::string arch = GetParam();
  models::ResNetOptions o;
  o.arch = arch;
  o.in_channels = 3;
  o.stages = 4;
  o.num_outputs = 1000;
  models::ResNet net(o);
  const auto report = models::load_state_dict(*net, models::read_state_dict(dir.file(arch + "_state.pt")), true);
  EXPECT_TRUE(report.missing.empty() && report.unexpected.empty());
  net->eval();
  const auto io = models::read_pickle(dir.file(arch + "_io.pt")).toGenericDict();
  const auto x = io.at("x").toTensor(), expected = io.at("y").toTensor();
  torch::NoGradGuard no_grad;
  const auto y = net->forward(x);
  EXPECT_LT((y - expected).abs().max().item<double>(), 1e-4 * (1 + expected.abs().max().item<double>()));
  // The folded no-grad path used by IPS selection computes the same function.
  const auto folded = net->fold().forward(x);
  EXPECT_LT((folded - expected).abs().max().item<double>(), 1e-4 * (1 + expected.abs().max().item<double>()));
}

INSTANTIATE_TEST_SUITE_P(Archs, TorchvisionParity, ::testing::Values("resnet18", "resnet34", "resnet50"));

// PatchGD's backbones: final Linear replaced by Linear(F, 256), loaded from torchvision state dicts.
TEST(PatchGdBackbones, ResNet50AndMobileNetV2MatchTorchvision) {
  testing::TempDir dir;
  generate_reference(dir.str(), "patchgd");
  for (const std::string arch : {"resnet50", "mobilenet_v2"}) {
    models::BackboneOptions o;
    o.arch = arch;
    o.out_features = 256;
    auto net = models::make_backbone(o);
    const auto report = models::load_state_dict(*net, models::read_state_dict(dir.file(arch + "_s256_state.pt")), true);
    EXPECT_TRUE(report.missing.empty() && report.unexpected.empty()) << arch;
    net->eval();
    const auto io = models::read_pickle(dir.file(arch + "_s256_io.pt")).toGenericDict();
    const auto x = io.at("x").toTensor(), expected = io.at("y").toTensor();
    torch::NoGradGuard no_grad;
    const auto y = net->forward(x);
    ASSERT_EQ(y.sizes(), expected.sizes()) << arch;
    EXPECT_LT((y - expected).abs().max().item<double>(), 1e-4 * (1 + expected.abs().max().item<double>())) << arch;
    net->use_channels_last();  // the layout PatchGD trains in computes the same function
    EXPECT_LT((net->forward(x) - expected).abs().max().item<double>(), 1e-4 * (1 + expected.abs().max().item<double>()))
        << arch;
  }
  // A stock 1000-class MobileNetV2 state dict: everything but the replaced classifier loads.
  models::BackboneOptions o;
  o.arch = "mobilenet_v2";
  o.out_features = 256;
  auto net = models::make_backbone(o);
  const auto fresh_fc = net->named_parameters()["classifier.1.weight"].clone();
  const int64_t loaded = models::load_encoder_weights(*net, dir.file("mobilenet_v2_state.pt"), /*strict=*/false);
  EXPECT_EQ(loaded, static_cast<int64_t>(net->named_parameters().size() + net->named_buffers().size()) - 2);
  EXPECT_TRUE(torch::equal(fresh_fc, net->named_parameters()["classifier.1.weight"]));
  const auto stock = models::read_state_dict(dir.file("mobilenet_v2_state.pt"));
  EXPECT_TRUE(torch::equal(stock.at("features.3.conv.1.0.weight"), net->named_parameters()["features.3.conv.1.0.weight"]));
}

TEST(ResNet, TruncatedGreyEncoderFoldsExactly) {
  models::ResNetOptions o;
  o.in_channels = 1;
  o.stages = 2;
  models::ResNet net(o);
  EXPECT_EQ(net->out_features(), 128);
  // Non-trivial running statistics so folding is really exercised.
  torch::NoGradGuard no_grad;
  for (auto& b : net->named_buffers()) {
    if (b.key().find("running_mean") != std::string::npos) b.value().normal_(0, 0.1);
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 2.0);
  }
  net->eval();
  const auto x = torch::rand({3, 1, 50, 50});
  EXPECT_LT((net->forward(x) - net->fold().forward(x)).abs().max().item<double>(), 1e-5);
}

TEST(ResNet, RgbStemLoadsIntoGreyStemBySummingChannels) {
  models::ResNetOptions rgb_o, grey_o;
  rgb_o.stages = grey_o.stages = 2;
  grey_o.in_channels = 1;
  models::ResNet rgb(rgb_o), grey(grey_o);
  models::StateDict dict;
  for (const auto& p : rgb->named_parameters()) dict[p.key()] = p.value().detach();
  models::load_state_dict(*grey, dict, false);
  EXPECT_TRUE(torch::allclose(grey->conv1->weight, rgb->conv1->weight.sum(1, true)));
}

}  // namespace
}  // namespace tessera
