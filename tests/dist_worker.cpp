// One rank of the gradient-equivalence test: joins the group from the environment (tessera launch sets
// it), takes its half of the batch, runs one training step with gradient averaging and saves the
// gradients to <out>/grads_rank<r>.pt; with method "precise_bn", recomputes BatchNorm statistics from
// its half of 8 images and saves the buffers to <out>/bn_rank<r>.pt.
// Usage: dist_worker <method | precise_bn> <mnist dir> <out dir>
#include <iostream>

#include "dist_common.h"
#include "tessera/core/distributed.h"
#include "tessera/core/memory.h"

int main(int argc, char** argv) {
  using namespace tessera;
  if (argc != 4) {
    std::cerr << "usage: dist_worker <method> <mnist dir> <out dir>\n";
    return 2;
  }
  try {
    memory::install_tracking();
    dist::init_from_env(60);
    runtime::set_threads(1);
    if (std::string(argv[1]) == "precise_bn") {
      const auto buffers = tessera::testing::precise_bn_buffers(argv[2], dist::rank() * 4, 4);
      torch::save(buffers, std::string(argv[3]) + "/bn_rank" + std::to_string(dist::rank()) + ".pt");
      return 0;
    }
    auto c = tessera::testing::equivalence_config(argv[1], argv[2]);
    const int64_t per_rank = c.data.train_size / dist::world_size();
    const auto grads = tessera::testing::step_gradients(c, dist::rank() * per_rank, per_rank, /*reduce=*/true);
    torch::save(grads, std::string(argv[3]) + "/grads_rank" + std::to_string(dist::rank()) + ".pt");
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    dist::report_failure(e.what());
    return 1;
  }
  return 0;
}
