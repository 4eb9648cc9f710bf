//! An emulated Arm PL011 UART (the QEMU `virt` console at 0x0900_0000).
//!
//! Transmit is immediate (the FIFO never fills), so the model hands each
//! byte to the caller; receive has a 32-byte FIFO fed from the physical
//! console when this VM has the input focus. The interrupt line is level:
//! (RIS & IMSC) != 0, as the PL011 TRM (DDI 0183) specifies UARTINTR.
// Guest input is parsed here: an index or slice must not panic (issue 10).
#![deny(clippy::indexing_slicing)]

/// Register offsets (PL011 TRM, table 3-1).
mod offsets {
    pub const UARTDR: u64 = 0x000;
    pub const UARTRSR: u64 = 0x004;
    pub const UARTFR: u64 = 0x018;
    pub const UARTILPR: u64 = 0x020;
    pub const UARTIBRD: u64 = 0x024;
    pub const UARTFBRD: u64 = 0x028;
    pub const UARTLCR_H: u64 = 0x02c;
    pub const UARTCR: u64 = 0x030;
    pub const UARTIFLS: u64 = 0x034;
    pub const UARTIMSC: u64 = 0x038;
    pub const UARTRIS: u64 = 0x03c;
    pub const UARTMIS: u64 = 0x040;
    pub const UARTICR: u64 = 0x044;
    pub const UARTDMACR: u64 = 0x048;
    pub const UARTPERIPHID0: u64 = 0xfe0;
    pub const UARTPCELLID3: u64 = 0xffc;
}
use offsets::*;

/// Flag register bits.
const FR_RXFE: u32 = 1 << 4;
const FR_TXFE: u32 = 1 << 7;
/// Interrupt bits (RIS, MIS, IMSC, ICR).
const INT_RX: u32 = 1 << 4;
const INT_TX: u32 = 1 << 5;
const INT_RT: u32 = 1 << 6;
/// PrimeCell identification: PL011 r1p5 (0x00341011) and the PrimeCell id.
const ID_BYTES: [u8; 8] = [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

const FIFO_SIZE: usize = 32;

/// The offset of UARTDR, the data register a console writes.
pub const DATA_REGISTER: u64 = UARTDR;

/// Size of the register window.
pub const WINDOW_SIZE: u64 = 0x1000;

/// What a register write produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pl011Effect {
    /// Nothing visible outside.
    None,
    /// The guest transmitted this byte.
    Transmit(u8),
}

/// What [`Pl011::read_state`] returns: the state behind every read.
#[derive(Clone, Copy, Debug, Eq)]
pub struct Pl011ReadState {
    input: usize,
    registers: [u32; 6],
    tx_latched: bool,
}

/// Field by field, without short cuts: a derived comparison of the
/// registers is a call to `memcmp`, byte by byte, on every UART access a
/// guest makes (its console output traps once a byte).
impl PartialEq for Pl011ReadState {
    fn eq(&self, other: &Self) -> bool {
        let registers = self
            .registers
            .iter()
            .zip(other.registers.iter())
            .fold(0, |differ, (a, b)| differ | (a ^ b));
        registers == 0 && self.input == other.input && self.tx_latched == other.tx_latched
    }
}

/// The emulated UART's state.
#[derive(Clone, Debug)]
pub struct Pl011 {
    fifo: [u8; FIFO_SIZE],
    head: usize,
    len: usize,
    imsc: u32,
    cr: u32,
    lcr_h: u32,
    ibrd: u32,
    fbrd: u32,
    ifls: u32,
    /// Transmit interrupt latch: set when the TX FIFO drains, cleared by ICR.
    tx_latched: bool,
}

impl Default for Pl011 {
    fn default() -> Self {
        Self::new()
    }
}

impl Pl011 {
    /// A UART in its reset state.
    pub const fn new() -> Self {
        Self {
            fifo: [0; FIFO_SIZE],
            head: 0,
            len: 0,
            imsc: 0,
            cr: 0x300,
            lcr_h: 0,
            ibrd: 0,
            fbrd: 0,
            ifls: 0x12,
            tx_latched: true,
        }
    }

    /// Queues a received byte; false if the FIFO is full (the byte is dropped).
    pub fn receive(&mut self, byte: u8) -> bool {
        if self.len == FIFO_SIZE {
            return false;
        }
        match self.fifo.get_mut((self.head + self.len) % FIFO_SIZE) {
            Some(slot) => *slot = byte,
            None => return false,
        }
        self.len += 1;
        true
    }

    /// Whether the FIFO has room for input.
    pub fn can_receive(&self) -> bool {
        self.len < FIFO_SIZE
    }

    fn raw_interrupts(&self) -> u32 {
        let rx = if self.len > 0 { INT_RX | INT_RT } else { 0 };
        let tx = if self.tx_latched { INT_TX } else { 0 };
        rx | tx
    }

    /// The level of the interrupt line (UARTINTR).
    pub fn interrupt_level(&self) -> bool {
        self.raw_interrupts() & self.imsc != 0
    }

    /// Emulated read; `None` for an offset with no register.
    pub fn read(&mut self, offset: u64) -> Option<u32> {
        let value = self.peek(offset)?;
        // Reading UARTDR pops the receive FIFO: the only read with an effect.
        if offset == UARTDR && self.len > 0 {
            self.head = (self.head + 1) % FIFO_SIZE;
            self.len -= 1;
        }
        Some(value)
    }

    /// Whether the receive FIFO holds input: a read of UARTDR would then
    /// pop it. With it empty no read has an effect, so a read-only image
    /// of [`Pl011::peek`]'s values serves every read of the window.
    pub fn input_pending(&self) -> bool {
        self.len > 0
    }

    /// What reads of the window depend on, to compare before and after
    /// an access: equal values read the same at every offset, as long as
    /// no input is pending (UARTDR then reads as 0).
    pub fn read_state(&self) -> Pl011ReadState {
        Pl011ReadState {
            input: self.len,
            registers: [
                self.imsc, self.cr, self.lcr_h, self.ibrd, self.fbrd, self.ifls,
            ],
            tx_latched: self.tx_latched,
        }
    }

    /// The registers a write can change, as reads see them: what a
    /// register image of the window must rewrite after a trapped access
    /// (every other offset reads as a constant; see [`Pl011::peek`]).
    pub fn changing_registers(&self) -> [(u64, u32); 10] {
        [
            UARTDR, UARTFR, UARTIBRD, UARTFBRD, UARTLCR_H, UARTCR, UARTIFLS, UARTIMSC, UARTRIS,
            UARTMIS,
        ]
        .map(|offset| (offset, self.peek(offset).unwrap_or(0)))
    }

    /// What a read at `offset` returns, without its effect (a UARTDR
    /// read does not pop the FIFO); `None` for an offset with no register.
    pub fn peek(&self, offset: u64) -> Option<u32> {
        let value = match offset {
            UARTDR => {
                if self.len == 0 {
                    0
                } else {
                    u32::from(self.fifo.get(self.head).copied().unwrap_or(0))
                }
            }
            UARTRSR => 0,
            UARTFR => FR_TXFE | if self.len == 0 { FR_RXFE } else { 0 },
            UARTILPR => 0,
            UARTIBRD => self.ibrd,
            UARTFBRD => self.fbrd,
            UARTLCR_H => self.lcr_h,
            UARTCR => self.cr,
            UARTIFLS => self.ifls,
            UARTIMSC => self.imsc,
            UARTRIS => self.raw_interrupts(),
            UARTMIS => self.raw_interrupts() & self.imsc,
            UARTICR => 0,
            UARTDMACR => 0,
            UARTPERIPHID0..=UARTPCELLID3 if offset.is_multiple_of(4) => {
                let index = (offset - UARTPERIPHID0) / 4;
                usize::try_from(index)
                    .ok()
                    .and_then(|index| ID_BYTES.get(index))
                    .map_or(0, |&byte| u32::from(byte))
            }
            _ if offset < WINDOW_SIZE => 0,
            _ => return None,
        };
        Some(value)
    }

    /// A write of `value` to UARTDR that changes nothing a read or the
    /// interrupt line sees, because the transmit interrupt is latched
    /// already (a console writing line after line): the byte to transmit.
    /// `None` when the write must go through [`Pl011::write`] (the latch
    /// was clear, so the interrupt level or the image may change).
    pub fn transmit_unchanged(&self, value: u32) -> Option<u8> {
        self.tx_latched.then(|| value.to_le_bytes()[0])
    }

    /// Emulated write; `None` for an offset with no register.
    pub fn write(&mut self, offset: u64, value: u32) -> Option<Pl011Effect> {
        match offset {
            UARTDR => {
                // Transmission completes at once: the TX interrupt latches again.
                self.tx_latched = true;
                // UARTDR[7:0] is the character; the upper bits are ignored.
                return Some(Pl011Effect::Transmit(value.to_le_bytes()[0]));
            }
            UARTRSR => {}
            UARTIBRD => self.ibrd = value & 0xffff,
            UARTFBRD => self.fbrd = value & 0x3f,
            UARTLCR_H => self.lcr_h = value & 0xff,
            UARTCR => self.cr = value & 0xffff,
            UARTIFLS => self.ifls = value & 0x3f,
            UARTIMSC => self.imsc = value & 0x7ff,
            UARTICR => {
                if value & INT_TX != 0 {
                    self.tx_latched = false;
                }
            }
            _ if offset < WINDOW_SIZE => {} // read-only or reserved: ignored
            _ => return None,
        }
        Some(Pl011Effect::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmit_receive_and_interrupt_level() {
        let mut u = Pl011::new();
        assert_eq!(
            u.write(UARTDR, u32::from(b'x')),
            Some(Pl011Effect::Transmit(b'x'))
        );
        assert_eq!(u.read(UARTFR).unwrap() & FR_RXFE, FR_RXFE);
        assert!(!u.interrupt_level(), "masked at reset");
        u.write(UARTIMSC, INT_RX);
        assert!(u.receive(b'a'));
        assert!(u.interrupt_level());
        assert_eq!(u.read(UARTFR).unwrap() & FR_RXFE, 0);
        assert_eq!(u.read(UARTDR), Some(u32::from(b'a')));
        assert!(!u.interrupt_level());
        // TX interrupt: latched after a write, cleared by ICR.
        u.write(UARTIMSC, INT_TX);
        assert!(u.interrupt_level());
        u.write(UARTICR, INT_TX);
        assert!(!u.interrupt_level());
    }

    /// Every word of the window as an image would hold it.
    fn image(u: &Pl011) -> Vec<u32> {
        (0..WINDOW_SIZE)
            .step_by(4)
            .map(|offset| u.peek(offset).unwrap())
            .collect()
    }

    /// A register image kept as a hypervisor keeps it: written whole once,
    /// then only [`Pl011::changing_registers`] after each access.
    fn update(image: &mut [u32], u: &Pl011) {
        for (offset, value) in u.changing_registers() {
            image[(offset / 4) as usize] = value;
        }
    }

    #[test]
    fn an_image_kept_by_changing_registers_serves_every_read_while_input_is_empty() {
        let mut u = Pl011::new();
        let mut kept = image(&u);
        // What drivers do: Linux's set-up, earlycon's and U-Boot's polling,
        // interrupts raised and cleared, a transmitted byte.
        let writes = [
            (UARTCR, 0),
            (UARTIBRD, 13),
            (UARTFBRD, 1),
            (UARTLCR_H, 0x70),
            (UARTIFLS, 0x12),
            (UARTIMSC, INT_RX | INT_RT | INT_TX),
            (UARTCR, 0x301),
            (UARTICR, 0x7ff),
            (UARTDR, u32::from(b'x')),
            (UARTICR, INT_TX),
            (0x100, 5),
        ];
        for (offset, value) in writes {
            // Kept as the hypervisor keeps it: rewritten only when the
            // state behind reads moved.
            let before = u.read_state();
            u.write(offset, value);
            if u.read_state() != before {
                update(&mut kept, &u);
            }
            assert!(!u.input_pending());
            // Every word equals what a trapped read returns, and reading
            // changed nothing.
            for offset in (0..WINDOW_SIZE).step_by(4) {
                let before = u.clone();
                assert_eq!(
                    Some(kept[(offset / 4) as usize]),
                    u.read(offset),
                    "{offset:#x}"
                );
                assert_eq!(image(&before), image(&u));
            }
        }
    }

    #[test]
    fn every_register_a_write_changes_moves_the_read_state() {
        // Writes that change what some read returns, each from reset.
        for (offset, value) in [
            (UARTIBRD, 1),
            (UARTFBRD, 1),
            (UARTLCR_H, 0x70),
            (UARTCR, 0x301),
            (UARTIFLS, 0),
            (UARTIMSC, INT_RX),
            (UARTICR, INT_TX),
        ] {
            let mut u = Pl011::new();
            let (before, image_before) = (u.read_state(), image(&u));
            u.write(offset, value);
            assert_ne!(image(&u), image_before, "{offset:#x} changes a read");
            assert_ne!(u.read_state(), before, "{offset:#x}");
        }
        // A transmitted byte with the TX interrupt already latched (every
        // byte of a console write but the first) changes nothing.
        let mut u = Pl011::new();
        let before = u.read_state();
        u.write(UARTDR, u32::from(b'x'));
        assert_eq!(u.read_state(), before);
        // Input arriving and being read moves it.
        assert!(u.receive(b'a'));
        assert_ne!(u.read_state(), before);
        u.read(UARTDR);
        assert_eq!(u.read_state(), before);
    }

    /// Negative control: with input pending a UARTDR read pops the FIFO,
    /// so an image cannot serve it; and an image not updated after a write
    /// shows a stale register.
    #[test]
    fn an_image_cannot_serve_pending_input_nor_skip_an_update() {
        let mut u = Pl011::new();
        let stale = image(&u);
        assert!(u.receive(b'a'));
        assert!(u.input_pending());
        let before = image(&u);
        assert_eq!(u.read(UARTDR), Some(u32::from(b'a')));
        assert_ne!(image(&u), before, "the read had an effect");
        assert!(!u.input_pending());
        u.write(UARTIMSC, INT_TX);
        assert_ne!(
            stale[(UARTMIS / 4) as usize],
            u.read(UARTMIS).unwrap(),
            "MIS moved with IMSC"
        );
    }

    #[test]
    fn fifo_overflow_drops_and_primecell_ids() {
        let mut u = Pl011::new();
        for i in 0..FIFO_SIZE {
            assert!(u.receive(u8::try_from(i).unwrap()));
        }
        assert!(!u.receive(0xff));
        assert_eq!(u.read(UARTPERIPHID0), Some(0x11));
        assert_eq!(u.read(UARTPCELLID3), Some(0xb1));
        assert_eq!(u.read(0x1000), None);
    }
}
