#!/usr/bin/env bash
# setup.sh — installs the Debian 12 packages that moonflow's build, tests, demo and benchmarks
# need. It asks dpkg first and does nothing when everything is present (a fast no-op on re-runs);
# otherwise it runs `apt-get update` once and one `apt-get install -y` of what is missing.
# Runs as root, or through sudo when not root. Python test peers (numpy, torch, PIL) come from
# Debian and are used through /usr/bin/python3; TensorBoard, which Debian does not package, is then
# installed with pip when /usr/bin/python3 cannot import it (its reader checks our event files; if
# pip fails, say offline, that check is pending rather than failed); so are safetensors, onnx and
# onnxruntime. clang + libclang-rt-14-dev build the libFuzzer targets; graphviz renders graphs;
# g++ builds the CUDA emulator (tests/cuda_emu) of the sanitizer build.
set -euo pipefail

packages=(
  cmake ninja-build pkg-config gcc g++ libc6-dev
  lua5.4 liblua5.4-dev lua-busted
  libopenblas-pthread-dev libopenblas-dev libstb-dev zlib1g-dev libreadline-dev
  python3-numpy python3-torch python3-pil python3-pip
  clang libclang-rt-14-dev graphviz
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done

sudo=()
if ((EUID != 0)); then
  sudo=(sudo)
fi

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
else
  # lua-busted depends on "lua5.2 | lua": unless lua5.4 is in the same command, apt picks lua5.2.
  for p in "${missing[@]}"; do
    if [[ $p == lua-busted ]]; then
      missing+=(lua5.4)
      break
    fi
  done
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update
  "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi

if ! /usr/bin/python3 -c 'import tensorboard' >/dev/null 2>&1; then
  echo "setup: installing tensorboard with pip"
  "${sudo[@]}" /usr/bin/python3 -m pip install --quiet --disable-pip-version-check --timeout 30 \
    --retries 1 --break-system-packages tensorboard ||
    echo "setup: could not install tensorboard: the TensorBoard reader check will be pending"
fi

# safetensors (Hugging Face's reader/writer, not packaged by Debian) checks mf.save/mf.load files.
if ! /usr/bin/python3 -c 'import safetensors' >/dev/null 2>&1; then
  echo "setup: installing safetensors with pip"
  "${sudo[@]}" /usr/bin/python3 -m pip install --quiet --disable-pip-version-check --timeout 30 \
    --retries 1 --break-system-packages safetensors ||
    echo "setup: could not install safetensors: the safetensors reader checks will be pending"
fi

# onnx (checker, reference evaluator) and onnxruntime run the files mf.onnx.export writes. "numpy<2"
# keeps Debian's numpy 1.x: without it pip pulls numpy 2, which Debian's torch 1.13 cannot import.
if ! /usr/bin/python3 -c 'import onnx, onnxruntime' >/dev/null 2>&1; then
  echo "setup: installing onnx and onnxruntime with pip"
  "${sudo[@]}" /usr/bin/python3 -m pip install --quiet --disable-pip-version-check --timeout 30 \
    --retries 1 --break-system-packages onnx onnxruntime "numpy<2" ||
    echo "setup: could not install onnx/onnxruntime: the ONNX reader checks will be pending"
fi
