// IPS on whole slides and feature bags: streamed selection equals in-memory selection, selection memory
// does not grow with the slide, streamed projector gradients equal autograd, and the slide workflow
// end to end through the command line.
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <sstream>

#include "helpers.h"
#include "tessera/app/slide_workflows.h"
#include "tessera/core/memory.h"
#include "tessera/methods/ips.h"
#include "tessera/slides/h5.h"
#include "tessera/slides/slide_dataset.h"
#include "tessera/slides/synthetic.h"

namespace tessera {
namespace {
namespace fs = std::filesystem;

methods::Ips small_patch_ips(int64_t M, int64_t I) {
  models::IpsNetOptions net;
  net.encoder.in_channels = 3;
  net.encoder.stages = 1;
  net.encoder.width = 8;
  net.aggregator.heads = 2;
  net.aggregator.d_k = 8;
  net.aggregator.d_inner = 16;
  net.tasks = {{"label", "softmax", 2}};
  net.pos_enc = false;
  methods::IpsOptions o;
  o.M = M;
  o.I = I;
  o.loading = "lazy";
  return methods::Ips(models::IpsNet(net), o, torch::kCPU);
}

std::shared_ptr<slides::SlideBag> slide_bag(const testing::TempDir& dir, const std::string& name, int64_t side) {
  slides::SyntheticSlideOptions o;
  o.width = o.height = side;
  o.tissue_blobs = 4;
  o.tissue_size = 0.45;
  const auto path = dir.file(name);
  slides::write_synthetic_slide(path, o, nullptr);
  const auto reader = slides::open_slide(path);
  slides::PatchGridOptions g;
  g.patch = 64;
  g.tissue.min_fraction = 0.25;
  return std::make_shared<slides::SlideBag>(reader, slides::tissue_patches(*reader, g), 2);
}

TEST(SlideIps, StreamedSelectionEqualsInMemorySelection) {
  testing::TempDir dir;
  torch::manual_seed(0);
  auto ips = small_patch_ips(5, 16);
  const auto bag = slide_bag(dir, "s.tif", 1024);
  ASSERT_GT(bag->size(), 40);
  // The bag's patches are the reader's pixels in [0, 1], channels first.
  const auto xy = bag->grid().coords[7];
  const auto pixels = bag->reader().read_region(xy[0].item<int64_t>(), xy[1].item<int64_t>(), 0, 64, 64);
  EXPECT_TRUE(torch::allclose(bag->gather(torch::tensor({7}, torch::kLong))[0],
                              pixels.permute({2, 0, 1}).to(torch::kFloat32) / 255, 0, 1e-6));
  // OpenSlide reads the same patches through the same bag.
  const auto via_openslide = slides::SlideBag(slides::open_slide(bag->reader().path(), "openslide"), bag->grid(), 2);
  EXPECT_TRUE(torch::equal(via_openslide.range(0, 20), bag->range(0, 20)));
  const auto in_memory = std::make_shared<data::TensorBag>(bag->range(0, bag->size()));
  const auto streamed = ips.select({bag});
  const auto held = ips.select({in_memory});
  EXPECT_TRUE(torch::equal(streamed.idx, held.idx));
  EXPECT_TRUE(torch::equal(streamed.patches, held.patches));
}

TEST(SlideIps, SelectionMemoryDoesNotGrowWithTheSlide) {
  memory::install_tracking();
  testing::TempDir dir;
  torch::manual_seed(0);
  auto ips = small_patch_ips(4, 16);
  const auto small = slide_bag(dir, "small.tif", 1024);
  const auto large = slide_bag(dir, "large.tif", 2048);
  ASSERT_GE(large->size(), 3 * small->size());
  const auto peak_of = [&](const data::PatchBagPtr& bag) {
    ips.select({bag});  // warm-up: lazily built state (folded weights, caches) is not the slide's
    memory::reset_peaks();
    const int64_t before = memory::cpu_live_bytes();
    ips.select({bag});
    return memory::snapshot().peak_tensor_bytes - before;
  };
  const int64_t small_peak = peak_of(small), large_peak = peak_of(large);
  EXPECT_GT(small_peak, 0);
  // The prefetched next chunk may or may not coexist with the encoder's peak (thread timing): peaks may
  // differ by one chunk (I patches as float plus their 8-bit staging), never by the slide's extra patches.
  const int64_t chunk = 16 * 3 * 64 * 64 * (4 + 1);
  const int64_t extra_patches = (large->size() - small->size()) * 3 * 64 * 64 * 4;
  EXPECT_LE(std::abs(large_peak - small_peak), chunk + 1024)
      << "small slide " << small->size() << " patches: " << small_peak << " bytes, large " << large->size() << ": "
      << large_peak << " (holding the extra patches would add " << extra_patches << ")";
}

// B bags of random feature rows, on disk and in memory.
struct Bags {
  std::vector<data::PatchBagPtr> disk, memory;
};
Bags feature_bags(const testing::TempDir& dir, const std::vector<int64_t>& sizes, int64_t dim) {
  Bags b;
  for (size_t i = 0; i < sizes.size(); ++i) {
    slides::PatchCoords grid;
    grid.patch = grid.footprint = grid.stride = 256;
    grid.coords = torch::arange(sizes[i] * 2, torch::kLong).view({sizes[i], 2});
    const auto features = torch::randn({sizes[i], dim});
    const auto path = dir.file("bag" + std::to_string(i) + ".h5");
    slides::FeatureWriter w(path, grid, dim, {});
    w.write(0, features);
    w.finish();
    b.disk.push_back(std::make_shared<slides::FeatureBag>(path));
    b.memory.push_back(std::make_shared<data::TensorBag>(features));
  }
  return b;
}

TEST(FeatureBagIps, StreamedProjectorGradientsAndStatisticsEqualInMemory) {
  testing::TempDir dir;
  torch::manual_seed(0);
  const auto bags = feature_bags(dir, {37, 12, 50}, 24);  // the 12-row bag has fewer than M rows: padding mask
  models::IpsNetOptions net;
  net.features = true;
  net.projector.in_features = 24;
  net.projector.dim = 16;
  net.aggregator.heads = 2;
  net.aggregator.d_k = 8;
  net.aggregator.d_inner = 32;
  net.aggregator.dropout = net.aggregator.attn_dropout = 0;
  net.tasks = {{"label", "softmax", 2}};
  net.pos_enc = false;
  methods::IpsOptions o;
  o.M = 15;
  o.I = 7;
  o.loading = "eager_sequential";
  const models::IpsNet a(net), b(net);
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < a->parameters().size(); ++i) b->parameters()[i].copy_(a->parameters()[i]);
  }
  methods::Ips streamed(a, o, torch::kCPU), held(b, o, torch::kCPU);
  torch::optim::SGD sgd_a(a->parameters(), 0.0), sgd_b(b->parameters(), 0.0);
  data::Batch batch;
  batch.labels = {{"label", torch::tensor({1, 0, 1}, torch::kLong)}};
  batch.bags = bags.disk;
  const auto ra = streamed.train_step(batch, sgd_a);
  batch.bags = bags.memory;
  const auto rb = held.train_step(batch, sgd_b);
  EXPECT_NEAR(ra.loss, rb.loss, 1e-5);
  const auto pa = a->named_parameters(), pb = b->named_parameters();
  for (const auto& item : pa) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    EXPECT_TRUE(torch::allclose(item.value().grad(), pb[item.key()].grad(), 1e-4, 1e-6)) << item.key();
  }
  EXPECT_GT(a->projector->fc->weight.grad().abs().sum().item<double>(), 0);

  // Precise BatchNorm's pass through the streamed projector gives the statistics of the bags in memory.
  batch.bags = bags.disk;
  streamed.forward_for_statistics(batch);
  batch.bags = bags.memory;
  held.forward_for_statistics(batch);
  EXPECT_TRUE(torch::allclose(a->projector->bn->running_mean, b->projector->bn->running_mean, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(a->projector->bn->running_var, b->projector->bn->running_var, 1e-5, 1e-6));
  EXPECT_GT(a->projector->bn->num_batches_tracked.item<int64_t>(), 1);  // the step's pass and this one
}

const auto run = testing::run_cli;
using testing::read_text;

TEST(SlideWorkflow, TumourPatchesAreThoseOverlappingABox) {
  // Four 100-px patches in a row at x = 0, 100, 200, 300; boxes (x, y, size).
  const auto coords = torch::tensor({0, 0, 100, 0, 200, 0, 300, 0}, torch::kLong).view({4, 2});
  const auto boxes = torch::tensor({150, 50, 30, 299, 99, 1}, torch::kLong).view({2, 3});
  const auto flags = app::tumour_patches(coords, 100, boxes);
  EXPECT_TRUE(torch::equal(flags, torch::tensor({false, true, true, false})));  // 299..299 touches x in [200, 300)
  EXPECT_FALSE(app::tumour_patches(coords, 100, torch::zeros({0, 3}, torch::kLong)).any().item<bool>());
  EXPECT_FALSE(app::tumour_patches(coords, 100, torch::tensor({400, 0, 50}, torch::kLong).view({1, 3})).any().item<bool>());
}

TEST(SlideWorkflow, MakePreprocessTrainPredictAndFeatureBags) {
  testing::TempDir dir;
  fs::create_directories(dir.file("mnist"));
  testing::write_fake_mnist(dir.file("mnist"));
  const auto log = dir.file("log.txt");
  const auto slides_dir = dir.file("slides");
  ASSERT_EQ(run("make-slides --out " + slides_dir + " --count 4 --test-count 2 --width 1024 --height 1024 --digits 3 "
                "--mnist-dir " + dir.file("mnist"), log), 0) << read_text(log);
  ASSERT_EQ(run("preprocess --manifest " + slides_dir + "/manifest.csv --out " + dir.file("cache") + " --patch 128", log), 0)
      << read_text(log);
  const std::string common = " --data.manifest " + slides_dir + "/manifest.csv --data.patch 128 --data.stride 128 "
                             "--slide.cache_dir " + dir.file("cache") + " --train.epochs 1 --train.batch_size 2 "
                             "--train.threads 1 --data.workers 1 --model.heads 2 --model.d_k 8 --model.d_inner 32 "
                             "--model.pos_enc false --ips.M 4 --ips.I 8 --ips.loading lazy";
  ASSERT_EQ(run("train --data.dataset slides --model.in_channels 3 --model.width 8 --run.dir " + dir.file("run") + common, log), 0)
      << read_text(log);
  ASSERT_EQ(run("predict --run " + dir.file("run") + " --slide " + slides_dir + "/slide_001.tif --tiff --geojson --out " +
                dir.file("pred"), log), 0)
      << read_text(log);
  for (const auto& f : {"prediction.json", "scores.csv", "heatmap.png", "heatmap.tif", "scores.geojson"}) {
    EXPECT_TRUE(fs::exists(dir.file("pred/") + f)) << f;
  }
  const auto prediction = nlohmann::json::parse(read_text(dir.file("pred/prediction.json")));
  const auto scores = read_text(dir.file("pred/scores.csv"));
  EXPECT_EQ(std::count(scores.begin(), scores.end(), '\n'), prediction["patches"].get<int64_t>() + 1);
  // scores.geojson: QuPath's schema (FeatureCollection of detections, closed level-0 squares of the
  // patch's footprint, 128 px at level 0 here), read back equal to scores.csv, the M selected classified.
  const auto geojson = nlohmann::json::parse(read_text(dir.file("pred/scores.geojson")));
  EXPECT_EQ(geojson["type"], "FeatureCollection");
  ASSERT_EQ(static_cast<int64_t>(geojson["features"].size()), prediction["patches"].get<int64_t>());
  std::istringstream rows(scores);
  std::string line;
  std::getline(rows, line);  // x,y,score,selected
  int64_t classified = 0;
  for (const auto& feature : geojson["features"]) {
    ASSERT_TRUE(std::getline(rows, line));
    int64_t x = 0, y = 0, chosen = 0;
    double score = 0;
    ASSERT_EQ(std::sscanf(line.c_str(), "%ld,%ld,%lf,%ld", &x, &y, &score, &chosen), 4) << line;
    EXPECT_EQ(feature["type"], "Feature");
    EXPECT_EQ(feature["properties"]["objectType"], "detection");
    EXPECT_EQ(feature["geometry"]["type"], "Polygon");
    const auto ring = feature["geometry"]["coordinates"][0];
    ASSERT_EQ(ring.size(), 5u);
    EXPECT_EQ(ring[0], ring[4]);
    EXPECT_EQ(ring[0], nlohmann::json({x, y}));
    EXPECT_EQ(ring[2], nlohmann::json({x + 128, y + 128}));
    EXPECT_NEAR(feature["properties"]["measurements"]["attention"].get<double>(), score, 1e-5 * std::abs(score) + 1e-9);
    EXPECT_EQ(feature["properties"].contains("classification"), chosen == 1);
    if (chosen) {
      EXPECT_EQ(feature["properties"]["classification"]["name"], "Selected");
      ++classified;
    }
  }
  EXPECT_EQ(classified, 4);  // M
  const auto overlay = slides::open_slide(dir.file("pred/heatmap.tif"));
  EXPECT_EQ(overlay->levels()[0].width, 1024);

  // Ground truth: three digit boxes per positive slide; localization measures the run against it.
  const auto truth = read_text(slides_dir + "/tumours.csv");
  EXPECT_EQ(truth.rfind("slide,x,y,size,digit\n", 0), 0u) << truth;
  EXPECT_EQ(std::count(truth.begin(), truth.end(), '\n'), 1 + 3 * 3) << truth;  // slides 1, 3 and 5
  ASSERT_EQ(run("localization --run " + dir.file("run") + " --out " + dir.file("loc.json"), log), 0) << read_text(log);
  const auto loc = nlohmann::json::parse(read_text(dir.file("loc.json")));
  ASSERT_EQ(loc["slides"].size(), 2u);  // the test split: slides 4 (negative) and 5 (positive)
  for (const auto& row : loc["slides"]) {
    const bool positive = row["label"].get<int64_t>() == 1;
    EXPECT_EQ(row["tumour_patches"].get<int64_t>() > 0, positive) << row.dump();
    EXPECT_LE(row["top_tumour_patches"].get<int64_t>(), std::min<int64_t>(4, row["tumour_patches"].get<int64_t>()));
    EXPECT_GE(row["attention_on_tumour"].get<double>(), 0.0);
    EXPECT_LE(row["attention_on_tumour"].get<double>(), 1.0 + 1e-9);
    if (!positive) {
      EXPECT_EQ(row["attention_on_tumour"].get<double>(), 0.0);
    }
  }
  EXPECT_EQ(loc["M"].get<int64_t>(), 4);
  // The same tumours as QuPath GeoJSON (make-slides' annotations/) give the same localization.
  ASSERT_EQ(run("localization --run " + dir.file("run") + " --annotations " + slides_dir + "/annotations --class Tumor --out " +
                dir.file("loc-geojson.json"), log), 0)
      << read_text(log);
  const auto loc_geojson = nlohmann::json::parse(read_text(dir.file("loc-geojson.json")));
  EXPECT_EQ(loc_geojson["slides"], loc["slides"]);
  EXPECT_EQ(loc_geojson["mean_attention_on_tumour"], loc["mean_attention_on_tumour"]);
  const auto negative = nlohmann::json::parse(read_text(slides_dir + "/annotations/slide_000.geojson"));
  EXPECT_EQ(negative["type"], "FeatureCollection");
  EXPECT_TRUE(negative["features"].empty());
  const auto positive = nlohmann::json::parse(read_text(slides_dir + "/annotations/slide_001.geojson"));
  ASSERT_EQ(positive["features"].size(), 3u);
  EXPECT_EQ(positive["features"][0]["properties"]["objectType"], "annotation");
  EXPECT_EQ(positive["features"][0]["properties"]["classification"]["name"], "Tumor");
  EXPECT_NE(run("localization --run " + dir.file("run") + " --annotations " + dir.file("nowhere"), log), 0);
  EXPECT_NE(read_text(log).find("nowhere' not found"), std::string::npos) << read_text(log);
  EXPECT_NE(run("localization --run " + dir.file("run") + " --truth " + dir.file("none.csv"), log), 0);
  EXPECT_NE(read_text(log).find("none.csv' not found"), std::string::npos) << read_text(log);
  // No tumours at all is a set without a positive slide: make-slides refuses it.
  EXPECT_NE(run("make-slides --out " + dir.file("empty") + " --count 2 --test-count 0 --digits 0 --mnist-dir " + dir.file("mnist"), log), 0);
  EXPECT_NE(read_text(log).find("--digits must be at least 1"), std::string::npos) << read_text(log);

  // Feature bags from the same slides, then IPS with the projector on them.
  ASSERT_EQ(run("extract-features --manifest " + slides_dir + "/manifest.csv --out " + dir.file("bags") +
                " --cache-dir " + dir.file("cache") + " --patch 128 --encoder resnet18 --stages 2 --width 8 --threads 1", log), 0)
      << read_text(log);
  slides::FeatureBag bag(dir.file("bags/slide_000.h5"));
  EXPECT_EQ(bag.dim(), 16);  // resnet18, 2 stages of width 8: 2 x 8 channels
  ASSERT_EQ(run("train --data.dataset feature_bags --model.encoder projector --model.in_features 16 --model.dim 16 "
                "--slide.features_dir " + dir.file("bags") + " --run.dir " + dir.file("bagrun") + common, log), 0)
      << read_text(log);
  const auto metrics = read_text(dir.file("bagrun/metrics.jsonl"));
  EXPECT_NE(metrics.find("\"auc\""), std::string::npos) << metrics;
  ASSERT_EQ(run("predict --run " + dir.file("bagrun") + " --bag " + dir.file("bags/slide_001.h5") + " --slide " + slides_dir +
                "/slide_001.tif --out " + dir.file("bagpred"), log), 0)
      << read_text(log);
  EXPECT_TRUE(fs::exists(dir.file("bagpred/heatmap.png")));
  // A trained run's encoder, normalisation and patch size, from its spec.
  ASSERT_EQ(run("extract-features --manifest " + slides_dir + "/manifest.csv --out " + dir.file("runbags") + " --cache-dir " +
                dir.file("cache") + " --run " + dir.file("run") + " --threads 1", log), 0)
      << read_text(log);
  EXPECT_EQ(slides::FeatureBag(dir.file("runbags/slide_000.h5")).dim(), 16);
  EXPECT_NE(read_text(log).find("from run"), std::string::npos) << read_text(log);
  // Extraction resumes: existing bags are kept.
  ASSERT_EQ(run("extract-features --manifest " + slides_dir + "/manifest.csv --out " + dir.file("bags") +
                " --cache-dir " + dir.file("cache") + " --patch 128 --encoder resnet18 --stages 2 --width 8 --threads 1", log), 0);
  EXPECT_NE(read_text(log).find("0 bags written, 6 already there"), std::string::npos) << read_text(log);
}

}  // namespace
}  // namespace tessera
