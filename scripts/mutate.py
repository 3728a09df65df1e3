#!/usr/bin/env python3
"""Mutation testing: applies each mutation of tests/mutation/mutations.txt to src/ alone, rebuilds
incrementally, and runs the tests named beside it, then (when those pass) the whole suite. A mutant no
test kills is a missing test. The source file is restored after each mutant, also on Ctrl-C.

Usage: scripts/mutate.sh [--build DIR] [--only 1,5,7] [--quick] [--json FILE]
  --quick: a mutant that survives its named tests is reported as such, without the whole suite.
"""
import argparse
import json
import pathlib
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIELDS = ("file", "from", "to", "tests", "what")


def read_mutations(path):
    blocks, current = [], {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                blocks.append(current)
            current = {}
            continue
        key, sep, value = line.partition(": ")
        if not sep or key not in FIELDS:
            sys.exit(f"{path}:{number}: expected one of {', '.join(f + ':' for f in FIELDS)}, got {line!r}")
        current[key] = value
    if current:
        blocks.append(current)
    for i, b in enumerate(blocks, 1):
        missing = [f for f in FIELDS if f not in b]
        if missing:
            sys.exit(f"{path}: mutation {i} lacks {', '.join(missing)}")
    return blocks


def run(cmd, timeout):
    start = time.time()
    try:
        p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        return p.returncode, p.stdout, time.time() - start
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return 124, out, time.time() - start


def first_failure(output):
    m = re.search(r"\[  FAILED  \] ([^\s,]+)", output) or re.search(r"\d+ - (\S+) \((?:Failed|Timeout|SEGFAULT|Subprocess aborted)", output)
    if m:
        return m.group(1)
    if "Timeout" in output or "timed out" in output:
        return "a timeout"
    return "a crash or error (exit status)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--only", default="")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default="")
    ap.add_argument("--jobs", default="2")
    args = ap.parse_args()
    mutations = read_mutations(ROOT / "tests/mutation/mutations.txt")
    only = {int(x) for x in args.only.split(",") if x.strip()}
    build = ROOT / args.build
    tests_exe = build / "tests" / "tessera_tests"
    results = []
    print("| # | file | mutation | result | killed by | seconds |\n|---|---|---|---|---|---|", flush=True)
    for index, m in enumerate(mutations, 1):
        if only and index not in only:
            continue
        path = ROOT / m["file"]
        original = path.read_text()
        count = original.count(m["from"])
        if count != 1:
            sys.exit(f"mutation {index}: its 'from' text occurs {count} times in {m['file']} (must be once); update the list")
        start = time.time()
        try:
            path.write_text(original.replace(m["from"], m["to"]))
            rc, out, _ = run(["cmake", "--build", str(build), "--target", "tessera_tests", "tessera_cli", "-j", args.jobs], 3600)
            if rc != 0:
                result, killer = "does not compile", "-"
            else:
                rc, out, _ = run([str(tests_exe), f"--gtest_filter={m['tests']}"], 1800)
                if rc != 0:
                    result, killer = "killed", first_failure(out)
                elif args.quick:
                    result, killer = "survived its tests", "-"
                else:
                    rc, out, _ = run(["cmake", "--build", str(build), "-j", args.jobs], 3600)
                    if rc == 0:
                        rc, out, _ = run(["ctest", "--test-dir", str(build), "-j", args.jobs, "--output-on-failure"], 7200)
                    result, killer = ("killed", first_failure(out)) if rc != 0 else ("SURVIVED", "-")
        finally:
            path.write_text(original)
        seconds = time.time() - start
        results.append({"index": index, "file": m["file"], "what": m["what"], "result": result, "killed_by": killer,
                        "seconds": round(seconds)})
        print(f"| {index} | {m['file']} | {m['what']} | {result} | {killer} | {seconds:.0f} |", flush=True)
    # Leave the build matching the restored sources.
    run(["cmake", "--build", str(build), "--target", "tessera_tests", "tessera_cli", "-j", args.jobs], 3600)
    killed = sum(r["result"] == "killed" for r in results)
    print(f"\n{killed} of {len(results)} mutants killed")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"mutants": results}, indent=1) + "\n")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
