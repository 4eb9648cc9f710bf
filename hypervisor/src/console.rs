//! The physical console: hypervisor log lines (`chroma: ...`), guest lines
//! (`[vm] ...`) and the console input switch.
//!
//! Lock order: `CONSOLE` is a leaf lock; nothing is taken while it is held.

use chroma_platform::pl011::Pl011;
use core::fmt::Write;
use core::sync::atomic::{AtomicU8, Ordering};
use spin::Mutex;

static CONSOLE: Mutex<Option<Pl011>> = Mutex::new(None);
static LEVEL: AtomicU8 = AtomicU8::new(2);

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
        if let Some(uart) = guard.as_mut() {
            let _ = writeln!(uart, "chroma: {level}{}", record.args());
        }
    }

    fn flush(&self) {}
}

/// Console on the board's early UART, before the device tree is read.
pub fn init_early() {
    // SAFETY: the early UART is mapped as device memory by `mm::early_mmu_on`
    // and nothing else drives it.
    *CONSOLE.lock() = Some(unsafe { Pl011::new(chroma_platform::BOARD.early_uart) });
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Trace);
}

/// Console on the UART the device tree names.
pub fn init(board: &crate::platform_info::BoardInfo) {
    match board.uart {
        // SAFETY: `mm::init` mapped the device tree's console UART as device
        // memory; the early driver (same or other UART) is replaced here.
        Some(base) => *CONSOLE.lock() = Some(unsafe { Pl011::new(base as usize) }),
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

/// Prints one guest line with the VM's name.
pub fn vm_line(vm: &str, line: &[u8]) {
    let mut guard = CONSOLE.lock();
    if let Some(uart) = guard.as_mut() {
        let _ = write!(uart, "[{vm}] ");
        for &b in line {
            // Guest bytes are passed through, except control characters that
            // could confuse the terminal of the person reading the log.
            uart.write_byte(if b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80 { b } else { b'.' });
        }
        let _ = uart.write_str("\n");
    }
}

/// Prints a line whatever the lock state (panics, EL2 exceptions).
pub fn emergency(args: core::fmt::Arguments) {
    // Take the lock if free; otherwise write through a fresh driver.
    if let Some(mut guard) = CONSOLE.try_lock() {
        if let Some(uart) = guard.as_mut() {
            let _ = writeln!(uart, "{args}");
            return;
        }
    }
    // SAFETY: the early UART stays mapped; in an emergency a garbled line is
    // better than none.
    let mut uart = unsafe { Pl011::new(chroma_platform::BOARD.early_uart) };
    let _ = writeln!(uart, "{args}");
}

/// A byte typed on the physical console, if any.
pub fn poll_input() -> Option<u8> {
    CONSOLE.try_lock().and_then(|guard| guard.as_ref().and_then(|u| u.read_byte()))
}
