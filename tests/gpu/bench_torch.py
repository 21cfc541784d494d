#!/usr/bin/env python3
"""bench_torch.py — the PyTorch peer of tests/gpu/bench.lua, on the same GPU in the same run: the
float32 4096 matmul with TF32 on and off (cuBLAS through torch.matmul: cuBLAS's own rate) and the
tutorial CNN's training throughput (batch 50, Adam, cross-entropy, eager mode, inputs on the
device). Same JSON lines as bench.lua, names prefixed "torch_".

  python3 tests/gpu/bench_torch.py [--device cuda] [--steps 200] [--warmup 20] [--size 4096]
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def emit(name, value, unit):
    print(json.dumps({"bench": "torch_" + name, "value": value, "unit": unit}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--profile", type=int, default=0)
    o = ap.parse_args()
    dev = torch.device(o.device)
    gpu = dev.type == "cuda"

    def sync():
        if gpu:
            torch.cuda.synchronize()

    torch.manual_seed(1)
    n = o.size
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    for tf32 in ([True, False] if gpu else [False]):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        c = a @ b
        sync()
        reps = o.reps if gpu else 1
        t0 = time.perf_counter()
        for _ in range(reps):
            c = a @ b
        sync()
        s = (time.perf_counter() - t0) / reps
        emit("matmul%d_%s" % (n, "tf32" if tf32 else "fp32"), 2 * n**3 / s / 1e9, "GFLOP/s")
    del c
    # the same default as moonflow's conv2d (TF32 while the switch is on)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    model = nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(1024, 10),
    ).to(dev)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = 50
    xs = torch.rand(batch, 1, 28, 28, device=dev)
    ys = torch.tensor([(i * 7) % 10 for i in range(1, batch + 1)], device=dev)

    def step():
        loss = F.cross_entropy(model(xs), ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    for _ in range(o.warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(o.steps):
        loss = step()
    sync()
    s = time.perf_counter() - t0
    emit("cnn_train_b50", o.steps * batch / s, "images/s")
    emit("cnn_train_b50_step_ms", 1000 * s / o.steps, "ms")
    print("bench_torch.py: last loss %.4f on %s (torch %s)" % (loss.item(), dev, torch.__version__),
          file=__import__("sys").stderr)
    if gpu and o.profile > 0:
        profile(step, o.profile)


def profile(step, n):
    """--profile N: N more steps under torch.profiler, the CUDA time per step of each op to
    stderr (the peer of bench.lua --profile)."""
    import sys
    from torch.profiler import ProfilerActivity, profile as tprofile
    try:
        with tprofile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(n):
                step()
            torch.cuda.synchronize()
        table = None
        for key in ("device_time_total", "cuda_time_total"):  # the name in torch 2.x, and before
            try:
                table = prof.key_averages().table(sort_by=key, row_limit=30)
                break
            except Exception:
                pass
        print("bench_torch.py: GPU time of %d steps (torch.profiler)" % n, file=sys.stderr)
        print(table, file=sys.stderr)
    except Exception as e:  # the profiler is a diagnosis, not the benchmark
        print("bench_torch.py: torch.profiler failed: %s" % e, file=sys.stderr)


if __name__ == "__main__":
    main()
