//! The configuration parser on arbitrary TOML text: Ok or a clean error,
//! never a panic; a configuration it accepts packs into a manifest that
//! parses back with the same VMs and switches.

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use chroma_config::{parse, BoardLimits, ErrorKind, RuntimeOptions};
use chroma_manifest::Manifest;

use crate::Outcome;

const BOARD: BoardLimits = BoardLimits::aarch64(4, 1 << 30);

/// A directory with `images/Image` (a valid arm64 Image header, 1 MiB
/// loaded), `images/initrd` and `images/not-an-image`, made once per process.
fn fixture() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("chroma-fuzz-config-{}", std::process::id()));
        let images = dir.join("images");
        fs::create_dir_all(&images).expect("fixture directory");
        let mut image = vec![0u8; 4096];
        image[16..24].copy_from_slice(&(1u64 << 20).to_le_bytes());
        image[0x38..0x3c].copy_from_slice(b"ARM\x64");
        fs::write(images.join("Image"), image).expect("fixture kernel");
        fs::write(images.join("initrd"), vec![7u8; 5000]).expect("fixture initrd");
        fs::write(images.join("not-an-image"), vec![0u8; 4096]).expect("fixture file");
        dir.join("chroma.toml")
    })
}

/// A key and values to try for it.
type Key = (&'static str, &'static [&'static str]);

/// Keys of each table, with values near and across their limits.
const SECTIONS: [(&str, &[Key]); 4] = [
    (
        "[hypervisor]",
        &[
            ("cache_mode", &["\"force\"", "\"auto\"", "\"never\"", "1"]),
            (
                "log_level",
                &["\"debug\"", "\"trace\"", "\"error\"", "\"x\"", "3"],
            ),
        ],
    ),
    (
        "[[switch]]",
        &[
            (
                "name",
                &[
                    "\"lan0\"",
                    "\"lan1\"",
                    "\"\"",
                    "\"a b\"",
                    "\"seventeen-chars-x\"",
                ],
            ),
            ("uplink", &["true", "false", "1"]),
        ],
    ),
    (
        "[[vm]]",
        &[
            (
                "name",
                &["\"probe\"", "\"second\"", "\"\"", "\"lan0\"", "\"\\u0000\""],
            ),
            (
                "kernel",
                &[
                    "\"images/Image\"",
                    "\"images/not-an-image\"",
                    "\"images/initrd\"",
                    "\"missing\"",
                    "\"images\"",
                ],
            ),
            (
                "initrd",
                &["\"images/initrd\"", "\"images/Image\"", "\"missing\""],
            ),
            ("cmdline", &["\"console=ttyAMA0\"", "\"\"", "\"a\\u0000b\""]),
            (
                "memory",
                &[
                    "\"64M\"",
                    "\"1G\"",
                    "\"0\"",
                    "134217728",
                    "\"3M\"",
                    "\"2048G\"",
                    "-1",
                    "\"64Q\"",
                    "\"18446744073709551615\"",
                ],
            ),
            (
                "memory_base",
                &[
                    "0x80000000",
                    "0",
                    "0x08000000",
                    "0xffffffffffe00000",
                    "1099511627776",
                    "0x40100000",
                    "-2",
                ],
            ),
            ("vcpus", &["1", "2", "4", "0", "9", "-1", "4294967297"]),
            (
                "cpus",
                &[
                    "[0]",
                    "[1, 0]",
                    "[5]",
                    "[]",
                    "[0, 0, 0, 0]",
                    "[256]",
                    "[-1]",
                ],
            ),
        ],
    ),
    (
        "[[vm.net]]",
        &[
            ("switch", &["\"lan0\"", "\"lan1\"", "\"nope\"", "0"]),
            (
                "mac",
                &[
                    "\"52:54:00:12:34:01\"",
                    "\"52:54:00:12:34:02\"",
                    "\"ff:ff:ff:ff:ff:ff\"",
                    "\"01:00:00:00:00:00\"",
                    "\"zz\"",
                    "\"52:54:00:12:34\"",
                ],
            ),
        ],
    ),
];

/// A configuration generated from `data`: tables and keys from
/// [`SECTIONS`], values from their lists (or a fuzz string), so most
/// inputs are valid TOML and reach chroma's checks.
fn generate(data: &[u8]) -> String {
    let mut text = String::new();
    // The table keys go to (an index into SECTIONS), and the keys set in it.
    let mut table: Option<usize> = None;
    let mut set: Vec<&str> = Vec::new();
    let (mut hypervisor, mut vm) = (false, false);
    for pair in data.chunks_exact(2) {
        let (a, b) = (pair[0], pair[1]);
        let section = usize::from(a >> 6);
        let (header, keys) = SECTIONS[section];
        let (key, values) = keys[usize::from(a & 0x1f) % keys.len()];
        // A new table when asked, or when the key belongs to another one or
        // is set already (TOML refuses a duplicate key); `[hypervisor]`
        // at most once, `[[vm.net]]` after a `[[vm]]`.
        if a & 0x20 != 0 || table != Some(section) || set.contains(&key) {
            if section == 0 && hypervisor || section == 3 && !vm {
                continue;
            }
            hypervisor |= section == 0;
            vm |= section == 2;
            text.push_str(header);
            text.push('\n');
            table = Some(section);
            set.clear();
        }
        set.push(key);
        let value = values[usize::from(b) % values.len()];
        text.push_str(&format!("{key} = {value}\n"));
    }
    text
}

/// Exercised when the text got past the TOML parser into chroma's schema
/// and checks. First byte even: the rest is the text; odd: it is generated.
pub fn fuzz(data: &[u8]) -> Outcome {
    let Some((&mode, rest)) = data.split_first() else {
        return Outcome::Rejected;
    };
    let generated;
    let text = if mode & 1 == 1 {
        generated = generate(rest);
        generated.as_str()
    } else {
        match std::str::from_utf8(rest) {
            Ok(text) => text,
            Err(_) => return Outcome::Rejected,
        }
    };
    let file = fixture();
    let config = match parse(text, file, &BOARD) {
        Ok(config) => config,
        Err(error) => {
            // The message renders whatever the error.
            let _ = error.to_string();
            // A syntax error with no key is the TOML parser's refusal; one
            // with a key went through chroma's schema and key naming.
            return if matches!(error.kind, ErrorKind::Syntax { .. }) && error.key.is_empty() {
                Outcome::Rejected
            } else {
                Outcome::Exercised
            };
        }
    };
    let bytes = match config.to_manifest(&RuntimeOptions::default()) {
        Ok(bytes) => bytes,
        Err(error) => panic!("accepted configuration does not pack: {error}"),
    };
    let manifest = Manifest::parse(&bytes).expect("packed manifest parses");
    assert_eq!(manifest.vm_count(), config.vms.len());
    assert_eq!(manifest.switch_count(), config.switches.len());
    for (spec, vm) in manifest.vms().zip(&config.vms) {
        assert_eq!(spec.name, vm.name);
        assert_eq!(spec.memory_base, vm.memory_base);
        assert_eq!(spec.memory_bytes, vm.memory_bytes);
        assert_eq!(spec.vcpus, vm.vcpus);
        assert_eq!(spec.cmdline, vm.cmdline);
        assert_eq!(spec.nets.len(), vm.nets.len());
    }
    Outcome::Exercised
}
