#!/usr/bin/env bash
# demo.sh — the main demo: installs what is missing, builds moonflow (Release, in build/), runs
# examples/hello.lua, then trains the tutorial's softmax regression on MNIST
# (examples/mnist_softmax.lua: about 92% test accuracy in a few seconds). MNIST comes from
# $MOONFLOW_DATA, ../shared/data/mnist, or is downloaded into MNIST_data/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/setup.sh
mkdir -p build
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >build/configure.log 2>&1 ||
  { cat build/configure.log; exit 1; }
ninja -C build moonflow_host mflua # the host and the module: the demo needs no tests

if [[ -z ${MOONFLOW_DATA:-} && -d $root/../shared/data/mnist ]]; then
  export MOONFLOW_DATA
  MOONFLOW_DATA=$(cd "$root/../shared/data/mnist" && pwd)
fi
echo "---- build/moonflow examples/hello.lua"
build/moonflow examples/hello.lua
echo "---- build/moonflow examples/mnist_softmax.lua"
exec build/moonflow examples/mnist_softmax.lua "$@"
