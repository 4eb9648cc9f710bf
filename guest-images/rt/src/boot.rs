//! [`Boot`], the Rust side of the primary entry, and [`run_on_stack`].
//!
//! The entry code itself is per architecture (`arch::aarch64::boot`: an arm64
//! Image entered at EL1; `arch::arm::boot`: a zImage-style image entered in
//! SVC mode). Both zero `.bss`, give the CPU its stack and vectors, and call
//! `_rt_primary_main(dtb_address, load_address)` here.

use core::cell::UnsafeCell;

use crate::platform::Platform;

/// Largest number of CPUs the runtime gives a stack to (also in the linker script).
pub const MAX_CPUS: usize = 8;
/// Bytes of stack per CPU (also in the linker script).
pub const STACK_SIZE: usize = 0x4000;

/// What the runtime found at boot, handed to the guest's `main`.
pub struct Boot {
    /// The DTB address the loader passed (x0 on AArch64, r2 on AArch32).
    pub dtb_address: usize,
    /// Where the loader put the image: the link address on AArch64 (the
    /// entry refuses anything else); on AArch32, where it ran before it
    /// moved itself to the link address (0x4001_0000 on plain QEMU).
    pub load_address: usize,
    /// Devices, CPUs, PSCI conduit and boot arguments from the DTB.
    pub platform: Platform,
}

/// The one [`Boot`], written by the boot CPU before any other CPU starts.
struct BootCell(UnsafeCell<Option<Boot>>);

// SAFETY: the boot CPU writes the cell once in `_rt_primary_main`, before it
// enables interrupts or starts any other CPU; afterwards it is only read.
unsafe impl Sync for BootCell {}

static BOOT: BootCell = BootCell(UnsafeCell::new(None));

/// Returns the boot information, once the boot CPU has filled it in.
pub fn boot() -> Option<&'static Boot> {
    // SAFETY: after the single write in `_rt_primary_main` the cell is never written again (see `BootCell`), so a shared reference is sound; before it, only the boot CPU runs and it does not call this.
    unsafe { (*BOOT.0.get()).as_ref() }
}

extern "Rust" {
    /// The guest's entry point, defined by [`crate::entry!`].
    fn __chroma_guest_main(boot: &'static Boot) -> !;
}

/// Rust entry on the boot CPU: stack and `.bss` are ready, vectors installed.
#[no_mangle]
extern "C" fn _rt_primary_main(dtb_address: usize, load_address: usize) -> ! {
    let platform = Platform::from_dtb(dtb_address);
    if let Some(uart) = platform.uart_base {
        // SAFETY: the DTB names this address as the PL011 (`arm,pl011`).
        unsafe { crate::uart::set_base(uart) };
    }
    // SAFETY: only this CPU runs and nothing has borrowed the cell yet (the `BootCell` invariant), so this exclusive write aliases nothing.
    let boot = unsafe {
        *BOOT.0.get() = Some(Boot {
            dtb_address,
            load_address,
            platform,
        });
        (*BOOT.0.get()).as_ref()
    };
    let Some(boot) = boot else { crate::halt() };
    if let Some(gic) = boot.platform.gic {
        gic.init_distributor();
        gic.init_cpu_interface();
    }
    crate::shared::publish();
    // SAFETY: `__chroma_guest_main` is defined by the guest binary through `entry!`, with exactly this signature.
    unsafe { __chroma_guest_main(boot) }
}

/// Calls `main(boot)` on the stack that ends at `top`; never returns.
///
/// For guests whose main function needs more than the runtime's 16 KiB
/// per-CPU stack. Exception handlers run on the interrupted stack (on
/// AArch32 too: the vectors switch to SVC mode first), so they use it too.
///
/// # Safety
///
/// `top` must be the 16-byte-aligned end of memory that nothing else uses
/// while this CPU runs on it (a `static` buffer no Rust reference points
/// into). The current stack is abandoned.
pub unsafe fn run_on_stack(top: usize, boot: &'static Boot, main: fn(&'static Boot) -> !) -> ! {
    MAIN_ON_STACK.set(Some(main));
    // SAFETY: the caller guarantees the new stack; `start_main_on_stack` never returns, so no frame on the old stack is used again.
    unsafe { crate::arch::run_on_stack(top, boot as *const Boot as usize, start_main_on_stack) }
}

/// The `main` that [`run_on_stack`] calls, for the first frame on the new stack.
static MAIN_ON_STACK: crate::shared::Shared<Option<fn(&'static Boot) -> !>> =
    crate::shared::Shared::new(None);

/// The first frame on the stack of [`run_on_stack`].
extern "C" fn start_main_on_stack(_boot_address: usize) -> ! {
    match (MAIN_ON_STACK.get(), boot()) {
        (Some(main), Some(boot)) => main(boot),
        _ => crate::halt(),
    }
}
