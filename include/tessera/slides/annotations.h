// Regions drawn on a slide, read from GeoJSON the way QuPath exports it (File > Export objects as
// GeoJSON): a FeatureCollection, a bare array of features or one feature, each with a Polygon,
// MultiPolygon or GeometryCollection geometry in level-0 pixels and an optional
// properties.classification.name. Point and line geometries bound no area and are skipped.
//
// Two uses: which patches to keep (preprocess --annotations: inside the drawn regions, outside their
// holes, and outside any region classified "Exclude" or "Ignore*"), and where the tumours are
// (localization --annotations: patches that overlap a region).
#pragma once
#include <torch/types.h>

#include <array>
#include <string>
#include <vector>

#include "tessera/slides/tissue.h"

namespace tessera::slides {

struct Polygon {
  using Ring = std::vector<std::array<double, 2>>;  // (x, y) level-0 pixels; closed implicitly
  std::vector<Ring> rings;                          // rings[0]: outer boundary; the rest: holes
  std::array<double, 4> bounds{};                   // x0, y0, x1, y1 of the outer ring

  // Inside the outer ring and outside every hole (even-odd rule over the rings).
  bool contains(double x, double y) const;
  // Area of (this polygon) n (the rectangle [x0, x1] x [y0, y1]), exact (rings clipped to the rectangle).
  double overlap_area(double x0, double y0, double x1, double y1) const;
};

struct Annotation {
  std::string classification;  // properties.classification.name; empty when unclassified
  std::vector<Polygon> polygons;
  // QuPath's convention: "Exclude" and "Ignore*" mark regions to leave out.
  bool excluded() const;
};

struct Annotations {
  std::string path;
  std::vector<Annotation> items;  // the features that bound an area, file order
};

// The annotations of one GeoJSON file; a malformed file throws naming the file and the feature index.
Annotations read_annotations(const std::string& path);
// <folder>/<slide id>.geojson
std::string annotation_path(const std::string& folder, const std::string& slide_id);

// Fraction (N) float of each patch (top-left coords (N, 2) (x, y), side `footprint` level-0 pixels) that
// lies inside the annotated region: inside some area that is not excluded (the whole slide when every
// area is excluded or there is none) and outside every excluded area. Measured on a grid of
// samples x samples points at the centres of equal cells of the patch.
torch::Tensor annotated_fraction(const Annotations& annotations, const torch::Tensor& coords, int64_t footprint,
                                 int64_t samples = 8);

// The patches of grid at least min_fraction inside the annotated region (annotated_fraction); none is
// an error naming the annotation file.
PatchCoords keep_annotated(PatchCoords grid, const Annotations& annotations, double min_fraction = 0.5);

// Flags (N) bool of the patches that overlap (positive area in common with) an annotation of the class
// `classification` (empty: every annotation that is not excluded).
torch::Tensor overlapping_patches(const Annotations& annotations, const torch::Tensor& coords, int64_t footprint,
                                  const std::string& classification = "");

}  // namespace tessera::slides
