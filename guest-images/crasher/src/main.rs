//! The crasher test guest: misbehaves in one of several ways chosen by bootargs.
//!
//! It prints `crasher: start` and `crasher: mode <MODE>`, then by
//! `crasher.mode=`:
//! - `fault` (default): loads from IPAs that are neither RAM nor a device
//!   (`crasher.addr`, default 0x0d00_0000, and the first page past the end of
//!   RAM per the DTB), forever; each abort is counted and skipped, never
//!   fixed, so the next access faults again. Prints the first fault at each
//!   address and `crasher: still faulting (N faults)` at N = 10, 100, 1000...
//! - `wild`: jumps to `crasher.addr`; the instruction abort is retried
//!   forever (ELR unchanged), with the same progress lines.
//! - `unhandled`: one load from `crasher.addr` with no handler: the runtime
//!   prints its exception report (`rt: unhandled ...`) and parks the CPU.
//! - `novec`: points VBAR_EL1 (VBAR on AArch32) at `crasher.addr` and faults: every exception
//!   now faults on its own vector fetch, forever, silently.
//! - `hvc`: unknown HVC/SMC function ids and invalid PSCI arguments; prints
//!   `crasher: <call> = <PSCI status name>` lines, then `crasher: hvc done`
//!   and powers off.
//! - `escape`: tries to reach the host through Arm semihosting (`hlt
//!   #0xf000`, the A64 and A32 semihosting trap): SYS_WRITE0 of `<crasher.marker>-WRITE0`, SYS_SYSTEM of
//!   `touch <crasher.path>`, then SYS_EXIT. Prints `crasher: escape <call> =
//!   UNDEFINED` (or `= returned <x0>`) after each attempt, `crasher: escape
//!   done`, and powers off. Under chroma semihosting is off, HLT is
//!   UNDEFINED at EL1 and this guest's own vector steps over it. It never
//!   prints the marker or the path, so they can reach the host only through
//!   an escape.
//! - `off`: PSCI SYSTEM_OFF at once.
//! - `reset`: PSCI SYSTEM_RESET at once (on plain QEMU use `-no-reboot`, or
//!   the guest boots again and resets again, forever).
#![no_std]
#![no_main]

use chroma_guest_rt::args::BootArgs;
use chroma_guest_rt::exceptions::{self, exception_class, Fault, Resolution, TrapFrame};
use chroma_guest_rt::shared::Shared;
use chroma_guest_rt::{entry, println, psci, Boot};

mod attack;

entry!(main);

/// Default unmapped IPA: QEMU virt's empty platform-bus window, outside
/// chroma's guest map.
const DEFAULT_ADDRESS: u64 = 0x0d00_0000;
/// Where RAM starts on QEMU virt and under chroma.
const RAM_BASE: u64 = 0x4000_0000;
/// Value a skipped load leaves in its register.
const NOT_LOADED: u64 = 0x5a5a_5a5a_5a5a_5a5a;
/// [`NOT_LOADED`] for a 32-bit load.
const NOT_LOADED_32: u32 = 0x5a5a_5a5a;

/// Faults taken so far (only the boot CPU faults).
static FAULTS: Shared<u64> = Shared::new(0);
/// The last fault's syndrome and address.
static LAST_ESR: Shared<u64> = Shared::new(0);
static LAST_FAR: Shared<u64> = Shared::new(0);
/// Set by the handler while a call under test took an UNDEFINED exception.
static UNDEFINED: Shared<bool> = Shared::new(false);

/// `escape` mode's defaults when the command line names no marker or path.
const DEFAULT_MARKER: &str = "chroma-crasher-escape";
const DEFAULT_PATH: &str = "/tmp/chroma-crasher-escaped";
/// Arm semihosting operation numbers (Semihosting for AArch32 and AArch64,
/// version 3.0, chapter 6) and SYS_EXIT's reason code.
const SYS_WRITE0: usize = 0x04;
const SYS_SYSTEM: usize = 0x12;
const SYS_EXIT: usize = 0x18;
const ADP_STOPPED_APPLICATION_EXIT: usize = 0x2_0026;
/// Longest marker or path `escape` mode copies.
const ESCAPE_TEXT_MAX: usize = 200;

fn main(boot: &'static Boot) -> ! {
    let args = BootArgs::new(boot.platform.bootargs);
    println!("crasher: start");
    let address = args.number("crasher.addr").unwrap_or(DEFAULT_ADDRESS);
    let mode = args.value("crasher.mode").unwrap_or("fault");
    println!("crasher: mode {}", mode);
    match mode {
        "fault" => fault_forever(&[address, end_of_ram(boot)]),
        "wild" => jump_wild(address),
        "unhandled" => {
            // No handler: the runtime prints its report and parks the CPU.
            let value = load(address);
            println!("crasher: no abort at {:#010x} (read {:#x})", address, value);
            chroma_guest_rt::power_off()
        }
        "novec" => no_vectors(address),
        "hvc" => bad_calls(boot, address),
        "escape" => escape(
            args.value("crasher.marker").unwrap_or(DEFAULT_MARKER),
            args.value("crasher.path").unwrap_or(DEFAULT_PATH),
        ),
        "off" => {
            println!("crasher: system off");
            chroma_guest_rt::power_off()
        }
        "reset" => {
            println!("crasher: system reset");
            let result = psci::system_reset();
            println!("crasher: SYSTEM_RESET = {}", psci::status_name(result));
            chroma_guest_rt::power_off()
        }
        other => {
            println!("crasher: unknown mode {}, powering off", other);
            chroma_guest_rt::power_off()
        }
    }
}

/// The first address past the end of the first RAM region in `/memory`.
fn end_of_ram(boot: &Boot) -> u64 {
    // SAFETY: the runtime validated this DTB at boot and nothing writes it.
    let fdt = unsafe { chroma_guest_rt::platform::fdt(boot.dtb_address) };
    fdt.and_then(|fdt| {
        let region = fdt.find_node("/memory")?.reg()?.next()?;
        (region.starting_address as u64).checked_add(region.size? as u64)
    })
    .unwrap_or(RAM_BASE + 0x1000_0000)
}

/// Prints the first fault at an address, then progress at powers of ten.
fn note_fault(fault: &Fault, first_at_address: bool) {
    let count = FAULTS.get() + 1;
    FAULTS.set(count);
    LAST_ESR.set(fault.esr);
    LAST_FAR.set(fault.far);
    if first_at_address {
        println!(
            "crasher: fault at {:#010x}: {}",
            fault.far,
            fault_kind(fault)
        );
    }
    if count >= 10 && is_power_of_ten(count) {
        println!("crasher: still faulting ({} faults)", count);
    }
}

fn fault_kind(fault: &Fault) -> &'static str {
    if fault.is_synchronous_external_abort() {
        "synchronous external abort"
    } else if let Some(status) = fault.fault_status() {
        exceptions::fault_status_name(status)
    } else {
        exceptions::exception_class_name(fault.exception_class())
    }
}

fn is_power_of_ten(mut value: u64) -> bool {
    if value == 0 {
        return false;
    }
    while value.is_multiple_of(10) {
        value /= 10;
    }
    value == 1
}

/// `fault` mode: load from each address in turn, forever.
fn fault_forever(addresses: &[u64]) -> ! {
    exceptions::set_sync_handler(Some(|_frame: &mut TrapFrame, fault: &Fault| {
        if fault.is_abort() {
            let first = FAULTS.get() < 2 && fault.far != LAST_FAR.get();
            note_fault(fault, first);
            Resolution::Skip
        } else {
            Resolution::Unhandled
        }
    }));
    let mut warned = [false; 2];
    loop {
        for (index, &address) in addresses.iter().enumerate() {
            let before = FAULTS.get();
            let value = load(address);
            if FAULTS.get() == before && !warned[index % 2] {
                warned[index % 2] = true;
                println!("crasher: no abort at {:#010x} (read {:#x})", address, value);
            }
        }
    }
}

/// One 32-bit load; a faulting load is skipped by the handler (if any).
fn load(address: u64) -> u64 {
    let Ok(address) = usize::try_from(address) else {
        return NOT_LOADED;
    };
    // SAFETY: `address` is not RAM, so no Rust object is read; the abort handler skips the single 4-byte load, which then returns the marker.
    u64::from(unsafe { exceptions::load_u32_skippable(address, NOT_LOADED_32) })
}

/// `wild` mode: branch to `address` and retry the instruction abort forever.
fn jump_wild(address: u64) -> ! {
    exceptions::set_sync_handler(Some(|_frame: &mut TrapFrame, fault: &Fault| {
        note_fault(fault, FAULTS.get() == 0);
        Resolution::Retry
    }));
    println!("crasher: jumping to {:#010x}", address);
    // SAFETY: deliberately not sound in the usual sense: control never comes back here. Every fetch at `address` aborts and the handler retries it, so no Rust code runs with a broken state other than the handler.
    unsafe { attack::jump_to(reachable(address)) }
}

/// `novec` mode: vectors at an unmapped address, then fault.
fn no_vectors(address: u64) -> ! {
    println!("crasher: vectors at {:#010x}, faulting", address);
    // SAFETY: deliberately hostile: after this, every exception fetches its vector from `address`, which aborts, which fetches the vector again. No Rust code runs afterwards (the load never completes).
    unsafe { attack::set_vectors_and_fault(reachable(address)) }
}

/// `address` as a pointer-sized value, or powers off if it has no such
/// value (above 4 GiB on AArch32).
fn reachable(address: u64) -> usize {
    usize::try_from(address).unwrap_or_else(|_| {
        println!("crasher: {:#x} is beyond the address space", address);
        chroma_guest_rt::power_off()
    })
}

/// `hvc` mode: bad SMCCC/PSCI calls, each result printed, then power off.
fn bad_calls(boot: &Boot, address: u64) -> ! {
    // SMC is UNDEFINED at EL1 without EL3 (plain QEMU); a hypervisor may
    // trap it and answer, or inject UNDEFINED too. Catch and skip UNDEFINED.
    exceptions::set_sync_handler(Some(|_frame: &mut TrapFrame, fault: &Fault| {
        if fault.exception_class() == exception_class::UNKNOWN {
            UNDEFINED.set(true);
            Resolution::Skip
        } else {
            Resolution::Unhandled
        }
    }));
    let self_mpidr = boot.platform.mpidr(0).unwrap_or(0);
    let calls: [(&str, u32, u64, u64, u64); 10] = [
        ("hvc unknown psci 0x8400001f", 0x8400_001f, 0, 0, 0),
        ("hvc unknown psci64 0xc40000ff", 0xc400_00ff, 0, 0, 0),
        ("hvc vendor hyp 0x86000000", 0x8600_0000, 0, 0, 0),
        ("hvc yielding 0x04000000", 0x0400_0000, 0, 0, 0),
        ("hvc 0xffffffff", 0xffff_ffff, 0, 0, 0),
        (
            "psci features unknown 0x8400001f",
            psci::PSCI_FEATURES,
            0x8400_001f,
            0,
            0,
        ),
        ("psci cpu_on mpidr 0xff", psci::CPU_ON, 0xff, 0x4008_0000, 0),
        ("psci cpu_on self", psci::CPU_ON, self_mpidr, 0x4008_0000, 0),
        (
            "psci affinity_info mpidr 0xff",
            psci::AFFINITY_INFO,
            0xff,
            0,
            0,
        ),
        (
            "psci affinity_info level 3",
            psci::AFFINITY_INFO,
            self_mpidr,
            3,
            0,
        ),
    ];
    for (name, function, arg1, arg2, arg3) in calls {
        report_call(name, || psci::call(function, arg1, arg2, arg3));
    }
    report_call("smc psci version", smc_psci_version);
    // Last: on plain QEMU this succeeds and vCPU 1 dies at the wild entry.
    match boot.platform.mpidr(1) {
        Some(mpidr) => report_call("psci cpu_on vcpu 1 entry outside ram", || {
            psci::cpu_on(mpidr, address, 0)
        }),
        None => println!("crasher: psci cpu_on vcpu 1 entry outside ram skipped (1 vcpu)"),
    }
    println!("crasher: hvc done");
    chroma_guest_rt::power_off()
}

/// `escape` mode: each semihosting call that would reach the host, each
/// followed by a line saying what happened, then a clean power off.
fn escape(marker: &str, path: &str) -> ! {
    exceptions::set_sync_handler(Some(|_frame: &mut TrapFrame, fault: &Fault| {
        if fault.exception_class() == exception_class::UNKNOWN {
            UNDEFINED.set(true);
            Resolution::Skip
        } else {
            Resolution::Unhandled
        }
    }));
    // SYS_WRITE0: x1 points at a NUL-terminated string, written to the
    // host's console. The marker gets its suffix only here, in memory.
    let mut text = [0u8; ESCAPE_TEXT_MAX + 16];
    let length = join(&mut text, &[marker.as_bytes(), b"-WRITE0\n"]);
    text[length] = 0;
    report_semihosting("SYS_WRITE0", SYS_WRITE0, text.as_ptr() as usize);

    // SYS_SYSTEM: x1 points at {command address, command length} (two
    // words of the register width); the host would run the command in its shell.
    let mut command = [0u8; ESCAPE_TEXT_MAX + 16];
    let length = join(&mut command, &[b"touch ", path.as_bytes()]);
    let block = [command.as_ptr() as usize, length];
    report_semihosting("SYS_SYSTEM", SYS_SYSTEM, block.as_ptr() as usize);

    // SYS_EXIT: on AArch64 x1 points at {reason, subcode}; on AArch32 r1 is
    // the reason itself. The host would end the run here with status 0,
    // before the lines below.
    let block = [ADP_STOPPED_APPLICATION_EXIT, 0];
    let parameter = if cfg!(target_arch = "aarch64") {
        block.as_ptr() as usize
    } else {
        ADP_STOPPED_APPLICATION_EXIT
    };
    report_semihosting("SYS_EXIT", SYS_EXIT, parameter);

    println!("crasher: escape done");
    chroma_guest_rt::power_off()
}

/// Copies `parts` one after another into `buffer` (each cut at
/// [`ESCAPE_TEXT_MAX`] bytes), leaving room for a NUL; returns the length.
fn join(buffer: &mut [u8], parts: &[&[u8]]) -> usize {
    let mut length = 0;
    for part in parts {
        for &byte in part.iter().take(ESCAPE_TEXT_MAX) {
            if length + 1 < buffer.len() {
                buffer[length] = byte;
                length += 1;
            }
        }
    }
    length
}

/// Makes semihosting call `operation` with parameter `parameter` (`hlt
/// #0xf000`) and prints `crasher: escape <name> = UNDEFINED` or `= returned <x0>`.
fn report_semihosting(name: &str, operation: usize, parameter: usize) {
    UNDEFINED.set(false);
    // SAFETY: with semihosting off (as under chroma) HLT is UNDEFINED and the handler above skips it, leaving every register as it was. With it on, the host reads the parameter block `parameter` points at (live in the caller's frame, written before the call) and returns a value in x0 (r0); these calls write no guest memory.
    let result = unsafe { attack::semihosting(operation, parameter) };
    if UNDEFINED.get() {
        println!("crasher: escape {} = UNDEFINED", name);
    } else {
        println!("crasher: escape {} = returned {:#x}", name, result);
    }
}

/// Runs `call` and prints `crasher: <name> = <status>` (or `= UNDEFINED`).
fn report_call(name: &str, call: impl FnOnce() -> i64) {
    UNDEFINED.set(false);
    let result = call();
    if UNDEFINED.get() {
        println!("crasher: {} = UNDEFINED", name);
    } else if result < 0 {
        println!("crasher: {} = {}", name, psci::status_name(result));
    } else {
        println!("crasher: {} = {:#x}", name, result);
    }
}

/// PSCI_VERSION through `smc #0` regardless of the DTB's conduit. If SMC
/// is UNDEFINED the handler skips it and x0 (r0) still holds the function id.
fn smc_psci_version() -> i64 {
    psci::call_via(psci::Conduit::Smc, psci::PSCI_VERSION, 0, 0, 0)
}
