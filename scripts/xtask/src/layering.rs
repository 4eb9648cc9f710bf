//! The layering rule for the hypervisor binary, checked on its source:
//! `hypervisor/src` is wiring. System-register access, inline assembly,
//! exception-class decoding and raw guest-register indices live in
//! `hypervisor/arch`; exit dispatch and the run loop's decisions in the
//! portable `hypervisor/core`. The unit tests below run this check on the
//! real tree (and show it catching each kind of line).

use std::path::Path;

/// What a line must not contain, and why.
const FORBIDDEN: [(&str, &str); 7] = [
    ("sysreg::", "system-register access (use an arch function)"),
    ("asm!", "inline assembly"),
    ("exception_class", "exception-class decoding"),
    ("ec::", "exception-class constants"),
    (".x[", "a raw guest register index"),
    ("sysregs[", "a raw saved-register index"),
    ("registers.pc", "the guest PC outside the arch seam"),
];

/// One line that breaks the rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// File name.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What it does.
    pub what: &'static str,
}

/// The lines of `source` (file `file`) that break the rule. Comments are
/// not code and are skipped.
pub fn violations(file: &str, source: &str) -> Vec<Violation> {
    let mut found = Vec::new();
    for (index, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (pattern, what) in FORBIDDEN {
            if contains_token(code, pattern) {
                found.push(Violation {
                    file: file.to_owned(),
                    line: index + 1,
                    what,
                });
            }
        }
    }
    found
}

/// Whether `pattern` occurs in `code` not as the tail of a longer name
/// (`ec::` in `Vec::` is not exception-class code).
fn contains_token(code: &str, pattern: &str) -> bool {
    let starts_a_name = pattern.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    code.match_indices(pattern).any(|(at, _)| {
        !starts_a_name
            || !code[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Every violation under `dir` (the binary's `src`).
pub fn check_tree(dir: &Path) -> std::io::Result<Vec<Violation>> {
    let mut found = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.extension().is_some_and(|e| e == "rs") {
            let source = std::fs::read_to_string(&path)?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            found.extend(violations(&name, &source));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hypervisor_binary_is_wiring_only() {
        let src = crate::workspace_root().join("hypervisor").join("src");
        let found = check_tree(&src).expect("hypervisor/src is readable");
        assert!(
            found.is_empty(),
            "hypervisor/src reaches past the arch seam:\n{found:#?}"
        );
    }

    #[test]
    fn each_kind_of_line_is_caught_and_comments_are_not() {
        // Negative control: the lines hypervisor/src held before the core
        // became portable.
        let old = "\
            let esr_value = sysreg::esr_el2();\n\
            unsafe { core::arch::asm!(\"hlt #0xf000\") };\n\
            let class = esr::exception_class(esr);\n\
            registers.x[0] = result;\n\
            let control = v.context.sysregs[25];\n\
            registers.pc += 4;\n\
            // a comment may say sysreg:: and asm!\n\
            let v: Vec<u8> = Vec::new();\n";
        let found = violations("old.rs", old);
        let lines: Vec<usize> = found.iter().map(|v| v.line).collect();
        assert_eq!(lines, [1, 2, 3, 4, 5, 6], "{found:#?}");
        assert_eq!(found[1].what, "inline assembly");
    }
}
