// The first hour of a new user (issue 32): mistakes found before the first step, runs that resume from
// themselves, class names as labels, exit codes and messages in one style, budget messages that say
// what a step needs, and the small output defects a user meets first.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>

#include "helpers.h"
#include "tessera/app/export_data.h"
#include "tessera/app/predict.h"
#include "tessera/app/train.h"
#include "tessera/core/memory.h"
#include "tessera/core/run_dir.h"
#include "tessera/core/suggest.h"
#include "tessera/data/classes.h"
#include "tessera/data/image_io.h"
#include "tessera/train/experiment.h"
#include "tessera/train/planner.h"
#include "tessera/train/registry.h"
#include "tessera/train/resume.h"
#ifdef TESSERA_WITH_SLIDES
#include "tessera/slides/manifest.h"
#include "tessera/slides/slide_dataset.h"
#endif

namespace tessera {
namespace {
namespace fs = std::filesystem;
using testing::error_of;
using testing::read_text;

// Runs the tessera command; returns its exit code and (in out) what it printed on stdout and stderr.
int cli(const std::string& args, std::string* out = nullptr) {
  const std::string cmd = std::string(TESSERA_CLI) + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string text;
  char buf[512];
  while (pipe && fgets(buf, sizeof buf, pipe)) text += buf;
  const int status = pipe ? pclose(pipe) : -1;
  if (out) *out = text;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// 56x56 grey images in <dir>/images listed as path,label rows: train.csv and test.csv, labels as given.
Config csv_config(const testing::TempDir& dir, const std::vector<std::string>& train_labels,
                  const std::vector<std::string>& test_labels) {
  RunDir images(dir.file("images"));
  torch::manual_seed(5);
  int n = 0;
  const auto list = [&](const std::vector<std::string>& labels) {
    std::string csv = "path,label\n";
    for (const auto& label : labels) {
      const auto name = "img" + std::to_string(n++) + ".png";
      data::write_png(images.file(name), torch::rand({1, 56, 56}));
      csv += name + "," + label + "\n";
    }
    return csv;
  };
  images.write_text("train.csv", list(train_labels));
  images.write_text("test.csv", list(test_labels));
  Config c = testing::small_patch_config("ips", 56, 28, 8);
  c.data.train_csv = images.file("train.csv");
  c.data.test_csv = images.file("test.csv");
  c.data.workers = 0;
  c.model.heads = 2;
  c.model.d_k = 8;
  c.model.d_inner = 16;
  c.ips.M = 2;
  c.ips.I = 2;
  c.train.epochs = 1;
  c.train.batch_size = 2;
  c.train.warmup_epochs = 0;
  c.train.threads = 1;
  c.run_dir = dir.file("run");
  return c;
}

// Item 1: a test split of one class is found before the first step, and nothing of a run is written.
TEST(FirstHour, ATestSplitOfOneClassStopsBeforeTheFirstStep) {
  testing::TempDir dir;
  const auto c = csv_config(dir, {"0", "1", "0", "1"}, {"1", "1"});
  const auto msg = error_of([&] { app::train(c, false); });
  EXPECT_TRUE(contains(msg, "the test split (data.test_csv '" + c.data.test_csv + "') holds one class of task 'label' (2 1)"))
      << msg;
  EXPECT_TRUE(contains(msg, "AUC is undefined")) << msg;
  EXPECT_FALSE(fs::exists(c.run_dir));
}

// Item 1: a row naming a missing (or unreadable) image is an error naming the row, before any step.
TEST(FirstHour, AMissingImageIsFoundBeforeTheFirstStep) {
  testing::TempDir dir;
  const auto c = csv_config(dir, {"0", "1", "0", "1"}, {"0", "1"});
  fs::remove(dir.file("images/img2.png"));
  const auto msg = error_of([&] { app::train(c, false); });
  EXPECT_TRUE(contains(msg, c.data.train_csv + ":4: image '" + dir.file("images/img2.png") + "' does not exist")) << msg;
  EXPECT_FALSE(fs::exists(c.run_dir));
  std::ofstream(dir.file("images/img2.png")) << "not a png";
  EXPECT_TRUE(contains(error_of([&] { app::train(c, false); }), c.data.train_csv + ":4: ")) << msg;
  data::write_png(dir.file("images/img2.png"), torch::rand({1, 28, 56}));  // the wrong size
  EXPECT_TRUE(contains(error_of([&] { app::train(c, false); }), "is 28x56 but the run expects 56x56"));
}

// Item 1: IPS's M above the patches of an image is refused before the first step.
TEST(FirstHour, IpsMAboveThePatchCountIsRefused) {
  testing::TempDir dir;
  auto c = csv_config(dir, {"0", "1", "0", "1"}, {"0", "1"});
  c.ips.M = 5;
  const auto msg = error_of([&] { app::train(c, false); });
  EXPECT_TRUE(contains(msg, "ips.M 5 is more than the 4 patches of a 56x56 image (2 x 2 at data.patch 28")) << msg;
  EXPECT_FALSE(fs::exists(c.run_dir));
  c.ips.M = 4;
  EXPECT_EQ(error_of([&] { app::train(c, false); }), "");
}

// Item 1: an evaluation that fails after an epoch keeps the epoch (checkpoint first), and the error is in
// train.log and metrics.jsonl.
TEST(FirstHour, AFailedEvaluationKeepsTheEpochAndLogsTheError) {
  testing::TempDir dir;
  auto c = csv_config(dir, {"0", "1", "0", "1"}, {"0", "1"});
  // The test image is there when the run is checked, and gone when the epoch is evaluated.
  train::TrainHooks hooks;
  hooks.interrupted = [&] {
    fs::remove(dir.file("images/img4.png"));
    return false;
  };
  const auto msg = error_of([&] { app::train(c, false, hooks); });
  EXPECT_TRUE(contains(msg, "evaluating epoch 1 on the test set failed")) << msg;
  EXPECT_TRUE(contains(msg, "--resume")) << msg;
  ASSERT_TRUE(fs::exists(dir.file("run/checkpoint.pt")));
  EXPECT_EQ(train::read_checkpoint_info(dir.file("run/checkpoint.pt")).state.epoch, 1);
  EXPECT_TRUE(contains(read_text(dir.file("run/train.log")), "evaluating epoch 1 on the test set failed"));
  const auto record = nlohmann::json::parse(read_text(dir.file("run/metrics.jsonl")));
  EXPECT_TRUE(record.contains("test_error"));
  EXPECT_EQ(record["train"]["samples"], 4);
}

// Item 2: --resume without -c continues from the run's own config; a config that changes what the run
// trains is refused, naming each difference.
TEST(FirstHour, ResumeReadsTheRunsOwnConfig) {
  testing::TempDir dir;
  auto c = csv_config(dir, {"0", "1", "0", "1"}, {"0", "1"});
  app::train(c, false);
  Config asked;  // only what the command line gave: the run directory and more epochs
  asked.run_dir = c.run_dir;
  asked.train.epochs = 2;
  const auto resumed = train::resume_config(asked, {"run.dir", "train.epochs"}, /*whole=*/false);
  EXPECT_EQ(resumed.model.heads, 2);
  EXPECT_EQ(resumed.train.epochs, 2);
  EXPECT_EQ(resumed.data.train_csv, c.data.train_csv);
  auto changed = c;
  changed.model.heads = 4;
  changed.ips.M = 3;
  const auto msg = error_of([&] { train::resume_config(changed, {}, /*whole=*/true); });
  EXPECT_TRUE(contains(msg, "model.heads: the run has '2', given '4'")) << msg;
  EXPECT_TRUE(contains(msg, "ips.M: the run has '2', given '3'")) << msg;
  // Through the command line: no -c, more epochs, and the run goes on from epoch 2.
  std::string out;
  ASSERT_EQ(cli("train --run.dir " + c.run_dir + " --resume --train.epochs 2", &out), 0) << out;
  EXPECT_TRUE(contains(read_text(dir.file("run/train.log")), "resumed from")) << out;
  EXPECT_EQ(train::read_checkpoint_info(dir.file("run/checkpoint.pt")).state.epoch, 2);
  EXPECT_EQ(cli("train --run.dir " + c.run_dir + " --resume --model.heads 4", &out), 1);
  EXPECT_TRUE(contains(out, "model.heads: the run has '2', given '4'")) << out;
}

// Item 3: labels may be class names; the classes are the sorted names unless data.classes lists them, and
// the run keeps them for predictions.
TEST(FirstHour, ClassNamesAsLabels) {
  const auto sorted = data::resolve_classes("", {"tumor", "normal", "tumor"}, "labels");
  EXPECT_EQ(sorted.names, (std::vector<std::string>{"normal", "tumor"}));
  const auto listed = data::resolve_classes("tumor, normal", {"normal"}, "labels");
  EXPECT_EQ(data::class_index(listed, "normal", "x"), 1);
  EXPECT_EQ(data::class_index(data::resolve_classes("", {"0", "2"}, "labels"), "2", "x"), 2);
  EXPECT_TRUE(contains(error_of([&] { data::class_index(listed, "tumour", "list.csv:3"); }),
                       "list.csv:3: label 'tumour' is not one of the classes tumor, normal; did you mean tumor?"));

  testing::TempDir dir;
  const auto c = csv_config(dir, {"tumor", "normal", "tumor", "normal"}, {"normal", "tumor"});
  app::train(c, false);
  auto run = train::open_run(c.run_dir);
  ASSERT_EQ(run.spec.tasks.size(), 1u);
  EXPECT_EQ(run.spec.tasks[0].classes, (std::vector<std::string>{"normal", "tumor"}));
  const auto p = app::predict_picture(run, data::read_image(dir.file("images/img0.png")), "image");
  const int64_t k = p.result["predicted"]["label"].get<int64_t>();
  EXPECT_EQ(p.result["predicted_class"]["label"], k == 0 ? "normal" : "tumor");
  std::string out;
  ASSERT_EQ(cli("predict --run " + c.run_dir + " --image " + dir.file("images/img0.png") + " --out " + dir.file("p"), &out), 0);
  EXPECT_TRUE(contains(out, k == 0 ? "normal (0)" : "tumor (1)")) << out;
  // Evaluation reopens the test list with the run's names.
  EXPECT_EQ(app::evaluate(c.run_dir, 1)["samples"], 2);
}

#ifdef TESSERA_WITH_SLIDES
TEST(FirstHour, ClassNamesInSlideManifests) {
  testing::TempDir dir;
  write_file_atomic(dir.file("m.csv"), "slide,label,split\na.tif,tumor,train\nb.tif,normal,train\nc.tif,Normal,test\n");
  const auto entries = slides::read_manifest(dir.file("m.csv"));
  const auto msg = error_of([&] { slides::manifest_tasks(entries, dir.file("m.csv")); });
  EXPECT_EQ(msg, "");  // three names, sorted: Normal, normal, tumor
  const auto tasks = slides::manifest_tasks(entries, dir.file("m.csv"));
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].activation, "softmax");
  EXPECT_EQ(tasks[0].classes, (std::vector<std::string>{"Normal", "normal", "tumor"}));
  write_file_atomic(dir.file("m.csv"), "slide,label\na.tif,tumor\nb.tif,normal\n");
  const auto binary = slides::manifest_tasks(slides::read_manifest(dir.file("m.csv")), dir.file("m.csv"));
  EXPECT_EQ(binary[0].activation, "sigmoid");
  EXPECT_EQ(binary[0].class_name(1), "tumor");
}

// Item 4: a bad grid setting is one error before any slide; every slide failing is a failure even with
// --skip-errors.
TEST(FirstHour, PreprocessFailsWhenNothingWasDone) {
  testing::TempDir dir;
  write_file_atomic(dir.file("m.csv"), "slide,label\nmissing1.tif,0\nmissing2.tif,1\n");
  std::string out;
  EXPECT_EQ(cli("preprocess --manifest " + dir.file("m.csv") + " --out " + dir.file("cache") + " --patch -256", &out), 1);
  EXPECT_TRUE(contains(out, "error: the patch side (patch) must be in [1, 65536] pixels, got -256")) << out;
  EXPECT_FALSE(contains(out, "skip-errors")) << out;
  EXPECT_EQ(cli("preprocess --manifest " + dir.file("m.csv") + " --out " + dir.file("cache") + " --skip-errors", &out), 1);
  EXPECT_TRUE(contains(out, "every slide failed (2 of 2")) << out;
}
#endif

// Item 5: the command line's own errors: nearest names, the key given twice, exit code 2.
TEST(FirstHour, CommandLineErrorsSuggestAndExitWithTwo) {
  std::string out;
  EXPECT_EQ(cli("train --train.epoch 1", &out), 2);
  EXPECT_TRUE(contains(out, "error: tessera train: unknown option '--train.epoch'; did you mean --train.epochs?")) << out;
  EXPECT_EQ(cli("trian", &out), 2);
  EXPECT_TRUE(contains(out, "unknown command 'trian'; did you mean train?")) << out;
  EXPECT_EQ(cli("train --train.epochs 1 --train.epochs 2", &out), 2);
  EXPECT_TRUE(contains(out, "option --train.epochs is given 2 times; give it once")) << out;
  EXPECT_EQ(cli("", &out), 2);
  EXPECT_TRUE(contains(out, "give a command: train")) << out;
  EXPECT_EQ(cli("--help", &out), 0);
  EXPECT_EQ(cli("eval --run /nonexistent/run", &out), 1);  // a failure, not a usage error
  // The config's own errors say the same.
  Config c;
  EXPECT_TRUE(contains(error_of([&] { c.set("train.epoch", "1"); }), "did you mean train.epochs?"));
  EXPECT_TRUE(contains(error_of([&] { train::find_method("ipss"); }), "did you mean ips?"));
  EXPECT_EQ(did_you_mean("zzzzzz", {"train", "eval"}), "");
}

// Item 6: budget errors say what the step needs and what to change.
TEST(FirstHour, BudgetMessagesSayWhatTheStepNeeds) {
  testing::TempDir dir;
  auto c = csv_config(dir, {"0", "1", "0", "1"}, {"0", "1"});
  c.train.memory_budget = "200KiB";
  const auto msg = error_of([&] { app::train(c, false); });
  EXPECT_TRUE(contains(msg, "needs more than")) << msg;
  EXPECT_TRUE(contains(msg, "raise train.memory_budget")) << msg;
  EXPECT_TRUE(contains(msg, "train.batch_size")) << msg;
  EXPECT_FALSE(contains(msg, "the trial reached")) << msg;
  // A trial that does not fit reports what it needs at least (above the budget), and plan prints it so.
  train::apply_runtime(c);
  const auto train_set = train::make_datasets(c).first;
  const auto [fits, needs] = train::trial_step(c, train_set);
  const int64_t budget = memory::budget();
  memory::set_budget(0);
  EXPECT_FALSE(fits);
  EXPECT_GT(needs, budget);
  const nlohmann::json plan{{"method", "ips"}, {"memory_budget", "200KiB"}, {"planned_against_bytes", budget * 95 / 100},
                            {"batch_size", 1},
                            {"trials", {{{"batch_size", 2}, {"settings", nlohmann::json::object()}, {"fits", false},
                                         {"peak_tensor_bytes", needs}}}}};
  const auto text = app::format_plan(plan);
  EXPECT_TRUE(contains(text, "> " + memory::format_bytes(needs) + " no")) << text;
}

// Item 8: the small output defects.
TEST(FirstHour, OutputsSayWhatHappened) {
  testing::TempDir dir;
  std::string out;
  EXPECT_EQ(cli("report --run " + dir.file("nope"), &out), 1);
  EXPECT_FALSE(contains(out, "wrote")) << out;
  EXPECT_EQ(cli("embed --list-encoders", &out), 0);
  EXPECT_EQ(out.rfind("name ", 0), 0u) << out;
  EXPECT_EQ(cli("make-slides --help", &out), 0);
  EXPECT_TRUE(contains(out, "--test-count INT=4")) << out;
  EXPECT_EQ(cli("export-data --help", &out), 0);
  EXPECT_TRUE(contains(out, "data/export")) << out;
  // The channel error names the image once.
  const auto msg = error_of([&] { data::conform_image(torch::zeros({4, 2, 2}), 1, 0, 0, "image 'a.png'"); });
  EXPECT_EQ(msg.find("image 'image"), std::string::npos) << msg;
  // export-data writes a list the csv data set reads back.
  Config c = testing::tiny_config(testing::fake_mnist_dir(dir), dir.file("run"));
  app::ExportOptions o;
  o.out = dir.file("export");
  o.count = 4;
  ASSERT_EQ(app::export_data(c, o), 4);
  Config back = c;
  back.data.dataset = "csv";
  back.data.train_csv = back.data.test_csv = dir.file("export/labels.csv");
  back.data.classes = "10";
  const auto sets = train::make_datasets(back);
  ASSERT_EQ(sets.first->size(), 4);
  EXPECT_EQ(sets.first->get(0).image.sizes(), (std::vector<int64_t>{1, 168, 168}));
}

}  // namespace
}  // namespace tessera
