#include "tessera/core/distributed.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <chrono>
#include <map>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "tessera/core/error.h"
#include "tessera/core/log.h"

#ifdef TESSERA_WITH_GLOO
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#ifdef TESSERA_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#include <torch/cuda.h>
#endif

namespace tessera::dist {
namespace {

int64_t env_int(const GetEnv& getenv, const char* name, int64_t fallback) {
  const char* v = getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  TESSERA_CHECK(end && *end == '\0' && x >= 0, "environment variable ", name, "='", v,
                "' is not a non-negative integer; fix the launcher's settings");
  return x;
}

#ifdef TESSERA_WITH_GLOO
// The base class of c10d's process-group backends (LibTorch 2.0 split ProcessGroup from its backends).
#if TORCH_VERSION_MAJOR >= 2
using Backend = c10d::Backend;
#else
using Backend = c10d::ProcessGroup;
#endif
#endif

struct Group {
  int64_t rank = 0, world = 1;
#ifdef TESSERA_WITH_GLOO
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<Backend> gloo;  // CPU tensors
  c10::intrusive_ptr<Backend> nccl;  // CUDA tensors, in builds with NCCL on a machine with a GPU
#endif
};

Group& group() {
  static Group g;
  return g;
}

constexpr const char* kFailureKey = "failure";

#ifdef TESSERA_WITH_GLOO
// What the failed rank said, if it managed to say anything before it went.
std::string peer_failure() {
  auto& g = group();
  try {
    for (int i = 0; i < 20; ++i) {  // the failing rank may still be writing its message
      if (g.store->check({kFailureKey})) {
        const auto bytes = g.store->get(kFailureKey);
        return std::string(bytes.begin(), bytes.end());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  } catch (const std::exception&) {
    return "rank 0 is gone (it hosts the rendezvous store)";
  }
  return "";
}

// NCCL for CUDA tensors where there is one, Gloo for the rest (metadata, texts, CPU runs).
Backend& backend_for(const torch::Tensor& tensor) {
  auto& g = group();
  if (tensor.is_cuda() && g.nccl) return *g.nccl;
  return *g.gloo;
}

[[noreturn]] void collective_failed(const std::string& what, const std::exception& e) {
  const auto& g = group();
  std::string cause = e.what();
  cause = cause.substr(0, cause.find('\n'));
  const auto peer = peer_failure();
  fail("rank ", g.rank, " of ", g.world, ": ", what, " failed (", cause, "); ",
       peer.empty() ? "another rank died or stopped answering within train.dist_timeout; see its log" : peer);
}

template <typename F>
auto guarded(const std::string& what, F&& f) {
  try {
    return f();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    collective_failed(what, e);
  }
}
#endif

}  // namespace

LaunchEnv launch_env(const GetEnv& getenv) {
  LaunchEnv env;
  if (getenv("WORLD_SIZE") && *getenv("WORLD_SIZE")) {
    env.source = "torchrun";
    env.world_size = env_int(getenv, "WORLD_SIZE", 1);
    env.rank = env_int(getenv, "RANK", 0);
    env.local_rank = env_int(getenv, "LOCAL_RANK", 0);
    env.local_world_size = env_int(getenv, "LOCAL_WORLD_SIZE", 1);
    if (const char* a = getenv("MASTER_ADDR"); a && *a) env.master_addr = a;
    env.master_port = env_int(getenv, "MASTER_PORT", env.master_port);
    const char* agent = getenv("TORCHELASTIC_USE_AGENT_STORE");
    env.agent_store = agent && std::string(agent) == "True";
  } else if (getenv("SLURM_NTASKS") && *getenv("SLURM_NTASKS")) {
    env.source = "slurm";
    env.world_size = env_int(getenv, "SLURM_NTASKS", 1);
    env.rank = env_int(getenv, "SLURM_PROCID", 0);
    env.local_rank = env_int(getenv, "SLURM_LOCALID", 0);
    env.local_world_size = env_int(getenv, "SLURM_NTASKS_PER_NODE", 1);
    if (const char* a = getenv("MASTER_ADDR"); a && *a) {
      env.master_addr = a;
    } else {
      const char* nodes = getenv("SLURM_JOB_NODELIST");
      TESSERA_CHECK(nodes && *nodes, "SLURM_NTASKS is set but neither MASTER_ADDR nor SLURM_JOB_NODELIST; "
                    "run under srun or export MASTER_ADDR");
      env.master_addr = first_host(nodes);
    }
    env.master_port = env_int(getenv, "MASTER_PORT", env.master_port);
  }
  TESSERA_CHECK(env.world_size >= 1 && env.rank < env.world_size, "rank ", env.rank, " is not below the world size ",
                env.world_size, " (", env.source, " environment); fix the launcher's settings");
  TESSERA_CHECK(env.master_port > 0 && env.master_port < 65536, "master port ", env.master_port,
                " is not a TCP port (1-65535)");
  return env;
}

LaunchEnv launch_env() {
  return launch_env([](const char* name) { return std::getenv(name); });
}

std::string first_host(const std::string& nodelist) {
  // Hostlist syntax: comma-separated entries, each a prefix with optional [ranges] (e.g. "n[1-3,7]").
  const auto end = nodelist.find_first_of(",[");
  const std::string prefix = nodelist.substr(0, end);
  TESSERA_CHECK(!prefix.empty(), "cannot read a host from SLURM_JOB_NODELIST '", nodelist, "'");
  if (end == std::string::npos || nodelist[end] == ',') return prefix;
  const auto close = nodelist.find(']', end);
  TESSERA_CHECK(close != std::string::npos, "SLURM_JOB_NODELIST '", nodelist, "' has an unclosed '['");
  const std::string ranges = nodelist.substr(end + 1, close - end - 1);
  const std::string first = ranges.substr(0, ranges.find_first_of(",-"));
  TESSERA_CHECK(!first.empty(), "SLURM_JOB_NODELIST '", nodelist, "' has an empty range");
  // Anything after the bracket belongs to the same host name (e.g. "n[1-2]-ib").
  std::string suffix = nodelist.substr(close + 1);
  suffix = suffix.substr(0, suffix.find(','));
  return prefix + first + suffix;
}

bool available() {
#ifdef TESSERA_WITH_GLOO
  return true;
#else
  return false;
#endif
}

void init(const LaunchEnv& env, double timeout_seconds) {
  auto& g = group();
  if (env.world_size <= 1 || g.world > 1) return;
  TESSERA_CHECK(available(), "this run asks for ", env.world_size, " processes (", env.source,
                " environment) but tessera was built without c10d's Gloo backend; install libgloo-dev and rebuild");
#ifdef TESSERA_WITH_GLOO
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000));
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(env.master_port);
  options.isServer = env.rank == 0 && !env.agent_store;
  options.numWorkers = env.agent_store ? c10::nullopt : c10::optional<std::size_t>(env.world_size);
  options.waitWorkers = false;
  options.timeout = timeout;
  try {
    auto tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
    g.store = c10::make_intrusive<c10d::PrefixStore>("tessera", tcp);
    auto pg_options = c10d::ProcessGroupGloo::Options::create(timeout);
    // The network interface: GLOO_SOCKET_IFNAME as in PyTorch, loopback for single-node runs, else the
    // interface this host's name resolves to.
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    const bool local = env.master_addr == "127.0.0.1" || env.master_addr == "localhost";
    pg_options->devices.push_back(ifname && *ifname ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                                  : local           ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                                    : c10d::ProcessGroupGloo::createDefaultDevice());
    g.gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(g.store, static_cast<int>(env.rank),
                                                         static_cast<int>(env.world_size), pg_options);
#ifdef TESSERA_WITH_NCCL
    // Communicators are created at the first collective, on the GPU current then (runtime::device_from_name).
    if (torch::cuda::is_available()) {
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = timeout;
      g.nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(c10::make_intrusive<c10d::PrefixStore>("nccl", g.store),
                                                           static_cast<int>(env.rank),
                                                           static_cast<int>(env.world_size), nccl_options);
    }
#endif
  } catch (const std::exception& e) {
    std::string cause = e.what();
    fail("rank ", env.rank, " of ", env.world_size, ": cannot join the process group at ", env.master_addr, ":",
         env.master_port, " (", cause.substr(0, cause.find('\n')), "); check MASTER_ADDR/MASTER_PORT and that every ",
         "rank started within train.dist_timeout (", timeout_seconds, " s)");
  }
  g.rank = env.rank;
  g.world = env.world_size;
  if (g.rank > 0) {  // rank 0 speaks for the run; the others only warn and fail
    log::set_tag(fmt::format("[rank {}]", g.rank));
    log::set_level(log::Level::warn);
  }
  log::info("joined a process group of {} ranks at {}:{} ({}, {})", g.world, env.master_addr, env.master_port,
            g.nccl ? "NCCL for GPU tensors, Gloo for the rest" : "Gloo", env.source);
#else
  (void)timeout_seconds;
#endif
}

void init_from_env(double timeout_seconds) { init(launch_env(), timeout_seconds); }

int64_t rank() { return group().rank; }
int64_t world_size() { return group().world; }

void all_reduce_sum(torch::Tensor& tensor, const std::string& what) { all_reduce_sum_async(tensor, what)(); }

std::function<void()> all_reduce_sum_async(torch::Tensor& tensor, const std::string& what) {
  if (world_size() == 1) return [] {};
  TESSERA_ASSERT(tensor.is_contiguous(), "all-reduce of a non-contiguous tensor");
#ifdef TESSERA_WITH_GLOO
  std::vector<torch::Tensor> tensors{tensor};
  auto work = guarded(what, [&] { return backend_for(tensor).allreduce(tensors); });
  return [work, what] { guarded(what, [&] { return work->wait(); }); };
#else
  return [] {};
#endif
}

void broadcast(const std::vector<torch::Tensor>& tensors, const std::string& what) {
  if (world_size() == 1) return;
#ifdef TESSERA_WITH_GLOO
  // One message per device type and dtype, in the same order on every rank (std::map orders the keys;
  // device indices differ between ranks, types do not).
  std::map<std::pair<c10::DeviceType, c10::ScalarType>, std::vector<torch::Tensor>> by_kind;
  for (const auto& t : tensors) by_kind[{t.device().type(), t.scalar_type()}].push_back(t);
  torch::NoGradGuard no_grad;
  for (auto& [kind, group_tensors] : by_kind) {
    std::vector<torch::Tensor> flat;
    for (const auto& t : group_tensors) flat.push_back(t.reshape(-1));
    std::vector<torch::Tensor> message{torch::cat(flat)};
    guarded(what, [&] { return backend_for(message[0]).broadcast(message)->wait(); });
    int64_t offset = 0;
    for (auto& t : group_tensors) {
      t.copy_(message[0].slice(0, offset, offset + t.numel()).view_as(t));
      offset += t.numel();
    }
  }
#else
  (void)tensors;
#endif
}

torch::Tensor all_gather_rows(const torch::Tensor& rows, const std::string& what) {
  if (world_size() == 1) return rows;
#ifdef TESSERA_WITH_GLOO
  const int64_t world = world_size();
  std::vector<torch::Tensor> length{torch::tensor({rows.size(0)}, torch::kLong)};
  std::vector<std::vector<torch::Tensor>> lengths(1);
  for (int64_t r = 0; r < world; ++r) lengths[0].push_back(torch::empty({1}, torch::kLong));
  guarded(what, [&] { return group().gloo->allgather(lengths, length)->wait(); });
  int64_t longest = 0;
  for (const auto& l : lengths[0]) longest = std::max(longest, l.item<int64_t>());
  auto shape = rows.sizes().vec();
  shape[0] = longest;
  std::vector<torch::Tensor> padded{torch::zeros(shape, rows.options())};
  padded[0].slice(0, 0, rows.size(0)).copy_(rows);
  std::vector<std::vector<torch::Tensor>> gathered(1);
  for (int64_t r = 0; r < world; ++r) gathered[0].push_back(torch::empty(shape, rows.options()));
  guarded(what, [&] { return backend_for(padded[0]).allgather(gathered, padded)->wait(); });
  std::vector<torch::Tensor> parts;
  for (int64_t r = 0; r < world; ++r) parts.push_back(gathered[0][r].slice(0, 0, lengths[0][r].item<int64_t>()));
  return torch::cat(parts);
#else
  return rows;
#endif
}

void barrier(const std::string& what) {
  if (world_size() == 1) return;
  // An all-reduce of one number: Gloo's barrier has no timeout of its own in every version.
  auto one = torch::ones({1});
  all_reduce_sum(one, what);
}

std::vector<std::string> all_gather_text(const std::string& text, const std::string& what) {
  if (world_size() == 1) return {text};
  auto bytes = torch::empty({static_cast<int64_t>(text.size()) + 1}, torch::kUInt8);  // + 1: a terminator
  std::memcpy(bytes.data_ptr<uint8_t>(), text.c_str(), text.size() + 1);
  const auto all = all_gather_rows(bytes, what);
  std::vector<std::string> texts;
  const auto* p = all.data_ptr<uint8_t>();
  for (int64_t begin = 0, i = 0; i < all.size(0); ++i) {
    if (p[i] == 0) {
      texts.emplace_back(reinterpret_cast<const char*>(p + begin), static_cast<size_t>(i - begin));
      begin = i + 1;
    }
  }
  return texts;
}

void report_failure(const std::string& message) {
#ifdef TESSERA_WITH_GLOO
  auto& g = group();
  if (g.world <= 1 || !g.store) return;
  try {
    const std::string text = fmt::format("rank {} stopped: {}", g.rank, message);
    g.store->set(kFailureKey, std::vector<uint8_t>(text.begin(), text.end()));
  } catch (const std::exception&) {
    // The store is gone too; the other ranks' own timeouts end them.
  }
#else
  (void)message;
#endif
}

}  // namespace tessera::dist
