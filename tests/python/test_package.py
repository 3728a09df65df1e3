"""The Python package against the command line it wraps: training, metrics, prediction, encoders, slides,
errors and the example. Run by ctest (python.pytest) with PYTHONPATH=build/python and TESSERA_CLI set."""
import json
import os
import pathlib
import runpy
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

import tessera

CLI = os.environ.get("TESSERA_CLI", "build/tessera")
ROOT = pathlib.Path(__file__).resolve().parents[2]


def write_fake_mnist(folder: pathlib.Path, per_class: int = 6) -> str:
    """MNIST-format IDX files whose digit d is a bar at a class-dependent row (as tests/helpers.h writes)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = per_class * 10
    images = np.zeros((n, 28, 28), np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    for i in range(n):
        d = i % 10
        images[i, 4 + 2 * d:8 + 2 * d, 4:24] = 255
        images[i, 26, i % 28] = 128
    for prefix in ("train", "t10k"):
        with open(folder / f"{prefix}-images-idx3-ubyte", "wb") as f:
            f.write(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        with open(folder / f"{prefix}-labels-idx1-ubyte", "wb") as f:
            f.write(struct.pack(">II", 0x801, n) + labels.tobytes())
    return str(folder)


def cli(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([CLI, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


TINY = {
    "data.dataset": "scattered_mnist", "data.height": 56, "data.width": 56, "data.digit_size": 28,
    "data.patch": 28, "data.stride": 14, "data.train_size": 12, "data.test_size": 6, "data.workers": 0,
    "model.width": 8, "model.heads": 2, "model.d_k": 8, "model.d_inner": 16,
    "ips.M": 3, "ips.I": 3, "train.batch_size": 4, "train.warmup_epochs": 0, "train.threads": 1,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny IPS run trained from Python, with the records on_epoch saw."""
    tmp = tmp_path_factory.mktemp("run")
    mnist = write_fake_mnist(tmp / "mnist")
    seen = []
    run = tessera.train(run_dir=tmp / "run", overrides=dict(TINY, **{"data.mnist_dir": mnist}), train__epochs=2,
                        on_epoch=seen.append, progress=False)
    return run, seen, tmp, mnist


def test_train_returns_the_run_and_its_metrics(trained):
    run, seen, tmp, _ = trained
    assert isinstance(run, tessera.Run)
    assert [r["epoch"] for r in run.metrics] == [1, 2]
    assert seen == run.metrics  # on_epoch got each record as metrics.jsonl holds it
    assert "test" in run.metrics[-1] and run.metrics[-1]["test"]["samples"] == 6
    assert run.spec["method"] == "ips" and run.spec["tasks"][0]["name"] == "digit"
    assert "M: 3" in run.config
    assert tessera.open_run(tmp / "run").metrics == run.metrics


def test_predict_equals_the_command_line(trained):
    run, _, tmp, mnist = trained
    cli("export-data", "--data.dataset", "scattered_mnist", "--data.mnist_dir", mnist, "--data.height", "56",
        "--data.width", "56", "--data.digit_size", "28", "--count", "2", "--out", str(tmp / "images"))
    image = tmp / "images" / "test_00001.png"
    cli("predict", "--run", str(tmp / "run"), "--image", str(image), "--out", str(tmp / "predict"))
    expected = json.loads((tmp / "predict" / "prediction.json").read_text())
    got = run.predict(image)
    assert got.predicted == expected["predicted"]
    for task, values in expected["outputs"].items():
        assert torch.allclose(got.outputs[task], torch.tensor(values), atol=1e-6)
    assert len(expected["patches"]) == got.scores.numel() == 3
    for k, patch in enumerate(expected["patches"]):
        assert (got.rows[k].item(), got.cols[k].item()) == (patch["row"], patch["col"])
        assert abs(got.scores[k].item() - patch["score"]) < 1e-6
    # a tensor (C, H, W) in [0, 1] predicts the same as its file
    from_tensor = run.predict(got.picture.clone())
    assert torch.allclose(from_tensor.outputs["digit"], got.outputs["digit"], atol=1e-6)
    picture = got.draw()
    assert picture.shape[0] == 3 and picture.shape[1:] == got.picture.shape[1:]
    assert "tensor" not in repr(got) and len(repr(got)) < 200, repr(got)


def test_checkpoints_open_in_pytorch_without_tessera(trained):
    """A checkpoint is a torch.save dict: its model entry is a state dict PyTorch loads by itself."""
    run, _, tmp, _ = trained
    checkpoint = torch.load(tmp / "run" / "checkpoint.pt")
    assert checkpoint["format_version"] == 3 and checkpoint["state"]["epoch"] == 2
    assert json.loads(checkpoint["spec"])["method"] == "ips"
    model = checkpoint["model"]
    assert all(isinstance(t, torch.Tensor) for t in model.values()) and len(model) > 10
    assert set(checkpoint["optimizer"]["state"]) <= set(model)  # AdamW moments, by parameter name
    name = next(iter(checkpoint["optimizer"]["state"]))
    assert checkpoint["optimizer"]["state"][name]["exp_avg"].shape == model[name].shape


def test_evaluate_and_report(trained):
    run, _, tmp, _ = trained
    result = run.evaluate(threads=1)
    assert result["samples"] == 6
    assert result["digit"]["accuracy"] == pytest.approx(run.metrics[-1]["test"]["digit"]["accuracy"])
    path = run.report(tmp / "report.html")
    assert pathlib.Path(path).read_text().count("<svg") >= 1


def test_calls_leave_torchs_thread_count_as_they_found_it(trained):
    """A call sets torch's thread count for itself only (train.threads, threads=): the caller's is back after it."""
    run, _, tmp, mnist = trained
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        run.evaluate(threads=1)
        assert torch.get_num_threads() == 3
        run.report(tmp / "threads-report.html")  # threads 0: all cores, for the call
        assert torch.get_num_threads() == 3
        tessera.train(run_dir=tmp / "threads-run", overrides=dict(TINY, **{"data.mnist_dir": mnist}), train__epochs=1,
                      progress=False)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_encoder_equals_tessera_embed(tmp_path):
    args = {"img_size": 32, "patch_size": 16, "embed_dim": 32, "depth": 1, "num_heads": 2}
    folder = tmp_path / "vit"
    cli("export-encoder", "--encoder", "vit_small_patch16_224", "--encoder-args", json.dumps(args), "--out", str(folder))
    mnist = write_fake_mnist(tmp_path / "mnist")
    cli("export-data", "--data.dataset", "tissue_tiles", "--data.mnist_dir", mnist, "--data.height", "32",
        "--data.width", "32", "--data.digit_size", "28", "--slide.level", "0", "--data.patch", "16", "--count", "2", "--out",
        str(tmp_path / "images"))  # RGB tiles
    images = [str(tmp_path / "images" / f"test_0000{i}.png") for i in range(2)]
    cli("embed", "--encoder", str(folder), "--images", *images, "--out", str(tmp_path / "f.npy"), "--threads", "1")
    expected = torch.from_numpy(np.load(tmp_path / "f.npy"))
    encoder = tessera.Encoder(folder)
    assert encoder.num_features == 32
    batch = torch.stack([tessera.read_image(p) for p in images])  # float (2, 3, 32, 32) in [0, 1]
    features = encoder(batch)
    assert features.shape == (2, 32) and features.dtype == torch.float32
    assert torch.allclose(features, expected, atol=1e-5)
    uint8 = (batch * 255).round().to(torch.uint8)
    assert torch.allclose(encoder(uint8), expected, atol=1e-5)
    # normalize=False feeds the batch as it is: the encoder's own normalisation by hand gives the same
    mean = torch.tensor(encoder.spec["preprocessing"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(encoder.spec["preprocessing"]["std"]).view(1, 3, 1, 1)
    assert torch.allclose(encoder((batch - mean) / std, normalize=False), expected, atol=1e-5)
    # numpy arrays, single images and lists of images (as read_region and PIL give them) encode the same
    assert torch.allclose(encoder(uint8.numpy()), expected, atol=1e-5)
    assert torch.allclose(encoder(uint8[0]), expected[:1], atol=1e-5)
    assert torch.allclose(encoder([uint8[0].permute(1, 2, 0).numpy(), uint8[1]]), expected, atol=1e-5)
    with pytest.raises(TypeError, match="images must be a torch.Tensor or a numpy array"):
        encoder("a.png")
    assert len(repr(encoder)) < 200


def test_slide_read_region_equals_the_full_image(tmp_path):
    mnist = write_fake_mnist(tmp_path / "mnist")
    cli("make-slides", "--out", str(tmp_path / "slides"), "--mnist-dir", mnist, "--count", "2", "--test-count", "0",
        "--width", "512", "--height", "512", "--digits", "1", "--digit-scale", "2", "--compression", "none")
    path = tmp_path / "slides" / "slide_000.tif"
    whole = (tessera.read_image(str(path)) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    for backend in ("vips", "openslide"):
        slide = tessera.open_slide(path, backend=backend)
        assert slide.dimensions == (512, 512)
        assert slide.levels[0] == (512, 512, 1.0) and len(slide.levels) >= 2
        region = slide.read_region(100, 60, 0, 64, 48)  # what Encoder and Run.predict take: (3, H, W) uint8
        assert isinstance(region, torch.Tensor) and region.shape == (3, 48, 64) and region.dtype == torch.uint8
        assert np.array_equal(region.permute(1, 2, 0).numpy(), whole[60:108, 100:164]), backend


def test_slides_from_python_equal_the_command_line(tmp_path):
    mnist = write_fake_mnist(tmp_path / "mnist")
    slides = tmp_path / "slides"
    cli("make-slides", "--out", str(slides), "--mnist-dir", mnist, "--count", "4", "--test-count", "2", "--width", "512",
        "--height", "512", "--digits", "2", "--digit-scale", "2")
    manifest = slides / "manifest.csv"
    rows = tessera.preprocess(manifest, tmp_path / "cache", patch=64, workers=1, thumbnail=0)
    assert [r["status"] for r in rows] == ["done"] * 6 and all(r["patches"] > 0 for r in rows)
    assert [r["status"] for r in tessera.preprocess(manifest, tmp_path / "cache", patch=64, workers=1)] == ["cached"] * 6
    run = tessera.train(run_dir=tmp_path / "run", progress=False, overrides={
        "data.dataset": "slides", "data.manifest": str(manifest), "data.patch": 64, "data.stride": 64,
        "slide.cache_dir": str(tmp_path / "cache"), "model.in_channels": 3, "model.width": 8, "model.heads": 2,
        "model.d_k": 8, "model.d_inner": 16, "model.pos_enc": "false", "ips.M": 3, "ips.I": 8, "ips.loading": "lazy",
        "train.epochs": 1, "train.batch_size": 2, "train.threads": 1, "data.workers": 0})
    slide = slides / "slide_001.tif"
    cli("predict", "--run", str(tmp_path / "run"), "--slide", str(slide), "--geojson", "--out", str(tmp_path / "pred"))
    expected = json.loads((tmp_path / "pred" / "prediction.json").read_text())
    got = run.predict(slide, geojson=tmp_path / "scores.geojson")
    assert isinstance(got, tessera.SlidePrediction)
    assert got.predicted == expected["predicted"] and got.record["patches"] == expected["patches"] == got.scores.numel()
    for task, values in expected["outputs"].items():
        assert torch.allclose(got.outputs[task], torch.tensor(values), atol=1e-6)
    table = np.loadtxt(tmp_path / "pred" / "scores.csv", delimiter=",", skiprows=1)  # x,y,score,selected
    assert torch.equal(got.coords, torch.from_numpy(table[:, :2]).long())
    assert torch.allclose(got.scores, torch.from_numpy(table[:, 2]).float(), atol=1e-6)
    assert torch.equal(got.selected, torch.from_numpy(table[:, 3]).bool()) and got.selected.sum() == 3
    ours = json.loads((tmp_path / "scores.geojson").read_text())
    theirs = json.loads((tmp_path / "pred" / "scores.geojson").read_text())
    assert len(ours["features"]) == len(theirs["features"]) == got.scores.numel()
    assert ours["properties"] == theirs["properties"] == {"predicted": expected["predicted"]}
    assert len(repr(got)) < 200
    for a, b in zip(ours["features"], theirs["features"]):
        assert a["geometry"] == b["geometry"]
        assert a["properties"].get("classification") == b["properties"].get("classification")
        assert a["properties"]["measurements"]["attention"] == pytest.approx(b["properties"]["measurements"]["attention"], abs=1e-6)
    assert got.draw(256).shape == (3, 256, 256)
    # tissue_grid is the grid predict scored; with a region it keeps the patches inside it
    assert torch.equal(tessera.tissue_grid(slide, patch=64), got.coords)
    region = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"objectType": "annotation"},
              "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [256, 0], [256, 256], [0, 256], [0, 0]]]}}]}
    (tmp_path / "region.geojson").write_text(json.dumps(region))
    inside = tessera.tissue_grid(tessera.open_slide(slide), patch=64, annotations=tmp_path / "region.geojson")
    keep = (got.coords[:, 0] + 64 <= 256) & (got.coords[:, 1] + 64 <= 256)
    assert inside.shape[0] > 0 and torch.equal(inside, got.coords[keep])
    # feature bags with the run's encoder, resumable
    summary = tessera.extract_features(manifest, tmp_path / "bags", run=tmp_path / "run", cache_dir=tmp_path / "cache",
                                       threads=1)
    assert summary["written"] == 6 and summary["failed"] == []
    assert tessera.extract_features(manifest, tmp_path / "bags", run=tmp_path / "run", cache_dir=tmp_path / "cache",
                                    threads=1)["existing"] == 6
    with pytest.raises(tessera.Error, match="trained on slides"):
        run.predict(torch.zeros(3, 64, 64))


def test_ctrl_c_stops_preprocessing_between_slides(tmp_path):
    """SIGINT during tessera.preprocess (sent once the first slide's coordinates are written) raises
    KeyboardInterrupt once the slides in progress finish; the slides done are kept and a second call does
    the rest."""
    import signal
    import threading
    import time
    mnist = write_fake_mnist(tmp_path / "mnist")
    cli("make-slides", "--out", str(tmp_path / "slides"), "--mnist-dir", mnist, "--count", "2", "--test-count", "0",
        "--width", "1024", "--height", "1024", "--digits", "1")
    rows = "".join(f"{i},slide_000.tif,0\n" for i in range(1000))  # one slide under 1000 ids: seconds of work
    manifest = tmp_path / "slides" / "many.csv"
    manifest.write_text("id,slide,label\n" + rows)
    coords = tmp_path / "cache" / "coords"

    def interrupt_after_the_first_slide():
        while not (coords.is_dir() and any(coords.glob("*.h5"))):
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=interrupt_after_the_first_slide)
    watcher.start()
    with pytest.raises(KeyboardInterrupt):
        tessera.preprocess(manifest, tmp_path / "cache", patch=64, workers=1, thumbnail=0)
    watcher.join()
    done = len(list(coords.glob("*.h5")))
    assert 0 < done < 1000
    rows = tessera.preprocess(manifest, tmp_path / "cache", patch=64, workers=2, thumbnail=0)
    assert sum(r["status"] == "cached" for r in rows) == done and len(rows) == 1000


def test_errors_carry_the_message(tmp_path):
    with pytest.raises(tessera.Error, match="nothing-here") as error:
        tessera.open_run(tmp_path / "nothing-here")
    assert isinstance(error.value, ValueError)
    with pytest.raises(tessera.Error, match="data.dataset"):
        tessera.train(run_dir=tmp_path / "bad", data__dataset="no_such_set", progress=False)
    with pytest.raises(TypeError, match=r"Encoder: images has shape \(32, 32\)"):
        tessera.Encoder("vit_small_patch16_224", args={"img_size": 32, "depth": 1})(torch.zeros(32, 32))
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()
    # Unknown keys get the nearest names; messages name Python's keywords, not the command line's flags.
    with pytest.raises(tessera.Error, match="did you mean train.epochs"):
        tessera.train(run_dir=tmp_path / "bad", train__epoch=1, progress=False)
    with pytest.raises(tessera.Error, match="resume= given but") as error:
        tessera.train(run_dir=tmp_path / "never-trained", resume=True, progress=False)
    assert "--" not in str(error.value)
    # A budget failure is its own class (still a tessera.Error) and names what to change.
    mnist = write_fake_mnist(tmp_path / "mnist")
    with pytest.raises(tessera.BudgetExceeded, match="raise train.memory_budget"):
        tessera.train(run_dir=tmp_path / "small", overrides=dict(TINY, **{"data.mnist_dir": mnist}),
                      train__memory_budget="64KiB", progress=False)
    assert issubclass(tessera.BudgetExceeded, tessera.Error)


def test_the_example_notebook_runs(tmp_path, monkeypatch):
    mnist = write_fake_mnist(tmp_path / "mnist")
    monkeypatch.setenv("TESSERA_EXAMPLE_MNIST", mnist)
    monkeypatch.setenv("TESSERA_EXAMPLE_OUT", str(tmp_path / "example"))
    monkeypatch.setenv("TESSERA_EXAMPLE_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    runpy.run_path(str(ROOT / "examples" / "notebook.py"), run_name="__main__")
    assert (tmp_path / "example" / "learning-curve.png").stat().st_size > 1000
    assert (tmp_path / "example" / "selection.png").stat().st_size > 1000


def test_traffic_signs_script_keeps_the_references_images_and_labels(tmp_path):
    """A hand-made STS layout: each line's expected class (or drop) follows the IPS reference's filter."""
    lines = {
        "Set1": [
            "a.jpg:",                                                                   # no sign: 0
            "b.jpg:VISIBLE, 100, 60, 80, 40, PROHIBITORY, 70_SIGN;",                    # 2
            "c.jpg:VISIBLE, 10, 10, 5, 5, OTHER, PEDESTRIAN_CROSSING;",                 # only other signs: dropped
            "d.jpg:BLURRED, 100, 100, 0, 0, PROHIBITORY, 50_SIGN;VISIBLE, 30, 30, 20, 20, PROHIBITORY, 80_SIGN;",  # 3
            "e.jpg:OCCLUDED, 100, 100, 0, 0, PROHIBITORY, 50_SIGN;",                    # limit not visible: dropped
            "f.jpg:MISC_SIGNS;",                                                        # MISC ignored -> no sign: 0
        ],
        "Set2": [
            "g.jpg:VISIBLE, 20, 20, 10, 10, PROHIBITORY, 50_SIGN;VISIBLE, 90, 90, 10, 10, PROHIBITORY, 80_SIGN;",  # larger: 3
            "h.jpg:SIDE_ROAD, 90, 90, 10, 10, PROHIBITORY, 50_SIGN;",                   # dropped
        ],
    }
    for folder, rows in lines.items():
        (tmp_path / "sts" / folder).mkdir(parents=True)
        (tmp_path / "sts" / folder / "annotations.txt").write_text("\n".join(rows) + "\n")
        for row in rows:
            image = torch.rand(3, 24, 32)  # a stand-in photo (the real ones are 1280 x 960)
            tessera.write_png(tmp_path / "sts" / folder / row.split(":")[0], image)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "traffic-signs.py"), "--sts", str(tmp_path / "sts"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    train = (tmp_path / "out" / "train.csv").read_text().split()
    test = (tmp_path / "out" / "test.csv").read_text().split()
    assert train == ["path,label", "images/Set1/a.png,0", "images/Set1/b.png,2", "images/Set1/d.png,3",
                     "images/Set1/f.png,0"]
    assert test == ["path,label", "images/Set2/g.png,3"]
    resized = tessera.read_image(tmp_path / "out" / "images" / "Set1" / "b.png")
    assert resized.shape == (3, 1200, 1600)


def test_pip_installs_the_package_into_a_virtual_environment(tmp_path):
    """pip install --no-build-isolation . into a venv that sees Debian's torch, as docs/guide/python.md says."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-build-isolation", "--no-index", "--quiet", str(ROOT)],
                          capture_output=True, text=True, env=dict(os.environ, TESSERA_BUILD_DIR=os.environ.get("TESSERA_BUILD_DIR", str(ROOT / "build"))))
    assert done.returncode == 0, done.stderr[-3000:]
    check = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import tessera, sys; print(tessera.__version__); print(tessera.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path,
                           # a clean environment, but a sanitizer build's preloaded runtime (make test-asan) stays
                           env={k: v for k, v in os.environ.items() if k in ("PATH", "LD_PRELOAD", "ASAN_OPTIONS")})
    assert check.returncode == 0, check.stderr
    version, location = check.stdout.split()
    assert version == tessera.__version__
    assert location.startswith(str(venv))
