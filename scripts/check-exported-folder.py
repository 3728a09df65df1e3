"""Checks that timm itself accepts folders written by `tessera export-encoder`: timm.create_model(architecture,
**model_args) + load_state_dict(strict=True); for folders named after a fixture of tests/fixtures/vit_reference,
also that timm's features on the fixture's images equal the fixture's expected features.

  PYTHONPATH=path/to/pytorch-image-models /usr/bin/python3 scripts/check-exported-folder.py FOLDER [FOLDER ...]
"""
import json, os, struct, sys, numpy as np, torch, timm
from timm.layers import SwiGLUPacked, SwiGLU
from PIL import Image
S = {'swiglu_packed': SwiGLUPacked, 'swiglu': SwiGLU, 'silu': torch.nn.SiLU, 'gelu': torch.nn.GELU, 'mlp': timm.layers.Mlp}
DT = {'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16}
def read_st(path):
    b = open(path, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8+n]); out = {}
    for k, v in h.items():
        if k == '__metadata__': continue
        s, e = v['data_offsets']; out[k] = torch.frombuffer(bytearray(b[8+n+s:8+n+e]), dtype=DT[v['dtype']]).reshape(v['shape'])
    return out
for d in sys.argv[1:]:
    cfg = json.load(open(d + '/config.json'))
    args = {k: S.get(v, v) if k in ('mlp_layer', 'act_layer') and isinstance(v, str) else v for k, v in cfg['model_args'].items()}
    m = timm.create_model(cfg['architecture'], pretrained=False, **args).eval()
    m.load_state_dict(read_st(d + '/model.safetensors'), strict=True)
    print(d, 'strict load ok', cfg['architecture'], 'features', tuple(m(torch.zeros(1, 3, *cfg['pretrained_cfg']['input_size'][1:])).shape))
# Features of the exported folders through timm against the fixtures' expected features.
for d in sys.argv[1:]:
    name = os.path.basename(d); fx = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'fixtures', 'vit_reference', name)
    if not os.path.exists(fx + '/fixture.json'): continue
    cfg = json.load(open(d + '/config.json'))
    args = {k: S.get(v, v) if k in ('mlp_layer', 'act_layer') and isinstance(v, str) else v for k, v in cfg['model_args'].items()}
    m = timm.create_model(cfg['architecture'], pretrained=False, **args).eval(); m.load_state_dict(read_st(d + '/model.safetensors'))
    mean = torch.tensor(cfg['pretrained_cfg']['mean']).view(3,1,1); std = torch.tensor(cfg['pretrained_cfg']['std']).view(3,1,1)
    feats = []
    for im in json.load(open(fx + '/fixture.json'))['images']:
        x = (torch.from_numpy(np.array(Image.open(fx + '/' + im))).permute(2,0,1).float() / 255 - mean) / std
        with torch.no_grad(): feats.append(m(x[None])[0])
    want = np.load(fx + '/expected_features.npy'); got = torch.stack(feats).numpy()
    print(name, 'timm on the exported folder vs fixture: max rel diff', np.abs(got - want).max() / np.abs(want).max())
