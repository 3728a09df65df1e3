// Bad input gets one clear error naming the input and what to do, never a crash or silent garbage.
#include <cstdio>
#include <cstring>
#include <fstream>

#include <caffe2/serialize/inline_container.h>

#include "helpers.h"
#include "tessera/core/pickle.h"
#include "tessera/core/memory.h"
#include "tessera/data/image_io.h"
#include "tessera/data/patches.h"
#include "tessera/methods/ips.h"
#include "tessera/train/experiment.h"
#include "tessera/train/trainer.h"

namespace tessera {
namespace {

using testing::error_of;

methods::Ips small_ips(int64_t channels = 1) {
  models::IpsNetOptions o;
  o.encoder.in_channels = channels;
  o.encoder.stages = 2;
  o.encoder.width = 8;
  o.aggregator.heads = 2;
  o.aggregator.d_k = 8;
  o.aggregator.d_inner = 16;
  o.tasks = {{"a", "softmax", 3}};
  methods::IpsOptions io;
  io.M = 2;
  io.I = 2;
  io.patch = io.stride = 16;
  return methods::Ips(models::IpsNet(o), io, torch::kCPU);
}

// A torch.save zip whose data.pkl is `pickle` (the archive layout LibTorch writes).
void write_torch_zip(const std::string& path, const std::string& pickle) {
  caffe2::serialize::PyTorchStreamWriter writer(path);
  writer.writeRecord("data.pkl", pickle.data(), pickle.size());
  writer.writeEndOfFile();
}

TEST(BadInput, TruncatedPicklesAreErrorsNotReadsPastTheEnd) {
  testing::TempDir dir;
  // Arguments cut off by the end of the data: a string length, a memo index, a frame, a global.
  const auto bytes = [](const auto& literal) { return std::string(literal, sizeof(literal) - 1); };  // NULs included
  for (const auto& pickle : {bytes("\x80\x02" "X\xff\xff"), bytes("\x80\x02" "r\x01"), bytes("\x80\x04\x95\x01\x00"),
                             bytes("\x80\x02" "ccollections\nOrderedD"), bytes("\x80\x02}(X\x01\x00\x00\x00" "a"), std::string()}) {
    const auto path = dir.file("bad.pt");
    write_torch_zip(path, pickle);
    EXPECT_NE(testing::error_of([&] { read_pickle(path); }).find("bad.pt' is not a readable torch.save file"), std::string::npos)
        << testing::error_of([&] { read_pickle(path); });
  }
}

TEST(BadInput, AStringDeclaredPastThePicklesEndIsRefusedBeforeTheUnpicklerReservesIt) {
  testing::TempDir dir;
  // BINUNICODE declaring 0xa0000000 bytes (2.7 GB) with three present: LibTorch's unpickler reserves the
  // declared length before reading (a fuzz finding: tests/fuzz/corpus/pickle/regression-oom-string-length).
  const std::string pickle("\x80\x02X\x00\x00\x00\xa0" "abc.", 11);
  write_torch_zip(dir.file("long.pt"), pickle);
  const auto msg = testing::error_of([&] { read_pickle(dir.file("long.pt")); });
  EXPECT_NE(msg.find("declares a string of 2684354560 bytes past the end of its pickle"), std::string::npos) << msg;
}

TEST(BadInput, PicklesThatWouldCrashOrExhaustLibTorchsUnpicklerAreRefusedFirst) {
  testing::TempDir dir;
  // TUPLE1 on an empty stack: LibTorch 1.13's unpickler reads below its stack (a SEGV; fuzz finding
  // regression-segv-stack-underflow). LONG_BINPUT at index 0xf0000000: it grows its memo table to that
  // index (64 GB; fuzz finding regression-oom-memo-index).
  const std::pair<std::string, std::string> cases[] = {
      {std::string("\x80\x02\x85.", 4), "is not a valid pickle (an instruction takes more values than it was given)"},
      {std::string("\x80\x02Nr\x00\x00\x00\xf0.", 9), "stores a value at memo index 4026531840"}};
  for (const auto& [pickle, expected] : cases) {
    write_torch_zip(dir.file("bad.pt"), pickle);
    const auto msg = testing::error_of([&] { read_pickle(dir.file("bad.pt")); });
    EXPECT_NE(msg.find(expected), std::string::npos) << msg;
  }
}

TEST(BadInput, ImagesReachOnlyTheLoadersOfTheAcceptedFormats) {
  testing::TempDir dir;
  // A valid 4x4 FITS image: libvips decodes it when offered every loader (whose sniffers include cfitsio,
  // which allocated 4 GiB for a 48-byte "compressed" file: tests/fuzz/corpus/image/regression-oom-fits).
  std::string header;
  for (const char* card : {"SIMPLE  =                    T", "BITPIX  =                    8", "NAXIS   =                    2",
                           "NAXIS1  =                    4", "NAXIS2  =                    4", "END"}) {
    header += std::string(card) + std::string(80 - std::strlen(card), ' ');
  }
  header.resize(2880, ' ');
  std::ofstream(dir.file("x.fits"), std::ios::binary) << header << std::string(2880, '\x40');
  const auto msg = error_of([&] { data::read_image(dir.file("x.fits")); });
  EXPECT_NE(msg.find("x.fits' is not a PNG, JPEG, TIFF or WebP image (by its first bytes)"), std::string::npos) << msg;
  // The accepted formats still open, whatever their file names say.
  data::write_png(dir.file("png-named.jpg"), torch::zeros({3, 4, 5}));
  EXPECT_EQ(data::read_image(dir.file("png-named.jpg")).sizes(), (std::vector<int64_t>{3, 4, 5}));
}

TEST(BadInput, MissingImage) {
  const auto msg = error_of([] { data::read_image("/nonexistent/slide.png"); });
  EXPECT_NE(msg.find("/nonexistent/slide.png"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
}

TEST(BadInput, CorruptImage) {
  testing::TempDir dir;
  std::ofstream(dir.file("broken.png")) << "\x89PNG\r\n\x1a\n this is not really a png";
  const auto msg = error_of([&] { data::read_image(dir.file("broken.png")); });
  EXPECT_NE(msg.find("cannot read image"), std::string::npos) << msg;
  EXPECT_NE(msg.find("broken.png"), std::string::npos) << msg;
}

TEST(BadInput, ImageRoundTripsThroughPng) {
  testing::TempDir dir;
  const auto image = torch::randint(0, 256, {3, 20, 30}).to(torch::kFloat32) / 255;
  data::write_png(dir.file("x.png"), image);
  EXPECT_TRUE(torch::allclose(data::read_image(dir.file("x.png")), image, 0, 1e-6));
}

TEST(BadInput, WrongChannelCount) {
  auto ips = small_ips(1);
  data::Batch batch;
  batch.images = torch::rand({1, 3, 64, 64});
  const auto msg = error_of([&] { ips.bags(batch); });
  EXPECT_NE(msg.find("3 channels"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.in_channels"), std::string::npos) << msg;
}

TEST(BadInput, PatchLargerThanImage) {
  const auto msg = error_of([] { data::PatchGrid::fit(40, 60, 50, 50); });
  EXPECT_NE(msg.find("larger than the image 40x60"), std::string::npos) << msg;
}

TEST(BadInput, EmptyDataSet) {
  testing::TempDir dir;
  testing::write_fake_mnist(dir.str());
  auto config = testing::tiny_config(dir.str(), dir.file("run"));
  config.data.train_size = 0;
  train::apply_runtime(config);
  const auto sets = train::make_datasets(config);
  auto ips = train::make_ips(config, sets.second->tasks());
  const auto msg = error_of([&] { train::Trainer(config, *ips, sets.first, sets.second); });
  EXPECT_NE(msg.find("training set is empty"), std::string::npos) << msg;
}

TEST(BadInput, NaNLossStopsBeforeTouchingTheWeights) {
  auto ips = small_ips();
  torch::optim::AdamW opt(ips.module().parameters(), torch::optim::AdamWOptions(1e-3));
  std::vector<torch::Tensor> before;
  for (const auto& p : ips.module().parameters()) before.push_back(p.detach().clone());
  data::Batch batch;
  batch.images = torch::full({2, 1, 64, 64}, std::numeric_limits<float>::quiet_NaN());
  batch.labels["a"] = torch::tensor({0, 1}, torch::kLong);
  batch.indices = {0, 1};
  const auto msg = error_of([&] { ips.train_step(batch, opt); });
  EXPECT_NE(msg.find("loss is nan"), std::string::npos) << msg;
  const auto after = ips.module().parameters();
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(torch::equal(before[i], after[i]));
}

TEST(BadInput, ZeroPatchBag) {
  auto ips = small_ips();
  std::vector<data::PatchBagPtr> bags = {std::make_shared<data::TensorBag>(torch::zeros({0, 1, 16, 16}))};
  const auto msg = error_of([&] { ips.select(bags); });
  EXPECT_NE(msg.find("zero patches"), std::string::npos) << msg;
}

TEST(BadInput, UnknownConfigKeyAndBadValue) {
  Config c;
  EXPECT_NE(error_of([&] { c.set("ips.m", "3"); }).find("unknown config key 'ips.m'"), std::string::npos);
  EXPECT_NE(error_of([&] { c.set("ips.M", "many"); }).find("needs an integer"), std::string::npos);
  testing::TempDir dir;
  std::ofstream(dir.file("bad.yaml")) << "ips:\n  M: [1, 2\n";
  EXPECT_NE(error_of([&] { c.load_yaml(dir.file("bad.yaml")); }).find("not valid YAML"), std::string::npos);
}

TEST(BadInput, MissingMnistFilesSayHowToGetThem) {
  const auto msg = error_of([] { data::load_mnist("/nonexistent/mnist", "train"); });
  EXPECT_NE(msg.find("scripts/get-mnist.sh"), std::string::npos) << msg;
}

TEST(BadInput, CliPrintsOneLineAndFails) {
  const std::string cmd = std::string(TESSERA_CLI) + " predict --run /nonexistent/run --image x.png 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, pipe)) out += buf;
  const int status = pclose(pipe);
  EXPECT_NE(status, 0);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_NE(out.find("error: checkpoint '/nonexistent/run/checkpoint.pt' does not exist"), std::string::npos) << out;
}

TEST(BadInput, MemoryBudgetFailsWithAClearMessage) {
  memory::install_tracking();
  memory::set_budget(memory::cpu_live_bytes() + (1 << 20));
  const auto msg = error_of([] { torch::empty({4 << 20}, torch::kFloat32); });
  memory::set_budget(0);
  EXPECT_NE(msg.find("memory budget exceeded"), std::string::npos) << msg;
  EXPECT_NE(msg.find("over the budget of"), std::string::npos) << msg;
}

}  // namespace
}  // namespace tessera
