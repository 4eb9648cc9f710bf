//! Attacks from EL0, in AArch64, AArch32 (A32) and Thumb (T16, T32): trapped
//! WFI and emulated MMIO must advance the PC by the trapped instruction's
//! length (ESR_EL2.IL), aborts the hypervisor injects must arrive at the
//! vector for a lower EL using AArch32 (VBAR_EL1 + 0x600), and faults taken
//! by the guest's own userspace must not count towards stopping the VM.
//!
//! Each run enters EL0 with `eret` at a small piece of code below, which
//! ends with SVC #0 (an UDF follows, so a PC advanced too far is seen); the
//! first exception from EL0 ends the run, recorded, back at EL1.

use core::arch::global_asm;

use chroma_guest_rt::exceptions::{Fault, Resolution, TrapFrame};
use chroma_guest_rt::shared::Shared;
use chroma_guest_rt::{timer, Boot};

use crate::catch::{class, FSC_EXTERNAL_ABORT};
use crate::{expect, fail, ok, ok_with, Case, Needs, Outcome};

/// The catalogue's EL0, AArch32 and Thumb cases.
pub static CASES: &[Case] = &[
    case("el0-a32-wfi", Needs::Aarch32El0, a32_wfi),
    case("el0-t16-wfi", Needs::Aarch32El0, t16_wfi),
    case("el0-t32-wfi", Needs::Aarch32El0, t32_wfi),
    case("el0-a64-wfi", Needs::Any, a64_wfi),
    case("el0-a32-mmio-load", Needs::Aarch32El0, a32_mmio_load),
    case("el0-t16-mmio-load", Needs::Aarch32El0, t16_mmio_load),
    case("el0-t32-mmio-load", Needs::Aarch32El0, t32_mmio_load),
    case(
        "el0-t16-mmio-store-load",
        Needs::Aarch32El0,
        t16_mmio_store_load,
    ),
    case(
        "el0-a32-data-abort-vector",
        Needs::Aarch32El0,
        a32_data_abort_vector,
    ),
    case(
        "el0-t16-data-abort-vector",
        Needs::Aarch32El0,
        t16_data_abort_vector,
    ),
    case(
        "el0-a32-prefetch-abort-vector",
        Needs::Aarch32El0,
        a32_prefetch_abort_vector,
    ),
    case(
        "el0-faults-do-not-stop-the-vm",
        Needs::Any,
        faults_do_not_stop_the_vm,
    ),
];

const fn case(name: &'static str, needs: Needs, run: fn(&Boot) -> Outcome) -> Case {
    Case { name, needs, run }
}

global_asm!(
    r#"
    .section .text.hostile_el0, "ax"
    // hostile_el0_enter(entry, spsr, x0, x1): saves the callee-saved
    // registers on this (SP_EL1) stack and enters EL0 at `entry`.
    .balign 4
    .global hostile_el0_enter
hostile_el0_enter:
    stp     x19, x20, [sp, #-96]!
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    msr     elr_el1, x0
    msr     spsr_el1, x1
    mov     x0, x2
    mov     x1, x3
    mov     x2, #0
    isb
    eret
    // Where the handler resumes at EL1, SP back as it was at the eret.
    .balign 4
    .global hostile_el0_return
hostile_el0_return:
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    ldp     x19, x20, [sp], #96
    ret

    // A32: WFI; SVC #0; UDF.
    .balign 4
    .global hostile_a32_wfi
hostile_a32_wfi:
    .word   0xe320f003
    .word   0xef000000
    .word   0xe7f000f0
    // A32: LDR r0, [r1]; SVC #0; UDF.
    .balign 4
    .global hostile_a32_load
hostile_a32_load:
    .word   0xe5910000
    .word   0xef000000
    .word   0xe7f000f0
    // T16: WFI; SVC #0; UDF; UDF.
    .balign 4
    .global hostile_t16_wfi
hostile_t16_wfi:
    .hword  0xbf30
    .hword  0xdf00
    .hword  0xde00
    .hword  0xde00
    // T32: WFI.W; SVC #0 (T16); UDF; UDF.
    .balign 4
    .global hostile_t32_wfi
hostile_t32_wfi:
    .hword  0xf3af, 0x8003
    .hword  0xdf00
    .hword  0xde00
    .hword  0xde00
    .hword  0xde00
    // T16: LDR r0, [r1]; SVC #0; UDF; UDF.
    .balign 4
    .global hostile_t16_load
hostile_t16_load:
    .hword  0x6808
    .hword  0xdf00
    .hword  0xde00
    .hword  0xde00
    // T32: LDR.W r0, [r1]; SVC #0; UDF; UDF.
    .balign 4
    .global hostile_t32_load
hostile_t32_load:
    .hword  0xf8d1, 0x0000
    .hword  0xdf00
    .hword  0xde00
    .hword  0xde00
    .hword  0xde00
    // T16: STR r0, [r1]; LDR r2, [r1]; SVC #0; UDF.
    .balign 4
    .global hostile_t16_store_load
hostile_t16_store_load:
    .hword  0x6008
    .hword  0x680a
    .hword  0xdf00
    .hword  0xde00
    // A64: WFI; SVC #0; UDF.
    .balign 4
    .global hostile_a64_wfi
hostile_a64_wfi:
    wfi
    svc     #0
    udf     #0
    // A64: LDR x0, [x1]; SVC #0; UDF.
    .balign 4
    .global hostile_a64_load
hostile_a64_load:
    ldr     x0, [x1]
    svc     #0
    udf     #0
    "#
);

extern "C" {
    fn hostile_el0_enter(entry: u64, spsr: u64, x0: u64, x1: u64);
    fn hostile_el0_return();
    fn hostile_a32_wfi();
    fn hostile_a32_load();
    fn hostile_t16_wfi();
    fn hostile_t32_wfi();
    fn hostile_t16_load();
    fn hostile_t32_load();
    fn hostile_t16_store_load();
    fn hostile_a64_wfi();
    fn hostile_a64_load();
}

/// SPSR values: EL0 with D, A, I and F masked, in AArch64 (EL0t), AArch32
/// User mode, and AArch32 User mode in Thumb state.
const SPSR_A64: u64 = 0x3c0;
const SPSR_A32: u64 = 0x1d0;
const SPSR_T32: u64 = 0x1f0;
/// An IPA outside the guest's map.
const UNMAPPED: u64 = 0x0d00_0000;
/// PL011 offsets: flags and interrupt mask.
const UARTFR: u64 = 0x18;
const UARTIMSC: u64 = 0x38;
/// What the run starts x0 (r0) with, to tell a load that did not happen.
const NOT_LOADED: u64 = 0x5a5a_5a5a;

/// Set while EL0 runs.
static ACTIVE: Shared<bool> = Shared::new(false);
static ESR: Shared<u64> = Shared::new(0);
static ELR: Shared<u64> = Shared::new(0);
static FAR: Shared<u64> = Shared::new(0);
static VECTOR: Shared<u64> = Shared::new(0);
static X0: Shared<u64> = Shared::new(0);
static X2: Shared<u64> = Shared::new(0);

/// How an EL0 run ended.
#[derive(Clone, Copy)]
pub struct Exit {
    /// ESR_EL1.
    pub esr: u64,
    /// ELR_EL1.
    pub elr: u64,
    /// FAR_EL1.
    pub far: u64,
    /// The vector index (8..=11 AArch64, 12..=15 AArch32).
    pub vector: u64,
    /// x0 (r0) and x2 (r2) at the exception.
    pub x0: u64,
    /// x2 (r2).
    pub x2: u64,
}

impl Exit {
    fn class(&self) -> u64 {
        (self.esr >> 26) & 0x3f
    }
}

/// Called by `catch` for every exception from a lower EL.
pub fn exception(frame: &mut TrapFrame, fault: &Fault, vector: u64) -> Resolution {
    if !ACTIVE.get() {
        return Resolution::Unhandled;
    }
    ESR.set(fault.esr);
    ELR.set(fault.elr);
    FAR.set(fault.far);
    VECTOR.set(vector);
    X0.set(frame.x[0]);
    X2.set(frame.x[2]);
    ACTIVE.set(false);
    // Back to EL1h with every exception masked, at `hostile_el0_return`.
    frame.spsr = 0x3c5;
    Resolution::ResumeAt(hostile_el0_return as *const () as usize as u64)
}

/// Runs EL0 code at `entry` in the state `spsr` says, with x0/x1 set.
fn run(entry: u64, spsr: u64, x0: u64, x1: u64) -> Exit {
    // SCTLR_EL1.nTWI (16) and nTWE (18): EL0's WFI and WFE are not trapped
    // to EL1, so they reach the hypervisor's traps.
    let sctlr = crate::mrs!("S3_0_C1_C0_0");
    crate::msr!("S3_0_C1_C0_0", sctlr | (1 << 16) | (1 << 18));
    ACTIVE.set(true);
    // SAFETY: `hostile_el0_enter` saves the callee-saved registers and erets to EL0 code in this image; the first exception from EL0 comes back through `exception`, which resumes at `hostile_el0_return` with the stack as it was, restoring them and returning here.
    unsafe { hostile_el0_enter(entry, spsr, x0, x1) };
    Exit {
        esr: ESR.get(),
        elr: ELR.get(),
        far: FAR.get(),
        vector: VECTOR.get(),
        x0: X0.get(),
        x2: X2.get(),
    }
}

/// The address of one of the code pieces above (declared as functions only
/// to name them: they are entered with `eret`, never called).
fn code(symbol: unsafe extern "C" fn()) -> u64 {
    symbol as *const () as u64
}

fn pl011(boot: &Boot) -> u64 {
    boot.platform
        .uart_base
        .map_or(0x0900_0000, |base| base as u64)
}

/// Checks a run ended in its SVC, right after it.
fn ended_in_svc(
    exit: &Exit,
    svc_class: u64,
    vector: u64,
    return_address: u64,
) -> Result<(), crate::Failure> {
    expect(
        "exception class at the end (SVC expected; 0 = UDF: the PC went too far)",
        exit.class(),
        svc_class,
    )?;
    expect("vector index", exit.vector, vector)?;
    expect("ELR_EL1 after the SVC", exit.elr, return_address)
}

/// Runs a WFI case: the virtual timer enabled at the GIC and due in 20 ms
/// (IRQs masked at EL0, so it only wakes the WFI), then taken and ended.
fn wfi_case(
    boot: &Boot,
    entry: u64,
    spsr: u64,
    svc_offset: u64,
    svc_length: u64,
    svc_class: u64,
    vector: u64,
) -> Outcome {
    let gic = crate::gic::Attack::new(boot)?;
    gic.quiesce();
    gic.enable(timer::VIRTUAL_TIMER_INTID, 0xa0);
    timer::arm_ms(20);
    let exit = run(entry, spsr, 0, 0);
    let mut seen = [0u32; 33];
    gic.drain(&mut seen, 1, 500);
    gic.quiesce();
    ended_in_svc(&exit, svc_class, vector, entry + svc_offset + svc_length)?;
    ok()
}

/// A32 WFI (4 bytes) trapped to the hypervisor: resumes at the SVC after it.
fn a32_wfi(boot: &Boot) -> Outcome {
    wfi_case(
        boot,
        code(hostile_a32_wfi),
        SPSR_A32,
        4,
        4,
        class::SVC32,
        12,
    )
}

/// T16 WFI (2 bytes, ESR.IL = 0): the PC must advance by 2, not 4.
fn t16_wfi(boot: &Boot) -> Outcome {
    wfi_case(
        boot,
        code(hostile_t16_wfi),
        SPSR_T32,
        2,
        2,
        class::SVC32,
        12,
    )
}

/// T32 WFI.W (4 bytes in Thumb state).
fn t32_wfi(boot: &Boot) -> Outcome {
    wfi_case(
        boot,
        code(hostile_t32_wfi),
        SPSR_T32,
        4,
        2,
        class::SVC32,
        12,
    )
}

/// A64 WFI at EL0.
fn a64_wfi(boot: &Boot) -> Outcome {
    wfi_case(boot, code(hostile_a64_wfi), SPSR_A64, 4, 4, class::SVC64, 8)
}

fn load_case(boot: &Boot, entry: u64, spsr: u64, load_length: u64, svc_length: u64) -> Outcome {
    let exit = run(entry, spsr, NOT_LOADED, pl011(boot) + UARTFR);
    ended_in_svc(&exit, class::SVC32, 12, entry + load_length + svc_length)?;
    if exit.x0 == NOT_LOADED || exit.x0 > 0x1ff {
        return fail("r0 after loading UARTFR (9 bits)", exit.x0, 0x90);
    }
    ok_with("uartfr", exit.x0)
}

/// A32 LDR from the emulated PL011: r0 gets UARTFR, the PC advances by 4.
fn a32_mmio_load(boot: &Boot) -> Outcome {
    load_case(boot, code(hostile_a32_load), SPSR_A32, 4, 4)
}

/// T16 LDR (2 bytes) from the emulated PL011: the PC advances by 2.
fn t16_mmio_load(boot: &Boot) -> Outcome {
    load_case(boot, code(hostile_t16_load), SPSR_T32, 2, 2)
}

/// T32 LDR.W (4 bytes in Thumb state) from the emulated PL011.
fn t32_mmio_load(boot: &Boot) -> Outcome {
    load_case(boot, code(hostile_t32_load), SPSR_T32, 4, 2)
}

/// T16 STR then LDR of UARTIMSC: the value written is read back into r2,
/// both emulated, each stepping 2 bytes.
fn t16_mmio_store_load(boot: &Boot) -> Outcome {
    let imsc = pl011(boot) + UARTIMSC;
    let before = crate::mmio::read32(imsc);
    let entry = code(hostile_t16_store_load);
    let exit = run(entry, SPSR_T32, 0x50, imsc);
    crate::mmio::write32(imsc, before);
    ended_in_svc(&exit, class::SVC32, 12, entry + 6)?;
    expect("UARTIMSC read back at EL0", exit.x2 & 0x7ff, 0x50)?;
    ok()
}

fn abort_case(entry: u64, spsr: u64, x1: u64, abort_class: u64, vector: u64) -> Outcome {
    let exit = run(entry, spsr, NOT_LOADED, x1);
    expect("exception class", exit.class(), abort_class)?;
    expect(
        "fault status (synchronous external abort)",
        exit.esr & 0x3f,
        FSC_EXTERNAL_ABORT,
    )?;
    expect(
        "vector index (12: lower EL using AArch32)",
        exit.vector,
        vector,
    )?;
    expect("ELR_EL1 (the faulting instruction)", exit.elr, entry)?;
    expect("FAR_EL1", exit.far & 0xffff_ffff, UNMAPPED)?;
    ok()
}

/// A32 load outside the guest's map: the injected abort arrives at
/// VBAR_EL1 + 0x600 as a data abort from a lower EL.
fn a32_data_abort_vector(_: &Boot) -> Outcome {
    abort_case(
        code(hostile_a32_load),
        SPSR_A32,
        UNMAPPED,
        class::DATA_ABORT_LOWER,
        12,
    )
}

/// The same from Thumb state.
fn t16_data_abort_vector(_: &Boot) -> Outcome {
    abort_case(
        code(hostile_t16_load),
        SPSR_T32,
        UNMAPPED,
        class::DATA_ABORT_LOWER,
        12,
    )
}

/// A32 execution outside the guest's map: a prefetch abort at 0x600.
fn a32_prefetch_abort_vector(_: &Boot) -> Outcome {
    abort_case(UNMAPPED, SPSR_A32, 0, class::INSTRUCTION_ABORT_LOWER, 12)
}

/// Faults taken at EL0, more than the hypervisor's limit for a VM that
/// keeps faulting (1000): each is delivered, and the VM is not stopped.
fn faults_do_not_stop_the_vm(_: &Boot) -> Outcome {
    let entry = code(hostile_a64_load);
    for round in 0..1200u64 {
        let exit = run(entry, SPSR_A64, 0, UNMAPPED);
        if exit.class() != class::DATA_ABORT_LOWER || exit.vector != 8 {
            return fail(
                "EL0 fault (ESR; round in the upper half)",
                exit.esr | (round << 32),
                0x9200_0010,
            );
        }
    }
    ok_with("faults", 1200)
}
