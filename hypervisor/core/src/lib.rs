//! The portable core of chroma: everything about VMs that does not depend on
//! an architecture or a board.
//!
//! Architecture back-ends implement the small traits defined here
//! ([`pagetable::PageTableFormat`], [`pagetable::TableMemory`],
//! [`vcpu::GuestCpu`] for a trapped vCPU, [`irq::InterruptController`] for
//! the physical interrupt controller, [`vgic::ListRegisters`] and
//! [`vgic::PhysicalInterrupts`] for virtual interrupt delivery) and translate their trap syndromes into
//! [`vcpu::Trap`]s. Exit dispatch ([`vcpu`]), the run loop's decisions
//! ([`run`]) and the VM's machine ([`guest_map`], [`vm`]) live here; the core
//! never touches a register, so all of it runs under `cargo test` on the
//! host against [`fake`].
//!
//! # Panics
//!
//! No path a guest reaches may panic (issue 10). Every crate linked into the
//! EL2 binary denies `clippy::unwrap_used`, `expect_used`, `panic`,
//! `unreachable`, `todo` and `unimplemented` outside test code (`clippy.toml`
//! lets tests unwrap), and `cargo xtask test clippy` and `clippy-bare-metal`
//! fail on any finding. A guest's mistake gets an architectural answer
//! instead: an abort, a PSCI error, RAZ/WI (STYLE E2).
//!
//! `clippy::indexing_slicing` is denied only in the modules that decode guest
//! input first: [`vcpu`], [`exit`], [`psci`] and [`pl011`] here, `queue`,
//! `mmio`, `net` and `checksum` in `chroma-virtio`, and the ESR decoder in
//! `chroma-arch`. Crate-wide it would flag about 135 sites in the EL2 binary
//! and its crates (the switch's port and FDB tables, the scheduler's and NIC
//! wiring's VM tables, the vGIC's per-vCPU banks and list-register
//! candidates, console line buffers, the GIC's saved priority registers), and
//! in each the index is either the hypervisor's own (a port, a VM, a ring
//! position modulo its size) or checked just before (a redistributor index
//! against the vCPU count, a frame length against its buffer). Rewriting them
//! all as `get()` would add error paths that cannot be taken. The rule
//! instead: where an index or length comes from the guest, use
//! `get()`/`get_mut()` or check it in the same function, next to the use.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// No panic on a path a guest can reach (issue 10); see "Panics" in the crate docs.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

extern crate alloc;

pub mod console;
pub mod exit;
// The host fake for tests: never in the EL2 binary, so it may expect like test code.
#[cfg(any(test, feature = "fake"))]
#[allow(clippy::expect_used)]
pub mod fake;
pub mod frames;
pub mod gic_shadow;
pub mod guest_map;
pub mod irq;
pub mod pagetable;
pub mod pl011;
pub mod psci;
pub mod ratelimit;
pub mod run;
pub mod soft_gicv;
pub mod vcpu;
pub mod vgic;
pub mod vm;
pub mod vtimer;

pub use chroma_mem::{GuestPhysAddr, HostPhysAddr, HostVirtAddr};

/// Every error type's `Display` is a message, not `Debug` output (issue 10).
#[cfg(test)]
mod display_tests {
    use crate::pagetable::MapError;
    use crate::vcpu::NoDevice;
    use crate::vgic::VgicError;
    use chroma_mem::display_check::check_all;

    #[test]
    fn every_core_error_displays_as_a_message() {
        check_all(&[
            MapError::Unaligned,
            MapError::OutOfRange,
            MapError::AlreadyMapped,
            MapError::OutOfMemory,
        ]);
        check_all(&[VgicError::BadAccess, VgicError::NoRegister]);
        check_all(&[NoDevice]);
    }
}
