"""Writes reference-format models, configs, inputs and expected outputs for the import tests into argv[1].

argv[2] picks the set:
  "ips"     -- IPSNet as the IPS reference code builds it (docs/methods.md): encoder Sequential, transf.crs_attn /
               transf.mlp, output_layers.<task>.0, one query token per task id; three settings beyond the
               shared fixture's (one RGB softmax task on a 4-stage ResNet-18 with D_v != D_k and no
               positional encoding, saved with storages tagged cuda:0; three tasks listed out of id order
               on a 2-stage 1-channel ResNet-50 with positional encoding; the is_image False projector).
  "patchgd" -- the PatchGD reference's checkpoint dict (model1_weights: Backbone = torchvision ResNet-50
               under encoder. with fc -> Linear(2048, latent); model2_weights: CNN_Block) for the head
               variants "smaller" and "larger", and the reference's prediction, whose latent grid is
               filled transposed (Z[:, :, j, i] for the patch at row i, column j).
Expected outputs come from eval mode with shuffling off, as tessera's predict runs.
"""
import math
import sys

import torch
import torch.nn as nn
import torchvision

out, which = sys.argv[1], sys.argv[2]
torch.manual_seed(0)


def randomise(model):
    with torch.no_grad():  # non-trivial statistics and affine parameters
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)


def save_on_gpu(obj, path):
    """torch.save with every storage tagged cuda:0, as a state dict saved on a GPU machine is."""
    original = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: "cuda:0"
    try:
        torch.save(obj, path)
    finally:
        torch.serialization.location_tag = original


# ---------------------------------------------------------------- IPS reference (the authors' ips code)
class CrossAttention(nn.Module):
    def __init__(self, n_token, H, D, D_k, D_v, attn_dropout, dropout):
        super().__init__()
        self.n_token, self.H, self.D_k, self.D_v = n_token, H, D_k, D_v
        self.q = nn.Parameter(torch.empty((1, n_token, D)))
        bound = math.sqrt(1 / D_k)
        nn.init.uniform_(self.q, -bound, bound)
        self.q_w = nn.Linear(D, H * D_k, bias=False)
        self.k_w = nn.Linear(D, H * D_k, bias=False)
        self.v_w = nn.Linear(D, H * D_v, bias=False)
        self.fc = nn.Linear(H * D_v, D, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.layer_norm = nn.LayerNorm(D, eps=1e-6)

    def attention(self, x):
        B, L, _ = x.shape
        q = self.q_w(self.q).view(1, self.n_token, self.H, self.D_k).transpose(1, 2)
        k = self.k_w(x).view(B, L, self.H, self.D_k).transpose(1, 2)
        return torch.softmax(torch.matmul(q / self.D_k ** 0.5, k.transpose(2, 3)), dim=-1)

    def forward(self, x):
        B, L, _ = x.shape
        attn = self.attention(x)
        v = self.v_w(x).view(B, L, self.H, self.D_v).transpose(1, 2)
        o = torch.matmul(self.attn_dropout(attn), v).transpose(1, 2).contiguous().view(B, self.n_token, -1)
        return self.layer_norm(self.dropout(self.fc(o)) + self.q)


class MLP(nn.Module):
    def __init__(self, D, D_inner, dropout):
        super().__init__()
        self.w_1 = nn.Linear(D, D_inner)
        self.w_2 = nn.Linear(D_inner, D)
        self.layer_norm = nn.LayerNorm(D, eps=1e-6)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.layer_norm(self.dropout(self.w_2(torch.relu(self.w_1(x)))) + x)


class Transformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.crs_attn = CrossAttention(c["n_token"], c["H"], c["D"], c["D_k"], c["D_v"], c["attn_dropout"], c["dropout"])
        self.mlp = MLP(c["D"], c["D_inner"], c["dropout"])

    def forward(self, x):
        return self.mlp(self.crs_attn(x))


def positional(idx, D):
    div = torch.exp(torch.arange(0, D, 2).float() * (-math.log(10000.0) / D))
    angle = idx.float().unsqueeze(-1) * div
    return torch.stack([torch.sin(angle), torch.cos(angle)], -1).flatten(-2)


class IPSNet(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        if c["is_image"]:
            res = getattr(torchvision.models, c["enc_type"])()
            if c["n_chan_in"] == 1:
                res.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
            layers = [res.conv1, res.bn1, res.relu, res.maxpool, res.layer1, res.layer2]
            if c["n_res_blocks"] == 4:
                layers += [res.layer3, res.layer4]
            layers.append(nn.AdaptiveAvgPool2d(1))
            self.encoder = nn.Sequential(*layers)
        else:
            self.encoder = nn.Sequential(nn.LayerNorm(c["n_chan_in"], elementwise_affine=False),
                                         nn.Linear(c["n_chan_in"], c["D"]), nn.BatchNorm1d(c["D"]), nn.ReLU())
        self.transf = Transformer(c)
        self.output_layers = nn.ModuleDict()
        for t in c["tasks"].values():
            act = nn.Softmax(dim=-1) if t["act_fn"] == "softmax" else nn.Sigmoid()
            self.output_layers[t["name"]] = nn.Sequential(nn.Linear(c["D"], c["n_class"]), act)

    def encode(self, x):
        return self.encoder(x).reshape(x.shape[0], -1)

    def with_pos(self, emb, idx):
        return emb + positional(idx, self.c["D"]) if self.c["use_pos"] else emb

    @torch.no_grad()
    def select(self, patches):  # (B, N, ...) -> (B, M) indices, eval mode, no shuffling
        B, N = patches.shape[:2]
        M, I = self.c["M"], self.c["I"]
        if M >= N:
            return torch.arange(N).expand(B, N)
        flat = lambda p: p.reshape(-1, *p.shape[2:])
        mem_emb = self.encode(flat(patches[:, :M])).view(B, M, -1)
        mem_idx = torch.arange(M).expand(B, M)
        for s in range(M, N, I):
            e = min(s + I, N)
            emb = torch.cat([mem_emb, self.encode(flat(patches[:, s:e])).view(B, e - s, -1)], 1)
            idx = torch.cat([mem_idx, torch.arange(s, e).expand(B, e - s)], 1)
            scores = self.transf.crs_attn.attention(self.with_pos(emb, idx)).mean(1).mean(1)
            top = torch.topk(scores, M, dim=-1)[1]
            mem_emb = torch.gather(emb, 1, top.unsqueeze(-1).expand(-1, -1, emb.shape[-1]))
            mem_idx = torch.gather(idx, 1, top)
        return mem_idx

    @torch.no_grad()
    def predict(self, patches):
        idx = self.select(patches)
        B, L = idx.shape
        chosen = torch.stack([patches[b, idx[b]] for b in range(B)])
        emb = self.encode(chosen.reshape(-1, *chosen.shape[2:])).view(B, L, -1)
        z = self.transf(self.with_pos(emb, idx))
        return {t["name"]: self.output_layers[t["name"]](z[:, t["id"]]) for t in self.c["tasks"].values()}


def grid_patches(image, p, s):  # (C, H, W) -> (N, C, p, p), row-major
    C = image.shape[0]
    u = image.unfold(1, p, s).unfold(2, p, s)  # (C, rows, cols, p, p)
    return u.permute(1, 2, 0, 3, 4).reshape(-1, C, p, p)


def yaml_text(c):
    lines = []
    for k, v in c.items():
        if k == "tasks":
            lines.append("tasks:")
            for key, t in v.items():
                lines.append(f"  {key}:")
                for tk, tv in t.items():
                    lines.append(f"    {tk}: {tv}")
        elif isinstance(v, (list, tuple)):
            lines.append(f"{k}: [{', '.join(str(x) for x in v)}]")
        else:
            lines.append(f"{k}: {v}")
    return "\n".join(lines) + "\n"


def base_config(**over):
    c = dict(n_epoch=150, B=16, B_seq=16, n_epoch_warmup=10, lr=0.001, wd=0.1, eager=True, pretrained=False,
             shuffle=False, shuffle_style="batch", attn_dropout=0.1, dropout=0.1, seed=0)
    c.update(over)
    return c


def ips_case(name, c, inputs, gpu=False):
    model = IPSNet(c)
    randomise(model)
    model.eval()
    with open(f"{out}/{name}.yml", "w") as f:
        f.write(yaml_text(c))
    (save_on_gpu if gpu else torch.save)(model.state_dict(), f"{out}/{name}.pt")
    if c["is_image"]:
        side = lambda v: v[0] if isinstance(v, list) else v
        patches = grid_patches(inputs, side(c["patch_size"]), side(c["patch_stride"])).unsqueeze(0)
    else:
        patches = inputs.unsqueeze(0)
    preds = model.predict(patches)
    torch.save({"input": inputs, "outputs": preds}, f"{out}/{name}_expected.pt")


if which == "ips":
    # One RGB softmax task (the traffic-sign setting), D_v != D_k, no positional encoding, saved on a GPU.
    sign = base_config(tasks={"task0": {"id": 0, "name": "sign", "act_fn": "softmax", "metric": "accuracy"}},
                       n_class=4, enc_type="resnet18", n_chan_in=3, n_res_blocks=4, is_image=True, use_pos=False,
                       n_token=1, N=20, M=4, I=8, patch_size=32, patch_stride=32, H=2, D=512, D_k=16, D_v=32,
                       D_inner=64)
    ips_case("ips_sign", sign, torch.rand(3, 128, 160), gpu=True)
    # Three tasks listed out of id order, sigmoid among them, 1-channel 2-stage ResNet-50, positions on.
    multi = base_config(tasks={"task0": {"id": 1, "name": "present", "act_fn": "sigmoid", "metric": "multilabel_accuracy"},
                               "task1": {"id": 0, "name": "count", "act_fn": "softmax", "metric": "accuracy"},
                               "task2": {"id": 2, "name": "corner", "act_fn": "softmax", "metric": "accuracy"}},
                        n_class=5, enc_type="resnet50", n_chan_in=1, n_res_blocks=2, is_image=True, use_pos=True,
                        n_token=3, N=25, M=6, I=5, patch_size=[24, 24], patch_stride=[24, 24], H=4, D=512, D_k=8,
                        D_v=8, D_inner=32, B_seq=1)
    ips_case("ips_multi", multi, torch.rand(1, 120, 120))
    # The CAMELYON16 feature-bag model: is_image False, one sigmoid output.
    feats = base_config(tasks={"task0": {"id": 0, "name": "metastases", "act_fn": "sigmoid", "metric": "auc"}},
                        n_class=1, enc_type="resnet18", n_chan_in=64, n_res_blocks=4, is_image=False, use_pos=False,
                        n_token=1, N=50, M=5, I=10, patch_size=256, patch_stride=256, H=2, D=32, D_k=8, D_v=8,
                        D_inner=64, B_seq=1)
    ips_case("ips_features", feats, torch.randn(50, 64))


# ---------------------------------------------------------------- PatchGD reference
class Backbone(nn.Module):
    def __init__(self, latent):
        super().__init__()
        self.encoder = torchvision.models.resnet50()
        self.encoder.fc = nn.Linear(2048, latent)

    def forward(self, x):
        return self.encoder(x)


class CNN_Block(nn.Module):
    def __init__(self, latent, classes, n, same, reductions, feature=256):
        super().__init__()
        blocks, channels = [], latent
        for stride in [1] * same + [2] * reductions:
            blocks.append(nn.Sequential(nn.Conv2d(channels, feature, 3, stride, 1), nn.ReLU(), nn.BatchNorm2d(feature),
                                        nn.Dropout2d(0.2)))
            channels = feature
        for _ in range(reductions):
            n = (n + 1) // 2
        self.layers = nn.Sequential(*blocks)
        self.linear = nn.Linear(feature * n * n, classes)

    def forward(self, z):
        return self.linear(torch.flatten(self.layers(z), 1))


if which == "patchgd":
    latent, classes, side, patch = 16, 5, 128, 32
    n = side // patch
    backbone = Backbone(latent)
    randomise(backbone)
    backbone.eval()
    image = torch.rand(3, side, side)
    with torch.no_grad():
        z = torch.zeros(1, latent, n, n)
        for i in range(n):
            for j in range(n):
                z[:, :, j, i] = backbone(image[None, :, i * patch:(i + 1) * patch, j * patch:(j + 1) * patch])
    for variant, same, reductions in [("smaller", 0, 3), ("larger", 1, 4)]:
        head = CNN_Block(latent, classes, n, same, reductions)
        randomise(head)
        head.eval()
        with torch.no_grad():
            probs = torch.softmax(head(z), 1)[0]
        save_on_gpu({"model1_weights": backbone.state_dict(), "model2_weights": head.state_dict(),
                     "optimizer_state": {}, "epoch": 3}, f"{out}/patchgd_{variant}.pt")
        torch.save({"image": image, "probs": probs}, f"{out}/patchgd_{variant}_expected.pt")
