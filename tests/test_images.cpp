// Ordinary image data sets: PANDA-style preprocessing (fit into S x S, white padding, stratified
// folds, resumable) and the CSV data set that reads its output.
#include <filesystem>
#include <fstream>
#include <map>

#include "helpers.h"
#include "tessera/data/csv_images.h"
#include "tessera/data/image_io.h"
#include "tessera/data/prepare_images.h"

namespace tessera {
namespace {

TEST(PrepareImages, FitsIntoASquareWithWhitePaddingAndStratifiedFolds) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.file("raw"));
  std::string manifest = "image_id,data_provider,isup_grade\n";
  for (int i = 0; i < 9; ++i) {
    // Wide images (40x20, dark red) for even ids, tall ones (20x40) for odd ids.
    const bool wide = i % 2 == 0;
    auto img = torch::zeros({3, wide ? 20 : 40, wide ? 40 : 20});
    img[0].fill_(0.5);
    data::write_png(dir.file("raw/s" + std::to_string(i) + ".png"), img);
    manifest += "s" + std::to_string(i) + ",x," + std::to_string(i % 3) + "\n";
  }
  { std::ofstream(dir.file("train.csv")) << manifest; }
  data::PrepareImagesOptions o;
  o.manifest = dir.file("train.csv");
  o.images = dir.file("raw");
  o.out = dir.file("out");
  o.extension = ".png";
  o.size = 32;
  o.folds = 3;
  const auto first = data::prepare_images(o);
  EXPECT_EQ(first.written, 9);

  const auto wide = data::read_image(dir.file("out/s0.png"));
  ASSERT_EQ(wide.sizes(), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_TRUE(wide.slice(1, 0, 7).eq(1).all().item<bool>());    // white bands above and below
  EXPECT_TRUE(wide.slice(1, 25, 32).eq(1).all().item<bool>());
  EXPECT_NEAR(wide[0][16][16].item<float>(), 0.5, 0.01);         // the image, centred
  EXPECT_NEAR(wide[1][16][16].item<float>(), 0.0, 0.01);
  const auto tall = data::read_image(dir.file("out/s1.png"));
  EXPECT_TRUE(tall.slice(2, 0, 7).eq(1).all().item<bool>());     // white bands left and right

  // Stratified: each grade has 3 images, one per fold.
  std::ifstream folds(dir.file("out/folds.csv"));
  std::string line;
  std::getline(folds, line);
  std::map<std::pair<int, int>, int> per_grade_fold;
  while (std::getline(folds, line)) {
    const auto a = line.find(','), b = line.rfind(',');
    ++per_grade_fold[{std::stoi(line.substr(a + 1, b - a - 1)), std::stoi(line.substr(b + 1))}];
  }
  for (int grade = 0; grade < 3; ++grade) {
    for (int fold = 0; fold < 3; ++fold) EXPECT_EQ((per_grade_fold[{grade, fold}]), 1) << grade << " " << fold;
  }

  const auto again = data::prepare_images(o);  // resumes: nothing left to write
  EXPECT_EQ(again.written, 0);
  EXPECT_EQ(again.skipped, 9);
  // A grade that is not a whole number is refused, not truncated ("2.5" was class 2).
  for (const std::string bad : {"2.5", "2x", " ", "-1"}) {
    { std::ofstream(dir.file("bad.csv")) << "image_id,data_provider,isup_grade\ns0,x," << bad << "\n"; }
    auto b = o;
    b.manifest = dir.file("bad.csv");
    EXPECT_NE(testing::error_of([&] { data::prepare_images(b); }).find("is not a class index"), std::string::npos) << bad;
  }

  data::CsvImagesOptions c;
  c.csv = dir.file("out/train.csv");
  c.height = c.width = 32;
  c.ordinal = true;
  c.classes = data::resolve_classes("6", {}, "test");
  c.mean = {0.5f, 0.5f, 0.5f};
  c.std = {0.25f, 0.25f, 0.25f};
  const data::CsvImages set(c);
  EXPECT_EQ(set.size(), 6);
  EXPECT_EQ(set.tasks()[0].outputs, 6);
  EXPECT_TRUE(set.tasks()[0].ordinal);
  const auto sample = set.get(0);
  EXPECT_NEAR(sample.image[0][0][0].item<float>(), (1.0 - 0.5) / 0.25, 1e-4);  // white, normalised
  EXPECT_EQ(sample.labels.at("label").item<int64_t>(), set.label(0));

  c.height = c.width = 64;
  const data::CsvImages wrong_size(c);
  try {
    wrong_size.get(0);
    FAIL() << "a 32x32 image passed as 64x64";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("but the run expects 64x64"), std::string::npos) << e.what();
  }
}

TEST(PrepareImages, MissingImageNamesIt) {
  testing::TempDir dir;
  { std::ofstream(dir.file("m.csv")) << "image_id,isup_grade\nabsent,1\n"; }
  data::PrepareImagesOptions o;
  o.manifest = dir.file("m.csv");
  o.images = dir.file("raw");
  o.out = dir.file("out");
  try {
    data::prepare_images(o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("absent.tiff' does not exist"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tessera
