// Whole-slide I/O on generated pyramidal TIFFs: both readers against the generator's pixels, level and
// mpp selection, concurrent reads, tissue detection, HDF5 bags (ours and the CLAM layout), resumable
// preprocessing and bad slides.
#include <hdf5.h>
#include <nlohmann/json.hpp>

#include <thread>

#include "clam_layout.h"
#include "helpers.h"
#include "tessera/app/slide_workflows.h"
#include "tessera/core/distributed.h"
#include "tessera/core/run_dir.h"
#include "tessera/data/image_io.h"
#include "tessera/slides/h5.h"
#include "tessera/slides/preprocess.h"
#include "tessera/slides/reader.h"
#include "tessera/slides/slide_dataset.h"
#include "tessera/slides/synthetic.h"
#include "tessera/slides/tissue_tiles.h"
#include "tessera/train/experiment.h"
#include "tessera/train/registry.h"
#include "tessera/train/trainer.h"

namespace tessera {
namespace {
namespace fs = std::filesystem;
using slides::SyntheticSlideOptions;

SyntheticSlideOptions small_slide(uint64_t seed = 0) {
  SyntheticSlideOptions o;
  o.width = o.height = 1024;  // whole 256-px tiles on levels 0-2
  o.seed = seed;
  o.tissue_blobs = 2;
  return o;
}

std::string write_slide(const testing::TempDir& dir, const std::string& name, const SyntheticSlideOptions& o) {
  const auto path = dir.file(name);
  slides::write_synthetic_slide(path, o, nullptr);
  return path;
}

// f() fails with one tessera error whose message holds needle.
void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error for " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(SlideReader, BothBackendsReturnTheGeneratorsPixels) {
  testing::TempDir dir;
  const auto o = small_slide();
  const auto path = write_slide(dir, "s.tif", o);
  const auto expected = slides::synthetic_region(o, nullptr, 256, 512, 300, 200);
  for (const std::string backend : {"vips", "openslide"}) {
    const auto reader = slides::open_slide(path, backend);
    EXPECT_EQ(reader->backend(), backend);
    ASSERT_EQ(reader->level_count(), 3) << backend;
    EXPECT_NEAR(reader->mpp(), 0.5, 1e-6) << backend;
    EXPECT_TRUE(torch::equal(reader->read_region(256, 512, 0, 300, 200), expected)) << backend;
  }
  // Level 1 is a 2x2 box average of level 0 (libvips' pyramid), and both readers agree on it.
  const auto vips = slides::open_slide(path, "vips"), osl = slides::open_slide(path, "openslide");
  const auto level1 = vips->read_region(0, 0, 1, 512, 512);
  EXPECT_TRUE(torch::equal(level1, osl->read_region(0, 0, 1, 512, 512)));
  const auto full = slides::synthetic_region(o, nullptr, 0, 0, 1024, 1024).permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat32);
  const auto box = torch::avg_pool2d(full, 2).squeeze(0).permute({1, 2, 0});
  EXPECT_LE((level1.to(torch::kFloat32) - box).abs().max().item<float>(), 1.0f);
  // Outside the slide reads as white.
  const auto edge = vips->read_region(1014, 0, 0, 20, 4);
  EXPECT_EQ(edge.slice(1, 10).min().item<uint8_t>(), 255);
  EXPECT_TRUE(torch::equal(edge.slice(1, 0, 10), slides::synthetic_region(o, nullptr, 1014, 0, 10, 4)));
}

TEST(SlideReader, PicksLevelsAndResolutions) {
  testing::TempDir dir;
  const auto path = write_slide(dir, "s.tif", small_slide());
  const auto reader = slides::open_slide(path);
  EXPECT_EQ(reader->backend(), "vips");  // generic TIFF goes to libvips under auto
  EXPECT_EQ(reader->level_for_downsample(0.5), 0);
  EXPECT_EQ(reader->level_for_downsample(1.9), 0);
  EXPECT_EQ(reader->level_for_downsample(2), 1);
  EXPECT_EQ(reader->level_for_downsample(3.9), 1);
  EXPECT_EQ(reader->level_for_downsample(100), 2);
  // 1.0 um/px = downsample 2: exactly level 1; 1.5 um/px: level 1 resampled by 3/4.
  EXPECT_TRUE(torch::equal(reader->read_region_mpp(128, 256, 1.0, 64, 48), reader->read_region(128, 256, 1, 64, 48)));
  const auto resampled = reader->read_region_mpp(0, 0, 1.5, 100, 80);
  ASSERT_EQ(resampled.sizes(), (std::vector<int64_t>{80, 100, 3}));
  const auto source = reader->read_region(0, 0, 1, 134, 107).permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat32);
  EXPECT_LT((torch::adaptive_avg_pool2d(source.slice(2, 0, 120).slice(3, 0, 150), {80, 100}).mean() -
             resampled.to(torch::kFloat32).mean()).abs().item<float>(), 3.0f);
}

TEST(SlideReader, ConcurrentReadsMatchSequentialReads) {
  testing::TempDir dir;
  const auto path = write_slide(dir, "s.tif", small_slide(3));
  for (const std::string backend : {"vips", "openslide"}) {
    const auto reader = slides::open_slide(path, backend);
    const auto xy = torch::randint(0, 1024 - 96, {48, 2}, torch::kLong);
    std::vector<torch::Tensor> sequential, parallel(48);
    for (int64_t i = 0; i < 48; ++i) sequential.push_back(reader->read_region(xy[i][0].item<int64_t>(), xy[i][1].item<int64_t>(), 0, 96, 96));
    std::vector<std::thread> pool;
    for (int t = 0; t < 4; ++t) {
      pool.emplace_back([&, t] {
        for (int64_t i = t; i < 48; i += 4) parallel[i] = reader->read_region(xy[i][0].item<int64_t>(), xy[i][1].item<int64_t>(), 0, 96, 96);
      });
    }
    for (auto& th : pool) th.join();
    for (int64_t i = 0; i < 48; ++i) EXPECT_TRUE(torch::equal(sequential[i], parallel[i])) << backend << " read " << i;
  }
}

TEST(Tissue, BlankGlassWithSensorNoiseHoldsNoTissue) {
  // Light glass with independent noise of +-6 per channel: Otsu alone splits the noise in two and calls
  // half the glass tissue; the method's floor (10 for otsu, 15 for saturation) keeps it blank.
  testing::TempDir dir;
  torch::manual_seed(3);
  data::write_png(dir.file("glass.png"), (235 + torch::randint(-6, 7, {3, 256, 256})).to(torch::kFloat32) / 255);
  const auto reader = slides::open_slide(dir.file("glass.png"));
  for (const std::string method : {"otsu", "saturation"}) {
    slides::TissueOptions t;
    t.method = method;
    const auto m = slides::detect_tissue(*reader, t, 1);
    EXPECT_EQ(m.mask.sum().item<int64_t>(), 0) << method << ", threshold " << m.threshold;
    EXPECT_GT(slides::otsu_threshold(m.score), m.score.min().item<double>()) << "the noise has two sides to split";
  }
  slides::PatchGridOptions g;
  g.patch = 64;
  EXPECT_NE(testing::error_of([&] { slides::tissue_patches(*reader, g); }).find("glass.png"), std::string::npos);
}

TEST(Tissue, MaskRecoversTheGeneratedTissueAndGridsSkipGlass) {
  testing::TempDir dir;
  auto o = small_slide(5);
  o.width = o.height = 2048;
  const auto path = write_slide(dir, "s.tif", o);
  const auto reader = slides::open_slide(path);
  const auto truth = slides::synthetic_tissue_mask(o);  // one value per 64-px cell
  for (const std::string method : {"otsu", "saturation"}) {
    slides::TissueOptions t;
    t.method = method;
    const auto m = slides::detect_tissue(*reader, t, 16);
    const int64_t up = static_cast<int64_t>(slides::kTissueCell / m.downsample);
    const auto gt = truth.repeat_interleave(up, 0).repeat_interleave(up, 1).slice(0, 0, m.mask.size(0)).slice(1, 0, m.mask.size(1));
    const double iou = (gt & m.mask).sum().item<double>() / (gt | m.mask).sum().item<double>();
    EXPECT_GT(iou, 0.95) << method;
  }
  slides::PatchGridOptions g;
  g.patch = 128;
  g.tissue.min_fraction = 0.5;
  const auto grid = slides::tissue_patches(*reader, g);
  ASSERT_GT(grid.count(), 10);
  // Every kept patch overlaps tissue; every patch entirely inside tissue is kept.
  const auto cells_per_patch = 128 / slides::kTissueCell;
  const auto cell_fraction = torch::avg_pool2d(truth.to(torch::kFloat32).unsqueeze(0), cells_per_patch).squeeze(0);
  const auto kept = torch::zeros_like(cell_fraction, torch::kBool);
  for (int64_t i = 0; i < grid.count(); ++i) {
    const int64_t col = grid.coords[i][0].item<int64_t>() / 128, row = grid.coords[i][1].item<int64_t>() / 128;
    EXPECT_GT(cell_fraction[row][col].item<float>(), 0.0f) << "patch on empty glass at " << grid.coords[i];
    kept[row][col] = true;
  }
  EXPECT_TRUE((cell_fraction.eq(1) & kept.logical_not()).sum().item<int64_t>() == 0);
}

TEST(FeatureBags, RoundTripThroughHdf5) {
  testing::TempDir dir;
  slides::PatchCoords grid;
  grid.patch = grid.footprint = grid.stride = 256;
  grid.coords = torch::randint(0, 100000, {57, 2}, torch::kLong);
  const auto features = torch::randn({57, 24});
  {
    slides::FeatureWriter w(dir.file("bag.h5"), grid, 24, {{"encoder", "test"}});
    w.write(0, features.slice(0, 0, 40));
    w.write(40, features.slice(0, 40));
    EXPECT_FALSE(fs::exists(dir.file("bag.h5")));  // only the temporary file until finish()
    w.finish();
  }
  slides::FeatureBag bag(dir.file("bag.h5"));
  EXPECT_EQ(bag.size(), 57);
  EXPECT_EQ(bag.dim(), 24);
  EXPECT_TRUE(torch::equal(bag.range(0, 57), features));
  const auto idx = torch::tensor({56, 3, 4, 5, 0, 4, 30}, torch::kLong);
  EXPECT_TRUE(torch::equal(bag.gather(idx), features.index_select(0, idx)));
  EXPECT_TRUE(torch::equal(bag.coords(), grid.coords));
  const auto back = slides::read_coords(dir.file("bag.h5"));
  EXPECT_EQ(back.patch, 256);
  EXPECT_EQ(back.footprint, 256);
  // An unfinished writer leaves nothing behind.
  { slides::FeatureWriter w(dir.file("killed.h5"), grid, 24, {}); }
  EXPECT_FALSE(fs::exists(dir.file("killed.h5")));
  EXPECT_FALSE(fs::exists(dir.file("killed.h5.tmp")));
}

using testing::write_clam_layout;

TEST(FeatureBags, AScalarDatasetIsAnErrorNotAnEmptyShape) {
  testing::TempDir dir;
  const auto path = dir.file("scalar.h5");
  const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const hid_t space = H5Screate(H5S_SCALAR);
  const hid_t d = H5Dcreate2(f, "features", H5T_NATIVE_FLOAT, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  const float value = 1;
  H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, &value);
  H5Dclose(d);
  H5Sclose(space);
  H5Fclose(f);
  const auto error = testing::error_of([&] { slides::FeatureBag bag(path); });
  EXPECT_NE(error.find("'features' of '" + path + "' has 0 dimensions"), std::string::npos) << error;
}

TEST(FeatureBags, ClamLayoutLoads) {
  testing::TempDir dir;
  const auto features = torch::randn({33, 1024});
  const auto coords = torch::randint(0, 50000, {33, 2}, torch::kLong);
  write_clam_layout(dir.file("clam.h5"), features, coords);
  slides::FeatureBag bag(dir.file("clam.h5"));
  EXPECT_EQ(bag.size(), 33);
  EXPECT_EQ(bag.dim(), 1024);
  EXPECT_TRUE(torch::equal(bag.gather(torch::tensor({32, 1, 2, 9}, torch::kLong)), features.index_select(0, torch::tensor({32, 1, 2, 9}))));
  EXPECT_TRUE(torch::equal(bag.coords(), coords));
  EXPECT_EQ(slides::read_coords(dir.file("clam.h5")).patch, 512);
}

std::string write_manifest(const testing::TempDir& dir, const std::vector<std::pair<std::string, int>>& rows) {
  std::ofstream out(dir.file("manifest.csv"));
  out << "slide,label\n";
  for (const auto& [slide, label] : rows) out << slide << "," << label << "\n";
  return dir.file("manifest.csv");
}

TEST(Preprocess, ResumesAfterAnInterruptionWithTheSameCoordinates) {
  testing::TempDir dir;
  write_slide(dir, "a.tif", small_slide(1));
  write_slide(dir, "c.tif", small_slide(3));
  const auto manifest = write_manifest(dir, {{"a.tif", 0}, {"b.tif", 1}, {"c.tif", 0}});
  slides::PreprocessOptions o;
  o.manifest = manifest;
  o.out_dir = dir.file("cache");
  o.grid.patch = 128;
  o.workers = 1;
  // b.tif is not there yet: the run stops at it, naming it, with a's coordinates kept.
  try {
    slides::preprocess_slides(o);
    FAIL() << "expected the missing slide to stop the run";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("b.tif"), std::string::npos) << e.what();
  }
  const auto entries = slides::read_manifest(manifest);
  const auto a_path = slides::coords_path(o.out_dir, entries[0], o.grid);
  ASSERT_TRUE(fs::exists(a_path));
  EXPECT_FALSE(fs::exists(slides::coords_path(o.out_dir, entries[2], o.grid)));
  const auto a_time = fs::last_write_time(a_path);
  write_slide(dir, "b.tif", small_slide(2));
  std::ofstream(slides::coords_path(o.out_dir, entries[1], o.grid) + ".tmp") << "half-written by a killed run";
  const auto summary = slides::preprocess_slides(o);
  ASSERT_EQ(summary.slides.size(), 3u);
  EXPECT_EQ(summary.slides[0].status, "cached");
  EXPECT_EQ(summary.slides[1].status, "done");
  EXPECT_EQ(summary.slides[2].status, "done");
  EXPECT_EQ(fs::last_write_time(a_path), a_time);
  EXPECT_TRUE(fs::exists(dir.file("cache/summary.json")));
  EXPECT_TRUE(fs::exists(dir.file("cache/thumbnails/c.png")));
  // Same coordinates as one uninterrupted run.
  auto fresh = o;
  fresh.out_dir = dir.file("fresh");
  fresh.workers = 2;
  slides::preprocess_slides(fresh);
  for (const auto& e : entries) {
    EXPECT_TRUE(torch::equal(slides::read_coords(slides::coords_path(o.out_dir, e, o.grid)).coords,
                             slides::read_coords(slides::coords_path(fresh.out_dir, e, o.grid)).coords))
        << e.id;
  }
  // Interrupted (Ctrl-C from Python) after the first slide: it is kept, no other starts, no error.
  auto stopped = o;
  stopped.out_dir = dir.file("stopped");
  int asked = 0;
  stopped.interrupted = [&asked] { return ++asked > 1; };
  const auto partial = slides::preprocess_slides(stopped);
  ASSERT_EQ(partial.slides.size(), 1u);
  EXPECT_EQ(partial.slides[0].status, "done");
  EXPECT_TRUE(fs::exists(slides::coords_path(stopped.out_dir, entries[0], o.grid)));
  EXPECT_FALSE(fs::exists(slides::coords_path(stopped.out_dir, entries[1], o.grid)));
  // Other settings, other cache entry.
  auto other = o.grid;
  other.tissue.min_fraction = 0.9;
  EXPECT_NE(slides::coords_path(o.out_dir, entries[0], other), a_path);
}

TEST(BadSlides, ClearErrorsOrRecordedAndSkipped) {
  testing::TempDir dir;
  write_slide(dir, "good.tif", small_slide(1));
  auto blank = small_slide(2);
  blank.tissue_blobs = 0;
  write_slide(dir, "blank.tif", blank);
  {  // the first third of a valid slide
    write_slide(dir, "full.tif", small_slide(3));
    std::ifstream in(dir.file("full.tif"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(dir.file("truncated.tif"), std::ios::binary) << bytes.substr(0, bytes.size() / 3);
  }
  std::ofstream(dir.file("notes.svs")) << "not a slide";
  expect_error([&] { slides::open_slide(dir.file("missing.tif")); }, "does not exist");
  expect_error([&] { slides::open_slide(dir.file("notes.svs")); }, "notes.svs");
  expect_error([&] {
    const auto r = slides::open_slide(dir.file("truncated.tif"));
    slides::tissue_patches(*r, {});
    for (int l = 0; l < r->level_count(); ++l) r->read_level(l);
  }, "truncated.tif");
  expect_error([&] { slides::tissue_patches(*slides::open_slide(dir.file("blank.tif")), {}); }, "no tissue");

  const auto manifest = write_manifest(dir, {{"good.tif", 1}, {"missing.tif", 0}, {"blank.tif", 0}, {"truncated.tif", 1}, {"notes.svs", 0}});
  slides::SlideDataOptions o;
  o.manifest = manifest;
  o.grid.patch = 128;
  expect_error([&] { slides::SlideDataset{o}; }, "missing.tif");
  o.skip_errors = true;
  slides::SlideDataset set(o);
  EXPECT_EQ(set.size(), 1);
  EXPECT_EQ(set.entry(0).id, "good");
  ASSERT_EQ(set.failures().size(), 4u);
  EXPECT_GT(set.get(0).bag->size(), 0);

  slides::PreprocessOptions p;
  p.manifest = manifest;
  p.out_dir = dir.file("cache");
  p.grid.patch = 128;
  p.skip_errors = true;
  const auto summary = slides::preprocess_slides(p);
  EXPECT_EQ(summary.count("failed"), 4);
  EXPECT_EQ(summary.count("done") + summary.count("cached"), 1);
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

// Preprocessing and feature extraction launched as two ranks split the slides, write one summary of all
// of them, and stay resumable: a second launch finds every slide done.
TEST(ShardedSlides, TwoRanksPreprocessAndExtractEverySlideOnce) {
  if (!dist::available()) GTEST_SKIP() << "built without c10d Gloo (install libgloo-dev)";
  testing::TempDir dir;
  std::vector<std::pair<std::string, int>> rows;
  for (int i = 0; i < 5; ++i) {
    const auto name = "s" + std::to_string(i) + ".tif";
    write_slide(dir, name, small_slide(10 + i));
    rows.push_back({name, i % 2});
  }
  const auto manifest = write_manifest(dir, rows);
  const auto cache = dir.file("cache");
  const auto log = dir.file("log.txt");
  const std::string preprocess = "launch --nproc-per-node 2 -- preprocess --manifest " + manifest + " --out " + cache +
                                 " --patch 128 --workers 1 --thumbnail 0";
  ASSERT_EQ(testing::run_cli(preprocess, log), 0) << testing::read_text(log);
  const auto text = testing::read_text(log);
  EXPECT_NE(text.find("5 slides done, 0 already done"), std::string::npos) << text;
  EXPECT_EQ(text.find("slides done", text.find("slides done") + 1), std::string::npos) << "one summary line: " << text;
  const auto summary = nlohmann::json::parse(testing::read_text(cache + "/summary.json"));
  EXPECT_EQ(summary["done"], 5);
  ASSERT_EQ(summary["slides"].size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(summary["slides"][i]["id"], "s" + std::to_string(i)) << "manifest order";
  ASSERT_EQ(testing::run_cli(preprocess, log), 0) << testing::read_text(log);
  EXPECT_NE(testing::read_text(log).find("0 slides done, 5 already done"), std::string::npos) << testing::read_text(log);

  const std::string extract = "launch --nproc-per-node 2 -- extract-features --manifest " + manifest + " --cache-dir " +
                              cache + " --out " + dir.file("bags") +
                              " --patch 128 --encoder resnet18 --stages 2 --width 8 --batch 16 --threads 1 --precision bf16" +
                              " --json " + dir.file("extract.json");
  ASSERT_EQ(testing::run_cli(extract, log), 0) << testing::read_text(log);
  EXPECT_NE(testing::read_text(log).find("5 bags written, 0 already there, 0 failed"), std::string::npos)
      << testing::read_text(log);
  int64_t patches = 0;
  for (int i = 0; i < 5; ++i) {
    const auto bag = dir.file("bags/s" + std::to_string(i) + ".h5");
    ASSERT_TRUE(fs::exists(bag));
    EXPECT_EQ(slides::read_coords(bag).count(), summary["slides"][i]["patches"].get<int64_t>());
    patches += slides::read_coords(bag).count();
  }
  // --json: both ranks' slides in one summary (written by rank 0), with the settings and the build.
  auto written = nlohmann::json::parse(testing::read_text(dir.file("extract.json")));
  EXPECT_EQ(written["written"], 5);
  EXPECT_EQ(written["patches"], patches);
  EXPECT_GT(written["seconds"].get<double>(), 0);
  EXPECT_EQ(written["settings"]["ranks"], 2);
  EXPECT_EQ(written["settings"]["precision"], "bf16");
  EXPECT_TRUE(written["provenance"].contains("isa")) << written.dump();
  ASSERT_EQ(testing::run_cli(extract, log), 0);
  EXPECT_NE(testing::read_text(log).find("0 bags written, 5 already there"), std::string::npos) << testing::read_text(log);
  written = nlohmann::json::parse(testing::read_text(dir.file("extract.json")));
  EXPECT_EQ(written["existing"], 5);
  EXPECT_EQ(written["patches"], 0);
}

TEST(FeatureBags, ViTEncoderBagsTrainIps) {
  // The CLAM/TRIDENT workflow with a registry ViT: patches read at the encoder's input size (64 px),
  // one bag per slide with its feature width, and IPS trains on the bags.
  testing::TempDir dir;
  std::string manifest = "slide,label,split\n";
  for (int i = 0; i < 4; ++i) {
    const auto name = "s" + std::to_string(i) + ".tif";
    write_slide(dir, name, small_slide(20 + i));
    manifest += name + "," + std::to_string(i % 2) + "," + (i < 2 ? "train" : "test") + "\n";
  }
  write_file_atomic(dir.file("manifest.csv"), manifest);
  app::ExtractFeaturesOptions o;
  o.manifest = dir.file("manifest.csv");
  o.out = dir.file("bags");
  o.cache_dir = dir.file("cache");
  o.encoder = "vit_small_patch16_224";
  o.encoder_args = R"({"img_size": 64, "patch_size": 16, "embed_dim": 32, "depth": 1, "num_heads": 2})";
  o.batch = 16;
  o.threads = 1;
  const auto summary = app::extract_features(o);
  ASSERT_EQ(summary.written, 4);
  int64_t patches = 0;
  for (int i = 0; i < 4; ++i) {
    const auto bag = dir.file("bags/s" + std::to_string(i) + ".h5");
    const auto coords = slides::read_coords(bag);
    EXPECT_EQ(coords.patch, 64);
    patches += coords.count();
  }
  EXPECT_EQ(summary.patches, patches);
  Config c;
  c.run_dir = dir.file("run");
  c.data.dataset = "feature_bags";
  c.data.manifest = dir.file("manifest.csv");
  c.data.workers = 0;
  c.slide.features_dir = dir.file("bags");
  c.model.encoder = "projector";
  c.model.in_features = 32;
  c.model.dim = 16;
  c.model.heads = 2;
  c.model.d_k = 8;
  c.model.d_inner = 32;
  c.model.pos_enc = false;
  c.ips.M = 4;
  c.ips.I = 8;
  c.train.epochs = 1;
  c.train.batch_size = 2;
  c.train.warmup_epochs = 0;
  c.train.threads = 1;
  train::apply_runtime(c);
  auto [train_set, test_set] = train::make_datasets(c);
  auto method = train::make_method(c, train_set->tasks());
  const auto before = method->module().parameters().front().clone();
  train::Trainer(c, *method, train_set, test_set).fit(false);
  EXPECT_FALSE(torch::equal(before, method->module().parameters().front()));
  EXPECT_TRUE(fs::exists(dir.file("run/checkpoint.pt")));
}

TEST(TissueTiles, TilesAreTheTextureWithTheLabelledDigitInInkAtTheLevelsScale) {
  testing::TempDir dir;
  const auto mnist = testing::fake_mnist_dir(dir);
  const auto digits = std::make_shared<const data::MnistDigits>(data::load_mnist(mnist, "train"));
  slides::TissueTilesOptions o;
  o.tile = 32;
  o.downsample = 2;
  o.digit_size = 28;
  o.textures = 3;
  o.size = 24;
  o.seed = 4;
  const slides::TissueTiles tiles(digits, o);
  const int64_t S = 64, T = slides::kTextureSide;
  const auto ink = torch::tensor({slides::kDigitInk[0], slides::kDigitInk[1], slides::kDigitInk[2]});
  int64_t inked = 0;
  for (int64_t i = 0; i < tiles.size(); ++i) {
    const auto l = tiles.layout(i);
    ASSERT_EQ(l.digit, i % 2 == 0 ? 10 : (i / 2) % 10);
    EXPECT_EQ(tiles.get(i).labels.at("digit").item<int64_t>(), l.digit);
    const auto level0 = tiles.level0(i);
    ASSERT_EQ(level0.sizes(), (std::vector<int64_t>{S, S, 3}));
    // Every pixel off the digit's ink is the texture's pixel at the window's place (wrapping around).
    const auto window = tiles.texture(l.texture)
                            .index_select(0, torch::arange(l.row, l.row + S).remainder(T))
                            .index_select(1, torch::arange(l.col, l.col + S).remainder(T))
                            .round()
                            .clamp(0, 255);
    auto alpha = torch::zeros({S, S});
    if (l.digit != 10) {
      EXPECT_EQ(digits->labels[l.mnist_index].item<int64_t>(), l.digit);
      // The digit's centre lies on the tile, at least a quarter of its side from the edges.
      EXPECT_GE(l.digit_row + 14, 7);
      EXPECT_LE(l.digit_row + 14, S - 7);
      const auto glyph = digits->images[l.mnist_index].to(torch::kFloat32).div(255);  // scale 1: 28 px
      for (int64_t y = 0; y < 28; ++y) {
        for (int64_t x = 0; x < 28; ++x) {
          const int64_t ty = l.digit_row + y, tx = l.digit_col + x;
          if (ty >= 0 && ty < S && tx >= 0 && tx < S) alpha[ty][tx] = glyph[y][x];
        }
      }
    }
    const auto a = alpha.unsqueeze(-1);
    const auto expected = (window * (1 - a) + ink.view({1, 1, 3}) * a).round().clamp(0, 255);
    EXPECT_LE((level0 - expected).abs().max().item<float>(), 1.0f) << "tile " << i;
    inked += (alpha.gt(0.99).any().item<bool>() && l.digit != 10);
    // The picture is the level: 2 x 2 averages of the level-0 values, in [0, 1].
    const auto picture = tiles.picture(i);
    ASSERT_EQ(picture.sizes(), (std::vector<int64_t>{3, 32, 32}));
    EXPECT_TRUE(torch::allclose(picture, torch::avg_pool2d(level0.permute({2, 0, 1}).unsqueeze(0), {2, 2})[0] / 255, 1e-5, 1e-6));
  }
  EXPECT_GE(inked, 6) << "most digit tiles show ink";
  // A pure function of (seed, index); another seed gives other tiles.
  const slides::TissueTiles again(digits, o);
  EXPECT_TRUE(torch::equal(again.picture(5), tiles.picture(5)));
  o.seed = 5;
  EXPECT_FALSE(torch::equal(slides::TissueTiles(digits, o).picture(5), tiles.picture(5)));
}

TEST(TissueTiles, RegistryEntryNormalisesAndChecksItsSettings) {
  testing::TempDir dir;
  Config c;
  c.data.dataset = "tissue_tiles";
  c.data.mnist_dir = testing::fake_mnist_dir(dir);
  c.data.height = c.data.width = 32;
  c.data.digit_size = 40;
  c.data.mean = "0.5,0.5,0.5";
  c.data.std = "0.25,0.25,0.25";
  c.data.train_size = 6;
  c.data.test_size = 4;
  c.slide.level = 1;
  auto [train_set, test_set] = train::make_datasets(c);
  ASSERT_EQ(train_set->tasks().size(), 1u);
  EXPECT_EQ(train_set->tasks()[0].outputs, 11);
  EXPECT_EQ(train_set->size(), 6);
  EXPECT_EQ(test_set->size(), 4);
  const auto image = train_set->get(3).image;
  EXPECT_EQ(image.sizes(), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_TRUE(torch::allclose(image, (train_set->picture(3) - 0.5) / 0.25, 1e-5, 1e-5));
  c.data.digit_size = 65;  // more than the 64 level-0 pixels of a 32-px tile at level 1
  expect_error([&] { train::make_datasets(c); }, "data.digit_size");
  c.data.digit_size = 40;
  c.data.std = "";
  expect_error([&] { train::find_dataset("tissue_tiles").validate(c); }, "data.mean and data.std together");
}

}  // namespace
}  // namespace tessera
