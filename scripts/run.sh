#!/usr/bin/env bash
# Builds chroma and its guests and boots a VM configuration under QEMU.
# Options: see `scripts/run.sh --help` (they are `cargo xtask run`'s).
# With --headless the exit status is the hypervisor's verdict (README: "Exit status of a headless run").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
# The host cargo: the one on PATH when it runs (rustup's, say), else Debian's.
cargo=cargo
cargo --version >/dev/null 2>&1 || cargo=/usr/bin/cargo
exec "$cargo" xtask run "$@"
