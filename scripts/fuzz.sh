#!/usr/bin/env bash
# fuzz.sh — builds the file readers' libFuzzer targets (tests/fuzz/fuzz_<reader>.c) in build-fuzz/
# with clang, AddressSanitizer and UndefinedBehaviorSanitizer (CMake option MOONFLOW_FUZZ=ON, CPU
# only), then runs each for N seconds over a fresh copy of its seed corpus tests/fuzz/corpus/<reader>/
# (build-fuzz/corpus/<reader>/, where the inputs the fuzzer finds interesting accumulate).
#
# Usage: scripts/fuzz.sh [seconds-per-target] [reader ...]
#   seconds  default 20; 0 runs each target once over its seed corpus only (a quick regression check)
#   reader   safetensors npy npz idx events image graphdef api (default: every tests/fuzz/fuzz_*.c
#            and fuzz_*.lua; the Lua ones run on the moonflow host, MOONFLOW_FUZZ_LUA_HOST or the
#            sanitized build-asan/moonflow, else build/moonflow; `api` is the random caller of the
#            Lua API, tests/fuzz/fuzz_api.lua, run with leak detection on)
#
# Prints one line per target, `ok: fuzz_<reader> (R runs in S s, C corpus inputs)` or
# `FAILED: fuzz_<reader> (crash|leak|timeout|out of memory|...; input: build-fuzz/crashes/...)`,
# with the sanitizer's report from the target's log (build-fuzz/logs/<reader>.log) under a failure;
# the input that failed is kept under build-fuzz/crashes/ (replay it: build-fuzz/fuzz_<reader> FILE).
# A build failure prints `FAILED: build of build-fuzz`. Exit status: 0 when every target ran clean,
# 1 on any failure, 77 (nothing run, `skipped: ...` lines) when clang or libFuzzer is missing.
# Environment: MOONFLOW_FUZZ_CC the compiler (default clang-14, else clang; not CC, which may name
# gcc for the other builds); MOONFLOW_FUZZ_JOBS the build parallelism (default nproc).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

secs=${1:-20}
shift $(($# > 0 ? 1 : 0))
if ! [[ $secs =~ ^[0-9]+$ ]]; then
  echo "usage: scripts/fuzz.sh [seconds-per-target] [reader ...]" >&2
  exit 2
fi
readers=("$@")
if ((${#readers[@]} == 0)); then
  for f in tests/fuzz/fuzz_*.c tests/fuzz/fuzz_*.lua; do
    f=${f##*/fuzz_}
    readers+=("${f%.*}")
  done
fi
# C targets (libFuzzer) and Lua targets (tests/fuzz/fuzz_<reader>.lua: mutation fuzzers of the readers
# written in Lua, run by the moonflow host: the sanitized build-asan/moonflow when it exists)
c_readers=() lua_readers=()
for r in "${readers[@]}"; do
  if [[ -f tests/fuzz/fuzz_$r.c ]]; then
    c_readers+=("$r")
  elif [[ -f tests/fuzz/fuzz_$r.lua ]]; then
    lua_readers+=("$r")
  else
    echo "fuzz.sh: no target tests/fuzz/fuzz_$r.c or .lua" >&2
    exit 2
  fi
done

dir=build-fuzz
mkdir -p "$dir/logs" "$dir/crashes"
lua_failed=0
if ((${#lua_readers[@]} > 0)); then
  host=${MOONFLOW_FUZZ_LUA_HOST:-}
  [[ -z $host && -x build-asan/moonflow ]] && host=build-asan/moonflow
  [[ -z $host && -x build/moonflow ]] && host=build/moonflow
  for r in "${lua_readers[@]}"; do
    if [[ -z $host ]]; then
      echo "skipped: fuzz_$r (no moonflow host built: build/moonflow or build-asan/moonflow)"
      continue
    fi
    log=$dir/logs/$r.log
    # the API fuzzer ends by closing its Lua state: whatever is still allocated then was leaked
    leaks=0
    [[ $r == api ]] && leaks=1
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=$leaks} "$host" tests/fuzz/fuzz_"$r".lua \
      "$((secs > 0 ? secs : 1))" tests/fuzz/corpus/"$r" "$dir/crashes" >"$log" 2>&1
    rc=$?
    if ((rc == 0)) && grep -q '^ok: ' "$log"; then
      grep '^ok: ' "$log"
    else
      lua_failed=$((lua_failed + 1))
      if grep -q '^FAILED: ' "$log"; then
        grep '^FAILED: ' "$log"
      else # the host died: a crash or a sanitizer report
        echo "FAILED: fuzz_$r (exit status $rc, a crash; log: $log)"
        tail -n 20 "$log" | sed 's/^/    /'
      fi
    fi
  done
fi
readers=("${c_readers[@]}")
if ((${#readers[@]} == 0)); then
  ((lua_failed == 0))
  exit
fi
skip_all() {
  for r in "${readers[@]}"; do echo "skipped: fuzz_$r ($*)"; done
  exit $((lua_failed > 0 ? 1 : 77))
}

# ---- clang and libFuzzer ----------------------------------------------------------------------
cc=${MOONFLOW_FUZZ_CC:-}
if [[ -z $cc ]]; then
  cc=$(command -v clang-14 || command -v clang || true)
fi
[[ -n $cc ]] && command -v "$cc" >/dev/null || skip_all "no clang: apt-get install clang libclang-rt-14-dev"
probe=$dir/logs/probe
if ! printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' |
  "$cc" -fsanitize=fuzzer,address,undefined -x c - -o "$probe" >"$probe.log" 2>&1; then
  skip_all "$cc cannot link libFuzzer with ASan/UBSan (apt-get install libclang-rt-14-dev; see $probe.log)"
fi

# ---- build ------------------------------------------------------------------------------------
jobs=${MOONFLOW_FUZZ_JOBS:-$(nproc)}
targets=("${readers[@]/#/fuzz_}")
if ! CC=$cc cmake -S . -B "$dir" -G Ninja -DMOONFLOW_FUZZ=ON -DMOONFLOW_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG="-g -O1" >"$dir/logs/configure.log" 2>&1; then
  tail -n 20 "$dir/logs/configure.log"
  echo "FAILED: build of $dir (configure; log: $dir/logs/configure.log)"
  exit 1
fi
if ! ninja -C "$dir" -j "$jobs" "${targets[@]}" >"$dir/logs/build.log" 2>&1; then
  grep -E -A12 'error|FAILED' "$dir/logs/build.log" | head -n 60
  echo "FAILED: build of $dir (log: $dir/logs/build.log)"
  exit 1
fi

# ---- run --------------------------------------------------------------------------------------
# Leaks are reported at exit of each input's run (libFuzzer's -detect_leaks); UBSan aborts on the
# first report (-fno-sanitize-recover), which libFuzzer takes as a crash and saves the input.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=0
for r in "${readers[@]}"; do
  work=$dir/corpus/$r log=$dir/logs/$r.log
  rm -rf "$work"
  mkdir -p "$work"
  cp tests/fuzz/corpus/"$r"/* "$work"/
  # -timeout: an input that takes over 10 s is a hang; -rss_limit_mb/-malloc_limit_mb: a small
  # file asking for gigabytes is a failure too; -max_len: inputs up to 16 KiB.
  opts=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=16384
    -artifact_prefix="$dir/crashes/$r-" -print_final_stats=1)
  if ((secs == 0)); then opts+=(-runs=0); else opts+=(-max_total_time="$secs"); fi
  "$dir/fuzz_$r" "${opts[@]}" "$work" >"$log" 2>&1
  rc=$?
  runs=$(grep -o -E 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -o -E '[0-9]+$' |
    tail -n 1)
  ninputs=$(find "$work" -type f | wc -l)
  if ((rc == 0)) && ! grep -q -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:' \
    "$log"; then
    echo "ok: fuzz_$r (${runs:-?} runs in ${secs} s, $ninputs corpus inputs)"
    continue
  fi
  failed=$((failed + 1))
  kind=$(grep -o -E -m1 'ERROR: libFuzzer: [a-z-]+|ERROR: [A-Za-z]+Sanitizer: [A-Za-z-]+|runtime error: .*' \
    "$log" | head -n 1)
  saved=$(grep -o -E 'Test unit written to [^ ]+' "$log" | tail -n 1 | sed 's/Test unit written to //')
  echo "FAILED: fuzz_$r (${kind:-exit status $rc}; input: ${saved:-none saved}; log: $log)"
  at=$(grep -n -m1 -E '==[0-9]+==ERROR|runtime error:|ERROR: libFuzzer' "$log" | cut -d: -f1)
  sed -n "${at:-1},$((${at:-1} + 24))p" "$log" | sed 's/^/    /'
done
((failed + lua_failed == 0))
