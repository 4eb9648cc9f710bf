//! A larger stack for the guest's main function.
//!
//! The runtime gives each CPU 16 KiB. `VirtIONet::new` builds the driver (about
//! 7 KiB with 64-entry queues) by value and it is moved a few times on the
//! way into [`crate::NetStack`], which overflowed that stack into `.bss`. The
//! guests therefore switch to this stack before anything else; interrupt
//! handlers run on it too (EL1 uses SP_EL1 throughout).

use core::arch::asm;
use core::cell::UnsafeCell;

use chroma_guest_rt::Boot;

/// Bytes of the main stack.
pub const MAIN_STACK_SIZE: usize = 128 * 1024;

#[repr(C, align(16))]
struct MainStack(UnsafeCell<[u8; MAIN_STACK_SIZE]>);

// SAFETY: only the boot CPU uses the stack, once, through `run`; no Rust
// reference to its bytes is ever made.
unsafe impl Sync for MainStack {}

static MAIN_STACK: MainStack = MainStack(UnsafeCell::new([0; MAIN_STACK_SIZE]));

/// The first frame on the new stack. `main` arrives in x1 as a plain code
/// pointer: both sides are this crate's Rust, so the C ABI only fixes the
/// registers.
#[allow(improper_ctypes_definitions)]
extern "C" fn trampoline(boot: &'static Boot, main: fn(&'static Boot) -> !) -> ! {
    main(boot)
}

/// Calls `main(boot)` on the main stack; never returns. Call it once, from
/// the guest's entry point on the boot CPU.
pub fn run(boot: &'static Boot, main: fn(&'static Boot) -> !) -> ! {
    let top = MAIN_STACK.0.get() as usize + MAIN_STACK_SIZE;
    // SAFETY:
    // 1. `top` is the 16-byte-aligned end of a static that nothing else uses
    //    (see `MainStack`), so the new stack aliases no live object.
    // 2. The old stack is abandoned: `trampoline` never returns, so no frame
    //    on it is used again.
    // 3. x29/x30 are cleared so frame-pointer walks end at `trampoline`.
    unsafe {
        asm!(
            "mov sp, {top}",
            "mov x29, xzr",
            "mov x30, xzr",
            "br {entry}",
            top = in(reg) top,
            entry = in(reg) trampoline as *const () as usize,
            in("x0") boot,
            in("x1") main,
            options(noreturn),
        )
    }
}
