@ a32-traps: a tiny AArch32 guest (ARM zImage) that checks, under chroma's
@ AArch32 VMs (`arch = "aarch32"`), what a 32-bit kernel relies on at the
@ boundary with the hypervisor: the Linux ARM boot protocol, emulated loads
@ and stores from every banked register set, conditional instructions that
@ trap although their condition failed, trapped coprocessor registers, PSCI
@ over HVC with SMC32 function ids, and the exceptions the hypervisor
@ injects (a data abort for an access outside RAM and devices, UNDEFINED
@ for an IMPLEMENTATION DEFINED register), each taken to the right mode,
@ vector, link register and fault status.
@
@ Assembled by tests/tests/aarch32.rs with LLVM's llvm-mc, ld.lld and
@ llvm-objcopy (llvm-19, lld-19); `--defsym UNDEF=1` builds the variant that
@ ends in an undefined instruction instead of a data abort. Every check
@ prints "a32: <what> ok" or "a32: FAIL <what>"; the guest then powers off.
@ Linked at RAM + 0x8000 (0x4000_8000), where chroma loads a zImage.

    .syntax unified
    .arch armv7-a
    .arch_extension virt
    .arm
    .text
    .global _start

    .equ UART, 0x09000000
    .equ PSCI_VERSION, 0x84000000
    .equ PSCI_FEATURES, 0x8400000a
    .equ SYSTEM_OFF, 0x84000008
    .equ CPU_ON_64, 0xc4000003

_start:
    .rept 8
    mov r0, r0
    .endr
    b 1f
    .word 0x016f2818           @ zImage magic
    .word _start               @ start
    .word _end                 @ end
1:  mov r8, r0
    mov r9, r1
    mov r10, r2
    ldr r6, =UART
    ldr r0, =s_hello
    bl puts
    ldr r0, =vectors
    mcr p15, 0, r0, c12, c0, 0 @ VBAR: any unexpected exception is reported
    isb

    @ The boot protocol: SVC mode, IRQ/FIQ/aborts masked, r0 = 0, r1 = ~0,
    @ r2 = a DTB in RAM (its magic, big-endian 0xd00dfeed).
    mrs r4, cpsr
    and r5, r4, #0x1f
    cmp r5, #0x13
    andeq r5, r4, #0x1c0
    cmpeq r5, #0x1c0
    ldreq r0, =s_mode
    ldrne r0, =f_mode
    bl puts
    cmp r8, #0
    cmpeq r9, #0xffffffff
    ldreq r0, =s_args
    ldrne r0, =f_args
    bl puts
    ldr r1, [r10]
    ldr r2, =0xedfe0dd0
    cmp r1, r2
    ldreq r0, =s_dtb
    ldrne r0, =f_dtb
    bl puts

    @ An emulated load: the PL011 flag register (TXFE or RXFE set).
    ldr r5, [r6, #0x18]
    tst r5, #0x90
    ldrne r0, =s_load
    ldreq r0, =f_load
    bl puts

    @ Banked registers as the transfer register of an emulated store:
    @ r8 of FIQ mode (x24), r13 of IRQ mode (x17), r14 of Undefined (x22).
    mov r8, #'s'
    cps #0x11
    mov r8, #'F'
    str r8, [r6]
    cps #0x12
    mov r13, #'I'
    str r13, [r6]
    cps #0x1b
    mov r14, #'U'
    str r14, [r6]
    cps #0x13
    str r8, [r6]               @ SVC's own r8: 's'
    mov r1, #'\n'
    str r1, [r6]

    @ A conditional WFI whose condition fails (Z clear) is not a wait (if the
    @ CPU traps it, chroma skips it; QEMU does not trap it).
    movs r0, #1
    wfieq
    ldr r0, =s_wfi
    bl puts

    @ Thumb: emulated stores are stepped by their length (16-bit T1 and
    @ 32-bit T3 encodings), and a WFI inside an IT block whose condition
    @ fails does not stop the guest, and the block goes on (the ADDNE after
    @ it runs). A CPU may trap such a WFI or not (QEMU does not); chroma
    @ then skips it and moves the IT state on.
    adr r0, thumb_part + 1
    bx r0
    .thumb
thumb_part:
    movs r1, #'T'
    str r1, [r6]               @ 16-bit STR (T1)
    movs r1, #'2'
    str.w r1, [r6, #0]         @ 32-bit STR (T3)
    movs r2, #0
    movs r0, #1                @ Z clear
    ite eq
    wfieq                      @ condition fails: skipped
    addne r2, r2, #1           @ runs: the IT block goes on
    movs r1, #'\n'
    str r1, [r6]
    adr r0, arm_again
    bx r0
    .arm
    .align 2
arm_again:
    cmp r2, #1
    ldreq r0, =s_thumb
    ldrne r0, =f_thumb
    bl puts

    @ Trapped coprocessor registers read as zero: PMCR (MRC), ACTLR (MRC),
    @ DBGDRAR (MRRC, both registers; QEMU has no 64-bit PMCCNTR view).
    mvn r3, #0
    mrc p15, 0, r3, c9, c12, 0
    mvn r4, #0
    mrc p15, 0, r4, c1, c0, 1
    mvn r5, #0
    mvn r7, #0
    mrrc p14, 0, r5, r7, c1     @ DBGDRAR, 64-bit (debug: trapped by MDCR_EL2.TDRA)
    orr r3, r3, r4
    orr r3, r3, r5
    orrs r3, r3, r7
    ldreq r0, =s_raz
    ldrne r0, =f_raz
    bl puts
    @ Data cache clean and invalidate by set/way (level 1, set 0, way 0).
    mov r1, #0
    mcr p15, 0, r1, c7, c14, 2
    ldr r0, =s_setway
    bl puts

    @ PSCI over HVC: VERSION 1.1; SMC64 CPU_ON unknown to AArch32.
    ldr r0, =PSCI_VERSION
    hvc #0
    ldr r1, =0x10001
    cmp r0, r1
    ldreq r0, =s_psci
    ldrne r0, =f_psci
    bl puts
    ldr r0, =PSCI_FEATURES
    ldr r1, =CPU_ON_64
    hvc #0
    cmn r0, #1
    ldreq r0, =s_smc64
    ldrne r0, =f_smc64
    bl puts

    @ The exceptions chroma injects.
    .ifdef UNDEF
undef_insn:
abort_insn:
    mrc p15, 0, r1, c15, c0, 0 @ IMPLEMENTATION DEFINED: UNDEFINED
    .else
    mov r0, #0
undef_insn:
abort_insn:
    ldr r1, [r0]               @ IPA 0: outside RAM and devices
    .endif
    ldr r0, =f_returned
    bl puts
    b off

puts:                          @ r0 = NUL-terminated string; clobbers r0, r1
1:  ldrb r1, [r0], #1
    cmp r1, #0
    bxeq lr
    str r1, [r6]
    b 1b

off:
    ldr r0, =s_done
    bl puts
    ldr r0, =SYSTEM_OFF
    hvc #0
    b .

    .align 5
vectors:
    b unexpected               @ reset
    b undefined                @ undefined instruction
    b unexpected               @ SVC
    b unexpected               @ prefetch abort
    b data_abort               @ data abort
    b unexpected
    b unexpected               @ IRQ
    b unexpected               @ FIQ

unexpected:
    mov r11, lr
    ldr r0, =f_unexpected
    bl puts
    mov r0, r11
    bl puthex
    b off

puthex:                        @ r0 = value, then a newline; clobbers r0-r3
    mov r2, #28
1:  lsr r1, r0, r2
    and r1, r1, #0xf
    cmp r1, #10
    addlo r1, r1, #'0'
    addhs r1, r1, #('a' - 10)
    str r1, [r6]
    subs r2, r2, #4
    bpl 1b
    mov r1, #'\n'
    str r1, [r6]
    bx lr

data_abort:
    @ Abort mode, LR_abt = the faulting instruction + 8, DFSR = synchronous
    @ external abort (short-descriptor FS 0b01000: TTBCR.EAE is 0), DFAR = 0.
    mov r11, lr
    mrs r3, cpsr
    and r3, r3, #0x1f
    cmp r3, #0x17
    ldreq r0, =s_abort_mode
    ldrne r0, =f_abort_mode
    bl puts
    ldr r2, =abort_insn + 8
    cmp r11, r2
    ldreq r0, =s_abort_lr
    ldrne r0, =f_abort_lr
    bl puts
    mrc p15, 0, r1, c5, c0, 0  @ DFSR
    mrc p15, 0, r2, c6, c0, 0  @ DFAR
    cmp r1, #0x8
    cmpeq r2, #0
    ldreq r0, =s_abort_fsr
    ldrne r0, =f_abort_fsr
    bl puts
    b off

undefined:
    @ Undefined mode, LR_und = the instruction + 4 (ARM state).
    mov r11, lr
    ldr r2, =undef_insn + 4
    cmp r11, r2
    bne unexpected
    mrs r3, cpsr
    and r3, r3, #0x1f
    cmp r3, #0x1b
    ldreq r0, =s_undef_mode
    ldrne r0, =f_undef_mode
    bl puts
    ldr r2, =undef_insn + 4
    cmp r11, r2
    ldreq r0, =s_undef_lr
    ldrne r0, =f_undef_lr
    bl puts
    b off

s_hello: .asciz "a32: hello\n"
s_mode: .asciz "a32: svc mode ok\n"
f_mode: .asciz "a32: FAIL svc mode\n"
s_args: .asciz "a32: boot registers ok\n"
f_args: .asciz "a32: FAIL boot registers\n"
s_dtb: .asciz "a32: dtb ok\n"
f_dtb: .asciz "a32: FAIL dtb\n"
s_load: .asciz "a32: emulated load ok\n"
f_load: .asciz "a32: FAIL emulated load\n"
s_wfi: .asciz "a32: conditional wfi ok\n"
s_thumb: .asciz "a32: thumb ok\n"
f_thumb: .asciz "a32: FAIL thumb\n"
s_raz: .asciz "a32: trapped registers ok\n"
f_raz: .asciz "a32: FAIL trapped registers\n"
s_setway: .asciz "a32: set/way ok\n"
s_psci: .asciz "a32: psci version ok\n"
f_psci: .asciz "a32: FAIL psci version\n"
s_smc64: .asciz "a32: smc64 refused ok\n"
f_smc64: .asciz "a32: FAIL smc64 refused\n"
f_unexpected: .asciz "a32: FAIL unexpected exception, lr "
f_returned: .asciz "a32: FAIL no exception\n"
s_abort_mode: .asciz "a32: abort mode ok\n"
f_abort_mode: .asciz "a32: FAIL abort mode\n"
s_abort_lr: .asciz "a32: abort lr ok\n"
f_abort_lr: .asciz "a32: FAIL abort lr\n"
s_abort_fsr: .asciz "a32: abort fsr ok\n"
f_abort_fsr: .asciz "a32: FAIL abort fsr\n"
s_undef_mode: .asciz "a32: undefined mode ok\n"
f_undef_mode: .asciz "a32: FAIL undefined mode\n"
s_undef_lr: .asciz "a32: undefined lr ok\n"
f_undef_lr: .asciz "a32: FAIL undefined lr\n"
s_done: .asciz "a32: done\n"
    .ltorg
    .align 4
_end:
