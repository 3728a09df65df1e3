// Scattered MNIST: the label is the digit, the canvas holds exactly that digit (resized to
// data.digit_size) at the recorded place and nothing else, and images are a pure function of (seed, index).
#include <set>

#include "helpers.h"
#include "tessera/data/scattered_mnist.h"

namespace tessera {
namespace {

class ScatteredMnistTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::write_fake_mnist(dir.str());
    digits = std::make_shared<const data::MnistDigits>(data::load_mnist(dir.str(), "train"));
  }
  data::ScatteredMnist make(int64_t canvas, int64_t digit_size, int64_t size, int64_t seed = 5) {
    data::ScatteredMnistOptions o;
    o.canvas = canvas;
    o.digit_size = digit_size;
    o.size = size;
    o.seed = seed;
    return data::ScatteredMnist(digits, o);
  }
  testing::TempDir dir;
  std::shared_ptr<const data::MnistDigits> digits;
};

TEST_F(ScatteredMnistTest, TheCanvasHoldsTheLabelledDigitAtItsPlaceAndNothingElse) {
  const auto set = make(96, 28, 30);
  std::set<std::pair<int64_t, int64_t>> places;
  for (int64_t i = 0; i < set.size(); ++i) {
    const auto d = set.layout(i);
    EXPECT_EQ(d.digit, i % 10);
    EXPECT_EQ(digits->labels[d.mnist_index].item<int64_t>(), d.digit);
    const auto picture = set.picture(i)[0];
    using torch::indexing::Slice;
    const auto digit = digits->images[d.mnist_index].to(torch::kFloat32).div(255);
    EXPECT_TRUE(torch::allclose(picture.index({Slice(d.row, d.row + 28), Slice(d.col, d.col + 28)}), digit));
    EXPECT_NEAR(picture.sum().item<double>(), digit.sum().item<double>(), 1e-3) << "ink outside the digit's square";
    EXPECT_EQ(set.get(i).labels.at("digit").item<int64_t>(), d.digit);
    places.insert({d.row, d.col});
  }
  EXPECT_GT(places.size(), 25u) << "digits should land at random places";
}

TEST_F(ScatteredMnistTest, DigitsAreResizedAndImagesArePureFunctionsOfSeedAndIndex) {
  const auto small = make(64, 14, 10);
  const auto d = small.layout(3);
  const auto picture = small.picture(3)[0];
  // Nearest-neighbour 28 -> 14 keeps every other pixel.
  using torch::indexing::Slice;
  const auto expected = digits->images[d.mnist_index].to(torch::kFloat32).div(255).index({Slice(0, 28, 2), Slice(0, 28, 2)});
  EXPECT_TRUE(torch::allclose(picture.index({Slice(d.row, d.row + 14), Slice(d.col, d.col + 14)}), expected));
  EXPECT_TRUE(torch::equal(small.get(7).image, make(64, 14, 10).get(7).image));
  EXPECT_FALSE(torch::equal(small.get(7).image, make(64, 14, 10, /*seed=*/6).get(7).image));
  EXPECT_THROW(make(64, 80, 10), Error);  // a digit larger than the canvas
}

}  // namespace
}  // namespace tessera
