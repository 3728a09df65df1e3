// tessera report: one self-contained HTML file (inline SVG charts and PNG pictures, no scripts, no
// network) describing one or more runs: learning curves of every loss and task metric, learning rate,
// epoch time and peak memory (runs overlaid), each run's spec and config, and what the model looks at on
// a few test inputs.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace tessera::app {

struct ReportOptions {
  std::vector<std::string> runs;  // run directories
  std::string out;                // the HTML file; empty: <first run>/report.html
  int64_t pictures = 3;           // test inputs drawn per run (0: none)
  int64_t threads = 0;            // 0: all cores
};

// Writes the report atomically and returns its path.
std::string write_report(const ReportOptions& options);

// One line chart as inline SVG: series of (x, y) points, each with a label and a colour.
struct ChartSeries {
  std::string label;
  std::vector<std::pair<double, double>> points;
  int64_t colour = -1;  // index into the palette (cycling), so a series keeps its colour across charts; -1: its position
  bool dashed = false;  // e.g. the test series of a run whose train series has the same colour
};
std::string svg_line_chart(const std::string& title, const std::string& x_label, const std::vector<ChartSeries>& series);

}  // namespace tessera::app
