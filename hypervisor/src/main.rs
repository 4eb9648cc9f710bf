//! chroma: a type-1 hypervisor for Arm boards. This binary wires the
//! portable core, the AArch64 back-end and the board together: boot,
//! memory, the VMs from the manifest, and one scheduler loop per CPU.
//!
//! On 32-bit Arm (`target_arch = "arm"`, board qemu-virt-arm) it is the
//! first slice of the ARMv7-A back-end instead, in `armv7`: boot in HYP
//! mode, the HYP MMU, the board's device tree, frames and heap, a summary,
//! and power-off. The modules below name AArch64 directly and build only
//! for it until they move behind arch seams (see `armv7`'s module doc).
#![no_std]
#![no_main]
#![deny(missing_docs)]
// No panic on a path a guest can reach (issue 10); tests may unwrap (clippy.toml).
// Where `clippy::indexing_slicing` is denied, and why: "Panics" in chroma-core's docs.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

extern crate alloc;

#[cfg(target_arch = "aarch64")]
mod console;
#[cfg(target_arch = "aarch64")]
mod exits;
#[cfg(target_arch = "aarch64")]
mod guest_mem;
#[cfg(target_arch = "aarch64")]
mod mm;
#[cfg(target_arch = "aarch64")]
mod nic;
#[cfg(target_arch = "aarch64")]
mod platform_info;
#[cfg(target_arch = "aarch64")]
mod sched;
#[cfg(target_arch = "aarch64")]
mod shutdown;
#[cfg(target_arch = "aarch64")]
mod stats;
#[cfg(target_arch = "aarch64")]
mod uplink;
#[cfg(target_arch = "aarch64")]
mod vm;
#[cfg(target_arch = "aarch64")]
mod vtimer;

#[cfg(target_arch = "arm")]
mod armv7;

#[cfg(target_arch = "aarch64")]
use chroma_arch::aarch64::{cpu, vectors::El2Frame};
#[cfg(target_arch = "aarch64")]
use core::panic::PanicInfo;
#[cfg(target_arch = "aarch64")]
use core::sync::atomic::{AtomicUsize, Ordering};

/// Physical CPUs that reached their scheduler loop.
#[cfg(target_arch = "aarch64")]
static CPUS_ONLINE: AtomicUsize = AtomicUsize::new(0);

/// The boot CPU's entry from `_start` (x0 = the device tree).
#[cfg(target_arch = "aarch64")]
#[no_mangle]
extern "C" fn chroma_primary_main(dtb: usize) -> ! {
    // SAFETY: called once, by the boot CPU, before anything else runs.
    unsafe { mm::early_mmu_on(dtb) };
    console::init_early();
    log::info!(
        "chroma {} starting at EL2 (dtb at {:#x})",
        env!("CARGO_PKG_VERSION"),
        dtb
    );
    let board = match platform_info::discover(dtb) {
        Ok(b) => b,
        Err(e) => fatal_fmt(format_args!("{e}")),
    };
    mm::init(&board);
    console::init(&board);
    let manifest = match mm::manifest() {
        Ok(m) => m,
        Err(e) => fatal_fmt(format_args!("no valid VM manifest after the image: {e}")),
    };
    console::set_level(manifest.options().log_level);
    sched::init_system(&board, &manifest);
    let started = sched::start_secondaries(&board);
    log::info!("{} physical CPU(s) up", started + 1);
    CPUS_ONLINE.fetch_add(1, Ordering::SeqCst);
    sched::run_cpu(0)
}

/// A secondary CPU's entry after PSCI CPU_ON (its MMU is already on).
#[cfg(target_arch = "aarch64")]
#[no_mangle]
extern "C" fn chroma_secondary_main(cpu: usize) -> ! {
    CPUS_ONLINE.fetch_add(1, Ordering::SeqCst);
    sched::run_cpu(cpu)
}

/// An exception taken at EL2 itself: a hypervisor bug. Report and stop.
#[cfg(target_arch = "aarch64")]
#[no_mangle]
extern "C" fn chroma_el2_exception(frame: &El2Frame, kind: u64) -> ! {
    chroma_arch::aarch64::vectors::report_el2_exception(frame, kind, |line| {
        console::emergency(line)
    });
    shutdown::power_off()
}

#[cfg(target_arch = "aarch64")]
#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    console::emergency(format_args!(
        "chroma: PANIC on CPU {:#x}: {}",
        cpu::affinity(),
        info
    ));
    shutdown::power_off()
}

/// Stops the machine with a message: the hypervisor cannot continue.
#[cfg(target_arch = "aarch64")]
fn fatal(message: &str) -> ! {
    fatal_fmt(format_args!("{message}"))
}

/// Stops the machine with a formatted message.
#[cfg(target_arch = "aarch64")]
fn fatal_fmt(args: core::fmt::Arguments) -> ! {
    console::emergency(format_args!("chroma: fatal: {args}"));
    shutdown::power_off()
}
