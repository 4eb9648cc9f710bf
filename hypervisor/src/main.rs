//! chroma: a type-1 hypervisor for Arm boards. This binary wires the
//! portable core, the back-end of the architecture it is built for and the
//! board together: boot, memory, the VMs from the manifest, and one
//! scheduler loop per CPU.
//!
//! The back-end is AArch64 at EL2 (boards qemu-virt-aarch64) or ARMv7-A in
//! HYP mode (qemu-virt-arm), chosen by the target: `arch` gives both the
//! same names, so every other module is written once. `armv7` holds what
//! only the ARMv7 entry has (the wrong-mode refusal, its HYP exception
//! report and a W^X self-test).
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

mod arch;
#[cfg(target_arch = "arm")]
mod armv7;
mod boot_time;
mod console;
mod exits;
mod guest_mem;
mod image;
mod mm;
mod nic;
mod platform_info;
mod sched;
mod shutdown;
mod stats;
mod uplink;
mod vm;
mod vtimer;

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Physical CPUs that reached their scheduler loop.
static CPUS_ONLINE: AtomicUsize = AtomicUsize::new(0);

/// Where the hypervisor says it starts, for its first line.
#[cfg(target_arch = "aarch64")]
const STARTING: &str = "at EL2";
#[cfg(target_arch = "arm")]
const STARTING: &str = "in HYP mode on ARMv7-A";

/// The boot CPU's entry from `_start` (x0 / r2 = the device tree).
#[no_mangle]
extern "C" fn chroma_primary_main(dtb: usize) -> ! {
    let entry = arch::cpu::now();
    // SAFETY: called once, by the boot CPU, before anything else runs.
    unsafe { mm::early_mmu_on(dtb) };
    console::init_early();
    boot_time::entered(entry);
    log::info!(
        "chroma {} starting {} (MPIDR {:#x}, dtb at {:#x})",
        env!("CARGO_PKG_VERSION"),
        STARTING,
        arch::cpu::affinity(),
        dtb
    );
    let board = match platform_info::discover(dtb) {
        Ok(b) => b,
        Err(e) => fatal_fmt(format_args!("{e}")),
    };
    mm::init(&board);
    console::init(&board);
    #[cfg(target_arch = "arm")]
    armv7::self_tests(dtb);
    let manifest = match mm::manifest() {
        Ok(m) => m,
        Err(e) => fatal_fmt(format_args!("no valid VM manifest after the image: {e}")),
    };
    console::set_level(manifest.options().log_level);
    boot_time::report_entry();
    boot_time::report_start();
    sched::init_system(&board, &manifest);
    let started = sched::start_secondaries(&board);
    log::info!("{} physical CPU(s) up", started + 1);
    boot_time::report_ready();
    CPUS_ONLINE.fetch_add(1, Ordering::SeqCst);
    sched::run_cpu(0)
}

/// A secondary CPU's entry after PSCI CPU_ON (its MMU is already on).
#[no_mangle]
extern "C" fn chroma_secondary_main(cpu: usize) -> ! {
    CPUS_ONLINE.fetch_add(1, Ordering::SeqCst);
    sched::run_cpu(cpu)
}

/// An exception taken at EL2 itself: a hypervisor bug. Report and stop.
#[cfg(target_arch = "aarch64")]
#[no_mangle]
extern "C" fn chroma_el2_exception(
    frame: &chroma_arch::aarch64::vectors::El2Frame,
    kind: u64,
) -> ! {
    chroma_arch::aarch64::vectors::report_el2_exception(frame, kind, |line| {
        console::emergency(line)
    });
    shutdown::power_off()
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    console::emergency(format_args!(
        "chroma: PANIC on CPU {:#x}: {}",
        arch::cpu::affinity(),
        info
    ));
    shutdown::power_off()
}

/// Stops the machine with a message: the hypervisor cannot continue.
fn fatal(message: &str) -> ! {
    fatal_fmt(format_args!("{message}"))
}

/// Stops the machine with a formatted message.
fn fatal_fmt(args: core::fmt::Arguments) -> ! {
    console::emergency(format_args!("chroma: fatal: {args}"));
    shutdown::power_off()
}
