#!/usr/bin/env bash
# test.sh — the test command: installs what is missing (setup.sh), builds moonflow twice and runs
# every test against each build:
#   build/       Release (the build users get), CUDA backend compiled when the toolkit is found;
#   build-asan/  AddressSanitizer + UndefinedBehaviorSanitizer, -O1 -g, with the CUDA backend
#                emulated on the CPU (tests/cuda_emu): the GPU tests run there.
# For each build it runs the C tests (ctest; each test prints `# passed N failed M`, counting its
# checks) and the Lua specs tests/lua/*_spec.lua (busted, with the module of that build: on the
# stock lua5.4 for Release, on the sanitized host build-asan/moonflow for ASan), then each file
# reader's fuzz target for a few seconds (scripts/fuzz.sh, build-fuzz/). The last line
# it prints is `N passed, N failed, N skipped`, summed over both builds; it exits non-zero when a
# check or spec failed, a test crashed, or a build step failed.
#
# Environment: MOONFLOW_TEST_ASAN=0 skips the sanitizer build (quicker local runs);
# MOONFLOW_TEST_JOBS sets the parallelism (default: the number of cores).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

jobs=${MOONFLOW_TEST_JOBS:-$(nproc)}
total_passed=0
total_failed=0
total_skipped=0

note() { printf '%s\n' "$*"; }
section() { printf '\n==== %s  [%dm%02ds]\n' "$*" $((SECONDS / 60)) $((SECONDS % 60)); }

# A step that is not a test (setup, configure, build) counts as one failure when it fails.
step_failed() {
  note "FAILED: $*"
  total_failed=$((total_failed + 1))
}

# ---- setup ------------------------------------------------------------------------------------
section "setup"
if ! scripts/setup.sh; then
  step_failed "scripts/setup.sh"
  printf '%d passed, %d failed, %d skipped\n' "$total_passed" "$total_failed" "$total_skipped"
  exit 1
fi

# Fixtures for tests that want the real MNIST files (they skip, saying so, without them).
if [[ -d $root/../shared/data/mnist ]]; then
  export MOONFLOW_DATA
  MOONFLOW_DATA=$(cd "$root/../shared/data/mnist" && pwd)
fi

# ---- build ------------------------------------------------------------------------------------
# build DIR CMAKE_ARGS... : configure and build; returns non-zero (and counts a failure) on error.
build() {
  local dir=$1
  shift
  section "build $dir"
  mkdir -p "$dir"
  if ! cmake -S . -B "$dir" -G Ninja "$@" >"$dir/configure.log" 2>&1; then
    tail -n 40 "$dir/configure.log"
    step_failed "cmake configure of $dir (log: $dir/configure.log)"
    return 1
  fi
  grep -E 'moonflow:' "$dir/configure.log" || true
  if ! ninja -C "$dir" -j "$jobs" >"$dir/build.log" 2>&1; then
    grep -E -B2 -A12 'error|FAILED' "$dir/build.log" | head -n 80
    step_failed "build of $dir (log: $dir/build.log)"
    return 1
  fi
  note "built $dir (log: $dir/build.log)"
}

# ---- C tests ----------------------------------------------------------------------------------
# c_tests DIR : runs ctest verbosely (every output line is prefixed `<test number>: `), then adds
# each test's `# passed N failed M`. A test that exits non-zero (a crash, a sanitizer report, a
# timeout) without reporting a failed check counts as one failed check; a test that prints no
# summary counts as one check.
c_tests() {
  local dir=$1 timeout=$2
  local log="$dir/ctest.log"
  section "C tests ($dir)"
  if ! ctest --test-dir "$dir" -N 2>/dev/null | grep -q 'Total Tests: [1-9]'; then
    note "no C tests registered in $dir"
    return 0
  fi
  ctest --test-dir "$dir" -V -j "$jobs" --timeout "$timeout" >"$log" 2>&1
  local result p f
  # awk prints, per test: number name status passed failed skipped (a test that could not run
  # some checks here, say without a GPU, prints `# skipped N` after its summary)
  result=$(awk '
    /^[0-9]+: # passed [0-9]+ failed [0-9]+/ {
      n = $1; sub(/:$/, "", n); p[n] = $4; f[n] = $6
    }
    /^[0-9]+: # skipped [0-9]+$/ {
      n = $1; sub(/:$/, "", n); k[n] = $4
    }
    /^ *[0-9]+\/[0-9]+ +Test +#[0-9]+: / {
      n = $3; sub(/^#/, "", n); sub(/:$/, "", n); name[n] = $4
      st = $0; sub(/^[^:]*: +[^ ]+ [ .]*/, "", st); sub(/^\*\*\*/, "", st)
      sub(/ +[0-9.]+ sec$/, "", st); status[n] = st
    }
    END {
      for (n in name) {
        ok = (status[n] ~ /^Passed/)
        if (n in p) { pp = p[n]; ff = f[n]; if (!ok && ff == 0) ff = 1 }
        else { pp = ok ? 1 : 0; ff = ok ? 0 : 1 }
        gsub(/ /, "_", status[n])
        print n, name[n], status[n], pp, ff, (n in k) ? k[n] : 0
      }
    }' "$log" | sort -n)
  if [[ -z $result ]]; then
    tail -n 30 "$log"
    step_failed "ctest in $dir produced no results (log: $log)"
    return 0
  fi
  local n name status k
  while read -r n name status p f k; do
    printf '  %-28s %6d passed %4d failed %4d skipped  %s\n' "$name" "$p" "$f" "$k" "${status//_/ }"
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f))
    total_skipped=$((total_skipped + k))
    if ((f > 0)); then
      note "  ---- output of $name (last 40 lines):"
      grep -E "^$n: " "$log" | sed -E "s/^$n: /    /" |
        grep -v -E "^    (Test command|Working Directory|Test timeout computed)" | tail -n 40
    fi
  done <<<"$result"
}

# ---- Lua specs --------------------------------------------------------------------------------
# lua_specs DIR LUA [ENV=VALUE...] : runs busted with the interpreter LUA and the module of DIR,
# one process per spec file (a crash or a sanitizer abort then loses only that file's results),
# and parses the summary line of the plainTerminal handler, `N successes / N failures / N errors /
# N pending`. (Not the TAP handler: busted 2.1.1's TAP handler itself crashes on a spec with a
# syntax error.) A file whose run prints no summary counts as one failure. Each file has 600 s:
# under the sanitizers predict_digit_spec trains the CNN for 300 steps, about 280 s on 2 busy cores.
lua_specs() {
  local dir=$1 lua=$2
  shift 2
  section "Lua specs ($dir)"
  local specs=(tests/lua/*_spec.lua)
  if [[ ! -e ${specs[0]} ]]; then
    note "no Lua specs in tests/lua"
    return 0
  fi
  mkdir -p "$dir/busted"
  local spec name log rc summary s f e p
  for spec in "${specs[@]}"; do
    name=$(basename "$spec" .lua)
    log="$dir/busted/$name.log"
    env LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;$root/tests/lua/?.lua;;" \
      LUA_CPATH="$root/$dir/lua/?.so;;" \
      MOONFLOW_BUILD="$root/$dir" MOONFLOW_BIN="$root/$dir/moonflow" \
      MOONFLOW_EMBED_BIN="$root/$dir/embed_example" \
      "$@" timeout 600 busted --lua="$lua" -o plainTerminal "$spec" >"$log" 2>&1
    rc=$?
    summary=$(grep -E -m1 \
      '^[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' "$log")
    if [[ -z $summary ]]; then
      printf '  %-28s no summary: exit status %d%s\n' "$name" "$rc" \
        "$( ((rc == 124)) && echo ' (timed out)')"
      local at
      at=$(grep -n -m1 -E 'ERROR: [A-Za-z]+Sanitizer|runtime error:|Segmentation fault' "$log" |
        cut -d: -f1)
      if [[ -n $at ]]; then
        sed -n "${at},$((at + 16))p" "$log" | sed "s/^/    /"
      else
        tail -n 30 "$log" | sed 's/^/    /'
      fi
      step_failed "busted $spec in $dir (log: $log)"
      continue
    fi
    # "N successes / N failures / N errors / N pending : T seconds" -> the four numbers
    read -r s f e p < <(tr -c '0-9\n' ' ' <<<"${summary%%:*}")
    printf '  %-28s %6d passed %4d failed %4d pending\n' "$name" "$s" "$((f + e))" "$p"
    total_passed=$((total_passed + s))
    total_failed=$((total_failed + f + e))
    total_skipped=$((total_skipped + p))
    if ((f + e > 0)); then
      awk '/^(Failure|Error) -> /{show=1} /^Pending -> /{show=0} show' "$log" | head -n 100 |
        sed 's/^/    /'
    elif ((rc != 0)); then
      step_failed "busted $spec in $dir exited with status $rc (log: $log)"
    fi
  done
}

# ---- Release ----------------------------------------------------------------------------------
if build build -DCMAKE_BUILD_TYPE=Release; then
  c_tests build 300
  lua_specs build lua5.4
  # The benchmarks in their quick mode: each counts as one test that passes when it runs through.
  section "benchmarks, quick mode (build)"
  for bench in "bench/run.sh --quick" "/usr/bin/python3 bench/mnist.py --quick" \
    "build/moonflow bench/session.lua --quick"; do
    if [[ $bench == *mnist* || $bench == *session* ]] && [[ -z ${MOONFLOW_DATA:-} ]]; then
      note "skipped: $bench (no MNIST files: set MOONFLOW_DATA)"
      total_skipped=$((total_skipped + 1))
    elif $bench >build/bench-quick.log 2>&1; then
      note "ok: $bench"
      total_passed=$((total_passed + 1))
    else
      tail -n 20 build/bench-quick.log
      step_failed "$bench (log: build/bench-quick.log)"
    fi
  done
fi

# ---- ASan + UBSan -----------------------------------------------------------------------------
# With the CUDA backend emulated (MOONFLOW_CUDA=EMU, tests/cuda_emu): its .cu files compiled for
# the CPU, sanitized like the rest, with cudart, cuBLAS and cuDNN emulated, so the tests that need
# a GPU run our own kernels, allocator, transfers and library calls here.
# -O1 keeps the tests reasonably fast while stack traces stay readable; asserts stay on.
# Without the CUDA toolkit's headers the build is CPU only.
if [[ ${MOONFLOW_TEST_ASAN:-1} != 0 ]]; then
  asan_cuda=OFF
  [[ -e ${CUDA_HOME:-/usr/local/cuda}/include/cuda_runtime.h ]] && asan_cuda=EMU
  if build build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG="-g -O1" \
    -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" -DMOONFLOW_SANITIZE=ON -DMOONFLOW_CUDA=$asan_cuda; then
    # The emulator shows two GPUs, so that the tests of a second one run too.
    export MOONFLOW_CUDA_EMU_DEVICES=2
    # C tests: leak detection on; any report makes the test exit non-zero.
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
      UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
      c_tests build-asan 600
    # Lua specs: the sanitized module has to run in a sanitized process, with the ASan runtime
    # loaded first. The interpreter here is the sanitized host, build-asan/moonflow, which runs
    # `moonflow script args` exactly as `lua5.4 script args` does (busted re-executes itself as
    # `<lua> /usr/bin/busted --ignore-lua ...`); its built-in moonflow.core is the sanitized one.
    # Not LD_PRELOAD of libasan into the stock lua5.4: the preload is inherited by every child a
    # spec starts, and curl under a preloaded libasan hangs (the MNIST download specs use curl).
    # Leak detection stays on: busted ends with os.exit(code, true), which closes the Lua state,
    # so whatever is still allocated at exit was leaked.
    if [[ ! -x build-asan/moonflow ]]; then
      step_failed "build-asan/moonflow was not built"
    else
      lua_specs build-asan "$root/build-asan/moonflow" \
        ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
        UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} MOONFLOW_SANITIZED=1
    fi
  fi
else
  section "sanitizer build skipped (MOONFLOW_TEST_ASAN=0)"
fi

# ---- fuzz -------------------------------------------------------------------------------------
# scripts/fuzz.sh: each file reader's libFuzzer target (tests/fuzz) for a few seconds under ASan +
# UBSan, built in build-fuzz/; each target is one check (skipped when clang/libFuzzer is missing).
# MOONFLOW_TEST_FUZZ_SECONDS sets the seconds per target (default 10; 0: the seed corpora only).
section "fuzz (build-fuzz)"
mkdir -p build-fuzz
scripts/fuzz.sh "${MOONFLOW_TEST_FUZZ_SECONDS:-10}" >build-fuzz/fuzz.log 2>&1
fuzz_rc=$?
sed 's/^/  /' build-fuzz/fuzz.log
fuzz_ok=$(grep -c '^ok: ' build-fuzz/fuzz.log)
fuzz_failed=$(grep -c '^FAILED: ' build-fuzz/fuzz.log)
total_passed=$((total_passed + fuzz_ok))
total_skipped=$((total_skipped + $(grep -c '^skipped: ' build-fuzz/fuzz.log)))
total_failed=$((total_failed + fuzz_failed))
if ((fuzz_rc != 0 && fuzz_rc != 77 && fuzz_failed == 0)); then
  step_failed "scripts/fuzz.sh exited with status $fuzz_rc (log: build-fuzz/fuzz.log)"
fi

section "done"
printf '%d passed, %d failed, %d skipped\n' "$total_passed" "$total_failed" "$total_skipped"
((total_failed == 0))
