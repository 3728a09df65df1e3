"""timm's ViT in Python on this machine's LibTorch: the reference `tessera bench encoder` is compared with.

Usage (Debian's python3-torch, a checkout of timm's source on PYTHONPATH, nothing else installed):
  PYTHONPATH=path/to/pytorch-image-models /usr/bin/python3 scripts/bench-timm-vit.py \
      --arch vit_base_patch16_224 --batch 16 --threads 2 --steps 3 [--precision bf16] [--json out.json]
Prints forward (no_grad) and train (forward + backward) images/s, median of --steps after one warm-up,
with the range, as tessera's bench does.
"""
import argparse, json, platform, statistics, time

import torch
import timm


def cpu_flags():
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('flags'):
                have = set(line.split(':', 1)[1].split())
                return ' '.join(f for f in ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_tile',
                                            'amx_bf16', 'amx_int8') if f in have)
    except OSError:
        pass
    return ''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--arch', default='vit_base_patch16_224')
    ap.add_argument('--batch', type=int, default=16)
    ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--steps', type=int, default=3)
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--precision', default='fp32', choices=['fp32', 'bf16'])
    ap.add_argument('--json')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = timm.create_model(a.arch, pretrained=False, num_classes=0)
    x = torch.randn(a.batch, 3, a.size, a.size)
    autocast = lambda: torch.autocast('cpu', dtype=torch.bfloat16, enabled=a.precision == 'bf16')

    def timed(train):
        out = []
        for s in range(a.warmup + a.steps):
            t = time.perf_counter()
            if train:
                model.train(); model.zero_grad()
                with autocast():
                    loss = model(x).float().square().mean()
                loss.backward()
            else:
                model.eval()
                with torch.inference_mode(), autocast():
                    model(x)
            if s >= a.warmup:
                out.append(time.perf_counter() - t)
        return out

    fwd, trn = timed(False), timed(True)
    rate = lambda s: a.batch / statistics.median(s)
    rng = lambda s: f'{a.batch / max(s):.2f}-{a.batch / min(s):.2f}'
    print(f'| timm {a.arch} | B {a.batch} | {a.size} px | {a.precision} | threads {torch.get_num_threads()} | '
          f'forward {rate(fwd):.2f} img/s ({rng(fwd)}) | train {rate(trn):.2f} img/s ({rng(trn)}) |')
    if a.json:
        json.dump({'forward_images_per_second': rate(fwd), 'train_images_per_second': rate(trn),
                   'forward_seconds': fwd, 'train_seconds': trn,
                   'settings': vars(a),
                   'provenance': {'timm': timm.__version__, 'torch': torch.__version__, 'isa': cpu_flags(),
                                  'cpu': platform.processor(), 'date': time.strftime('%Y-%m-%d')}},
                  open(a.json, 'w'), indent=2)


if __name__ == '__main__':
    main()
