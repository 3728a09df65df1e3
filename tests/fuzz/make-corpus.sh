#!/usr/bin/env bash
# Seeds of the fuzz corpora (tests/fuzz/corpus/<harness>/): small valid files of every format, made with
# the tessera command (build/tessera) and Debian's python3-torch / numpy. Run once; the seeds are committed.
# Usage: tests/fuzz/make-corpus.sh [tessera binary]
set -euo pipefail
cd "$(dirname "$0")/../.."
tessera=${1:-build/tessera}
corpus=tests/fuzz/corpus
rm -rf "$corpus"
mkdir -p "$corpus"/{pickle,safetensors,npy,config,reference_config,csv,geojson,h5,image,run}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

/usr/bin/python3 - "$corpus" <<'PY'
import collections, json, struct, sys
import numpy as np
import torch
out = sys.argv[1]
sd = collections.OrderedDict([("fc.weight", torch.arange(6, dtype=torch.float32).view(2, 3)), ("fc.bias", torch.zeros(2)),
                              ("bn.num_batches_tracked", torch.tensor(3))])
torch.save(sd, f"{out}/pickle/state_dict.pt")                                    # zip form
torch.save({"model1_weights": sd, "epoch": 2, "name": "x", "list": [1, 2.5, None, True]}, f"{out}/pickle/nested.pt")
# safetensors: 8-byte little-endian header length, JSON header, data
data = np.arange(6, dtype=np.float32).tobytes() + np.arange(2, dtype=np.int64).tobytes()
header = json.dumps({"__metadata__": {"format": "pt"}, "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                     "i": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}}).encode()
open(f"{out}/safetensors/two.safetensors", "wb").write(struct.pack("<Q", len(header)) + header + data)
np.save(f"{out}/npy/float.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
np.save(f"{out}/npy/uint8.npy", np.arange(5, dtype=np.uint8))
np.savez(f"{out}/npy/two.npz", a=np.ones((2, 2), np.float32), b=np.arange(3, dtype=np.int64))
PY

cp configs/demo.yaml "$corpus/config/demo.yaml"
printf 'train.epochs=2;ips.M=4\n' > "$corpus/config/overrides.yaml" && cat configs/slides-demo.yaml >> "$corpus/config/overrides.yaml"
cat > "$corpus/reference_config/mnist.yml" <<'YML'
# the shape of the IPS reference's config/mnist_config.yml
dataset: mnist
n_class: 10
data_dir: data/megapixel_mnist/dsets/megapixel_mnist_1500
n_chan_in: 1
patch_size: [50, 50]
patch_stride: [50, 50]
tasks:
  task0: {id: 0, name: majority, act_fn: softmax, metric: accuracy}
  task1: {id: 1, name: max, act_fn: softmax, metric: accuracy}
B: 16
B_seq: 16
n_epoch: 150
n_epoch_warmup: 10
n_token: 4
n_worker: 8
pin_memory: true
eager: true
shuffle: false
shuffle_style: batch
is_image: true
pretrained: false
track_efficiency: false
track_epoch: 0
lr: 0.001
wd: 0.1
dropout: 0.1
M: 100
I: 100
D: 128
H: 8
D_k: 16
D_v: 16
D_inner: 512
attn_dropout: 0.1
use_pos: false
YML
printf 'slide,label,split\nslide_000.tif,0,train\nslide_001.tif,1,test\n' > "$corpus/csv/manifest.csv"
printf 'path,label\nimages/a.png,0\n"images/b, c.png",2\n' > "$corpus/csv/images.csv"
printf 'id,slide,label_a,label_b\ns0,x.svs,0,1\n' > "$corpus/csv/tasks.csv"
cat > "$corpus/geojson/qupath.geojson" <<'JSON'
{"type": "FeatureCollection", "features": [
 {"type": "Feature", "id": "1", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [300, 0], [300, 300], [0, 300], [0, 0]], [[50, 50], [100, 50], [100, 100], [50, 50]]]},
  "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}}},
 {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [[[[10, 10], [20, 10], [20, 20], [10, 10]]]]},
  "properties": {"objectType": "annotation", "classification": {"name": "Exclude"}}},
 {"type": "Feature", "geometry": {"type": "GeometryCollection", "geometries": [{"type": "Point", "coordinates": [1, 2]}]}, "properties": {}}]}
JSON
printf '[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [9, 0], [0, 9]]]}, "properties": {"classification": "Ignore*"}}]\n' \
  > "$corpus/geojson/array.geojson"

# HDF5: a coordinate file and a feature bag from a tiny generated slide; images; a run's checkpoint.
if [ -f data/mnist/t10k-labels-idx1-ubyte ]; then cp -r data/mnist "$work/mnist"; else bash scripts/get-mnist.sh "$work/mnist"; fi
"$tessera" make-slides --out "$work/slides" --count 2 --test-count 0 --width 512 --height 512 --digits 1 --mnist-dir "$work/mnist" > /dev/null
"$tessera" preprocess --manifest "$work/slides/manifest.csv" --out "$work/cache" --patch 128 --thumbnail 0 > /dev/null
cp "$(ls "$work"/cache/coords/*.h5 | head -1)" "$corpus/h5/coords.h5"
"$tessera" extract-features --manifest "$work/slides/manifest.csv" --out "$work/bags" --cache-dir "$work/cache" --patch 128 \
  --encoder resnet18 --stages 2 --width 4 --threads 1 > /dev/null 2>&1
cp "$work/bags/slide_000.h5" "$corpus/h5/bag.h5"
"$tessera" export-data --data.dataset scattered_mnist --data.mnist_dir "$work/mnist" --data.height 32 --data.width 32 \
  --data.digit_size 28 --data.patch 16 --data.stride 16 --count 1 --out "$work/images" > /dev/null
cp "$work/images/test_00000.png" "$corpus/image/digit.png"
"$tessera" export-data --data.dataset tissue_tiles --data.mnist_dir "$work/mnist" --data.height 32 --data.width 32 \
  --data.digit_size 28 --slide.level 0 --data.patch 32 --count 1 --out "$work/tiles" > /dev/null
cp "$work/tiles/test_00000.png" "$corpus/image/tile.png"
/usr/bin/python3 - "$work/tiles/test_00000.png" "$corpus/image" <<'PY' || true
import sys
try:
    from PIL import Image
    im = Image.open(sys.argv[1])
    im.save(f"{sys.argv[2]}/tile.jpg", quality=80)
    im.save(f"{sys.argv[2]}/tile.tif")
except ImportError:
    pass
PY
"$tessera" train --data.dataset scattered_mnist --data.mnist_dir "$work/mnist" --data.height 28 --data.width 28 \
  --data.digit_size 28 --data.patch 14 --data.stride 14 --data.train_size 4 --data.test_size 2 --data.workers 0 \
  --model.width 4 --model.stages 2 --model.heads 1 --model.d_k 4 --model.d_inner 8 --ips.M 2 --ips.I 2 \
  --train.epochs 1 --train.batch_size 2 --train.threads 1 --run.dir "$work/run" > /dev/null
cp "$work/run/checkpoint.pt" "$corpus/run/checkpoint.pt"
du -sh "$corpus"/*
