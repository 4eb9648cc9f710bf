//! Entry points: the arm64 Image header, the primary CPU's entry from the
//! boot loader (x0 = DTB), the secondary entry used with PSCI CPU_ON
//! (x0 = context id = CPU index), the EL2 MMU switch, and the guest
//! entry/exit trampoline.

use aarch64_cpu::registers::{CurrentEL, SCTLR_EL2};
use core::arch::global_asm;

/// Most physical CPUs the hypervisor brings up.
pub const MAX_CPUS: usize = 8;
/// Bytes of EL2 stack per physical CPU.
pub const STACK_SIZE: usize = 256 * 1024;

/// The EL2 stacks, one per CPU, in `.stacks`: inside the image (its
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

pub use super::el2::MmuConfig;

/// The configuration the secondaries load. Written once by the primary,
/// before any secondary is started (the PSCI call orders it).
#[no_mangle]
pub static mut CHROMA_MMU_CONFIG: MmuConfig = MmuConfig {
    mair: 0,
    tcr: 0,
    ttbr0: 0,
    sctlr: 0,
};

global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    // arm64 Image header (Documentation/arch/arm64/booting.rst).
    b       1f                      // code0: branch to the entry
    .long   0                       // code1
    .quad   0x80000                 // text_offset
    .quad   __image_size            // image_size: text + data + bss (+ manifest, patched by xtask)
    .quad   0x2                     // flags: little-endian, 4 KiB pages, near the base of DRAM
    .quad   0, 0, 0                 // res2..res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5
1:
    msr     daifset, #0xf
    mov     x19, x0                 // the DTB, kept for Rust
    mrs     x1, CurrentEL
    cmp     x1, #{current_el_el2}
    b.ne    chroma_not_el2
    mov     x0, #0
    bl      chroma_set_stack
    // Zero .bss (the stacks are in it: the stack pointer is not used yet).
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
2:  cmp     x1, x2
    b.hs    3f
    str     xzr, [x1], #8
    b       2b
3:  adrp    x1, chroma_el2_vectors
    add     x1, x1, :lo12:chroma_el2_vectors
    msr     vbar_el2, x1
    isb
    mov     x0, x19
    bl      chroma_primary_main
    b       chroma_park

    // Not at EL2: nothing chroma can do. Park.
chroma_not_el2:
    b       chroma_park

    .text
    // x0 = CPU index: sp = top of that CPU's stack.
chroma_set_stack:
    adrp    x1, CHROMA_STACKS
    add     x1, x1, :lo12:CHROMA_STACKS
    mov     x2, #{stack_size}
    madd    x1, x0, x2, x1
    add     sp, x1, x2
    ret

    // A CPU released from a spin table (no context id): its index is its
    // MPIDR Aff0, which the boot CPU checked against the device tree.
    .global chroma_spin_table_entry
chroma_spin_table_entry:
    mrs     x0, mpidr_el1
    and     x0, x0, #0xff
    // Fall through.
    .global chroma_secondary_entry
chroma_secondary_entry:
    msr     daifset, #0xf
    mov     x19, x0
    bl      chroma_set_stack
    adrp    x1, chroma_el2_vectors
    add     x1, x1, :lo12:chroma_el2_vectors
    msr     vbar_el2, x1
    adrp    x0, CHROMA_MMU_CONFIG
    add     x0, x0, :lo12:CHROMA_MMU_CONFIG
    bl      chroma_enable_mmu
    mov     x0, x19
    bl      chroma_secondary_main
    b       chroma_park

    .global chroma_park
chroma_park:
    msr     daifset, #0xf
4:  wfe
    b       4b

    // x0 = &MmuConfig. Turns the EL2 MMU on (or switches to new tables with
    // the MMU briefly off: no memory access happens while it is off).
    .global chroma_enable_mmu
chroma_enable_mmu:
    ldp     x1, x2, [x0]            // mair, tcr
    ldp     x3, x4, [x0, #16]       // ttbr0, sctlr
    dsb     ish
    mrs     x5, sctlr_el2
    bic     x5, x5, #{sctlr_m}       // M: MMU off
    msr     sctlr_el2, x5
    isb
    msr     mair_el2, x1
    msr     tcr_el2, x2
    msr     ttbr0_el2, x3
    isb
    tlbi    alle2
    dsb     ish
    isb
    msr     sctlr_el2, x4
    isb
    ic      iallu
    dsb     ish
    isb
    ret
"#,
    stack_size = const STACK_SIZE,
    current_el_el2 = const CurrentEL::EL::EL2.value,
    sctlr_m = const SCTLR_EL2::M::Enable.value,
);

extern "C" {
    fn chroma_enable_mmu(config: *const MmuConfig);
    fn chroma_secondary_entry();
    fn chroma_spin_table_entry();
}

/// Physical address of the entry for a CPU released from a spin table
/// (it takes its index from MPIDR Aff0).
pub fn spin_table_entry_address() -> u64 {
    chroma_spin_table_entry as *const () as u64
}

/// Physical address of the secondary entry point (for PSCI CPU_ON).
pub fn secondary_entry_address() -> u64 {
    chroma_secondary_entry as *const () as u64
}

/// Turns on (or switches) the EL2 stage-1 translation with `config`.
///
/// # Safety
/// `config.ttbr0` must be a complete EL2 table tree that maps the code,
/// stack and data in use identically (VA = PA) with the same permissions
/// the running code relies on.
pub unsafe fn enable_mmu(config: &MmuConfig) {
    // SAFETY: the caller guarantees the tables keep the running code and stack mapped at the same addresses; the routine touches no memory while the MMU is off.
    unsafe { chroma_enable_mmu(config) };
}

/// Cleans the published secondary MMU settings to the point of coherency,
/// for a CPU that reads them with its caches off and is not started by a
/// firmware call (a spin table).
pub fn clean_secondary_mmu_config() {
    super::cache::clean_to_poc(
        core::ptr::addr_of!(CHROMA_MMU_CONFIG) as usize,
        core::mem::size_of::<MmuConfig>(),
    );
}

/// Publishes the configuration the secondaries load at entry.
///
/// # Safety
/// Must be called before any secondary CPU is started, and not concurrently
/// with one starting.
pub unsafe fn set_secondary_mmu_config(config: MmuConfig) {
    // SAFETY: no secondary runs yet (caller's contract), so nothing reads the static concurrently; the PSCI call that starts them orders the write.
    unsafe { core::ptr::addr_of_mut!(CHROMA_MMU_CONFIG).write_volatile(config) };
}
