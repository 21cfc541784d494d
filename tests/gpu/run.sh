#!/usr/bin/env bash
# run.sh — the one script for the GPU machine (../shared/device/README.md). From the project root:
#     source .device/on-gpu.sh; tests/gpu/run.sh
# (through the session tool: run(command="source .device/on-gpu.sh; tests/gpu/run.sh",
#  carry=[".device"], timeout_s=540); `../shared/device/pack.sh` makes .device/ once.)
#
# Parts, each with its own time limit, in this order (the whole aims at < 8 minutes on a 16-core
# H100; what each op runs on is listed in core/cuda/README):
#   1. configure + build a CUDA build in build-gpu/ (sm_90 + PTX, -j16)
#   1b. tests/gpu/cudnn_probe: which layouts, batch sizes and calls the real cuDNN takes
#   2. test_cuda (elementwise, copies/casts incl. float16/bfloat16, random/dropout, reductions,
#      matmul, softmax, optimizers, autograd, devices and memory) and test_cuda_parity (conv2d
#      NCHW/NHWC/TF32, pooling, gather/scatter_add, index_select, cross-entropy, GPU
#      finite-difference gradient checks): CPU vs GPU; test_cuda_half (float16/bfloat16 conv2d,
#      pooling, softmax, batch norm, cross-entropy, optimizer steps, dropout against float32);
#      test_cuda_reduce (reductions and softmax on shapes that reach each launch layout)
#   3. the MNIST examples with --device cuda, checked against the CPU's accuracy
#   4. the GPU benchmarks (tests/gpu/bench.lua) against PyTorch on the same GPU
#      (tests/gpu/bench_torch.py): matmul 4096 and the tutorial CNN's training throughput, then
#      each side's GPU time per op of a step (mf.cuda.profile, torch.profiler; in bench-*.err)
#   4b. the tutorial's full run (examples/mnist_cnn.lua --device cuda, 20,000 steps) against
#      bench/torch_mnist.py cnn --device cuda: training times and test accuracies
#   5. the Lua specs that touch CUDA (those mentioning cuda/gpu; device_spec.lua runs the four
#      MNIST examples on the GPU too), while the time budget lasts
# A part that fails or times out is recorded and the next one runs; the summary is printed
# whatever happens (also on Ctrl-C or when the build fails). Exit status 0 only when every part
# passed.
# Environment: MOONFLOW_GPU_JOBS (16), MOONFLOW_GPU_BUILD (build-gpu), MOONFLOW_GPU_ALL=1 (also
# every other C test and Lua spec: several more minutes), MOONFLOW_GPU_BENCH_STEPS (200),
# MOONFLOW_GPU_BUDGET (480: seconds after which the remaining Lua specs are skipped, said so),
# MOONFLOW_GPU_SKIP_BUILD=1 (use $dir as it is: a rerun on a warm machine, or a check here),
# MOONFLOW_GPU_FULL_STEPS (20000: the full run's steps).
# Without a GPU it still builds and runs; the GPU tests then report their skips.
# MOONFLOW_GPU_EMU=1: a rehearsal on a machine without a GPU: the same parts with the CUDA backend
# emulated on the CPU (-DMOONFLOW_CUDA=EMU, tests/cuda_emu), the CNN example left out (hours
# there), tiny benchmarks, PyTorch on the CPU, longer time limits — a check of this script.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
jobs=${MOONFLOW_GPU_JOBS:-16}
dir=${MOONFLOW_GPU_BUILD:-build-gpu}
steps=${MOONFLOW_GPU_BENCH_STEPS:-200}
budget=${MOONFLOW_GPU_BUDGET:-480}
data=${MOONFLOW_DATA:-$root/../shared/data/mnist}
emu=${MOONFLOW_GPU_EMU:-0}
slow=1 # time limits are multiplied by it
# --profile: the GPU time per step of each op after the timed steps (to bench-*.err)
bench_args=(--steps "$steps" --profile 50)
torch_args=(--steps "$steps" --profile 50)
if [[ $emu == 1 ]]; then
  slow=4
  bench_args=(--steps 2 --warmup 1 --size 256 --reps 2 --profile 1)
  torch_args=(--steps 2 --warmup 1 --size 256 --reps 2 --device cpu)
fi
failed=0
summary=()
say() { printf '%s\n' "$*"; }
section() { printf '\n==== %s  [%dm%02ds]\n' "$*" $((SECONDS / 60)) $((SECONDS % 60)); }
record() { summary+=("$*"); }
fail() {
  summary+=("FAILED: $*")
  failed=1
}
print_summary() {
  section "summary"
  local l
  for l in "${summary[@]}"; do say "  $l"; done
  ((failed == 0)) && say "GPU run: OK (${SECONDS}s)" || say "GPU run: FAILED (${SECONDS}s)"
  # Through the session tool, only what is under $OUT comes back: the summary, the logs, and
  # results-gpu.md, the section for bench/RESULTS.md
  #   (python3 bench/section.py bench/RESULTS.md gpu < .../results-gpu.md)
  if [[ -n ${OUT:-} && -d ${OUT:-} ]]; then
    mkdir -p "$OUT/gpu-run"
    for l in "${summary[@]}"; do printf '%s\n' "$l"; done >"$OUT/gpu-run/summary.txt"
    cp "$dir"/*.log "$dir"/*.jsonl "$dir"/*.err "$dir"/results-gpu.md "$OUT/gpu-run/" 2>/dev/null
    [[ -d $dir/busted ]] && cp -r "$dir/busted" "$OUT/gpu-run/" 2>/dev/null
    say "copied the summary and logs to \$OUT/gpu-run"
  fi
}
trap print_summary EXIT
trap 'fail "interrupted"; exit 130' INT TERM

# `# passed N failed M` (and `# skipped N`) of a C test's log, as one line
c_result() {
  local log=$1 line sk
  line=$(grep -E '^# passed [0-9]+ failed [0-9]+' "$log" | tail -n 1)
  sk=$(grep -E '^# skipped [0-9]+$' "$log" | tail -n 1)
  printf '%s%s' "${line:-no summary}" "${sk:+, ${sk#\# }}"
}

section "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null ||
  say "nvidia-smi: no GPU visible"
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
nvcc --version 2>/dev/null | tail -n 1
say "cores: $(nproc)"

# ---- 1. configure and build -------------------------------------------------------------------
if [[ ${MOONFLOW_GPU_SKIP_BUILD:-0} == 1 ]]; then
  record "build: skipped (MOONFLOW_GPU_SKIP_BUILD=1), using $dir as it is"
else
section "configure $dir"
mkdir -p "$dir"
args=(-DCMAKE_BUILD_TYPE=Release -DMOONFLOW_CUDA=ON)
[[ $emu == 1 ]] && args=(-DCMAKE_BUILD_TYPE=Release -DMOONFLOW_CUDA=EMU)
command -v ninja >/dev/null && [[ ! -f $dir/CMakeCache.txt || -f $dir/build.ninja ]] && args+=(-G Ninja)
# The packed dependencies (on-gpu.sh unpacks them into /opt/mfdeps): OpenBLAS and stb live where
# the top-level CMakeLists.txt does not look by default.
deps=/opt/mfdeps/usr
if [[ -d $deps/include/x86_64-linux-gnu/openblas-pthread ]]; then
  args+=(-DOPENBLAS_INCLUDE="$deps/include/x86_64-linux-gnu/openblas-pthread"
    -DOPENBLAS_LIB="$deps/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so")
fi
[[ -f $deps/include/stb/stb_image.h ]] && args+=(-DSTB_INCLUDE="$deps/include/stb")
# cuDNN: the toolkit's, else the one PyTorch's pip packages bring.
if [[ $emu != 1 && ! -f /usr/local/cuda/include/cudnn.h && -z ${CUDNN_ROOT:-} ]]; then
  cudnn=$(python3 -c 'import os, nvidia.cudnn as c; print(os.path.dirname(c.__file__) if c.__file__ else list(c.__path__)[0])' 2>/dev/null)
  [[ -n $cudnn ]] && args+=(-DCUDNN_ROOT="$cudnn")
fi
if ! timeout 120 cmake -S . -B "$dir" "${args[@]}" >"$dir/configure.log" 2>&1; then
  tail -n 40 "$dir/configure.log"
  fail "configure (log: $dir/configure.log)"
  exit 1
fi
grep -E 'moonflow:' "$dir/configure.log"
grep -q 'cuDNN not found' "$dir/configure.log" && fail "cuDNN not found: conv2d would stay on the CPU"
section "build"
if ! timeout $((360 * slow)) cmake --build "$dir" -j "$jobs" >"$dir/build.log" 2>&1; then
  grep -E -B2 -A12 'error|FAILED' "$dir/build.log" | head -n 80
  fail "build (log: $dir/build.log)"
  exit 1
fi
nwarn=$(grep -c -E 'warning' "$dir/build.log")
record "build: ok in $dir (${nwarn} warning lines; log: $dir/build.log)"
fi
# The CUDA backend is its own library, loaded on first use: the host must not link cudart itself.
[[ -f $dir/libmoonflow_cuda.so ]] || fail "MISSING: $dir/libmoonflow_cuda.so"
ldd "$dir/moonflow" | grep -q -E 'libcudart|libcublas' && fail "$dir/moonflow links CUDA itself"
"$dir/moonflow" -v 2>&1 | sed 's/^/  /'

ngpu=$("$dir/moonflow" -e 'io.write(require("moonflow").cuda.device_count())' 2>/dev/null)
say "GPUs moonflow sees: ${ngpu:-?}"
if ! [[ ${ngpu:-0} =~ ^[1-9] ]]; then
  if [[ -n $gpu_name ]]; then
    fail "nvidia-smi sees $gpu_name but moonflow sees no GPU"
  else
    record "NO GPU: the GPU tests skip; examples and benchmarks not run"
  fi
fi

# ---- 1b. what the real cuDNN takes (tests/gpu/cudnn_probe.cu; informational) ------------------
if [[ ${ngpu:-0} =~ ^[1-9] && -x $dir/cudnn_probe ]]; then
  section "cuDNN probe"
  timeout 90 "$dir/cudnn_probe" >"$dir/cudnn-probe.log" 2>&1
  head -n 1 "$dir/cudnn-probe.log" | sed 's/^/  /'
  grep '^FAIL' "$dir/cudnn-probe.log" | sed 's/^/  /'
  record "cudnn probe: $(grep -c '^PASS' "$dir/cudnn-probe.log") PASS, $(grep -c '^FAIL' "$dir/cudnn-probe.log") FAIL (what each means: tests/gpu/cudnn_probe.cu; log: $dir/cudnn-probe.log)"
fi

# ---- 2. C parity tests --------------------------------------------------------------------------
for t in test_cuda test_cuda_parity test_cuda_half test_cuda_reduce; do
  section "$t (CPU vs GPU)"
  if [[ ! -x $dir/$t ]]; then
    fail "$t: not built"
    continue
  fi
  timeout $((180 * slow)) "$dir/$t" >"$dir/$t.log" 2>&1
  rc=$?
  grep -E '^  |^#' "$dir/$t.log" | grep -v ' ok$' | tail -n 40 # cases that failed, and the totals
  grep -v -E '^  |^#' "$dir/$t.log" | head -n 40             # the first differences printed
  res=$(c_result "$dir/$t.log")
  if ((rc != 0)); then
    fail "$t: $res (exit $rc$( ((rc == 124)) && echo ', timed out'); log: $dir/$t.log)"
  else
    record "$t: $res"
  fi
done

if [[ ${MOONFLOW_GPU_ALL:-0} == 1 ]]; then
  section "the other C tests"
  timeout 300 ctest --test-dir "$dir" -E '^test_cuda' -j "$jobs" --timeout 240 \
    --output-on-failure >"$dir/ctest.log" 2>&1
  rc=$?
  grep -E 'tests passed|\*\*\*' "$dir/ctest.log" | tail -n 20
  res=$(grep -E 'tests passed' "$dir/ctest.log" || echo 'no summary')
  ((rc == 0)) && record "other C tests: $res" || fail "other C tests: $res (exit $rc)"
fi

# ---- 3. the examples on the GPU ----------------------------------------------------------------------
# example, its flags, the accuracy it must reach (the CPU's, less a little), time limit
run_example() {
  local ex=$1 want=$2 limit=$3
  shift 3
  local name log acc rc
  name=$(basename "$ex" .lua)
  log="$dir/example-$name.log"
  section "example $name --device cuda $*"
  limit=$((limit * slow))
  timeout "$limit" "$dir/moonflow" "$ex" --device cuda --data "$data" "$@" >"$log" 2>&1
  rc=$?
  tail -n 4 "$log" | sed 's/^/  /'
  if grep -q "unknown flag '--device'" "$log"; then
    fail "$name: not run (the example has no --device flag yet)"
    return
  fi
  acc=$(grep -E -o 'test accuracy: [0-9.]+' "$log" | tail -n 1 | awk '{print $3}')
  if ((rc != 0)) || [[ -z $acc ]]; then
    fail "$name --device cuda: exit $rc$( ((rc == 124)) && echo " (timed out after ${limit}s)"), no accuracy (log: $log)"
  elif awk -v a="$acc" -v w="$want" 'BEGIN { exit !(a >= w) }'; then
    record "$name --device cuda $*: test accuracy $acc (>= $want) in $(grep -E -o '[0-9]+ steps in [0-9.]+ s' "$log" | tail -n 1)"
  else
    fail "$name --device cuda: test accuracy $acc < $want (log: $log)"
  fi
}
if ! [[ ${ngpu:-0} =~ ^[1-9] ]]; then
  :
elif [[ -d $data ]]; then
  run_example examples/mnist_softmax.lua 0.90 90
  if [[ $emu == 1 ]]; then
    record "mnist_cnn: not run (hours on the emulator)"
  else
    run_example examples/mnist_cnn.lua 0.985 200 --quick
  fi
else
  fail "examples: not run (no MNIST files at $data: set MOONFLOW_DATA)"
fi

# ---- 4. benchmarks against PyTorch ---------------------------------------------------------------------
if [[ ${ngpu:-0} =~ ^[1-9] ]]; then
section "benchmarks (moonflow vs PyTorch on ${gpu_name:-this machine})"
timeout 150 "$dir/moonflow" tests/gpu/bench.lua "${bench_args[@]}" >"$dir/bench-moonflow.jsonl" \
  2>"$dir/bench-moonflow.err"
rc_m=$?
timeout 150 "${PYTHON:-python3}" tests/gpu/bench_torch.py "${torch_args[@]}" >"$dir/bench-torch.jsonl" \
  2>"$dir/bench-torch.err"
rc_t=$?
# the errors and the profiles' totals here; the per-op tables stay in the files
grep -h -E 'last loss|^  total|CUDA time total|rror|failed|not run' "$dir/bench-moonflow.err" \
  "$dir/bench-torch.err" 2>/dev/null | sed 's/^/  /'
cat "$dir/bench-moonflow.jsonl" "$dir/bench-torch.jsonl" | sed 's/^/  /'
((rc_m != 0)) && fail "bench.lua: exit $rc_m (log: $dir/bench-moonflow.err)"
((rc_t != 0)) && fail "bench_torch.py: exit $rc_t (log: $dir/bench-torch.err)"
# moonflow / torch for each measurement both wrote (ms: torch / moonflow, so > 1 is faster)
ratios=$("${PYTHON:-python3}" - "$dir/bench-moonflow.jsonl" "$dir/bench-torch.jsonl" <<'EOF'
import json, sys
def load(p):
    out = {}
    try:
        for line in open(p):
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                out[r["bench"].replace("torch_", "", 1)] = r
    except OSError:
        pass
    return out
m, t = load(sys.argv[1]), load(sys.argv[2])
def num(v):
    return "%.0f" % v if v >= 1000 else "%.4g" % v
for k in m:
    if k in t and t[k]["value"] > 0 and m[k]["value"] > 0:
        r = t[k]["value"] / m[k]["value"] if m[k]["unit"] == "ms" else m[k]["value"] / t[k]["value"]
        print("%s: moonflow %s %s, torch %s %s: %.2fx torch" % (k, num(m[k]["value"]), m[k]["unit"],
              num(t[k]["value"]), t[k]["unit"], r))
EOF
)
if [[ -n $ratios ]]; then
  while read -r l; do record "bench $l"; done <<<"$ratios"
  {
    [[ $emu == 1 ]] && echo "REHEARSAL with the CUDA emulator (MOONFLOW_GPU_EMU=1): not GPU numbers"
    echo "## GPU: moonflow vs PyTorch on the same GPU (issue 6)"
    echo
    echo "${gpu_name:-unknown GPU}, $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1) driver;" \
      "PyTorch $("${PYTHON:-python3}" -c 'import torch; print(torch.__version__)' 2>/dev/null)." \
      "Command: \`source .device/on-gpu.sh; tests/gpu/run.sh\` (tests/gpu/bench.lua and" \
      "tests/gpu/bench_torch.py, $steps timed steps after 20 warm-up steps; $(date -u +%Y-%m-%d))."
    echo
    echo "| measurement | moonflow | PyTorch | moonflow / PyTorch |"
    echo "|---|---|---|---|"
    sed -E 's/^([^:]+): moonflow ([^,]+), torch ([^:]+): ([0-9.]+)x torch$/| \1 | \2 | \3 | \4 |/' <<<"$ratios"
    echo
    echo "(ms rows: PyTorch's time / moonflow's, so above 1 means moonflow is faster.)"
  } >"$dir/results-gpu.md"
else
  record "bench: no ratios (see $dir/bench-*.err)"
fi
fi

# ---- 4b. the tutorial's full run ------------------------------------------------------------------
# examples/mnist_cnn.lua --device cuda (20,000 steps of 50, Adam 1e-4, then the test accuracy)
# against bench/torch_mnist.py cnn --device cuda with the same steps: both copy each batch of the
# training set from the CPU to the GPU, as the tutorial feeds its placeholders. Their training
# times are compared (without start-up, data loading and the final evaluation).
full_steps=${MOONFLOW_GPU_FULL_STEPS:-20000}
if [[ $emu == 1 ]]; then
  record "full run: not run (hours on the emulator)"
elif [[ ${ngpu:-0} =~ ^[1-9] && -d $data ]]; then
  section "the tutorial's full run: $full_steps steps, moonflow vs PyTorch"
  log="$dir/full-moonflow.log"
  timeout $((240 * slow)) "$dir/moonflow" examples/mnist_cnn.lua --device cuda --data "$data" \
    --steps "$full_steps" --every 1000 >"$log" 2>&1
  rc_m=$?
  tail -n 3 "$log" | sed 's/^/  /'
  m_s=$(grep -E -o 'trained [0-9]+ steps in [0-9.]+ s' "$log" | tail -n 1 | awk '{print $5}')
  m_acc=$(grep -E -o 'test accuracy: [0-9.]+' "$log" | tail -n 1 | awk '{print $3}')
  timeout $((240 * slow)) "${PYTHON:-python3}" bench/torch_mnist.py cnn --device cuda \
    --steps "$full_steps" --warmup 0 --accuracy >"$dir/full-torch.jsonl" 2>"$dir/full-torch.err"
  rc_t=$?
  cat "$dir/full-torch.jsonl" | sed 's/^/  /'
  read -r t_s t_acc < <("${PYTHON:-python3}" -c 'import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(r["train_s"], r["accuracy"])' "$dir/full-torch.jsonl" 2>/dev/null)
  if ((rc_m != 0)) || [[ -z $m_s || -z $m_acc ]]; then
    fail "full run (moonflow): exit $rc_m, no time or accuracy (log: $log)"
  elif ((rc_t != 0)) || [[ -z ${t_s:-} ]]; then
    fail "full run (PyTorch): exit $rc_t (log: $dir/full-torch.err)"
  else
    ratio=$(awk -v m="$m_s" -v t="$t_s" 'BEGIN { printf "%.2f", t / m }')
    line="full run, $full_steps steps: moonflow $m_s s (test accuracy $m_acc), PyTorch $(printf '%.1f' "$t_s") s (test accuracy $t_acc): ${ratio}x torch"
    if awk -v a="$m_acc" 'BEGIN { exit !(a >= 0.99) }'; then
      record "$line"
    else
      fail "$line; moonflow's accuracy is below 0.99"
    fi
    {
      echo
      echo "### The tutorial's full run on the GPU"
      echo
      echo "\`moonflow examples/mnist_cnn.lua --device cuda --steps $full_steps\` against" \
        "\`bench/torch_mnist.py cnn --device cuda --steps $full_steps --warmup 0 --accuracy\`" \
        "(each copies its batches from the CPU every step; training time only)."
      echo
      echo "| | moonflow | PyTorch | PyTorch / moonflow |"
      echo "|---|---|---|---|"
      echo "| training time, $full_steps steps of 50 | $m_s s | $(printf '%.1f' "$t_s") s | $ratio |"
      echo "| test accuracy | $m_acc | $t_acc | |"
    } >>"$dir/results-gpu.md"
  fi
fi
# ---- 5. Lua specs ---------------------------------------------------------------------------------
section "Lua specs"
if command -v busted >/dev/null && command -v lua5.4 >/dev/null; then
  mkdir -p "$dir/busted"
  if [[ ${MOONFLOW_GPU_ALL:-0} == 1 ]]; then
    specs=(tests/lua/*_spec.lua)
  else
    mapfile -t specs < <(grep -l -i -E 'cuda|gpu' tests/lua/*_spec.lua)
  fi
  s_total=0 f_total=0 p_total=0
  skipped_specs=()
  for spec in "${specs[@]}"; do
    name=$(basename "$spec" .lua)
    if ((SECONDS > budget * slow)); then
      skipped_specs+=("$name")
      continue
    fi
    log="$dir/busted/$name.log"
    env LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;$root/tests/lua/?.lua;${LUA_PATH:-;}" \
      LUA_CPATH="$root/$dir/lua/?.so;${LUA_CPATH:-;}" \
      MOONFLOW_BUILD="$root/$dir" MOONFLOW_BIN="$root/$dir/moonflow" \
      MOONFLOW_EMBED_BIN="$root/$dir/embed_example" \
      timeout $((180 * slow)) busted --lua=lua5.4 -o plainTerminal "$spec" >"$log" 2>&1
    res=$(grep -E -m1 '^[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' "$log")
    if [[ -z $res ]]; then
      printf '  %-24s no summary\n' "$name"
      tail -n 10 "$log" | sed 's/^/    /'
      f_total=$((f_total + 1))
      continue
    fi
    read -r s f e p < <(sed -E 's|^([0-9]+) [a-z]+ / ([0-9]+) [a-z]+ / ([0-9]+) [a-z]+ / ([0-9]+) pending.*|\1 \2 \3 \4|' <<<"$res")
    printf '  %-24s %4d passed %3d failed %3d pending\n' "$name" "$s" "$((f + e))" "$p"
    s_total=$((s_total + s))
    f_total=$((f_total + f + e))
    p_total=$((p_total + p))
    ((f + e > 0)) && awk '/^(Failure|Error) -> /{show=1} /^Pending -> /{show=0} show' "$log" |
      head -n 30 | sed 's/^/    /'
  done
  res="${#specs[@]} spec files: $s_total passed, $f_total failed, $p_total pending"
  ((${#skipped_specs[@]})) &&
    res+="; not run (time budget of ${budget}s spent): ${skipped_specs[*]}"
  ((f_total > 0)) && fail "Lua specs: $res" || record "Lua specs: $res"
else
  fail "Lua specs: not run (no busted/lua5.4: source .device/on-gpu.sh first)"
fi

exit $failed
