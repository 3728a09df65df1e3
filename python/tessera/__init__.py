"""tessera: classifiers on images far larger than memory (IPS, PatchGD), from Python.

The same engine as the ``tessera`` command: every function here calls one function of the C++ library,
and tensors cross without copies (the LibTorch that ``torch`` is built on).

    import tessera
    run = tessera.train(config="configs/demo.yaml", run_dir="runs/demo", train__epochs=2)
    print(run.metrics[-1]["test"])
    prediction = run.predict("image.png")          # or a torch.Tensor (C, H, W) in [0, 1]
    features = tessera.Encoder("path/to/UNI")(batch)   # (B, 3, H, W) uint8 or float -> (B, D)

Whole slides: ``open_slide``, ``tissue_grid``, ``preprocess``, ``extract_features``, and
``Run.predict(slide_path, geojson="scores.geojson")`` for runs trained on slides or feature bags.
"""
from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch  # first: registers the tensor types the core's functions take and return

from . import _core

__all__ = ["Error", "BudgetExceeded", "Run", "Prediction", "SlidePrediction", "Encoder", "Slide", "train", "open_run", "open_slide",
           "tissue_grid", "preprocess", "extract_features", "list_encoders", "read_image", "write_png", "config_keys",
           "__version__"]

__version__: str = _core.version()
Error = _core.Error
Error.__doc__ = "A tessera error: bad input, a missing file, a budget that does not fit. Its message says what to do."
BudgetExceeded = _core.BudgetExceeded
BudgetExceeded.__doc__ = ("A step (or a model) needs more memory than train.memory_budget; a subclass of Error whose "
                          "message names what it needs and the settings that lower it.")


def _python_words(message: str) -> str:
    """The core's messages name command-line flags; from Python they name the keyword that sets the same:
    --skip-errors -> skip_errors=, --train.epochs -> train__epochs=."""
    def keyword(match: "re.Match[str]") -> str:
        value = match.group(2) or ""
        return match.group(1).replace(".", "__").replace("-", "_") + "=" + value.strip()
    # A config key takes its value ("--train.epochs 3" -> "train__epochs=3"); a flag stands alone.
    message = re.sub(r"(?<![\w-])--([a-z][a-z0-9_]*\.[A-Za-z0-9_]+)( [^\s,;)]+)?", keyword, message)
    return re.sub(r"(?<![\w-])--([a-z][a-z0-9_]*(?:-[a-z0-9_]+)*)()", keyword, message)


def _pythonic(function: Callable) -> Callable:
    """Re-raises the core's errors (same class) in Python's words, without the C++ frames."""
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Error as error:
            raise type(error)(_python_words(str(error))) from None
    return wrapper

PathLike = Union[str, "os.PathLike[str]"]


def _overrides(overrides: Optional[Mapping[str, Any]], keywords: Mapping[str, Any]) -> List[Tuple[str, str]]:
    """{"train.epochs": 3} and train__epochs=3 -> [("train.epochs", "3")] (bools as true/false)."""
    items = dict(overrides or {})
    items.update({key.replace("__", "."): value for key, value in keywords.items()})
    out = []
    for key, value in items.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        out.append((key, str(value)))
    return out


@_pythonic
def read_image(path: PathLike) -> torch.Tensor:
    """An image file (PNG, JPEG, TIFF; through libvips) as a float tensor (C, H, W) in [0, 1]."""
    return _core.read_image(os.fspath(path))


@_pythonic
def write_png(path: PathLike, image: torch.Tensor) -> None:
    """Writes an image (C, H, W) in [0, 1], 1 or 3 channels, as an 8-bit PNG (atomically)."""
    _core.write_png(os.fspath(path), image)


def config_keys() -> Dict[str, str]:
    """Every config key ("section.name") with its one-line description, as ``tessera train --help`` lists them."""
    return dict(_core.config_keys())


@_pythonic
def train(config: Optional[PathLike] = None, run_dir: Optional[PathLike] = None,
          overrides: Optional[Mapping[str, Any]] = None, *, resume: bool = False,
          on_epoch: Optional[Callable[[dict], None]] = None, progress: bool = True, **keywords: Any) -> "Run":
    """Trains a run, as ``tessera train`` does, and returns it.

    config: a YAML preset (e.g. "configs/demo.yaml"); run_dir: where the run goes (run.dir);
    overrides: {"train.epochs": 3}, or as keywords with "__" for the dot: ``train__epochs=3``.
    on_epoch(record) is called after each epoch with its metrics.jsonl record (a dict); with tqdm
    installed and progress true, a bar counts the epochs. Ctrl-C stops after the current step with a
    checkpoint of the exact position and raises KeyboardInterrupt; ``resume=True`` continues.
    """
    items = _overrides(overrides, keywords)
    if run_dir is not None:
        items.append(("run.dir", os.fspath(run_dir)))
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm  # optional
            epochs = dict(items).get("train.epochs")
            bar = tqdm(total=int(epochs) if epochs else None, unit="epoch", desc="tessera train")
        except ImportError:
            bar = None

    def epoch_done(text: str) -> None:
        record = json.loads(text)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=record.get("train", {}).get("loss"))
        if on_epoch is not None:
            on_epoch(record)

    try:
        _, directory = _core.train(os.fspath(config) if config is not None else "", items, resume, epoch_done)
    finally:
        if bar is not None:
            bar.close()
    return open_run(directory)


@dataclass
class Prediction:
    """What a run predicts for one image.

    outputs: per task, the probabilities (a tensor of the task's classes); predicted: per task, the
    class (softmax) or the classes at >= 0.5 (sigmoid); scores, rows, cols: the patch scores of methods
    that explain themselves (IPS: the M selected patches' attention; PatchGD: occlusion per patch), else
    None; picture: the image as the run read it, (C, H, W) in [0, 1]; record: prediction.json's dict.
    """
    outputs: Dict[str, torch.Tensor]
    predicted: Dict[str, Any]
    scores: Optional[torch.Tensor]
    rows: Optional[torch.Tensor]
    cols: Optional[torch.Tensor]
    picture: torch.Tensor
    record: dict
    outline: bool = field(default=True, repr=False)
    _run: Any = field(default=None, repr=False)

    def __repr__(self) -> str:
        patches = "" if self.scores is None else f", {self.scores.numel()} scored patches"
        size = "x".join(str(n) for n in self.picture.shape[-2:])
        return f"tessera.Prediction(predicted={self.predicted!r}{patches}, picture {size})"

    def draw(self) -> torch.Tensor:
        """The picture with the scored patches drawn on it (blue = low, red = high), (3, H, W) in [0, 1]."""
        if self.scores is None:
            raise Error("this run's method draws no patch scores")
        return self._run._core.draw(self.picture, self.scores, self.rows, self.cols, self.outline)


@dataclass
class SlidePrediction:
    """What a slide run predicts for one slide (or its feature bag).

    outputs, predicted: as for an image; scores: (N) the attention of every tissue patch; coords: (N, 2)
    their level-0 top-left corners (x, y), each footprint x footprint level-0 pixels; selected: (N) bool,
    the M patches the model selects; record: prediction.json's dict.
    """
    outputs: Dict[str, torch.Tensor]
    predicted: Dict[str, Any]
    scores: torch.Tensor
    coords: torch.Tensor
    footprint: int
    selected: torch.Tensor
    record: dict
    _core: Any = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (f"tessera.SlidePrediction(predicted={self.predicted!r}, {self.scores.numel()} patches, "
                f"{int(self.selected.sum())} selected)")

    @_pythonic
    def draw(self, max_side: int = 1024) -> torch.Tensor:
        """The slide's thumbnail (longest side max_side) with the attention heatmap, (3, H, W) in [0, 1]."""
        return self._core.heatmap(max_side)

    @_pythonic
    def write_geojson(self, path: PathLike, measurement: str = "attention") -> str:
        """QuPath detections: one square per patch in level-0 pixels, the score under
        properties.measurements[measurement], the selected patches classified "Selected"."""
        self._core.write_geojson(os.fspath(path), measurement)
        return os.fspath(path)


class Run:
    """A trained (or training) run directory: what it is, how it learned, and its model.

    spec: the run spec (method, tasks, input, normalisation, settings) as a dict; config: the resolved
    config (config.yaml) as text; metrics: metrics.jsonl as a list of dicts, read afresh each time;
    steps: steps.jsonl likewise (train.log_every).
    """

    def __init__(self, directory: PathLike):
        self.directory = os.fspath(directory)
        self._core = _core.Run(self.directory)

    def __repr__(self) -> str:
        return f"tessera.Run({self.directory!r}, method={self.spec['method']!r})"

    @property
    def spec(self) -> dict:
        return json.loads(self._core.spec_json)

    @property
    def config(self) -> str:
        return self._core.config_yaml

    def _records(self, name: str) -> List[dict]:
        path = os.path.join(self.directory, name)
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    @property
    def metrics(self) -> List[dict]:
        return self._records("metrics.jsonl")

    @property
    def steps(self) -> List[dict]:
        """steps.jsonl (written with train.log_every N): the mean training loss of every N steps, with the
        learning rate, samples seen and training seconds; empty without it."""
        return self._records("steps.jsonl")

    @_pythonic
    def predict(self, image: Union[PathLike, torch.Tensor, None] = None, *, bag: Optional[PathLike] = None,
                geojson: Optional[PathLike] = None) -> Union[Prediction, SlidePrediction]:
        """Predicts an image file (PNG/JPEG/TIFF) or a tensor (C, H, W) in [0, 1], with the run's own
        normalisation, as ``tessera predict --image`` does (nothing is written).

        For a run trained on slides, ``image`` is a slide file and the result a SlidePrediction with the
        attention of every tissue patch; for one trained on feature bags, pass ``bag=`` (the slide's .h5)
        and optionally the slide for pictures. ``geojson=path`` also writes the scores as QuPath
        detections (``tessera predict --slide ... --geojson``)."""
        if self.spec["input"]["kind"] != "image":
            if isinstance(image, torch.Tensor):
                raise Error("this run was trained on slides: pass a slide file (or bag=), not a tensor")
            slide = os.fspath(image) if image is not None else ""
            scored = _core.predict_slide(self._core, slide, os.fspath(bag) if bag is not None else "")
            record = json.loads(scored.result_json)
            outputs = {task: torch.tensor(values) for task, values in record["outputs"].items()}
            prediction = SlidePrediction(outputs, record["predicted"], scored.scores, scored.coords, scored.footprint,
                                         scored.selected, record, scored)
            if geojson is not None:
                prediction.write_geojson(geojson)
            return prediction
        if bag is not None or geojson is not None:
            raise Error("bag= and geojson= are for runs trained on slides; this run predicts images")
        if image is None:
            raise Error("predict needs an image (a file or a tensor (C, H, W) in [0, 1])")
        if isinstance(image, torch.Tensor):
            picture, what = image, "the image tensor"
        else:
            picture, what = _core.read_image(os.fspath(image)), f"image '{os.fspath(image)}'"
        text, scores, rows, cols, outline, conformed = self._core.predict(picture, what)
        record = json.loads(text)
        outputs = {task: torch.tensor(values) for task, values in record["outputs"].items()}
        return Prediction(outputs, record["predicted"], scores, rows, cols, conformed, record, outline, self)

    @_pythonic
    def evaluate(self, threads: int = 0) -> dict:
        """Test-set loss and metrics of the checkpoint, as ``tessera eval`` (only the test split is opened)."""
        return json.loads(_core.evaluate(self.directory, threads))

    @_pythonic
    def report(self, path: Optional[PathLike] = None, *others: "Run") -> str:
        """Writes one self-contained HTML page (learning curves, spec, pictures) and returns its path."""
        runs = [self.directory] + [r.directory for r in others]
        return _core.report(runs, os.fspath(path) if path is not None else "")


@_pythonic
def open_run(directory: PathLike) -> Run:
    """Opens a run directory (or checkpoint): the network is rebuilt from the run alone."""
    return Run(directory)


def _image_tensor(image: Any, name: str, batch: bool = False) -> torch.Tensor:
    """A torch tensor (C, H, W) (or, with batch, (B, C, H, W)) from a tensor or a numpy array; numpy images
    laid out (H, W, C) with 1, 3 or 4 channels are moved to (C, H, W)."""
    if isinstance(image, torch.Tensor):
        tensor = image
    elif type(image).__module__ == "numpy" and hasattr(image, "shape"):
        tensor = torch.from_numpy(image.copy() if not image.flags.writeable else image)
        if tensor.dim() == 3 and tensor.shape[-1] in (1, 3, 4) and tensor.shape[0] not in (1, 3, 4):
            tensor = tensor.permute(2, 0, 1)
        elif tensor.dim() == 4 and tensor.shape[-1] in (1, 3, 4) and tensor.shape[1] not in (1, 3, 4):
            tensor = tensor.permute(0, 3, 1, 2)
    else:
        raise TypeError(f"Encoder: {name} must be a torch.Tensor or a numpy array (or a list of them), "
                        f"not {type(image).__name__}")
    allowed = (3, 4) if batch else (3,)
    if tensor.dim() not in allowed:
        shape = "(B, C, H, W) or (C, H, W)" if batch else "(C, H, W)"
        raise TypeError(f"Encoder: {name} has shape {tuple(tensor.shape)}; expected {shape}")
    return tensor


class Encoder:
    """A registered encoder (``list_encoders()``) or a model folder (config.json + weights), in eval mode.

    ``Encoder("uni", weights="pytorch_model.bin", precision="bf16")(batch)`` maps (B, C, H, W) images,
    uint8 (0-255) or float (0-1), to (B, D) float32 features. normalize=True applies the encoder's own
    preprocessing (shorter side to size / crop_pct, centre crop, mean/std); normalize=False feeds the
    batch as it is (already preprocessed).
    """

    @_pythonic
    def __init__(self, name_or_folder: PathLike, weights: Optional[PathLike] = None, precision: str = "fp32",
                 args: Optional[Mapping[str, Any]] = None):
        self.name = os.fspath(name_or_folder)
        self._core = _core.Encoder(self.name, os.fspath(weights) if weights else "",
                                   json.dumps(dict(args)) if args else "", precision)

    @_pythonic
    def __call__(self, images: Any, normalize: bool = True) -> torch.Tensor:
        """images: a batch (B, C, H, W) or one image (C, H, W), as a torch tensor or a numpy array, or a list
        of images (tensors or arrays; (C, H, W), or (H, W, C) arrays as Slide.read_region(...).numpy() and
        PIL give). uint8 is 0-255, float 0-1. Images of different sizes are encoded one by one (normalize
        resizes each to the encoder's input). Returns (B, D) float32 features."""
        if isinstance(images, (list, tuple)):
            if not images:
                raise TypeError("Encoder: images is an empty list; give at least one image")
            tensors = [_image_tensor(image, f"images[{i}]") for i, image in enumerate(images)]
            if all(t.shape == tensors[0].shape for t in tensors):
                return self._core(torch.stack(tensors), normalize)
            return torch.cat([self._core(t.unsqueeze(0), normalize) for t in tensors])
        batch = _image_tensor(images, "images", batch=True)
        return self._core(batch if batch.dim() == 4 else batch.unsqueeze(0), normalize)

    @property
    def num_features(self) -> int:
        return self._core.num_features

    @property
    def spec(self) -> dict:
        """Architecture, arguments and preprocessing, as a run records them."""
        return json.loads(self._core.spec_json)

    def __repr__(self) -> str:
        return f"tessera.Encoder({self.name!r}, num_features={self.num_features})"


@_pythonic
def list_encoders() -> List[Tuple[str, str, str]]:
    """(name, architecture, summary) of every registered encoder."""
    return list(_core.list_encoders())


class Slide:
    """A whole-slide image (OpenSlide formats, pyramidal TIFF, or any PNG/JPEG/TIFF through libvips)."""

    def __init__(self, path: PathLike, backend: str = "auto"):
        self._core = _core.open_slide(os.fspath(path), backend)

    @property
    def path(self) -> str:
        return self._core.path

    @property
    def dimensions(self) -> Tuple[int, int]:
        """(width, height) of level 0."""
        width, height, _ = self._core.levels[0]
        return width, height

    @property
    def levels(self) -> List[Tuple[int, int, float]]:
        """(width, height, downsample) per level."""
        return list(self._core.levels)

    @property
    def mpp(self) -> float:
        """Micrometres per level-0 pixel (0 when the file does not say)."""
        return self._core.mpp

    @property
    def vendor(self) -> str:
        return self._core.vendor

    @_pythonic
    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> torch.Tensor:
        """RGB pixels as a uint8 tensor (3, height, width), top-left (x, y) in level-0 pixels: what Encoder
        and Run.predict take. ``.permute(1, 2, 0).numpy()`` gives the (height, width, 3) array of OpenSlide."""
        return self._core.read_region(x, y, level, width, height).permute(2, 0, 1)

    def __repr__(self) -> str:
        return f"tessera.Slide({self.path!r}, dimensions={self.dimensions}, levels={len(self.levels)})"


@_pythonic
def open_slide(path: PathLike, backend: str = "auto") -> Slide:
    """Opens a slide: backend auto (OpenSlide when it recognises the file, else libvips) | openslide | vips."""
    return Slide(path, backend)


def _grid_keywords(patch: Optional[int], stride: int, level: int, mpp: float, tissue: str, min_tissue: float,
                   annotations: Optional[PathLike]) -> Dict[str, Any]:
    keywords: Dict[str, Any] = {"stride": stride, "level": level, "mpp": mpp, "tissue": tissue, "min_tissue": min_tissue}
    if patch is not None:
        keywords["patch"] = patch
    if annotations is not None:
        keywords["annotations"] = os.fspath(annotations)
    return keywords


@_pythonic
def tissue_grid(slide: Union[Slide, PathLike], patch: int = 256, stride: int = 0, level: int = 0, mpp: float = 0,
                tissue: str = "otsu", min_tissue: float = 0.5, annotations: Optional[PathLike] = None) -> torch.Tensor:
    """The slide's tissue patches as level-0 top-left corners (N, 2) int64 (x, y), row-major, as
    ``tessera preprocess`` finds them: a patch x patch grid at `level` (or resampled to `mpp` um/px) with
    step `stride` (0: the patch), kept when at least `min_tissue` of it is tissue (otsu | saturation).
    annotations: a QuPath GeoJSON file; then only patches at least half inside its regions (outside holes
    and "Exclude" / "Ignore*" regions) are kept."""
    if not isinstance(slide, Slide):
        slide = open_slide(slide)
    coords, _, _ = _core.tissue_grid(slide._core, os.fspath(annotations) if annotations is not None else "",
                                     _grid_keywords(patch, stride, level, mpp, tissue, min_tissue, None))
    return coords


@_pythonic
def preprocess(manifest: PathLike, out: PathLike, patch: int = 256, stride: int = 0, level: int = 0, mpp: float = 0,
               tissue: str = "otsu", min_tissue: float = 0.5, annotations: Optional[PathLike] = None, backend: str = "auto",
               workers: int = 2, thumbnail: int = 1024, skip_errors: bool = False) -> List[dict]:
    """``tessera preprocess``: tissue patch coordinates for every slide of a manifest into the cache folder
    `out` (use it as slide.cache_dir), with thumbnails and a summary; resumable. annotations: a folder of
    QuPath GeoJSON exports <slide id>.geojson. Returns one dict per slide (id, slide, status, patches,
    seconds, reason)."""
    return list(_core.preprocess(os.fspath(manifest), os.fspath(out), backend, workers, thumbnail, skip_errors,
                                 _grid_keywords(patch, stride, level, mpp, tissue, min_tissue, annotations)))


@_pythonic
def extract_features(manifest: PathLike, out: PathLike, encoder: PathLike = "resnet50", weights: Optional[PathLike] = None,
                     encoder_args: Optional[Mapping[str, Any]] = None, run: Optional[PathLike] = None,
                     cache_dir: Optional[PathLike] = None, patch: Optional[int] = None, stride: int = 0, level: int = 0,
                     mpp: float = 0, tissue: str = "otsu", min_tissue: float = 0.5, annotations: Optional[PathLike] = None,
                     precision: str = "fp32", batch: int = 64, threads: int = 0, skip_errors: bool = False) -> dict:
    """``tessera extract-features``: one HDF5 feature bag <id>.h5 per slide in `out` (features + coords, the
    CLAM/TRIDENT layout) with a frozen encoder (a registered name or a model folder, or the encoder of
    a tessera run); slides whose bag exists are skipped. patch None: the encoder's input size. Returns
    {written, existing, patches, seconds, failed}."""
    return dict(_core.extract_features(
        os.fspath(manifest), os.fspath(out), os.fspath(encoder), json.dumps(dict(encoder_args)) if encoder_args else "",
        os.fspath(weights) if weights is not None else "", os.fspath(run) if run is not None else "",
        os.fspath(cache_dir) if cache_dir is not None else "", precision, batch, threads, skip_errors,
        _grid_keywords(patch, stride, level, mpp, tissue, min_tissue, annotations)))
