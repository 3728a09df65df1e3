#include "tessera/core/runtime.h"

#include <torch/torch.h>

#include <thread>

#ifdef TESSERA_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "tessera/core/distributed.h"
#include "tessera/core/error.h"

namespace tessera::runtime {

void set_threads(int64_t threads) {
  TESSERA_CHECK(threads >= 0, "thread count must be >= 0 (0 = all cores), got ", threads);
  // 0: the cores, shared among this node's data-parallel ranks.
  if (threads == 0) {
    threads = std::max<int64_t>(1, std::thread::hardware_concurrency() / std::max<int64_t>(1, dist::launch_env().local_world_size));
  }
  torch::set_num_threads(static_cast<int>(threads));
}

ScopedThreads::ScopedThreads(int64_t threads) : previous_(torch::get_num_threads()) {
  set_threads(threads);
}

ScopedThreads::~ScopedThreads() {
  if (torch::get_num_threads() != previous_) torch::set_num_threads(previous_);
}

void seed_everything(int64_t seed) {
  torch::manual_seed(static_cast<uint64_t>(seed));
}

void set_deterministic(bool on) { at::globalContext().setDeterministicAlgorithms(on, /*warn_only=*/false); }

torch::Device device_from_name(const std::string& name) {
  if (name == "cpu") return torch::kCPU;
  TESSERA_CHECK(name == "cuda", "unknown device '", name, "'; use cpu or cuda");
  TESSERA_CHECK(torch::cuda::is_available(),
                "device cuda requested but no CUDA device is available in this build; use --train.device cpu");
  // A data-parallel rank uses its node-local GPU, made current so that memory accounting, budgets and
  // NCCL all address it.
  const auto index = static_cast<c10::DeviceIndex>(dist::launch_env().local_rank % torch::cuda::device_count());
#ifdef TESSERA_WITH_CUDA
  c10::cuda::set_device(index);
#endif
  return torch::Device(torch::kCUDA, index);
}

}  // namespace tessera::runtime
