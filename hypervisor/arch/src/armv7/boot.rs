//! The entry points: the zImage header, the HYP-mode check, the boot stack,
//! .bss, HVBAR, and the call into Rust (r2 = the device tree, as the Linux
//! ARM boot protocol passes it); and the secondary CPUs' entry after PSCI
//! CPU_ON (r0 = the context id = the CPU index), which loads the boot CPU's
//! final HYP map from [`CHROMA_HYP_MMU`] before it runs Rust.

use core::arch::global_asm;

/// Most physical CPUs the hypervisor brings up (secondaries come later).
pub const MAX_CPUS: usize = 8;
/// Bytes of HYP stack per physical CPU (as on AArch64: building a VM uses
/// deep frames, and a frame larger than the guard page could jump over it).
pub const STACK_SIZE: usize = 256 * 1024;

/// The HYP stacks, one per CPU, in `.stacks`: inside the image (its
/// size reserves them) but after `.bss`, so the entry code does not zero
/// them (a stack needs no initial value; zeroing 2 MiB was most of the
/// instructions the hypervisor ran before its first guest, see
/// `linker/common.ld`).
#[repr(C, align(4096))]
pub struct Stacks(pub [[u8; STACK_SIZE]; MAX_CPUS]);

/// The boot stacks. Only the entry code below touches them by symbol.
#[no_mangle]
#[link_section = ".stacks"]
pub static mut CHROMA_STACKS: Stacks = Stacks([[0; STACK_SIZE]; MAX_CPUS]);

/// The HYP translation regime a secondary CPU loads before it runs Rust
/// (the entry code reads it by symbol, with its MMU and caches off).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HypMmuConfig {
    /// HMAIR0.
    pub hmair0: u32,
    /// HMAIR1.
    pub hmair1: u32,
    /// HTCR.
    pub htcr: u32,
    /// HTTBR, low word.
    pub httbr_low: u32,
    /// HTTBR, high word.
    pub httbr_high: u32,
    /// HSCTLR (MMU, caches and WXN on).
    pub hsctlr: u32,
}

/// The regime the secondaries load. Written once by the boot CPU before
/// any secondary starts (PSCI CPU_ON orders it), then only read.
#[no_mangle]
pub static mut CHROMA_HYP_MMU: HypMmuConfig = HypMmuConfig {
    hmair0: 0,
    hmair1: 0,
    htcr: 0,
    httbr_low: 0,
    httbr_high: 0,
    hsctlr: 0,
};

/// Publishes the regime the secondaries load, written back to memory (they
/// read it with their caches off).
///
/// # Safety
/// Called by the boot CPU before it starts any secondary, and not while a
/// secondary may be reading it; `config` must describe tables that map the
/// image, its stacks and data at their own addresses.
pub unsafe fn publish_mmu_config(config: HypMmuConfig) {
    let slot = core::ptr::addr_of_mut!(CHROMA_HYP_MMU);
    // SAFETY: the caller guarantees no secondary runs yet, so this is the only access; the static is word-aligned and mapped read/write.
    unsafe { slot.write_volatile(config) };
    super::sysreg::clean_invalidate_dcache(slot as usize, core::mem::size_of::<HypMmuConfig>());
}

/// The address a secondary CPU starts at (PSCI CPU_ON's entry point).
pub fn secondary_entry_address() -> usize {
    extern "C" {
        fn chroma_secondary_entry();
    }
    chroma_secondary_entry as *const () as usize
}

// The image is linked to run where QEMU (and a boot loader honouring the
// header's start word) puts it: it is not position-independent.
//
// Contract with the binary crate, which defines the two Rust entries:
// - `chroma_primary_main(dtb: usize) -> !`, in HYP mode, MMU off, on the
//   boot CPU's stack, .bss zeroed, HVBAR set, IRQ/FIQ/aborts masked;
// - `chroma_wrong_mode(mode: u32) -> !`, in whatever mode the loader used
//   (not HYP), MMU off, same stack and .bss: it reports and stops;
// - `chroma_secondary_main(cpu: usize) -> !`, on a secondary CPU in HYP
//   mode with its own stack, HVBAR set and the final HYP map on.
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

    // A secondary CPU after PSCI CPU_ON: r0 = the CPU index (context id),
    // HYP mode (PSCI starts it in the caller's mode), MMU and caches off.
    .global chroma_secondary_entry
chroma_secondary_entry:
    cpsid   aif
    mov     r11, r0
    ldr     r1, =CHROMA_STACKS
    add     r2, r0, #1
    mov     r3, #{stack_size}
    mla     sp, r2, r3, r1          // the top of stack `index`
    ldr     r1, =chroma_hyp_vectors
    mcr     p15, 4, r1, c12, c0, 0  // HVBAR
    ldr     r4, =CHROMA_HYP_MMU
    ldm     r4, {{r5-r10}}
    mcr     p15, 4, r5, c10, c2, 0  // HMAIR0
    mcr     p15, 4, r6, c10, c2, 1  // HMAIR1
    mcr     p15, 4, r7, c2, c0, 2   // HTCR
    mcrr    p15, 4, r8, r9, c2      // HTTBR
    isb
    mcr     p15, 4, r0, c8, c7, 0   // TLBIALLH (the register's value is ignored)
    dsb
    isb
    mcr     p15, 4, r10, c1, c0, 0  // HSCTLR: MMU, caches, WXN on
    isb
    mov     r0, r11
    bl      chroma_secondary_main
5:  wfi
    b       5b
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
