#!/usr/bin/env bash
# One hash of what the LibTorch 2.x compile check (scripts/check-libtorch2.sh) depends on most: every CMake
# file, every header, and the sources with CUDA / NCCL / precision / process-group code. CI skips the
# check while this hash equals the one recorded by the last check that passed (.ci/libtorch2-checked.sha256).
set -euo pipefail
cd "$(dirname "$0")/.."
{
  git ls-files -- 'CMakeLists.txt' '*/CMakeLists.txt' 'cmake/*' 'include/*' '*.h'
  git grep -l -e TESSERA_WITH_CUDA -e TESSERA_WITH_NCCL -- src cli tests
  echo src/core/distributed.cpp src/core/precision.cpp | tr ' ' '\n'
} | sort -u | xargs sha256sum | sha256sum | cut -d' ' -f1
