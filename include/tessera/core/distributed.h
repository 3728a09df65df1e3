// Data-parallel runs on PyTorch's own engine (c10d): the launch environment (torchrun, SLURM or
// `tessera launch`), one process group per process (Gloo; rendezvous through a TCPStore), and the few
// collectives training needs. With one process every call is a no-op or the identity, so callers never
// branch on whether a run is distributed. Every collective fails within train.dist_timeout with an
// error naming this rank, the operation and, where the failed rank left one, its own message.
#pragma once
#include <torch/types.h>

#include <functional>
#include <string>
#include <vector>

namespace tessera::dist {

struct LaunchEnv {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  int64_t local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
  bool agent_store = false;  // torchrun's agent already serves the store on master_port
  std::string source;        // "torchrun" (RANK/WORLD_SIZE, also tessera launch) | "slurm" | "" (one process)
};

using GetEnv = std::function<const char*(const char*)>;
// RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT as torchrun sets them; else
// SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE and the first host of
// SLURM_JOB_NODELIST (port: MASTER_PORT or 29500); else one process. Malformed values are errors.
LaunchEnv launch_env(const GetEnv& getenv);
LaunchEnv launch_env();

// The first host of a SLURM hostlist: "node[01-04,07],gpu3" -> "node01".
std::string first_host(const std::string& nodelist);

// Whether this build has c10d's Gloo process group (Debian: libgloo-dev).
bool available();

// Joins the group the environment describes; a no-op for one process and when already joined.
void init(const LaunchEnv& env, double timeout_seconds);
// Joins from the process environment (launch_env()).
void init_from_env(double timeout_seconds);

int64_t rank();
int64_t world_size();
inline bool is_main() { return rank() == 0; }

// In place over all ranks (a contiguous tensor).
void all_reduce_sum(torch::Tensor& tensor, const std::string& what);
// Starts the reduction and returns the function that waits for it (which throws as the others do).
std::function<void()> all_reduce_sum_async(torch::Tensor& tensor, const std::string& what);
// Rank 0's values into every rank's tensors, in place (flattened into one message per dtype).
void broadcast(const std::vector<torch::Tensor>& tensors, const std::string& what);
// Rows of every rank's tensor, rank 0's first (lengths may differ; other dims must agree).
torch::Tensor all_gather_rows(const torch::Tensor& rows, const std::string& what);
void barrier(const std::string& what);
// Every rank's text, rank 0's first (e.g. per-rank summaries as JSON).
std::vector<std::string> all_gather_text(const std::string& text, const std::string& what);

// Tells the other ranks why this one stops (best effort, before exiting with an error).
void report_failure(const std::string& message);

}  // namespace tessera::dist
