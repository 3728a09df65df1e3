// QuPath GeoJSON annotations: reading every form QuPath exports, which patches a region with a hole
// and an "Exclude" region keep (hand-computed), overlap as the box test of tumours.csv, malformed files,
// and preprocessing restricted to the annotated regions.
#include <nlohmann/json.hpp>

#include "helpers.h"
#include "tessera/app/slide_workflows.h"
#include "tessera/core/run_dir.h"
#include "tessera/slides/annotations.h"
#include "tessera/slides/preprocess.h"
#include "tessera/slides/synthetic.h"

namespace tessera {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using testing::error_of;

json square(double x0, double y0, double x1, double y1) { return json::array({{x0, y0}, {x1, y0}, {x1, y1}, {x0, y1}, {x0, y0}}); }

json feature(const json& geometry, const std::string& classification = "") {
  json f = {{"type", "Feature"}, {"geometry", geometry}, {"properties", {{"objectType", "annotation"}}}};
  if (!classification.empty()) f["properties"]["classification"] = {{"name", classification}, {"color", {255, 0, 0}}};
  return f;
}

json polygon(std::initializer_list<json> rings) {
  json coordinates = json::array();
  for (const auto& ring : rings) coordinates.push_back(ring);
  return {{"type", "Polygon"}, {"coordinates", coordinates}};
}

std::string write(const testing::TempDir& dir, const std::string& name, const json& doc) {
  const auto path = dir.file(name);
  write_file_atomic(path, doc.dump());
  return path;
}

// The top-left corners of a cols x rows grid of `side`-px patches.
torch::Tensor grid(int64_t cols, int64_t rows, int64_t side) {
  std::vector<int64_t> xy;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) xy.insert(xy.end(), {c * side, r * side});
  }
  return torch::tensor(xy, torch::kLong).view({-1, 2});
}

TEST(Annotations, ReadsTheFormsQuPathExports) {
  testing::TempDir dir;
  const json collection = {
      {"type", "FeatureCollection"},
      {"features",
       {feature(polygon({square(0, 0, 100, 100), square(20, 20, 40, 40)}), "Tumor"),
        feature({{"type", "MultiPolygon"}, {"coordinates", {json::array({square(0, 0, 10, 10)}), json::array({square(50, 50, 60, 60)})}}},
                "Ignore*"),
        feature({{"type", "Point"}, {"coordinates", {5, 5}}}, "Tumor"),  // bounds no area: skipped
        {{"type", "Feature"}, {"geometry", nullptr}, {"properties", json::object()}},
        feature({{"type", "GeometryCollection"}, {"geometries", {polygon({square(0, 0, 5, 5)}), {{"type", "LineString"}, {"coordinates", {{0, 0}, {1, 1}}}}}}},
                "Exclude"),
        feature(polygon({json::array({{0, 0}, {10, 0}, {0, 10}})}))}}};  // an unclosed ring is closed implicitly
  const auto a = slides::read_annotations(write(dir, "a.geojson", collection));
  ASSERT_EQ(a.items.size(), 4u);
  EXPECT_EQ(a.items[0].classification, "Tumor");
  ASSERT_EQ(a.items[0].polygons.size(), 1u);
  EXPECT_EQ(a.items[0].polygons[0].rings.size(), 2u);
  EXPECT_EQ(a.items[0].polygons[0].rings[0].size(), 4u);  // the closing position dropped
  EXPECT_FALSE(a.items[0].excluded());
  EXPECT_EQ(a.items[1].polygons.size(), 2u);
  EXPECT_TRUE(a.items[1].excluded());
  EXPECT_TRUE(a.items[2].excluded());
  EXPECT_EQ(a.items[2].polygons.size(), 1u);  // the line of the collection skipped
  EXPECT_EQ(a.items[3].classification, "");
  EXPECT_EQ(a.items[3].polygons[0].rings[0].size(), 3u);
  // Holes: inside the outer ring, outside the hole.
  const auto& p = a.items[0].polygons[0];
  EXPECT_TRUE(p.contains(10, 10));
  EXPECT_FALSE(p.contains(30, 30));
  EXPECT_FALSE(p.contains(150, 10));
  EXPECT_DOUBLE_EQ(p.overlap_area(0, 0, 100, 100), 100.0 * 100 - 20 * 20);
  EXPECT_DOUBLE_EQ(p.overlap_area(30, 30, 130, 130), 70.0 * 70 - 10 * 10);
  EXPECT_DOUBLE_EQ(p.overlap_area(100, 0, 200, 100), 0.0);  // shares an edge only
  EXPECT_DOUBLE_EQ(a.items[3].polygons[0].overlap_area(0, 0, 10, 10), 50.0);  // the triangle

  // QuPath 0.2's bare array of features, and a single feature.
  const auto bare = slides::read_annotations(write(dir, "b.geojson", json::array({feature(polygon({square(0, 0, 8, 8)}))})));
  EXPECT_EQ(bare.items.size(), 1u);
  const auto one = slides::read_annotations(write(dir, "c.geojson", feature(polygon({square(0, 0, 8, 8)}), "Stroma")));
  ASSERT_EQ(one.items.size(), 1u);
  EXPECT_EQ(one.items[0].classification, "Stroma");
}

TEST(Annotations, ARegionWithAHoleAndAnExclusionKeepsExactlyThePatchesInside) {
  testing::TempDir dir;
  // 100-px patches on a 10 x 10 grid. Tumour: [100, 700)^2 with a hole [300, 500)^2; Exclude: column
  // [600, 700) of it. Kept by hand: columns 1-5, rows 1-6, minus columns 3-4 of rows 3-4.
  const json doc = {{"type", "FeatureCollection"},
                    {"features",
                     {feature(polygon({square(100, 100, 700, 700), square(300, 300, 500, 500)}), "Tumor"),
                      feature(polygon({square(600, 0, 700, 1000)}), "Exclude")}}};
  const auto a = slides::read_annotations(write(dir, "s.geojson", doc));
  const auto coords = grid(10, 10, 100);
  const auto fraction = slides::annotated_fraction(a, coords, 100);
  std::vector<float> expected;
  for (int64_t r = 0; r < 10; ++r) {
    for (int64_t c = 0; c < 10; ++c) {
      const bool in_outer = c >= 1 && c <= 6 && r >= 1 && r <= 6;
      const bool in_hole = c >= 3 && c <= 4 && r >= 3 && r <= 4;
      expected.push_back(in_outer && !in_hole && c != 6 ? 1.0f : 0.0f);
    }
  }
  EXPECT_TRUE(torch::equal(fraction, torch::tensor(expected))) << fraction.view({10, 10});
  EXPECT_EQ((fraction >= 0.5).sum().item<int64_t>(), 6 * 5 - 4);
  // A region over the left half of a patch covers half its sample points.
  const auto half = slides::read_annotations(write(dir, "h.geojson", json::array({feature(polygon({square(0, 0, 50, 100)}))})));
  EXPECT_FLOAT_EQ(slides::annotated_fraction(half, grid(2, 1, 100), 100)[0].item<float>(), 0.5f);
  EXPECT_FLOAT_EQ(slides::annotated_fraction(half, grid(2, 1, 100), 100)[1].item<float>(), 0.0f);
  // Exclusions only: the whole slide but them.
  const auto only_excluded =
      slides::read_annotations(write(dir, "e.geojson", json::array({feature(polygon({square(0, 0, 100, 100)}), "Ignore*")})));
  EXPECT_TRUE(torch::equal(slides::annotated_fraction(only_excluded, grid(3, 1, 100), 100), torch::tensor({0.0f, 1.0f, 1.0f})));
  // No region at all: every patch.
  const auto empty = slides::read_annotations(write(dir, "n.geojson", json{{"type", "FeatureCollection"}, {"features", json::array()}}));
  EXPECT_TRUE(slides::annotated_fraction(empty, grid(3, 1, 100), 100).eq(1).all().item<bool>());
}

TEST(Annotations, OverlapEqualsTheBoxTestOfTumoursCsv) {
  testing::TempDir dir;
  torch::manual_seed(3);
  const auto coords = grid(12, 12, 64);
  const auto boxes = torch::cat({torch::randint(0, 760, {20, 2}, torch::kLong), torch::randint(1, 90, {20, 1}, torch::kLong)}, 1);
  auto features = json::array();
  for (int64_t b = 0; b < boxes.size(0); ++b) {
    const double x = boxes[b][0].item<double>(), y = boxes[b][1].item<double>(), s = boxes[b][2].item<double>();
    features.push_back(feature(polygon({square(x, y, x + s, y + s)}), "Tumor"));
  }
  features.push_back(feature(polygon({square(0, 0, 768, 768)}), "Stroma"));  // another class: not tumour
  const auto a = slides::read_annotations(write(dir, "t.geojson", json{{"type", "FeatureCollection"}, {"features", features}}));
  const auto expected = app::tumour_patches(coords, 64, boxes);
  EXPECT_TRUE(torch::equal(slides::overlapping_patches(a, coords, 64, "Tumor"), expected));
  EXPECT_GT(expected.sum().item<int64_t>(), 10);
  EXPECT_TRUE(slides::overlapping_patches(a, coords, 64).all().item<bool>());  // every class but excluded ones
  // A triangle touching a patch at one corner only does not overlap it.
  const auto corner = slides::read_annotations(
      write(dir, "c.geojson", json::array({feature(polygon({json::array({{64, 64}, {120, 64}, {64, 120}})}))})));
  EXPECT_TRUE(torch::equal(slides::overlapping_patches(corner, grid(2, 2, 64), 64), torch::tensor({false, false, false, true})));
}

TEST(Annotations, MalformedFilesNameTheFileAndFeature) {
  testing::TempDir dir;
  const auto bad = [&](const std::string& text) {
    const auto path = dir.file("bad.geojson");
    write_file_atomic(path, text);
    return error_of([&] { slides::read_annotations(path); });
  };
  const auto ok = feature(polygon({square(0, 0, 8, 8)})).dump();
  const auto in_collection = [&](const std::string& f) {
    return R"({"type": "FeatureCollection", "features": [)" + ok + "," + f + "]}";
  };
  EXPECT_NE(bad("{\"type\": \"FeatureCollection\", \"features\": [").find("not valid JSON"), std::string::npos);
  EXPECT_NE(bad(R"({"type": "FeatureCollection"})").find("needs a 'features' array"), std::string::npos);
  EXPECT_NE(bad("42").find("expected a GeoJSON FeatureCollection"), std::string::npos);
  for (const auto& [f, needle] : std::vector<std::pair<std::string, std::string>>{
           {R"({"type": "Feature"})", "missing 'geometry'"},
           {R"({"type": "Feature", "geometry": {"type": "Circle", "coordinates": []}})", "unknown geometry type 'Circle'"},
           {R"({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}})", "at least 3 distinct"},
           {R"({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], ["a", 1], [2, 2]]]}})", "two numbers"},
           {R"({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1e300, 1], [2, 2]]]}})", "level-0 pixel"},
           {R"({"type": "Feature", "geometry": {"type": "Polygon"}})", "missing 'coordinates'"},
           {R"({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": []}})", "non-empty array of rings"},
           {R"({"type": "Thing", "geometry": null})", "expected \"type\": \"Feature\""}}) {
    const auto message = bad(in_collection(f));
    EXPECT_NE(message.find("bad.geojson' feature 1: "), std::string::npos) << message;
    EXPECT_NE(message.find(needle), std::string::npos) << message;
  }
  EXPECT_NE(error_of([&] { slides::read_annotations(dir.file("none.geojson")); }).find("none.geojson' not found"), std::string::npos);
}

TEST(Annotations, PreprocessKeepsTheTissuePatchesInsideTheRegions) {
  testing::TempDir dir;
  slides::SyntheticSlideOptions s;
  s.width = s.height = 1024;
  s.tissue_blobs = 2;
  slides::write_synthetic_slide(dir.file("s.tif"), s, nullptr);
  write_file_atomic(dir.file("manifest.csv"), "slide,label\ns.tif,0\n");
  const auto entry = slides::read_manifest(dir.file("manifest.csv")).at(0);
  const auto reader = slides::open_slide(entry.path);
  slides::PatchGridOptions g;
  g.patch = 64;
  g.tissue.min_fraction = 0.1;
  const auto all = slides::tissue_patches(*reader, g);
  // The region: 6 x 6 patches around the middle tissue patch, a 2 x 2 hole holding that patch.
  const auto c = all.coords;
  const int64_t m = all.count() / 2;
  const int64_t x0 = c[m][0].item<int64_t>() - 3 * 64, y0 = c[m][1].item<int64_t>() - 2 * 64;
  const int64_t x1 = x0 + 6 * 64, y1 = y0 + 6 * 64;
  fs::create_directories(dir.file("ann"));
  write(dir, "ann/s.geojson",
        json::array({feature(polygon({square(x0, y0, x1, y1), square(x0 + 128, y0 + 128, x0 + 256, y0 + 256)}), "Region")}));
  g.annotations = dir.file("ann");
  const auto kept = slides::slide_patches(entry, *reader, g);
  std::vector<int64_t> expected;
  for (int64_t i = 0; i < all.count(); ++i) {
    const int64_t x = c[i][0].item<int64_t>(), y = c[i][1].item<int64_t>();
    const bool in_hole = x >= x0 + 128 && x < x0 + 256 && y >= y0 + 128 && y < y0 + 256;
    if (x >= x0 && x + 64 <= x1 && y >= y0 && y + 64 <= y1 && !in_hole) expected.insert(expected.end(), {x, y});
  }
  ASSERT_FALSE(expected.empty());
  EXPECT_TRUE(torch::equal(kept.coords, torch::tensor(expected, torch::kLong).view({-1, 2})));
  EXPECT_LT(kept.count(), all.count());

  // Through the cache: the annotation file's identity is part of the key, so editing it recomputes.
  const auto cached = slides::cached_tissue_patches(entry, *reader, g, dir.file("cache"));
  EXPECT_TRUE(torch::equal(cached.coords, kept.coords));
  const auto first_key = slides::coords_path(dir.file("cache"), entry, g);
  write(dir, "ann/s.geojson", json::array({feature(polygon({square(x0, y0, x1, y1)}), "Region")}));
  fs::last_write_time(dir.file("ann/s.geojson"), fs::last_write_time(dir.file("ann/s.geojson")) + std::chrono::seconds(5));
  EXPECT_NE(slides::coords_path(dir.file("cache"), entry, g), first_key);
  EXPECT_GT(slides::cached_tissue_patches(entry, *reader, g, dir.file("cache")).count(), kept.count());

  // A slide without its file, and regions that hold no tissue, are errors naming the file.
  fs::remove(dir.file("ann/s.geojson"));
  EXPECT_NE(error_of([&] { slides::slide_patches(entry, *reader, g); }).find("s.geojson' not found"), std::string::npos);
  write(dir, "ann/s.geojson", json::array({feature(polygon({square(-500, -500, -100, -100)}))}));
  EXPECT_NE(error_of([&] { slides::slide_patches(entry, *reader, g); }).find("lies at least 0.5 inside the regions"), std::string::npos);
}

}  // namespace
}  // namespace tessera
