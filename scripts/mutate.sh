#!/usr/bin/env bash
# Mutation testing of the suite (docs/testing.md): every mutation of tests/mutation/mutations.txt applied to
# src/ alone, built incrementally, tested; a mutant no test kills is a missing test.
# Usage: scripts/mutate.sh [--build DIR] [--only 1,5] [--quick] [--json FILE]   (the build dir must be configured)
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 scripts/mutate.py "$@"
