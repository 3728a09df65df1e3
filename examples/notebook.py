# tessera from Python: train the IPS demo, plot its learning curve, predict an image and show what the
# model looked at. Plain Python with `# %%` cells (VS Code, Jupyter's jupytext, Spyder run them one by
# one); CI runs it whole (tests/python/test_package.py). Needs the build's package on the path:
#   PYTHONPATH=build/python python3 examples/notebook.py
# TESSERA_EXAMPLE_MNIST (default data/mnist, fetched by scripts/get-mnist.sh when missing) and
# TESSERA_EXAMPLE_OUT (default runs/notebook) move its input and output; TESSERA_EXAMPLE_QUICK=1 trains
# on a few images (the test does).

# %% Train the demo for 2 epochs
import os
import subprocess

import matplotlib.pyplot as plt
import torch

import tessera

mnist = os.environ.get("TESSERA_EXAMPLE_MNIST", "data/mnist")
out = os.environ.get("TESSERA_EXAMPLE_OUT", "runs/notebook")
quick = os.environ.get("TESSERA_EXAMPLE_QUICK") == "1"
if not os.path.exists(os.path.join(mnist, "t10k-labels-idx1-ubyte")):
    subprocess.run(["bash", "scripts/get-mnist.sh", mnist], check=True)
os.makedirs(out, exist_ok=True)

sizes = {"data.train_size": 16, "data.test_size": 8, "train.eval_every": 1, "data.workers": 0} if quick else {}
run = tessera.train(config="configs/demo.yaml", run_dir=os.path.join(out, "run"),
                    overrides={"data.mnist_dir": mnist, **sizes}, train__epochs=2,
                    on_epoch=lambda r: print(f"epoch {r['epoch']}: train loss {r['train']['loss']:.3f}"))
print(run)

# %% The learning curve: training loss per epoch and the test accuracy of each task
epochs = [r["epoch"] for r in run.metrics]
figure, (loss, accuracy) = plt.subplots(1, 2, figsize=(9, 3.5))
loss.plot(epochs, [r["train"]["loss"] for r in run.metrics], marker="o", label="train")
loss.plot([r["epoch"] for r in run.metrics if "test" in r], [r["test"]["loss"] for r in run.metrics if "test" in r],
          marker="s", label="test")
loss.set(xlabel="epoch", ylabel="loss", title="loss")
loss.legend()
for task in run.spec["tasks"]:
    name = task["name"]
    points = [(r["epoch"], r["test"][name]) for r in run.metrics if "test" in r]
    metric = "accuracy" if "accuracy" in points[0][1] else next(iter(points[0][1]))
    accuracy.plot([e for e, _ in points], [m[metric] for _, m in points], marker="o", label=f"{name} {metric}")
accuracy.set(xlabel="epoch", title="test metrics", ylim=(0, 1))
accuracy.legend()
figure.tight_layout()
figure.savefig(os.path.join(out, "learning-curve.png"), dpi=100)

# %% Predict a test image, from a tensor (C, H, W) in [0, 1]
subprocess.run([os.environ.get("TESSERA_CLI", "build/tessera"), "export-data", "--config", "configs/demo.yaml",
                "--data.mnist_dir", mnist, "--count", "1", "--out", os.path.join(out, "images")], check=True)
image = tessera.read_image(os.path.join(out, "images", "test_00000.png"))
prediction = run.predict(image)
print({task: int(p.argmax()) for task, p in prediction.outputs.items() if prediction.outputs[task].numel() > 1})
print("selected patches (row, col, attention):",
      [(int(r), int(c), round(float(s), 3)) for r, c, s in zip(prediction.rows, prediction.cols, prediction.scores)])

# %% What the model looked at: the M selected patches, blue (low attention) to red (high)
picture = prediction.draw()
plt.figure(figsize=(4, 4))
plt.imshow(picture.permute(1, 2, 0).numpy())
plt.axis("off")
plt.title("IPS selection")
plt.savefig(os.path.join(out, "selection.png"), dpi=100, bbox_inches="tight")
