#!/usr/bin/env bash
# Runs every test (or those whose names contain FILTER) and ends with `N passed, M failed`.
# Usage: scripts/test.sh [FILTER]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
# The host cargo: the one on PATH when it runs (rustup's, say), else Debian's.
cargo=cargo
cargo --version >/dev/null 2>&1 || cargo=/usr/bin/cargo
exec "$cargo" xtask test "$@"
