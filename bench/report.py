#!/usr/bin/python3
"""report.py — turns the `result impl=... bench=... n=... threads=... seconds=... [gflops=...]`
lines printed by the benchmarks (openblas_peak, matmul.lua, elementwise.lua, peers.py) into the
Markdown table of bench/RESULTS.md, with moonflow/peer ratios checked against the targets:
matmul >= 90% of OpenBLAS's own rate at the same thread count; elementwise no slower than numpy.

    /usr/bin/python3 bench/report.py RESULTS_TXT --threads T --command CMD [--check]

--check: exit non-zero when a measurement is missing (used by `bench/run.sh --quick`)."""
import argparse
import datetime
import os
import subprocess
import sys

MATMUL_TARGET = 0.90  # moonflow GFLOP/s / OpenBLAS GFLOP/s, at least
ELEMENTWISE_TARGET = 1.0  # moonflow seconds / numpy seconds, at most


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def parse(path):
    results, notes = {}, []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("# ") and not line.startswith("# round ") and line[2:] not in notes:
                notes.append(line[2:])
            if not line.startswith("result "):
                continue
            kv = dict(w.split("=", 1) for w in line.split()[1:])
            key = (kv["impl"], kv["bench"], int(kv["n"]), int(kv["threads"]))
            v = {"seconds": float(kv["seconds"]), "gflops": float(kv.get("gflops", 0))}
            if key not in results or v["seconds"] < results[key]["seconds"]:
                results[key] = v  # the best over the rounds
    return results, notes


def machine():
    model = ""
    for line in sh("lscpu").splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    return model or "unknown CPU", os.cpu_count()


def mark(ok):
    return "yes" if ok else "**no**"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("results")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--command", required=True)
    p.add_argument("--check", action="store_true")
    o = p.parse_args()
    r, notes = parse(o.results)
    T = o.threads
    missing = []

    def get(impl, bench, n, t, field):
        v = r.get((impl, bench, n, t))
        if v is None:
            missing.append(f"{impl} {bench} n={n} threads={t}")
            return None
        return v[field]

    def fmt(v, spec):
        return "—" if v is None else format(v, spec)

    model, cores = machine()
    sizes = sorted({k[2] for k in r if k[1] == "matmul"})
    thread_counts = [T] if T == 1 else [T, 1]
    out = []
    out.append("## Tensor core: matmul vs OpenBLAS, elementwise vs numpy\n")
    out.append(f"- Machine: {model}, {cores} cores ({sh('uname', '-m')}, Linux {sh('uname', '-r')})")
    out.append(f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}")
    out.append(f"- Command: `{o.command}`")
    blas = sh("dpkg-query", "-W", "-f=${Version}", "libopenblas0-pthread")
    out.append(f"- OpenBLAS {blas or '(version unknown)'} (pthread); numpy from Debian "
               f"(its BLAS is the same OpenBLAS); moonflow at git {sh('git', 'rev-parse', '--short', 'HEAD') or '(no commit)'}")
    out.append("- Timing: seconds per call, best of several samples, each sample repeating the call "
               "for a minimum time (wall clock, monotonic); the best over the rounds below.")
    for n_ in notes:
        out.append(f"- {n_}")

    out.append(f"\n### float32 matmul (n x n times n x n), GFLOP/s — higher is better\n")
    out.append(f"Target: moonflow >= {MATMUL_TARGET:.0%} of OpenBLAS's own `cblas_sgemm` rate at the "
               f"same thread count. moonflow's time includes allocating its result. numpy runs "
               f"with OPENBLAS_NUM_THREADS={T}.\n")
    out.append("| n | threads | OpenBLAS sgemm | moonflow | moonflow / OpenBLAS | target met | numpy |")
    out.append("|---:|---:|---:|---:|---:|:---:|---:|")
    met = total = 0
    for t in thread_counts:
        for n in sizes:
            ob = get("openblas", "matmul", n, t, "gflops")
            mf = get("moonflow", "matmul", n, t, "gflops")
            npv = r.get(("numpy", "matmul", n, t), {}).get("gflops")
            ratio = mf / ob if mf is not None and ob else None
            ok = ratio is not None and ratio >= MATMUL_TARGET
            total += t == T
            met += ok and t == T
            out.append(f"| {n} | {t} | {fmt(ob, '.1f')} | {fmt(mf, '.1f')} | {fmt(ratio, '.2f')} | "
                       f"{mark(ok) if ratio is not None else '—'} | {fmt(npv, '.1f')} |")

    out.append(f"\n### float32 elementwise, 2^20 elements, milliseconds per call — lower is better\n")
    out.append(f"Target: moonflow time / numpy time <= {ELEMENTWISE_TARGET:.1f}. numpy's elementwise "
               f"ops use one thread; moonflow is shown at 1 thread (the like-for-like comparison) and "
               f"at its default {T} threads. Both allocate a new result per call.\n")
    out.append(f"| op | numpy (1 thread) | moonflow, 1 thread | ratio | target met | "
               f"moonflow, {T} threads | ratio | target met |")
    out.append("|---|---:|---:|---:|:---:|---:|---:|:---:|")
    ew_met = ew_total = 0
    for op in ("add", "mul", "exp"):
        n = 1 << 20
        npv = get("numpy", op, n, 1, "seconds")
        row = [op, fmt(npv and npv * 1e3, ".3f")]
        for t in ([1, T] if T != 1 else [1]):
            mv = get("moonflow", op, n, t, "seconds")
            ratio = mv / npv if mv is not None and npv else None
            ok = ratio is not None and ratio <= ELEMENTWISE_TARGET
            ew_total += 1
            ew_met += ok
            row += [fmt(mv and mv * 1e3, ".3f"), fmt(ratio, ".2f"),
                    mark(ok) if ratio is not None else "—"]
        out.append("| " + " | ".join(row) + " |")

    out.append("\n### Summary\n")
    out.append(f"- matmul: {met} of {total} sizes at {T} threads reach {MATMUL_TARGET:.0%} of OpenBLAS.")
    out.append(f"- elementwise: {ew_met} of {ew_total} (op, thread count) pairs are no slower than numpy.")
    if missing:
        out.append(f"- Missing measurements: {', '.join(missing)}.")
    out.append("\n### Raw results\n\n```")
    with open(o.results) as f:
        out += [line.rstrip() for line in f if line.startswith(("result ", "# "))]
    out.append("```")
    print("\n".join(out))
    if o.check and missing:
        print("report.py: missing measurements: " + ", ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
