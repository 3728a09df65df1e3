// Memory accounting, sizes, schedule, metrics and config round trips.
#include <atomic>
#include <mutex>
#include <set>

#include "helpers.h"
#include "tessera/core/csv.h"
#include "tessera/core/run_dir.h"
#include "tessera/core/memory.h"
#include "tessera/core/thread_pool.h"
#include "tessera/train/registry.h"
#include "tessera/train/metrics.h"
#include "tessera/train/schedule.h"

namespace tessera {
namespace {

TEST(Memory, TracksLiveAndPeakTensorBytesExactly) {
  memory::install_tracking();
  const int64_t base = memory::cpu_live_bytes();
  memory::reset_peaks();
  {
    auto a = torch::empty({1000}, torch::kFloat32);
    EXPECT_EQ(memory::cpu_live_bytes() - base, 4000);
    auto b = torch::empty({500}, torch::kFloat64);
    EXPECT_EQ(memory::cpu_live_bytes() - base, 8000);
  }
  EXPECT_EQ(memory::cpu_live_bytes(), base);
  EXPECT_EQ(memory::cpu_peak_bytes() - base, 8000);
  memory::reset_peaks();
  EXPECT_EQ(memory::cpu_peak_bytes(), base);
  EXPECT_GT(memory::snapshot().peak_rss_bytes, 0);
}

TEST(Memory, ParsesAndFormatsSizes) {
  EXPECT_EQ(memory::parse_bytes("4GiB"), 4LL << 30);
  EXPECT_EQ(memory::parse_bytes("1.5 MiB"), 3LL << 19);
  EXPECT_EQ(memory::parse_bytes("800MB"), 800000000LL);
  EXPECT_EQ(memory::parse_bytes("123"), 123);
  EXPECT_THROW(memory::parse_bytes("lots"), Error);
  EXPECT_THROW(memory::parse_bytes("3 parsecs"), Error);
  EXPECT_EQ(memory::format_bytes(3LL << 30), "3.00 GiB");
}

TEST(Schedule, WarmupThenCosineToMinFactor) {
  const train::LrSchedule s{"cosine", 1e-3, 10, 150, 100, 1e-3};
  EXPECT_DOUBLE_EQ(s.at(0), 0.0);
  EXPECT_DOUBLE_EQ(s.at(500), 0.5e-3);
  EXPECT_DOUBLE_EQ(s.at(1000), 1e-3);
  EXPECT_NEAR(s.at(1000 + 7000), 0.5 * 1e-3 + 0.5 * 1e-6, 1e-12);  // halfway through the cosine
  EXPECT_NEAR(s.at(15000), 1e-6, 1e-12);
}

TEST(Schedule, PatchGdWarmupThenLinearDecayToZeroAtTwiceTheEpochs) {
  const train::LrSchedule s{"linear", 1e-3, 2, 100, 10, 0, 0};
  EXPECT_DOUBLE_EQ(s.at(10), 0.5e-3);
  EXPECT_DOUBLE_EQ(s.at(20), 1e-3);
  EXPECT_NEAR(s.at(1000), 1e-3 * (2000 - 1000) / (2000.0 - 20), 1e-15);  // ~0.5 x peak at epoch 100
  EXPECT_DOUBLE_EQ(s.at(2000), 0.0);
  EXPECT_DOUBLE_EQ(s.at(5000), 0.0);
}

TEST(Metrics, QuadraticWeightedKappaMatchesHandComputedValues) {
  // y = [0,1,2,2], p = [0,2,2,1], 3 classes. Observed O: (0,0)=1,(1,2)=1,(2,2)=1,(2,1)=1.
  // Weights w_ij = (i-j)^2/4. Row sums [1,1,2], column sums [1,1,2]; E = outer / 4.
  // sum w*O = (1/4)(1) + (1/4)(1) = 0.5.
  // sum w*E = (1/4)[w01*1*1 + w02*1*2 + w10*1*1 + w12*1*2 + w20*2*1 + w21*2*1] ... computed:
  //   w01=w10=w12=w21=1/4, w02=w20=1 -> (1/4)[0.25 + 2 + 0.25 + 0.5 + 2 + 0.5] = 5.5/4 = 1.375.
  // kappa = 1 - 0.5 / 1.375 = 0.636363...
  EXPECT_NEAR(train::quadratic_weighted_kappa(torch::tensor({0, 2, 2, 1}), torch::tensor({0, 1, 2, 2}), 3),
              1.0 - 0.5 / 1.375, 1e-12);
  EXPECT_NEAR(train::quadratic_weighted_kappa(torch::tensor({0, 1, 2}), torch::tensor({0, 1, 2}), 3), 1.0, 1e-12);
  // Fully reversed grades: O anti-diagonal; sum w*O = (1 + 0 + 1) = 2 over N=3 ... by hand:
  // O = [[0,0,1],[0,1,0],[1,0,0]], E = 1/3 everywhere, w = [[0,.25,1],[.25,0,.25],[1,.25,0]].
  // sum w*O = 2, sum w*E = (3.0)/3 = 1.0 -> kappa = 1 - 2 / 1 = -1.
  EXPECT_NEAR(train::quadratic_weighted_kappa(torch::tensor({2, 1, 0}), torch::tensor({0, 1, 2}), 3), -1.0, 1e-12);
}

TEST(Metrics, AucMatchesHandComputedValues) {
  // Pairs (pos, neg): 0.9>0.1, 0.9>0.4, 0.4=0.4 (half), 0.35<0.4 ... worked out by hand below.
  const auto scores = torch::tensor({0.9, 0.4, 0.35, 0.4, 0.1});
  const auto labels = torch::tensor({1, 1, 1, 0, 0});
  // positives {0.9, 0.4, 0.35} vs negatives {0.4, 0.1}: wins 2 + 1.5 + 1 = 4.5 of 6.
  EXPECT_NEAR(train::roc_auc(scores, labels), 4.5 / 6.0, 1e-12);
  EXPECT_NEAR(train::roc_auc(torch::tensor({0.1, 0.2}), torch::tensor({0, 1})), 1.0, 1e-12);
  EXPECT_THROW(train::roc_auc(torch::tensor({0.1, 0.2}), torch::tensor({1, 1})), Error);
}

TEST(Metrics, AccuracyAndExactMatch) {
  train::TaskMetrics m({{"cls", "softmax", 3}, {"multi", "sigmoid", 2}});
  TaskTensors out{{"cls", torch::tensor({{0.7, 0.2, 0.1}, {0.1, 0.1, 0.8}})}, {"multi", torch::tensor({{0.9, 0.2}, {0.6, 0.7}})}};
  TaskTensors lab{{"cls", torch::tensor({0, 1})}, {"multi", torch::tensor({{1.f, 0.f}, {1.f, 0.f}})}};
  m.add(out, lab, 2.0, 2);
  const auto s = m.summary();
  EXPECT_DOUBLE_EQ(s["cls"]["accuracy"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(s["multi"]["exact_match"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(s["loss"].get<double>(), 2.0);
}

TEST(Config, YamlRoundTripAndOverrides) {
  testing::TempDir dir;
  Config a;
  a.ips.M = 7;
  a.model.pos_enc = false;
  a.train.lr = 3e-4;
  std::ofstream(dir.file("c.yaml")) << a.to_yaml();
  Config b;
  b.load_yaml(dir.file("c.yaml"));
  EXPECT_EQ(b.to_yaml(), a.to_yaml());
  b.set("train.epochs", "3");
  EXPECT_EQ(b.train.epochs, 3);
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

TEST(Csv, IntegerFieldsAreWholeNumbersOrNothing) {
  EXPECT_EQ(parse_integer("42"), 42);
  EXPECT_EQ(parse_integer("-7"), -7);
  for (const std::string bad : {"", "4x", "x4", "1.5", "99999999999999999999"}) EXPECT_FALSE(parse_integer(bad)) << bad;
}

TEST(Csv, QuotedFieldsCrlfAndBlankLines) {
  testing::TempDir dir;
  write_file_atomic(dir.file("a.csv"), "path,label,note\r\n\"my scans/a,1.png\",2,\"say \"\"hi\"\"\"\r\n\r\nb.png,0,\"two\nlines\"\nc.png,1,\n");
  const auto t = read_csv(dir.file("a.csv"), "image list");
  EXPECT_EQ(t.header, (std::vector<std::string>{"path", "label", "note"}));
  ASSERT_EQ(t.rows.size(), 3u);
  EXPECT_EQ(t.rows[0], (std::vector<std::string>{"my scans/a,1.png", "2", "say \"hi\""}));
  EXPECT_EQ(t.rows[1][2], "two\nlines");
  EXPECT_EQ(t.rows[2], (std::vector<std::string>{"c.png", "1", ""}));
  EXPECT_EQ(t.lines, (std::vector<int64_t>{2, 4, 6}));
  EXPECT_EQ(t.column("label"), 1);
  write_file_atomic(dir.file("bad.csv"), "a,b\n\"open,1\n");
  try {
    read_csv(dir.file("bad.csv"), "image list");
    FAIL() << "an unterminated quote passed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.csv:2: a quoted field is never closed"), std::string::npos) << e.what();
  }
}

TEST(Csv, AFieldAbove64KiBIsAnErrorNamingTheLine) {
  testing::TempDir dir;
  write_file_atomic(dir.file("long.csv"), "path,label\na.png,1\n\"" + std::string(70000, 'x') + "\n");
  try {
    read_csv(dir.file("long.csv"), "image list");
    FAIL() << "a 70,000-byte field passed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("long.csv:3: a field of more than 65536 bytes (a quote never closed?)"),
              std::string::npos) << e.what();
  }
}

TEST(ThreadPool, RunsEveryIndexOnItsOwnThreadsAndRethrows) {
  std::atomic<int> exits{0};
  {
    ThreadPool pool(3, [&] { ++exits; });
    std::vector<int> hits(100, 0);
    std::mutex m;
    std::set<std::thread::id> ids;
    for (int round = 0; round < 3; ++round) {
      pool.parallel_for(100, [&](int64_t i) {
        ++hits[i];
        std::lock_guard<std::mutex> lock(m);
        ids.insert(std::this_thread::get_id());
      });
    }
    EXPECT_EQ(std::count(hits.begin(), hits.end(), 3), 100);
    EXPECT_LE(ids.size(), 3u);  // the same three threads every round
    EXPECT_EQ(ids.count(std::this_thread::get_id()), 0u);
    EXPECT_THROW(pool.parallel_for(10, [](int64_t i) {
      if (i == 7) fail("boom");
    }), Error);
    pool.parallel_for(0, [](int64_t) { FAIL(); });
  }
  EXPECT_EQ(exits.load(), 3);
}

// Every shipped preset loads and validates (typos in keys or values fail here, not on a GPU machine).
TEST(Presets, EveryPresetLoadsAndValidates) {
  int count = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(std::string(TESSERA_TESTS_DIR) + "/../configs")) {
    if (entry.path().extension() != ".yaml") continue;
    Config config;
    EXPECT_NO_THROW({
      config.load_yaml(entry.path().string());
      train::validate(config);
    }) << entry.path();
    ++count;
  }
  EXPECT_GE(count, 24);
}

}  // namespace
}  // namespace tessera
