// UltraMNIST generators: every label is the digit sum, digit boxes never overlap, digit scales follow
// the V-shaped distribution, the enumerated digit multisets match the benchmark's counts, and every
// image is a pure function of (seed, index).
#include <numeric>

#include "helpers.h"
#include "tessera/data/ultramnist.h"

namespace tessera {
namespace {

class UltraMnistTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::write_fake_mnist(dir.str());
    digits = std::make_shared<const data::MnistDigits>(data::load_mnist(dir.str(), "train"));
  }
  data::UltraMnist make(const std::string& variant, int64_t canvas, int64_t size, int64_t seed = 3) {
    data::UltraMnistOptions o;
    o.variant = variant;
    o.canvas = canvas;
    o.size = size;
    o.seed = seed;
    return data::UltraMnist(digits, o);
  }
  testing::TempDir dir;
  std::shared_ptr<const data::MnistDigits> digits;
};

TEST(UltraMnistMultisets, CountsPerSumMatchTheBenchmark) {
  const std::vector<size_t> expected{3, 3, 6, 9, 14, 18, 26, 32, 43, 53};
  for (int64_t sum = 0; sum < 10; ++sum) {
    const auto sets = data::digit_multisets(sum);
    EXPECT_EQ(sets.size(), expected[sum]) << "sum " << sum;
    for (const auto& s : sets) {
      EXPECT_GE(s.size(), 3u);
      EXPECT_LE(s.size(), 5u);
      EXPECT_EQ(std::accumulate(s.begin(), s.end(), int64_t{0}), sum);
    }
  }
}

TEST_F(UltraMnistTest, LabelsAreDigitSumsAndBoxesNeverOverlap) {
  for (const auto& [variant, canvas] : std::vector<std::pair<std::string, int64_t>>{{"512", 512}, {"28", 1000}}) {
    const auto set = make(variant, canvas, 60);
    for (int64_t i = 0; i < set.size(); ++i) {
      const auto boxes = set.layout(i);
      ASSERT_GE(boxes.size(), 3u);
      ASSERT_LE(boxes.size(), 5u);
      int64_t sum = 0;
      for (size_t a = 0; a < boxes.size(); ++a) {
        sum += boxes[a].digit;
        EXPECT_EQ(digits->labels[boxes[a].mnist_index].item<int64_t>(), boxes[a].digit);
        EXPECT_GE(boxes[a].row, 0);
        EXPECT_LE(boxes[a].row + boxes[a].side, canvas);
        EXPECT_LE(boxes[a].col + boxes[a].side, canvas);
        for (size_t b = 0; b < a; ++b) {
          const auto &p = boxes[a], &q = boxes[b];
          const bool overlap = p.row < q.row + q.side && q.row < p.row + p.side && p.col < q.col + q.side &&
                               q.col < p.col + p.side;
          EXPECT_FALSE(overlap) << variant << " sample " << i;
        }
      }
      EXPECT_EQ(sum, set.label(i));
      EXPECT_EQ(set.get(i).labels.at("sum").item<int64_t>(), sum);
    }
  }
}

TEST_F(UltraMnistTest, DigitScalesAreVShaped) {
  // The first digit of a sample is never rejected, so its scale follows the weights exactly.
  const auto set = make("512", 512, 4000);
  const auto weights = data::scale_weights("512", 9);
  std::vector<double> counts(10, 0.0);
  int64_t r1_half = 0, r1 = 0;
  for (int64_t i = 0; i < set.size(); ++i) {
    const auto side = set.layout(i).front().side;
    const int64_t r = side <= 28 ? 1 : side / 28;
    counts[r] += 1;
    if (r == 1) ++r1, r1_half += side == 14;
  }
  for (int64_t r = 1; r <= 9; ++r) {
    const double p = weights[r - 1] / 25.0, n = static_cast<double>(set.size());
    const double sd = std::sqrt(n * p * (1 - p));
    EXPECT_NEAR(counts[r], n * p, 4 * sd) << "scale " << r;
  }
  EXPECT_NEAR(static_cast<double>(r1_half) / r1, 0.5, 4 * std::sqrt(0.25 / r1));
  // Small and large scales are the most likely, the middle the least.
  EXPECT_GT(counts[1], counts[5]);
  EXPECT_GT(counts[9], counts[5]);
}

TEST_F(UltraMnistTest, ImagesAreAPureFunctionOfSeedAndIndex) {
  for (const auto& [variant, canvas] : std::vector<std::pair<std::string, int64_t>>{{"512", 256}, {"28", 600}}) {
    const auto a = make(variant, canvas, 10, 5), b = make(variant, canvas, 10, 5), c = make(variant, canvas, 10, 6);
    EXPECT_TRUE(torch::equal(a.get(7).image, b.get(7).image));
    EXPECT_TRUE(torch::equal(a.picture(7), b.picture(7)));
    EXPECT_FALSE(torch::equal(a.picture(7), c.picture(7)));
    EXPECT_FALSE(torch::equal(a.picture(7), a.picture(8)));
  }
}

TEST_F(UltraMnistTest, OriginalVariantIsBinaryWithDigitsXoredIn) {
  const auto set = make("28", 800, 5);
  EXPECT_EQ(set.classes(), 28);
  const auto picture = set.picture(4);
  EXPECT_TRUE(picture.eq(0).logical_or(picture.eq(1)).all().item<bool>());
  // 512 variant: black background, digit pixels clipped to 1.
  const auto plain = make("512", 512, 5).picture(2);
  EXPECT_LE(plain.max().item<float>(), 1.0f);
  EXPECT_GT(plain.eq(0).to(torch::kFloat).mean().item<float>(), 0.5f);
}

}  // namespace
}  // namespace tessera
