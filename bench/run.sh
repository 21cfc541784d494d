#!/usr/bin/env bash
# run.sh — runs every benchmark in one go on this machine and writes bench/RESULTS.md:
#   OpenBLAS's own sgemm rate (openblas_peak.c), moonflow matmul (matmul.lua), moonflow add/mul/exp
#   (elementwise.lua) and the numpy peers (peers.py), all at 1 thread and at BENCH_THREADS
#   (default: the number of cores), then the table of moonflow vs peers (report.py).
#   bench/run.sh           full run (a few minutes), writes bench/RESULTS.md
#   bench/run.sh --quick   small sizes and short timings, only checks that everything works;
#                          writes build/bench/RESULTS-quick.md and leaves bench/RESULTS.md alone.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

quick=()
if [[ ${1:-} == --quick ]]; then
  quick=(--quick)
elif [[ $# -gt 0 ]]; then
  echo "usage: bench/run.sh [--quick]" >&2
  exit 2
fi
threads=${BENCH_THREADS:-$(nproc)}

scripts/setup.sh
mkdir -p build/bench
if [[ ! -f build/build.ninja ]]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >build/bench/configure.log 2>&1 ||
    { cat build/bench/configure.log; exit 1; }
fi
ninja -C build mflua >/dev/null
gcc -O2 -Wall -Wextra bench/openblas_peak.c -o build/bench/openblas_peak \
  -I/usr/include/x86_64-linux-gnu/openblas-pthread \
  -L/usr/lib/x86_64-linux-gnu/openblas-pthread -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-pthread \
  -lopenblas

export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;;"
export LUA_CPATH="$root/build/lua/?.so;;"
unset OPENBLAS_NUM_THREADS OMP_NUM_THREADS # moonflow sets OpenBLAS's thread count itself

sizes=(128 256 512 1024 2048)
((${#quick[@]})) && sizes=(128 256)
if ((${#quick[@]})); then timing=(0.01 2) rounds=1; else timing=(0.2 5) rounds=2; fi
# Other work on the machine skews every number: record the load average before and after.
load() { cut -d' ' -f1-3 /proc/loadavg; }
busy() { awk -v l="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN { exit !(l > 0.5) }'; }
out=build/bench/results.txt
{
  echo "# threads compared: 1 and $threads; OpenBLAS and moonflow matmul at both, numpy matmul at $threads"
  echo "# load average before: $(load)"
  busy && echo "# WARNING: the machine was busy when the run started; timings are noisy"
  # Two rounds when measuring for real: load that comes and goes then hits each program in a
  # round, and report.py keeps the best time of each measurement over the rounds.
  for round in $(seq "${rounds}"); do
    echo "# round $round"
    for t in 1 "$threads"; do
      build/bench/openblas_peak "$t" "${timing[@]}" "${sizes[@]}"
    done
    lua5.4 bench/matmul.lua "${quick[@]}" --threads "1,$threads"
    lua5.4 bench/elementwise.lua "${quick[@]}" --threads "1,$threads"
    OPENBLAS_NUM_THREADS=$threads /usr/bin/python3 bench/peers.py "${quick[@]}"
  done
  echo "# load average after: $(load)"
} | tee "$out"
((${#quick[@]})) && lua5.4 bench/layout.lua --quick # NCHW vs NHWC CNN: same results, both run

if ((${#quick[@]})); then
  /usr/bin/python3 bench/report.py "$out" --threads "$threads" --command "bench/run.sh --quick" \
    --check >build/bench/RESULTS-quick.md
  echo "bench: all benchmarks ran (build/bench/RESULTS-quick.md)"
else
  /usr/bin/python3 bench/report.py "$out" --threads "$threads" --command "bench/run.sh" |
    /usr/bin/python3 bench/section.py bench/RESULTS.md core
  sed -n '/^### Summary/,/^### Raw/p' bench/RESULTS.md | grep '^-'
  echo "bench: wrote bench/RESULTS.md"
fi
