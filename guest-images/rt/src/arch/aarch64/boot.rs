//! The arm64 Image header and the primary and secondary entry points.
//!
//! Boot protocol (Linux `Documentation/arch/arm64/booting.rst`): the loader
//! puts the Image at a 2 MiB-aligned RAM address + `text_offset` and enters
//! its first instruction at EL1 (or EL2) with the MMU off and x0 = DTB address.
//! The code is linked for 0x4008_0000 (linker/guest-aarch64.ld); the entry code
//! compares its run address with its link address and, if they differ, prints
//! a fixed line on the QEMU virt PL011 and powers off, rather than run with
//! every absolute pointer wrong. It does the same if entered at an exception
//! level other than EL1 (for example EL2 on `-M virt,virtualization=on`).
//!
//! Rust starts at `_rt_primary_main(dtb, load_address)` and
//! `_rt_secondary_main(index)` (boot.rs and smp.rs).

use core::arch::global_asm;

// The Image header (64 bytes), then the primary and secondary entry points.
//
// SCTLR_EL1 = 0x30d0_1818: RES1 bits 29:28, 23:22, 20, 11; I (12, instruction
// cache on, harmless with the MMU off); SA (3) and SA0 (4), stack alignment
// checks; M, C and A clear: MMU off, data cache off, no alignment checks
// beyond Device memory's own.
// CPACR_EL1.FPEN (bits 21:20) = 0b11: no FP/SIMD traps, because the compiler
// may use FP registers even for softfloat targets' integer code (memcpy).
global_asm!(
    r#"
    .section .text.head, "ax"
    .global _image_start
_image_start:
    b       _rt_primary_entry       // code0
    .long   0                       // code1
    .quad   0x80000                 // text_offset
    .quad   __image_size            // image_size, including .bss and stacks
    .quad   0xa                     // flags: LE, 4K pages, placement anywhere
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5

_rt_primary_entry:
    msr     daifset, #0xf
    mov     x19, x0                 // DTB address
    mrs     x1, currentel
    cmp     x1, #(1 << 2)           // CurrentEL.EL (bits 3:2) must be 1
    adr     x1, 6f
    b.ne    _rt_fatal
    adr     x1, _image_start
    ldr     x2, =_image_start
    cmp     x1, x2
    adr     x1, 4f
    b.ne    _rt_fatal
    bl      _rt_cpu_setup
    // Zero .bss (16-byte aligned at both ends by the linker script).
    ldr     x1, =__bss_start
    ldr     x2, =__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:  mov     x0, #0
    msr     tpidr_el1, x0
    ldr     x1, =__stacks_start
    add     x1, x1, #{stack_size}
    mov     sp, x1
    mov     x29, xzr
    mov     x30, xzr
    mov     x0, x19
    ldr     x1, =_image_start       // load address = link address
    bl      _rt_primary_main
    b       _rt_park

    // PSCI CPU_ON entry: x0 = context id = CPU index, chosen by smp::start_cpu.
    .global _rt_secondary_entry
_rt_secondary_entry:
    msr     daifset, #0xf
    cmp     x0, #{max_cpus}
    b.hs    _rt_park
    mov     x19, x0
    bl      _rt_cpu_setup
    msr     tpidr_el1, x19
    ldr     x1, =__stacks_start
    add     x2, x19, #1
    mov     x3, #{stack_size}
    madd    x1, x2, x3, x1
    mov     sp, x1
    mov     x29, xzr
    mov     x30, xzr
    mov     x0, x19
    bl      _rt_secondary_main
    b       _rt_park

    // Per-CPU EL1 state; clobbers x0.
_rt_cpu_setup:
    msr     spsel, #1
    ldr     x0, =0x30d01818
    msr     sctlr_el1, x0
    mov     x0, #(3 << 20)
    msr     cpacr_el1, x0
    ldr     x0, =_rt_vectors
    msr     vbar_el1, x0
    isb
    ret

_rt_park:
    msr     daifset, #0xf
    wfi
    b       _rt_park

    // Not at EL1, or running somewhere other than the link address (every
    // absolute pointer would be wrong): print the message at x1 with
    // position-independent code only, then PSCI SYSTEM_OFF over HVC (the
    // QEMU virt conduit).
_rt_fatal:
    mov     x2, #0x09000000
3:  ldrb    w3, [x1], #1
    cbz     w3, 5f
    str     w3, [x2]
    b       3b
5:  ldr     x0, =0x84000008
    hvc     #0
    b       _rt_park
4:  .asciz  "rt: FATAL: not loaded at 0x40080000 (RAM base + text_offset)\n"
6:  .asciz  "rt: FATAL: not entered at EL1\n"
    .balign 4
    .ltorg
    "#,
    stack_size = const crate::boot::STACK_SIZE,
    max_cpus = const crate::boot::MAX_CPUS,
);
