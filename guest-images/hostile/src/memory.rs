//! Attacks on the guest's physical address map: loads and execution
//! outside RAM and devices, execution from an emulated device, MMIO
//! instructions the hypervisor cannot emulate (no valid syndrome), the
//! PL011 at every offset, the virtio-mmio window of a VM without NICs.

use chroma_guest_rt::Boot;

use crate::catch::{self, class};
use crate::mmio::{read, read32, write, write32, Width, NOT_LOADED};
use crate::{expect, fail, ok, ok_with, Case, Needs, Outcome};

/// The catalogue's memory-map cases.
pub static CASES: &[Case] = &[
    case(
        "mem-loads-outside-the-map",
        Needs::Any,
        loads_outside_the_map,
    ),
    case(
        "mem-execute-outside-the-map",
        Needs::Any,
        execute_outside_the_map,
    ),
    case(
        "mem-execute-from-a-device",
        Needs::Any,
        execute_from_a_device,
    ),
    case("mem-mmio-load-pair", Needs::Any, mmio_load_pair),
    case("mem-mmio-writeback", Needs::Any, mmio_writeback),
    case("mem-pl011-sweep", Needs::Any, pl011_sweep),
    case("mem-pl011-image", Needs::Any, pl011_image),
    case("mem-pl011-flag-poll", Needs::Any, pl011_flag_poll),
    case(
        "mem-virtio-window-without-nics",
        Needs::Any,
        virtio_window_without_nics,
    ),
];

const fn case(name: &'static str, needs: Needs, run: fn(&Boot) -> Outcome) -> Case {
    Case { name, needs, run }
}

/// Where RAM starts.
const RAM_BASE: u64 = 0x4000_0000;

fn end_of_ram(boot: &Boot) -> u64 {
    // SAFETY: the runtime validated this DTB at boot; nothing writes it.
    let fdt = unsafe { chroma_guest_rt::platform::fdt(boot.dtb_address) };
    fdt.and_then(|fdt| {
        let region = fdt.find_node("/memory")?.reg()?.next()?;
        (region.starting_address as u64).checked_add(region.size? as u64)
    })
    .unwrap_or(RAM_BASE + 0x0400_0000)
}

fn pl011(boot: &Boot) -> u64 {
    boot.platform
        .uart_base
        .map_or(0x0900_0000, |base| base as u64)
}

/// Expects exactly one synchronous external abort of `want_class`.
fn one_abort(
    caught: u64,
    last: Option<catch::Caught>,
    want_class: u64,
) -> Result<(), crate::Failure> {
    expect("aborts", caught, 1)?;
    let Some(last) = last else {
        return Err(crate::Failure {
            what: "no abort recorded",
            got: 0,
            want: 1,
        });
    };
    if !last.is_external_abort(want_class) {
        return Err(crate::Failure {
            what: "not a synchronous external abort (ESR)",
            got: last.esr,
            want: want_class << 26 | 0x10,
        });
    }
    Ok(())
}

/// Loads from what QEMU's virt machine has but the VM must not reach
/// (flash, the GIC's hypervisor and ITS frames, the platform bus, past the
/// PL011's page, past the end of RAM, far above it): one external abort
/// each, nothing read.
fn loads_outside_the_map(boot: &Boot) -> Outcome {
    let addresses = [
        0x0000_0000,
        0x0400_0000,
        0x0803_0000,
        0x0804_0000,
        0x0808_0000,
        0x0901_0000,
        0x0c00_0000,
        0x0d00_0000,
        end_of_ram(boot),
        0x40_0000_0000,
    ];
    for address in addresses {
        let (value, caught, last) = catch::catching(|| read(Width::Word, address));
        one_abort(caught, last, class::DATA_ABORT_SAME)?;
        expect("value of a refused load", value, NOT_LOADED)?;
        expect("FAR_EL1", last.map_or(0, |l| l.far), address)?;
    }
    ok_with("addresses", addresses.len() as u64)
}

/// A jump to an IPA nothing is mapped at: an instruction abort at that
/// address, taken at EL1.
fn execute_outside_the_map(_: &Boot) -> Outcome {
    jump_and_expect_abort(0x0d00_0000)
}

/// A jump into the emulated PL011: execution from a device the hypervisor
/// emulates is an instruction abort, not an emulated fetch.
fn execute_from_a_device(boot: &Boot) -> Outcome {
    jump_and_expect_abort(pl011(boot))
}

fn jump_and_expect_abort(address: u64) -> Outcome {
    let ((), caught, last) = catch::catching(|| {
        let mut landed: u64 = 0;
        // SAFETY: branches to `address`, which faults; the handler resumes at label 2, which sets `landed`. Only x30 and `landed` change.
        unsafe {
            core::arch::asm!(
                "adr {tmp}, 2f",
                "mov {landing}, {tmp}",
                landing = out(reg) landed,
                tmp = out(reg) _,
                options(nostack),
            );
        }
        catch::resume_at(landed);
        // SAFETY: as above: the branch never returns normally; the handler resumes at `2:`.
        unsafe {
            core::arch::asm!(
                "blr {target}",
                "2:",
                target = in(reg) address,
                out("x30") _,
                options(nostack),
            );
        }
    });
    one_abort(caught, last, class::INSTRUCTION_ABORT_SAME)?;
    expect(
        "ELR_EL1 (the branch target)",
        last.map_or(0, |l| l.elr),
        address,
    )?;
    ok()
}

/// The distributor's base (every board's guest has one, emulated: each
/// access traps).
fn distributor(boot: &Boot) -> Option<u64> {
    match boot.platform.gic {
        Some(chroma_guest_rt::gic::Gic::V2 { distributor, .. })
        | Some(chroma_guest_rt::gic::Gic::V3 { distributor, .. }) => Some(distributor as u64),
        None => None,
    }
}

/// LDP from and STP to the distributor: no valid instruction syndrome
/// (ISV = 0), so the hypervisor cannot emulate them; it injects an
/// external abort (as KVM and Xen do) and nothing is written.
fn mmio_load_pair(boot: &Boot) -> Outcome {
    let Some(gicd) = distributor(boot) else {
        return fail("no GIC", 0, 1);
    };
    let priority_before = read32(gicd + 0x400);
    let ((), caught, last) = catch::catching(|| {
        // SAFETY: a pair load from the device, expected to abort and be skipped; the outputs are discarded.
        unsafe {
            core::arch::asm!("ldp {a}, {b}, [{base}]", a = out(reg) _, b = out(reg) _, base = in(reg) gicd, options(nostack))
        };
    });
    one_abort(caught, last, class::DATA_ABORT_SAME)?;
    let ((), caught, last) = catch::catching(|| {
        // SAFETY: a pair store to the distributor's priority registers, expected to abort and be skipped.
        unsafe {
            core::arch::asm!("stp {a}, {a}, [{base}]", a = in(reg) u64::MAX, base = in(reg) gicd + 0x400, options(nostack))
        };
    });
    one_abort(caught, last, class::DATA_ABORT_SAME)?;
    expect(
        "GICD_IPRIORITYR0 after the refused STP",
        u64::from(read32(gicd + 0x400)),
        u64::from(priority_before),
    )?;
    ok()
}

/// A post-indexed load from the distributor (GICD_TYPER; the base
/// register is written back, so again no valid syndrome): aborted, the
/// base register unchanged.
fn mmio_writeback(boot: &Boot) -> Outcome {
    let Some(gicd) = distributor(boot) else {
        return fail("no GIC", 0, 1);
    };
    let typer = gicd + 4;
    let mut base = typer;
    let ((), caught, last) = catch::catching(|| {
        // SAFETY: a post-indexed load from the device, expected to abort and be skipped (the base is then not updated).
        unsafe {
            core::arch::asm!("ldr {v:w}, [{base}], #4", v = out(reg) _, base = inout(reg) base, options(nostack))
        };
    });
    one_abort(caught, last, class::DATA_ABORT_SAME)?;
    expect("base register after the refused load", base, typer)?;
    ok()
}

/// The PL011's reads are served by a read-only register image while no
/// input is pending: a load pair from it works (as on hardware) and agrees
/// with single loads, while a store pair to it (no valid syndrome) is
/// refused with an external abort and changes nothing: the image page
/// takes no store.
fn pl011_image(boot: &Boot) -> Outcome {
    let uart = pl011(boot);
    let (ibrd, fbrd) = (uart + 0x24, uart + 0x28);
    let divisors = (read32(ibrd), read32(fbrd));
    let (pair, caught, _) = catch::catching(|| {
        let (low, high): (u32, u32);
        // SAFETY: a pair load of UARTIBRD and UARTFBRD, which reads have no effect on.
        unsafe {
            core::arch::asm!("ldp {a:w}, {b:w}, [{base}]", a = out(reg) low, b = out(reg) high, base = in(reg) ibrd, options(nostack))
        };
        (low, high)
    });
    expect("aborts of the load pair", caught, 0)?;
    expect(
        "UARTIBRD by the pair",
        u64::from(pair.0),
        u64::from(divisors.0),
    )?;
    expect(
        "UARTFBRD by the pair",
        u64::from(pair.1),
        u64::from(divisors.1),
    )?;
    let ((), caught, last) = catch::catching(|| {
        // SAFETY: a pair store to UARTIBRD and UARTFBRD, expected to abort and be skipped.
        unsafe {
            core::arch::asm!("stp {a:w}, {a:w}, [{base}]", a = in(reg) 0x55u32, base = in(reg) ibrd, options(nostack))
        };
    });
    one_abort(caught, last, class::DATA_ABORT_SAME)?;
    expect(
        "UARTIBRD after the refused STP",
        u64::from(read32(ibrd)),
        u64::from(divisors.0),
    )?;
    // A single store traps and is emulated: the image shows it at once.
    write32(ibrd, divisors.0 ^ 1);
    expect(
        "UARTIBRD after a store",
        u64::from(read32(ibrd)),
        u64::from(divisors.0 ^ 1),
    )?;
    write32(ibrd, divisors.0);
    ok()
}

/// Every 32-bit PL011 offset read, and written (but the data register,
/// which would print) with zeros then ones, the control registers saved and
/// restored: nothing refused in the PL011's page.
fn pl011_sweep(boot: &Boot) -> Outcome {
    let uart = pl011(boot);
    let saved: [(u64, u32); 4] =
        [0x24, 0x28, 0x2c, 0x38].map(|offset| (offset, read32(uart + offset)));
    let control = read32(uart + 0x30);
    let mut accesses = 0u64;
    let ((), caught, _) = catch::catching(|| {
        for offset in (0..0x1000).step_by(4) {
            read(Width::Word, uart + offset);
            accesses += 1;
        }
        for value in [0, u32::MAX] {
            for offset in (4..0x1000).step_by(4) {
                if offset == 0x30 {
                    continue; // UARTCR: the console must stay on.
                }
                write32(uart + offset, value);
                accesses += 1;
            }
        }
    });
    for (offset, value) in saved {
        write32(uart + offset, value);
    }
    write32(uart + 0x30, control);
    write32(uart + 0x44, u32::MAX); // UARTICR: clear what the sweep raised.
    expect("refused PL011 accesses", caught, 0)?;
    ok_with("accesses", accesses)
}

/// UARTFR read 20 000 times (each a trap, or a load from the register
/// image): only this vCPU pays.
fn pl011_flag_poll(boot: &Boot) -> Outcome {
    let flags = pl011(boot) + 0x18;
    for _ in 0..20_000 {
        let value = read32(flags);
        if value > 0x1ff {
            return fail("UARTFR", u64::from(value), 0x90);
        }
    }
    ok_with("reads", 20_000)
}

/// The virtio-mmio window (32 slots of 0x200 bytes from 0x0a00_0000) of a
/// VM with no NIC: each slot's first word is an external abort or reads as
/// a virtio-mmio header with device ID 0 (no device), as on QEMU.
fn virtio_window_without_nics(_: &Boot) -> Outcome {
    let mut aborted = 0u64;
    for slot in 0..32u64 {
        let base = 0x0a00_0000 + 0x200 * slot;
        let (magic, caught, last) = catch::catching(|| read(Width::Word, base));
        if caught > 0 {
            one_abort(caught, last, class::DATA_ABORT_SAME)?;
            aborted += 1;
            continue;
        }
        expect("virtio-mmio magic", magic, 0x7472_6976)?;
        expect("device ID of an empty slot", u64::from(read32(base + 8)), 0)?;
        // A write to an empty slot is ignored.
        write(Width::Word, base + 0x70, 0xf);
    }
    ok_with("aborted_slots", aborted)
}
