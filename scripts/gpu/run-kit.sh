#!/usr/bin/env bash
# The GPU build kit, for a machine with a CUDA PyTorch installation (python3 -c 'import torch') and nvcc,
# and the Debian packages unpacked by scripts/gpu/prepare-deps.sh in .gpu-deps/ beside this tree:
# builds tessera against that PyTorch's LibTorch (slides and libvips off: their libraries are absent),
# runs the CUDA-labelled tests, and runs bench ips / bench patchgd on the GPU in fp32, bf16 and fp16,
# writing one JSON per run into OUT. Usage: scripts/gpu/run-kit.sh OUT [build dir]
# Planned to finish well inside 15 device minutes on 16 cores (build about 5, tests and benches about 3).
set -euo pipefail
out=${1:?usage: scripts/gpu/run-kit.sh OUT [build dir]}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${2:-$root/build-gpu}
deps=$root/.gpu-deps/root
[[ -d $deps ]] || { echo "error: $deps is missing; run scripts/gpu/prepare-deps.sh on the Debian machine and carry .gpu-deps" >&2; exit 1; }
mkdir -p "$out"
log() { echo "[$(date +%H:%M:%S)] $*"; }

torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
log "PyTorch $(python3 -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)') at $torch_prefix"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
jobs=$(nproc)

# GoogleTest from Debian's sources, built with this machine's compiler.
if [[ ! -f $build/gtest/lib/libgtest.a ]]; then
  log "building GoogleTest"
  cmake -S "$deps/usr/src/googletest" -B "$build/gtest-build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_INSTALL_PREFIX="$build/gtest" -DBUILD_GMOCK=OFF >/dev/null
  cmake --build "$build/gtest-build" --target install -j "$jobs" >/dev/null
fi

# nccl.h comes with the wheel's nvidia-nccl package, not with LibTorch's headers.
nccl_include=$(python3 -c '
import glob, os, site
found = [h for d in site.getsitepackages() for h in glob.glob(os.path.join(d, "nvidia", "**", "nccl.h"), recursive=True)]
print(os.path.dirname(found[0]) if found else "")')
log "nccl.h: ${nccl_include:-not found (GPU tensors will reduce through Gloo)}"

export LD_LIBRARY_PATH=$deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
configure() {
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_PREFIX_PATH="$torch_prefix;$deps/usr;$deps/usr/lib/x86_64-linux-gnu/cmake;$build/gtest" \
        -DCMAKE_CXX_FLAGS="-I$deps/usr/include" -DNCCL_INCLUDE_DIR="$nccl_include" \
        -DTESSERA_WITH_VIPS=OFF -DTESSERA_WITH_SLIDES=OFF -DTESSERA_WITH_PYTHON=OFF -DCMAKE_CUDA_ARCHITECTURES=native "$@" \
        2>&1 | tee -a "$out/configure.log" | grep -E "tessera:|Error" || true
}
log "configuring"
configure -DTESSERA_WITH_NCCL=ON
log "building"
cmake --build "$build" -j "$jobs" 2>&1 | tee "$out/build.log" | grep -E "error|FAILED" || true
if [[ ! -x $build/tessera ]] && grep -qi nccl "$out/build.log"; then
  # The NCCL path has only been compiled against Debian's LibTorch 2.6 headers: one device session must
  # not be lost to it, so build without it and say so.
  log "the build failed over NCCL; building again without it" | tee "$out/nccl-fallback.txt"
  configure -DTESSERA_WITH_NCCL=OFF
  cmake --build "$build" -j "$jobs" 2>&1 | tee "$out/build-without-nccl.log" | grep -E "error|FAILED" || true
fi
[[ -x $build/tessera ]] || { echo "error: the build failed; see $out/build.log" >&2; exit 1; }
"$build/tessera" --version | tee "$out/version.txt"

# One device session is all there may be: a failing test or benchmark is recorded, the rest still runs.
log "CUDA tests"
(cd "$build" && ctest -L cuda --output-on-failure 2>&1 | tee "$out/ctest-cuda.log" | tail -5) ||
  log "some CUDA tests failed: see $out/ctest-cuda.log"

log "benchmarks"
for p in fp32 bf16 fp16; do
  "$build/tessera" bench ips --device cuda --precision "$p" --steps 5 --warmup 2 --json "$out/bench-ips-$p.json" \
    2>"$out/bench-ips-$p.log" | tail -1 || log "bench ips $p failed: see $out/bench-ips-$p.log"
  "$build/tessera" bench patchgd --device cuda --precision "$p" --size 2048 --batch 4 --patch 128 --q 0.1 \
    --steps 5 --warmup 2 --json "$out/bench-patchgd-$p.json" 2>"$out/bench-patchgd-$p.log" | tail -1 ||
    log "bench patchgd $p failed: see $out/bench-patchgd-$p.log"
done
log "done: $out"
