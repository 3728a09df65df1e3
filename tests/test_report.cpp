// tessera report: one self-contained HTML page for several runs, checked in a real headless browser
// (Debian's chromium): the charts are SVG in the rendered DOM, the pictures are inline, nothing is
// fetched and no script runs.
#include <nlohmann/json.hpp>

#include <map>
#include <regex>
#include <set>
#include <tuple>
#include <vector>

#include "helpers.h"
#include "tessera/app/report.h"
#include "tessera/train/experiment.h"
#include "tessera/train/trainer.h"

namespace tessera {
namespace {
namespace fs = std::filesystem;

int count_of(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(Report, ChartsOverlaidRunsAndPicturesRenderInHeadlessChromium) {
  testing::TempDir dir;
  fs::create_directories(dir.file("mnist"));
  testing::write_fake_mnist(dir.file("mnist"));
  // Two short IPS runs on Megapixel MNIST with different learning rates, overlaid in one report.
  for (const std::string name : {"slow", "fast"}) {
    auto c = testing::tiny_config(dir.file("mnist"), dir.file(name));
    c.train.epochs = 3;
    c.train.lr = name == "fast" ? 3e-3 : 1e-3;
    c.data.workers = 0;
    train::apply_runtime(c);
    auto [train_set, test_set] = train::make_datasets(c);
    auto method = train::make_method(c, train_set->tasks());
    train::Trainer(c, *method, train_set, test_set).fit(false);
  }
  const auto log = dir.file("log.txt");
  const auto html_path = dir.file("report.html");
  ASSERT_EQ(testing::run_cli("report --threads 1 --pictures 2 --run " + dir.file("slow") + " --run " + dir.file("fast") +
                                 " --out " + html_path,
                             log),
            0)
      << testing::read_text(log);
  const auto html = testing::read_text(html_path);
  EXPECT_EQ(count_of(html, "<script"), 0);
  EXPECT_EQ(count_of(html, "http://") - count_of(html, "http://www.w3.org/2000/svg"), 0);  // nothing to fetch
  EXPECT_GE(count_of(html, "<svg"), 6);  // loss, four task metrics, lr, time, memory
  EXPECT_GE(count_of(html, "data:image/png;base64,"), 4);  // two selection pictures per run
  EXPECT_NE(html.find("majority"), std::string::npos);
  EXPECT_NE(html.find("slow test"), std::string::npos);  // overlaid series are labelled by run
  EXPECT_NE(html.find("fast test"), std::string::npos);
  EXPECT_NE(html.find("&quot;format_version&quot;: 2"), std::string::npos);  // the run spec
  // A run keeps one colour in every chart (legend swatch, then its label), its test series dashed.
  const std::regex legend("stroke=\"(#[0-9a-f]{6})\" stroke-width=\"3\"( stroke-dasharray=\"[^\"]+\")?/><text [^>]*>([^<]+)</text>");
  std::map<std::string, std::set<std::string>> colours;  // run -> colours of its series
  int dashed_tests = 0, entries = 0;
  for (std::sregex_iterator it(html.begin(), html.end(), legend), end; it != end; ++it, ++entries) {
    const std::string label = (*it)[3];
    colours[label.substr(0, label.find(' '))].insert((*it)[1]);
    if (label.find(" test") != std::string::npos) {
      dashed_tests += (*it)[2].matched;
    } else if (label.find(" train") != std::string::npos) {
      EXPECT_FALSE((*it)[2].matched) << label;
    }
  }
  EXPECT_GE(entries, 12);
  ASSERT_EQ(colours.size(), 2u);  // slow and fast
  EXPECT_EQ(colours["slow"].size(), 1u);
  EXPECT_EQ(colours["fast"].size(), 1u);
  EXPECT_NE(*colours["slow"].begin(), *colours["fast"].begin());
  EXPECT_GE(dashed_tests, 2);

  // The page as a browser builds it: the SVG charts are in the DOM, and a screenshot renders.
  const std::string chromium = "/usr/bin/chromium";
  ASSERT_TRUE(fs::exists(chromium)) << "needs Debian's chromium (scripts/install-deps.sh installs it)";
  const std::string flags = " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-sync "
                            "--disable-background-networking --disable-component-update --user-data-dir=" +
                            dir.file("profile") + " ";
  const auto dom_path = dir.file("dom.html");
  ASSERT_EQ(std::system((chromium + flags + "--dump-dom file://" + html_path + " > " + dom_path + " 2> " + log).c_str()), 0)
      << testing::read_text(log);
  const auto dom = testing::read_text(dom_path);
  EXPECT_GE(count_of(dom, "<svg"), 6) << dom.substr(0, 400);
  EXPECT_GE(count_of(dom, "<polyline"), 6);
  EXPECT_EQ(count_of(testing::read_text(log), "Uncaught"), 0) << testing::read_text(log);
  ASSERT_EQ(std::system((chromium + flags + "--window-size=1400,1800 --screenshot=" + dir.file("shot.png") + " file://" +
                         html_path + " > " + log + " 2>&1")
                            .c_str()),
            0)
      << testing::read_text(log);
  EXPECT_GT(fs::file_size(dir.file("shot.png")), 10000u);
}

TEST(Report, SvgChartHandlesFlatAndEmptySeries) {
  const auto flat = app::svg_line_chart("loss", "epoch", {{"a", {{1, 0.5}, {2, 0.5}}}});
  EXPECT_NE(flat.find("<polyline"), std::string::npos);
  EXPECT_EQ(flat.find("nan"), std::string::npos);
  EXPECT_NE(app::svg_line_chart("loss", "epoch", {}).find("no data"), std::string::npos);
  EXPECT_NE(app::svg_line_chart("a<b", "epoch", {}).find("a&lt;b"), std::string::npos);
}

// The tick labels of each axis, in the order the chart writes them.
std::vector<std::string> axis_labels(const std::string& svg, const std::string& anchor) {
  std::vector<std::string> labels;
  for (size_t at = svg.find(anchor); at != std::string::npos; at = svg.find(anchor, at + 1)) {
    const auto start = svg.find('>', at) + 1;
    labels.push_back(svg.substr(start, svg.find('<', start) - start));
  }
  return labels;
}

TEST(Report, TickLabelsFitTheirRange) {
  // A learning rate decaying from 1e-4 to 9.9e-5: two significant digits would print "0.0001" five times.
  const auto svg = app::svg_line_chart("learning rate", "epoch", {{"lr", {{1, 1e-4}, {2, 9.95e-5}, {3, 9.9e-5}}}});
  const auto y = axis_labels(svg, "text-anchor=\"end\"");
  ASSERT_EQ(y.size(), 5u) << svg;
  EXPECT_EQ(std::set<std::string>(y.begin(), y.end()).size(), 5u) << svg;
  EXPECT_EQ(y.front(), "9.9e-05");
  EXPECT_EQ(y.back(), "0.0001");
  // Wider ranges read as plain decimals with the places their step needs, never "1.3e+02".
  const auto loss = app::svg_line_chart("loss", "epoch", {{"loss", {{1, 0.5}, {5, 2.5}}}});
  EXPECT_EQ(axis_labels(loss, "text-anchor=\"end\""), (std::vector<std::string>{"0.5", "1", "1.5", "2", "2.5"}));
  EXPECT_EQ(axis_labels(loss, "text-anchor=\"middle\">").front(), "1");
  const auto seconds = app::svg_line_chart("seconds", "epoch", {{"s", {{1, 45}, {5, 130}}}});
  EXPECT_EQ(axis_labels(seconds, "text-anchor=\"end\""), (std::vector<std::string>{"45", "66", "88", "109", "130"}));
  // Two runs of one point each that differ in the fifth digit (memory 240.0916 and 240.097 MiB): a padded
  // axis around them (+-10 %), not one magnified to 240.0916..240.097.
  const auto memory = app::svg_line_chart("memory", "epoch", {{"a", {{1, 240.0916}}}, {"b", {{1, 240.097}}}});
  EXPECT_EQ(axis_labels(memory, "text-anchor=\"end\""), (std::vector<std::string>{"216", "228", "240", "252", "264"}));
}

TEST(Report, LegendEntriesNeverOverlap) {
  for (const auto& names : std::vector<std::vector<std::string>>{
           {"gd train", "gd test", "patchgd train", "patchgd test", "ips train"},
           {"gd-64MiB tensors", "gd_extended-64MiB tensors", "gd_extended-64MiB RSS", "patchgd-64MiB tensors"}}) {
    std::vector<app::ChartSeries> series;
    for (const auto& name : names) series.push_back({name, {{1, 1.0}, {2, 0.5}}});
    const auto svg = app::svg_line_chart("accuracy", "epoch", series);
    // Each legend label sits in a <text x=".." y=".."> right after its colour swatch. Two labels on one
    // row must be at least as far apart as the left one's swatch and text (about 6 px per character).
    std::vector<std::tuple<double, double, size_t>> entries;  // x, y, label length
    for (const auto& s : series) {
      const auto at = svg.find(">" + s.label + "</text>");
      ASSERT_NE(at, std::string::npos) << s.label;
      const auto start = svg.rfind("<text x=\"", at);
      const double x = std::stod(svg.substr(start + 9));
      const double y = std::stod(svg.substr(svg.find("y=\"", start) + 3));
      entries.emplace_back(x, y, s.label.size());
    }
    for (size_t a = 0; a < entries.size(); ++a) {
      for (size_t b = 0; b < entries.size(); ++b) {
        const auto& [xa, ya, na] = entries[a];
        const auto& [xb, yb, nb] = entries[b];
        if (a != b && ya == yb && xb >= xa) {
          EXPECT_GE(xb - xa, 6.0 * static_cast<double>(na)) << svg;
        }
      }
    }
  }
}

// A run stopped by its time limit inside its first epoch reads as such, not as "0 epochs".
TEST(Report, TimeLimitedRunSaysWhereItStopped) {
  testing::TempDir dir;
  auto c = testing::tiny_config(testing::fake_mnist_dir(dir), dir.file("run"));
  c.train.time_limit = 1e-6;  // out of time after the first step
  c.data.workers = 0;
  train::apply_runtime(c);
  auto [train_set, test_set] = train::make_datasets(c);
  auto method = train::make_method(c, train_set->tasks());
  train::Trainer(c, *method, train_set, test_set).fit(false);
  const auto html = testing::read_text(app::write_report({{dir.file("run")}, "", 0, 1}));
  EXPECT_NE(html.find("<td>0 epochs and 2 samples of the next, 1 step (stopped by train.time_limit)</td>"),
            std::string::npos)
      << html.substr(html.find("<th>trained"), 200);
}

TEST(Report, StepRecordsDrawShortRunsAgainstSteps) {
  // A run shorter than two epochs (the PatchGD demo's runs end inside their first): train.log_every
  // records the loss every step, and the report draws loss and learning rate by step, with the test
  // loss at the evaluation's step.
  testing::TempDir dir;
  auto c = testing::tiny_config(testing::fake_mnist_dir(dir), dir.file("run"));
  c.train.epochs = 1;
  c.train.log_every = 1;
  c.data.workers = 0;
  train::apply_runtime(c);
  auto [train_set, test_set] = train::make_datasets(c);
  auto method = train::make_method(c, train_set->tasks());
  train::Trainer(c, *method, train_set, test_set).fit(false);
  const auto steps = testing::read_text(dir.file("run/steps.jsonl"));
  EXPECT_EQ(count_of(steps, "\n"), 4) << steps;  // 8 images in batches of 2
  const auto html = testing::read_text(app::write_report({{dir.file("run")}, "", 0, 1}));
  const auto chart = html.substr(html.find("aria-label=\"loss by step\""));
  const auto svg = chart.substr(0, chart.find("</svg>"));
  EXPECT_EQ(count_of(svg, "<polyline"), 2) << svg;  // train by step, test at the epoch's step
  EXPECT_EQ(count_of(svg, "<circle"), 5) << svg;    // four steps and one evaluation
  EXPECT_NE(html.find("aria-label=\"learning rate by step\""), std::string::npos);
}

TEST(Report, MissingRunSaysSo) {
  testing::TempDir dir;
  try {
    app::write_report({{dir.file("nothing")}, "", 0, 1});
    FAIL() << "no error for a missing run";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has no checkpoint.pt"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tessera
