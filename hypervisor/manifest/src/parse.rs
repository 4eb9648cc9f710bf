//! Zero-copy parsing and validation of a manifest.
//!
//! [`Manifest::parse`] checks every field of every record once. The
//! accessors that follow re-read the same bytes and so cannot fail; they
//! still use the panic-free helpers below (a record that somehow failed to
//! decode would be skipped, not unwrapped).

use crate::error::{At, ManifestError};
use crate::layout::*;
use crate::{CacheMode, GuestArch, NetSpec, Options, RingLayout};

/// Reads a little-endian `u16` at `offset`, or `None` past the end.
fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    let end = offset.checked_add(2)?;
    bytes
        .get(offset..end)?
        .try_into()
        .ok()
        .map(u16::from_le_bytes)
}

/// Reads a little-endian `u32` at `offset`, or `None` past the end.
fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(4)?;
    bytes
        .get(offset..end)?
        .try_into()
        .ok()
        .map(u32::from_le_bytes)
}

/// Reads a little-endian `u64` at `offset`, or `None` past the end.
fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let end = offset.checked_add(8)?;
    bytes
        .get(offset..end)?
        .try_into()
        .ok()
        .map(u64::from_le_bytes)
}

/// Reads `N` bytes at `offset`, or `None` past the end.
fn read_array<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    let end = offset.checked_add(N)?;
    bytes.get(offset..end)?.try_into().ok()
}

/// Converts a `u32` from the manifest to `usize` (lossless on 32- and 64-bit).
fn to_usize(value: u32, at: At, what: &'static str) -> Result<usize, ManifestError> {
    usize::try_from(value).map_err(|_| ManifestError::TooLarge { at, what })
}

/// A field that must be readable because its record was sliced to size.
fn field<T>(value: Option<T>, at: At, what: &'static str) -> Result<T, ManifestError> {
    value.ok_or(ManifestError::OutOfBounds { at, what })
}

/// A parsed, validated manifest borrowing the bytes it was parsed from.
#[derive(Clone, Copy, Debug)]
pub struct Manifest<'a> {
    /// The manifest, `total_len` bytes.
    bytes: &'a [u8],
    options: Options,
    vm_table: &'a [u8],
    switch_table: &'a [u8],
    net_table: &'a [u8],
    data_start: usize,
    data_end: usize,
}

/// One VM to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmSpec<'a> {
    /// The VM's name (1..=[`MAX_NAME_LEN`] bytes).
    pub name: &'a str,
    /// Guest-physical base of the VM's RAM (a multiple of [`MEMORY_ALIGN`]).
    pub memory_base: u64,
    /// Size of the VM's RAM (a non-zero multiple of [`MEMORY_ALIGN`]); the
    /// range `memory_base..memory_base + memory_bytes` does not overflow.
    pub memory_bytes: u64,
    /// Number of vCPUs, 1..=[`MAX_VCPUS`].
    pub vcpus: u32,
    /// `cpu_affinity[i]` is the physical CPU index vCPU `i` is pinned to;
    /// entries at and past `vcpus` are zero.
    pub cpu_affinity: [u8; MAX_VCPUS],
    /// The kernel's execution state.
    pub arch: GuestArch,
    /// The kernel image (arm64 `Image`, or ARM `zImage` for AArch32; the
    /// config tool checked the magic).
    pub kernel: &'a [u8],
    /// The initial ramdisk, if any.
    pub initrd: Option<&'a [u8]>,
    /// The kernel command line (may be empty), for `/chosen/bootargs`.
    pub cmdline: &'a str,
    /// The VM's virtio-net NICs, in device order (NIC `n` sits at
    /// `0x0a00_0000 + 0x200 * n`).
    pub nets: NetList<'a>,
}

/// One virtual Ethernet switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchSpec<'a> {
    /// The switch's name.
    pub name: &'a str,
    /// Whether the board's NIC is bridged into this switch (at most one
    /// switch has it; the config tool checks).
    pub uplink: bool,
}

/// The NICs of one VM: a validated slice of the NIC table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetList<'a> {
    records: &'a [u8],
}

/// Iterator over a [`NetList`].
#[derive(Clone, Debug)]
pub struct NetIter<'a> {
    records: core::slice::ChunksExact<'a, u8>,
}

impl<'a> NetList<'a> {
    /// Number of NICs.
    pub fn len(&self) -> usize {
        self.records.len() / NET_RECORD_SIZE
    }

    /// Whether the VM has no NIC.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The NIC with this index, if any.
    pub fn get(&self, index: usize) -> Option<NetSpec> {
        let start = index.checked_mul(NET_RECORD_SIZE)?;
        let end = start.checked_add(NET_RECORD_SIZE)?;
        decode_net(self.records.get(start..end)?)
    }

    /// Iterates over the NICs in order.
    pub fn iter(&self) -> NetIter<'a> {
        NetIter {
            records: self.records.chunks_exact(NET_RECORD_SIZE),
        }
    }
}

impl<'a> IntoIterator for NetList<'a> {
    type Item = NetSpec;
    type IntoIter = NetIter<'a>;
    fn into_iter(self) -> NetIter<'a> {
        self.iter()
    }
}

impl Iterator for NetIter<'_> {
    type Item = NetSpec;
    fn next(&mut self) -> Option<NetSpec> {
        // Records were validated by `parse`; `decode_net` only fails on a
        // short slice, which `chunks_exact` never yields.
        self.records.by_ref().find_map(decode_net)
    }
}

fn decode_net(record: &[u8]) -> Option<NetSpec> {
    let flags = read_u16(record, N_FLAGS)?;
    Some(NetSpec {
        switch_index: read_u32(record, N_SWITCH)?,
        mac: read_array(record, N_MAC)?,
        trusted: flags & NET_FLAG_TRUSTED != 0,
        ring: if flags & NET_FLAG_PACKED_RING != 0 {
            RingLayout::Packed
        } else {
            RingLayout::Split
        },
        tso: flags & NET_FLAG_NO_TSO == 0,
    })
}

impl<'a> Manifest<'a> {
    /// Parses and validates the manifest at the start of `bytes`.
    ///
    /// `bytes` may be longer than the manifest (for example the rest of a
    /// memory region); [`Manifest::total_len`] says how long it is.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ManifestError> {
        let header: [u8; HEADER_SIZE] =
            read_array(bytes, 0).ok_or(ManifestError::TooShort { len: bytes.len() })?;
        let h = At::Header;
        if read_array::<8>(&header, H_MAGIC) != Some(MAGIC) {
            return Err(ManifestError::BadMagic);
        }
        let version = field(read_u16(&header, H_VERSION), h, "version")?;
        if version != FORMAT_VERSION {
            return Err(ManifestError::UnsupportedVersion { found: version });
        }
        let header_size = field(read_u16(&header, H_HEADER_SIZE), h, "header size")?;
        if usize::from(header_size) != HEADER_SIZE {
            return Err(ManifestError::InvalidValue {
                at: h,
                what: "header size",
            });
        }
        let total_len_field = field(read_u32(&header, H_TOTAL_LEN), h, "total length")?;
        let total_len = to_usize(total_len_field, h, "total length")?;
        if total_len > bytes.len() {
            return Err(ManifestError::Truncated {
                total_len: u64::from(total_len_field),
                available: bytes.len(),
            });
        }
        let bytes = bytes.get(..total_len).ok_or(ManifestError::OutOfBounds {
            at: h,
            what: "total length",
        })?;

        // The data area ends the manifest; the tables sit between the
        // header and the data area.
        let data_start = to_usize(
            field(read_u32(&header, H_DATA_OFFSET), h, "data offset")?,
            h,
            "data offset",
        )?;
        let data_len = to_usize(
            field(read_u32(&header, H_DATA_LEN), h, "data length")?,
            h,
            "data length",
        )?;
        if data_start < HEADER_SIZE || data_start.checked_add(data_len) != Some(total_len) {
            return Err(ManifestError::OutOfBounds {
                at: h,
                what: "data area",
            });
        }
        let metadata = bytes.get(..data_start).ok_or(ManifestError::OutOfBounds {
            at: h,
            what: "data area",
        })?;
        let stored = field(read_u32(&header, H_CHECKSUM), h, "checksum")?;
        let computed = checksum(metadata, H_CHECKSUM);
        if stored != computed {
            return Err(ManifestError::ChecksumMismatch { stored, computed });
        }
        if read_array::<12>(&header, H_RESERVED) != Some([0; 12])
            || header.get(H_RESERVED_18) != Some(&0)
        {
            return Err(ManifestError::InvalidValue {
                at: h,
                what: "reserved bytes",
            });
        }

        let options = Options {
            cache_mode: match header.get(H_CACHE_MODE) {
                Some(0) => CacheMode::Auto,
                Some(1) => CacheMode::Force,
                _ => {
                    return Err(ManifestError::InvalidValue {
                        at: h,
                        what: "cache mode",
                    })
                }
            },
            log_level: match header.get(H_LOG_LEVEL) {
                Some(&level) if level <= MAX_LOG_LEVEL => level,
                _ => {
                    return Err(ManifestError::InvalidValue {
                        at: h,
                        what: "log level",
                    })
                }
            },
            console_switch_key: field(header.get(H_SWITCH_KEY).copied(), h, "console switch key")?,
        };

        let table = |offset_at: usize, count: usize, size: usize, what: &'static str| {
            let offset = to_usize(field(read_u32(&header, offset_at), h, what)?, h, what)?;
            let len = count
                .checked_mul(size)
                .ok_or(ManifestError::TooLarge { at: h, what })?;
            let end = offset
                .checked_add(len)
                .ok_or(ManifestError::OutOfBounds { at: h, what })?;
            if offset < HEADER_SIZE {
                return Err(ManifestError::OutOfBounds { at: h, what });
            }
            metadata
                .get(offset..end)
                .ok_or(ManifestError::OutOfBounds { at: h, what })
        };
        let vm_count = usize::from(field(read_u16(&header, H_VM_COUNT), h, "VM count")?);
        let switch_count =
            usize::from(field(read_u16(&header, H_SWITCH_COUNT), h, "switch count")?);
        let net_count = to_usize(
            field(read_u32(&header, H_NET_COUNT), h, "NIC count")?,
            h,
            "NIC count",
        )?;
        let manifest = Manifest {
            bytes,
            options,
            vm_table: table(H_VM_TABLE, vm_count, VM_RECORD_SIZE, "VM table")?,
            switch_table: table(
                H_SWITCH_TABLE,
                switch_count,
                SWITCH_RECORD_SIZE,
                "switch table",
            )?,
            net_table: table(H_NET_TABLE, net_count, NET_RECORD_SIZE, "NIC table")?,
            data_start,
            data_end: total_len,
        };
        for (index, record) in manifest
            .switch_table
            .chunks_exact(SWITCH_RECORD_SIZE)
            .enumerate()
        {
            manifest.decode_switch(record, index_at(index, At::Switch)?)?;
        }
        for (index, record) in manifest.net_table.chunks_exact(NET_RECORD_SIZE).enumerate() {
            let at = index_at(index, At::Net)?;
            let net = field(decode_net(record), at, "record")?;
            if to_usize(net.switch_index, at, "switch index")? >= switch_count {
                return Err(ManifestError::InvalidValue {
                    at,
                    what: "switch index",
                });
            }
            let flags = field(read_u16(record, N_FLAGS), at, "flags")?;
            if flags & !(NET_FLAG_TRUSTED | NET_FLAG_PACKED_RING | NET_FLAG_NO_TSO) != 0 {
                return Err(ManifestError::InvalidValue { at, what: "flags" });
            }
            if read_array::<4>(record, N_RESERVED) != Some([0; 4]) {
                return Err(ManifestError::InvalidValue {
                    at,
                    what: "reserved bytes",
                });
            }
        }
        for (index, record) in manifest.vm_table.chunks_exact(VM_RECORD_SIZE).enumerate() {
            manifest.decode_vm(record, index_at(index, At::Vm)?)?;
        }
        Ok(manifest)
    }

    /// Length of the manifest in bytes (the header's total length).
    pub fn total_len(&self) -> usize {
        self.bytes.len()
    }

    /// The global options.
    pub fn options(&self) -> Options {
        self.options
    }

    /// Number of VMs.
    pub fn vm_count(&self) -> usize {
        self.vm_table.len() / VM_RECORD_SIZE
    }

    /// Number of switches.
    pub fn switch_count(&self) -> usize {
        self.switch_table.len() / SWITCH_RECORD_SIZE
    }

    /// The VM with this index, if any.
    pub fn vm(&self, index: usize) -> Option<VmSpec<'a>> {
        self.vms().nth(index)
    }

    /// The switch with this index, if any (a [`NetSpec::switch_index`] names one).
    pub fn switch(&self, index: usize) -> Option<SwitchSpec<'a>> {
        self.switches().nth(index)
    }

    /// The VMs, in configuration order.
    pub fn vms(&self) -> impl Iterator<Item = VmSpec<'a>> + Clone + 'a {
        let this = *self;
        self.vm_table
            .chunks_exact(VM_RECORD_SIZE)
            .enumerate()
            .filter_map(move |(index, record)| {
                let at = At::Vm(u32::try_from(index).ok()?);
                this.decode_vm(record, at).ok()
            })
    }

    /// The switches, in configuration order.
    pub fn switches(&self) -> impl Iterator<Item = SwitchSpec<'a>> + Clone + 'a {
        let this = *self;
        self.switch_table
            .chunks_exact(SWITCH_RECORD_SIZE)
            .enumerate()
            .filter_map(move |(index, record)| {
                let at = At::Switch(u32::try_from(index).ok()?);
                this.decode_switch(record, at).ok()
            })
    }

    /// The switch the board's NIC is bridged into, with its index.
    pub fn uplink_switch(&self) -> Option<(usize, SwitchSpec<'a>)> {
        self.switches()
            .enumerate()
            .find(|(_, switch)| switch.uplink)
    }

    /// The bytes a blob ref at `offset` in `record` names, checked to lie in
    /// the data area.
    fn blob(
        &self,
        record: &[u8],
        offset: usize,
        at: At,
        what: &'static str,
    ) -> Result<&'a [u8], ManifestError> {
        let start = to_usize(field(read_u32(record, offset), at, what)?, at, what)?;
        let len_offset = offset
            .checked_add(4)
            .ok_or(ManifestError::OutOfBounds { at, what })?;
        let len = to_usize(field(read_u32(record, len_offset), at, what)?, at, what)?;
        let end = start
            .checked_add(len)
            .ok_or(ManifestError::OutOfBounds { at, what })?;
        if start < self.data_start || end > self.data_end {
            return Err(ManifestError::OutOfBounds { at, what });
        }
        self.bytes
            .get(start..end)
            .ok_or(ManifestError::OutOfBounds { at, what })
    }

    /// A string blob: UTF-8 without NUL, at most `max_len` bytes.
    fn string(
        &self,
        record: &[u8],
        offset: usize,
        max_len: usize,
        at: At,
        what: &'static str,
    ) -> Result<&'a str, ManifestError> {
        let bytes = self.blob(record, offset, at, what)?;
        if bytes.len() > max_len {
            return Err(ManifestError::TooLarge { at, what });
        }
        if bytes.contains(&0) {
            return Err(ManifestError::BadString { at, what });
        }
        core::str::from_utf8(bytes).map_err(|_| ManifestError::BadString { at, what })
    }

    fn name(&self, record: &[u8], offset: usize, at: At) -> Result<&'a str, ManifestError> {
        let name = self.string(record, offset, MAX_NAME_LEN, at, "name")?;
        if name.is_empty() {
            return Err(ManifestError::InvalidValue { at, what: "name" });
        }
        Ok(name)
    }

    fn decode_switch(&self, record: &[u8], at: At) -> Result<SwitchSpec<'a>, ManifestError> {
        let name = self.name(record, S_NAME, at)?;
        let flags = field(read_u32(record, S_FLAGS), at, "flags")?;
        if flags & !SWITCH_FLAG_UPLINK != 0 {
            return Err(ManifestError::InvalidValue { at, what: "flags" });
        }
        if read_u32(record, S_RESERVED) != Some(0) {
            return Err(ManifestError::InvalidValue {
                at,
                what: "reserved bytes",
            });
        }
        Ok(SwitchSpec {
            name,
            uplink: flags & SWITCH_FLAG_UPLINK != 0,
        })
    }

    fn decode_vm(&self, record: &[u8], at: At) -> Result<VmSpec<'a>, ManifestError> {
        let name = self.name(record, V_NAME, at)?;
        let memory_base = field(read_u64(record, V_MEMORY_BASE), at, "memory base")?;
        let memory_bytes = field(read_u64(record, V_MEMORY_BYTES), at, "memory size")?;
        if memory_base % MEMORY_ALIGN != 0 {
            return Err(ManifestError::InvalidValue {
                at,
                what: "memory base",
            });
        }
        if memory_bytes == 0
            || memory_bytes % MEMORY_ALIGN != 0
            || memory_base.checked_add(memory_bytes).is_none()
        {
            return Err(ManifestError::InvalidValue {
                at,
                what: "memory size",
            });
        }
        let vcpus = field(read_u32(record, V_VCPUS), at, "vCPU count")?;
        let vcpu_count = to_usize(vcpus, at, "vCPU count")?;
        if vcpu_count == 0 || vcpu_count > MAX_VCPUS {
            return Err(ManifestError::InvalidValue {
                at,
                what: "vCPU count",
            });
        }
        let cpu_affinity: [u8; MAX_VCPUS] =
            field(read_array(record, V_AFFINITY), at, "CPU affinity")?;
        if cpu_affinity.iter().skip(vcpu_count).any(|&cpu| cpu != 0) {
            return Err(ManifestError::InvalidValue {
                at,
                what: "CPU affinity",
            });
        }
        let flags = field(read_u32(record, V_FLAGS), at, "flags")?;
        if flags & !(VM_FLAG_INITRD | VM_FLAG_AARCH32) != 0 {
            return Err(ManifestError::InvalidValue { at, what: "flags" });
        }
        let kernel = self.blob(record, V_KERNEL, at, "kernel")?;
        if kernel.is_empty() {
            return Err(ManifestError::InvalidValue { at, what: "kernel" });
        }
        let initrd = if flags & VM_FLAG_INITRD != 0 {
            Some(self.blob(record, V_INITRD, at, "initrd")?)
        } else {
            if read_u64(record, V_INITRD) != Some(0) {
                return Err(ManifestError::InvalidValue { at, what: "initrd" });
            }
            None
        };
        let cmdline = self.string(record, V_CMDLINE, MAX_CMDLINE_LEN, at, "command line")?;
        let net_first = to_usize(
            field(read_u32(record, V_NET_FIRST), at, "NICs")?,
            at,
            "NICs",
        )?;
        let net_count = to_usize(
            field(read_u32(record, V_NET_COUNT), at, "NICs")?,
            at,
            "NICs",
        )?;
        let start = net_first
            .checked_mul(NET_RECORD_SIZE)
            .ok_or(ManifestError::OutOfBounds { at, what: "NICs" })?;
        let len = net_count
            .checked_mul(NET_RECORD_SIZE)
            .ok_or(ManifestError::OutOfBounds { at, what: "NICs" })?;
        let end = start
            .checked_add(len)
            .ok_or(ManifestError::OutOfBounds { at, what: "NICs" })?;
        let records = self
            .net_table
            .get(start..end)
            .ok_or(ManifestError::OutOfBounds { at, what: "NICs" })?;
        if read_u64(record, V_RESERVED) != Some(0) {
            return Err(ManifestError::InvalidValue {
                at,
                what: "reserved bytes",
            });
        }
        Ok(VmSpec {
            name,
            memory_base,
            memory_bytes,
            vcpus,
            cpu_affinity,
            arch: if flags & VM_FLAG_AARCH32 != 0 {
                GuestArch::Aarch32
            } else {
                GuestArch::Aarch64
            },
            kernel,
            initrd,
            cmdline,
            nets: NetList { records },
        })
    }
}

/// The `At` for record `index` (tables hold at most `u32::MAX` records).
fn index_at(index: usize, make: fn(u32) -> At) -> Result<At, ManifestError> {
    u32::try_from(index)
        .map(make)
        .map_err(|_| ManifestError::TooLarge {
            at: At::Header,
            what: "table",
        })
}
