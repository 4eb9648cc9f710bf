//! A test helper for every crate's error types (issue 10): `Display` must
//! read as a message for a person, not as `Debug` output.

/// Whether `display` reads as a message for a person rather than `Debug`
/// output: not empty, no braces, and not naming the variant in CamelCase
/// (the first word of `debug`, the value's `Debug` text).
pub fn reads_as_message(display: &str, debug: &str) -> bool {
    let variant: String = debug.chars().take_while(|c| c.is_alphanumeric()).collect();
    !display.trim().is_empty()
        && !display.contains(['{', '}'])
        && (variant.is_empty() || !display.contains(variant.as_str()))
}

/// Checks each value's `Display`, and that its `Debug` fails the same check
/// (the negative control: the check can fail).
pub fn check_all<E: core::fmt::Display + core::fmt::Debug>(values: &[E]) {
    for value in values {
        let display = format!("{value}");
        let debug = format!("{value:?}");
        assert!(
            reads_as_message(&display, &debug),
            "{debug} displays as {display:?}"
        );
        assert!(
            !reads_as_message(&debug, &debug),
            "the check accepts Debug output {debug}"
        );
    }
}
