#!/usr/bin/env bash
# Runs every test (or those whose names contain FILTER) and ends with `N passed, M failed`.
# Usage: scripts/test.sh [FILTER]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
exec cargo xtask test "$@"
