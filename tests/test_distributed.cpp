// Data-parallel training on c10d Gloo, with two real processes on this machine: averaged gradients
// equal one process's on the concatenated batch, epoch shards partition the data, only rank 0 writes,
// a killed rank ends the other with a clear error, and one process resumes a two-process run.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <thread>

#include "dist_common.h"
#include "tessera/app/launch.h"
#include "tessera/core/distributed.h"
#include "tessera/train/checkpoint.h"

namespace fs = std::filesystem;
namespace tessera {

namespace {

const char* no_env(const char*) { return nullptr; }

dist::GetEnv env_of(std::map<std::string, std::string> vars) {
  auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [shared](const char* name) -> const char* {
    const auto it = shared->find(name);
    return it == shared->end() ? nullptr : it->second.c_str();
  };
}

// Starts the tessera CLI as one rank of `world` (as torchrun would), output into log.
pid_t spawn_rank(int64_t rank, int64_t world, int port, const std::string& args, const std::string& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    setenv("RANK", std::to_string(rank).c_str(), 1);
    setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
    setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
    setenv("LOCAL_WORLD_SIZE", std::to_string(world).c_str(), 1);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
    const std::string cmd = std::string("exec ") + TESSERA_CLI + " " + args + " > " + log + " 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// Waits up to `seconds` for pid; the exit status, or -1 when it is still running.
int wait_for(pid_t pid, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  int status = 0;
  while (std::chrono::steady_clock::now() < end) {
    if (waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return -1;
}

int free_port() {
  // Ports from the PID keep parallel ctest processes apart; the launcher's own choice is tested too.
  return 20000 + static_cast<int>(getpid() % 20000);
}

size_t count_lines(const std::string& text) { return std::count(text.begin(), text.end(), '\n'); }

// A tiny IPS run on fake MNIST: 12 training images, batch 2 per rank.
std::string tiny_run_args(const testing::TempDir& dir, int64_t epochs, const std::string& extra = "") {
  testing::fake_mnist_dir(dir);
  auto c = testing::tiny_config(dir.file("mnist"), dir.file("run"));
  c.data.train_size = 12;
  c.data.test_size = 5;
  c.data.workers = 0;
  c.train.epochs = epochs;
  std::ofstream(dir.file("tiny.yaml")) << c.to_yaml();
  return "train --config " + dir.file("tiny.yaml") + " --train.threads 1 " + extra;
}

}  // namespace

TEST(LaunchEnv, ReadsTorchrunSlurmAndNothing) {
  EXPECT_EQ(dist::launch_env(no_env).world_size, 1);
  const auto t = dist::launch_env(env_of({{"RANK", "3"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"},
                                          {"LOCAL_WORLD_SIZE", "2"}, {"MASTER_ADDR", "10.0.0.5"}, {"MASTER_PORT", "1234"}}));
  EXPECT_EQ(t.source, "torchrun");
  EXPECT_EQ(t.rank, 3);
  EXPECT_EQ(t.world_size, 8);
  EXPECT_EQ(t.local_rank, 1);
  EXPECT_EQ(t.local_world_size, 2);
  EXPECT_EQ(t.master_addr, "10.0.0.5");
  EXPECT_EQ(t.master_port, 1234);
  const auto s = dist::launch_env(env_of({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"},
                                          {"SLURM_JOB_NODELIST", "gpu[07-10],cpu1"}}));
  EXPECT_EQ(s.source, "slurm");
  EXPECT_EQ(s.rank, 5);
  EXPECT_EQ(s.world_size, 8);
  EXPECT_EQ(s.local_rank, 1);
  EXPECT_EQ(s.master_addr, "gpu07");
  EXPECT_EQ(s.master_port, 29500);
  EXPECT_THROW(dist::launch_env(env_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}})), Error);
  EXPECT_THROW(dist::launch_env(env_of({{"RANK", "x"}, {"WORLD_SIZE", "2"}})), Error);
  EXPECT_THROW(dist::launch_env(env_of({{"SLURM_NTASKS", "2"}})), Error);  // no host to meet at
}

TEST(LaunchEnv, FirstHostOfSlurmHostlists) {
  EXPECT_EQ(dist::first_host("node17"), "node17");
  EXPECT_EQ(dist::first_host("a1,b2"), "a1");
  EXPECT_EQ(dist::first_host("node[01-04]"), "node01");
  EXPECT_EQ(dist::first_host("node[3,5-7]"), "node3");
  EXPECT_EQ(dist::first_host("n[1-2]-ib,m4"), "n1-ib");
  EXPECT_THROW(dist::first_host("node[01-04"), Error);
  EXPECT_THROW(dist::first_host("[1-2]"), Error);
}

// Every sample of the epoch lands on exactly one rank (plus DistributedSampler's padding), and a run
// resumed mid-epoch with another world size covers exactly the samples not yet seen.
TEST(EpochShard, ShardsPartitionTheEpochForAnyWorldSizeAndPosition) {
  const int64_t n = 13;
  for (int64_t world : {1, 2, 3, 4}) {
    std::vector<int64_t> seen;
    size_t shard_size = 0;
    for (int64_t r = 0; r < world; ++r) {
      const auto shard = data::epoch_shard(n, 5, 2, 0, r, world);
      if (r == 0) shard_size = shard.size();
      EXPECT_EQ(shard.size(), shard_size) << "every rank takes the same number of steps";
      seen.insert(seen.end(), shard.begin(), shard.end());
    }
    EXPECT_EQ(static_cast<int64_t>(seen.size()), (n + world - 1) / world * world);
    std::set<int64_t> distinct(seen.begin(), seen.end());
    EXPECT_EQ(static_cast<int64_t>(distinct.size()), n) << "world " << world;
  }
  // Two ranks of batch 2 took 2 steps (8 samples); three ranks continue with the other 5, padded to 6
  // with the epoch's first sample.
  const auto order = data::epoch_order(n, 5, 2, true);
  std::multiset<int64_t> rest;
  for (int64_t r = 0; r < 3; ++r) {
    for (const auto i : data::epoch_shard(n, 5, 2, 8, r, 3)) rest.insert(i);
  }
  std::multiset<int64_t> expected(order.begin() + 8, order.end());
  expected.insert(order[0]);
  EXPECT_EQ(rest, expected);
  // With one rank the shard is the epoch's order (single-process runs are unchanged).
  EXPECT_EQ(data::epoch_shard(n, 5, 2, 0, 0, 1), order);
}

namespace {
// Two ranks of tests/dist_worker.cpp in `mode` on fake MNIST in dir/mnist, writing into dir; their exit status.
int run_workers(const std::string& mode, const testing::TempDir& dir) {
  testing::fake_mnist_dir(dir);
  app::LaunchOptions o;
  o.nproc_per_node = 2;
  o.executable = TESSERA_DIST_WORKER;
  return app::launch(o, std::vector<std::string>{mode, dir.file("mnist"), dir.str()});
}
}  // namespace

// The averaged gradients of two ranks equal one process's on the concatenated batch, for each method.
class GradientEquivalence : public ::testing::TestWithParam<std::string> {};

TEST_P(GradientEquivalence, TwoRanksEqualOneProcessOnTheWholeBatch) {
  REQUIRE_DISTRIBUTED();
  testing::TempDir dir;
  ASSERT_EQ(run_workers(GetParam(), dir), 0);
  auto c = testing::equivalence_config(GetParam(), dir.file("mnist"));
  c.ips.grad_chunk = 0;  // ips_chunked: two chunked ranks against one process's unchunked pass
  const auto expected = testing::step_gradients(c, 0, 4, /*reduce=*/false);
  for (int rank = 0; rank < 2; ++rank) {
    std::vector<torch::Tensor> got;
    torch::load(got, dir.file("grads_rank" + std::to_string(rank) + ".pt"));
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i].sizes(), expected[i].sizes()) << "parameter " << i;
      const double scale = std::max(1.0, expected[i].abs().max().item<double>());
      EXPECT_LE((got[i] - expected[i]).abs().max().item<double>(), 1e-5 * scale)
          << GetParam() << " rank " << rank << " parameter " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Methods, GradientEquivalence, ::testing::Values("ips", "ips_chunked", "patchgd", "gd"));

// Precise BatchNorm over two ranks: each averages its own batches, then the ranks' averages are
// averaged, which equals one process averaging all the batches (the ranks have as many each).
TEST(DataParallel, PreciseBatchNormAveragesOverTheRanks) {
  REQUIRE_DISTRIBUTED();
  testing::TempDir dir;
  ASSERT_EQ(run_workers("precise_bn", dir), 0);
  const auto expected = testing::precise_bn_buffers(dir.file("mnist"), 0, 8);
  for (int rank = 0; rank < 2; ++rank) {
    std::vector<torch::Tensor> got;
    torch::load(got, dir.file("bn_rank" + std::to_string(rank) + ".pt"));
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_TRUE(torch::allclose(got[i].to(torch::kDouble), expected[i].to(torch::kDouble), 1e-4, 1e-5))
          << "rank " << rank << " buffer " << i;
    }
  }
}

// tessera launch runs two ranks of a real training run; rank 0 alone writes the run's records.
TEST(DataParallel, TwoRanksTrainAndOnlyRankZeroWrites) {
  REQUIRE_DISTRIBUTED();
  testing::TempDir dir;
  const auto args = tiny_run_args(dir, 2);
  const auto log = dir.file("launch.log");
  ASSERT_EQ(testing::run_cli("launch --nproc-per-node 2 -- " + args, log), 0) << testing::read_text(log);
  const auto metrics = testing::read_text(dir.file("run/metrics.jsonl"));
  EXPECT_EQ(count_lines(metrics), 2u) << metrics;  // one record per epoch, not one per rank
  const auto last = nlohmann::json::parse(metrics.substr(metrics.rfind('\n', metrics.size() - 2) + 1));
  EXPECT_EQ(last["world_size"], 2);
  EXPECT_EQ(last["train"]["samples"], 12) << "both ranks' samples are in the epoch's metrics";
  EXPECT_EQ(last["test"]["samples"], 5) << "evaluation is sharded and gathered, each sample once";
  EXPECT_EQ(last["step"], 6);  // 12 samples / (2 per rank x 2 ranks) = 3 steps per epoch
  const auto state = train::read_checkpoint_info(dir.file("run/checkpoint.pt")).state;
  EXPECT_EQ(state.world_size, 2);
  EXPECT_EQ(state.epoch, 2);
  const auto train_log = testing::read_text(dir.file("run/train.log"));
  EXPECT_EQ(train_log.find("[rank 1]"), std::string::npos) << train_log;
  EXPECT_NE(train_log.find("per rank x 2 ranks"), std::string::npos) << train_log;
  for (const auto& entry : fs::directory_iterator(dir.file("run"))) {
    EXPECT_NE(entry.path().extension(), ".tmp") << "a temporary file was left: " << entry.path();
  }
}

// Killing one rank mid-epoch ends the other with an error naming it within the timeout; the last
// checkpoint stays whole and one process resumes the two-process run from it.
TEST(DataParallel, AKilledRankEndsTheOtherAndOneProcessResumes) {
  REQUIRE_DISTRIBUTED();
  testing::TempDir dir;
  const auto args = tiny_run_args(dir, 30, "--train.checkpoint_every 1 --train.dist_timeout 20");
  const int port = free_port();
  const pid_t r0 = spawn_rank(0, 2, port, args, dir.file("rank0.log"));
  const pid_t r1 = spawn_rank(1, 2, port, args, dir.file("rank1.log"));
  // Wait until training has checkpointed a few steps, then kill rank 1 without warning.
  const auto ckpt = dir.file("run/checkpoint.pt");
  for (int i = 0; i < 1200 && !(fs::exists(ckpt) && train::read_checkpoint_info(ckpt).state.step >= 3); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    int status = 0;
    if (waitpid(r0, &status, WNOHANG) == r0) {
      kill(r1, SIGKILL);
      waitpid(r1, nullptr, 0);
      FAIL() << "rank 0 ended early: " << testing::read_text(dir.file("rank0.log"));
    }
  }
  ASSERT_TRUE(fs::exists(ckpt)) << testing::read_text(dir.file("rank0.log"));
  kill(r1, SIGKILL);
  waitpid(r1, nullptr, 0);
  const auto killed_at = std::chrono::steady_clock::now();
  const int status = wait_for(r0, 40);
  if (status == -1) {
    kill(r0, SIGKILL);
    waitpid(r0, nullptr, 0);
    FAIL() << "rank 0 still running 40 s after rank 1 died";
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  EXPECT_LE(seconds, 25.0) << "train.dist_timeout is 20 s";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1);
  const auto rank0_log = testing::read_text(dir.file("rank0.log"));
  EXPECT_NE(rank0_log.find("error: rank 0 of 2: "), std::string::npos) << rank0_log;
  EXPECT_NE(rank0_log.find(" failed ("), std::string::npos) << rank0_log;
  EXPECT_EQ(count_lines(rank0_log.substr(rank0_log.find("error:"))), 1u) << "one line: " << rank0_log;

  const auto before = train::read_checkpoint_info(ckpt).state;  // whole: it loads
  EXPECT_EQ(before.world_size, 2);
  const auto log = dir.file("resume.log");
  const int64_t epochs = before.epoch + 2;
  ASSERT_EQ(testing::run_cli(args + " --train.epochs " + std::to_string(epochs) + " --resume", log), 0)
      << testing::read_text(log);
  EXPECT_NE(testing::read_text(log).find("re-sharded"), std::string::npos) << testing::read_text(log);
  const auto after = train::read_checkpoint_info(ckpt).state;
  EXPECT_EQ(after.epoch, epochs);
  EXPECT_EQ(after.world_size, 1);
  EXPECT_GT(after.step, before.step);
}

// A rank that fails with an error tells the others why.
TEST(DataParallel, AFailingRankNamesItsCauseToTheOthers) {
  REQUIRE_DISTRIBUTED();
  testing::TempDir dir;
  const auto args = tiny_run_args(dir, 1, "--train.dist_timeout 20");
  const int port = free_port() + 1;
  // Rank 1 cannot read its preset; rank 0 waits for it at the rendezvous and then in a collective.
  const pid_t r0 = spawn_rank(0, 2, port, args, dir.file("rank0.log"));
  const pid_t r1 = spawn_rank(1, 2, port, args + " --data.mnist_dir " + dir.file("missing"), dir.file("rank1.log"));
  const int s1 = wait_for(r1, 60), s0 = wait_for(r0, 60);
  ASSERT_NE(s0, -1);
  ASSERT_NE(s1, -1);
  EXPECT_NE(WEXITSTATUS(s1), 0);
  EXPECT_NE(WEXITSTATUS(s0), 0);
  const auto rank0_log = testing::read_text(dir.file("rank0.log"));
  EXPECT_NE(rank0_log.find("rank 1 stopped:"), std::string::npos) << rank0_log;
}

}  // namespace tessera
