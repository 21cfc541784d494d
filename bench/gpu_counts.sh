#!/usr/bin/env bash
# gpu_counts.sh — what one training step of the tutorial CNN (tests/gpu/bench.lua: batch 50, Adam,
# cross-entropy, inputs on the device) asks of the GPU: kernel launches, cuBLAS/cuDNN calls, host
# synchronisations, copies, memsets and cudaMalloc calls, counted by the CUDA emulator
# (tests/cuda_emu, MOONFLOW_CUDA_EMU_STATS=1) as the difference between runs of A and B steps
# after the same warm-up, divided by B - A. The emulator does no device work while counting
# (MOONFLOW_CUDA_EMU_NOEXEC=1: the calls, checks and counts are the same, and the flags the host
# reads are still cleared), so the warm-up can be long enough for the caching allocator to settle
# (3000 steps: the first full collection that the count of dead small tensors brings comes after
# about 2000, bindings/lmf.c; until then a step makes a new 512-byte block every other step).
# The counts are what a GPU run issues (cuBLAS and cuDNN launch more inside their calls). Also moonflow's own host time per step, with the emulator doing
# no device work (MOONFLOW_CUDA_EMU_NOEXEC=1). Prints the bench/RESULTS.md section "gpu-counts":
#   bench/gpu_counts.sh [EMU_BUILD_DIR] | python3 bench/section.py bench/RESULTS.md gpu-counts
# EMU_BUILD_DIR (default build-emu) is configured and built with -DMOONFLOW_CUDA=EMU if needed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
dir=${1:-build-emu}
if [[ ! -x $dir/moonflow || ! -f $dir/libmoonflow_cuda.so ]]; then
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOONFLOW_CUDA=EMU >/dev/null
  ninja -C "$dir" moonflow moonflow_cuda >/dev/null
fi
a=10 b=40 warm=3000
counts() { # steps, upload -> the emulator's totals line, as numbers
  MOONFLOW_CUDA_EMU_NOEXEC=1 MOONFLOW_CUDA_EMU_STATS=1 "$dir/moonflow" tests/gpu/bench.lua \
    --size 64 --reps 1 --warmup $warm --upload "$2" \
    --steps "$1" 2>&1 >/dev/null | grep '^cuda emulator:' | tr -c '0-9\n' ' '
}
read -r -a ca <<<"$(counts $a 0)"
read -r -a cb <<<"$(counts $b 0)"
read -r -a ua <<<"$(counts $a 1)"
read -r -a ub <<<"$(counts $b 1)"
names=("kernel launches (our kernels)" "cuBLAS / cuDNN calls" "host synchronisations"
  "copies host to device" "copies device to host" "copies device to device" "memsets"
  "cudaMalloc" "cudaFree")
# moonflow's own host time per step: the emulator running no device work (NOEXEC), best of 5
host_ms=$(for _ in 1 2 3 4 5; do
  MOONFLOW_CUDA_EMU_NOEXEC=1 "$dir/moonflow" tests/gpu/bench.lua --size 64 --reps 1 --warmup 50 \
    --steps 2000 2>/dev/null | sed -n 's/.*"cnn_train_b50_step_ms", "value": \([0-9.e+-]*\).*/\1/p'
done | sort -g | head -n 1 | xargs printf '%.2f')
# the same host work as instructions per step (callgrind: the difference between 300 and 100
# steps over 200; a count that does not swing with the machine's load), when valgrind is there
host_ir=""
if command -v valgrind >/dev/null; then
  ir() {
    MOONFLOW_CUDA_EMU_NOEXEC=1 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
      "$dir/moonflow" tests/gpu/bench.lua --size 64 --reps 1 --warmup 20 --steps "$1" 2>&1 \
      >/dev/null | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
  }
  # (valgrind 3.19 stops at AVX-512 instructions: a -DMOONFLOW_NATIVE=ON build on such a CPU gives
  # no count; configure EMU_BUILD_DIR with -DMOONFLOW_NATIVE=OFF there)
  i1=$(ir 100 || true) i3=$(ir 300 || true)
  [[ -n $i1 && -n $i3 ]] && host_ir=$(((i3 - i1) / 200))
fi
echo "## The tutorial CNN's training step on a GPU: what it issues (issue 6)"
echo
echo "Counted by the CUDA emulator (\`bench/gpu_counts.sh\`, $(date -u +%Y-%m-%d)): tests/gpu/bench.lua's"
echo "step (batch 50, Adam, cross-entropy, inputs on the device), the difference between $b and $a"
echo "timed steps after $warm warm-up steps, per step. A GPU run issues the same (cuBLAS and cuDNN"
echo "launch more kernels inside their calls)."
echo
echo "| per training step | inputs on the device | the batch uploaded each step (\`--upload 1\`) |"
echo "|---|---:|---:|"
for i in "${!names[@]}"; do
  awk -v n="${names[$i]}" -v x="${ca[$i]}" -v y="${cb[$i]}" -v u="${ua[$i]}" -v w="${ub[$i]}" \
    -v d=$((b - a)) 'BEGIN { printf "| %s | %g | %g |\n", n, (y - x) / d, (w - u) / d }'
done
echo
echo "moonflow's own time on the host per step, the emulator doing no device work"
echo "(MOONFLOW_CUDA_EMU_NOEXEC=1; Lua, autograd, the allocator, the calls' checks; best of 5 runs"
echo "of 2000 steps, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores): **${host_ms} ms**."
if [[ -n $host_ir ]]; then
  echo "As instructions, which do not swing with the machine's load (callgrind, the difference"
  echo "between 300 and 100 steps; the emulator's bookkeeping of each call included):"
  echo "**$((host_ir / 1000))k instructions per step** (591k before the cross-entropy became one op"
  echo "and numbers beside GPU tensors stayed on the host,"
  echo "in the same session on the same -DMOONFLOW_NATIVE=OFF build; 666k, on another machine, before"
  echo "the elementwise ops stopped making views and autograd nodes they did not need, tensor headers"
  echo "were kept for reuse and the bindings found the tensor metatable by address)."
fi
echo "On a GPU the driver's launch cost adds to it (a few microseconds per call): the host side"
echo "bounds the step from below at roughly that, whatever the GPU's speed. (It was 0.25 ms before"
echo "the Lua bindings collected dead tensors with young collections in generational mode instead of"
echo "full ones, and before cuDNN calls stopped formatting their error descriptions up front.)"
echo
echo "The launches: 1 fused Adam update (all 8 parameter tensors), 2 convolution bias adds (a"
echo "kernel of ours since cudnnAddTensor, deprecated in cuDNN 9, was dropped: 2 calls moved from"
echo "the cuDNN column), 8 binary ops (the linear layers' 2 bias adds, dropout's two multiplies,"
echo "3 ReLU backwards, the mean's backward), 7 sums (bias gradients, the mean), 3 ReLUs, 4 for max"
echo "pooling, 2 for the cross-entropy (one fused kernel each way, reading the 1-based labels as"
echo "they are), 1 scalar fill (the backward's seed; the mean's 1/n is a host number, which the"
echo "kernel takes by value) and dropout's mask. (The 1/n took a fill and a block before; the"
echo "cross-entropy took 6 and a memset as log_softmax, gather, a negation and their backwards"
echo "before it was one op, 8 before gather counted indices from 1; ReLU's backward 4 before it"
echo "had its own op; Adam one launch per parameter before it updated a group in one call.)"
echo "The 11 cuBLAS / cuDNN calls: 5 convolutions (forward, backward data and backward filter of each layer, but the"
echo "first layer's backward data, which nothing needs) and 6 matmuls (3 per linear layer: forward"
echo "and the two gradients)."
echo
echo "No synchronisation: the host queues a whole step and runs on to the next while the GPU"
echo "works. The check of the labels (the loss picking each row's class) is recorded on the"
echo "device and read at the next synchronisation the program makes"
echo "anyway (a loss:item(), a download), and an upload returns once its bytes are in a pinned"
echo "staging buffer (core/cuda/transfer.cu). Before, the index checks each read back a flag"
echo "(2 synchronisations per step) and each upload waited for the queue to drain (2 more per step"
echo "in examples/mnist_cnn.lua, whose batches come from the CPU). PyTorch's .to(\"cuda\") of a"
echo "pageable CPU tensor also waits (non_blocking=False)."
echo "No device-to-device copy either: the Linear layers' weight gradients (3136x1024 and 1024x10)"
echo "were copied once more each step (2 copies, 12.9 MB) because the transpose node that produced"
echo "them still held their storage when the weights took them; autograd now lets go of a node's"
echo "incoming gradient as soon as its rule has run."
echo "The memsets: max pooling's two zeroed input gradients. The"
echo "caching allocator reuses every block once the shapes repeat. (Until the Lua bindings also"
echo "counted live storages, a 512-byte block was new every other step: the loss a loop keeps from"
echo "one step to the next outlives two young collections, grows old, and then waits for a full"
echo "collection, which the bytes alone brought only once such garbage passed 16 MiB, 32768"
echo "cudaMalloc calls later. Now 1024 more live storages than the last full collection left bring"
echo "one: about 2000 steps, after which the blocks it freed serve the later losses.)"
