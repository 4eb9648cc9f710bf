//! Turns a VM configuration file into the manifest bytes the hypervisor reads.

use std::path::Path;

use chroma_config::{BoardLimits, CacheMode, RuntimeOptions};

use crate::Result;

/// RAM the hypervisor keeps for itself (image, bundled guest images, heap,
/// page tables): what is left is what `chroma-config` may hand to guests.
/// An estimate on the safe side; the hypervisor checks the real figure at boot.
pub const HYPERVISOR_RAM_RESERVE: u64 = 64 << 20;

/// Facts about the machine the configuration must fit.
#[derive(Clone, Copy, Debug)]
pub struct MachineFacts {
    /// Physical CPUs (QEMU `-smp`).
    pub physical_cpus: u32,
    /// Board RAM in bytes (QEMU `-m`).
    pub ram_bytes: u64,
    /// The board (its architecture decides a VM's default `arch`).
    pub board: crate::Board,
}

/// Run-time choices recorded in the manifest, overriding the file's.
#[derive(Clone, Debug, Default)]
pub struct ManifestOptions {
    /// Run the cache colouring and maintenance paths even where hardware would not need them.
    pub force_cache: bool,
    /// The hypervisor's log level (`error`, `warn`, `info`, `debug`, `trace`).
    pub log_level: Option<String>,
}

/// The manifest's number for a log level name.
pub fn log_level_number(name: &str) -> Result<u8> {
    match name.to_ascii_lowercase().as_str() {
        "error" => Ok(0),
        "warn" => Ok(1),
        "info" => Ok(2),
        "debug" => Ok(3),
        "trace" => Ok(4),
        _ => Err(format!(
            "--log {name:?}: expected error, warn, info, debug or trace"
        )),
    }
}

/// Loads and validates `path`, returning the manifest bytes.
///
/// The error text names the file, the key and the reason.
pub fn manifest(path: &Path, machine: &MachineFacts, options: &ManifestOptions) -> Result<Vec<u8>> {
    manifest_and_uplink(path, machine, options).map(|(bytes, _)| bytes)
}

/// [`manifest`], and whether a switch of the configuration has an uplink
/// (the board then needs its NIC).
pub fn manifest_and_uplink(
    path: &Path,
    machine: &MachineFacts,
    options: &ManifestOptions,
) -> Result<(Vec<u8>, bool)> {
    let guest_ram_bytes = machine.ram_bytes.saturating_sub(HYPERVISOR_RAM_RESERVE);
    let limits = match machine.board {
        crate::Board::QemuVirtAarch64 | crate::Board::Rpi3 | crate::Board::Rpi4 => {
            BoardLimits::aarch64(machine.physical_cpus, guest_ram_bytes)
        }
        crate::Board::QemuVirtArm => BoardLimits::armv7(machine.physical_cpus, guest_ram_bytes),
    };
    let log_level = options
        .log_level
        .as_deref()
        .map(log_level_number)
        .transpose()?;
    let mut config = chroma_config::load(path, &limits).map_err(|error| error.to_string())?;
    if options.force_cache {
        config.cache_mode = CacheMode::Force;
    }
    if let Some(level) = log_level {
        config.log_level = level;
    }
    let runtime = RuntimeOptions::default();
    let uplink = config.switches.iter().any(|switch| switch.uplink);
    if uplink && !machine.board.has_uplink_nic() {
        return Err(format!(
            "{}: a switch has `uplink = true`, but board {} has no NIC for an \
             uplink (QEMU's raspi4b models no Ethernet): drop the uplink or run \
             on qemu-virt-aarch64",
            path.display(),
            machine.board.name()
        ));
    }
    config
        .to_manifest(&runtime)
        .map(|bytes| (bytes, uplink))
        .map_err(|error| error.to_string())
}

/// Parses a size such as `1G`, `64M`, `512K` or `4096` into bytes.
pub fn parse_size(text: &str) -> Result<u64> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last() {
        Some((index, 'K' | 'k')) => (&text[..index], 10),
        Some((index, 'M' | 'm')) => (&text[..index], 20),
        Some((index, 'G' | 'g')) => (&text[..index], 30),
        _ => (text, 0),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("bad size {text:?}: expected a number with an optional K, M or G"))?;
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_have_manifest_numbers() {
        assert_eq!(log_level_number("error"), Ok(0));
        assert_eq!(log_level_number("TRACE"), Ok(4));
        assert!(log_level_number("loud").is_err());
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1T").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}
