// The Megapixel MNIST generator: labels agree with the placed digits, digits never overlap, the
// digits' pixels are on the canvas, and every image is a pure function of (seed, index).
#include "helpers.h"
#include "tessera/data/megapixel_mnist.h"

namespace tessera {
namespace {

class MegapixelMnistTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::write_fake_mnist(dir.str());
    digits = std::make_shared<const data::MnistDigits>(data::load_mnist(dir.str(), "train"));
  }
  data::MegapixelMnist make(int64_t seed, int64_t size = 40, int64_t side = 300) {
    data::MegapixelMnistOptions o;
    o.height = o.width = side;
    o.size = size;
    o.seed = seed;
    return data::MegapixelMnist(digits, o);
  }
  testing::TempDir dir;
  std::shared_ptr<const data::MnistDigits> digits;
};

TEST_F(MegapixelMnistTest, LabelsMatchThePlacedDigits) {
  const auto set = make(5);
  for (int64_t i = 0; i < set.size(); ++i) {
    const auto placed = set.layout(i);
    ASSERT_EQ(placed.size(), 5u);
    std::array<int, 10> count{};
    int64_t max_digit = 0, top_row = 1 << 30, top = -1;
    for (const auto& p : placed) {
      ++count[p.digit];
      max_digit = std::max(max_digit, p.digit);
      if (p.row < top_row) top_row = p.row, top = p.digit;
      EXPECT_EQ(digits->labels[p.mnist_index].item<int64_t>(), p.digit);
    }
    const auto sample = set.get(i);
    const int64_t majority = sample.labels.at("majority").item<int64_t>();
    EXPECT_GE(count[majority], 3);
    EXPECT_EQ(sample.labels.at("max").item<int64_t>(), max_digit);
    EXPECT_EQ(sample.labels.at("top").item<int64_t>(), top);
    for (int d = 0; d < 10; ++d) EXPECT_EQ(sample.labels.at("multi")[d].item<float>(), count[d] > 0 ? 1.f : 0.f);
  }
}

TEST_F(MegapixelMnistTest, DigitsNeverOverlapAndArePastedOnTop) {
  const auto set = make(6);
  for (int64_t i = 0; i < set.size(); ++i) {
    const auto placed = set.layout(i);
    for (size_t a = 0; a < placed.size(); ++a) {
      for (size_t b = a + 1; b < placed.size(); ++b) {
        EXPECT_FALSE(std::abs(placed[a].row - placed[b].row) < 28 && std::abs(placed[a].col - placed[b].col) < 28);
      }
    }
    const auto image = set.get(i).image;
    EXPECT_EQ(image.sizes(), torch::IntArrayRef({1, 300, 300}));
    for (const auto& p : placed) {
      const auto region = image[0].slice(0, p.row, p.row + 28).slice(1, p.col, p.col + 28);
      EXPECT_TRUE(torch::allclose(region, digits->images[p.mnist_index].to(torch::kFloat32) / 255.0f));
    }
    EXPECT_GE(image.min().item<float>(), 0.f);
    EXPECT_LE(image.max().item<float>(), 1.f);
  }
}

TEST_F(MegapixelMnistTest, DeterministicFromSeedAndIndex) {
  const auto a = make(7), b = make(7), c = make(8);
  EXPECT_TRUE(torch::equal(a.get(3).image, b.get(3).image));
  EXPECT_TRUE(torch::equal(a.get(3).image, a.get(3).image));
  EXPECT_FALSE(torch::equal(a.get(3).image, a.get(4).image));
  EXPECT_FALSE(torch::equal(a.get(3).image, c.get(3).image));
  // Order of access does not matter: index 3 read after 10 others is the same image.
  for (int64_t i = 10; i < 20; ++i) a.get(i);
  EXPECT_TRUE(torch::equal(a.get(3).image, b.get(3).image));
}

TEST_F(MegapixelMnistTest, NoiseGlyphsAreDrawnAwayFromTheBorder) {
  data::MegapixelMnistOptions o;
  o.height = o.width = 200;
  o.size = 4;
  o.n_target = 3;
  o.n_other = 0;
  o.noise_glyphs = 50;
  const data::MegapixelMnist set(digits, o);
  EXPECT_EQ(set.glyph_bank().sizes(), torch::IntArrayRef({50, 28, 28}));
  EXPECT_GT(set.glyph_bank().sum().item<float>(), 0.f);
  const auto image = set.get(0).image[0].clone();
  for (const auto& p : set.layout(0)) image.slice(0, p.row, p.row + 28).slice(1, p.col, p.col + 28).zero_();
  // What remains is noise, which lives in [28, H-28) only.
  EXPECT_GT(image.sum().item<float>(), 0.f);
  EXPECT_EQ(image.slice(0, 0, 28).sum().item<float>(), 0.f);
  EXPECT_EQ(image.slice(1, 0, 28).sum().item<float>(), 0.f);
}

// The reference's glyphs: each stroke is a connected line from a top corner (x from 0 along the rows,
// columns round(a x)), one from (0, 0) and, in the flipped copy, possibly one from (0, 27); pixels
// carry their own intensity in [0.8, 1]. Rasterising with gaps (steep lines as dots) or lines through
// the centre fails here.
TEST_F(MegapixelMnistTest, GlyphStrokesAreConnectedLinesFromATopCorner) {
  const auto set = make(3);
  const auto bank = set.glyph_bank();
  int with_two_intensities = 0;
  for (int64_t g = 0; g < bank.size(0); ++g) {
    const auto glyph = bank[g];
    const auto on = glyph.gt(0);
    ASSERT_TRUE(on[0][0].item<bool>()) << "glyph " << g << " does not start at (0, 0)";
    const auto values = glyph.masked_select(on);
    EXPECT_GE(values.min().item<float>(), 0.8f - 1e-6);
    EXPECT_LE(values.max().item<float>(), 1.0f + 1e-6);
    with_two_intensities += values.max().item<float>() > values.min().item<float>();
    // 8-connected components of the set pixels, each holding a top corner.
    auto label = torch::zeros({28, 28}, torch::kInt);
    int components = 0;
    for (int r = 0; r < 28; ++r) {
      for (int c = 0; c < 28; ++c) {
        if (!on[r][c].item<bool>() || label[r][c].item<int>() != 0) continue;
        ++components;
        bool corner = false;
        std::vector<std::pair<int, int>> stack{{r, c}};
        label[r][c] = components;
        while (!stack.empty()) {
          const auto [y, x] = stack.back();
          stack.pop_back();
          corner |= y == 0 && (x == 0 || x == 27);
          for (int dy = -1; dy <= 1; ++dy) {
            for (int dx = -1; dx <= 1; ++dx) {
              const int ny = y + dy, nx = x + dx;
              if (ny < 0 || nx < 0 || ny >= 28 || nx >= 28 || !on[ny][nx].item<bool>() || label[ny][nx].item<int>()) continue;
              label[ny][nx] = components;
              stack.emplace_back(ny, nx);
            }
          }
        }
        EXPECT_TRUE(corner) << "glyph " << g << ": a stroke does not reach a top corner";
      }
    }
    EXPECT_LE(components, 2) << "glyph " << g << " has gaps in its strokes";
    EXPECT_GE(on.sum().item<int64_t>(), 28) << "glyph " << g;  // at least one full-length stroke
  }
  EXPECT_GT(with_two_intensities, 40);  // intensity is drawn per pixel, not per glyph
}

TEST_F(MegapixelMnistTest, RejectsImpossibleSettings) {
  data::MegapixelMnistOptions o;
  o.height = o.width = 40;
  o.noise_glyphs = 0;
  EXPECT_THROW(data::MegapixelMnist(digits, o), Error);  // 5 digits cannot fit
  o.height = o.width = 300;
  o.n_target = 2;
  o.n_other = 2;
  EXPECT_THROW(data::MegapixelMnist(digits, o), Error);  // no majority
}

}  // namespace
}  // namespace tessera
