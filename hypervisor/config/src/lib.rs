//! VM configuration (TOML) parsing and validation, host side.
//!
//! [`load`] reads a configuration file, checks everything that can be
//! checked before boot (names, sizes, memory layout against the board,
//! vCPUs and pinning, the kernel and initrd files, switches and MACs) and
//! returns a [`Config`]; [`Config::to_manifest`] packs it with the guest
//! images into the binary manifest (`chroma-manifest`) that the hypervisor
//! reads at boot. Every refusal names the file, the key and the reason:
//!
//! ```text
//! configs/default.toml: vm[1] ("probe").memory: "64Q" is not a size (use 64M, 1G, ...)
//! ```
//!
//! The format (paths are relative to the configuration file):
//!
//! ```toml
//! [hypervisor]                # optional
//! cache_mode = "auto"         # "auto" | "force"
//! log_level = "info"          # error | warn | info | debug | trace
//!
//! [[switch]]
//! name = "lan0"
//! uplink = true               # optional, default false; at most one switch
//!
//! [[vm]]
//! name = "probe"              # unique, [A-Za-z0-9_-]{1,16}
//! arch = "aarch64"            # optional: "aarch64" | "aarch32"; default: the board's own
//!                              # (an ARMv7 board runs "aarch32" only)
//! kernel = "path/to/Image"    # arm64 Image ("ARM\x64" at 0x38); aarch32: zImage
//! initrd = "path/to/initrd"   # optional
//! cmdline = "console=ttyAMA0" # optional
//! memory = "64M"              # K/M/G suffix or bytes; multiple of 2 MiB
//! memory_base = 0x40000000    # optional; at or above 0x4000_0000, below 1 TiB
//! vcpus = 2                   # optional (default 1), 1..=8, <= physical CPUs
//! cpus = [0, 1]               # optional pinning of vCPU i to CPU cpus[i]
//! [[vm.net]]                  # zero or more
//! switch = "lan0"
//! mac = "52:54:00:12:34:01"   # optional; derived from the VM name otherwise
//! trusted = false             # optional; true lifts port security (router VM)
//! ring = "packed"             # optional: "packed" | "split"; default: [`DEFAULT_RING`]
//!                              # "packed" offers VIRTIO_F_RING_PACKED too; a driver that
//!                              # does not take it (virtio-drivers) keeps the split ring
//! tso = true                  # optional; false: no TCP segmentation offload
//!                              # (HOST/GUEST_TSO4/6, ECN) offered, to compare
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// No panic on a path a guest can reach (issue 10); tests may unwrap (clippy.toml).
// Where `clippy::indexing_slicing` is denied, and why: "Panics" in chroma-core's docs.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

mod error;
mod raw;
mod values;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

pub use chroma_manifest::{CacheMode, GuestArch, RingLayout};
use chroma_manifest::{
    ManifestBuilder, NetSpec, VmInput, DEFAULT_MEMORY_BASE, MAX_VCPUS, MEMORY_ALIGN,
};
pub use error::{ConfigError, ErrorKind};
pub use values::{derive_mac, format_mac, is_valid_name, parse_mac, parse_size, ImageHeader};

use raw::{RawArch, RawCacheMode, RawConfig, RawLogLevel, RawSize, RawVm};

/// Guest RAM may not start below this IPA: QEMU virt's devices (GIC, UART,
/// virtio-mmio, ...) live in the window under it.
pub const DEVICE_WINDOW_END: u64 = 0x4000_0000;
/// Guest RAM must end at or below this IPA (40-bit IPA space, 1 TiB).
pub const IPA_LIMIT: u64 = 1 << 40;
/// Room reserved in guest RAM for the generated device tree.
pub const DTB_RESERVE: u64 = 2 << 20;
/// The virtqueue layout a `[[vm.net]]` without `ring` offers.
pub const DEFAULT_RING: RingLayout = RingLayout::Packed;

/// What the target board can give guests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoardLimits {
    /// Physical CPUs the hypervisor brings up.
    pub physical_cpus: u32,
    /// RAM left for guests once the hypervisor has taken its share.
    pub guest_ram_bytes: u64,
    /// The execution state of a VM without `arch`: the hypervisor's own
    /// (AArch64 on an AArch64 board, AArch32 on an ARMv7 board).
    pub native_arch: GuestArch,
    /// Whether the board's hypervisor runs AArch64 guests (an ARMv7 one
    /// cannot: it has no AArch64 state).
    pub aarch64_guests: bool,
}

impl BoardLimits {
    /// An AArch64 board with `physical_cpus` and `guest_ram_bytes`.
    pub const fn aarch64(physical_cpus: u32, guest_ram_bytes: u64) -> Self {
        Self {
            physical_cpus,
            guest_ram_bytes,
            native_arch: GuestArch::Aarch64,
            aarch64_guests: true,
        }
    }

    /// An ARMv7-A board (AArch32 guests only).
    pub const fn armv7(physical_cpus: u32, guest_ram_bytes: u64) -> Self {
        Self {
            physical_cpus,
            guest_ram_bytes,
            native_arch: GuestArch::Aarch32,
            aarch64_guests: false,
        }
    }
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// Cache colouring and maintenance policy.
    pub cache_mode: CacheMode,
    /// Log level, 0 = error .. 4 = trace.
    pub log_level: u8,
    /// The virtual switches, in file order (a [`Net::switch_index`] indexes this).
    pub switches: Vec<Switch>,
    /// The VMs, in file order.
    pub vms: Vec<Vm>,
}

/// A validated `[[switch]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switch {
    /// Its name.
    pub name: String,
    /// Whether the board's NIC is bridged into it.
    pub uplink: bool,
}

/// A validated `[[vm]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vm {
    /// Its name.
    pub name: String,
    /// The execution state its kernel runs in (`arch`, default AArch64).
    pub arch: GuestArch,
    /// The kernel file (resolved against the configuration's directory).
    pub kernel: PathBuf,
    /// What the kernel's Image header says.
    pub kernel_header: ImageHeader,
    /// The initrd file, if any.
    pub initrd: Option<PathBuf>,
    /// The initrd's size when it was checked.
    pub initrd_bytes: u64,
    /// Kernel command line (empty if not given).
    pub cmdline: String,
    /// Guest-physical base of RAM.
    pub memory_base: u64,
    /// RAM size in bytes.
    pub memory_bytes: u64,
    /// vCPU count.
    pub vcpus: u32,
    /// Physical CPU of each vCPU (`vcpus` entries).
    pub cpus: Vec<u8>,
    /// NICs in device order.
    pub nets: Vec<Net>,
}

/// A validated `[[vm.net]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Net {
    /// Index into [`Config::switches`].
    pub switch_index: u32,
    /// The MAC address (given, or derived with [`derive_mac`]).
    pub mac: [u8; 6],
    /// Port security lifted: the NIC may send from any source MAC and
    /// receives unicast for any (a router VM). Default false.
    pub trusted: bool,
    /// The virtqueue layouts the device offers (`ring`; default
    /// [`DEFAULT_RING`]).
    pub ring: RingLayout,
    /// TCP segmentation offload offered (`tso`; default true).
    pub tso: bool,
}

/// Options that come from the command line of the host tool, not the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Console key that starts a hypervisor command (0x01 = Ctrl-A).
    pub console_switch_key: u8,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            console_switch_key: 0x01,
        }
    }
}

/// Reads and validates the configuration at `path` for a board with these limits.
pub fn load(path: &Path, board: &BoardLimits) -> Result<Config, ConfigError> {
    let text = fs::read_to_string(path).map_err(|error| ConfigError {
        file: path.to_owned(),
        key: String::new(),
        kind: ErrorKind::ReadConfig {
            reason: error.to_string(),
        },
    })?;
    parse(&text, path, board)
}

/// Validates configuration `text` as if read from `file` (relative image
/// paths resolve against `file`'s directory; the images must exist).
pub fn parse(text: &str, file: &Path, board: &BoardLimits) -> Result<Config, ConfigError> {
    let checker = Checker { file, board };
    let raw = checker.deserialize(text)?;
    checker.check(raw)
}

impl Config {
    /// Packs the configuration and the guest images into a manifest,
    /// reading the kernel and initrd files again (and checking them again,
    /// in case they changed since [`load`]).
    pub fn to_manifest(&self, runtime: &RuntimeOptions) -> Result<Vec<u8>, ConfigError> {
        let error = |key: String, kind| ConfigError {
            file: self.file.clone(),
            key,
            kind,
        };
        let read = |key: &str, path: &Path| {
            fs::read(path).map_err(|io| {
                error(
                    key.to_owned(),
                    ErrorKind::ReadImage {
                        path: path.to_owned(),
                        reason: io.to_string(),
                    },
                )
            })
        };
        let mut images = Vec::new();
        for (index, vm) in self.vms.iter().enumerate() {
            let key = vm_key(index, &vm.name);
            let kernel = read(&format!("{key}.kernel"), &vm.kernel)?;
            let length = u64::try_from(kernel.len()).unwrap_or(u64::MAX);
            if ImageHeader::parse(&kernel, length).map(|header| header.arch) != Some(vm.arch) {
                return Err(error(
                    format!("{key}.kernel"),
                    ErrorKind::NotAnImage {
                        path: vm.kernel.clone(),
                        arch: vm.arch,
                    },
                ));
            }
            let initrd = match &vm.initrd {
                Some(path) => Some(read(&format!("{key}.initrd"), path)?),
                None => None,
            };
            let nets: Vec<NetSpec> = vm
                .nets
                .iter()
                .map(|net| NetSpec {
                    switch_index: net.switch_index,
                    mac: net.mac,
                    trusted: net.trusted,
                    ring: net.ring,
                    tso: net.tso,
                })
                .collect();
            images.push((kernel, initrd, nets));
        }
        let mut builder = ManifestBuilder::new(chroma_manifest::Options {
            cache_mode: self.cache_mode,
            log_level: self.log_level,
            console_switch_key: runtime.console_switch_key,
        });
        for switch in &self.switches {
            builder.add_switch(&switch.name, switch.uplink);
        }
        for (vm, (kernel, initrd, nets)) in self.vms.iter().zip(&images) {
            let mut cpu_affinity = [0u8; MAX_VCPUS];
            for (slot, &cpu) in cpu_affinity.iter_mut().zip(&vm.cpus) {
                *slot = cpu;
            }
            builder.add_vm(VmInput {
                name: &vm.name,
                memory_base: vm.memory_base,
                memory_bytes: vm.memory_bytes,
                vcpus: vm.vcpus,
                cpu_affinity,
                arch: vm.arch,
                kernel,
                initrd: initrd.as_deref(),
                cmdline: &vm.cmdline,
                nets,
            });
        }
        builder
            .build()
            .map_err(|reason| error(String::new(), ErrorKind::Manifest { reason }))
    }
}

/// `vm[1] ("probe")`.
fn vm_key(index: usize, name: &str) -> String {
    format!("vm[{index}] ({name:?})")
}

/// `switch[0] ("lan0")`.
fn switch_key(index: usize, name: &str) -> String {
    format!("switch[{index}] ({name:?})")
}

/// Adds the record's name to a serde path, `vm[1].foo` -> `vm[1] ("probe").foo`,
/// so shape errors read like the validation errors. `text` parsed as TOML
/// already (only its shape was wrong).
fn name_key(text: &str, path: &str) -> String {
    let Some((table, rest)) = path.split_once('[') else {
        return path.to_owned();
    };
    let Some((index, rest)) = rest.split_once(']') else {
        return path.to_owned();
    };
    let name = text.parse::<toml::Table>().ok().and_then(|document| {
        let index: usize = index.parse().ok()?;
        let record = document.get(table)?.as_array()?.get(index)?;
        record.get("name")?.as_str().map(str::to_owned)
    });
    match name {
        Some(name) if table == "vm" || table == "switch" => {
            format!("{table}[{index}] ({name:?}){rest}")
        }
        _ => path.to_owned(),
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count().saturating_add(1);
    let column = before
        .rfind('\n')
        .map_or(before.len(), |newline| {
            before.len().saturating_sub(newline).saturating_sub(1)
        })
        .saturating_add(1);
    (line, column)
}

/// Rounds `value` up to a multiple of `align` (a power of two).
fn align_up(value: u64, align: u64) -> Option<u64> {
    value.checked_add(align - 1).map(|v| v & !(align - 1))
}

/// Validation state: where errors point, and what the board allows.
struct Checker<'a> {
    file: &'a Path,
    board: &'a BoardLimits,
}

impl Checker<'_> {
    fn error(&self, key: impl Into<String>, kind: ErrorKind) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            key: key.into(),
            kind,
        }
    }

    /// TOML syntax and shape (unknown keys, wrong types), with the key path.
    fn deserialize(&self, text: &str) -> Result<RawConfig, ConfigError> {
        let syntax = |error: &toml::de::Error, key: String| {
            let (line, column) = line_column(text, error.span().map_or(0, |span| span.start));
            self.error(
                key,
                ErrorKind::Syntax {
                    message: error.message().trim().to_owned(),
                    line,
                    column,
                },
            )
        };
        let deserializer =
            toml::Deserializer::parse(text).map_err(|error| syntax(&error, String::new()))?;
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let path = error.path().to_string();
            let key = if path == "." {
                String::new()
            } else {
                name_key(text, &path)
            };
            syntax(error.inner(), key)
        })
    }

    fn check(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let cache_mode = match raw.hypervisor.cache_mode {
            None | Some(RawCacheMode::Auto) => CacheMode::Auto,
            Some(RawCacheMode::Force) => CacheMode::Force,
        };
        let log_level = match raw.hypervisor.log_level.unwrap_or(RawLogLevel::Info) {
            RawLogLevel::Error => 0,
            RawLogLevel::Warn => 1,
            RawLogLevel::Info => 2,
            RawLogLevel::Debug => 3,
            RawLogLevel::Trace => 4,
        };

        // Switches: valid unique names, at most one uplink.
        let mut switches = Vec::new();
        let mut switch_index: HashMap<&str, usize> = HashMap::new();
        let mut uplink: Option<usize> = None;
        for (index, switch) in raw.switch.iter().enumerate() {
            let key = switch_key(index, &switch.name);
            if !is_valid_name(&switch.name) {
                return Err(self.error(
                    format!("{key}.name"),
                    ErrorKind::BadName {
                        name: switch.name.clone(),
                    },
                ));
            }
            if let Some(&first) = switch_index.get(switch.name.as_str()) {
                return Err(self.error(
                    format!("{key}.name"),
                    ErrorKind::DuplicateName {
                        name: switch.name.clone(),
                        first: switch_key(first, &switch.name),
                    },
                ));
            }
            switch_index.insert(&switch.name, index);
            if switch.uplink {
                if let Some(first) = uplink {
                    let first_name = raw.switch.get(first).map_or("", |s| s.name.as_str());
                    return Err(self.error(
                        format!("{key}.uplink"),
                        ErrorKind::TwoUplinks {
                            first: switch_key(first, first_name),
                        },
                    ));
                }
                uplink = Some(index);
            }
            switches.push(Switch {
                name: switch.name.clone(),
                uplink: switch.uplink,
            });
        }

        if raw.vm.is_empty() {
            return Err(self.error("vm", ErrorKind::NoVms));
        }
        let mut vms: Vec<Vm> = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut macs: HashMap<[u8; 6], String> = HashMap::new();
        let mut total_memory: u64 = 0;
        for (index, raw_vm) in raw.vm.iter().enumerate() {
            let key = vm_key(index, &raw_vm.name);
            if !is_valid_name(&raw_vm.name) {
                return Err(self.error(
                    format!("{key}.name"),
                    ErrorKind::BadName {
                        name: raw_vm.name.clone(),
                    },
                ));
            }
            if let Some(&first) = names.get(&raw_vm.name) {
                return Err(self.error(
                    format!("{key}.name"),
                    ErrorKind::DuplicateName {
                        name: raw_vm.name.clone(),
                        first: vm_key(first, &raw_vm.name),
                    },
                ));
            }
            names.insert(raw_vm.name.clone(), index);
            let vm = self.check_vm(&key, raw_vm, &switch_index, &mut macs)?;
            total_memory = total_memory.saturating_add(vm.memory_bytes);
            if total_memory > self.board.guest_ram_bytes {
                return Err(self.error(
                    format!("{key}.memory"),
                    ErrorKind::TotalMemoryExceedsBoard {
                        total: total_memory,
                        available: self.board.guest_ram_bytes,
                    },
                ));
            }
            vms.push(vm);
        }
        // Ports per switch: its NICs, and the uplink.
        for (index, switch) in switches.iter().enumerate() {
            let nics = vms
                .iter()
                .flat_map(|vm| vm.nets.iter())
                .filter(|net| usize::try_from(net.switch_index).ok() == Some(index))
                .count();
            let ports = nics + usize::from(switch.uplink);
            if ports > chroma_manifest::MAX_SWITCH_PORTS {
                return Err(self.error(
                    switch_key(index, &switch.name),
                    ErrorKind::TooManyPorts {
                        ports,
                        max: chroma_manifest::MAX_SWITCH_PORTS,
                    },
                ));
            }
        }
        Ok(Config {
            file: self.file.to_owned(),
            cache_mode,
            log_level,
            switches,
            vms,
        })
    }

    /// A byte count from `memory` / `memory_base`.
    fn size(&self, key: &str, raw: &RawSize) -> Result<u64, ConfigError> {
        match raw {
            RawSize::Bytes(bytes) => Ok(*bytes),
            RawSize::Text(text) => parse_size(text)
                .ok_or_else(|| self.error(key, ErrorKind::BadSize { text: text.clone() })),
        }
    }

    /// Resolves an image path against the configuration's directory.
    fn resolve(&self, path: &str) -> PathBuf {
        match self.file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(path),
            _ => PathBuf::from(path),
        }
    }

    fn check_vm(
        &self,
        key: &str,
        raw: &RawVm,
        switch_index: &HashMap<&str, usize>,
        macs: &mut HashMap<[u8; 6], String>,
    ) -> Result<Vm, ConfigError> {
        let board = self.board;

        // Memory: size, alignment, placement in the IPA space, board limit.
        let memory_key = format!("{key}.memory");
        let memory_bytes = self.size(&memory_key, &raw.memory)?;
        if memory_bytes < MEMORY_ALIGN {
            return Err(self.error(memory_key, ErrorKind::MemoryTooSmall));
        }
        if memory_bytes % MEMORY_ALIGN != 0 {
            return Err(self.error(
                memory_key,
                ErrorKind::NotAligned {
                    bytes: memory_bytes,
                },
            ));
        }
        if memory_bytes > board.guest_ram_bytes {
            return Err(self.error(
                memory_key,
                ErrorKind::MemoryExceedsBoard {
                    bytes: memory_bytes,
                    available: board.guest_ram_bytes,
                },
            ));
        }
        let base_key = format!("{key}.memory_base");
        let memory_base = match &raw.memory_base {
            Some(raw_base) => self.size(&base_key, raw_base)?,
            None => DEFAULT_MEMORY_BASE,
        };
        if memory_base % MEMORY_ALIGN != 0 {
            return Err(self.error(base_key, ErrorKind::NotAligned { bytes: memory_base }));
        }
        let end = memory_base.checked_add(memory_bytes);
        if memory_base < DEVICE_WINDOW_END {
            return Err(self.error(
                base_key,
                ErrorKind::OverlapsDeviceWindow {
                    base: memory_base,
                    end: end.unwrap_or(u64::MAX),
                },
            ));
        }
        if end.is_none_or(|end| end > IPA_LIMIT) {
            return Err(self.error(base_key, ErrorKind::BeyondIpaLimit { base: memory_base }));
        }

        // vCPUs and pinning.
        let vcpus_key = format!("{key}.vcpus");
        let vcpus = raw.vcpus.unwrap_or(1);
        let max_vcpus = u32::try_from(MAX_VCPUS).unwrap_or(u32::MAX);
        if vcpus == 0 || vcpus > max_vcpus {
            return Err(self.error(vcpus_key, ErrorKind::VcpuCount { count: vcpus }));
        }
        if vcpus > board.physical_cpus {
            return Err(self.error(
                vcpus_key,
                ErrorKind::MoreVcpusThanCpus {
                    vcpus,
                    cpus: board.physical_cpus,
                },
            ));
        }
        let cpus_key = format!("{key}.cpus");
        let pins: Vec<u32> = match &raw.cpus {
            Some(pins) => pins.clone(),
            None => (0..vcpus).collect(),
        };
        if pins.len() != usize::try_from(vcpus).unwrap_or(usize::MAX) {
            return Err(self.error(
                cpus_key,
                ErrorKind::PinCount {
                    pins: pins.len(),
                    vcpus,
                },
            ));
        }
        let mut cpus = Vec::new();
        for &cpu in &pins {
            match u8::try_from(cpu) {
                Ok(narrow) if cpu < board.physical_cpus => cpus.push(narrow),
                _ => {
                    return Err(self.error(
                        cpus_key,
                        ErrorKind::PinOutOfRange {
                            cpu,
                            cpus: board.physical_cpus,
                        },
                    ))
                }
            }
        }

        // Images: the kernel must be an arm64 Image (an ARM zImage for an
        // AArch32 VM); everything must fit.
        let arch = match raw.arch {
            None => board.native_arch,
            Some(RawArch::Aarch64) => GuestArch::Aarch64,
            Some(RawArch::Aarch32) => GuestArch::Aarch32,
        };
        if arch == GuestArch::Aarch64 && !board.aarch64_guests {
            return Err(self.error(format!("{key}.arch"), ErrorKind::Aarch64OnArmv7));
        }
        let kernel_key = format!("{key}.kernel");
        let kernel = self.resolve(&raw.kernel);
        let kernel_header = match ImageHeader::read(&kernel) {
            Ok(Some(header)) if header.arch == arch => header,
            Ok(_) => {
                return Err(self.error(kernel_key, ErrorKind::NotAnImage { path: kernel, arch }))
            }
            Err(io) => {
                return Err(self.error(
                    kernel_key,
                    ErrorKind::ReadImage {
                        path: kernel,
                        reason: io.to_string(),
                    },
                ))
            }
        };
        let four_gib = 1u64 << 32;
        if kernel_header.file_len >= four_gib {
            return Err(self.error(
                kernel_key,
                ErrorKind::ImageTooLarge {
                    path: kernel,
                    bytes: kernel_header.file_len,
                },
            ));
        }
        let initrd = raw.initrd.as_deref().map(|path| self.resolve(path));
        let initrd_bytes = match &initrd {
            Some(path) => {
                let initrd_key = format!("{key}.initrd");
                let read_error = |reason: String| {
                    self.error(
                        initrd_key.clone(),
                        ErrorKind::ReadImage {
                            path: path.clone(),
                            reason,
                        },
                    )
                };
                let metadata = fs::metadata(path).map_err(|io| read_error(io.to_string()))?;
                if !metadata.is_file() {
                    return Err(read_error("not a regular file".to_owned()));
                }
                fs::File::open(path).map_err(|io| read_error(io.to_string()))?;
                if metadata.len() >= four_gib {
                    return Err(self.error(
                        initrd_key,
                        ErrorKind::ImageTooLarge {
                            path: path.clone(),
                            bytes: metadata.len(),
                        },
                    ));
                }
                metadata.len()
            }
            None => 0,
        };
        // The kernel sits at the 2 MiB-aligned RAM base + text_offset; the
        // initrd and the device tree (2 MiB reserved) go after it.
        let need = kernel_header
            .load_end()
            .and_then(|end| align_up(end, MEMORY_ALIGN))
            .and_then(|kernel_end| kernel_end.checked_add(align_up(initrd_bytes, 4096)?))
            .and_then(|images| images.checked_add(DTB_RESERVE))
            .unwrap_or(u64::MAX);
        if need > memory_bytes {
            return Err(self.error(
                format!("{key}.memory"),
                ErrorKind::ImagesDoNotFit {
                    need,
                    have: memory_bytes,
                },
            ));
        }

        // NICs: known switches, valid and unique MACs.
        let mut nets = Vec::new();
        for (nic, raw_net) in raw.net.iter().enumerate() {
            let net_key = format!("{key}.net[{nic}]");
            let switch = switch_index.get(raw_net.switch.as_str()).ok_or_else(|| {
                self.error(
                    format!("{net_key}.switch"),
                    ErrorKind::UnknownSwitch {
                        name: raw_net.switch.clone(),
                    },
                )
            })?;
            let mac_key = format!("{net_key}.mac");
            let mac = match &raw_net.mac {
                Some(text) => {
                    let mac = parse_mac(text).ok_or_else(|| {
                        self.error(mac_key.clone(), ErrorKind::BadMac { text: text.clone() })
                    })?;
                    if mac[0] & 1 != 0 {
                        return Err(self.error(
                            mac_key,
                            ErrorKind::MulticastMac {
                                mac: format_mac(mac),
                            },
                        ));
                    }
                    mac
                }
                None => derive_mac(&raw.name, nic),
            };
            if let Some(first) = macs.get(&mac) {
                return Err(self.error(
                    mac_key,
                    ErrorKind::DuplicateMac {
                        mac: format_mac(mac),
                        first: first.clone(),
                    },
                ));
            }
            let ring = match raw_net.ring.as_deref() {
                None => DEFAULT_RING,
                Some("split") => RingLayout::Split,
                Some("packed") => RingLayout::Packed,
                Some(text) => {
                    return Err(self.error(
                        format!("{net_key}.ring"),
                        ErrorKind::BadRing { text: text.into() },
                    ))
                }
            };
            macs.insert(mac, net_key);
            nets.push(Net {
                switch_index: u32::try_from(*switch).unwrap_or(u32::MAX),
                mac,
                trusted: raw_net.trusted,
                ring,
                tso: raw_net.tso,
            });
        }

        let cmdline = raw.cmdline.clone().unwrap_or_default();
        if cmdline.len() > chroma_manifest::MAX_CMDLINE_LEN {
            return Err(self.error(
                format!("{key}.cmdline"),
                ErrorKind::BadCmdline {
                    reason: "longer than 2047 bytes (Linux's limit)",
                },
            ));
        }
        if cmdline.contains('\0') {
            return Err(self.error(
                format!("{key}.cmdline"),
                ErrorKind::BadCmdline {
                    reason: "contains a NUL character",
                },
            ));
        }

        Ok(Vm {
            name: raw.name.clone(),
            arch,
            kernel,
            kernel_header,
            initrd,
            initrd_bytes,
            cmdline,
            memory_base,
            memory_bytes,
            vcpus,
            cpus,
            nets,
        })
    }
}

#[cfg(test)]
mod tests;
