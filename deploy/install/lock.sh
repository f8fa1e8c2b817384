#!/usr/bin/env bash
# Resolves the three dependency locks (run by `make lock`; the lock test runs it into a scratch
# folder to check that the committed locks are what pyproject.toml resolves to).
#
#   deploy/install/lock.sh [OUT_DIR [extra uv pip compile flags, e.g. --upgrade]]
#
# One universal resolution for CPython 3.11 (every platform, the Raspberry Pi's included),
# every file's sha256 recorded. The dev lock is resolved first; the server and gateway locks are
# cut from it with it as constraints, so the three agree on every version. Pins already in
# OUT_DIR are kept where they still fit: only the extra flags move them.
set -euo pipefail
cd "$(dirname "$0")/../.."

uv=${UV:-.venv/bin/uv}
out=${1:-requirements}
shift || true
flags=(--universal --python-version 3.11 --generate-hashes --quiet
       --custom-compile-command "make lock")

"$uv" pip compile pyproject.toml requirements/tools.in --all-extras "${flags[@]}" "$@" \
  -o "$out/dev.txt"
"$uv" pip compile pyproject.toml --extra server -c "$out/dev.txt" "${flags[@]}" \
  -o "$out/server.txt"
"$uv" pip compile pyproject.toml --extra edge --extra obd -c "$out/dev.txt" "${flags[@]}" \
  -o "$out/gateway.txt"
