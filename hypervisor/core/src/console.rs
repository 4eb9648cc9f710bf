//! The shared physical console: every VM's UART output, each line with its
//! VM's `[name] ` prefix, and the hypervisor's own lines (`chroma: `).
//!
//! Output is line-buffered per VM ([`LineBuffer`]), so lines of different
//! VMs never mix mid-line. Two things are relaxed for the VM with the input
//! focus, whose user is typing at it:
//!
//! - its partial line (a shell prompt) is shown once the VM has been quiet
//!   for a moment ([`Terminal::show_quiet`]), and from then on its bytes go
//!   straight through (the echo of what the user types) until the line ends
//!   or another line interrupts it (which ends the open line first; the next
//!   bytes show the whole line again, with the `[name] ` prefix);
//! - its control sequences reach the terminal intact: ESC sequences (CSI,
//!   OSC, DCS and the rest, parsed as in ECMA-48), backspace, bell and
//!   carriage return.
//!
//! Other VMs' control sequences are dropped whole, never turned into stray
//! characters, as are C0 and C1 controls the console has no use for (VT,
//! FF, NUL, DEL, raw or UTF-8-encoded C1 bytes).
//!
//! Unforgeable lines: every physical line starts with the hypervisor's
//! `chroma: ` or a VM's `[name] `. A guest's line feed ends its line (as
//! CR LF) and the next guest byte comes after a new prefix; the focused VM's
//! bare carriage return is written as CR followed by its prefix again, so
//! even a reader (or a terminal) that splits at CR sees the prefix first.
//! Only the focused VM's ESC sequences are passed; with cursor addressing
//! they can still draw anywhere on the screen, which is what a full-screen
//! program needs, but they never produce a line feed or a carriage return in
//! the byte stream.

/// Longest line kept before it is printed without a newline.
pub const LINE_MAX: usize = 160;
/// Longest escape sequence passed; longer ones are dropped whole.
pub const SEQUENCE_MAX: usize = 32;

/// C0 control characters the console knows.
mod c0 {
    pub const BEL: u8 = 0x07;
    pub const BS: u8 = 0x08;
    pub const HT: u8 = 0x09;
    pub const LF: u8 = 0x0a;
    pub const CR: u8 = 0x0d;
    /// CAN and SUB cancel an escape sequence (ECMA-48 / VT100).
    pub const CAN: u8 = 0x18;
    pub const SUB: u8 = 0x1a;
    pub const ESC: u8 = 0x1b;
    /// The first printable character and DEL, the last byte of 7-bit ASCII.
    pub const SPACE: u8 = 0x20;
    pub const DEL: u8 = 0x7f;
}

/// Bytes inside escape sequences (ECMA-48, 5.4).
mod escape {
    /// After ESC: CSI, and the introducers of control strings (OSC, DCS,
    /// SOS, PM, APC), which end with BEL or ST (ESC \).
    pub const CSI: u8 = b'[';
    pub const STRINGS: [u8; 5] = [b']', b'P', b'X', b'^', b'_'];
    pub const ST_FINAL: u8 = b'\\';
    /// Intermediate bytes: 0x20-0x2f.
    pub const INTERMEDIATE: core::ops::RangeInclusive<u8> = 0x20..=0x2f;
    /// Parameter bytes of a CSI sequence: 0x30-0x3f.
    pub const PARAMETER: core::ops::RangeInclusive<u8> = 0x30..=0x3f;
    /// Final bytes of a CSI sequence: 0x40-0x7e.
    pub const CSI_FINAL: core::ops::RangeInclusive<u8> = 0x40..=0x7e;
    /// Final bytes of an ESC sequence: 0x30-0x7e.
    pub const ESC_FINAL: core::ops::RangeInclusive<u8> = 0x30..=0x7e;
}

/// UTF-8 bytes that matter here: the lead byte of U+0080..U+00BF, and the
/// continuation bytes that make it a C1 control (U+0080..U+009F).
mod utf8 {
    pub const C1_LEAD: u8 = 0xc2;
    pub const C1_CONTINUATIONS: core::ops::RangeInclusive<u8> = 0x80..=0x9f;
    pub const CONTINUATIONS: core::ops::RangeInclusive<u8> = 0x80..=0xbf;
}

/// What a guest's bytes mean to the terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token<'a> {
    /// A printable byte (ASCII, or part of a UTF-8 character) or a tab.
    Text(u8),
    /// Backspace or bell: passed for the focused VM only.
    Control(u8),
    /// A carriage return not followed by a line feed.
    CarriageReturn,
    /// A line feed (or CR LF): the line ends.
    Newline,
    /// A complete escape sequence, ESC included: passed for the focused VM only.
    Sequence(&'a [u8]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum State {
    #[default]
    Ground,
    /// A CR was seen; the next byte decides whether it ends the line.
    CarriageReturn,
    /// 0xc2 was seen: the next byte may make it a C1 control.
    Utf8Lead,
    /// A UTF-8 multi-byte character expects this many continuation bytes.
    Utf8Continuation(u8),
    /// After ESC.
    Escape,
    /// ESC and intermediate bytes, waiting for the final byte.
    EscapeIntermediate,
    /// In a CSI sequence.
    Csi,
    /// In a control string (OSC, DCS, ...).
    String,
    /// ESC inside a control string: `\` ends it (ST).
    StringEscape,
}

/// An incremental parser of a guest's console output into [`Token`]s.
#[derive(Clone, Debug)]
pub struct Parser {
    state: State,
    sequence: [u8; SEQUENCE_MAX],
    sequence_len: usize,
    /// The sequence outgrew `SEQUENCE_MAX`: it is parsed to its end, then dropped.
    overflow: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// A parser at the start of a line.
    pub const fn new() -> Self {
        Self {
            state: State::Ground,
            sequence: [0; SEQUENCE_MAX],
            sequence_len: 0,
            overflow: false,
        }
    }

    /// Feeds one byte; calls `token` for each token it completes (none, one
    /// or two: a held CR or UTF-8 lead, then the byte's own).
    pub fn feed(&mut self, byte: u8, token: &mut impl FnMut(Token<'_>)) {
        match self.state {
            State::Ground => self.ground(byte, token),
            State::Utf8Continuation(left) => {
                if utf8::CONTINUATIONS.contains(&byte) {
                    self.state = if left > 1 {
                        State::Utf8Continuation(left - 1)
                    } else {
                        State::Ground
                    };
                    token(Token::Text(byte));
                } else {
                    // A truncated character: the terminal shows a
                    // replacement; the byte starts afresh.
                    self.state = State::Ground;
                    self.ground(byte, token);
                }
            }
            State::CarriageReturn => {
                self.state = State::Ground;
                if byte == c0::LF {
                    token(Token::Newline);
                } else {
                    token(Token::CarriageReturn);
                    self.ground(byte, token);
                }
            }
            State::Utf8Lead => {
                self.state = State::Ground;
                if utf8::C1_CONTINUATIONS.contains(&byte) {
                    // U+0080..U+009F: a C1 control (NEL, CSI, ...). Dropped.
                } else if utf8::CONTINUATIONS.contains(&byte) {
                    token(Token::Text(utf8::C1_LEAD));
                    token(Token::Text(byte));
                } else {
                    self.ground(byte, token);
                }
            }
            State::Escape => match byte {
                escape::CSI => self.keep(byte, State::Csi),
                b if escape::STRINGS.contains(&b) => self.keep(byte, State::String),
                b if escape::INTERMEDIATE.contains(&b) => {
                    self.keep(byte, State::EscapeIntermediate)
                }
                b if escape::ESC_FINAL.contains(&b) => self.finish(byte, token),
                _ => self.abort(byte, token),
            },
            State::EscapeIntermediate => match byte {
                b if escape::INTERMEDIATE.contains(&b) => {
                    self.keep(byte, State::EscapeIntermediate)
                }
                b if escape::ESC_FINAL.contains(&b) => self.finish(byte, token),
                _ => self.abort(byte, token),
            },
            State::Csi => match byte {
                b if escape::PARAMETER.contains(&b) || escape::INTERMEDIATE.contains(&b) => {
                    self.keep(byte, State::Csi)
                }
                b if escape::CSI_FINAL.contains(&b) => self.finish(byte, token),
                _ => self.abort(byte, token),
            },
            State::String => match byte {
                c0::BEL => self.finish(byte, token),
                c0::ESC => self.keep(byte, State::StringEscape),
                c0::CAN | c0::SUB => self.abort(byte, token),
                _ => self.keep(byte, State::String),
            },
            State::StringEscape => {
                if byte == escape::ST_FINAL {
                    self.finish(byte, token);
                } else {
                    // Not ST: the string is cut short and dropped; the ESC
                    // starts a new sequence.
                    self.start_escape();
                    self.feed(byte, token);
                }
            }
        }
    }

    fn ground(&mut self, byte: u8, token: &mut impl FnMut(Token<'_>)) {
        match byte {
            c0::ESC => self.start_escape(),
            c0::CR => self.state = State::CarriageReturn,
            c0::LF => token(Token::Newline),
            c0::HT => token(Token::Text(byte)),
            c0::BS | c0::BEL => token(Token::Control(byte)),
            utf8::C1_LEAD => self.state = State::Utf8Lead,
            // Other C0 controls (NUL, VT, FF, SO, SI, ...) and DEL.
            b if b < c0::SPACE || b == c0::DEL => {}
            // ASCII.
            b if b < c0::DEL => token(Token::Text(b)),
            // A continuation byte with no lead: raw 8-bit C1 or garbage.
            b if utf8::CONTINUATIONS.contains(&b) => {}
            // Lead bytes of 2-, 3- and 4-byte characters.
            0xc3..=0xdf => self.lead(byte, 1, token),
            0xe0..=0xef => self.lead(byte, 2, token),
            0xf0..=0xf4 => self.lead(byte, 3, token),
            // 0xc0, 0xc1, 0xf5-0xff never appear in UTF-8.
            _ => {}
        }
    }

    fn lead(&mut self, byte: u8, continuations: u8, token: &mut impl FnMut(Token<'_>)) {
        self.state = State::Utf8Continuation(continuations);
        token(Token::Text(byte));
    }

    fn start_escape(&mut self) {
        self.sequence[0] = c0::ESC;
        self.sequence_len = 1;
        self.overflow = false;
        self.state = State::Escape;
    }

    fn keep(&mut self, byte: u8, next: State) {
        match self.sequence.get_mut(self.sequence_len) {
            Some(slot) => {
                *slot = byte;
                self.sequence_len += 1;
            }
            None => self.overflow = true,
        }
        self.state = next;
    }

    fn finish(&mut self, byte: u8, token: &mut impl FnMut(Token<'_>)) {
        self.keep(byte, State::Ground);
        if !self.overflow {
            token(Token::Sequence(&self.sequence[..self.sequence_len]));
        }
        self.sequence_len = 0;
    }

    /// A byte that cannot continue the sequence: the sequence is dropped;
    /// the byte counts on its own unless it cancels (CAN, SUB).
    fn abort(&mut self, byte: u8, token: &mut impl FnMut(Token<'_>)) {
        self.state = State::Ground;
        self.sequence_len = 0;
        if byte != c0::CAN && byte != c0::SUB {
            self.ground(byte, token);
        }
    }
}

/// A line being assembled from a guest's output.
///
/// It holds the line's text and, as received, its control sequences
/// (complete ones only) and bare carriage returns; how they are written
/// depends on the input focus when the line is shown.
#[derive(Clone, Debug)]
pub struct LineBuffer {
    bytes: [u8; LINE_MAX],
    len: usize,
    /// `bytes[..shown]` were written to the terminal already.
    shown: usize,
    parser: Parser,
    /// Counter value when the last byte arrived.
    last_byte_at: u64,
}

impl Default for LineBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBuffer {
    /// An empty line.
    pub const fn new() -> Self {
        Self {
            bytes: [0; LINE_MAX],
            len: 0,
            shown: 0,
            parser: Parser::new(),
            last_byte_at: 0,
        }
    }

    /// Whatever is buffered (text and control sequences as received),
    /// emptying the buffer and forgetting a sequence in progress.
    pub fn take(&mut self) -> &[u8] {
        let len = core::mem::take(&mut self.len);
        self.shown = 0;
        self.parser = Parser::new();
        &self.bytes[..len]
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn room(&self) -> usize {
        LINE_MAX - self.len
    }

    fn append(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn clear(&mut self) {
        self.len = 0;
        self.shown = 0;
    }
}

/// A VM as the terminal sees it.
#[derive(Clone, Copy, Debug)]
pub struct Speaker<'a> {
    /// The VM's index (identifies whose line is open).
    pub index: usize,
    /// Its name, for the `[name] ` prefix.
    pub name: &'a str,
    /// It has the input focus.
    pub focused: bool,
}

/// The state of the shared terminal: whose line is open (written in part,
/// the cursor after it). Every write goes to `out`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Terminal {
    open: Option<usize>,
}

/// What gets written for a stored token.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Render {
    /// With the VM's control sequences (it has the focus).
    Focused,
    /// Text only.
    Plain,
}

const CRLF: &[u8] = b"\r\n";

fn prefix(name: &str, out: &mut impl FnMut(&[u8])) {
    out(b"[");
    out(name.as_bytes());
    out(b"] ");
}

/// Writes stored line bytes the way `render` says.
fn render(name: &str, bytes: &[u8], render: Render, out: &mut impl FnMut(&[u8])) {
    let mut parser = Parser::new();
    for &byte in bytes {
        parser.feed(byte, &mut |token| match (token, render) {
            (Token::Text(b), _) => out(&[b]),
            (Token::Control(b), Render::Focused) => out(&[b]),
            (Token::Sequence(s), Render::Focused) => out(s),
            (Token::CarriageReturn, Render::Focused) => {
                out(b"\r");
                prefix(name, out);
            }
            _ => {}
        });
    }
    // A CR stored at the end of the line is still held by the parser.
    if parser.state == State::CarriageReturn && render == Render::Focused {
        out(b"\r");
        prefix(name, out);
    }
}

/// Writes the part of a line that was on the terminal before another line
/// interrupted it, as its text looks: backspace removes a character, a
/// carriage return starts over; no control sequence is replayed (a cursor
/// position query would be answered twice).
fn replay(bytes: &[u8], out: &mut impl FnMut(&[u8])) {
    let mut plain = [0u8; LINE_MAX];
    let mut len = 0;
    let mut parser = Parser::new();
    for &byte in bytes {
        parser.feed(byte, &mut |token| match token {
            Token::Text(b) => {
                plain[len] = b;
                len += 1;
            }
            Token::Control(c0::BS) => len = len.saturating_sub(1),
            Token::CarriageReturn => len = 0,
            _ => {}
        });
    }
    if parser.state == State::CarriageReturn {
        len = 0;
    }
    out(&plain[..len]);
}

impl Terminal {
    /// No line open.
    pub const fn new() -> Self {
        Self { open: None }
    }

    /// Ends the open line, if any: a line of someone else follows.
    fn close(&mut self, out: &mut impl FnMut(&[u8])) {
        if self.open.take().is_some() {
            out(CRLF);
        }
    }

    /// A hypervisor line is about to be written.
    pub fn hypervisor_line(&mut self, out: &mut impl FnMut(&[u8])) {
        self.close(out);
    }

    /// Writes `vm`'s buffered line from where the terminal stands: the rest
    /// of its open line, or the whole line (prefix, then what was shown
    /// before, as text) after someone else's.
    fn show(&mut self, vm: Speaker<'_>, line: &mut LineBuffer, out: &mut impl FnMut(&[u8])) {
        let mode = if vm.focused {
            Render::Focused
        } else {
            Render::Plain
        };
        if self.open != Some(vm.index) {
            self.close(out);
            prefix(vm.name, out);
            replay(&line.bytes[..line.shown], out);
            self.open = Some(vm.index);
        }
        render(vm.name, &line.bytes[line.shown..line.len], mode, out);
        line.shown = line.len;
    }

    /// Ends `vm`'s line: writes what was not shown and the line end.
    fn end_line(&mut self, vm: Speaker<'_>, line: &mut LineBuffer, out: &mut impl FnMut(&[u8])) {
        self.show(vm, line, out);
        out(CRLF);
        self.open = None;
        line.clear();
    }

    /// A byte from `vm`'s UART at counter value `now`.
    pub fn vm_byte(
        &mut self,
        vm: Speaker<'_>,
        line: &mut LineBuffer,
        byte: u8,
        now: u64,
        out: &mut impl FnMut(&[u8]),
    ) {
        line.last_byte_at = now;
        // Most bytes are printable ASCII or LF between sequences: what the
        // parser makes of them there (one token, still at ground), without
        // moving it out of the line and back, a copy of it each way, on
        // every byte a guest writes.
        if line.parser.state == State::Ground {
            let plain = match byte {
                c0::LF => Some(Token::Newline),
                b if (c0::SPACE..c0::DEL).contains(&b) => Some(Token::Text(b)),
                _ => None,
            };
            if let Some(token) = plain {
                self.token(vm, line, token, out);
                return;
            }
        }
        let mut parser = core::mem::take(&mut line.parser);
        parser.feed(byte, &mut |token| self.token(vm, line, token, out));
        line.parser = parser;
    }

    fn token(
        &mut self,
        vm: Speaker<'_>,
        line: &mut LineBuffer,
        token: Token<'_>,
        out: &mut impl FnMut(&[u8]),
    ) {
        let single;
        let stored: &[u8] = match token {
            Token::Newline => {
                self.end_line(vm, line, out);
                return;
            }
            Token::Text(b) | Token::Control(b) => {
                single = [b];
                &single
            }
            Token::CarriageReturn => b"\r",
            Token::Sequence(sequence) => sequence,
        };
        if line.room() < stored.len() {
            // A full line is printed as it is; the rest follows on the next.
            self.end_line(vm, line, out);
        }
        line.append(stored);
        // The focused VM's open line is written through (the echo of what
        // its user types); other lines wait for their end.
        if vm.focused && self.open == Some(vm.index) {
            self.show(vm, line, out);
        }
    }

    /// Shows the focused VM's partial line (a prompt) once it has printed
    /// nothing for `quiet` counter ticks; a line already on the terminal is
    /// left alone.
    pub fn show_quiet(
        &mut self,
        vm: Speaker<'_>,
        line: &mut LineBuffer,
        now: u64,
        quiet: u64,
        out: &mut impl FnMut(&[u8]),
    ) {
        if vm.focused && line.len > line.shown && now.wrapping_sub(line.last_byte_at) >= quiet {
            self.show(vm, line, out);
        }
    }

    /// Prints `bytes` (from [`LineBuffer::take`]) as a whole line of VM
    /// `name`, control sequences dropped.
    pub fn vm_line(&mut self, name: &str, bytes: &[u8], out: &mut impl FnMut(&[u8])) {
        self.close(out);
        prefix(name, out);
        render(name, bytes, Render::Plain, out);
        out(CRLF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything written, as one byte string.
    #[derive(Default)]
    struct Screen(Vec<u8>);

    impl Screen {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0).into_owned()
        }
    }

    const LINUX: Speaker<'static> = Speaker {
        index: 0,
        name: "linux",
        focused: true,
    };
    const SVC: Speaker<'static> = Speaker {
        index: 1,
        name: "svc",
        focused: false,
    };

    /// Feeds `bytes` from `vm` at time 0.
    fn feed(
        terminal: &mut Terminal,
        vm: Speaker<'_>,
        line: &mut LineBuffer,
        bytes: &[u8],
        screen: &mut Screen,
    ) {
        for &b in bytes {
            terminal.vm_byte(vm, line, b, 0, &mut |o: &[u8]| {
                screen.0.extend_from_slice(o)
            });
        }
    }

    fn hypervisor(terminal: &mut Terminal, text: &str, screen: &mut Screen) {
        terminal.hypervisor_line(&mut |o: &[u8]| screen.0.extend_from_slice(o));
        screen.0.extend_from_slice(text.as_bytes());
        screen.0.extend_from_slice(CRLF);
    }

    fn tokens(bytes: &[u8]) -> Vec<String> {
        let mut parser = Parser::new();
        let mut found = Vec::new();
        for &b in bytes {
            parser.feed(b, &mut |t| found.push(format!("{t:?}")));
        }
        found
    }

    /// The lines a reader of the byte stream sees, split at LF and at CR (a
    /// terminal returns to column 0 at CR), and at VT, FF and NEL, which
    /// terminals take as line feeds, with the harness's rule:
    /// a line starting with `chroma: ` is the hypervisor's.
    fn forged(screen: &[u8], hypervisor_lines: &[&str]) -> Vec<String> {
        String::from_utf8_lossy(screen)
            .split(['\n', '\r', '\u{0b}', '\u{0c}', '\u{85}'])
            .filter(|line| line.starts_with("chroma: ") && !hypervisor_lines.contains(line))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn parses_text_controls_and_sequences() {
        assert_eq!(tokens(b"a\tb"), ["Text(97)", "Text(9)", "Text(98)"]);
        assert_eq!(tokens(b"\r\n"), ["Newline"]);
        assert_eq!(tokens(b"\rx"), ["CarriageReturn", "Text(120)"]);
        assert_eq!(tokens(b"\x1b[6n"), ["Sequence([27, 91, 54, 110])"]);
        assert_eq!(
            tokens(b"\x1b[1;32m"),
            ["Sequence([27, 91, 49, 59, 51, 50, 109])"]
        );
        assert_eq!(
            tokens(b"\x1b]0;title\x07"),
            [format!("Sequence({:?})", b"\x1b]0;title\x07")]
        );
        assert_eq!(
            tokens(b"\x1b]0;t\x1b\\"),
            [format!("Sequence({:?})", b"\x1b]0;t\x1b\\")]
        );
        assert_eq!(
            tokens(b"\x1b(B\x1b7"),
            ["Sequence([27, 40, 66])", "Sequence([27, 55])"]
        );
        assert_eq!(tokens(b"\x08\x07"), ["Control(8)", "Control(7)"]);
        // UTF-8 passes; C1 controls, raw or encoded, and stray bytes do not.
        assert_eq!(tokens("é".as_bytes()), ["Text(195)", "Text(169)"]);
        assert_eq!(tokens("\u{a0}".as_bytes()), ["Text(194)", "Text(160)"]);
        assert!(tokens(b"\xc2\x85\x9b\x85\x00\x0b\x0c\x7f").is_empty());
    }

    #[test]
    fn broken_and_oversized_sequences_vanish_whole() {
        // Cancelled, interrupted by a control, or too long: nothing of them.
        assert_eq!(tokens(b"\x1b[12\x18x"), ["Text(120)"]);
        assert_eq!(tokens(b"\x1b[12\nx"), ["Newline", "Text(120)"]);
        let mut long = b"\x1b]0;".to_vec();
        long.extend_from_slice(&[b'a'; 3 * SEQUENCE_MAX]);
        long.extend_from_slice(b"\x07ok");
        assert_eq!(tokens(&long), ["Text(111)", "Text(107)"]);
        let mut long_csi = b"\x1b[".to_vec();
        long_csi.extend_from_slice(&[b'1'; 2 * SEQUENCE_MAX]);
        long_csi.extend_from_slice(b"mok");
        assert_eq!(tokens(&long_csi), ["Text(111)", "Text(107)"]);
    }

    #[test]
    fn a_background_vm_gets_whole_lines_without_control_sequences() {
        let (mut terminal, mut line, mut screen) =
            (Terminal::new(), LineBuffer::new(), Screen::default());
        feed(
            &mut terminal,
            SVC,
            &mut line,
            b"\x1b[6n/ # \x1b[1;31mred\x1b[0m\rover\x08\x07\r\n",
            &mut screen,
        );
        assert_eq!(screen.text(), "[svc] / # redover\r\n");
    }

    #[test]
    fn the_focused_vm_keeps_its_sequences_and_shows_its_prompt_when_quiet() {
        let (mut terminal, mut line, mut screen) =
            (Terminal::new(), LineBuffer::new(), Screen::default());
        feed(&mut terminal, LINUX, &mut line, b"\x1b[6n/ # ", &mut screen);
        assert_eq!(
            screen.text(),
            "",
            "a line is buffered while the guest writes it"
        );
        terminal.show_quiet(LINUX, &mut line, 5, 10, &mut |o: &[u8]| {
            screen.0.extend_from_slice(o)
        });
        assert_eq!(screen.text(), "", "not quiet long enough");
        terminal.show_quiet(LINUX, &mut line, 10, 10, &mut |o: &[u8]| {
            screen.0.extend_from_slice(o)
        });
        assert_eq!(screen.text(), "[linux] \x1b[6n/ # ");
        // The echo of typed keys goes straight through, backspace included.
        feed(
            &mut terminal,
            LINUX,
            &mut line,
            b"lx\x08 \x08s",
            &mut screen,
        );
        assert_eq!(screen.text(), "[linux] \x1b[6n/ # lx\x08 \x08s");
        feed(&mut terminal, LINUX, &mut line, b"\r\n", &mut screen);
        assert_eq!(screen.text(), "[linux] \x1b[6n/ # lx\x08 \x08s\r\n");
        // A bare CR (the shell redrawing its line) brings the prefix back.
        feed(&mut terminal, LINUX, &mut line, b"ab\rcd\r\n", &mut screen);
        assert!(
            screen.text().ends_with("[linux] ab\r[linux] cd\r\n"),
            "{:?}",
            screen.text()
        );
    }

    #[test]
    fn another_line_ends_the_open_line_and_the_prompt_comes_back_with_new_bytes() {
        let (mut terminal, mut screen) = (Terminal::new(), Screen::default());
        let (mut linux, mut svc) = (LineBuffer::new(), LineBuffer::new());
        feed(
            &mut terminal,
            LINUX,
            &mut linux,
            b"\x1b[6n/ # ",
            &mut screen,
        );
        terminal.show_quiet(LINUX, &mut linux, 10, 10, &mut |o: &[u8]| {
            screen.0.extend_from_slice(o)
        });
        feed(&mut terminal, LINUX, &mut linux, b"ec", &mut screen);
        feed(&mut terminal, SVC, &mut svc, b"svc: up\n", &mut screen);
        hypervisor(&mut terminal, "chroma: hello", &mut screen);
        // Quiet without new bytes: the line is not written again.
        terminal.show_quiet(LINUX, &mut linux, 100, 10, &mut |o: &[u8]| {
            screen.0.extend_from_slice(o)
        });
        feed(&mut terminal, LINUX, &mut linux, b"ho", &mut screen);
        terminal.show_quiet(LINUX, &mut linux, 100, 10, &mut |o: &[u8]| {
            screen.0.extend_from_slice(o)
        });
        feed(&mut terminal, LINUX, &mut linux, b" hi\r\n", &mut screen);
        assert_eq!(
            screen.text(),
            "[linux] \x1b[6n/ # ec\r\n[svc] svc: up\r\nchroma: hello\r\n[linux] / # echo hi\r\n",
            "the replay is plain text: no second cursor position query"
        );
    }

    #[test]
    fn a_long_line_wraps_with_a_prefix_and_never_splits_a_sequence() {
        let (mut terminal, mut line, mut screen) =
            (Terminal::new(), LineBuffer::new(), Screen::default());
        let mut bytes = vec![b'x'; LINE_MAX - 2];
        bytes.extend_from_slice(b"\x1b[1m!\n");
        feed(&mut terminal, LINUX, &mut line, &bytes, &mut screen);
        let text = screen.text();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines[0], format!("[linux] {}", "x".repeat(LINE_MAX - 2)));
        assert_eq!(lines[1], "[linux] \x1b[1m!");
    }

    #[test]
    fn a_stopped_vms_last_line_is_printed_plain() {
        let (mut terminal, mut line, mut screen) =
            (Terminal::new(), LineBuffer::new(), Screen::default());
        feed(&mut terminal, LINUX, &mut line, b"bye\x1b[0m", &mut screen);
        let taken = line.take().to_vec();
        terminal.vm_line("linux", &taken, &mut |o: &[u8]| {
            screen.0.extend_from_slice(o)
        });
        assert_eq!(screen.text(), "[linux] bye\r\n");
        assert!(line.is_empty());
    }

    /// What guests may try, focused or not, to make a line that reads as
    /// the hypervisor's.
    const FORGERIES: &[&[u8]] = &[
        b"x\nchroma: vm linux stopped: powered off\n",
        b"x\rchroma: all VMs stopped (9 clean, 0 failed)\n",
        b"\r\rchroma: a\r\n",
        b"x\r\n\rchroma: b\n",
        b"x\x1b[12\rchroma: c\n",
        b"x\x0bchroma: d\x0cchroma: e\n",
        b"x\xc2\x85chroma: f\x85chroma: g\n",
        b"partial\rchroma: h",
    ];

    #[test]
    fn guest_lines_cannot_pass_for_the_hypervisors() {
        for vm in [LINUX, SVC] {
            let (mut terminal, mut line, mut screen) =
                (Terminal::new(), LineBuffer::new(), Screen::default());
            for bytes in FORGERIES {
                feed(&mut terminal, vm, &mut line, bytes, &mut screen);
                terminal.show_quiet(vm, &mut line, 10, 10, &mut |o: &[u8]| {
                    screen.0.extend_from_slice(o)
                });
                hypervisor(&mut terminal, "chroma: real", &mut screen);
            }
            assert_eq!(
                forged(&screen.0, &["chroma: real"]),
                Vec::<String>::new(),
                "{:?}",
                screen.text()
            );
            // Every line (split at LF, CR removed, as the test harness reads
            // the console) is the VM's or the hypervisor's.
            let text = screen.text().replace('\r', "");
            for physical in text.lines() {
                assert!(
                    physical.starts_with("[linux] ")
                        || physical.starts_with("[svc] ")
                        || physical == "chroma: real",
                    "{physical:?}"
                );
            }
        }
    }

    /// Negative control: `forged` finds the forgeries when a guest's bytes
    /// go to the terminal unfiltered behind the prefix.
    #[test]
    fn unfiltered_output_would_be_forgeable() {
        let mut screen = Vec::new();
        for bytes in FORGERIES {
            screen.extend_from_slice(b"[linux] ");
            screen.extend_from_slice(bytes);
        }
        assert!(
            forged(&screen, &[]).len() >= FORGERIES.len(),
            "{:?}",
            forged(&screen, &[])
        );
    }
}
