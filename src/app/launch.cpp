#include "tessera/app/launch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <map>
#include <thread>

#include "tessera/core/error.h"
#include "tessera/core/log.h"

namespace tessera::app {
namespace {

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  TESSERA_CHECK(fd >= 0, "cannot open a socket to find a free port; pass --master-port");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  close(fd);
  TESSERA_CHECK(ok, "cannot find a free port; pass --master-port");
  return ntohs(addr.sin_port);
}

std::string self_executable() {
  char path[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  TESSERA_CHECK(n > 0, "cannot find the tessera executable (/proc/self/exe)");
  return std::string(path, static_cast<size_t>(n));
}

std::string describe(int status) {
  if (WIFSIGNALED(status)) return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return fmt::format("exited with code {}", WEXITSTATUS(status));
}

int exit_code(int status) { return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status); }

}  // namespace

int launch(const LaunchOptions& o, const std::vector<std::string>& arguments) {
  TESSERA_CHECK(!arguments.empty(), "tessera launch needs the command to run after '--', e.g. -- train -c preset.yaml");
  TESSERA_CHECK(o.nproc_per_node >= 1 && o.nnodes >= 1, "--nproc-per-node and --nnodes must be >= 1");
  TESSERA_CHECK(o.node_rank >= 0 && o.node_rank < o.nnodes, "--node-rank ", o.node_rank, " must be in [0, ",
                o.nnodes, ")");
  TESSERA_CHECK(o.master_port > 0 || o.nnodes == 1, "multi-node runs need --master-port (the same on every node)");
  TESSERA_CHECK(o.master_port >= 0 && o.master_port < 65536, "--master-port ", o.master_port, " is not a TCP port");
  const int port = o.master_port > 0 ? static_cast<int>(o.master_port) : free_port();
  const int64_t world = o.nnodes * o.nproc_per_node;
  const std::string exe = o.executable.empty() ? self_executable() : o.executable;

  std::map<pid_t, int64_t> ranks;  // running children
  for (int64_t local = 0; local < o.nproc_per_node; ++local) {
    const int64_t rank = o.node_rank * o.nproc_per_node + local;
    const pid_t pid = fork();
    TESSERA_CHECK(pid >= 0, "cannot start rank ", rank, " (fork failed)");
    if (pid == 0) {
      setenv("RANK", std::to_string(rank).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(local).c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", std::to_string(o.nproc_per_node).c_str(), 1);
      setenv("MASTER_ADDR", o.master_addr.c_str(), 1);
      setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      std::vector<char*> argv{const_cast<char*>(exe.c_str())};
      for (const auto& a : arguments) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(exe.c_str(), argv.data());
      _exit(127);
    }
    ranks[pid] = rank;
  }
  log::info("launched ranks {}-{} of {} (master {}:{})", o.node_rank * o.nproc_per_node,
            (o.node_rank + 1) * o.nproc_per_node - 1, world, o.master_addr, port);

  int result = 0;
  std::chrono::steady_clock::time_point deadline;
  while (!ranks.empty()) {
    int status = 0;
    const pid_t pid = result == 0 ? waitpid(-1, &status, 0) : waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      const int64_t rank = ranks[pid];
      ranks.erase(pid);
      if (exit_code(status) != 0 && result == 0) {
        result = exit_code(status);
        log::error("rank {} {}; stopping the other ranks", rank, describe(status));
        for (const auto& [other, r] : ranks) kill(other, SIGTERM);
        deadline = std::chrono::steady_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(o.grace_seconds * 1000));
      }
      continue;
    }
    if (pid < 0) break;
    if (std::chrono::steady_clock::now() > deadline) {
      for (const auto& [other, r] : ranks) {
        log::warn("rank {} did not exit within {:.0f} s; killing it", r, o.grace_seconds);
        kill(other, SIGKILL);
      }
      deadline = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return result;
}

}  // namespace tessera::app
