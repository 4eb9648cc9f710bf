//! Attacks on CPU state two VMs could share on one physical CPU: debug
//! breakpoints and watchpoints, MDSCR and the OS lock, the PMU, ACTLR,
//! IMPLEMENTATION DEFINED registers, cache maintenance by set/way, pointer
//! authentication keys, TLB and instruction-cache floods, EL2 registers.
//!
//! What the attacker may see is either a register that reads as zero and
//! ignores writes (the hypervisor traps and emulates it) or its own value
//! (the hypervisor switches it per vCPU); the bystander checks that none of
//! it reached its vCPU.

use chroma_guest_rt::Boot;

use crate::catch::{self, class};
use crate::sysreg::NOT_READ;
use crate::{expect, fail, ok, ok_with, spin_counting, Case, Needs, Outcome};

/// The catalogue's CPU-state cases.
pub static CASES: &[Case] = &[
    case("cpu-debug-breakpoints", Needs::Any, debug_breakpoints),
    case("cpu-debug-watchpoints", Needs::Any, debug_watchpoints),
    case("cpu-debug-mdscr-and-os-lock", Needs::Any, mdscr_and_os_lock),
    case("cpu-pmu-cycle-counter", Needs::Any, pmu_cycle_counter),
    case("cpu-pmu-event-counters", Needs::Any, pmu_event_counters),
    case(
        "cpu-pmu-overflow-interrupt",
        Needs::Any,
        pmu_overflow_interrupt,
    ),
    case("cpu-actlr", Needs::Any, actlr),
    case("cpu-impdef-cpuectlr", Needs::Any, impdef_cpuectlr),
    case("cpu-impdef-space", Needs::Any, impdef_space),
    case("cpu-set-way-invalidate", Needs::Any, set_way_invalidate),
    case("cpu-set-way-clean", Needs::Any, set_way_clean),
    case(
        "cpu-pointer-auth-keys",
        Needs::PointerAuth,
        pointer_auth_keys,
    ),
    case("cpu-thread-registers", Needs::Any, thread_registers),
    case("cpu-tlbi-flood", Needs::Any, tlbi_flood),
    case("cpu-icache-flood", Needs::Any, icache_flood),
    case(
        "cpu-el2-registers-undefined",
        Needs::Any,
        el2_registers_undefined,
    ),
    case("cpu-physical-timer", Needs::Any, physical_timer),
    case("cpu-virtual-timer-storm", Needs::Any, virtual_timer_storm),
    case("cpu-identity", Needs::Any, identity),
];

const fn case(name: &'static str, needs: Needs, run: fn(&Boot) -> Outcome) -> Case {
    Case { name, needs, run }
}

/// What the attacker writes to registers it should not be able to share.
const HOSTILE: u64 = 0x4057_11e0_4057_11e0;

#[inline(never)]
fn breakpoint_target() -> u64 {
    core::hint::black_box(0x42)
}

/// A word the watchpoint case stores to.
static mut WATCHED: u64 = 0;

/// Unmasks (PSTATE.D = 0) or masks debug exceptions at EL1.
fn debug_exceptions(unmasked: bool) {
    // SAFETY: only changes whether this vCPU takes debug exceptions; the handler in `catch` masks them again if one is taken.
    unsafe {
        if unmasked {
            core::arch::asm!("msr daifclr, #8", "isb", options(nostack));
        } else {
            core::arch::asm!("msr daifset, #8", "isb", options(nostack));
        }
    }
}

/// Decides a debug case: the registers either read as zero and nothing
/// fired (trapped and emulated), or read back as written and the event
/// fired here (switched per vCPU).
fn debug_verdict(readback: u64, written: u64, caught: u64, event: u64, last_class: u64) -> Outcome {
    if readback == 0 && caught == 0 {
        return ok_with("emulated_raz_wi", 1);
    }
    if readback == written && caught >= 1 && last_class == event {
        return ok_with("switched_fired_here", caught);
    }
    fail(
        "debug register read back (fired count in the upper half)",
        readback | (caught << 48),
        written,
    )
}

/// Hardware breakpoints on code both VMs run (the images are the same):
/// they must not fire in the bystander.
fn debug_breakpoints(_: &Boot) -> Outcome {
    let address = breakpoint_target as *const () as usize as u64;
    // DBGBCR: E, PMC = EL1 and EL0, BAS = all four bytes.
    let control = 1 | (0b11 << 1) | (0xf << 5);
    crate::msr!("S2_0_C0_C0_4", address); // DBGBVR0_EL1
    crate::msr!("S2_0_C0_C0_5", control); // DBGBCR0_EL1
    crate::msr!("S2_0_C0_C1_4", address); // DBGBVR1_EL1
    crate::msr!("S2_0_C0_C1_5", control); // DBGBCR1_EL1
                                          // MDSCR_EL1: MDE (15) and KDE (13), debug exceptions at EL1 unmasked.
    crate::msr!("S2_0_C0_C2_2", (1 << 15) | (1 << 13));
    let readback = crate::mrs!("S2_0_C0_C0_4");
    let ((), caught, last) = catch::catching(|| {
        debug_exceptions(true);
        for _ in 0..3 {
            breakpoint_target();
        }
        debug_exceptions(false);
    });
    crate::msr!("S2_0_C0_C0_5", 0);
    crate::msr!("S2_0_C0_C1_5", 0);
    crate::msr!("S2_0_C0_C2_2", 0);
    debug_verdict(
        readback,
        address,
        caught,
        class::BREAKPOINT_SAME,
        last.map_or(0, |l| l.class()),
    )
}

/// Hardware watchpoints on data both VMs have at the same address.
fn debug_watchpoints(_: &Boot) -> Outcome {
    let address = core::ptr::addr_of!(WATCHED) as u64 & !7;
    // DBGWCR: E, PAC = EL1 and EL0, LSC = load and store, BAS = 8 bytes.
    let control = 1 | (0b11 << 1) | (0b11 << 3) | (0xff << 5);
    crate::msr!("S2_0_C0_C0_6", address); // DBGWVR0_EL1
    crate::msr!("S2_0_C0_C0_7", control); // DBGWCR0_EL1
    crate::msr!("S2_0_C0_C2_2", (1 << 15) | (1 << 13));
    let readback = crate::mrs!("S2_0_C0_C0_6");
    let ((), caught, last) = catch::catching(|| {
        debug_exceptions(true);
        // SAFETY: a plain store to this module's own static; nothing else reads or writes it.
        unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(WATCHED), HOSTILE) };
        debug_exceptions(false);
    });
    crate::msr!("S2_0_C0_C0_7", 0);
    crate::msr!("S2_0_C0_C2_2", 0);
    debug_verdict(
        readback,
        address,
        caught,
        class::WATCHPOINT_SAME,
        last.map_or(0, |l| l.class()),
    )
}

/// MDSCR_EL1 with every enable, the OS lock and the OS double lock set:
/// the attacker reads what it wrote or zero; none of it reaches the
/// bystander (it checks its MDSCR_EL1 and OSLSR_EL1).
fn mdscr_and_os_lock(_: &Boot) -> Outcome {
    let ((), caught, _) = catch::catching(|| {
        crate::msr!("S2_0_C0_C2_2", (1 << 15) | (1 << 14) | (1 << 13) | 1); // MDE, HDE, KDE, SS
        crate::msr!("S2_0_C1_C0_4", 1); // OSLAR_EL1: lock
        crate::msr!("S2_0_C1_C3_4", 1); // OSDLR_EL1: double lock
    });
    let mdscr = crate::mrs!("S2_0_C0_C2_2");
    let oslsr = crate::mrs!("S2_0_C1_C1_4");
    crate::msr!("S2_0_C1_C3_4", 0);
    crate::msr!("S2_0_C1_C0_4", 0);
    crate::msr!("S2_0_C0_C2_2", 0);
    expect("exceptions from debug register writes", caught, 0)?;
    if mdscr == NOT_READ || oslsr == NOT_READ {
        return fail("MDSCR_EL1 or OSLSR_EL1 unreadable", mdscr, 0);
    }
    ok_with("mdscr", mdscr)
}

/// The cycle counter enabled, reset and filtered to count EL2 too
/// (PMCCFILTR_EL0.NSH): it reads as zero, or counts this vCPU only.
fn pmu_cycle_counter(_: &Boot) -> Outcome {
    crate::msr!("S3_3_C14_C15_7", 1 << 27); // PMCCFILTR_EL0: NSH, count at EL2
    crate::msr!("S3_3_C9_C12_1", 1 << 31); // PMCNTENSET_EL0: cycle counter
    crate::msr!("S3_3_C9_C12_0", 0b111); // PMCR_EL0: E, P, C
    let first = crate::mrs!("S3_3_C9_C13_0");
    spin_counting(5);
    let second = crate::mrs!("S3_3_C9_C13_0");
    crate::msr!("S3_3_C9_C12_0", 0);
    crate::msr!("S3_3_C9_C12_2", u64::MAX); // PMCNTENCLR_EL0
    crate::msr!("S3_3_C14_C15_7", 0);
    if first == NOT_READ || second == NOT_READ {
        return fail("PMCCNTR_EL0 unreadable", first, 0);
    }
    ok_with("counted", second.wrapping_sub(first))
}

/// Event counters written directly and through PMSELR/PMXEVCNTR, event
/// types that count EL2: zero or this vCPU's own.
fn pmu_event_counters(_: &Boot) -> Outcome {
    crate::msr!("S3_3_C14_C12_0", (1 << 27) | 0x11); // PMEVTYPER0_EL0: CPU_CYCLES, NSH
    crate::msr!("S3_3_C14_C8_0", HOSTILE & 0xffff_ffff); // PMEVCNTR0_EL0
    crate::msr!("S3_3_C9_C12_5", 1); // PMSELR_EL0 = 1
    crate::msr!("S3_3_C9_C13_1", (1 << 27) | 0x08); // PMXEVTYPER_EL0: INST_RETIRED
    crate::msr!("S3_3_C9_C13_2", 0x1234); // PMXEVCNTR_EL0
    crate::msr!("S3_3_C9_C12_1", 0b11); // PMCNTENSET_EL0
    crate::msr!("S3_3_C9_C12_0", 1); // PMCR_EL0.E
    let counter = crate::mrs!("S3_3_C14_C8_0");
    crate::msr!("S3_3_C9_C12_0", 0);
    crate::msr!("S3_3_C9_C12_2", u64::MAX);
    crate::msr!("S3_3_C14_C12_0", 0);
    crate::msr!("S3_3_C9_C12_5", 0);
    if counter == NOT_READ {
        return fail("PMEVCNTR0_EL0 unreadable", counter, 0);
    }
    ok_with("counter0", counter)
}

/// Every counter's overflow interrupt enabled and every overflow flag set:
/// no PMU interrupt reaches the bystander; one here is allowed only if the
/// PMU is this vCPU's own.
fn pmu_overflow_interrupt(boot: &Boot) -> Outcome {
    let gic = crate::gic::Attack::new(boot)?;
    gic.quiesce();
    gic.enable(23, 0xa0); // The PMU PPI on QEMU virt.
    crate::msr!("S3_0_C9_C14_1", u64::MAX); // PMINTENSET_EL1
    crate::msr!("S3_3_C9_C12_1", u64::MAX); // PMCNTENSET_EL0
    crate::msr!("S3_3_C9_C12_0", 1); // PMCR_EL0.E
    crate::msr!("S3_3_C9_C14_3", u64::MAX); // PMOVSSET_EL0
    let got = gic.wait_ack(50);
    crate::msr!("S3_0_C9_C14_2", u64::MAX); // PMINTENCLR_EL1
    crate::msr!("S3_3_C9_C12_3", u64::MAX); // PMOVSCLR_EL0
    crate::msr!("S3_3_C9_C12_0", 0);
    crate::msr!("S3_3_C9_C12_2", u64::MAX);
    if got < 1020 {
        gic.eoi(got);
    }
    gic.quiesce();
    if got < 1020 && got != 23 {
        return fail("an interrupt other than the PMU's", u64::from(got), 23);
    }
    ok_with("pmu_interrupt_here", u64::from(got == 23))
}

/// ACTLR_EL1 (IMPLEMENTATION DEFINED CPU controls): written, it must read
/// as zero (trapped, RAZ/WI) or as written (per vCPU).
fn actlr(_: &Boot) -> Outcome {
    let before = crate::mrs!("S3_0_C1_C0_1");
    crate::msr!("S3_0_C1_C0_1", before | 0x7);
    let after = crate::mrs!("S3_0_C1_C0_1");
    crate::msr!("S3_0_C1_C0_1", before);
    if before == NOT_READ || after == NOT_READ {
        return fail("ACTLR_EL1 unreadable", after, 0);
    }
    if after != 0 && after != before | 0x7 {
        return fail("ACTLR_EL1 read back", after, before | 0x7);
    }
    ok_with("actlr", after)
}

/// CPUECTLR_EL1 (Cortex-A57's IMPLEMENTATION DEFINED S3_1_C15_C2_1, which
/// controls coherency and power of the physical core): UNDEFINED.
fn impdef_cpuectlr(_: &Boot) -> Outcome {
    catch::expect_undefined("UNDEFINED accesses to CPUECTLR_EL1", 2, || {
        let _ = crate::mrs!("S3_1_C15_C2_1");
        crate::msr!("S3_1_C15_C2_1", 0x40);
    })
}

/// A spread of encodings in the IMPLEMENTATION DEFINED spaces (op0 = 3,
/// CRn = 11 and 15): every one UNDEFINED.
fn impdef_space(_: &Boot) -> Outcome {
    let ((), caught, last) = catch::catching(|| {
        // SAFETY: reads of IMPLEMENTATION DEFINED registers, each expected to UNDEF and be skipped by `catch`; x0 is declared clobbered.
        unsafe {
            core::arch::asm!(
                "mrs x0, S3_0_C15_C0_0",
                "mrs x0, S3_0_C11_C0_1",
                "mrs x0, S3_0_C15_C3_0",
                "mrs x0, S3_0_C11_C3_1",
                "mrs x0, S3_0_C15_C7_0",
                "mrs x0, S3_0_C11_C7_1",
                "mrs x0, S3_0_C15_C15_0",
                "mrs x0, S3_0_C11_C15_1",
                "mrs x0, S3_1_C15_C0_0",
                "mrs x0, S3_1_C11_C0_1",
                "mrs x0, S3_1_C15_C3_0",
                "mrs x0, S3_1_C11_C3_1",
                "mrs x0, S3_1_C15_C7_0",
                "mrs x0, S3_1_C11_C7_1",
                "mrs x0, S3_1_C15_C15_0",
                "mrs x0, S3_1_C11_C15_1",
                "mrs x0, S3_2_C15_C0_0",
                "mrs x0, S3_2_C11_C0_1",
                "mrs x0, S3_2_C15_C3_0",
                "mrs x0, S3_2_C11_C3_1",
                "mrs x0, S3_2_C15_C7_0",
                "mrs x0, S3_2_C11_C7_1",
                "mrs x0, S3_2_C15_C15_0",
                "mrs x0, S3_2_C11_C15_1",
                "mrs x0, S3_3_C15_C0_0",
                "mrs x0, S3_3_C11_C0_1",
                "mrs x0, S3_3_C15_C3_0",
                "mrs x0, S3_3_C11_C3_1",
                "mrs x0, S3_3_C15_C7_0",
                "mrs x0, S3_3_C11_C7_1",
                "mrs x0, S3_3_C15_C15_0",
                "mrs x0, S3_3_C11_C15_1",
                "mrs x0, S3_4_C15_C0_0",
                "mrs x0, S3_4_C11_C0_1",
                "mrs x0, S3_4_C15_C3_0",
                "mrs x0, S3_4_C11_C3_1",
                "mrs x0, S3_4_C15_C7_0",
                "mrs x0, S3_4_C11_C7_1",
                "mrs x0, S3_4_C15_C15_0",
                "mrs x0, S3_4_C11_C15_1",
                "mrs x0, S3_5_C15_C0_0",
                "mrs x0, S3_5_C11_C0_1",
                "mrs x0, S3_5_C15_C3_0",
                "mrs x0, S3_5_C11_C3_1",
                "mrs x0, S3_5_C15_C7_0",
                "mrs x0, S3_5_C11_C7_1",
                "mrs x0, S3_5_C15_C15_0",
                "mrs x0, S3_5_C11_C15_1",
                "mrs x0, S3_6_C15_C0_0",
                "mrs x0, S3_6_C11_C0_1",
                "mrs x0, S3_6_C15_C3_0",
                "mrs x0, S3_6_C11_C3_1",
                "mrs x0, S3_6_C15_C7_0",
                "mrs x0, S3_6_C11_C7_1",
                "mrs x0, S3_6_C15_C15_0",
                "mrs x0, S3_6_C11_C15_1",
                "mrs x0, S3_7_C15_C0_0",
                "mrs x0, S3_7_C11_C0_1",
                "mrs x0, S3_7_C15_C3_0",
                "mrs x0, S3_7_C11_C3_1",
                "mrs x0, S3_7_C15_C7_0",
                "mrs x0, S3_7_C11_C7_1",
                "mrs x0, S3_7_C15_C15_0",
                "mrs x0, S3_7_C11_C15_1",
                out("x0") _,
                options(nostack),
            )
        };
    });
    expect("UNDEFINED IMPLEMENTATION DEFINED reads", caught, 64)?;
    expect(
        "exception class",
        last.map_or(u64::MAX, |l| l.class()),
        class::UNDEFINED,
    )?;
    ok_with("undefined", caught)
}

/// A pattern the set/way cases check survives.
static mut PATTERN: [u64; 64] = [0; 64];

/// Runs `operation` (a `dc <op>sw` instruction) over every set and way of
/// every data or unified cache level up to the point of coherency; returns
/// how many it issued.
fn every_set_and_way(operation: fn(u64), levels_max: u64) -> u64 {
    let clidr = crate::mrs!("S3_1_C0_C0_1");
    let coherency = (clidr >> 24) & 7;
    let mut issued = 0;
    for level in 0..coherency.min(levels_max) {
        if (clidr >> (3 * level)) & 7 < 2 {
            continue; // No cache, or instruction-only.
        }
        crate::msr!("S3_2_C0_C0_0", level << 1); // CSSELR_EL1
        let ccsidr = crate::mrs!("S3_1_C0_C0_0");
        let line_shift = (ccsidr & 7) + 4;
        let ways = ((ccsidr >> 3) & 0x3ff) + 1;
        let sets = ((ccsidr >> 13) & 0x7fff) + 1;
        let way_shift = if ways > 1 {
            (ways - 1).leading_zeros()
        } else {
            0
        };
        for way in 0..ways {
            for set in 0..sets {
                operation((way << way_shift) | (set << line_shift) | (level << 1));
                issued += 1;
            }
        }
    }
    issued
}

/// Fills [`PATTERN`], runs `body`, and checks the pattern survived.
fn pattern_survives(body: impl FnOnce() -> u64) -> Outcome {
    let base = core::ptr::addr_of_mut!(PATTERN).cast::<u64>();
    for index in 0..64 {
        // SAFETY: index < 64, inside this module's own static.
        unsafe { base.add(index).write_volatile(HOSTILE ^ index as u64) };
    }
    let (issued, caught, _) = catch::catching(body);
    for index in 0..64 {
        // SAFETY: as above.
        let value = unsafe { base.add(index).read_volatile() };
        expect(
            "pattern after set/way maintenance",
            value,
            HOSTILE ^ index as u64,
        )?;
    }
    expect("exceptions from set/way maintenance", caught, 0)?;
    ok_with("operations", issued)
}

/// DC ISW (invalidate, which on a shared cache would discard another VM's
/// dirty lines) over every set and way: completes, and loses nothing.
fn set_way_invalidate(_: &Boot) -> Outcome {
    pattern_survives(|| {
        every_set_and_way(
            |operand| {
                // SAFETY: set/way maintenance; the hypervisor traps it (HCR_EL2.TSW). With the MMU off no data of ours is cached.
                unsafe { core::arch::asm!("dc isw, {}", in(reg) operand, options(nostack)) }
            },
            7,
        )
    })
}

/// DC CSW and DC CISW over every set and way of the first level.
fn set_way_clean(_: &Boot) -> Outcome {
    pattern_survives(|| {
        every_set_and_way(
            |operand| {
                // SAFETY: as in `set_way_invalidate`.
                unsafe {
                    core::arch::asm!("dc csw, {o}", "dc cisw, {o}", o = in(reg) operand, options(nostack))
                }
            },
            1,
        ) * 2
    })
}

/// The pointer-authentication keys: this vCPU's own (they read back as
/// written; the bystander checks its own are unchanged).
fn pointer_auth_keys(_: &Boot) -> Outcome {
    crate::msr!("S3_0_C2_C1_0", HOSTILE); // APIAKeyLo_EL1
    crate::msr!("S3_0_C2_C1_1", !HOSTILE); // APIAKeyHi_EL1
    crate::msr!("S3_0_C2_C3_0", HOSTILE ^ 1); // APGAKeyLo_EL1
    expect("APIAKeyLo_EL1", crate::mrs!("S3_0_C2_C1_0"), HOSTILE)?;
    expect("APIAKeyHi_EL1", crate::mrs!("S3_0_C2_C1_1"), !HOSTILE)?;
    expect("APGAKeyLo_EL1", crate::mrs!("S3_0_C2_C3_0"), HOSTILE ^ 1)?;
    ok()
}

/// Thread and context ID registers and the EL0 timer controls, written
/// with hostile values (the bystander checks its own).
fn thread_registers(_: &Boot) -> Outcome {
    crate::msr!("S3_0_C13_C0_4", HOSTILE); // TPIDR_EL1
    crate::msr!("S3_3_C13_C0_2", HOSTILE); // TPIDR_EL0
    crate::msr!("S3_3_C13_C0_3", HOSTILE); // TPIDRRO_EL0
    crate::msr!("S3_0_C13_C0_1", 0x77); // CONTEXTIDR_EL1
    crate::msr!("S3_0_C14_C1_0", 0); // CNTKCTL_EL1
    expect("TPIDR_EL1", crate::mrs!("S3_0_C13_C0_4"), HOSTILE)?;
    expect("CONTEXTIDR_EL1", crate::mrs!("S3_0_C13_C0_1"), 0x77)?;
    ok()
}

/// 20 000 broadcast TLB invalidations (TLBI VMALLE1IS): this VM's
/// translations only; the guest keeps its speed.
fn tlbi_flood(_: &Boot) -> Outcome {
    for _ in 0..20_000 {
        // SAFETY: invalidates this VM's stage-1 TLB entries (VMID-tagged).
        unsafe { core::arch::asm!("tlbi vmalle1is", "dsb ish", options(nostack)) };
    }
    // SAFETY: as above.
    unsafe { core::arch::asm!("isb", options(nostack)) };
    ok_with("tlbis", 20_000)
}

/// 20 000 broadcast instruction-cache invalidations.
fn icache_flood(_: &Boot) -> Outcome {
    for _ in 0..20_000 {
        // SAFETY: invalidates instruction caches; only costs time.
        unsafe { core::arch::asm!("ic ialluis", "dsb ish", options(nostack)) };
    }
    // SAFETY: as above.
    unsafe { core::arch::asm!("isb", options(nostack)) };
    ok_with("invalidations", 20_000)
}

/// EL2 registers (HCR_EL2, VTTBR_EL2, ICH_HCR_EL2, CNTVOFF_EL2, VBAR_EL2)
/// from EL1: UNDEFINED, read or written.
fn el2_registers_undefined(_: &Boot) -> Outcome {
    catch::expect_undefined("UNDEFINED EL2 register accesses", 6, || {
        let _ = crate::mrs!("S3_4_C1_C1_0");
        let _ = crate::mrs!("S3_4_C2_C1_0");
        let _ = crate::mrs!("S3_4_C12_C11_0");
        let _ = crate::mrs!("S3_4_C14_C0_3");
        crate::msr!("S3_4_C12_C0_0", 0);
        crate::msr!("S3_4_C1_C1_0", 0);
    })
}

/// The EL1 physical timer (CNTP_*): the hypervisor's to use; an access is
/// UNDEFINED or emulated, never the real one (the bystander's timing shows
/// the hypervisor's own timer still works).
fn physical_timer(_: &Boot) -> Outcome {
    let ((), caught, last) = catch::catching(|| {
        crate::msr!("S3_3_C14_C2_2", 0); // CNTP_CVAL_EL0 = 0
        crate::msr!("S3_3_C14_C2_1", 1); // CNTP_CTL_EL0: enabled
        let _ = crate::mrs!("S3_3_C14_C2_1");
        crate::msr!("S3_3_C14_C2_1", 0);
    });
    if caught > 0 && last.map_or(0, |l| l.class()) != class::UNDEFINED {
        return fail("physical timer access (ESR)", last.map_or(0, |l| l.esr), 0);
    }
    spin_counting(20);
    ok_with("undefined", caught)
}

/// The virtual timer due at once and left firing with IRQs masked for
/// 300 ms: the guest keeps its speed, the bystander its ticks.
fn virtual_timer_storm(boot: &Boot) -> Outcome {
    let gic = crate::gic::Attack::new(boot)?;
    gic.quiesce();
    let alone = crate::best_speed(100).max(1);
    gic.enable(chroma_guest_rt::timer::VIRTUAL_TIMER_INTID, 0xa0);
    crate::msr!("S3_3_C14_C3_2", 0); // CNTV_CVAL_EL0 = 0
    crate::msr!("S3_3_C14_C3_1", 1); // CNTV_CTL_EL0: enabled, unmasked
    let firing = crate::best_speed(100);
    spin_counting(200);
    let got = gic.wait_ack(100);
    chroma_guest_rt::timer::disarm();
    if got < 1020 {
        gic.eoi(got);
    }
    gic.quiesce();
    let percent = firing.saturating_mul(100) / alone;
    expect(
        "interrupt",
        u64::from(got),
        u64::from(chroma_guest_rt::timer::VIRTUAL_TIMER_INTID),
    )?;
    if percent < crate::MIN_SPEED_PERCENT {
        return fail("speed with the timer firing, % of alone", percent, 100);
    }
    ok_with("speed_percent", percent)
}

/// MPIDR_EL1 is the vCPU's (the DTB's cpu@0), not the physical CPU's.
fn identity(boot: &Boot) -> Outcome {
    let mpidr = crate::mrs!("S3_0_C0_C0_5") & 0xff_00ff_ffff;
    let want = boot.platform.mpidr(0).unwrap_or(u64::MAX);
    expect("MPIDR_EL1 affinity", mpidr, want)?;
    ok()
}
