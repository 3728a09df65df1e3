// `tessera launch`: starts this node's ranks of a data-parallel run for people without torchrun. Each
// child is this executable with the given arguments and torchrun's environment (RANK, WORLD_SIZE,
// LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT). When one rank fails the others are stopped,
// so a run never hangs on a dead peer.
#pragma once
#include <string>
#include <vector>

namespace tessera::app {

struct LaunchOptions {
  int64_t nproc_per_node = 1;
  int64_t nnodes = 1;
  int64_t node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 0;   // 0: a free port on this machine (single-node runs only)
  double grace_seconds = 10;  // after a rank fails, the others get this long to exit before SIGKILL
  std::string executable;     // the program each rank runs; empty: this one
};

// Runs the ranks to completion; returns 0 when all succeeded, else the first failed rank's exit code
// (128 + signal for a killed one).
int launch(const LaunchOptions& options, const std::vector<std::string>& arguments);

}  // namespace tessera::app
