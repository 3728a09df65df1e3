#include "tessera/slides/annotations.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "tessera/core/error.h"

namespace tessera::slides {
namespace fs = std::filesystem;

namespace {

constexpr uintmax_t kMaxFileBytes = uintmax_t{1} << 30;  // 1 GiB of GeoJSON: far more than any drawn region
constexpr double kMaxCoordinate = 1e9;                    // level-0 pixels; slides are below 1e6

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// Reads the geometry of one feature; `where` names the file and feature in errors.
class GeometryReader {
 public:
  explicit GeometryReader(std::string where) : where_(std::move(where)) {}

  void read(const nlohmann::json& geometry, std::vector<Polygon>& out, int depth = 0) const {
    check(geometry.is_object(), "geometry must be an object");
    check(depth < 8, "geometry collections nest more than 8 deep");
    const auto type = string_field(geometry, "type");
    if (type == "Polygon") {
      out.push_back(polygon(field(geometry, "coordinates")));
    } else if (type == "MultiPolygon") {
      const auto& polys = field(geometry, "coordinates");
      check(polys.is_array(), "MultiPolygon coordinates must be an array of polygons");
      for (const auto& p : polys) out.push_back(polygon(p));
    } else if (type == "GeometryCollection") {
      const auto& parts = field(geometry, "geometries");
      check(parts.is_array(), "GeometryCollection needs a 'geometries' array");
      for (const auto& g : parts) read(g, out, depth + 1);
    } else {
      check(type == "Point" || type == "MultiPoint" || type == "LineString" || type == "MultiLineString",
            "unknown geometry type '", type, "' (expected Polygon, MultiPolygon, GeometryCollection, or a point or line)");
    }
  }

 private:
  template <typename... Args>
  void check(bool ok, const Args&... args) const {
    if (!ok) fail(where_, ": ", args...);
  }
  const nlohmann::json& field(const nlohmann::json& j, const char* name) const {
    const auto it = j.find(name);
    check(it != j.end(), "missing '", name, "'");
    return *it;
  }
  std::string string_field(const nlohmann::json& j, const char* name) const {
    const auto& v = field(j, name);
    check(v.is_string(), "'", name, "' must be a string");
    return v.get<std::string>();
  }

  Polygon polygon(const nlohmann::json& rings) const {
    check(rings.is_array() && !rings.empty(), "a polygon must be a non-empty array of rings");
    Polygon p;
    for (const auto& r : rings) {
      check(r.is_array(), "a polygon ring must be an array of [x, y] positions");
      Polygon::Ring ring;
      ring.reserve(r.size());
      for (const auto& position : r) {
        check(position.is_array() && position.size() >= 2 && position[0].is_number() && position[1].is_number(),
              "a position must be an array of at least two numbers, got ", position.dump().substr(0, 60));
        const double x = position[0].get<double>(), y = position[1].get<double>();
        check(std::isfinite(x) && std::isfinite(y) && std::abs(x) < kMaxCoordinate && std::abs(y) < kMaxCoordinate,
              "position [", x, ", ", y, "] is not a level-0 pixel coordinate");
        ring.push_back({x, y});
      }
      if (ring.size() > 1 && ring.front() == ring.back()) ring.pop_back();  // GeoJSON closes rings explicitly
      check(ring.size() >= 3, "a polygon ring needs at least 3 distinct positions, got ", ring.size());
      p.rings.push_back(std::move(ring));
    }
    auto& b = p.bounds;
    b = {p.rings[0][0][0], p.rings[0][0][1], p.rings[0][0][0], p.rings[0][0][1]};
    for (const auto& [x, y] : p.rings[0]) {
      b[0] = std::min(b[0], x), b[1] = std::min(b[1], y), b[2] = std::max(b[2], x), b[3] = std::max(b[3], y);
    }
    return p;
  }

  std::string where_;
};

// x of the crossings of the polygon's edges with the horizontal line y, sorted.
std::vector<double> crossings(const Polygon& p, double y) {
  std::vector<double> xs;
  for (const auto& ring : p.rings) {
    const size_t n = ring.size();
    for (size_t i = 0, j = n - 1; i < n; j = i++) {
      const auto& a = ring[j];
      const auto& b = ring[i];
      if ((a[1] > y) != (b[1] > y)) xs.push_back(a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1]));
    }
  }
  std::sort(xs.begin(), xs.end());
  return xs;
}

// Even-odd rule: inside when an odd number of crossings lies left of x.
bool inside(const std::vector<double>& xs, double x) {
  return (std::lower_bound(xs.begin(), xs.end(), x) - xs.begin()) % 2 == 1;
}

// The ring clipped to one half-plane of the rectangle (Sutherland-Hodgman); keep(p) says which side.
template <typename Keep, typename Cut>
Polygon::Ring clip(const Polygon::Ring& ring, Keep keep, Cut cut) {
  Polygon::Ring out;
  const size_t n = ring.size();
  for (size_t i = 0; i < n; ++i) {
    const auto& cur = ring[i];
    const auto& prev = ring[(i + n - 1) % n];
    const bool in_cur = keep(cur), in_prev = keep(prev);
    if (in_cur) {
      if (!in_prev) out.push_back(cut(prev, cur));
      out.push_back(cur);
    } else if (in_prev) {
      out.push_back(cut(prev, cur));
    }
  }
  return out;
}

double ring_area_in_rect(Polygon::Ring ring, double x0, double y0, double x1, double y1) {
  using P = std::array<double, 2>;
  const auto at_x = [](const P& a, const P& b, double x) { return P{x, a[1] + (x - a[0]) * (b[1] - a[1]) / (b[0] - a[0])}; };
  const auto at_y = [](const P& a, const P& b, double y) { return P{a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1]), y}; };
  ring = clip(ring, [&](const P& p) { return p[0] >= x0; }, [&](const P& a, const P& b) { return at_x(a, b, x0); });
  ring = clip(ring, [&](const P& p) { return p[0] <= x1; }, [&](const P& a, const P& b) { return at_x(a, b, x1); });
  ring = clip(ring, [&](const P& p) { return p[1] >= y0; }, [&](const P& a, const P& b) { return at_y(a, b, y0); });
  ring = clip(ring, [&](const P& p) { return p[1] <= y1; }, [&](const P& a, const P& b) { return at_y(a, b, y1); });
  double twice = 0;  // shoelace
  for (size_t i = 0, n = ring.size(); i < n; ++i) {
    const auto& a = ring[i];
    const auto& b = ring[(i + 1) % n];
    twice += a[0] * b[1] - b[0] * a[1];
  }
  return std::abs(twice) / 2;
}

void check_coords(const torch::Tensor& coords, int64_t footprint) {
  TESSERA_CHECK(coords.dim() == 2 && coords.size(1) == 2, "patch coordinates must be (N, 2), got ", coords.sizes());
  TESSERA_CHECK(footprint > 0, "patch footprint must be positive, got ", footprint);
}

}  // namespace

bool Polygon::contains(double x, double y) const { return inside(crossings(*this, y), x); }

double Polygon::overlap_area(double x0, double y0, double x1, double y1) const {
  if (x1 <= bounds[0] || x0 >= bounds[2] || y1 <= bounds[1] || y0 >= bounds[3]) return 0;
  double area = ring_area_in_rect(rings[0], x0, y0, x1, y1);
  for (size_t h = 1; h < rings.size(); ++h) area -= ring_area_in_rect(rings[h], x0, y0, x1, y1);
  return std::max(0.0, area);
}

bool Annotation::excluded() const {
  const auto name = lower(classification);
  return name == "exclude" || name.rfind("ignore", 0) == 0;
}

std::string annotation_path(const std::string& folder, const std::string& slide_id) {
  return (fs::path(folder) / (slide_id + ".geojson")).string();
}

Annotations read_annotations(const std::string& path) {
  std::error_code ec;
  TESSERA_CHECK(fs::is_regular_file(path, ec), "annotations '", path,
                "' not found; export them from QuPath (File > Export objects as GeoJSON) as <slide id>.geojson");
  const auto bytes = fs::file_size(path, ec);
  TESSERA_CHECK(!ec && bytes <= kMaxFileBytes, "annotations '", path, "' are ", bytes,
                " bytes; more than 1 GiB of GeoJSON is not a set of drawn regions (export annotations, not detections)");
  std::ifstream in(path, std::ios::binary);
  TESSERA_CHECK(in, "cannot read annotations '", path, "'");
  std::string text(static_cast<size_t>(bytes), '\0');
  in.read(text.data(), static_cast<std::streamsize>(bytes));
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("annotations '", path, "' are not valid JSON (", e.what(), "); export them again from QuPath as GeoJSON");
  }
  // A FeatureCollection, a bare array of features (QuPath 0.2) or a single feature.
  const nlohmann::json* features = &doc;
  nlohmann::json single;
  if (doc.is_object()) {
    const auto type = doc.find("type");
    TESSERA_CHECK(type != doc.end() && type->is_string(), "annotations '", path,
                  "': expected a GeoJSON FeatureCollection, feature array or Feature, got an object without a 'type'");
    if (*type == "FeatureCollection") {
      const auto it = doc.find("features");
      TESSERA_CHECK(it != doc.end() && it->is_array(), "annotations '", path, "': a FeatureCollection needs a 'features' array");
      features = &*it;
    } else {
      single = nlohmann::json::array({doc});
      features = &single;
    }
  }
  TESSERA_CHECK(features->is_array(), "annotations '", path, "': expected a GeoJSON FeatureCollection, feature array or Feature");
  Annotations out;
  out.path = path;
  for (size_t i = 0; i < features->size(); ++i) {
    const auto& f = (*features)[i];
    const std::string where = fmt::format("annotations '{}' feature {}", path, i);
    TESSERA_CHECK(f.is_object(), where, ": a feature must be an object");
    const auto type = f.find("type");
    TESSERA_CHECK(type != f.end() && *type == "Feature", where, ": expected \"type\": \"Feature\"");
    Annotation a;
    const auto props = f.find("properties");
    if (props != f.end() && props->is_object()) {
      const auto cls = props->find("classification");
      if (cls != props->end() && cls->is_object() && cls->contains("name") && (*cls)["name"].is_string()) {
        a.classification = (*cls)["name"].get<std::string>();
      } else if (cls != props->end() && cls->is_string()) {
        a.classification = cls->get<std::string>();
      }
    }
    const auto geometry = f.find("geometry");
    TESSERA_CHECK(geometry != f.end(), where, ": missing 'geometry'");
    if (geometry->is_null()) continue;
    GeometryReader(where).read(*geometry, a.polygons);
    if (!a.polygons.empty()) out.items.push_back(std::move(a));
  }
  return out;
}

torch::Tensor annotated_fraction(const Annotations& annotations, const torch::Tensor& coords, int64_t footprint,
                                 int64_t samples) {
  check_coords(coords, footprint);
  TESSERA_CHECK(samples > 0, "annotated_fraction: samples must be positive");
  std::vector<const Polygon*> include, exclude;
  for (const auto& a : annotations.items) {
    for (const auto& p : a.polygons) (a.excluded() ? exclude : include).push_back(&p);
  }
  const int64_t N = coords.size(0);
  const auto c = coords.to(torch::kLong).contiguous();
  const auto* xy = c.data_ptr<int64_t>();
  std::vector<double> offset(static_cast<size_t>(samples));
  for (int64_t k = 0; k < samples; ++k) offset[k] = (static_cast<double>(k) + 0.5) * static_cast<double>(footprint) / samples;
  // Patches by row, so the crossings of each sample line are found once.
  std::map<int64_t, std::vector<int64_t>> rows;
  for (int64_t i = 0; i < N; ++i) rows[xy[2 * i + 1]].push_back(i);
  std::vector<int64_t> hits(static_cast<size_t>(N), 0);
  for (const auto& [y, members] : rows) {
    for (int64_t j = 0; j < samples; ++j) {
      const double sy = static_cast<double>(y) + offset[j];
      const auto lines = [&](const std::vector<const Polygon*>& polys) {
        std::vector<std::vector<double>> out;
        for (const auto* p : polys) {
          if (sy >= p->bounds[1] && sy <= p->bounds[3]) out.push_back(crossings(*p, sy));
        }
        return out;
      };
      const auto in_lines = lines(include), out_lines = lines(exclude);
      const auto any = [](const std::vector<std::vector<double>>& ls, double x) {
        return std::any_of(ls.begin(), ls.end(), [x](const std::vector<double>& xs) { return inside(xs, x); });
      };
      for (const int64_t i : members) {
        for (int64_t k = 0; k < samples; ++k) {
          const double sx = static_cast<double>(xy[2 * i]) + offset[k];
          if ((include.empty() || any(in_lines, sx)) && !any(out_lines, sx)) ++hits[i];
        }
      }
    }
  }
  return torch::tensor(hits, torch::kLong).to(torch::kFloat32) / static_cast<float>(samples * samples);
}

PatchCoords keep_annotated(PatchCoords grid, const Annotations& annotations, double min_fraction) {
  const auto keep = (annotated_fraction(annotations, grid.coords, grid.footprint) >= min_fraction).nonzero().squeeze(1);
  TESSERA_CHECK(keep.numel() > 0, "none of the ", grid.count(), " tissue patches lies at least ", min_fraction,
                " inside the regions of '", annotations.path, "' (coordinates must be level-0 pixels, as QuPath exports them)");
  grid.coords = grid.coords.index_select(0, keep).contiguous();
  return grid;
}

torch::Tensor overlapping_patches(const Annotations& annotations, const torch::Tensor& coords, int64_t footprint,
                                  const std::string& classification) {
  check_coords(coords, footprint);
  const int64_t N = coords.size(0);
  const auto c = coords.to(torch::kLong).contiguous();
  const auto* xy = c.data_ptr<int64_t>();
  auto flags = torch::zeros({N}, torch::kBool);
  auto* f = flags.data_ptr<bool>();
  // A sliver below a millionth of a pixel is rounding where a patch only touches a region's edge.
  constexpr double kMinArea = 1e-6;
  for (const auto& a : annotations.items) {
    if (classification.empty() ? a.excluded() : a.classification != classification) continue;
    for (const auto& p : a.polygons) {
      for (int64_t i = 0; i < N; ++i) {
        if (f[i]) continue;
        const double x0 = static_cast<double>(xy[2 * i]), y0 = static_cast<double>(xy[2 * i + 1]);
        f[i] = p.overlap_area(x0, y0, x0 + static_cast<double>(footprint), y0 + static_cast<double>(footprint)) > kMinArea;
      }
    }
  }
  return flags;
}

}  // namespace tessera::slides
