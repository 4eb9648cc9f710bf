#!/usr/bin/env bash
# Builds chroma and its guests and boots a VM configuration under QEMU.
# Options: see `scripts/run.sh --help` (they are `cargo xtask run`'s).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
exec cargo xtask run "$@"
