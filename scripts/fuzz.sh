#!/usr/bin/env bash
# The fuzz campaign (`make fuzz`): every libFuzzer harness of tests/fuzz/, built with AddressSanitizer and
# UndefinedBehaviorSanitizer, for FUZZ_SECONDS (600) or FUZZ_RUNS (1,000,000) executions, whichever comes
# first, from the seeds in tests/fuzz/corpus/<harness>/ (and its .dict). A crash, sanitizer report, leak,
# hang over 10 s or allocation over 2 GiB leaves the input as <out>/<harness>-crash-*|leak-*|timeout-*|oom-*;
# keep it in the corpus once fixed. Prints one row per harness: executions, coverage, findings.
# Usage: scripts/fuzz.sh [sanitizer build dir, build-asan]   (FUZZ_ONLY="pickle npy" runs some harnesses;
# FUZZ_OUT sets where logs, corpora and findings go)
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-asan}
seconds=${FUZZ_SECONDS:-600}
runs=${FUZZ_RUNS:-1000000}
out=${FUZZ_OUT:-$build/fuzz-campaign}
mkdir -p "$out"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/sanitizers/lsan.supp}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=0
summary=$out/campaign.json  # the campaign's provenance and one object per harness, for scripts/tables.py (docs/testing.md)
{
  printf '{"date": "%s", "commit": "%s", "compiler": "%s", "cpu": "%s", "cores": %s, "max_seconds": %s, "max_runs": %s,\n' \
    "$(date -u '+%Y-%m-%d %H:%M UTC')" "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src include tests || echo -dirty)" \
    "$(grep -m1 -o 'CMAKE_CXX_COMPILER:[A-Z]*=.*' "$build/CMakeCache.txt" | sed 's/.*=//' | xargs -r basename)" \
    "$(lscpu | sed -n 's/^Model name: *//p')" "$(nproc)" "$seconds" "$runs"
  echo ' "harnesses": ['
} > "$summary"
first=1
echo "| harness | executions | seconds | coverage (edges) | corpus | findings |"
echo "|---|---|---|---|---|---|"
for exe in "$build"/fuzz/fuzz_*; do
  name=$(basename "$exe"); name=${name#fuzz_}
  if [ -n "${FUZZ_ONLY:-}" ] && [[ " $FUZZ_ONLY " != *" $name "* ]]; then continue; fi
  corpus=$out/corpus/$name
  mkdir -p "$corpus"
  dict=(); [ -f "tests/fuzz/$name.dict" ] && dict=(-dict="tests/fuzz/$name.dict")
  rm -f "$out/$name"-{crash,leak,timeout,oom,slow-unit}-*
  start=$(date +%s)
  # h5: tessera reads each HDF5 file first in a forked child whose address space is limited (libhdf5 allocates
  # what malformed headers declare); libFuzzer's malloc limit, inherited by that child, would report the
  # child's refused request as the fuzzer's own. The fuzzer's memory stays bounded by -rss_limit_mb.
  malloc_limit=2048; [[ $name == h5 ]] && malloc_limit=1048576
  "$exe" "$corpus" "tests/fuzz/corpus/$name" -max_total_time="$seconds" -runs="$runs" -timeout=10 -rss_limit_mb=2048 \
    -malloc_limit_mb="$malloc_limit" -print_final_stats=1 -artifact_prefix="$out/$name-" "${dict[@]}" > "$out/$name.log" 2>&1
  status=$?
  elapsed=$(( $(date +%s) - start ))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/$name.log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$out/$name.log" | tail -1 | grep -o '[0-9]*$')
  findings=$(ls "$out/$name"-{crash,leak,timeout,oom}-* 2>/dev/null | wc -l)
  if [ "$status" -ne 0 ] && [ "$findings" -eq 0 ]; then findings="exit $status (see $out/$name.log)"; fi
  [ "$status" -ne 0 ] && failed=1
  echo "| $name | ${execs:-?} | $elapsed | ${cov:-?} | $(ls "$corpus" | wc -l) | $findings |"
  [ $first -eq 1 ] || echo "," >> "$summary"
  first=0
  printf '{"harness": "%s", "executions": %s, "seconds": %s, "coverage": %s, "corpus": %s, "findings": "%s"}' \
    "$name" "${execs:-null}" "$elapsed" "${cov:-null}" "$(ls "$corpus" | wc -l)" "$findings" >> "$summary"
done
echo "]}" >> "$summary"
exit $failed
