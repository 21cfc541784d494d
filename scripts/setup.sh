#!/usr/bin/env bash
# setup.sh — installs the Debian 12 packages that moonflow's build, tests, demo and benchmarks
# need. It asks dpkg first and does nothing when everything is present (a fast no-op on re-runs);
# otherwise it runs `apt-get update` once and one `apt-get install -y` of what is missing.
# Runs as root, or through sudo when not root. Python test peers (numpy, torch) come from Debian
# and are used through /usr/bin/python3.
set -euo pipefail

packages=(
  cmake ninja-build pkg-config gcc libc6-dev
  lua5.4 liblua5.4-dev lua-busted
  libopenblas-pthread-dev libopenblas-dev libstb-dev zlib1g-dev libreadline-dev
  python3-numpy python3-torch
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

# lua-busted depends on "lua5.2 | lua": unless lua5.4 is in the same command, apt picks lua5.2.
for p in "${missing[@]}"; do
  if [[ $p == lua-busted ]]; then
    missing+=(lua5.4)
    break
  fi
done

sudo=()
if ((EUID != 0)); then
  sudo=(sudo)
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
