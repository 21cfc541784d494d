#!/usr/bin/python3
"""peers.py — the numpy side of the benchmarks: float32 matmul (n x n, n = 128 ... 2048) and
add, mul, exp of 2^20-element float32 vectors (allocating results, as moonflow's ops do), with the
same timing rule as the Lua benchmarks: seconds per call, best of SAMPLES samples, each repeating
the call for at least MIN_SECONDS.

    /usr/bin/python3 bench/peers.py [--quick] [--min-seconds S] [--samples K]

numpy's BLAS is Debian's libblas.so.3 (OpenBLAS here); its thread count comes from
OPENBLAS_NUM_THREADS, which bench/run.sh sets. numpy's elementwise ops use one thread.
Prints `result impl=numpy bench=... n=N threads=T seconds=S [gflops=G]` lines."""
import argparse
import gc
import os
import time

import numpy as np


def best(fn, min_s, samples):
    fn()  # warm-up
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    reps = int(min_s / one) + 1 if one > 0 else 1
    b = one
    for _ in range(samples):
        gc.collect()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        b = min(b, (time.perf_counter() - t0) / reps)
    return b


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--min-seconds", type=float, default=0.2)
    p.add_argument("--samples", type=int, default=5)
    o = p.parse_args()
    if o.quick:
        o.min_seconds, o.samples = 0.01, 2
    blas_threads = int(os.environ.get("OPENBLAS_NUM_THREADS", os.cpu_count() or 1))
    print(f"# numpy {np.__version__}: BLAS threads {blas_threads}, "
          f"best of {o.samples} samples of >= {o.min_seconds:g} s", flush=True)
    rng = np.random.default_rng(42)

    for n in ([128, 256] if o.quick else [128, 256, 512, 1024, 2048]):
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        s = best(lambda: a @ b, o.min_seconds, o.samples)
        print(f"result impl=numpy bench=matmul n={n} threads={blas_threads} seconds={s:.6e} "
              f"gflops={2 * n ** 3 / s * 1e-9:.2f}", flush=True)

    n = 1 << 20
    a = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    for name, fn in (("add", lambda: a + b), ("mul", lambda: a * b), ("exp", lambda: np.exp(a))):
        s = best(fn, o.min_seconds, o.samples)
        print(f"result impl=numpy bench={name} n={n} threads=1 seconds={s:.6e}", flush=True)


if __name__ == "__main__":
    main()
