#!/usr/bin/env python3
"""The Swedish traffic signs data set (STS, Larsson & Felsberg 2011) as the IPS paper used it, in the layout
of tessera's `csv` data set (configs/traffic-signs.yaml).

Input: the data set as published, <sts>/Set1/annotations.txt and Set2/annotations.txt with the images
beside them (Set1Part0.zip and Set2Part0.zip from the authors' site, unpacked into Set1/ and Set2/).
Output: <out>/images/<set>/<name>.png resized to 1600 x 1200 (bilinear), <out>/train.csv (Set1) and
<out>/test.csv (Set2) of `path,label` rows.

The filter and the labels are the IPS reference's (its seed 0 trains on Set1 and tests on Set2): an image
without any sign is class 0 (EMPTY); an image with speed limits keeps the most visible one (visibility
VISIBLE < BLURRED < SIDE_ROAD < OCCLUDED, then the largest box) and is class 1, 2, 3 for 50_SIGN,
70_SIGN, 80_SIGN if that one is VISIBLE, else it is dropped; an image whose signs are all other signs
is dropped; MISC_SIGNS entries are ignored.

Usage: PYTHONPATH=build/python python3 scripts/traffic-signs.py --sts data/sts --out data/traffic-signs
"""
import argparse
import os
import sys

import torch

import tessera

LIMITS = ["50_SIGN", "70_SIGN", "80_SIGN"]
VISIBILITY = ["VISIBLE", "BLURRED", "SIDE_ROAD", "OCCLUDED"]
HEIGHT, WIDTH = 1200, 1600


def number(text):
    """The annotations' numbers, some with a trailing character (the reference drops it)."""
    text = text.strip()
    while text:
        try:
            return float(text)
        except ValueError:
            text = text[:-1]
    raise ValueError("empty number")


def label(signs, where):
    """The class of an image from its signs [(visibility, (x1, y1, x2, y2), type, name)], or None to drop it."""
    if not signs:
        return 0
    limits = [s for s in signs if s[3] in LIMITS]
    if not limits:
        return None
    for s in limits:
        if s[0] not in VISIBILITY:
            raise ValueError(f"{where}: unknown visibility '{s[0]}'")

    def area(s):
        x1, y1, x2, y2 = s[1]
        return abs((x1 - x2) * (y1 - y2))

    best = sorted(limits, key=lambda s: (VISIBILITY.index(s[0]), -area(s)))[0]
    return 1 + LIMITS.index(best[3]) if best[0] == "VISIBLE" else None


def read_annotations(path):
    """[(image file name, signs)] of one set's annotations.txt; a malformed line is an error naming it."""
    if not os.path.exists(path):
        sys.exit(f"error: {path} not found; unpack the data set's Set1/ and Set2/ (with annotations.txt) into --sts")
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            if ":" not in line:
                sys.exit(f"error: {path}:{n}: expected '<image>:<signs>', got '{line[:60]}'")
            name, rest = line.split(":", 1)
            signs = []
            for sign in rest.split(";"):
                if not sign.strip():
                    continue
                parts = [p.strip() for p in sign.split(",")]
                if parts[0] == "MISC_SIGNS":
                    continue
                if len(parts) < 7:
                    sys.exit(f"error: {path}:{n}: a sign needs 7 fields (visibility, 4 box numbers, type, name): '{sign}'")
                try:
                    box = tuple(number(p) for p in parts[1:5])
                except ValueError:
                    sys.exit(f"error: {path}:{n}: bad box numbers in '{sign}'")
                signs.append((parts[0], box, parts[5], parts[6]))
            out.append((name, signs))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sts", required=True, help="folder with Set1/ and Set2/ as published")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args()
    counts = {}
    for split, folder in (("train", "Set1"), ("test", "Set2")):
        rows = ["path,label"]
        for name, signs in read_annotations(os.path.join(args.sts, folder, "annotations.txt")):
            cls = label(signs, f"{folder}/{name}")
            if cls is None:
                continue
            source = os.path.join(args.sts, folder, name)
            if not os.path.exists(source):
                sys.exit(f"error: {source} is listed in {folder}/annotations.txt but missing")
            target = os.path.join("images", folder, os.path.splitext(name)[0] + ".png")
            if not os.path.exists(os.path.join(args.out, target)):
                os.makedirs(os.path.dirname(os.path.join(args.out, target)), exist_ok=True)
                image = tessera.read_image(source)[:3]
                image = torch.nn.functional.interpolate(image[None], size=(HEIGHT, WIDTH), mode="bilinear",
                                                        align_corners=False, antialias=True)[0]
                tessera.write_png(os.path.join(args.out, target), image.clamp(0, 1))
            rows.append(f"{target},{cls}")
            counts[(split, cls)] = counts.get((split, cls), 0) + 1
        with open(os.path.join(args.out, f"{split}.csv"), "w") as f:
            f.write("\n".join(rows) + "\n")
    for split in ("train", "test"):
        print(split, {c: counts.get((split, c), 0) for c in range(4)})


if __name__ == "__main__":
    main()
