//! Reading `/chosen/bootargs` words: `prefix.flag` and `prefix.key=value`.

/// The words of a command line, split on ASCII whitespace.
#[derive(Clone, Copy, Debug)]
pub struct BootArgs<'a> {
    line: &'a str,
}

impl<'a> BootArgs<'a> {
    /// Wraps a command line.
    pub fn new(line: &'a str) -> Self {
        Self { line }
    }

    /// True if the word `flag` appears on its own.
    pub fn flag(&self, flag: &str) -> bool {
        self.line.split_ascii_whitespace().any(|word| word == flag)
    }

    /// The value of the last `key=value` word for `key`.
    pub fn value(&self, key: &str) -> Option<&'a str> {
        self.line
            .split_ascii_whitespace()
            .filter_map(|word| word.strip_prefix(key)?.strip_prefix('='))
            .next_back()
    }

    /// The value of `key=value` as a number: decimal, or hex with `0x`.
    pub fn number(&self, key: &str) -> Option<u64> {
        parse_number(self.value(key)?)
    }
}

/// Parses a decimal or `0x`-prefixed hexadecimal number (underscores allowed).
pub fn parse_number(text: &str) -> Option<u64> {
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    let mut value: u64 = 0;
    let mut any = false;
    for character in digits.chars().filter(|&character| character != '_') {
        let digit = character.to_digit(radix)?;
        value = value
            .checked_mul(u64::from(radix))?
            .checked_add(u64::from(digit))?;
        any = true;
    }
    any.then_some(value)
}
