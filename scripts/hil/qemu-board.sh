#!/usr/bin/env bash
# QEMU standing in for a real board, as a power command for `cargo xtask hil`.
#
#   scripts/hil/qemu-board.sh STATE_DIR [plug|unplug|on|off]
#
# The action defaults to $CHROMA_HIL_ACTION, so that the power command is
# just `scripts/hil/qemu-board.sh STATE_DIR`:
#
#   plug    the cable: socat holds a pty pair, STATE_DIR/serial (the host's
#           end: what --serial names) and STATE_DIR/uart (the board's); it
#           outlives power cycles, as a USB-serial adapter does;
#   on      starts the board: QEMU exactly as `xtask run --headless --board
#           $CHROMA_HIL_BOARD` would (the command line comes from the hidden
#           `xtask qemu-stand-in`), booting $CHROMA_HIL_IMAGE, with its
#           serial port on STATE_DIR/uart instead of stdio; in the background,
#           its pid in STATE_DIR/qemu.pid, its own output in STATE_DIR/qemu.log;
#   off     kills that QEMU (nothing to do when it is not running);
#   unplug  off, and ends the cable.
#
# Every on and off is appended to STATE_DIR/power.log ("on IMAGE", "off"),
# so a test can count the power cycles. With QEMU_BOARD_UART=null the board
# runs with its serial port unconnected (a negative control: the runner
# must time out). xtask comes from $CHROMA_XTASK (set by `cargo xtask hil`)
# or `cargo run -p xtask`.
set -euo pipefail

usage="usage: $0 STATE_DIR [plug|unplug|on|off] (or CHROMA_HIL_ACTION=on|off)"
state=${1:?$usage}
action=${2:-${CHROMA_HIL_ACTION:-}}
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$state"
state=$(cd "$state" && pwd)

say() { printf 'qemu-board: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

xtask() {
    if [ -n "${CHROMA_XTASK:-}" ]; then
        "$CHROMA_XTASK" "$@"
    else
        (cd "$root" && cargo run --quiet --package xtask -- "$@")
    fi
}

# Kills the process whose pid is in file $1 and waits until it is gone.
stop() {
    local file=$1 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    rm -f "$file"
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

case $action in
plug)
    command -v socat >/dev/null || die "socat is missing (scripts/setup.sh installs it)"
    stop "$state/socat.pid"
    rm -f "$state/serial" "$state/uart"
    socat PTY,link="$state/serial",rawer PTY,link="$state/uart",rawer \
        </dev/null >>"$state/socat.log" 2>&1 &
    echo $! >"$state/socat.pid"
    for _ in $(seq 100); do
        [ -e "$state/serial" ] && [ -e "$state/uart" ] && exit 0
        sleep 0.05
    done
    die "socat made no pty pair (see $state/socat.log)"
    ;;
unplug)
    stop "$state/qemu.pid"
    stop "$state/socat.pid"
    rm -f "$state/serial" "$state/uart"
    ;;
on)
    : "${CHROMA_HIL_IMAGE:?on needs CHROMA_HIL_IMAGE}" "${CHROMA_HIL_BOARD:?on needs CHROMA_HIL_BOARD}"
    [ -e "$state/uart" ] || die "no cable: run $0 $state plug first"
    stop "$state/qemu.pid"
    uart=$(readlink -f "$state/uart")
    [ "${QEMU_BOARD_UART:-}" = null ] && uart=null
    mapfile -d '' -t qemu < <(xtask qemu-stand-in --board "$CHROMA_HIL_BOARD" \
        --image "$CHROMA_HIL_IMAGE" --uart "$uart")
    [ "${#qemu[@]}" -gt 0 ] || die "xtask qemu-stand-in gave no command line"
    echo "on $CHROMA_HIL_IMAGE" >>"$state/power.log"
    printf '%q ' "${qemu[@]}" >>"$state/qemu.log"
    echo >>"$state/qemu.log"
    # Its own session, and none of the caller's output: the runner waits for
    # this script's stdout and stderr to close.
    setsid "${qemu[@]}" </dev/null >>"$state/qemu.log" 2>&1 &
    echo $! >"$state/qemu.pid"
    ;;
off)
    echo off >>"$state/power.log"
    stop "$state/qemu.pid"
    ;;
*)
    die "$usage"
    ;;
esac
