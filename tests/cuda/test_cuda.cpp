// Tests that need a CUDA device (ctest label "cuda"; each skips itself where there is none). The GPU
// build kit (scripts/gpu/run-kit.sh) runs them with ctest -L cuda.
#include "../dist_common.h"
#include "tessera/core/memory.h"
#include "tessera/core/runtime.h"
#include "tessera/methods/loss_scaler.h"

namespace tessera {
namespace {

#define REQUIRE_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device"

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::fake_mnist_dir(dir);
  }
  Config config(const std::string& method, const std::string& device, const std::string& precision) {
    auto c = testing::equivalence_config(method, dir.file("mnist"));
    c.train.device = device;
    c.train.precision = precision;
    c.patchgd.eps = 0;
    return c;
  }
  testing::TempDir dir;
};

// The same fp32 step on the GPU and the CPU gives the same gradients (up to kernel differences).
TEST_F(CudaTest, Fp32GradientsMatchTheCpu) {
  REQUIRE_CUDA();
  for (const std::string method : {"ips", "patchgd", "gd"}) {
    const auto cpu = testing::step_gradients(config(method, "cpu", "fp32"), 0, 4, false);
    const auto gpu = testing::step_gradients(config(method, "cuda", "fp32"), 0, 4, false);
    ASSERT_EQ(cpu.size(), gpu.size());
    for (size_t i = 0; i < cpu.size(); ++i) {
      const double scale = std::max(1e-3, cpu[i].abs().max().item<double>());
      EXPECT_LE((gpu[i].cpu() - cpu[i]).abs().max().item<double>(), 1e-3 * scale) << method << " parameter " << i;
    }
  }
}

// bf16 and fp16 autocast on the GPU stay close to fp32: every gradient points the same way.
TEST_F(CudaTest, HalfPrecisionGradientsFollowFp32) {
  REQUIRE_CUDA();
  for (const std::string method : {"ips", "patchgd", "gd"}) {
    const auto fp32 = testing::step_gradients(config(method, "cuda", "fp32"), 0, 4, false);
    for (const std::string precision : {"bf16", "fp16"}) {
      const auto half = testing::step_gradients(config(method, "cuda", precision), 0, 4, false);
      for (size_t i = 0; i < fp32.size(); ++i) {
        if (fp32[i].abs().max().item<double>() < 1e-6) continue;
        const auto a = fp32[i].flatten().to(torch::kDouble), b = half[i].flatten().to(torch::kDouble);
        EXPECT_GT((a * b).sum().item<double>() / (a.norm() * b.norm()).item<double>(), 0.98)
            << method << " " << precision << " parameter " << i;
      }
    }
  }
}

// ATen's fused CUDA kernels unscale, detect the overflow and update the scale as the CPU maths does.
TEST_F(CudaTest, LossScalerKernelsSkipAndBackOff) {
  REQUIRE_CUDA();
  auto w = torch::ones({3}, torch::TensorOptions().device(torch::kCUDA).requires_grad(true));
  const auto x = torch::tensor({1.0f, 2.0f, 3.0f}).cuda();
  methods::LossScalerOptions o;
  o.growth_interval = 1;
  methods::LossScaler scaler(o);
  torch::optim::SGD sgd({w}, torch::optim::SGDOptions(0.1));
  methods::StepContext context(sgd, &scaler);
  context.zero_grad();
  context.backward((w * x).sum());
  w.mutable_grad()[0] = std::numeric_limits<float>::infinity();
  context.step();
  EXPECT_TRUE(torch::equal(w.detach().cpu(), torch::ones({3})));
  EXPECT_EQ(scaler.scale_value(), 32768.0);
  context.zero_grad();
  context.backward((w * x).sum());
  context.step();
  EXPECT_TRUE(torch::allclose(w.detach().cpu(), torch::ones({3}) - 0.1 * x.cpu()));
  EXPECT_EQ(scaler.scale_value(), 65536.0) << "growth_interval 1: one finite step doubles the scale";
}

// Memory accounting sees GPU tensors on the current device, and a budget stops the caching allocator.
TEST_F(CudaTest, MemoryAccountingAndBudgetCoverTheGpu) {
  REQUIRE_CUDA();
  (void)runtime::device_from_name("cuda");  // makes the rank's GPU current, as training does
  memory::reset_peaks();
  const auto before = memory::snapshot();
  constexpr int64_t kBytes = 64 << 20;
  {
    auto t = torch::empty({kBytes / 4}, torch::TensorOptions().device(torch::kCUDA));
    EXPECT_GE(memory::snapshot().live_tensor_bytes - before.live_tensor_bytes, kBytes);
  }
  EXPECT_GE(memory::snapshot().peak_tensor_bytes - before.live_tensor_bytes, kBytes);
  memory::set_budget(256 << 20);
  EXPECT_ANY_THROW(torch::empty({int64_t{1} << 30}, torch::TensorOptions().device(torch::kCUDA)))
      << "4 GiB under a 256 MiB budget";
  memory::set_budget(0);
}

}  // namespace
}  // namespace tessera
