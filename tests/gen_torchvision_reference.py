"""Writes torchvision ResNet state dicts and reference outputs for test_resnet.cpp into argv[1]."""
import sys

import torch
import torchvision

out = sys.argv[1]
torch.manual_seed(0)
for arch in ("resnet18", "resnet34", "resnet50"):
    model = getattr(torchvision.models, arch)()
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine parameters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = model(x)
    torch.save(model.state_dict(), f"{out}/{arch}_state.pt")
    torch.save({"x": x, "y": y}, f"{out}/{arch}_io.pt")
