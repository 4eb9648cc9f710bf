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
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod console;
pub mod exit;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod frames;
pub mod guest_map;
pub mod irq;
pub mod pagetable;
pub mod pl011;
pub mod psci;
pub mod ratelimit;
pub mod run;
pub mod vcpu;
pub mod vgic;
pub mod vm;
pub mod vtimer;

pub use chroma_mem::{GuestPhysAddr, HostPhysAddr, HostVirtAddr};
