//! What only the ARMv7-A entry has: the refusal of an entry outside HYP
//! mode, the report of an exception taken in HYP mode itself, and the W^X
//! self-test a test boots with. Everything else (memory, the VMs, the
//! scheduler) is the shared code over `crate::arch`.

use chroma_arch::armv7::vectors;

/// The boot command-line word that makes chroma write to its own text once
/// the final map is on: a test of W^X and of the HYP exception report
/// (tests/tests/armv7.rs). `/chosen/bootargs` is the hypervisor's own command
/// line, set by whoever boots the board (QEMU: `-append`); no guest reaches it.
const WRITE_TEXT_TEST: &str = "chroma.test=hyp-write-text";

/// Runs the self-test the board's command line asks for, if any.
pub fn self_tests(dtb: usize) {
    if bootargs(dtb).is_some_and(|args| args.split_whitespace().any(|word| word == WRITE_TEXT_TEST))
    {
        write_to_text();
    }
}

/// `/chosen/bootargs` of the board's device tree, if any.
fn bootargs(dtb: usize) -> Option<&'static str> {
    // SAFETY: the boot protocol passes a device tree in r2; the final map keeps its range (`BoardInfo::dtb_range`) mapped and nothing writes it for the whole run, so it may be borrowed for 'static.
    let fdt: fdt::Fdt<'static> = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }.ok()?;
    fdt.find_node("/chosen")?.property("bootargs")?.as_str()
}

/// Writes to the first word of the image's text, which the final map keeps
/// read-only: the HYP data abort is reported and the machine powers off.
fn write_to_text() -> ! {
    extern "C" {
        static __image_start: u8;
    }
    // Only the address of the linker symbol is taken.
    let text = core::ptr::addr_of!(__image_start) as usize;
    log::info!("test: writing to the text page at {text:#x}; W^X must fault");
    // SAFETY: this store is meant to fault (a permission fault on a read-only page); the data abort vector reports it and powers off. Were W^X broken, the word overwritten is the zImage header's first NOP, which never runs again, and the fatal line below follows.
    unsafe { core::ptr::write_volatile(text as *mut u32, 0xe1a0_0000) };
    crate::fatal_fmt(format_args!(
        "the write to text at {text:#x} did not fault: W^X is not enforced"
    ))
}

/// The entry when the loader did not enter in HYP mode: refuse, and stop.
/// MMU off, no lock used; the CPU parks (there is no safe way off: without
/// HYP mode the PSCI conduit may not be reachable).
#[no_mangle]
extern "C" fn chroma_wrong_mode(mode: u32) -> ! {
    let name = match mode {
        0b1_0000 => "User",
        0b1_0001 => "FIQ",
        0b1_0010 => "IRQ",
        0b1_0011 => "SVC",
        0b1_0110 => "Monitor",
        0b1_0111 => "Abort",
        0b1_1011 => "Undefined",
        0b1_1111 => "System",
        _ => "an unknown",
    };
    // The MMU is off: no lock (exclusive accesses need normal memory), a
    // fresh driver on the early UART.
    // SAFETY: the board's early UART is a PL011 at a fixed address; with the MMU off every access is to the physical device; nothing else runs.
    let mut uart = unsafe { crate::console::early_uart() };
    let _ = core::fmt::Write::write_fmt(&mut uart, format_args!(
        "chroma: fatal: entered in {name} mode (CPSR.M {mode:#07b}), not HYP mode: chroma needs the Virtualization Extensions and a HYP-mode entry (QEMU: -M virt,virtualization=on)\n"
    ));
    chroma_arch::armv7::boot::park()
}

/// An exception taken in HYP mode: a hypervisor bug here. Report and stop.
#[no_mangle]
extern "C" fn chroma_hyp_exception(frame: &vectors::HypFrame, kind: u32) -> ! {
    vectors::report_hyp_exception(frame, kind, crate::console::emergency);
    crate::shutdown::power_off()
}
