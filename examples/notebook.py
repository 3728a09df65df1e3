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

sizes = {"data.train_size": 16, "data.test_size": 8, "data.workers": 0} if quick else {}
run = tessera.train(config="configs/demo.yaml", run_dir=os.path.join(out, "run"),
                    overrides={"data.mnist_dir": mnist, "train.eval_every": 1, "train.log_every": 2 if quick else 10,
                               **sizes},
                    train__epochs=2,
                    on_epoch=lambda r: print(f"epoch {r['epoch']}: train loss {r['train']['loss']:.3f}"))
print(run)

# %% The learning curve: the training loss every few steps (steps.jsonl), the test loss and each task's
# test accuracy after each epoch (metrics.jsonl)
figure, (loss, accuracy) = plt.subplots(1, 2, figsize=(9, 3.5))
loss.plot([s["step"] for s in run.steps], [s["loss"] for s in run.steps], label="train (mean of the logged steps)")
tested = [r for r in run.metrics if "test" in r]
loss.plot([r["step"] for r in tested], [r["test"]["loss"] for r in tested], "s", label="test")
loss.set(xlabel="step", ylabel="loss", title="loss")
loss.legend()
for task in run.spec["tasks"]:
    name = task["name"]
    metric = "accuracy" if "accuracy" in tested[0]["test"][name] else next(iter(tested[0]["test"][name]))
    accuracy.plot([r["epoch"] for r in tested], [r["test"][name][metric] for r in tested], marker="o",
                  label=f"{name} {metric}")
accuracy.set(xlabel="epoch", title="test metrics", ylim=(0, 1), xticks=[r["epoch"] for r in tested])
accuracy.legend()
figure.tight_layout()
figure.savefig(os.path.join(out, "learning-curve.png"), dpi=100)

# %% Predict a test image, from a tensor (C, H, W) in [0, 1]
subprocess.run([os.environ.get("TESSERA_CLI", "build/tessera"), "export-data", "--config", "configs/demo.yaml",
                "--data.mnist_dir", mnist, "--count", "1", "--out", os.path.join(out, "images")], check=True)
image = tessera.read_image(os.path.join(out, "images", "test_00000.png"))
prediction = run.predict(image)
print("predicted:", prediction.predicted)
print("selected patches (row, col, attention):",
      [(int(r), int(c), round(float(s), 3)) for r, c, s in zip(prediction.rows, prediction.cols, prediction.scores)])

# %% What the model looked at: the M selected patches, blue (low attention) to red (high)
picture = prediction.draw()
plt.figure(figsize=(4, 4))
plt.imshow(picture.permute(1, 2, 0).numpy())
plt.axis("off")
plt.title("IPS selection")
plt.savefig(os.path.join(out, "selection.png"), dpi=100, bbox_inches="tight")
