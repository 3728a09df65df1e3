"""Writes torchvision state dicts and reference outputs for the C++ parity tests into argv[1].

argv[2] picks the set: "resnet" (ResNet-18/34/50 classifiers) or "patchgd" (PatchGD's backbones:
ResNet-50 with fc -> Linear(2048, 256), MobileNetV2 with classifier[1] -> Linear(1280, 256), and a
stock MobileNetV2 whose 1000-class head must be dropped when loaded into a 256-output backbone).
"""
import sys

import torch
import torchvision

out, which = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "resnet")
torch.manual_seed(0)


def randomise_batchnorm(model):
    with torch.no_grad():  # non-trivial statistics and affine parameters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)


def save(name, model, size):
    randomise_batchnorm(model)
    model.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        y = model(x)
    torch.save(model.state_dict(), f"{out}/{name}_state.pt")
    torch.save({"x": x, "y": y}, f"{out}/{name}_io.pt")


if which == "resnet":
    for arch in ("resnet18", "resnet34", "resnet50"):
        save(arch, getattr(torchvision.models, arch)(), 64)
else:
    r50 = torchvision.models.resnet50()
    r50.fc = torch.nn.Linear(2048, 256)
    save("resnet50_s256", r50, 64)
    mnv2 = torchvision.models.mobilenet_v2()
    mnv2.classifier[1] = torch.nn.Linear(1280, 256)
    save("mobilenet_v2_s256", mnv2, 64)
    stock = torchvision.models.mobilenet_v2()
    randomise_batchnorm(stock)
    torch.save(stock.state_dict(), f"{out}/mobilenet_v2_state.pt")
