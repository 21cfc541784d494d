#!/usr/bin/env bash
# demo.sh — the main demo: installs what is missing, builds moonflow (Release, in build/), and runs
# examples/hello.lua with the moonflow host. Extra arguments are passed to the script.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/setup.sh
mkdir -p build
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >build/configure.log 2>&1 ||
  { cat build/configure.log; exit 1; }
ninja -C build moonflow_host # the host only: the demo needs no tests

if [[ -d $root/../shared/data/mnist ]]; then
  export MOONFLOW_DATA
  MOONFLOW_DATA=$(cd "$root/../shared/data/mnist" && pwd)
fi
echo "---- build/moonflow examples/hello.lua"
exec build/moonflow examples/hello.lua "$@"
