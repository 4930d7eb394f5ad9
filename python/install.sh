#!/usr/bin/env bash
# Install pinned Flower (+ a framework variant, + optional test tools) into a virtualenv,
# from wheels cached in build/wheels (downloaded from PyPI once; offline afterwards).
#
#   python/install.sh VENV PYTHON [sklearn|test ...]
#
# flwr 1.42.0 pins certifi>=2026.10.19, which PyPI's index here does not have yet, so its
# dependencies are installed from the pinned list first and flwr itself with --no-deps.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
venv=$1; python=$2; shift 2
wheels=${WHEELS:-$root/build/wheels}
reqs=("$here/requirements-flwr-deps.txt")
for extra in "$@"; do reqs+=("$here/requirements-$extra.txt"); done
mkdir -p "$wheels"
args=()
for r in "${reqs[@]}"; do args+=(-r "$r"); done
# Download only what is missing (pip skips files already in $wheels).
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$wheels" "${args[@]}" "$(cat "$here/flwr-version.txt")"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-index --no-deps \
    --find-links "$wheels" "${args[@]}"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-index --no-deps \
    --find-links "$wheels" "$(cat "$here/flwr-version.txt")"
"$venv/bin/flower-superlink" --version
