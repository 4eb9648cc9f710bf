//! The HYP vector table (HVBAR) and the report of an exception the
//! hypervisor did not expect. In this slice every HYP exception is
//! unexpected: no guest runs yet, so nothing traps on purpose.

use super::hsr::Hsr;
use super::sysreg;
use core::arch::global_asm;

/// The registers an exception entry saves, in the order it pushes them.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HypFrame {
    /// r0 to r12.
    pub r: [u32; 13],
    /// lr (HYP mode uses the User/System lr).
    pub lr: u32,
    /// ELR_hyp: where the exception was taken.
    pub elr_hyp: u32,
    /// SPSR_hyp: the CPSR when it was taken.
    pub spsr_hyp: u32,
}

/// The vector an exception came through (the `kind` the entry passes).
const KIND_NAMES: [&str; 8] = [
    "reset",
    "undefined instruction",
    "HVC/SVC in HYP mode",
    "prefetch abort",
    "data abort",
    "HYP trap",
    "IRQ",
    "FIQ",
];

// Each entry saves r0-r12, lr, ELR_hyp and SPSR_hyp on the HYP stack as a
// `HypFrame` and calls `chroma_hyp_exception(frame, kind)`, which does not
// return (the binary crate defines it).
global_asm!(
    r#"
    .arch_extension virt
    .macro HYP_ENTRY name, kind
    .arm
\name:
    sub     sp, sp, #8
    push    {{r0-r12, lr}}
    mrs     r0, ELR_hyp
    mrs     r1, SPSR
    add     r2, sp, #56
    stm     r2, {{r0, r1}}
    mov     r0, sp
    mov     r1, #\kind
    bl      chroma_hyp_exception
1:  wfi
    b       1b
    .endm

    .text
    .arm
    .balign 32
    .global chroma_hyp_vectors
chroma_hyp_vectors:
    b       chroma_hyp_reset
    b       chroma_hyp_undefined
    b       chroma_hyp_call
    b       chroma_hyp_prefetch_abort
    b       chroma_hyp_data_abort
    b       chroma_hyp_trap
    b       chroma_hyp_irq
    b       chroma_hyp_fiq

    HYP_ENTRY chroma_hyp_reset, 0
    HYP_ENTRY chroma_hyp_undefined, 1
    HYP_ENTRY chroma_hyp_call, 2
    HYP_ENTRY chroma_hyp_prefetch_abort, 3
    HYP_ENTRY chroma_hyp_data_abort, 4
    HYP_ENTRY chroma_hyp_trap, 5
    HYP_ENTRY chroma_hyp_irq, 6
    HYP_ENTRY chroma_hyp_fiq, 7
"#
);

/// Reports an exception taken in HYP mode: the vector, HSR decoded (class,
/// instruction length, ISS, fault status), HDFAR/HIFAR/HPFAR, the saved
/// registers and the banked SPSRs. The first line starts with
/// `chroma: EL2 EXCEPTION` (HYP mode is EL2), which the test harness and
/// `xtask run` read as the hypervisor failing.
pub fn report_hyp_exception(
    frame: &HypFrame,
    kind: u32,
    mut emit: impl FnMut(core::fmt::Arguments),
) {
    let hsr = Hsr(sysreg::hsr());
    let class = hsr.class();
    let kind_name = usize::try_from(kind)
        .ok()
        .and_then(|index| KIND_NAMES.get(index))
        .copied()
        .unwrap_or("unknown vector");
    // IRQ and FIQ do not write HSR: what it holds is stale.
    let hsr_note = if kind >= 6 {
        " (stale: IRQ/FIQ do not set HSR)"
    } else {
        ""
    };
    emit(format_args!(
        "chroma: EL2 EXCEPTION (HYP mode, {kind_name}) on CPU {:#x}: HSR {:#010x}{hsr_note}: EC {:#04x} {}, IL {}, ISS {:#x}",
        sysreg::mpidr() & 0x00ff_ffff,
        hsr.0,
        hsr.ec(),
        class.name(),
        // IL names the trapped instruction's length (1: 32-bit) only for
        // traps and aborts with a valid syndrome; printed as the hardware set it.
        u8::from(hsr.is_32bit_instruction()),
        hsr.iss(),
    ));
    if let Some(fault) = hsr.fault() {
        let access = match hsr.is_write() {
            Some(true) => "; on a write",
            Some(false) => "; on a read",
            None => "",
        };
        emit(format_args!("  {fault}{access}"));
    }
    let hpfar = sysreg::hpfar();
    emit(format_args!(
        "  HDFAR {:#010x}  HIFAR {:#010x}  HPFAR {:#010x} (IPA page {:#x})",
        sysreg::hdfar(),
        sysreg::hifar(),
        hpfar,
        u64::from(hpfar >> 4) << 12
    ));
    emit(format_args!(
        "  ELR_hyp {:#010x}  SPSR_hyp {:#010x}  lr {:#010x}  sp {:#010x}",
        frame.elr_hyp,
        frame.spsr_hyp,
        frame.lr,
        // The entry pushed 64 bytes below the interrupted stack pointer.
        (frame as *const HypFrame as usize).wrapping_add(core::mem::size_of::<HypFrame>()),
    ));
    for (row, values) in frame.r.chunks(4).enumerate() {
        let value = |i: usize| values.get(i).copied().unwrap_or(0);
        let first = row * 4;
        match values.len() {
            4 => emit(format_args!(
                "  r{:<2} {:#010x}  r{:<2} {:#010x}  r{:<2} {:#010x}  r{:<2} {:#010x}",
                first,
                value(0),
                first + 1,
                value(1),
                first + 2,
                value(2),
                first + 3,
                value(3)
            )),
            _ => emit(format_args!("  r{:<2} {:#010x}", first, value(0))),
        }
    }
    let [svc, abt, und, irq, fiq] = sysreg::banked_spsrs();
    emit(format_args!(
        "  SPSR_svc {svc:#010x}  SPSR_abt {abt:#010x}  SPSR_und {und:#010x}  SPSR_irq {irq:#010x}  SPSR_fiq {fiq:#010x}"
    ));
}
