//! Runtime for the no_std test guests: boot, vectors, PL011, GICv2/v3, timer, PSCI.
//!
//! It builds for AArch64 (`aarch64-unknown-none-softfloat`) and for ARMv7-A /
//! AArch32 (`armv7a-none-eabi`) from the same sources; [`arch`] holds what
//! differs. A guest sees the QEMU `virt` machine, on plain QEMU or under
//! chroma, and enters with the MMU off: at EL1 with the DTB address in x0
//! (AArch64), or in SVC mode with r0 = 0, r1 = ~0, r2 = DTB address (AArch32,
//! the Linux ARM boot protocol). This crate owns everything up to the
//! guest's `main`:
//!
//! - [`boot`] and `arch::*::boot`: the image header (arm64 Image or
//!   zImage-style), the primary and secondary entry points, per-CPU stacks,
//!   zeroing `.bss`;
//! - [`exceptions`] and `arch::*::vectors`: the vector table, a readable
//!   report for anything unexpected, and hooks for synchronous aborts and IRQs;
//! - [`uart`], [`gic`], [`timer`], [`psci`]: small drivers;
//! - [`platform`]: what the DTB says (UART, GIC version and bases, CPUs,
//!   PSCI conduit, `/chosen/bootargs`).
//!
//! # Memory model
//!
//! The MMU stays off, so every data access is Device-nGnRnE and uncached.
//! Exclusive loads and stores (and so atomics and spin locks) are not
//! architecturally guaranteed on Device memory, so this crate uses none:
//! state shared between CPUs is written by one CPU only and read with
//! volatile loads ([`shared::Shared`]). Unaligned accesses to Device memory
//! fault; both targets' `+strict-align` keeps the compiler from emitting them.
//! Both targets are soft-float: the compiler emits no FP/SIMD instructions
//! (`armv7a-none-eabi` is `+soft-float,-neon`), so the AArch32 runtime
//! leaves VFP disabled.
//!
//! A guest binary names its entry point with [`entry!`]:
//!
//! ```ignore
//! chroma_guest_rt::entry!(main);
//! fn main(boot: &'static chroma_guest_rt::Boot) -> ! { chroma_guest_rt::power_off() }
//! ```
#![no_std]
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod arch;
pub mod args;
pub mod boot;
pub mod exceptions;
pub mod gic;
pub mod platform;
pub mod psci;
pub mod shared;
pub mod smp;
pub mod timer;
pub mod uart;

pub use boot::Boot;
/// The DTB parser the runtime uses, for guests' own DTB queries.
pub use fdt;
pub use platform::Platform;

/// Prints to the console (the PL011), without a newline.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::uart::_print(format_args!($($arg)*))
    };
}

/// Prints a line to the console (the PL011). Lines end in `\n` only.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => {
        $crate::uart::_print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Names the guest's entry point: a `fn(&'static Boot) -> !` that the primary
/// CPU calls once the runtime is up (stack, `.bss`, vectors, UART, GIC).
#[macro_export]
macro_rules! entry {
    ($path:path) => {
        /// The guest's entry point, called by `chroma_guest_rt` on the boot CPU.
        #[no_mangle]
        pub extern "Rust" fn __chroma_guest_main(boot: &'static $crate::Boot) -> ! {
            let main: fn(&'static $crate::Boot) -> ! = $path;
            main(boot)
        }
    };
}

/// Powers the machine off through PSCI SYSTEM_OFF; if that returns, parks this CPU.
pub fn power_off() -> ! {
    let result = psci::system_off();
    println!("rt: SYSTEM_OFF returned {}", result);
    halt()
}

/// Parks this CPU forever with interrupts masked.
pub fn halt() -> ! {
    arch::dsb_sy();
    loop {
        exceptions::mask_irqs();
        arch::wfi();
    }
}

/// Returns the index of the running CPU: 0 for the boot CPU, and the index
/// given to [`smp::start_cpu`] for the others (kept in TPIDR_EL1, or in
/// TPIDRPRW on AArch32).
pub fn cpu_index() -> usize {
    // The boot code writes an index below `boot::MAX_CPUS` before any Rust runs.
    arch::cpu_index()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("rt: PANIC on cpu {}: {}", cpu_index(), info);
    power_off()
}
