#include "tessera/app/report.h"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>

#include "tessera/app/predict.h"
#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/run_dir.h"
#include "tessera/core/runtime.h"
#include "tessera/core/version.h"
#include "tessera/data/image_io.h"
#include "tessera/train/experiment.h"
#include "tessera/train/registry.h"
#ifdef TESSERA_WITH_SLIDES
#include "tessera/slides/heatmap.h"
#include "tessera/slides/slide_dataset.h"
#endif

namespace tessera::app {
namespace fs = std::filesystem;
namespace {

const char* const kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};
constexpr size_t kLegendChars = 28;  // longer series labels are cut

std::string escape(const std::string& text);

// The test metrics of an epoch's record as a table: one row per task and metric, the loss first.
std::string metrics_table(const nlohmann::json& record) {
  const auto& test = record["test"];
  std::string rows;
  if (test.contains("loss")) rows += fmt::format("<tr><td>all</td><td>loss</td><td>{:.4f}</td></tr>", test["loss"].get<double>());
  for (const auto& [task, metrics] : test.items()) {
    if (!metrics.is_object()) continue;
    for (const auto& [name, value] : metrics.items()) {
      if (value.is_number()) rows += fmt::format("<tr><td>{}</td><td>{}</td><td>{:.4f}</td></tr>", escape(task), escape(name), value.get<double>());
    }
  }
  return fmt::format("<p>Test metrics after epoch {} ({} samples):</p>\n<table><tr><th>task</th><th>metric</th>"
                     "<th>value</th></tr>{}</table>\n", record.value("epoch", int64_t{0}), test.value("samples", int64_t{0}), rows);
}

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string base64(const std::string& bytes) {
  static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    for (int k = 3; k >= 0; --k) out += table[(v >> (6 * k)) & 63];
  }
  if (i < bytes.size()) {
    uint32_t v = uint8_t(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= uint8_t(bytes[i + 1]) << 8;
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? table[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

// An image (C, H, W) in [0, 1] as an <img> with an inline PNG.
std::string png_tag(const torch::Tensor& image, const std::string& caption, const std::string& scratch) {
  data::write_png(scratch, image);
  std::ifstream in(scratch, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  fs::remove(scratch);
  return fmt::format("<figure><img alt=\"{0}\" src=\"data:image/png;base64,{1}\"><figcaption>{0}</figcaption></figure>\n",
                     escape(caption), base64(bytes));
}

// The records of a run's JSON-lines file (metrics.jsonl, steps.jsonl); none when it is missing.
std::vector<nlohmann::json> read_records(const std::string& run, const std::string& name) {
  std::vector<nlohmann::json> records;
  std::ifstream in((fs::path(run) / name).string());
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object()) records.push_back(j);
  }
  return records;
}

// Labels for evenly spaced axis ticks. Plain decimals with as many places as the tick step needs
// ("45", "66", "0.25", "1.6"); values too large or steps too fine for that take as few significant
// digits as keep neighbouring ticks apart (a learning rate from 9.9e-5 to 1e-4: "9.9e-05", "9.925e-05").
std::vector<std::string> tick_labels(double lo, double hi, int count) {
  std::vector<std::string> labels(count + 1);
  const double step = (hi - lo) / count, largest = std::max(std::fabs(lo), std::fabs(hi));
  const auto value = [&](int k) { return lo + step * k; };
  // A tick that is zero up to rounding noise reads "0", not "-1.7e-18".
  const auto is_zero = [&](double v) { return std::fabs(v) < 1e-9 * largest; };
  const int places = std::max(0, static_cast<int>(std::ceil(-std::log10(step / 10))));
  if (largest < 1e5 && places <= 4) {
    for (int k = 0; k <= count; ++k) {
      auto text = fmt::format("{:.{}f}", is_zero(value(k)) ? 0.0 : value(k), places);
      if (text.find('.') != std::string::npos) {
        while (text.back() == '0') text.pop_back();
        if (text.back() == '.') text.pop_back();
      }
      labels[k] = text == "-0" ? "0" : text;
    }
    return labels;
  }
  for (int digits = 2; digits <= 8; ++digits) {
    for (int k = 0; k <= count; ++k) labels[k] = is_zero(value(k)) ? "0" : fmt::format("{:.{}g}", value(k), digits);
    if (std::set<std::string>(labels.begin(), labels.end()).size() == labels.size()) break;
  }
  return labels;
}

// Pictures of what the model looks at on the first test inputs of a run; a note when it cannot.
std::string run_pictures(const std::string& run_dir, int64_t count, const std::string& scratch) {
  if (count <= 0) return "";
  try {
    auto run = train::open_run(run_dir);
    const auto& info = train::find_method(run.spec.method);
    const auto test_set = train::make_datasets(run.config, {false, true}, &run.spec.tasks).second;
    TESSERA_CHECK(test_set, "the run's config names no test set");
    std::string html;
    const int64_t n = std::min(count, test_set->size());
    for (int64_t i = 0; i < n; ++i) {
      const auto sample = test_set->get(i);
      data::Batch batch = data::collate({sample}, {0});
      std::string truth;
      for (const auto& t : run.spec.tasks) {
        const auto& label = sample.labels.at(t.name);
        truth += fmt::format("{}{}={}", truth.empty() ? "" : ", ", t.name,
                             t.activation == "softmax" ? std::to_string(label.item<int64_t>())
                             : t.outputs == 1          ? std::to_string(label[0].item<float>() >= 0.5f ? 1 : 0)
                                                       : "[multi-hot]");
      }
      if (run.spec.input.kind == "image" && !info.picture.empty()) {
        const auto scores = run.method->patch_scores(batch);
        std::string predicted;
        for (const auto& t : run.spec.tasks) {
          if (t.activation != "softmax") continue;
          predicted += fmt::format("{}{}={}", predicted.empty() ? "" : ", ", t.name, scores.outputs.at(t.name)[0].argmax().item<int64_t>());
        }
        html += png_tag(draw_patch_scores(test_set->picture(i), scores),
                        fmt::format("test {}: {} | predicted {}", i, truth, predicted), scratch);
      }
#ifdef TESSERA_WITH_SLIDES
      else if (run.spec.input.kind == "slide") {
        auto* ips = dynamic_cast<methods::Ips*>(run.method.get());
        auto* bag = dynamic_cast<const slides::SlideBag*>(sample.bag.get());
        TESSERA_ASSERT(ips && bag, "slide runs are IPS runs on slide bags");
        html += png_tag(slides::heatmap_overlay(bag->reader(), bag->grid(), ips->score_all(sample.bag), 512),
                        fmt::format("test slide {}: {}", i, truth), scratch);
      }
#endif
      else {
        const std::string why = run.spec.input.kind == "features"
                                    ? "feature bags hold no pixels; predict --bag with --slide draws a heatmap"
                                    : run.spec.method + " scores no patches, so it has nothing to draw";
        return "<p class=\"note\">No pictures: " + why + ".</p>\n";
      }
    }
    return "<div class=\"pictures\">\n" + html + "</div>\n";
  } catch (const Error& e) {
    return "<p class=\"note\">No pictures: " + escape(e.what()) + "</p>\n";
  }
}

std::string describe_input(const train::InputSpec& in) {
  if (in.kind == "features") return fmt::format("feature bags, rows of {}", in.features);
  const auto where = in.kind == "slide" ? (in.mpp > 0 ? fmt::format("slide patches at {} um/px", in.mpp)
                                                      : fmt::format("slide patches at level {}", in.level))
                                        : fmt::format("images {}x{}", in.height, in.width);
  return fmt::format("{}, {} channel(s), patch {} stride {}{}", where, in.channels, in.patch, in.stride,
                     in.normalization.empty() ? "" : ", normalised");
}

// "2 epochs and 640 samples of the next, 103 steps (stopped by train.time_limit)".
std::string describe_progress(const train::TrainState& state, const std::vector<nlohmann::json>& metrics) {
  auto text = fmt::format("{} epoch{}", state.epoch, state.epoch == 1 ? "" : "s");
  if (state.samples_in_epoch > 0) text += fmt::format(" and {} samples of the next", state.samples_in_epoch);
  text += fmt::format(", {} step{}", state.step, state.step == 1 ? "" : "s");
  if (!metrics.empty() && metrics.back().contains("stopped")) {
    text += " (stopped by train." + metrics.back()["stopped"].get<std::string>() + ")";
  }
  return text;
}

}  // namespace

std::string svg_line_chart(const std::string& title, const std::string& x_label, const std::vector<ChartSeries>& series) {
  // Legend entries below the axis label, up to three per row, fewer when the longest label would run
  // into its neighbour (about 6 px per character at font size 10); the plot shrinks as rows are added.
  const double W = 460, left = 58, right = 12, top = 28, pw = W - left - right;
  size_t longest = 0;
  for (const auto& s : series) longest = std::max(longest, std::min<size_t>(s.label.size(), kLegendChars));
  const int64_t legend_columns = std::clamp<int64_t>(static_cast<int64_t>(pw / (13 + 6.0 * longest + 8)), 1, 3);
  const int64_t legend_rows =
      std::max<int64_t>(1, (static_cast<int64_t>(series.size()) + legend_columns - 1) / legend_columns);
  const double H = 250 + 12.0 * static_cast<double>(legend_rows - 1), bottom = 40 + 12.0 * static_cast<double>(legend_rows);
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : series) {
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(y)) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  }
  std::string svg = fmt::format("<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
                                "viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"{}\">\n",
                                W, H, W, H, escape(title));
  svg += fmt::format("<text x=\"{}\" y=\"17\" font-size=\"13\" font-weight=\"bold\">{}</text>\n", left, escape(title));
  if (!std::isfinite(x0)) return svg + fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"12\">no data</text></svg>\n", left, H / 2);
  if (x1 == x0) x0 -= 1, x1 += 1;
  // A single value, or values that differ by less than 0.1 % of their size (a learning rate within one
  // epoch's warm-up, memory that moved by kilobytes), get a padded axis around them, not a magnified one.
  if (const double size = std::max(std::fabs(y0), std::fabs(y1)); y1 - y0 < 1e-3 * size || y1 == y0) {
    const double centre = (y0 + y1) / 2, pad = std::max(1e-9, 0.1 * size);
    y0 = centre - pad, y1 = centre + pad;
  }
  const double ph = H - top - bottom;
  const auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  const auto py = [&](double y) { return top + (1 - (y - y0) / (y1 - y0)) * ph; };
  svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\n", left, top, pw, ph);
  const auto y_ticks = tick_labels(y0, y1, 4), x_ticks = tick_labels(x0, x1, 4);
  for (int k = 0; k <= 4; ++k) {
    const double yv = y0 + (y1 - y0) * k / 4, xv = x0 + (x1 - x0) * k / 4;
    svg += fmt::format("<line x1=\"{0}\" x2=\"{1}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\" stroke=\"#eee\"/>"
                       "<text x=\"{3}\" y=\"{4:.1f}\" font-size=\"10\" text-anchor=\"end\">{5}</text>\n",
                       left, left + pw, py(yv), left - 4, py(yv) + 3, y_ticks[k]);
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{}</text>\n", px(xv),
                       top + ph + 13, x_ticks[k]);
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\n", left + pw / 2,
                     top + ph + 27, escape(x_label));
  for (size_t i = 0; i < series.size(); ++i) {
    const auto colour = kColours[static_cast<size_t>(series[i].colour >= 0 ? series[i].colour : static_cast<int64_t>(i)) %
                                 std::size(kColours)];
    std::string points;
    for (const auto& [x, y] : series[i].points) {
      if (std::isfinite(y)) points += fmt::format("{:.1f},{:.1f} ", px(x), py(y));
    }
    const std::string dash = series[i].dashed ? " stroke-dasharray=\"5 3\"" : "";
    svg += fmt::format("<polyline class=\"series\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\"{} points=\"{}\"/>\n",
                       colour, dash, points);
    if (series[i].points.size() <= 40) {
      for (const auto& [x, y] : series[i].points) {
        if (std::isfinite(y)) svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.2\" fill=\"{}\"/>", px(x), py(y), colour);
      }
      svg += "\n";
    }
    const auto column = static_cast<int64_t>(i) % legend_columns, row = static_cast<int64_t>(i) / legend_columns;
    const double lx = left + static_cast<double>(column) * pw / static_cast<double>(legend_columns),
                 ly = H - 8 - static_cast<double>(legend_rows - 1 - row) * 12;
    svg += fmt::format("<line x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"{}\" stroke-width=\"3\"{}/>"
                       "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10\">{}</text>\n",
                       lx, lx + 10, ly - 3, ly - 3, colour, series[i].dashed ? " stroke-dasharray=\"3 1\"" : "", lx + 13, ly,
                       escape(series[i].label.substr(0, kLegendChars)));
  }
  return svg + "</svg>\n";
}

std::string write_report(const ReportOptions& o) {
  TESSERA_CHECK(!o.runs.empty(), "report needs at least one --run");
  runtime::ScopedThreads threads(o.threads);
  const std::string out = o.out.empty() ? (fs::path(o.runs.front()) / "report.html").string() : o.out;
  const auto scratch = out + ".picture.png";

  struct Run {
    std::string dir, name;
    std::vector<nlohmann::json> metrics;
    std::vector<nlohmann::json> steps;  // steps.jsonl (train.log_every)
  };
  std::vector<Run> runs;
  for (const auto& dir : o.runs) {
    TESSERA_CHECK(fs::exists(fs::path(dir) / "checkpoint.pt"), "run '", dir, "' has no checkpoint.pt; is it a run directory?");
    const auto name = fs::path(dir).filename().string();
    runs.push_back({dir, name.empty() ? dir : name, read_records(dir, "metrics.jsonl"), read_records(dir, "steps.jsonl")});
  }
  // Every scalar of a record by a path like "train/loss" or "test/majority/accuracy".
  std::vector<std::string> keys;
  const auto scan = [&](const nlohmann::json& j, const std::string& prefix, auto& self) -> void {
    for (const auto& [k, v] : j.items()) {
      const auto key = prefix.empty() ? k : prefix + "/" + k;
      if (v.is_object()) self(v, key, self);
      else if (v.is_number() && std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(key);
    }
  };
  for (const auto& r : runs) {
    for (const auto& rec : r.metrics) scan(rec, "", scan);
  }
  const auto value = [](const nlohmann::json& rec, const std::string& key) -> double {
    const nlohmann::json* node = &rec;
    size_t begin = 0;
    while (true) {
      const auto end = key.find('/', begin);
      const auto part = key.substr(begin, end - begin);
      if (!node->is_object() || !node->contains(part)) return NAN;
      node = &node->at(part);
      if (end == std::string::npos) break;
      begin = end + 1;
    }
    return node->is_number() ? node->get<double>() : NAN;
  };
  // One chart per quantity: train and test overlaid, for every run.
  std::vector<std::pair<std::string, std::vector<std::string>>> charts;  // title, keys
  std::map<std::string, size_t> chart_of;
  // Losses and task metrics first, then the learning rate, time and memory.
  std::stable_sort(keys.begin(), keys.end(), [](const std::string& a, const std::string& b) {
    const auto rank = [](const std::string& k) { return k.find('/') != std::string::npos ? 0 : k == "lr" ? 1 : k == "seconds" ? 2 : 3; };
    return rank(a) < rank(b);
  });
  for (const auto& key : keys) {
    if (key == "epoch" || key == "step" || key.find("samples") != std::string::npos) continue;
    std::string title = key;
    if (key.rfind("train/", 0) == 0 || key.rfind("test/", 0) == 0) title = key.substr(key.find('/') + 1);
    if (key == "lr") title = "learning rate";
    if (key == "seconds" || key == "precise_bn_seconds") title = "seconds per epoch";
    if (key == "train_seconds") title = "training seconds, cumulative";
    if (key == "peak_tensor_bytes" || key == "peak_rss_bytes") title = "peak memory (MiB)";
    if (!chart_of.count(title)) {
      chart_of[title] = charts.size();
      charts.push_back({title, {}});
    }
    charts[chart_of[title]].second.push_back(key);
  }
  std::map<std::string, int64_t> colour_of;  // one run: by label, in order of first appearance
  std::string body;
  body += "<h2>Learning curves</h2>\n<div class=\"charts\">\n";
  // Runs that logged every few steps (train.log_every): loss and learning rate against steps, with the
  // test loss at the step of each evaluation, so runs shorter than an epoch show their course too.
  if (std::any_of(runs.begin(), runs.end(), [](const Run& r) { return !r.steps.empty(); })) {
    std::vector<ChartSeries> loss, lr;
    for (const auto& r : runs) {
      if (r.steps.empty()) continue;
      const auto colour = static_cast<int64_t>(&r - runs.data());
      const std::string prefix = runs.size() > 1 ? r.name + " " : "";
      ChartSeries train{prefix + "train", {}, runs.size() > 1 ? colour : 0, false};
      ChartSeries rate{prefix.empty() ? "learning rate" : r.name, {}, colour, false};
      for (const auto& rec : r.steps) {
        const double step = rec.value("step", 0.0);
        if (rec.contains("loss")) train.points.emplace_back(step, rec["loss"].get<double>());
        if (rec.contains("lr")) rate.points.emplace_back(step, rec["lr"].get<double>());
      }
      ChartSeries test{prefix + "test", {}, runs.size() > 1 ? colour : 1, runs.size() > 1};
      for (const auto& rec : r.metrics) {
        if (rec.contains("test") && rec["test"].contains("loss") && rec.contains("step")) {
          test.points.emplace_back(rec["step"].get<double>(), rec["test"]["loss"].get<double>());
        }
      }
      loss.push_back(train);
      if (!test.points.empty()) loss.push_back(test);
      lr.push_back(rate);
    }
    body += svg_line_chart("loss by step", "step", loss);
    body += svg_line_chart("learning rate by step", "step", lr);
  }
  for (const auto& [title, chart_keys] : charts) {
    std::vector<ChartSeries> series;
    for (const auto& r : runs) {
      for (const auto& key : chart_keys) {
        ChartSeries s;
        const auto part = key.substr(0, key.find('/'));
        const std::string what = part == "train" || part == "test" ? part
                                 : key == "peak_tensor_bytes"       ? "tensors"
                                 : key == "peak_rss_bytes"          ? "RSS"
                                 : key == "precise_bn_seconds"      ? "precise BN"
                                                                    : "";
        s.label = runs.size() > 1 || what.empty() ? r.name + (what.empty() ? "" : " " + what) : what;
        const double scale = key.rfind("peak_", 0) == 0 ? 1.0 / (1 << 20) : 1.0;
        for (const auto& rec : r.metrics) {
          const double v = value(rec, key);
          if (std::isfinite(v)) s.points.emplace_back(rec.value("epoch", 0.0), v * scale);
        }
        if (s.points.empty()) continue;
        // Several runs: a run keeps one colour in every chart, its second series (test, RSS) dashed.
        // One run: each kind of series (train, test, ...) keeps one colour.
        if (runs.size() > 1) {
          s.colour = static_cast<int64_t>(&r - runs.data());
          s.dashed = what == "test" || what == "RSS" || what == "precise BN";
        } else {
          s.colour = colour_of.emplace(s.label, static_cast<int64_t>(colour_of.size())).first->second;
        }
        series.push_back(s);
      }
    }
    body += svg_line_chart(title, "epoch", series);
  }
  body += "</div>\n";
  for (const auto& r : runs) {
    body += "<h2>Run " + escape(r.name) + "</h2>\n<p class=\"path\">" + escape(r.dir) + "</p>\n";
    const auto info = train::read_checkpoint_info((fs::path(r.dir) / "checkpoint.pt").string());
    try {
      const auto spec = train::read_run_spec(info, r.dir);
      std::string tasks;
      for (const auto& t : spec.tasks) {
        std::string names;
        for (const auto& n : t.classes) names += (names.empty() ? ": " : ", ") + n;
        tasks += fmt::format("{}{} ({}, {}{})", tasks.empty() ? "" : "; ", t.name, t.activation, t.outputs, names);
      }
      body += fmt::format("<table><tr><th>method</th><td>{}</td></tr><tr><th>data set</th><td>{}</td></tr>"
                          "<tr><th>tasks</th><td>{}</td></tr><tr><th>input</th><td>{}</td></tr>"
                          "<tr><th>trained</th><td>{}</td></tr>"
                          "<tr><th>written by</th><td>tessera {} (commit {}, LibTorch {})</td></tr></table>\n",
                          escape(spec.method), escape(spec.dataset), escape(tasks), escape(describe_input(spec.input)),
                          escape(describe_progress(info.state, r.metrics)), escape(spec.tessera_version), escape(spec.commit), escape(spec.libtorch_version));
      body += "<details><summary>run spec</summary><pre>" + escape(train::to_json(spec).dump(2)) + "</pre></details>\n";
    } catch (const Error& e) {
      body += "<p class=\"note\">" + escape(e.what()) + "</p>\n";
    }
    body += "<details><summary>config</summary><pre>" + escape(info.config_yaml) + "</pre></details>\n";
    if (!r.metrics.empty() && r.metrics.back().contains("test")) body += metrics_table(r.metrics.back());
    body += run_pictures(r.dir, o.pictures, scratch);
  }
  const auto now = std::time(nullptr);
  std::string html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tessera report</title>\n"
                     "<style>body{font-family:sans-serif;margin:24px;max-width:1500px}.charts{display:flex;flex-wrap:wrap;gap:8px}"
                     ".chart{border:1px solid #ddd;background:#fff}table{border-collapse:collapse}th,td{border:1px solid #ccc;"
                     "padding:3px 8px;text-align:left}pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:400px}"
                     ".pictures{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0}img{max-width:420px;border:1px solid #ccc}"
                     "figcaption{font-size:12px}.note{color:#a33}.path{color:#666;font-size:12px}</style></head><body>\n";
  html += fmt::format("<h1>tessera report</h1>\n<p>{} run(s), written {:%Y-%m-%d %H:%M} by {}.</p>\n", runs.size(),
                      fmt::localtime(now), escape(version_line()));
  html += body + "</body></html>\n";
  write_file_atomic(out, html);
  return out;
}

}  // namespace tessera::app
