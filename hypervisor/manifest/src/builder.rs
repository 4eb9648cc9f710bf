//! Writing a manifest (host tool side, feature `alloc`).

use alloc::vec::Vec;

use crate::error::{At, ManifestError};
use crate::layout::*;
use crate::{CacheMode, GuestArch, Manifest, NetSpec, Options, RingLayout};

/// One VM to add to a manifest.
#[derive(Clone, Copy, Debug)]
pub struct VmInput<'a> {
    /// The VM's name (1..=[`MAX_NAME_LEN`] bytes, no NUL).
    pub name: &'a str,
    /// Guest-physical base of RAM (a multiple of [`MEMORY_ALIGN`]).
    pub memory_base: u64,
    /// RAM size (a non-zero multiple of [`MEMORY_ALIGN`]).
    pub memory_bytes: u64,
    /// vCPU count, 1..=[`MAX_VCPUS`].
    pub vcpus: u32,
    /// Physical CPU of each vCPU; entries past `vcpus` must be zero.
    pub cpu_affinity: [u8; MAX_VCPUS],
    /// The kernel's execution state.
    pub arch: GuestArch,
    /// Kernel image bytes (non-empty).
    pub kernel: &'a [u8],
    /// Initrd bytes, if any.
    pub initrd: Option<&'a [u8]>,
    /// Kernel command line (at most [`MAX_CMDLINE_LEN`] bytes, no NUL).
    pub cmdline: &'a str,
    /// NICs, in device order; each names a switch added with
    /// [`ManifestBuilder::add_switch`].
    pub nets: &'a [NetSpec],
}

/// Collects options, switches and VMs, and writes the manifest bytes.
#[derive(Clone, Debug, Default)]
pub struct ManifestBuilder<'a> {
    options: Options,
    switches: Vec<(&'a str, bool)>,
    vms: Vec<VmInput<'a>>,
}

impl<'a> ManifestBuilder<'a> {
    /// A builder with these global options and no switch or VM.
    pub fn new(options: Options) -> Self {
        Self {
            options,
            switches: Vec::new(),
            vms: Vec::new(),
        }
    }

    /// Adds a switch and returns its index (for [`NetSpec::switch_index`]).
    pub fn add_switch(&mut self, name: &'a str, uplink: bool) -> u32 {
        self.switches.push((name, uplink));
        u32::try_from(self.switches.len().saturating_sub(1)).unwrap_or(u32::MAX)
    }

    /// Adds a VM.
    pub fn add_vm(&mut self, vm: VmInput<'a>) {
        self.vms.push(vm);
    }

    /// Writes the manifest. The result is parsed back before it is returned,
    /// so whatever this returns, [`Manifest::parse`] accepts; invalid input
    /// gives the same error the parser would.
    pub fn build(&self) -> Result<Vec<u8>, ManifestError> {
        let h = At::Header;
        let too_large = |at: At, what: &'static str| ManifestError::TooLarge { at, what };
        let vm_count = u16::try_from(self.vms.len()).map_err(|_| too_large(h, "VM count"))?;
        let switch_count =
            u16::try_from(self.switches.len()).map_err(|_| too_large(h, "switch count"))?;
        let net_total: usize = self.vms.iter().map(|vm| vm.nets.len()).sum();
        let net_count = u32::try_from(net_total).map_err(|_| too_large(h, "NIC count"))?;

        // Tables follow the header back to back; the data area follows them.
        let vm_table = HEADER_SIZE;
        let switch_table = vm_table
            .checked_add(VM_RECORD_SIZE * self.vms.len())
            .ok_or(too_large(h, "VM table"))?;
        let net_table = switch_table
            .checked_add(SWITCH_RECORD_SIZE * self.switches.len())
            .ok_or(too_large(h, "switch table"))?;
        let data_start = align_up(
            net_table
                .checked_add(NET_RECORD_SIZE * net_total)
                .ok_or(too_large(h, "NIC table"))?,
        )
        .ok_or(too_large(h, "NIC table"))?;

        let mut out = alloc::vec![0; data_start];
        let mut data = DataWriter { out: &mut out };

        let mut switch_records = Vec::new();
        for (index, (name, uplink)) in self.switches.iter().enumerate() {
            let at = At::Switch(u32::try_from(index).map_err(|_| too_large(h, "switch table"))?);
            let mut record = [0u8; SWITCH_RECORD_SIZE];
            put_ref(&mut record, S_NAME, data.push(name.as_bytes(), at, "name")?);
            put(&mut record, S_FLAGS, &u32::from(*uplink).to_le_bytes());
            switch_records.push(record);
        }
        let mut vm_records = Vec::new();
        let mut net_records = Vec::new();
        for (index, vm) in self.vms.iter().enumerate() {
            let at = At::Vm(u32::try_from(index).map_err(|_| too_large(h, "VM table"))?);
            let mut record = [0u8; VM_RECORD_SIZE];
            put_ref(
                &mut record,
                V_NAME,
                data.push(vm.name.as_bytes(), at, "name")?,
            );
            put(&mut record, V_MEMORY_BASE, &vm.memory_base.to_le_bytes());
            put(&mut record, V_MEMORY_BYTES, &vm.memory_bytes.to_le_bytes());
            put(&mut record, V_VCPUS, &vm.vcpus.to_le_bytes());
            put(&mut record, V_AFFINITY, &vm.cpu_affinity);
            put_ref(&mut record, V_KERNEL, data.push(vm.kernel, at, "kernel")?);
            let mut flags = match vm.arch {
                GuestArch::Aarch64 => 0,
                GuestArch::Aarch32 => VM_FLAG_AARCH32,
            };
            if let Some(initrd) = vm.initrd {
                flags |= VM_FLAG_INITRD;
                put_ref(&mut record, V_INITRD, data.push(initrd, at, "initrd")?);
            }
            put(&mut record, V_FLAGS, &flags.to_le_bytes());
            put_ref(
                &mut record,
                V_CMDLINE,
                data.push(vm.cmdline.as_bytes(), at, "command line")?,
            );
            let first = u32::try_from(net_records.len()).map_err(|_| too_large(at, "NICs"))?;
            let count = u32::try_from(vm.nets.len()).map_err(|_| too_large(at, "NICs"))?;
            put(&mut record, V_NET_FIRST, &first.to_le_bytes());
            put(&mut record, V_NET_COUNT, &count.to_le_bytes());
            for net in vm.nets {
                let mut net_record = [0u8; NET_RECORD_SIZE];
                put(&mut net_record, N_SWITCH, &net.switch_index.to_le_bytes());
                put(&mut net_record, N_MAC, &net.mac);
                let flags = if net.trusted { NET_FLAG_TRUSTED } else { 0 }
                    | match net.ring {
                        RingLayout::Split => 0,
                        RingLayout::Packed => NET_FLAG_PACKED_RING,
                    }
                    | if net.tso { 0 } else { NET_FLAG_NO_TSO };
                put(&mut net_record, N_FLAGS, &flags.to_le_bytes());
                net_records.push(net_record);
            }
            vm_records.push(record);
        }
        for (offset, record) in (vm_table..).step_by(VM_RECORD_SIZE).zip(&vm_records) {
            put(&mut out, offset, record);
        }
        for (offset, record) in (switch_table..)
            .step_by(SWITCH_RECORD_SIZE)
            .zip(&switch_records)
        {
            put(&mut out, offset, record);
        }
        for (offset, record) in (net_table..).step_by(NET_RECORD_SIZE).zip(&net_records) {
            put(&mut out, offset, record);
        }

        let total_len = u32::try_from(out.len()).map_err(|_| too_large(h, "total length"))?;
        let data_len = out.len().saturating_sub(data_start);
        let to_u32 = |value: usize, what| u32::try_from(value).map_err(|_| too_large(h, what));
        let mut header = [0u8; HEADER_SIZE];
        put(&mut header, H_MAGIC, &MAGIC);
        put(&mut header, H_VERSION, &FORMAT_VERSION.to_le_bytes());
        put(&mut header, H_HEADER_SIZE, &HEADER_SIZE_FIELD.to_le_bytes());
        put(&mut header, H_TOTAL_LEN, &total_len.to_le_bytes());
        put(
            &mut header,
            H_CACHE_MODE,
            &[match self.options.cache_mode {
                CacheMode::Auto => 0,
                CacheMode::Force => 1,
            }],
        );
        put(&mut header, H_LOG_LEVEL, &[self.options.log_level]);
        put(
            &mut header,
            H_SWITCH_KEY,
            &[self.options.console_switch_key],
        );
        put(&mut header, H_VM_COUNT, &vm_count.to_le_bytes());
        put(&mut header, H_SWITCH_COUNT, &switch_count.to_le_bytes());
        put(&mut header, H_NET_COUNT, &net_count.to_le_bytes());
        put(
            &mut header,
            H_VM_TABLE,
            &to_u32(vm_table, "VM table")?.to_le_bytes(),
        );
        put(
            &mut header,
            H_SWITCH_TABLE,
            &to_u32(switch_table, "switch table")?.to_le_bytes(),
        );
        put(
            &mut header,
            H_NET_TABLE,
            &to_u32(net_table, "NIC table")?.to_le_bytes(),
        );
        put(
            &mut header,
            H_DATA_OFFSET,
            &to_u32(data_start, "data offset")?.to_le_bytes(),
        );
        put(
            &mut header,
            H_DATA_LEN,
            &to_u32(data_len, "data length")?.to_le_bytes(),
        );
        put(&mut out, 0, &header);
        let sum = checksum(out.get(..data_start).unwrap_or_default(), H_CHECKSUM);
        put(&mut out, H_CHECKSUM, &sum.to_le_bytes());

        Manifest::parse(&out)?;
        Ok(out)
    }
}

/// Appends blobs to the data area, each on [`BLOB_ALIGN`].
struct DataWriter<'v> {
    out: &'v mut Vec<u8>,
}

impl DataWriter<'_> {
    /// Appends `bytes` and returns its (offset, length) as a blob ref.
    fn push(
        &mut self,
        bytes: &[u8],
        at: At,
        what: &'static str,
    ) -> Result<(u32, u32), ManifestError> {
        let too_large = ManifestError::TooLarge { at, what };
        let start = align_up(self.out.len()).ok_or(too_large)?;
        self.out.resize(start, 0);
        self.out.extend_from_slice(bytes);
        let offset = u32::try_from(start).map_err(|_| too_large)?;
        let len = u32::try_from(bytes.len()).map_err(|_| too_large)?;
        offset.checked_add(len).ok_or(too_large)?;
        Ok((offset, len))
    }
}

fn align_up(value: usize) -> Option<usize> {
    value
        .checked_add(BLOB_ALIGN - 1)
        .map(|v| v & !(BLOB_ALIGN - 1))
}

/// Copies `bytes` into `buffer` at `offset`; the offsets are this module's
/// own constants, so a miss is a bug here, and it writes nothing.
fn put(buffer: &mut [u8], offset: usize, bytes: &[u8]) {
    let end = offset.saturating_add(bytes.len());
    if let Some(slot) = buffer.get_mut(offset..end) {
        slot.copy_from_slice(bytes);
    } else {
        debug_assert!(false, "manifest builder wrote past a record");
    }
}

fn put_ref(record: &mut [u8], offset: usize, (start, len): (u32, u32)) {
    put(record, offset, &start.to_le_bytes());
    put(record, offset.saturating_add(4), &len.to_le_bytes());
}
