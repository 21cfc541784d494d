#!/usr/bin/env bash
# run.sh — the one script for the GPU machine (../shared/device/README.md): configures a CUDA build
# in build-gpu/ (sm_90 + PTX, -j16), builds it, runs the CPU/GPU parity tests (test_cuda) first and
# verbosely, then the other C tests and the Lua specs against that build, and prints a short
# summary. Run from the project root as
#     source .device/on-gpu.sh; tests/gpu/run.sh
# It also works on a development machine without a GPU (test_cuda then reports its skips).
# Environment: MOONFLOW_GPU_JOBS (default 16), MOONFLOW_GPU_BUILD (default build-gpu).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
jobs=${MOONFLOW_GPU_JOBS:-16}
dir=${MOONFLOW_GPU_BUILD:-build-gpu}
failed=0
summary=()
say() { printf '%s\n' "$*"; }
section() { printf '\n==== %s  [%dm%02ds]\n' "$*" $((SECONDS / 60)) $((SECONDS % 60)); }

section "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null ||
  say "nvidia-smi: no GPU visible"
nvcc --version 2>/dev/null | tail -n 1

# ---- configure and build ----------------------------------------------------------------------
section "configure $dir"
args=(-DCMAKE_BUILD_TYPE=Release -DMOONFLOW_CUDA=ON)
command -v ninja >/dev/null && args+=(-G Ninja)
# The packed dependencies (on-gpu.sh unpacks them into /opt/mfdeps): OpenBLAS and stb live where
# the top-level CMakeLists.txt does not look by default.
deps=/opt/mfdeps/usr
if [[ -d $deps/include/x86_64-linux-gnu/openblas-pthread ]]; then
  args+=(-DOPENBLAS_INCLUDE="$deps/include/x86_64-linux-gnu/openblas-pthread"
    -DOPENBLAS_LIB="$deps/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so")
fi
[[ -f $deps/include/stb/stb_image.h ]] && args+=(-DSTB_INCLUDE="$deps/include/stb")
# cuDNN: the toolkit's, else the one PyTorch's pip packages bring.
if [[ ! -f /usr/local/cuda/include/cudnn.h && -z ${CUDNN_ROOT:-} ]]; then
  cudnn=$(python3 -c 'import os, nvidia.cudnn as c; print(os.path.dirname(c.__file__) if c.__file__ else list(c.__path__)[0])' 2>/dev/null)
  [[ -n $cudnn ]] && args+=(-DCUDNN_ROOT="$cudnn")
fi
if ! cmake -S . -B "$dir" "${args[@]}" >"$dir.configure.log" 2>&1; then
  tail -n 40 "$dir.configure.log"
  say "FAILED: configure (log: $dir.configure.log)"
  exit 1
fi
grep -E 'moonflow:' "$dir.configure.log"
section "build"
if ! cmake --build "$dir" -j "$jobs" >"$dir.build.log" 2>&1; then
  grep -E -B2 -A12 'error|FAILED' "$dir.build.log" | head -n 80
  say "FAILED: build (log: $dir.build.log)"
  exit 1
fi
say "built $dir"
# The CUDA backend is its own library, loaded on first use: the host must not link cudart itself.
[[ -f $dir/libmoonflow_cuda.so ]] || say "MISSING: $dir/libmoonflow_cuda.so"
ldd "$dir/moonflow" | grep -q -E 'libcudart|libcublas' && say "WRONG: $dir/moonflow links CUDA"
"$dir/moonflow" -v 2>&1 | sed 's/^/  /'

# ---- C tests --------------------------------------------------------------------------------
section "test_cuda (CPU/GPU parity)"
timeout 300 "$dir/test_cuda" 2>&1 | tee "$dir/test_cuda.log" | tail -n 60
rc=${PIPESTATUS[0]}
line=$(grep -E '^# passed [0-9]+ failed [0-9]+' "$dir/test_cuda.log" | tail -n 1)
summary+=("test_cuda: ${line:-no summary} (exit $rc)")
((rc != 0)) && failed=1

section "C tests"
ctest --test-dir "$dir" -E '^test_cuda$' -j "$jobs" --timeout 300 --output-on-failure \
  >"$dir/ctest.log" 2>&1
rc=$?
grep -E 'tests passed|Test +#|\*\*\*' "$dir/ctest.log" | tail -n 20
summary+=("other C tests: $(grep -E 'tests passed' "$dir/ctest.log" || echo 'no summary') (exit $rc)")
((rc != 0)) && failed=1

# ---- Lua specs --------------------------------------------------------------------------------
section "Lua specs"
if command -v busted >/dev/null && command -v lua5.4 >/dev/null; then
  mkdir -p "$dir/busted"
  s_total=0 f_total=0
  for spec in tests/lua/*_spec.lua; do
    name=$(basename "$spec" .lua)
    log="$dir/busted/$name.log"
    env LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;$root/tests/lua/?.lua;${LUA_PATH:-;}" \
      LUA_CPATH="$root/$dir/lua/?.so;${LUA_CPATH:-;}" \
      MOONFLOW_BUILD="$root/$dir" MOONFLOW_BIN="$root/$dir/moonflow" \
      MOONFLOW_EMBED_BIN="$root/$dir/embed_example" \
      timeout 300 busted --lua=lua5.4 -o plainTerminal "$spec" >"$log" 2>&1
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
    ((f + e > 0)) && awk '/^(Failure|Error) -> /{show=1} /^Pending -> /{show=0} show' "$log" |
      head -n 30 | sed 's/^/    /'
  done
  summary+=("Lua specs: $s_total passed, $f_total failed")
  ((f_total > 0)) && failed=1
else
  summary+=("Lua specs: not run (no busted/lua5.4; source .device/on-gpu.sh first)")
fi

# ---- a GPU smoke run through the Lua API --------------------------------------------------------
section "Lua on the GPU"
"$dir/moonflow" -e '
local mf = require "moonflow"
print("cuda devices:", mf.cuda.device_count())
if mf.cuda.is_available() then
  local a = mf.randn({512, 512}):cuda()
  local b = (a:matmul(a) + 1):relu():sum()
  print("matmul+relu+sum on", a:device(), b:item())
end' 2>&1 | sed 's/^/  /'
summary+=("Lua GPU smoke: exit ${PIPESTATUS[0]}")

section "summary"
for l in "${summary[@]}"; do say "  $l"; done
((failed == 0)) && say "GPU run: OK" || say "GPU run: FAILED"
exit $failed
