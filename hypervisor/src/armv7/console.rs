//! The console of the ARMv7 slice: the board's early PL011, polled, behind
//! one lock (the only lock of this slice). Every line starts `chroma: `.

use chroma_platform::pl011::Pl011;
use core::fmt::Write;
use spin::Mutex;

/// The UART, once the early map covers it as device memory.
static CONSOLE: Mutex<Option<Pl011>> = Mutex::new(None);

/// Starts the console. Called after the early MMU map is on (spin locks
/// need normal, cacheable memory for their exclusive accesses).
pub fn init() {
    // SAFETY: the board's early UART is a PL011; the early map (and later
    // the final map) maps its page as device memory, and only this module
    // and `emergency` drive it.
    let uart = unsafe { Pl011::new(chroma_platform::BOARD.early_uart) };
    *CONSOLE.lock() = Some(uart);
}

/// Prints one line.
pub fn line(args: core::fmt::Arguments) {
    if let Some(uart) = CONSOLE.lock().as_mut() {
        // The PL011 writer cannot fail.
        let _ = writeln!(uart, "{args}");
    }
}

/// Prints one line without the lock: for a panic, an exception report or
/// the wrong-mode refusal, when the lock may be held or the MMU is off.
pub fn emergency(args: core::fmt::Arguments) {
    // SAFETY: as in `init`; this may interleave with a line in progress,
    // which only garbles output, and runs only on the way to power-off.
    let mut uart = unsafe { Pl011::new(chroma_platform::BOARD.early_uart) };
    let _ = writeln!(uart, "{args}");
}
