//! The portable core of chroma: everything about VMs that does not depend on
//! an architecture or a board.
//!
//! Architecture back-ends implement the small traits defined here
//! ([`pagetable::PageTableFormat`], [`pagetable::TableMemory`],
//! [`vgic::ListRegisters`], [`vgic::PhysicalInterrupts`]) and translate their trap syndromes into
//! [`exit::Exit`]; the core never touches a register, so all of it runs under
//! `cargo test` on the host.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod console;
pub mod exit;
pub mod frames;
pub mod pagetable;
pub mod pl011;
pub mod psci;
pub mod ratelimit;
pub mod vgic;
pub mod vtimer;

pub use chroma_mem::{GuestPhysAddr, HostPhysAddr, HostVirtAddr};
