//! The figures a long run is judged by, printed on demand (console Ctrl-A
//! s): the EL2 heap and frame allocator (in use now and their high-water
//! marks), every switch port's traffic, and each VM's resets.
//!
//! The lines are `key=value` words after a fixed start, so a driver such as
//! `cargo xtask soak` can read them:
//!
//! ```text
//! chroma: stats heap=<used>/<peak>/<total> frames=<used>/<peak>/<total> resets=<n> vms=<running>/<count>
//! chroma: stats vm=<name> resets=<n> faults=<n> state=running|stopped
//! chroma: stats port=<switch>.<port> owner=<vm>|uplink rx=<frames>/<bytes> tx=<frames>/<bytes> drops=<n> errors=<n> spoofed=<n>
//! ```
//!
//! Heap figures are bytes (as the buddy allocator counts them, with its
//! rounding); frame figures are 4 KiB frames. Traffic counters are totals
//! since boot: `rx` is what the switch delivered to the port, `tx` what it
//! took from it (for the uplink: to and from the board's NIC).
//!
//! Locks: each switch's state lock is taken alone, to copy its counters;
//! nothing else is held while a line is printed.

use crate::sched::system;
use alloc::vec::Vec;
use chroma_core::pagetable::PAGE_SIZE;
use chroma_virtio::switch::PortCounters;
use core::sync::atomic::Ordering;

/// Who is plugged into a switch port.
enum Owner {
    /// A VM's NIC (the VM's index).
    Vm(usize),
    /// The board's NIC.
    Uplink,
}

/// Prints the stats lines (see the module docs).
pub fn report() {
    let sys = system();
    let memory = crate::mm::usage();
    let resets: u64 = sys
        .vms
        .iter()
        .map(|vm| u64::from(vm.resets.load(Ordering::Relaxed)))
        .sum();
    let running = sys.vms.iter().filter(|vm| !vm.is_stopped()).count();
    let frames = |bytes: u64| bytes / PAGE_SIZE;
    log::info!(
        "stats heap={}/{}/{} frames={}/{}/{} resets={} vms={}/{}",
        memory.heap_used,
        memory.heap_peak,
        memory.heap_total,
        frames(memory.frames_used),
        frames(memory.frames_peak),
        frames(memory.frames_total),
        resets,
        running,
        sys.vms.len()
    );
    for vm in sys.vms.iter() {
        log::info!(
            "stats vm={} resets={} faults={} state={}",
            vm.name,
            vm.resets.load(Ordering::Relaxed),
            vm.faults.load(Ordering::Relaxed),
            if vm.is_stopped() {
                "stopped"
            } else {
                "running"
            }
        );
    }
    for entry in sys.switches.iter() {
        // Copied under the switch's lock, printed after it is released.
        let ports: Vec<(Owner, PortCounters)> = {
            let state = entry.state.lock();
            let mut ports: Vec<(Owner, PortCounters)> = state
                .members
                .iter()
                .enumerate()
                .map(|(port, &(vm, _))| (Owner::Vm(vm), state.switch.counters(port)))
                .collect();
            if state.uplink.is_some() {
                let port = state.members.len();
                ports.push((Owner::Uplink, state.switch.counters(port)));
            }
            ports
        };
        for (port, (owner, counters)) in ports.iter().enumerate() {
            let owner = match owner {
                Owner::Vm(vm) => sys.vms[*vm].name.as_str(),
                Owner::Uplink => "uplink",
            };
            log::info!(
                "stats port={}.{} owner={} rx={}/{} tx={}/{} drops={} errors={} spoofed={}",
                entry.name,
                port,
                owner,
                counters.rx_packets,
                counters.rx_bytes,
                counters.tx_packets,
                counters.tx_bytes,
                counters.rx_dropped,
                counters.tx_errors + counters.rx_errors + counters.fatal_errors,
                counters.tx_spoofed
            );
        }
    }
}
