#!/usr/bin/env python3
"""Every measured table in docs/, regenerated from the JSON it quotes, so no figure can drift from its data.

A table in a Markdown file sits between two markers:

    <!-- table: NAME -->
    | ... |
    <!-- /table -->

and NAME is one of the generators below, each reading the JSON files named beside the table in the docs.
Usage:
    scripts/tables.py            check: every marked table equals what its generator makes (exit 1 if not)
    scripts/tables.py --write    rewrite the marked tables from their data
    scripts/tables.py --print N [--from DIR]   print table N (a demo's: from its run folder DIR)
    scripts/tables.py --keep DEMO DIR          copy a demo's run records (metrics.jsonl, config.yaml, command.json,
                                               plan.json) from DIR into docs/results/DEMO/
ctest runs the check (docs.tables). Figures quoted from elsewhere (the references' own numbers, the
issues' targets) are written here as such, in the generator that prints them.
"""
import json
import pathlib
import re
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GiB, MiB = 2**30, 2**20


def load(name):
    return json.loads((DOCS / name).read_text())


def gib(b, digits=2):
    return f"{b / GiB:.{digits}f} GiB"


def mem(b):
    """MiB below 1 GiB, else GiB, as the docs write them."""
    return f"{b / MiB:.1f} MiB" if b < GiB else gib(b)


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def provenance(*records):
    """Where the rows were measured, from each JSON's provenance: per machine (the instruction sets that decide
    bf16's speed, AMX or not) the dates, builds (tessera's, or timm's for the Python rows), CPU and threads."""
    machines = {}
    for j in records:
        p = j.get("provenance", {})
        isa = " ".join(sorted(p["isa"].split())) if "isa" in p else "not recorded"
        m = machines.setdefault(isa, {"dates": set(), "builds": set(), "cpu": set(), "threads": set()})
        m["dates"].add(p.get("date", "?"))
        m["builds"].add(f"timm {p['timm']} (torch {p.get('torch', '?')})" if "timm" in p
                        else f"tessera {p.get('tessera', '?')} ({p.get('commit', '?')})")
        if p.get("cpu"):
            m["cpu"].add(f"{p['cpu']}, {p.get('cores', '?')} cores")
        if "threads" in p:
            m["threads"].add(str(p["threads"]))
    return "; ".join(f"measured {', '.join(sorted(m['dates']))} with {', '.join(sorted(m['builds']))}, "
                     f"{', '.join(sorted(m['cpu'])) or 'CPU not recorded'}, "
                     + (f"{'/'.join(sorted(m['threads']))} torch threads, " if m["threads"] else "")
                     + f"ISA: {isa}" for isa, m in machines.items())


def median_range(values, scale=lambda v: v, digits=2):
    """median (min-max) of scale(v), e.g. images/s from seconds."""
    xs = sorted(scale(v) for v in values)
    return f"{statistics.median(xs):.{digits}f} ({xs[0]:.{digits}f}-{xs[-1]:.{digits}f})"


# --- benchmarks.md -------------------------------------------------------------------------------------

def ips_step():
    rows = [
        # Quoted: the measurement of the reference implementation, and its targets.
        ["reference Python IPS (issue's measurement, same LibTorch 1.13 kernels)", "eager", "30.2", "–", "–", "2.2 GB"],
        ["target", "", "<= 20", "", "", "<= 1.6 GB"],
    ]
    for loading in ("eager", "lazy"):
        j = load(f"bench-ips-{loading}.json")
        rows.append(["tessera", loading, f"{j['step_seconds_median']:.2f}", f"{j['selection_seconds_median']:.2f}",
                     gib(j["peak_tensor_bytes"]), f"{gib(j['peak_rss_bytes'])} ({j['peak_rss_bytes'] / 1e9:.2f} GB)"])
    return table(["implementation", "loading", "step (s)", "of which selection (s)", "peak tensors", "peak RSS"], rows)


def encoders():
    rows = []
    for arch, label in (("vit_base_patch16_224", "ViT-B/16 (86 M)"), ("vit_large_patch16_224", "ViT-L/16 (303 M, UNI's shape)")):
        for precision in ("fp32", "bf16"):
            ours, timm = load(f"bench-encoder-{arch}-{precision}.json"), load(f"bench-timm-{arch}-{precision}.json")
            batch = ours["settings"]["batch"]
            rate = lambda s: batch / s  # noqa: E731
            rows.append([label if precision == "fp32" else label.split(" (")[0], precision,
                         median_range(ours["forward_seconds"], rate), median_range(timm["forward_seconds"], rate),
                         median_range(ours["train_seconds"], rate), median_range(timm["train_seconds"], rate),
                         f"{mem(ours['forward_peak_tensor_bytes'])} / {mem(ours['train_peak_tensor_bytes'])}"])
    runs = [load(f"bench-{who}-{arch}-{precision}.json") for who in ("encoder", "timm")
            for arch in ("vit_base_patch16_224", "vit_large_patch16_224") for precision in ("fp32", "bf16")]
    return (table(["model", "precision", "tessera forward img/s", "timm forward img/s", "tessera train img/s",
                   "timm train img/s", "tessera peak tensors forward / train"], rows) + "\n\n" + provenance(*runs))


PLAN_DEPTH = {"uni": 24, "uni2-h": 24, "virchow2": 32}  # the registry's depths (tessera embed --list-encoders)
PLAN_NAME = {"uni": "UNI (ViT-L/16)", "uni2-h": "UNI2-h (ViT-H/14, SwiGLU)", "virchow2": "Virchow2 (ViT-H/14, SwiGLU)"}


def plan_peak(name):
    return load(f"plan/{name}.json")["peak_tensor_bytes"]


def plan_at_depth(model, precision, tuning, chunk, depth):
    """A ViT's blocks are identical: peak(L) = peak(1) + (L - 1) (peak(2) - peak(1))."""
    p1, p2 = (plan_peak(f"{model}-{precision}-{tuning}-c{chunk}-d{d}") for d in (1, 2))
    return p1 + (depth - 1) * (p2 - p1)


def plan_per_winner(model, precision):
    """Bytes of one more winner (stored patch, embedding, aggregator activations): M 100 against M 9 at depth 1,
    N = M (no scan), patches cut on request (ips.loading lazy)."""
    return (plan_peak(f"{model}-{precision}-lora8-c8-d1-m100-lazy") - plan_peak(f"{model}-{precision}-lora8-c8-d1-m9-lazy")) / (100 - 9)


def plan():
    """The fine-tuning memory table from scripts/plan-table.sh's probes (tessera plan at batch 1, M = the
    chunk, depths 1 and 2). The M / batch columns add (B M - chunk) winners at the measured bytes of one
    (plan_per_winner): computed from measurements, not measured at those sizes."""
    rows = []
    for model, depth in PLAN_DEPTH.items():
        for precision in ("fp32", "bf16"):
            for tuning in ("lora8", "full"):
                for chunk in (8, 32):
                    base = plan_at_depth(model, precision, tuning, chunk, depth)
                    per_winner = plan_per_winner(model, precision)
                    cells = [gib(base + (b * m - chunk) * per_winner, 1) for m in (100, 500) for b in (1, 16)]
                    rows.append([PLAN_NAME[model], precision, "LoRA r 8" if tuning == "lora8" else "all weights", chunk,
                                 gib(base, 1), *cells])
    checks = []
    direct = plan_peak("uni-bf16-lora8-c8-d24")
    formula = plan_at_depth("uni", "bf16", "lora8", 8, 24)
    checks.append(f"check: UNI bf16 LoRA chunk 8 at depth 24, M 8: direct trial {direct / GiB:.3f} GiB, "
                  f"from depths 1 and 2 {formula / GiB:.3f} GiB ({100 * (formula - direct) / direct:+.1f} %)")
    direct = plan_peak("uni-bf16-lora8-c32-d1-m576-lazy")  # the M columns' arithmetic, at another M and chunk
    formula = plan_peak("uni-bf16-lora8-c32-d1-m36-lazy") + (576 - 36) * plan_per_winner("uni", "bf16")
    checks.append(f"check: UNI bf16 LoRA chunk 32 at depth 1, M 576: direct trial {direct / GiB:.3f} GiB, from M 36 plus "
                  f"540 winners of {plan_per_winner('uni', 'bf16') / 2**10:.0f} KiB {formula / GiB:.3f} GiB "
                  f"({100 * (formula - direct) / direct:+.1f} %)")
    checks.append("bytes of a further winner (M 100 against M 9 at depth 1): " + ", ".join(
        f"{PLAN_NAME[m].split(' (')[0]} {p} {plan_per_winner(m, p) / 2**10:.0f} KiB" for m in PLAN_DEPTH for p in ("fp32", "bf16")))
    return (table(["encoder", "precision", "trained", "grad chunk", "measured: batch 1, M = chunk", "M 100, batch 1",
                   "M 100, batch 16", "M 500, batch 1", "M 500, batch 16"], rows) + "\n\n" + "\n\n".join(checks))


def ips_vit():
    """scripts/bench-ips-vit.sh's rows: ViT-S/16, N 256, I 32, batch 1, grad chunk 0 / 16, fp32 / bf16."""
    rows = []
    for precision in ("fp32", "bf16"):
        for chunk in (0, 16):
            for M in (25, 50, 100, 200):
                j = load(f"bench-ips-vit/{precision}-c{chunk}-m{M}.json")
                timed = j.get("timed", True)
                steps = j["step_seconds"]
                rows.append([precision, chunk, M,
                             f"{j['step_seconds_median']:.1f} ({min(steps):.1f}-{max(steps):.1f})" if timed
                             else "not timed (shared cores)",
                             f"{j['selection_seconds_median']:.1f}" if timed else "-", gib(j["peak_tensor_bytes"])])
    runs = [load(f"bench-ips-vit/{p}-c{c}-m{M}.json") for p in ("fp32", "bf16") for c in (0, 16) for M in (25, 50, 100, 200)]
    return (table(["precision", "grad chunk", "M", "step s: median (range)", "selection s (median)", "peak tensors"], rows)
            + "\n\n" + provenance(*runs))


def precision_ips():
    fp, bf = load("bench-ips-fp32.json"), load("bench-ips-bf16.json")
    grad = lambda j: j["step_seconds_median"] - j["selection_seconds_median"]  # noqa: E731
    rows = [["fp32", median_range(fp["step_seconds"]), f"{fp['selection_seconds_median']:.2f}", f"{grad(fp):.2f}",
             mem(fp["peak_tensor_bytes"]), mem(fp["peak_rss_bytes"])],
            ["bf16", f"{median_range(bf['step_seconds'])}, {bf['step_seconds_median'] / fp['step_seconds_median']:.2f}x",
             f"{bf['selection_seconds_median']:.2f} ({bf['selection_seconds_median'] / fp['selection_seconds_median']:.2f}x)",
             f"{grad(bf):.2f} ({grad(bf) / grad(fp):.2f}x)",
             f"{mem(bf['peak_tensor_bytes'])} ({bf['peak_tensor_bytes'] / fp['peak_tensor_bytes']:.2f}x)", mem(bf["peak_rss_bytes"])],
            ["target (the issue's)", "<= 0.7x", "", "", "<= 0.6x", ""]]
    return (table(["precision", "step s: median (range)", "of which selection (s)", "gradient pass + step (s)", "peak tensors", "peak RSS"], rows)
            + "\n\n" + provenance(fp, bf))


def precision_patchgd():
    fp, bf = load("bench-patchgd-fp32.json"), load("bench-patchgd-bf16.json")
    rows = [["fp32", median_range(fp["step_seconds"]), mem(fp["peak_tensor_bytes"]), mem(fp["peak_rss_bytes"])],
            ["bf16", f"{median_range(bf['step_seconds'])}, {bf['step_seconds_median'] / fp['step_seconds_median']:.2f}x",
             f"{mem(bf['peak_tensor_bytes'])} ({bf['peak_tensor_bytes'] / fp['peak_tensor_bytes']:.2f}x)", mem(bf["peak_rss_bytes"])]]
    return table(["precision", "step s: median (range)", "peak tensors", "peak RSS"], rows) + "\n\n" + provenance(fp, bf)


def lazy_sweep():
    sweep = load("bench-ips-sweep.json")["sweep"]
    first = sweep[0]["peak_tensor_bytes"]
    rows = [[f"{r['N']:,}", f"{r['step_seconds']:.2f}", mem(r["peak_tensor_bytes"]), f"{r['peak_tensor_bytes'] / first:.3f}",
             mem(r["peak_rss_bytes"])] for r in sweep]
    return table(["N", "step (s)", "peak tensors", "vs N = 900", "peak RSS"], rows)


def patchgd_step():
    j = load("bench-patchgd.json")
    s = j["settings"]
    steps = j["step_seconds"]
    main = table(["method", "B", "image", "patch", "n", "q", "backbone", "s", "threads", "step s (median of 3)", "peak tensors",
                  "peak RSS"],
                 [[j["method"], s["batch"], f"{s['channels']}x{s['size']}x{s['size']}", s["patch"], s["n"], s["q"], s["backbone"],
                   s["latent"], s["threads"], f"{j['step_seconds_median']:.2f}", mem(j["peak_tensor_bytes"]), mem(j["peak_rss_bytes"])]])
    # Quoted: the reference's step and RSS, and the targets.
    versus = table(["", "reference (Python)", "target", "tessera"],
                   [["step time", "5.7 s", "<= 5.0 s",
                     f"{j['step_seconds_median']:.2f} s (not reached); single steps {min(steps):.2f}-{max(steps):.2f} s"],
                    ["peak RSS", "1.3 GB", "<= 1.1 GB",
                     f"{j['peak_rss_bytes'] / 1e9:.2f} GB = {gib(j['peak_rss_bytes'])} (not reached)"]])
    return main + "\n\n" + versus


def patchgd_sizes_fixed_q():
    rows = []
    for r in load("bench-patchgd-sizes-fixed-q.json")["sweep"]:
        peak = f"> {gib(r['exceeds_budget'])} (budget hit)" if "exceeds_budget" in r else gib(r["peak_tensor_bytes"])
        rows.append([r["size"], r["method"], peak])
    return table(["image", "method", "peak tensors"], rows)


def patchgd_sizes():
    rows = []
    for r in load("bench-patchgd-sizes.json")["sweep"]:
        over = "exceeds_budget" in r
        rows.append([f"{r['size']}x{r['size']}", r["method"], "-" if over else f"{r['step_seconds']:.1f}",
                     f"> {gib(r['exceeds_budget'])} (budget hit)" if over else mem(r["peak_tensor_bytes"]), mem(r["peak_rss_bytes"])])
    return table(["image", "method", "step s", "peak tensors", "peak RSS"], rows)


def slide_read():
    runs = load("bench-slide-read.json")["runs"]
    return table(["back-end", "reader threads", "patches/s"],
                 [[r["backend"], r["threads"], f"{r['patches'] / r['seconds']:.0f}"] for r in runs])


def slide_ips():
    rows = []
    for r in load("bench-slide-ips.json")["runs"]:
        side = int(re.search(r"side-(\d+)", r["slide"]).group(1))
        rows.append([r["backend"], side, f"{side * side / 1e9:.2f}", f"{r['N']:,}", f"{r['seconds']:.1f}", mem(r["peak_tensor_bytes"]),
                     mem(r["peak_rss_bytes"])])
    return table(["back-end", "slide side", "gigapixels", "N patches", "step s", "peak tensors", "peak RSS"], rows)


def feature_bags():
    j = load("bench-feature-bags.json")
    s = j["settings"]
    rows = [[f"{r['N']:,}", s["batch"], s["M"], f"{r['step_seconds']:.1f}", f"{r['seconds_per_slide']:.2f}", mem(r["peak_tensor_bytes"]),
             mem(r["peak_rss_bytes"]), "met" if r["peak_tensor_bytes"] <= 1.5e9 else "missed"] for r in j["runs"]]
    return table(["N per slide", "B", "M = I", "step s", "s per slide", "peak tensors", "peak RSS", "target 1.5 GB"], rows)


def extract_vit():
    """scripts/bench-extract-vit.sh's JSONs: reading alone, the encoder alone, extract-features fp32 and bf16."""
    read, enc = load("extract-vit/slide-read.json"), load("extract-vit/encoder.json")
    fp, bf = load("extract-vit/extract-fp32.json"), load("extract-vit/extract-bf16.json")
    r = read["runs"][0]
    batch = enc["settings"]["batch"]
    rate = lambda j: j["patches"] / j["seconds"]  # noqa: E731
    forward = sorted(batch / s for s in enc["forward_seconds"])
    rows = [[f"reading alone (`bench slide-read --patch {read['patch']} --threads {r['threads']} --backends {r['backend']}`, "
             f"{r['patches']:,} random patches)", f"{r['patches'] / r['seconds']:.0f}"],
            [f"{enc['settings']['encoder']} forward alone (`bench encoder --batch {batch}`, median of {len(forward)}, range "
             f"{forward[0]:.2f}-{forward[-1]:.2f})", f"{statistics.median(forward):.2f}"],
            [f"`extract-features`, fp32: {fp['patches']:,} patches of {fp['settings']['slides']} slides read + encoded (+ written)",
             f"**{rate(fp):.1f}** ({fp['seconds']:.1f} s)"],
            ["`extract-features --precision bf16`", f"**{rate(bf):.1f}** ({bf['seconds']:.1f} s)"]]
    per_slide = fp["patches"] / fp["settings"]["slides"]
    return (f"Batch {fp['settings']['batch']}; {provenance(read, enc, fp, bf)}.\n\n" + table(["what", "patches/s"], rows) +
            f"\n\nEnd to end runs at {rate(fp) / statistics.median(forward):.2f}x the encoder's rate alone: a slide's "
            f"{per_slide:.0f} tissue tiles take {per_slide / rate(fp):.0f} s with this ViT-S in fp32; a ViT-L (UNI's shape) "
            "costs about 13 times a ViT-S's multiply-adds per tile.")


def data_parallel():
    """scripts/bench-data-parallel.sh's two runs (kept in docs/results/data-parallel/ by --keep)."""
    rows, whole, step_ms, threads_of, commands = [], {}, {}, {}, []
    for run in DEMO_RUNS["data-parallel"]:
        rs, cmd = records("data-parallel", run), json.loads(run_path("data-parallel", run, "command.json").read_text())
        ranks = int(re.search(r"--nproc-per-node (\d+)", cmd["command"]).group(1)) if " launch " in cmd["command"] else 1
        threads, batch = config_value("data-parallel", run, "train", "threads"), config_value("data-parallel", run, "train", "batch_size")
        steps = rs[0]["step"]
        waits = [r["allreduce_seconds"] for r in rs if "allreduce_seconds" in r]
        tested = [r for r in rs if "test" in r][-1]
        whole[ranks], step_ms[ranks] = cmd["seconds"], 1000 * statistics.median(r["seconds"] for r in rs) / steps
        threads_of[ranks] = threads
        commands.append(cmd)
        rows.append([f"{ranks} processes, {threads} thread{'s' if threads != '1' else ''} each (Gloo)" if ranks > 1
                     else f"1 process, {threads} threads", f"{steps} ({ranks} x {batch})" if ranks > 1 else f"{steps} ({batch})",
                     ", ".join(f"{r['seconds']:.1f}" for r in rs), ", ".join(f"{w:.2f}" for w in waits) or "-",
                     f"{1000 * statistics.median(waits) / steps:.1f}" if waits else "-", f"{cmd['seconds']:.1f}",
                     mem(max(r["peak_rss_bytes"] for r in rs)), f"{tested['test']['majority']['accuracy']:.3f}"])
    many = max(whole)
    wait = float(rows[-1][4])
    return (table(["setup", "steps per epoch (batch)", "epoch (s)", "all-reduce wait per epoch (s)", "wait per step (ms)",
                   "whole command (s)", "peak RSS (rank 0)", f"test accuracy (majority) after {rs[-1]['epoch']} epochs"], rows) +
            f"\n\nOne run of each. {many} ranks of {threads_of[many]} thread(s): {whole[1] / whole[many]:.2f}x the speed of one process with "
            f"{threads_of[1]} threads (whole command); the all-reduce wait is {wait:.1f} ms of a {step_ms[many]:.0f} ms step "
            f"({100 * wait / step_ms[many]:.1f} %). The commands: docs/results/data-parallel/*/command.json; "
            f"{provenance(*commands)}.")


# --- results.md -----------------------------------------------------------------------------------------

RESULTS_FROM = {}  # demo -> folder its runs are read from instead of docs/results/<demo> (--from)
KEPT_FILES = ("metrics.jsonl", "config.yaml", "plan.json", "localization.json", "command.json")  # what --keep copies of each run


def run_path(demo, run, name):
    return pathlib.Path(RESULTS_FROM.get(demo, DOCS / "results" / demo)) / run / name


def records(demo, run):
    """metrics.jsonl of one run of a demo, kept under docs/results/<demo>/<run>/ (--keep copies it there)."""
    return [json.loads(line) for line in run_path(demo, run, "metrics.jsonl").read_text().splitlines() if line.strip()]


def config_value(demo, run, section, key):
    """section.key of the run's resolved config.yaml (two-level YAML, as tessera writes it)."""
    current = None
    for line in run_path(demo, run, "config.yaml").read_text().splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
        elif current == section and line.startswith("  ") and line.strip().startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(f"{demo}/{run}: no {section}.{key} in config.yaml")


def vit_demo():
    """make vit-demo's two routes (runs/vit-demo/{end-to-end,frozen})."""
    rows = []
    for run, route, trained in (("end-to-end", "end to end, `ips.grad_chunk {chunk}`", "LoRA r {rank} + head + aggregator"),
                                ("frozen", "frozen: `extract-features`, IPS on the bags", "projector + aggregator")):
        rs = records("vit-demo", run)
        tested = [r for r in rs if "test" in r][-1]
        chunk, rank = config_value("vit-demo", run, "ips", "grad_chunk"), config_value("vit-demo", run, "model", "lora_rank")
        rows.append([route.format(chunk=chunk), trained.format(rank=rank), config_value("vit-demo", run, "train", "memory_budget"),
                     mem(max(r["peak_tensor_bytes"] for r in rs)), f"{rs[-1]['train_seconds']:.0f}",
                     f"{tested['test']['label']['auc']:.3f}", f"{tested['test']['label']['accuracy']:.3f}"])
    return table(["route", "trained", "budget", "peak tensors", "training s",
                  f"test AUC ({records('vit-demo', 'frozen')[-1]['test']['samples']} slides)", "test accuracy"], rows)


def patchgd_demo():
    """make patchgd-demo's two runs (runs/patchgd-demo/{gd,patchgd}, each with the plan.json of its budget)."""
    rows = []
    for method in ("gd", "patchgd"):
        rs = records("patchgd-demo", method)
        tested = [r for r in rs if "test" in r][-1]
        plan = json.loads(run_path("patchgd-demo", method, "plan.json").read_text())
        side = plan.get("image_size") or int(config_value("patchgd-demo", method, "data", "height"))
        patch = int(config_value("patchgd-demo", method, "data", "patch"))
        n = (side // patch) ** 2
        q = f"{plan['q']:.4f} ({round(plan['q'] * n)} of {n} patches per inner iteration)" if "q" in plan else "-"
        rows.append([method, f"{side}x{side}", plan["batch_size"], q, config_value("patchgd-demo", method, "train", "memory_budget"),
                     mem(max(r["peak_tensor_bytes"] for r in rs)), f"{rs[-1]['train_seconds']:.0f}",
                     f"{rs[-1]['step'] * plan['batch_size']:,}", f"{tested['test']['digit']['accuracy']:.3f}"])
    pre = records("patchgd-demo", "pretrain")[-1]
    gd_plan = json.loads(run_path("patchgd-demo", "gd", "plan.json").read_text())
    full = int(config_value("patchgd-demo", "gd", "data", "height"))
    trials = "; ".join(
        f"{t['image_size'] or full} px batch {t['batch_size']}: "
        + (f"fits ({mem(t['peak_tensor_bytes'])})" if t["fits"] else f"over (stopped at {mem(t['peak_tensor_bytes'])})")
        for t in gd_plan["trials"])
    seen = [int(r[7].replace(",", "")) for r in rows]
    return (table(["method", "input", "batch", "q", "budget", "peak tensors", "training s (with the pretraining)", "images seen",
                   "test accuracy"], rows) +
            f"\n\nshared backbone: GD on 64x64 canvases, {pre['train_seconds']:.0f} s, test accuracy {pre['test']['digit']['accuracy']:.3f}"
            f"\n\nGD's planner, trials against {mem(gd_plan['planned_against_bytes'])} (95 % of the budget): {trials}."
            f" GD saw {seen[0] / seen[1]:.1f}x as many images as PatchGD.")


def ips_demo():
    """make demo's run (runs/demo): Megapixel MNIST's four tasks on its test images."""
    rs = records("ips-demo", "demo")
    tested = [r for r in rs if "test" in r][-1]
    rows = []
    for task, values in tested["test"].items():
        if isinstance(values, dict):
            for metric, value in values.items():
                rows.append([task, metric.replace("_", " "), f"{value:.3f}"])
    return (table(["task", "metric", f"value ({tested['test']['samples']} test images)"], rows) +
            f"\n\n{rs[-1]['epoch']} epochs, training {rs[-1]['train_seconds'] / 60:.1f} min, peak tensors "
            f"{mem(max(r['peak_tensor_bytes'] for r in rs))}, peak RSS {mem(max(r['peak_rss_bytes'] for r in rs))}")


def slides_demo():
    """make slides-demo's run (runs/slides-demo) and its localization.json."""
    rs = records("slides-demo", "slides-demo")
    tested = [r for r in rs if "test" in r]
    loc = json.loads(run_path("slides-demo", "slides-demo", "localization.json").read_text())
    positive = [s for s in loc["slides"] if s["tumour_patches"] > 0]
    curve = " / ".join(f"{r['test']['label']['auc']:.2f}" for r in tested)
    rows = [["test AUC (epochs " + " / ".join(str(r["epoch"]) for r in tested) + ")", curve],
            ["test accuracy (last epoch)", f"{tested[-1]['test']['label']['accuracy']:.3f}"],
            [f"top-{loc['M']} attention mass on tumour patches (mean over the {len(positive)} positive test slides, range)",
             f"{loc['mean_attention_on_tumour']:.2f} ({min(s['attention_on_tumour'] for s in positive):.2f}-"
             f"{max(s['attention_on_tumour'] for s in positive):.2f})"],
            ["tumour share of a positive slide's tissue patches",
             f"{min(s['tumour_fraction'] for s in positive):.3f}-{max(s['tumour_fraction'] for s in positive):.3f}"],
            ["positive / negative test slides' probability",
             f"{min(s['probability'] for s in positive):.2f}-{max(s['probability'] for s in positive):.2f} / "
             f"{min(s['probability'] for s in loc['slides'] if s['tumour_patches'] == 0):.2f}-"
             f"{max(s['probability'] for s in loc['slides'] if s['tumour_patches'] == 0):.2f}"],
            ["training", f"{rs[-1]['epoch']} epochs, {rs[-1]['train_seconds'] / 60:.1f} min"],
            ["peak tensors / peak RSS", f"{mem(max(r['peak_tensor_bytes'] for r in rs))} / {mem(max(r['peak_rss_bytes'] for r in rs))}"]]
    return table(["measure", f"value ({tested[-1]['test']['samples']} held-out slides)"], rows)


ULTRAMNIST_BUDGETS, ULTRAMNIST_METHODS = ("96MiB", "64MiB"), ("gd", "gd_extended", "patchgd")


def ultramnist_cpu():
    """scripts/compare-ultramnist-cpu.sh 96MiB 64MiB (runs/ultramnist-cpu/<method>-<budget>, pretrain)."""
    rows = []
    for budget in ULTRAMNIST_BUDGETS:
        for method in ULTRAMNIST_METHODS:
            run = f"{method}-{budget}"
            rs = records("ultramnist-cpu", run)
            plan = json.loads(run_path("ultramnist-cpu", run, "plan.json").read_text())
            tested = [r for r in rs if "test" in r]
            curve = " / ".join(f"{r['test']['sum']['accuracy']:.3f}" for r in tested[:-1])
            curve += (" / " if curve else "") + f"**{tested[-1]['test']['sum']['accuracy']:.3f}**"
            rows.append([budget, method, plan["batch_size"], plan.get("q", "-"), curve, f"{tested[-1]['test']['loss']:.2f}",
                         f"{rs[-1]['train']['sum']['accuracy']:.3f}", mem(max(r["peak_tensor_bytes"] for r in rs)),
                         f"{sum(r['seconds'] for r in rs) / 60:.1f}"])  # train_seconds would add the pretraining's
    epochs = " / ".join(str(r["epoch"]) for r in tested)
    pre = records("ultramnist-cpu", "pretrain")[-1]
    return (table(["budget", "method", "batch (planned)", "q", f"test accuracy (epochs {epochs})", "test loss (last)",
                   "train accuracy (last)", "peak tensors", "minutes"], rows) +
            f"\n\npretrained backbone: {pre['train_seconds']:.0f} s of GD on 64x64 digit canvases, test accuracy "
            f"{pre['test']['digit']['accuracy']:.3f}")


# --- testing.md -----------------------------------------------------------------------------------------

def mutation():
    """scripts/mutate.sh --json docs/results/testing/mutation.json."""
    ms = load("results/testing/mutation.json")["mutants"]
    rows = [[m["index"], f"`{m['file']}`", m["what"], m["result"], f"`{m['killed_by']}`" if m["killed_by"] != "-" else "-"]
            for m in ms]
    killed = sum(m["result"] == "killed" for m in ms)
    return table(["#", "file", "mutation", "result", "first failing test"], rows) + f"\n\n{killed} of {len(ms)} mutants killed"


def fuzz_campaign():
    """make fuzz (scripts/fuzz.sh), its campaign.json copied to docs/results/testing/fuzz-campaign.json; the fixed
    findings are the regression inputs kept in tests/fuzz/corpus/<harness>/."""
    c = load("results/testing/fuzz-campaign.json")
    rows = []
    for h in c["harnesses"]:
        fixed = len(list((ROOT / "tests" / "fuzz" / "corpus" / h["harness"]).glob("regression-*")))
        rows.append([h["harness"], h.get("part", 1), f"{h['executions']:,}", h["seconds"],
                     f"{h['executions'] / max(h['seconds'], 1):,.0f}", f"{h['coverage']:,}", h["corpus"], h["findings"], fixed])
    return (f"{c['date']}, commit {c['commit']}, {c['compiler']}, {c['cpu']} ({c['cores']} cores), each harness for "
            f"{c['max_seconds']} s or {c['max_runs']:,} executions:\n\n" +
            table(["harness", "part", "executions", "seconds", "executions/s", "coverage (edges)", "corpus", "findings open",
                   "fixed (regression inputs kept)"], rows))


GENERATORS = {
    "ips-step": ips_step, "encoders": encoders, "plan": plan, "ips-vit": ips_vit, "precision-ips": precision_ips,
    "precision-patchgd": precision_patchgd, "lazy-sweep": lazy_sweep, "patchgd-step": patchgd_step,
    "patchgd-sizes-fixed-q": patchgd_sizes_fixed_q, "patchgd-sizes": patchgd_sizes, "slide-read": slide_read,
    "slide-ips": slide_ips, "feature-bags": feature_bags, "vit-demo": vit_demo, "patchgd-demo": patchgd_demo,
    "ips-demo": ips_demo, "slides-demo": slides_demo, "ultramnist-cpu": ultramnist_cpu, "mutation": mutation,
    "fuzz-campaign": fuzz_campaign, "extract-vit": extract_vit, "data-parallel": data_parallel,
}
DEMO_RUNS = {"vit-demo": ("end-to-end", "frozen"), "patchgd-demo": ("pretrain", "gd", "patchgd"), "ips-demo": ("demo",),
             "slides-demo": ("slides-demo",), "data-parallel": ("1p", "2p"),
             "ultramnist-cpu": ("pretrain",) + tuple(f"{m}-{b}" for b in ULTRAMNIST_BUDGETS for m in ULTRAMNIST_METHODS)}


def keep(demo, folder):
    """Copies the files the demo's table reads from its run folder into docs/results/<demo>/."""
    import shutil
    for run in DEMO_RUNS[demo]:
        target = DOCS / "results" / demo / run
        target.mkdir(parents=True, exist_ok=True)
        for name in KEPT_FILES:
            source = pathlib.Path(folder) / run / name
            if source.exists():
                shutil.copyfile(source, target / name)

# A marked table: its start marker, the table (possibly empty, never another marker), its end marker.
MARKED = re.compile(r"(<!-- table: ([\w-]+) -->\n)((?:(?!<!-- ).)*?)\n?(<!-- /table -->)", re.S)


def main(argv):
    if len(argv) in (2, 4) and argv[0] == "--print":
        if len(argv) == 4 and argv[2] == "--from":
            RESULTS_FROM[argv[1]] = argv[3]
        print(GENERATORS[argv[1]]())
        return 0
    if len(argv) == 3 and argv[0] == "--keep" and argv[1] in DEMO_RUNS:
        keep(argv[1], argv[2])
        print(f"kept {argv[1]}'s runs from {argv[2]} in docs/results/{argv[1]}/; now: python3 scripts/tables.py --write")
        return 0
    write = argv == ["--write"]
    if argv and not write:
        print(__doc__)
        return 2
    stale, seen = [], set()
    for path in sorted(DOCS.rglob("*.md")):
        text = path.read_text()

        def regenerate(m):
            name = m.group(2)
            if name not in GENERATORS:
                raise SystemExit(f"{path}: unknown table '{name}' (known: {', '.join(GENERATORS)})")
            seen.add(name)
            made = GENERATORS[name]()
            if made != m.group(3):
                stale.append(f"{path.relative_to(ROOT)}: table '{name}'")
            return m.group(1) + made + "\n" + m.group(4)

        updated = MARKED.sub(regenerate, text)
        if write and updated != text:
            path.write_text(updated)
    unused = sorted(set(GENERATORS) - seen)
    if unused:
        print("generators without a marked table in docs/: " + ", ".join(unused))
        return 1
    if stale and not write:
        print("tables that differ from their data (run python3 scripts/tables.py --write, or fix the data):")
        print("\n".join("  " + s for s in stale))
        return 1
    print(f"{len(seen)} tables {'written' if write else 'match their data'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
