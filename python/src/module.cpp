// tessera._core: the C++ library's entry points for the Python package (python/tessera/__init__.py).
// Glue only: each function converts its arguments, calls one library function with the GIL released,
// and converts the result. Tensors cross without copies (torch/extension.h's casters, the LibTorch
// that python3-torch is built on); JSON records cross as text and become dicts on the Python side.
#include <torch/extension.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "tessera/app/embed.h"
#include "tessera/app/predict.h"
#include "tessera/app/report.h"
#include "tessera/app/train.h"
#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/core/memory.h"
#include "tessera/core/precision.h"
#include "tessera/core/version.h"
#include "tessera/data/image_io.h"
#include "tessera/models/encoder_registry.h"
#include "tessera/train/experiment.h"
#include "tessera/train/resume.h"
#ifdef TESSERA_WITH_SLIDES
#include "tessera/app/slide_workflows.h"
#include "tessera/slides/annotations.h"
#include "tessera/slides/geojson.h"
#include "tessera/slides/heatmap.h"
#include "tessera/slides/preprocess.h"
#include "tessera/slides/reader.h"
#endif

namespace py = pybind11;
using namespace tessera;

namespace {

// config file (may be empty) + "section.key" overrides, as the command line builds it.
Config make_config(const std::string& path, const std::vector<std::pair<std::string, std::string>>& overrides) {
  Config c;
  if (!path.empty()) c.load_yaml(path);
  for (const auto& [key, value] : overrides) c.set(key, value);
  return c;
}

// train(...) -> (the last record as JSON text, the run directory). on_epoch(record_json) runs with the GIL; Ctrl-C
// (SIGINT, seen by PyErr_CheckSignals after a step) stops at a checkpoint and raises KeyboardInterrupt.
py::tuple train_run(const std::string& config_path, const std::vector<std::pair<std::string, std::string>>& overrides,
                  bool resume, py::object on_epoch) {
  auto config = make_config(config_path, overrides);
  if (resume) {
    std::vector<std::string> given;
    for (const auto& kv : overrides) given.push_back(kv.first);
    config = train::resume_config(config, given, /*whole=*/!config_path.empty());
  }
  const auto run_dir = config.run_dir;
  std::atomic<bool> interrupted{false};
  train::TrainHooks hooks;
  if (!on_epoch.is_none()) {
    hooks.on_epoch = [&on_epoch](const nlohmann::json& record) {
      py::gil_scoped_acquire gil;
      on_epoch(record.dump());
    };
  }
  hooks.interrupted = [&interrupted] {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) {
      PyErr_Clear();
      interrupted = true;
    }
    return interrupted.load();
  };
  nlohmann::json record;
  {
    py::gil_scoped_release release;
    record = app::train(std::move(config), resume, std::move(hooks));
  }
  if (interrupted) {
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw py::error_already_set();
  }
  return py::make_tuple(record.dump(), run_dir);
}

// Runs f (which reads `stop` between slides) on a worker thread with the GIL released while this, the
// main thread, watches for Ctrl-C: Python runs signal handlers only on the main thread, and f's own
// threads never are. On Ctrl-C `stop` is set, f finishes what it started and returns, and
// KeyboardInterrupt is raised; otherwise f's result or error comes back.
template <typename F>
auto interruptible(F f, std::atomic<bool>& stop) -> decltype(f()) {
  std::packaged_task<decltype(f())()> task(std::move(f));
  auto done = task.get_future();
  std::thread worker(std::move(task));
  while (true) {
    {
      py::gil_scoped_release release;
      if (done.wait_for(std::chrono::milliseconds(100)) == std::future_status::ready) break;
    }
    if (PyErr_CheckSignals() != 0) {
      PyErr_Clear();
      stop = true;
    }
  }
  worker.join();
  if (stop) {
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw py::error_already_set();
  }
  return done.get();
}

// An opened run: its network in memory for repeated predictions.
struct Run {
  std::string dir;
  train::OpenedRun run;
};

py::tuple predict(Run& r, const torch::Tensor& image, const std::string& what) {
  app::ImagePrediction p;
  {
    py::gil_scoped_release release;
    p = app::predict_picture(r.run, image, what);
  }
  py::object scores = py::none(), rows = py::none(), cols = py::none();
  if (p.scores.scores.defined()) {
    scores = py::cast(p.scores.scores.to(torch::kFloat));
    rows = py::cast(p.scores.rows);
    cols = py::cast(p.scores.cols);
  }
  return py::make_tuple(p.result.dump(), scores, rows, cols, p.scores.outline, p.picture);
}

struct Encoder {
  models::EncoderSpec spec;
  models::BackbonePtr net;
  Precision precision = Precision::fp32;
};

// (B, C, H, W) uint8 (0-255) or float (0-1) -> (B, D) float32 features. normalize: the encoder's own
// preprocessing (resize, centre crop, mean/std); else the batch goes in as it is.
torch::Tensor encode(Encoder& e, const torch::Tensor& batch, bool normalize) {
  TESSERA_CHECK(batch.dim() == 4, "Encoder: expected a batch (B, C, H, W), got a tensor of ", batch.dim(), " dimensions");
  py::gil_scoped_release release;
  c10::InferenceMode inference;
  auto x = batch.scalar_type() == torch::kUInt8 ? batch.to(torch::kFloat).div_(255) : batch;
  TESSERA_CHECK(x.is_floating_point(), "Encoder: images must be uint8 (0-255) or float (0-1), got ", batch.scalar_type());
  if (normalize) {
    std::vector<torch::Tensor> images;
    for (int64_t i = 0; i < x.size(0); ++i) images.push_back(app::preprocess_for_encoder(x[i], e.spec.preprocessing, true));
    x = torch::stack(images);
  }
  AutocastGuard autocast(e.precision);
  return e.net->forward(x.to(torch::kFloat)).to(torch::kFloat);
}

#ifdef TESSERA_WITH_SLIDES
struct Slide {
  slides::SlideReaderPtr reader;
};

// The grid settings as keywords (Python names = the CLI's flags).
slides::PatchGridOptions grid_options(const py::dict& kw) {
  slides::PatchGridOptions g;
  for (const auto& [key, value] : kw) {
    const auto k = key.cast<std::string>();
    if (k == "patch") g.patch = value.cast<int64_t>();
    else if (k == "stride") g.stride = value.cast<int64_t>();
    else if (k == "level") g.level = value.cast<int>();
    else if (k == "mpp") g.mpp = value.cast<double>();
    else if (k == "tissue") g.tissue.method = value.cast<std::string>();
    else if (k == "min_tissue") g.tissue.min_fraction = value.cast<double>();
    else if (k == "annotations") g.annotations = value.cast<std::string>();
    else fail("unknown grid setting '", k, "' (patch, stride, level, mpp, tissue, min_tissue, annotations)");
  }
  TESSERA_CHECK(g.tissue.method == "otsu" || g.tissue.method == "saturation", "tissue must be otsu or saturation, got '",
                g.tissue.method, "'");
  return g;
}

py::dict outcome_dict(const slides::SlideOutcome& s) {
  py::dict d;
  d["id"] = s.id;
  d["slide"] = s.path;
  d["status"] = s.status;
  d["patches"] = s.patches;
  d["seconds"] = s.seconds;
  d["reason"] = s.reason;
  return d;
}
#endif

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "tessera's C++ core (use the tessera package, not this module)";
  const auto error = py::register_exception<Error>(m, "Error", PyExc_ValueError);
  // Registered after Error, so tried first: a budget failure raises the subclass.
  py::register_exception<memory::BudgetExceeded>(m, "BudgetExceeded", error.ptr());
  m.def("version", &version);
  m.def("commit", &commit);
  m.def("train", &train_run, py::arg("config"), py::arg("overrides"), py::arg("resume"), py::arg("on_epoch"));
  m.def("config_keys", [] {
    Config c;
    std::vector<std::pair<std::string, std::string>> keys;
    for (const auto& f : c.fields()) keys.emplace_back(f.key, f.help);
    return keys;
  });
  m.def("evaluate", [](const std::string& run, int64_t threads) {
    py::gil_scoped_release release;
    return app::evaluate(run, threads).dump();
  });
  m.def("report", [](const std::vector<std::string>& runs, const std::string& out) {
    app::ReportOptions o;
    o.runs = runs;
    o.out = out;
    py::gil_scoped_release release;
    return app::write_report(o);
  });
  m.def("read_image", [](const std::string& path) {
    py::gil_scoped_release release;
    return data::read_image(path);
  });
  m.def("write_png", [](const std::string& path, const torch::Tensor& image) {
    TESSERA_CHECK(image.dim() == 3 && (image.size(0) == 1 || image.size(0) == 3),
                  "write_png: expected an image (C, H, W) with 1 or 3 channels, got shape ", image.sizes());
    py::gil_scoped_release release;
    data::write_png(path, image.to(torch::kFloat).clamp(0, 1));
  });

  py::class_<Run>(m, "Run")
      .def(py::init([](const std::string& dir) {
        py::gil_scoped_release release;
        return Run{dir, train::open_run(dir)};
      }))
      .def_property_readonly("spec_json", [](const Run& r) { return train::to_json(r.run.spec).dump(); })
      .def_property_readonly("config_yaml", [](Run& r) { return r.run.config.to_yaml(); })
      .def_property_readonly("checkpoint", [](const Run& r) { return r.run.checkpoint_path; })
      .def("predict", &predict, py::arg("image"), py::arg("what"))
      .def("draw", [](Run&, const torch::Tensor& picture, const torch::Tensor& scores, const torch::Tensor& rows,
                      const torch::Tensor& cols, bool outline) {
        methods::Method::PatchScores s;
        s.scores = scores;
        s.rows = rows;
        s.cols = cols;
        s.outline = outline;
        return app::draw_patch_scores(picture, s);
      });

  py::class_<Encoder>(m, "Encoder")
      .def(py::init([](const std::string& name, const std::string& weights, const std::string& args, const std::string& precision) {
        Encoder e;
        e.precision = parse_precision(precision);
        py::gil_scoped_release release;
        e.spec = models::resolve_encoder(name, args);
        e.net = app::load_encoder(e.spec, weights);
        return e;
      }))
      .def("__call__", &encode, py::arg("images"), py::arg("normalize") = true)
      .def_property_readonly("spec_json", [](const Encoder& e) { return models::to_json(e.spec).dump(); })
      .def_property_readonly("num_features", [](const Encoder& e) { return e.net->out_features(); });
  m.def("list_encoders", [] {
    std::vector<std::tuple<std::string, std::string, std::string>> out;
    for (const auto& e : models::list_encoders()) out.emplace_back(e.name, e.architecture, e.summary);
    return out;
  });

#ifdef TESSERA_WITH_SLIDES
  py::class_<Slide>(m, "Slide")
      .def_property_readonly("path", [](const Slide& s) { return s.reader->path(); })
      .def_property_readonly("vendor", [](const Slide& s) { return s.reader->vendor(); })
      .def_property_readonly("backend", [](const Slide& s) { return s.reader->backend(); })
      .def_property_readonly("mpp", [](const Slide& s) { return s.reader->mpp(); })
      .def_property_readonly("levels", [](const Slide& s) {
        std::vector<std::tuple<int64_t, int64_t, double>> out;
        for (const auto& l : s.reader->levels()) out.emplace_back(l.width, l.height, l.downsample);
        return out;
      })
      .def("read_region", [](const Slide& s, int64_t x, int64_t y, int level, int64_t w, int64_t h) {
        const auto& r = *s.reader;
        TESSERA_CHECK(level >= 0 && level < r.level_count(), "slide '", r.path(), "' has levels 0-", r.level_count() - 1,
                      ", not ", level);
        TESSERA_CHECK(w > 0 && h > 0 && w <= 65536 && h <= 65536, "read_region: width and height must be in [1, 65536], got ",
                      w, "x", h);
        py::gil_scoped_release release;
        return r.read_region(x, y, level, w, h);
      });
  m.def("open_slide", [](const std::string& path, const std::string& backend) {
    py::gil_scoped_release release;
    return Slide{slides::open_slide(path, backend)};
  });
  // tissue_grid(slide, annotations_file, grid keywords) -> (coords (N, 2), footprint, level)
  m.def("tissue_grid", [](const Slide& s, const std::string& annotations, const py::dict& kw) {
    const auto g = grid_options(kw);
    slides::PatchCoords grid;
    {
      py::gil_scoped_release release;
      grid = slides::tissue_patches(*s.reader, g);
      if (!annotations.empty()) grid = slides::keep_annotated(std::move(grid), slides::read_annotations(annotations));
    }
    return py::make_tuple(grid.coords, grid.footprint, grid.level);
  });
  m.def("preprocess", [](const std::string& manifest, const std::string& out, const std::string& backend, int64_t workers,
                         int64_t thumbnail, bool skip_errors, const py::dict& kw) {
    slides::PreprocessOptions o;
    o.manifest = manifest;
    o.out_dir = out;
    o.backend = backend;
    o.workers = workers;
    o.thumbnail = thumbnail;
    o.skip_errors = skip_errors;
    o.grid = grid_options(kw);
    std::atomic<bool> stop{false};
    o.interrupted = [&stop] { return stop.load(); };
    const auto summary = interruptible([&o] { return slides::preprocess_slides(o); }, stop);
    py::list rows;
    for (const auto& r : summary.slides) rows.append(outcome_dict(r));
    return rows;
  });
  m.def("extract_features", [](const std::string& manifest, const std::string& out, const std::string& encoder,
                               const std::string& encoder_args, const std::string& weights, const std::string& run,
                               const std::string& cache_dir, const std::string& precision, int64_t batch, int64_t threads,
                               bool skip_errors, const py::dict& kw) {
    app::ExtractFeaturesOptions o;
    o.manifest = manifest;
    o.out = out;
    o.encoder = encoder;
    o.encoder_args = encoder_args;
    o.weights = weights;
    o.run = run;
    o.cache_dir = cache_dir;
    o.precision = precision;
    o.batch = batch;
    o.threads = threads;
    o.skip_errors = skip_errors;
    auto g = grid_options(kw);
    if (!kw.contains("patch")) g.patch = 0;  // the encoder's input size
    o.grid = g;
    std::atomic<bool> stop{false};
    o.interrupted = [&stop] { return stop.load(); };
    const auto summary = interruptible([&o] { return app::extract_features(o); }, stop);
    py::dict d;
    d["written"] = summary.written;
    d["existing"] = summary.existing;
    d["patches"] = summary.patches;
    d["seconds"] = summary.seconds;
    d["failed"] = summary.failed;
    return d;
  });

  py::class_<app::SlidePrediction>(m, "SlidePrediction")
      .def_property_readonly("result_json", [](const app::SlidePrediction& p) { return p.result.dump(); })
      .def_property_readonly("coords", [](const app::SlidePrediction& p) { return p.grid.coords; })
      .def_property_readonly("footprint", [](const app::SlidePrediction& p) { return p.grid.footprint; })
      .def_property_readonly("scores", [](const app::SlidePrediction& p) { return p.scores; })
      .def_property_readonly("selected", [](const app::SlidePrediction& p) { return p.selected; })
      .def_property_readonly("has_slide", [](const app::SlidePrediction& p) { return static_cast<bool>(p.reader); })
      .def("heatmap", [](const app::SlidePrediction& p, int64_t max_side) {
        TESSERA_CHECK(p.reader, "a heatmap needs the slide: predict with slide= as well as bag=");
        TESSERA_CHECK(max_side > 0, "heatmap: max_side must be positive, got ", max_side);
        py::gil_scoped_release release;
        return slides::heatmap_overlay(*p.reader, p.grid, p.scores, max_side);
      })
      .def("write_geojson", [](const app::SlidePrediction& p, const std::string& path, const std::string& measurement) {
        nlohmann::json prediction{{"predicted", p.result["predicted"]}};
        if (p.result.contains("predicted_class")) prediction["predicted_class"] = p.result["predicted_class"];
        py::gil_scoped_release release;
        slides::write_scores_geojson(path, p.grid, p.scores, p.selected, measurement, prediction);
      });
  m.def("predict_slide", [](Run& r, const std::string& slide, const std::string& bag) {
    py::gil_scoped_release release;
    return app::predict_slide(r.run, slide, bag);
  });
#endif
}
