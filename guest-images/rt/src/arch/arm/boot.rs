//! The zImage-style header and the primary and secondary entry points.
//!
//! Boot protocol (Linux `Documentation/arch/arm/booting.rst`): the loader
//! puts the image in RAM and enters its first instruction in SVC mode with
//! the MMU off, IRQs and FIQs masked, r0 = 0, r1 = machine type (~0 with a
//! DTB) and r2 = the DTB address. chroma (like U-Boot) loads it at RAM base +
//! 0x8000 = 0x4000_8000, the link address (linker/guest-arm.ld). Plain
//! `qemu-system-arm -M virt -kernel` loads a raw image at RAM base + 0x1_0000
//! instead, so, like a zImage, the entry code moves the image to its link
//! address when it runs elsewhere (forwards or backwards, whichever the
//! overlap needs), then jumps there. Before anything is written it makes sure
//! the DTB lies outside the range the image occupies at its link address
//! (`.bss` and stacks included); if not, it refuses with a fixed line rather
//! than overwrite it.
//! Entered in any mode but SVC (HYP, on `-M virt,virtualization=on`), it
//! prints a fixed line and parks the CPU: an HVC from HYP mode would trap to
//! HYP itself, so there is no PSCI call to make.
//!
//! The header: eight `mov r0, r0`, a branch at 0x20, then at 0x24 the zImage
//! magic 0x016f2818, at 0x28 the start (link) address 0x4000_8000, at 0x2c
//! the end address: link address + the whole memory footprint, including
//! `.bss` and the per-CPU stacks (not only the file, which is shorter), so a
//! loader that keeps [start, end) free never places the DTB where the guest
//! zeroes or pushes; at 0x30 0x04030201 (little-endian).
//!
//! Rust starts at `_rt_primary_main(dtb, load_address)` and
//! `_rt_secondary_main(index)` (boot.rs and smp.rs), on the CPU's own stack
//! at the link address, with VBAR set and TPIDRPRW = CPU index. SCTLR keeps
//! M and C clear (MMU and data cache off); V and TE are cleared (vectors at
//! VBAR, taken in A32) and A (alignment checks beyond Device memory's own).
//! VFP stays disabled: the target is soft-float.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.head, "ax"
    .arm
    .global _image_start
_image_start:
    .rept   8
    mov     r0, r0
    .endr
    b       _rt_primary_entry       @ 0x20
    .word   0x016f2818              @ 0x24: zImage magic
    .word   _image_start            @ 0x28: start (link) address
    .word   __image_end             @ 0x2c: end, including .bss and stacks
    .word   0x04030201              @ 0x30: little-endian

_rt_primary_entry:
    cpsid   aif
    mov     r10, r2                 @ DTB address
    mrs     r3, cpsr
    and     r3, r3, #0x1f
    cmp     r3, #0x13               @ SVC mode
    beq     1f
    adr     r1, 91f
    cmp     r3, #0x1a               @ HYP mode: no PSCI call possible
    beq     _rt_fatal_park
    b       _rt_fatal_off

1:  adr     r4, _image_start        @ run address
    ldr     r5, =_image_start       @ link address
    // Refuse if the DTB overlaps [link address, __image_end), where the
    // image moves to (if it must) and zeroes .bss and pushes.
    // r6 = footprint end; r10/r8 = DTB start and end (if r2 is a DTB).
    ldr     r6, =__image_end
    cmp     r10, #0
    beq     2f
    tst     r10, #3
    bne     2f
    ldr     r8, [r10]
    ldr     r9, =0xedfe0dd0         @ FDT magic 0xd00dfeed, big-endian
    cmp     r8, r9
    bne     2f
    ldr     r8, [r10, #4]           @ totalsize, big-endian
    rev     r8, r8
    add     r8, r10, r8
    cmp     r10, r6                 @ DTB start < footprint end
    bhs     2f
    cmp     r8, r5                  @ and DTB end > link address: overlap
    bls     2f
    adr     r1, 92f
    b       _rt_fatal_off
2:  cmp     r4, r5
    beq     _rt_primary_linked
    // Move [r4, r4 + (__load_end - link)) to r5. The source and destination
    // overlap (0x8000 apart on QEMU), so the loop that copies must not be in
    // either: copy it first to the top of the footprint at the link address
    // (the last CPU's stack: beyond the loaded part of both, and clear of
    // the DTB, checked above), unless the source reaches up there.
    ldr     r7, =__load_end
    sub     r7, r7, r5              @ bytes to move, a multiple of 16
    sub     r9, r6, #{stub_room}    @ r9 = where the copy loop goes
    add     r8, r4, r7              @ source end
    cmp     r8, r9
    bls     3f
    cmp     r4, r6
    bhs     3f
    ldr     r1, =_rt_message_move       @ the source overlaps the loop's place
    sub     r1, r1, r5              @ (link to run address: too far for adr)
    add     r1, r1, r4
    b       _rt_fatal_off
3:  ldr     r0, =_rt_move
    sub     r0, r0, r5
    add     r0, r0, r4
    ldr     r1, =_rt_move_end
    sub     r1, r1, r5
    add     r1, r1, r4
    mov     r2, r9
4:  ldr     r3, [r0], #4
    str     r3, [r2], #4
    cmp     r0, r1
    blo     4b
    mov     r0, #0
    dsb
    mcr     p15, 0, r0, c7, c5, 0   @ ICIALLU: the loop is new code
    mcr     p15, 0, r0, c7, c5, 6   @ BPIALL
    dsb
    isb
    mov     r0, r4
    mov     r1, r5
    mov     r2, r7
    ldr     r6, =_rt_primary_linked
    bx      r9

    // The copy loop, position-independent: moves r2 bytes (a multiple of
    // 16) from r0 to r1, forwards or backwards as the overlap needs, then
    // continues at r6. Clobbers r0..r3, r8, r9, r12.
_rt_move:
    cmp     r1, r0
    bhi     2f
    add     r2, r0, r2
1:  ldm     r0!, {{r3, r8, r9, r12}}
    stm     r1!, {{r3, r8, r9, r12}}
    cmp     r0, r2
    blo     1b
    b       4f
2:  add     r1, r1, r2
    add     r2, r0, r2
3:  ldmdb   r2!, {{r3, r8, r9, r12}}
    stmdb   r1!, {{r3, r8, r9, r12}}
    cmp     r2, r0
    bhi     3b
4:  mov     r0, #0
    dsb
    mcr     p15, 0, r0, c7, c5, 0   @ ICIALLU: drop stale instructions
    mcr     p15, 0, r0, c7, c5, 6   @ BPIALL
    dsb
    isb
    bx      r6
_rt_move_end:

_rt_primary_linked:
    bl      _rt_cpu_setup
    // Zero .bss (16-byte aligned at both ends by the linker script).
    ldr     r0, =__bss_start
    ldr     r1, =__bss_end
    mov     r2, #0
    mov     r3, #0
7:  cmp     r0, r1
    strdlo  r2, r3, [r0], #8
    blo     7b
    mov     r0, #0
    mcr     p15, 0, r0, c13, c0, 4  @ TPIDRPRW = CPU index 0
    ldr     r0, =__stacks_start
    add     sp, r0, #{stack_size}
    mov     r11, #0
    mov     lr, #0
    mov     r0, r10
    mov     r1, r4
    bl      _rt_primary_main
    b       _rt_park

    // PSCI CPU_ON entry (SVC mode, MMU off): r0 = context id = CPU index,
    // chosen by smp::start_cpu.
    .global _rt_secondary_entry
_rt_secondary_entry:
    cpsid   aif
    cmp     r0, #{max_cpus}
    bhs     _rt_park
    mov     r4, r0
    bl      _rt_cpu_setup
    mcr     p15, 0, r4, c13, c0, 4  @ TPIDRPRW = CPU index
    ldr     r1, =__stacks_start
    add     r2, r4, #1
    mov     r3, #{stack_size}
    mla     r1, r2, r3, r1
    mov     sp, r1
    mov     r11, #0
    mov     lr, #0
    mov     r0, r4
    bl      _rt_secondary_main
    b       _rt_park

    // Per-CPU PL1 state; clobbers r0.
_rt_cpu_setup:
    mrc     p15, 0, r0, c1, c0, 0   @ SCTLR
    bic     r0, r0, #(1 << 13)      @ V: vectors at VBAR
    bic     r0, r0, #(1 << 30)      @ TE: exceptions taken in A32
    bic     r0, r0, #(1 << 1)       @ A: no extra alignment checks
    mcr     p15, 0, r0, c1, c0, 0
    ldr     r0, =_rt_vectors
    mcr     p15, 0, r0, c12, c0, 0  @ VBAR
    isb
    bx      lr

_rt_park:
    cpsid   aif
    wfi
    b       _rt_park

    // Fatal before any Rust: print the message at r1 on the QEMU virt PL011
    // with position-independent code only, then PSCI SYSTEM_OFF over HVC
    // (the QEMU virt and chroma conduit), or just park.
_rt_fatal_off:
    bl      _rt_fatal_puts
    ldr     r0, =0x84000008
    .arch_extension virt
    hvc     #0
    b       _rt_park
_rt_fatal_park:
    bl      _rt_fatal_puts
    b       _rt_park
_rt_fatal_puts:
    mov     r2, #0x09000000
8:  ldrb    r3, [r1], #1
    cmp     r3, #0
    strne   r3, [r2]
    bne     8b
    bx      lr
91: .asciz  "rt: FATAL: not entered in SVC mode\n"
92: .asciz  "rt: FATAL: the DTB overlaps 0x40008000 + image size, where the image runs\n"
_rt_message_move:
    .asciz  "rt: FATAL: loaded too close below the end of 0x40008000 + image size to move\n"
    .balign 4
    .ltorg
    "#,
    stack_size = const crate::boot::STACK_SIZE,
    max_cpus = const crate::boot::MAX_CPUS,
    stub_room = const 128,
);
