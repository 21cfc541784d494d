#!/usr/bin/python3
"""mnist.py — runs the MNIST benchmarks of issue 3 for moonflow (bench/mnist.lua) and PyTorch
(bench/torch_mnist.py) in one run on this machine, each in its own process (so that peak RSS is
that process's own), PyTorch at 1 and 2 threads and moonflow at 1 and 2, and writes the `mnist`
section of bench/RESULTS.md with the ratios against the targets:
  softmax training time <= 0.5x PyTorch's best; CNN training images/s >= 2x PyTorch's best (and as
  a fraction of this machine's OpenBLAS SGEMM peak, ~83 MFLOP per image forward + backward); CNN
  inference images/s (batch 1000) >= 2x PyTorch's best; CNN training peak RSS <= 0.5x PyTorch's.

    /usr/bin/python3 bench/mnist.py [--steps 200] [--quick]

--quick runs a few steps of each only to check that everything works (CI), writing nothing.
Needs the MNIST files in $MOONFLOW_DATA (or ../shared/data/mnist).
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MFLOP_PER_IMAGE = 83.0  # forward + backward of the tutorial CNN


def run(cmd, env):
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"mnist.py: {' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def sgemm_peak(threads):
    """GFLOP/s of OpenBLAS sgemm at n = 1024 (bench/openblas_peak.c), or None."""
    exe = os.path.join(ROOT, "build", "bench", "openblas_peak")
    if not os.path.exists(exe):
        return None
    out = subprocess.run([exe, str(threads), "0.2", "3", "1024"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("result"):
            fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
            for key in ("gflops", "GFLOPs", "gflop_s"):
                if key in fields:
                    return float(fields[key])
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200, help="CNN training steps timed")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=5, help="softmax runs per side (the quickest counts)")
    a = p.parse_args()
    env = dict(os.environ)
    env.setdefault("MOONFLOW_DATA", os.path.join(ROOT, "..", "shared", "data", "mnist"))
    env.pop("OMP_NUM_THREADS", None)
    env.pop("OPENBLAS_NUM_THREADS", None)
    mf = [os.path.join(ROOT, "build", "moonflow"), "bench/mnist.lua"]
    pt = ["/usr/bin/python3", "bench/torch_mnist.py"]
    steps = ["--steps", "3" if a.quick else str(a.steps)]
    sm_steps = ["--steps", "20"] if a.quick else []
    res = {}
    for t in (1, 2):
        th = ["--threads", str(t)]
        # the softmax program takes a fraction of a second: a hiccup of the machine decides a single
        # run, so each side runs it a.repeats times, alternating, and keeps its quickest run
        for _ in range(1 if a.quick else a.repeats):
            for who, cmd in (("mf", mf), ("pt", pt)):
                r = run(cmd + ["softmax"] + th + sm_steps, env)
                old = res.get((who, "softmax", t))
                if old is None or r["train_s"] < old["train_s"]:
                    res[(who, "softmax", t)] = r
        res[("mf", "cnn", t)] = run(mf + ["cnn"] + th + steps, env)
        res[("pt", "cnn", t)] = run(pt + ["cnn"] + th + steps, env)
        res[("mf", "infer", t)] = run(mf + ["infer"] + th, env)
        res[("pt", "infer", t)] = run(pt + ["infer"] + th, env)
    if a.quick:
        print("mnist.py: all MNIST benchmarks ran")
        return

    def best(who, what, key, low):
        vals = [(res[(who, what, t)][key], t) for t in (1, 2)]
        return min(vals) if low else max(vals)

    sm_mf, sm_mf_t = best("mf", "softmax", "train_s", True)
    sm_pt, sm_pt_t = best("pt", "softmax", "train_s", True)
    cnn_mf, cnn_mf_t = best("mf", "cnn", "train_images_per_s", False)
    cnn_pt, cnn_pt_t = best("pt", "cnn", "train_images_per_s", False)
    inf_mf, inf_mf_t = best("mf", "infer", "infer_images_per_s", False)
    inf_pt, inf_pt_t = best("pt", "infer", "infer_images_per_s", False)
    rss_mf = res[("mf", "cnn", cnn_mf_t)]["peak_rss_mb"]
    rss_pt = min(res[("pt", "cnn", t)]["peak_rss_mb"] for t in (1, 2))
    peak = sgemm_peak(2)
    rows = [
        ("softmax program, training time (s)", sm_mf, sm_mf_t, sm_pt, sm_pt_t, sm_mf / sm_pt,
         "<= 0.5", sm_mf / sm_pt <= 0.5),
        ("CNN training, images/s (batch 50, Adam)", cnn_mf, cnn_mf_t, cnn_pt, cnn_pt_t,
         cnn_mf / cnn_pt, ">= 2", cnn_mf / cnn_pt >= 2),
        ("CNN inference, images/s (batch 1000)", inf_mf, inf_mf_t, inf_pt, inf_pt_t, inf_mf / inf_pt,
         ">= 2", inf_mf / inf_pt >= 2),
        ("CNN training, peak RSS (MiB)", rss_mf, cnn_mf_t, rss_pt, None, rss_mf / rss_pt, "<= 0.5",
         rss_mf / rss_pt <= 0.5),
    ]
    cpu = platform.processor() or "x86_64"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    out = ["## MNIST programs: moonflow vs PyTorch (issue 3)", "",
           f"- Machine: {cpu}, {os.cpu_count()} cores; date "
           f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
           f"- Command: `/usr/bin/python3 bench/mnist.py --steps {a.steps}` (moonflow: "
           f"`build/moonflow bench/mnist.lua`, PyTorch {res[('pt', 'cnn', 1)]['peer']}: "
           "`bench/torch_mnist.py`), each run in its own process, at 1 and 2 threads; the best of "
           f"each side is compared (the softmax program: the quickest of {a.repeats} alternating runs "
           "per side and thread count)",
           f"- Softmax: 1000 steps of 100, SGD 0.5. CNN: the tutorial's network (NCHW), "
           f"{a.steps} timed steps after 5 warm-up steps, batch 50, Adam 1e-4. Inference: the "
           "10,000 test images in batches of 1000, evaluation mode.", "",
           "| measure | moonflow | (threads) | PyTorch | (threads) | ratio | target | met |",
           "|---|---|---|---|---|---|---|---|"]
    for name, m, mt, pv, ptt, r, target, ok in rows:
        out.append(f"| {name} | {m:.3f} | {mt} | {pv:.3f} | {ptt if ptt else 'best'} | {r:.2f} | "
                   f"{target} | {'yes' if ok else 'NO'} |")
    if peak:
        frac = cnn_mf * MFLOP_PER_IMAGE / 1000 / peak
        out.append("")
        out.append(f"CNN training at {cnn_mf:.0f} images/s x {MFLOP_PER_IMAGE:.0f} MFLOP = "
                   f"{cnn_mf * MFLOP_PER_IMAGE / 1000:.1f} GFLOP/s, {frac:.0%} of this machine's "
                   f"OpenBLAS SGEMM rate at n = 1024 on 2 threads ({peak:.1f} GFLOP/s).")
    out.append("")
    out.append("Raw results (JSON, one per process):")
    out.append("```")
    for k in sorted(res):
        out.append(json.dumps(res[k], sort_keys=True))
    out.append("```")
    text = "\n".join(out) + "\n"
    subprocess.run(["/usr/bin/python3", os.path.join(HERE, "section.py"),
                    os.path.join(HERE, "RESULTS.md"), "mnist"], input=text, text=True, check=True)
    print(text)


if __name__ == "__main__":
    main()
