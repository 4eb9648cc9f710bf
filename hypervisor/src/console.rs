//! The physical console: hypervisor log lines (`chroma: ...`), guest lines
//! (`[vm] ...`) and the console input switch. What guests' bytes become on
//! the terminal (line buffering, the focused VM's prompt and control
//! sequences, unforgeable prefixes) is `chroma_core::console`'s.
//!
//! Lock order: `CONSOLE` is a leaf lock; nothing is taken while it is held.
//! Guest output arrives with the VM's `Vm::uart` lock held (it owns the
//! VM's line buffer), which comes before `CONSOLE`.

use crate::arch::cpu;
use crate::vm::Vm;
use chroma_core::console::{LineBuffer, Speaker, Terminal};
use chroma_platform::uart::Uart;
use core::fmt::Write;
use core::sync::atomic::{AtomicU8, Ordering};
use spin::Mutex;

/// The UART and what is on the terminal.
struct Console {
    uart: Option<Uart>,
    terminal: Terminal,
}

impl Console {
    /// The UART, with the terminal's state, if the console is up.
    fn parts(&mut self) -> Option<(&mut Uart, &mut Terminal)> {
        let Console { uart, terminal } = self;
        uart.as_mut().map(|uart| (uart, terminal))
    }
}

static CONSOLE: Mutex<Console> = Mutex::new(Console {
    uart: None,
    terminal: Terminal::new(),
});
static LEVEL: AtomicU8 = AtomicU8::new(2);
/// The focused VM's partial line (a prompt) shows after this long without output.
const QUIET_MS: u64 = 30;

/// Writes raw bytes (the terminal's output) to the UART.
fn write_bytes(uart: &Uart, bytes: &[u8]) {
    for &byte in bytes {
        uart.write_byte(byte);
    }
}

struct Logger;
static LOGGER: Logger = Logger;

fn level_filter(level: u8) -> log::LevelFilter {
    match level {
        0 => log::LevelFilter::Error,
        1 => log::LevelFilter::Warn,
        2 => log::LevelFilter::Info,
        3 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= level_filter(LEVEL.load(Ordering::Relaxed))
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Info => "",
            log::Level::Error => "error: ",
            log::Level::Warn => "warn: ",
            log::Level::Debug => "debug: ",
            log::Level::Trace => "trace: ",
        };
        let mut guard = CONSOLE.lock();
        if let Some((uart, terminal)) = guard.parts() {
            terminal.hypervisor_line(&mut |bytes: &[u8]| write_bytes(uart, bytes));
            let _ = writeln!(uart, "chroma: {level}{}", record.args());
        }
    }

    fn flush(&self) {}
}

/// Console on the board's early UART, before the device tree is read.
pub fn init_early() {
    // SAFETY: the early UART is mapped as device memory by `mm::early_mmu_on` and nothing else drives it.
    CONSOLE.lock().uart = Some(unsafe { early_uart() });
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Trace);
}

/// Console on the UART the device tree names.
pub fn init(board: &crate::platform_info::BoardInfo) {
    match board.uart {
        Some((model, base)) => {
            // SAFETY: `mm::init` mapped the device tree's console UART as device memory; the early driver (same or other UART) is replaced here.
            let uart = unsafe { Uart::new(model, crate::mm::host_usize(base)) };
            CONSOLE.lock().uart = Some(uart);
        }
        None => log::warn!(
            "the device tree's console is a {:?} UART, which this build does not drive: staying on the early UART",
            board.other_console
        ),
    }
}

/// Sets the log level (0 = error .. 4 = trace).
pub fn set_level(level: u8) {
    LEVEL.store(level, Ordering::Relaxed);
}

/// The VM with the input focus (an index into the system's VMs).
fn focus() -> usize {
    let count = crate::sched::system().vms.len().max(1);
    crate::sched::FOCUS.load(Ordering::Relaxed) % count
}

fn speaker(vm: &Vm) -> Speaker<'_> {
    Speaker {
        index: vm.index,
        name: &vm.name,
        focused: vm.index == focus(),
    }
}

/// A byte `vm` wrote to its UART; `line` is its line buffer (the caller
/// holds `Vm::console_line`).
pub fn vm_output(vm: &Vm, line: &mut LineBuffer, byte: u8) {
    let now = cpu::now();
    let mut guard = CONSOLE.lock();
    let Console { uart, terminal } = &mut *guard;
    terminal.vm_byte(speaker(vm), line, byte, now, &mut |bytes: &[u8]| {
        if let Some(uart) = uart.as_ref() {
            write_bytes(uart, bytes);
        }
    });
}

/// Shows the focused VM's partial line (its shell prompt) once the VM has
/// been quiet for a moment. Called regularly (CPU 0's scheduler loop).
pub fn show_quiet_line() {
    let Some(vm) = crate::sched::system().vms.get(focus()) else {
        return;
    };
    let quiet = crate::sched::system().clock.ticks(QUIET_MS);
    // Someone else is printing to this VM's line: try again next time.
    let Some(mut line) = vm.console_line.try_lock() else {
        return;
    };
    let now = cpu::now();
    let mut guard = CONSOLE.lock();
    if let Some((physical, terminal)) = guard.parts() {
        terminal.show_quiet(speaker(vm), &mut line, now, quiet, &mut |bytes: &[u8]| {
            write_bytes(physical, bytes)
        });
    }
}

/// Prints the rest of a VM's output (from its line buffer) as one line,
/// control sequences dropped: the VM stopped.
pub fn vm_line(vm: &str, line: &[u8]) {
    let mut guard = CONSOLE.lock();
    if let Some((uart, terminal)) = guard.parts() {
        terminal.vm_line(vm, line, &mut |bytes: &[u8]| write_bytes(uart, bytes));
    }
}

/// Prints a line whatever the lock state (panics, EL2 exceptions).
pub fn emergency(args: core::fmt::Arguments) {
    // Take the lock if free; otherwise write through a fresh driver.
    if let Some(mut guard) = CONSOLE.try_lock() {
        if let Some((uart, terminal)) = guard.parts() {
            terminal.hypervisor_line(&mut |bytes: &[u8]| write_bytes(uart, bytes));
            let _ = writeln!(uart, "{args}");
            return;
        }
    }
    // SAFETY: the early UART stays mapped; in an emergency a garbled line is better than none.
    let mut uart = unsafe { early_uart() };
    let _ = writeln!(uart, "{args}");
}

/// A driver for the board's early UART.
///
/// # Safety
/// The early UART must be mapped (or the MMU off); a second driver for it
/// may interleave output with the first.
pub unsafe fn early_uart() -> Uart {
    let board = chroma_platform::BOARD;
    // SAFETY: the caller's contract; the address and model are the board's.
    unsafe { Uart::new(board.early_uart_model, board.early_uart) }
}

/// A byte typed on the physical console, if any.
pub fn poll_input() -> Option<u8> {
    CONSOLE
        .try_lock()
        .and_then(|guard| guard.uart.as_ref().and_then(|u| u.read_byte()))
}
