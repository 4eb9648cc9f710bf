//! The entry point: the zImage header, the HYP-mode check, the boot stack,
//! .bss, HVBAR, and the call into Rust (r2 = the device tree, as the Linux
//! ARM boot protocol passes it).

use core::arch::global_asm;

/// Most physical CPUs the hypervisor brings up (secondaries come later).
pub const MAX_CPUS: usize = 8;
/// Bytes of HYP stack per physical CPU.
pub const STACK_SIZE: usize = 64 * 1024;

/// The HYP stacks, one per CPU, in .bss.
#[repr(C, align(4096))]
pub struct Stacks(pub [[u8; STACK_SIZE]; MAX_CPUS]);

/// The boot stacks. Only the entry code below touches them by symbol.
#[no_mangle]
pub static mut CHROMA_STACKS: Stacks = Stacks([[0; STACK_SIZE]; MAX_CPUS]);

// The image is linked to run where QEMU (and a boot loader honouring the
// header's start word) puts it: it is not position-independent.
//
// Contract with the binary crate, which defines the two Rust entries:
// - `chroma_primary_main(dtb: usize) -> !`, in HYP mode, MMU off, on the
//   boot CPU's stack, .bss zeroed, HVBAR set, IRQ/FIQ/aborts masked;
// - `chroma_wrong_mode(mode: u32) -> !`, in whatever mode the loader used
//   (not HYP), MMU off, same stack and .bss: it reports and stops.
global_asm!(
    r#"
    .section .text.head, "ax"
    .arm
    .global _start
_start:
    // zImage header (Linux arch/arm/boot/compressed/head.S): eight NOPs,
    // a branch over the magic words at 0x24.
    .rept 8
    mov     r0, r0
    .endr
    b       1f
    .word   0x016f2818              // 0x24: zImage magic
    .word   __image_start           // 0x28: start: the load and run address
    .word   __image_end             // 0x2c: end (xtask moves it past the manifest)
    .word   0x04030201              // 0x30: little-endian
1:
    cpsid   aif                     // no asynchronous exception until vectors exist
    mov     r10, r2                 // the DTB, kept for Rust
    ldr     r0, =CHROMA_STACKS
    add     sp, r0, #{stack_size}   // CPU 0's stack top (not used before .bss is zero)
    ldr     r1, =__bss_start
    ldr     r2, =__bss_end
    mov     r3, #0
2:  cmp     r1, r2
    strlo   r3, [r1], #4
    blo     2b
    mrs     r4, cpsr
    and     r4, r4, #0x1f
    cmp     r4, #{mode_hyp}
    beq     3f
    mov     r0, r4
    bl      chroma_wrong_mode
    b       4f
3:  ldr     r1, =chroma_hyp_vectors
    mcr     p15, 4, r1, c12, c0, 0  // HVBAR
    isb
    mov     r0, r10
    bl      chroma_primary_main
4:  wfi
    b       4b
    .ltorg
"#,
    stack_size = const STACK_SIZE,
    mode_hyp = const super::sysreg::MODE_HYP,
);

/// Parks this CPU for good (no interrupt is enabled to wake it).
pub fn park() -> ! {
    loop {
        aarch32_cpu::asm::wfi();
    }
}
