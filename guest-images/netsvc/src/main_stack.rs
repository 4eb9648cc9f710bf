//! A larger stack for the guest's main function.
//!
//! The runtime gives each CPU 16 KiB. `VirtIONet::new` builds the driver (about
//! 7 KiB with 64-entry queues) by value and it is moved a few times on the
//! way into [`crate::NetStack`], which overflowed that stack into `.bss`. The
//! guests therefore switch to this stack before anything else; interrupt
//! handlers run on it too (EL1 uses SP_EL1 throughout; the AArch32 vectors
//! switch to SVC mode and its stack).

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

/// Calls `main(boot)` on the main stack; never returns. Call it once, from
/// the guest's entry point on the boot CPU.
pub fn run(boot: &'static Boot, main: fn(&'static Boot) -> !) -> ! {
    let top = MAIN_STACK.0.get() as usize + MAIN_STACK_SIZE;
    // SAFETY: `top` is the 16-byte-aligned end of a static that nothing else uses (see `MainStack`), so the new stack aliases no live object; this is called once, so the stack is never entered twice.
    unsafe { chroma_guest_rt::boot::run_on_stack(top, boot, main) }
}
