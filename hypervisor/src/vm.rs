//! A VM as the binary holds it: the portable state ([`VmCore`]: machine,
//! vGIC, console model, power states) plus what only the hypervisor's own
//! memory and devices give it: RAM and its stage-2 tables, the
//! colour-matched alias, the NICs, the images to reload on reset.
//!
//! Lock order (outer to inner): `VmCore::vgic`, then `VmCore::uart`, then
//! `Vm::console_line`, then the console. `VmCore`'s `boot` and `stop` are
//! leaf locks.

use crate::guest_mem::VmMemory;
use crate::mm::{PhysTables, FRAMES};
use crate::nic::{Nic, NicCounters, NicState};
use crate::platform_info::BoardInfo;
use alloc::vec::Vec;
use chroma_arch::aarch64::descriptors::Stage2Format;
use chroma_core::console::LineBuffer;
use chroma_core::guest_map::{VmShape, QEMU_VIRT};
use chroma_core::pagetable::{Attributes, Geometry, PageTable, PAGE_SIZE};
use chroma_core::vgic::{GicVersion, MAX_VCPUS};
use chroma_core::vm::{BootRequest, RamRegion, StopReason, VmCore};
use chroma_core::HostPhysAddr;
use chroma_manifest::VmSpec;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

/// One VM.
pub struct Vm {
    /// The architecture-neutral state exit handling and the scheduler share.
    pub core: VmCore,
    /// Stage-2 VMID.
    pub vmid: u16,
    /// Stage-2 tables.
    pub stage2: PageTable,
    /// Physical base of guest RAM.
    pub ram_pa: u64,
    /// The guest's console output line being assembled.
    pub console_line: Mutex<LineBuffer>,
    /// The stop has been reported in full (last line printed).
    pub reported: AtomicBool,
    /// The manifest record, kept to reload the images on SYSTEM_RESET.
    pub spec: VmSpec<'static>,
    /// Hypervisor VA of the colour-matched alias of guest RAM.
    pub alias: u64,
    /// The virtio-net NICs.
    pub nics: Vec<Nic>,
    /// The UART's read-only register image (see [`crate::image::UartImage`]).
    pub uart_image: crate::image::UartImage,
    /// Rate limit of the informational lines the guest's actions cause
    /// (driver modes, resets): a guest must not flood the console.
    notices: Mutex<chroma_core::ratelimit::RateLimit>,
    /// The guest's exits by kind since it was created.
    pub exits: ExitCounts,
}

/// A VM's exits by kind, counted by the scheduler loop and printed when
/// the VM stops (and on the console's Ctrl-A c) as
/// `exits vm=<name> total=<n> <kind>=<n>...` (kinds in [`EXIT_KINDS`]
/// order), then `exit-us vm=<name> total=<µs> <kind>=<µs>...`: the
/// hypervisor's time handling them.
pub struct ExitCounts {
    /// Exits of each kind.
    counts: [core::sync::atomic::AtomicU64; EXIT_KINDS.len()],
    /// Counter ticks from each exit to the scheduler's decision after it
    /// (the vGIC's sync, the handling, the NICs' work), by kind: the
    /// hypervisor's time per exit.
    handling_ticks: [core::sync::atomic::AtomicU64; EXIT_KINDS.len()],
}

/// The kinds of exit [`ExitCounts`] counts, as the line names them.
pub const EXIT_KINDS: [&str; 12] = [
    "irq", "wfi", "wfe", "hvc", "smc", "sysreg", "gicd", "uart", "virtio", "mmio", "abort", "other",
];

impl ExitCounts {
    /// All zero.
    fn new() -> Self {
        ExitCounts {
            counts: core::array::from_fn(|_| core::sync::atomic::AtomicU64::new(0)),
            handling_ticks: core::array::from_fn(|_| core::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// Counts one exit of `vm` for `exit`; returns its kind (an index of
    /// [`EXIT_KINDS`]) for [`ExitCounts::add_handling`].
    pub fn count(&self, vm: &VmCore, exit: &chroma_core::exit::Exit) -> usize {
        use chroma_core::exit::Exit;
        let kind = match exit {
            Exit::Interrupt => 0,
            Exit::WaitForInterrupt => 1,
            Exit::WaitForEvent => 2,
            Exit::Hypercall { .. } => 3,
            Exit::SecureMonitorCall { .. } => 4,
            Exit::SysReg(_) => 5,
            Exit::Mmio(access) => {
                let ipa = access.ipa.raw();
                if vm.map.gic_distributor.offset_of(ipa).is_some() {
                    6
                } else if vm.map.uart.offset_of(ipa).is_some() {
                    7
                } else if vm
                    .map
                    .virtio_mmio
                    .locate(ipa, vm.map.virtio_mmio.max_count)
                    .is_some()
                {
                    8
                } else {
                    9
                }
            }
            // A store to a read-only register image: the UART's or the
            // virtio-mmio transports'.
            Exit::ReadOnlyWrite(access) => {
                if vm.map.uart.offset_of(access.ipa.raw()).is_some() {
                    7
                } else {
                    8
                }
            }
            Exit::AbortNoSyndrome { .. } => 10,
            Exit::ConditionFailed | Exit::Unhandled { .. } => 11,
        };
        if let Some(counter) = self.counts.get(kind) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        kind
    }

    /// Adds `ticks` of the counter spent handling one exit of `kind`.
    pub fn add_handling(&self, kind: usize, ticks: u64) {
        if let Some(total) = self.handling_ticks.get(kind) {
            total.fetch_add(ticks, Ordering::Relaxed);
        }
    }

    /// Prints the `exits` lines of VM `name`: the count of each kind, then
    /// the hypervisor's time handling each kind in microseconds.
    pub fn report(&self, name: &str) {
        let hz = u128::from(crate::arch::cpu::counter_frequency().max(1));
        let load = |counters: &[core::sync::atomic::AtomicU64; EXIT_KINDS.len()]| {
            let values: [u64; EXIT_KINDS.len()] =
                core::array::from_fn(|kind| counters[kind].load(Ordering::Relaxed));
            values
        };
        let counts = load(&self.counts);
        let micros = load(&self.handling_ticks)
            .map(|ticks| u64::try_from(u128::from(ticks) * 1_000_000 / hz).unwrap_or(u64::MAX));
        for (what, values) in [("exits", counts), ("exit-us", micros)] {
            let mut line = alloc::string::String::new();
            for (kind, value) in EXIT_KINDS.iter().zip(values) {
                let _ = core::fmt::Write::write_fmt(&mut line, format_args!(" {kind}={value}"));
            }
            log::info!(
                "{what} vm={name} total={}{line}",
                values.iter().sum::<u64>()
            );
        }
    }
}

impl core::ops::Deref for Vm {
    type Target = VmCore;

    fn deref(&self) -> &VmCore {
        &self.core
    }
}

/// How the hypervisor reaches guest memory: the alias allocator and the
/// cache policy every device view gets.
pub struct CacheSetup {
    /// Colour-matched aliases of guest RAM.
    pub aliases: chroma_cache::ColourAllocator<64>,
    /// The policy chosen at boot (forced mode included).
    pub policy: chroma_cache::Policy,
    /// The data-cache geometry, when it could be read.
    pub geometry: Option<chroma_cache::CacheGeometry>,
    /// The forced mode is on.
    pub forced: bool,
}

/// Why a VM could not be created (reported, and the VM is skipped).
#[derive(Clone, Copy, Debug)]
pub enum VmError {
    /// Not enough free physical memory.
    NoMemory,
    /// The kernel is not an arm64 Image or does not fit.
    BadKernel,
    /// Initrd and DTB do not fit below the end of RAM.
    NoRoom,
    /// The device tree could not be generated.
    DeviceTree,
    /// Stage-2 mapping failed.
    Stage2,
    /// No colour-matched alias could be made for guest RAM.
    Alias,
    /// Guest RAM would cover a device window of the guest's machine.
    RamOverDevices,
    /// More NICs than the guest's machine has transports for.
    TooManyNics,
    /// More VMs than there are VMIDs.
    TooManyVms,
    /// An AArch64 kernel on the ARMv7 hypervisor.
    Aarch64OnArmv7,
}

impl core::fmt::Display for VmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            VmError::NoMemory => "not enough physical memory",
            VmError::BadKernel => "kernel is not an arm64 Image or does not fit",
            VmError::NoRoom => "initrd and device tree do not fit in guest RAM",
            VmError::DeviceTree => "device tree generation failed",
            VmError::Stage2 => "stage-2 mapping failed",
            VmError::Alias => "no colour-matched hypervisor alias for guest RAM",
            VmError::RamOverDevices => "guest RAM overlaps the guest's device windows",
            VmError::TooManyNics => "more NICs than the machine has virtio-mmio transports",
            VmError::TooManyVms => "more VMs than VMIDs",
            VmError::Aarch64OnArmv7 => {
                "an AArch64 kernel: the ARMv7 hypervisor runs AArch32 guests only (arch = \"aarch32\", a zImage)"
            }
        })
    }
}

/// Bytes at the top of guest RAM reserved for the device tree.
const DTB_RESERVE: u64 = 2 << 20;

/// Where the device tree and initrd of an AArch32 guest must end: below
/// 512 MiB of RAM, inside what a 32-bit kernel maps as low memory (Linux
/// Documentation/arch/arm/booting.rst: the DTB "within the region which
/// will be covered by the kernel's low-memory mapping").
const AARCH32_LOWMEM_TOP: u64 = 512 << 20;

/// What the boot CPU knows of its caches while it builds the VMs, and the
/// cleaning it put off until they are all built.
///
/// After the boot's clean by set/way ([`crate::mm::clean_data_caches_at_boot`])
/// no cache holds a dirty line of any free frame, so VM creation cleans to
/// the Point of Coherency only what it writes, not all of a VM's RAM. An
/// image larger than the data caches it writes (Linux's is some 30 MiB) is
/// not cleaned line by line either (one DC CVAC per 64 bytes: half a
/// million for Linux, 6-7 ms of the boot under QEMU): one more clean by
/// set/way, a pass over the caches' lines whatever the size of what was
/// written, leaves no dirty line of it once every VM is built
/// ([`BootCaches::finish`]), before any guest or secondary CPU runs. That
/// holds only on the boot CPU, the one that wrote, with the others not yet
/// started; a VM's reset cleans what it reloads by address.
pub struct BootCaches {
    /// Bytes of data cache the boot's clean by set/way went through; none
    /// when it could not run (the cache geometry was unreadable).
    set_way_bytes: Option<u64>,
    /// An image was left uncleaned, for [`BootCaches::finish`].
    deferred: bool,
}

impl BootCaches {
    /// Cleans and invalidates this CPU's data caches by set/way (once, at
    /// boot, before the first VM is built) and records what that allows.
    pub fn clean_at_boot() -> Self {
        BootCaches {
            set_way_bytes: crate::mm::clean_data_caches_at_boot(),
            deferred: false,
        }
    }

    /// Whether no cache holds a dirty line of a free frame.
    fn ram_clean(&self) -> bool {
        self.set_way_bytes.is_some()
    }

    /// Whether an image of `length` bytes just written is left to
    /// [`BootCaches::finish`] (recorded if so) rather than cleaned by address:
    /// when it is larger than the caches a clean by set/way goes through.
    fn defer(&mut self, length: u64) -> bool {
        let deferred = self.set_way_bytes.is_some_and(|cache| length > cache);
        self.deferred |= deferred;
        deferred
    }

    /// Brings the images left uncleaned to the Point of Coherency (clean by
    /// set/way) and out of the instruction cache. Called on the boot CPU once
    /// every VM is built, before a secondary starts or a guest runs.
    pub fn finish(self) {
        if !self.deferred {
            return;
        }
        // The geometry read at boot reads the same now: the clean runs.
        if crate::mm::clean_data_caches_at_boot().is_none() {
            crate::fatal("the cache geometry became unreadable: loaded images not cleaned");
        }
        let ops = crate::arch::CacheOps::new();
        {
            use chroma_cache::ops::CacheOps as _;
            ops.invalidate_icache_all();
            ops.dsb();
            ops.isb();
        }
    }
}

impl Vm {
    /// Builds a VM from its manifest record: memory, stage-2, images, DTB.
    /// `boot`: what the boot's clean by set/way allows (see [`BootCaches`]):
    /// only what the loader writes is cleaned to the Point of Coherency, the
    /// large images later; without it all of the VM's RAM. `stage2`: the
    /// geometry of every VM's stage-2 tables (VTCR is one for all).
    pub fn create(
        index: usize,
        spec: &VmSpec<'static>,
        board: &BoardInfo,
        stage2: Geometry,
        version: GicVersion,
        cache: &mut CacheSetup,
        boot: &mut BootCaches,
    ) -> Result<Self, VmError> {
        if !crate::arch::RUNS_AARCH64_GUESTS && spec.arch != chroma_manifest::GuestArch::Aarch32 {
            return Err(VmError::Aarch64OnArmv7);
        }
        let ram_ipa = spec.memory_base;
        let ram_size = spec.memory_bytes;
        if !QEMU_VIRT.ram_clear_of_devices(ram_ipa, ram_size) {
            return Err(VmError::RamOverDevices);
        }
        let ram_pa = FRAMES.lock().alloc(ram_size).ok_or(VmError::NoMemory)?;
        let vcpu_count = (spec.vcpus as usize).clamp(1, MAX_VCPUS);
        let mut tables = PhysTables;
        let mut stage2 = PageTable::new(&mut tables, stage2).map_err(|_| VmError::Stage2)?;
        stage2
            .map_with_largest_leaf::<Stage2Format, _>(
                &mut tables,
                ram_ipa,
                ram_pa,
                ram_size,
                Attributes::RAM,
                chroma_platform::BOARD.stage2_largest_ram_leaf,
            )
            .map_err(|_| VmError::Stage2)?;
        let map = QEMU_VIRT;
        if spec.nets.len() > map.virtio_mmio.max_count as usize {
            return Err(VmError::TooManyNics);
        }
        if version == GicVersion::V2 {
            // The GICv2 CPU interface: the hardware virtual CPU interface
            // (GICV) appears where the guest expects GICC.
            if let Some(gicv) = board.gicv {
                let gicc = map.gic_cpu_interface.base;
                stage2
                    .map::<Stage2Format, _>(
                        &mut tables,
                        gicc,
                        HostPhysAddr::new(gicv),
                        map.gic_cpu_interface_used,
                        Attributes::DEVICE,
                    )
                    .map_err(|_| VmError::Stage2)?;
            }
        }
        // The hypervisor's alias of guest RAM has the colour of the guest's
        // view of each page (IPA colour: the guest's linear map keeps it).
        let alias = cache
            .aliases
            .map_guest(chroma_mem::GuestPhysAddr::new(ram_ipa), ram_pa, ram_size)
            .map_err(|_| VmError::Alias)?;
        crate::mm::map_alias(alias.raw(), ram_pa.raw(), ram_size).map_err(|_| VmError::Alias)?;
        let window = crate::mm::alias_window();
        // The first virtio-mmio page holds the register windows of NICs 0
        // to 7: a read-only image of them, so that reads do not trap (see
        // `nic::RegisterImage`). NICs from 8 on trap for reads as well.
        let image_page = if spec.nets.is_empty() {
            None
        } else {
            let page = FRAMES.lock().alloc(PAGE_SIZE).ok_or(VmError::NoMemory)?;
            stage2
                .map::<Stage2Format, _>(
                    &mut tables,
                    map.virtio_mmio.base,
                    page,
                    PAGE_SIZE,
                    Attributes::READ_ONLY,
                )
                .map_err(|_| VmError::Stage2)?;
            let used = spec.nets.len().min(crate::nic::IMAGE_SLOTS);
            // SAFETY: the frame was just allocated for this VM's images and is identity-mapped read/write; it is never freed, and only the NICs' images write it.
            unsafe { crate::nic::fill_empty_slots(page.raw(), used) };
            Some(page.raw())
        };
        // The UART's reads are served by a read-only image while no read
        // has an effect; stores trap (see `image::UartImage`).
        let uart_image = crate::image::UartImage::new(
            &mut stage2,
            map.uart.base,
            &chroma_core::pl011::Pl011::new(),
        )
        .ok_or(VmError::Stage2)?;
        let mut nics = Vec::new();
        for (i, net) in spec.nets.iter().enumerate() {
            let switch = net.switch_index as usize;
            // TX kicks start eager; nic::mmio defers them once the driver
            // shows it batches (see nic::poll_vm).
            // `ring = "packed"` offers VIRTIO_F_RING_PACKED, if the NIC has
            // a slot for the ring's Non-cacheable alias (a maintaining
            // policy needs it, and the policy is only known at DRIVER_OK).
            let ring_slot = crate::mm::ring_alias_slot();
            let packed = match (net.ring, ring_slot) {
                (chroma_manifest::RingLayout::Packed, Some(_)) => true,
                (chroma_manifest::RingLayout::Packed, None) => {
                    log::warn!("vm {}: net{i}: no room for a packed ring's uncached alias: split ring only", spec.name);
                    false
                }
                (chroma_manifest::RingLayout::Split, _) => false,
            };
            // `tso = false` withdraws TCP segmentation offload (both ways).
            let tso = if net.tso {
                0
            } else {
                chroma_virtio::net::net_feature::TSO
            };
            let features = (chroma_virtio::net::NET_FEATURES & !tso)
                | if packed {
                    chroma_virtio::mmio::feature::RING_PACKED
                } else {
                    0
                };
            let mut device = chroma_virtio::net::new_net_device(net.mac, features, 256);
            // Every QueueNotify reaches the device (nic::mmio): a switch
            // run for another port need not read an idle, armed TX ring.
            device.device.wait_for_kicks = true;
            nics.push(Nic {
                state: Mutex::new(NicState {
                    device,
                    memory: VmMemory::new(
                        ram_ipa,
                        ram_size,
                        alias.raw(),
                        ram_pa.raw(),
                        ring_slot,
                        cache.policy,
                        window,
                    ),
                }),
                switch,
                // Numbered once the VM exists (`Vm::take_ports`).
                port: 0,
                intid: map.virtio_intid(u32::try_from(i).map_err(|_| VmError::TooManyNics)?),
                image: image_page
                    .filter(|_| i < crate::nic::IMAGE_SLOTS)
                    .map(|page| {
                        // SAFETY: as for `fill_empty_slots` above; slot `i` is this NIC's alone.
                        unsafe { crate::nic::RegisterImage::new(page, i) }
                    }),
                mac: net.mac,
                trusted: net.trusted,
                counters: NicCounters::default(),
                polling: AtomicBool::new(false),
            });
        }
        for nic in nics.iter() {
            crate::nic::refresh_image(nic);
        }
        let shape = VmShape {
            gic: version,
            vcpu_count,
            nic_count: nics.len(),
            arch: spec.arch,
        };
        let core = VmCore::new(
            index,
            alloc::string::String::from(spec.name),
            map,
            shape,
            RamRegion {
                ipa: ram_ipa,
                size: ram_size,
            },
            core::array::from_fn(|i| usize::from(spec.cpu_affinity[i])),
            BootRequest::default(),
        );
        let vm = Vm {
            core,
            vmid: u16::try_from(index + 1).map_err(|_| VmError::TooManyVms)?,
            stage2,
            ram_pa: ram_pa.raw(),
            console_line: Mutex::new(LineBuffer::new()),
            reported: AtomicBool::new(false),
            spec: *spec,
            alias: alias.raw(),
            nics,
            uart_image,
            notices: Mutex::new(chroma_core::ratelimit::RateLimit::default()),
            exits: ExitCounts::new(),
        };
        let entry = vm.load(spec, version, Some(boot))?;
        // Whatever the RAM held before (the frames are not zeroed) must
        // reach the Point of Coherency too, for a guest that starts with
        // its caches off: nothing to do when no cache holds a dirty line of
        // it (the boot's clean by set/way), else all of it.
        if !boot.ram_clean() {
            // SAFETY: the range is this VM's RAM alias, mapped for the hypervisor's lifetime; cleaning to the PoC changes no data.
            unsafe {
                chroma_cache::ops::clean_range(
                    &crate::arch::CacheOps::new(),
                    chroma_mem::HostVirtAddr::new(vm.alias),
                    crate::mm::host_usize(ram_size),
                )
            };
        }
        vm.core.restart(entry);
        Ok(vm)
    }

    /// Copies kernel, initrd and a generated DTB into guest RAM and cleans
    /// what it wrote (not the rest of RAM) to the Point of Coherency, but
    /// for what `boot` defers (at boot: [`BootCaches::defer`]).
    /// Returns (entry IPA, DTB IPA).
    fn load(
        &self,
        spec: &VmSpec,
        version: GicVersion,
        mut boot: Option<&mut BootCaches>,
    ) -> Result<BootRequest, VmError> {
        let RamRegion { ipa, size } = self.ram;
        // The kernel's format must be the one its VM runs (the config tool
        // checked; a hand-made manifest may not have).
        let header = chroma_manifest::KernelHeader::parse(spec.kernel)
            .filter(|header| header.arch == spec.arch)
            .ok_or(VmError::BadKernel)?;
        let kernel_offset = header.text_offset;
        let kernel_end = header
            .load_end(spec.kernel.len() as u64)
            .ok_or(VmError::BadKernel)?;
        let top = match spec.arch {
            chroma_manifest::GuestArch::Aarch64 => size,
            chroma_manifest::GuestArch::Aarch32 => size.min(AARCH32_LOWMEM_TOP),
        };
        let dtb_offset = top.checked_sub(DTB_RESERVE).ok_or(VmError::NoRoom)?;
        if kernel_end > dtb_offset {
            return Err(VmError::BadKernel);
        }
        // SAFETY: guest RAM was allocated for this VM and is reached through its alias; no vCPU of the VM runs while it is loaded.
        let ram = unsafe { crate::mm::phys_slice_mut(self.alias, crate::mm::host_usize(size)) };
        // Offsets below `size` (checked above) fit the pointer width as RAM does.
        let at = |offset: u64| usize::try_from(offset).map_err(|_| VmError::NoRoom);
        crate::mm::copy_image(
            &mut ram[at(kernel_offset)?..][..spec.kernel.len()],
            spec.kernel,
        );
        // What was written, (offset, length), to be cleaned below.
        let mut written = [(kernel_offset, spec.kernel.len() as u64), (0, 0), (0, 0)];
        let initrd = match spec.initrd {
            Some(initrd) => {
                let start = (dtb_offset
                    .checked_sub(initrd.len() as u64)
                    .ok_or(VmError::NoRoom)?)
                    & !0xfff;
                if start < kernel_end {
                    return Err(VmError::NoRoom);
                }
                crate::mm::copy_image(&mut ram[at(start)?..][..initrd.len()], initrd);
                written[1] = (start, initrd.len() as u64);
                Some((ipa + start, ipa + start + initrd.len() as u64))
            }
            None => None,
        };
        let dtb = crate::platform_info::guest_dtb(
            spec,
            self.vcpu_count(),
            version,
            initrd,
            self.nics.len(),
        )
        .map_err(|_| VmError::DeviceTree)?;
        if dtb.len() as u64 > DTB_RESERVE {
            return Err(VmError::DeviceTree);
        }
        ram[at(dtb_offset)?..][..dtb.len()].copy_from_slice(&dtb);
        written[2] = (dtb_offset, dtb.len() as u64);
        // Loaded code and data must reach the Point of Coherency before the
        // guest runs with its caches off.
        let ops = crate::arch::CacheOps::new();
        for (offset, length) in written.into_iter().filter(|&(_, l)| l > 0) {
            if boot.as_deref_mut().is_some_and(|boot| boot.defer(length)) {
                continue;
            }
            // SAFETY: the range lies in this VM's RAM alias (offset and length were bounded by the RAM size above), mapped for the hypervisor's lifetime; cleaning to the PoC and invalidating the I-cache change no data.
            unsafe {
                chroma_cache::ops::sync_loaded_image(
                    &ops,
                    chroma_mem::HostVirtAddr::new(self.alias + offset),
                    crate::mm::host_usize(length),
                )
            };
        }
        Ok(BootRequest {
            entry: ipa + kernel_offset,
            argument: ipa + dtb_offset,
            cpu_on: false,
        })
    }

    /// Brings the UART's register image in line with `uart`, the VM's
    /// model (the caller holds its lock) after a change.
    pub fn uart_changed(&self, uart: &chroma_core::pl011::Pl011) {
        self.uart_image.sync(uart, &self.stage2, self.vmid);
    }

    /// Gives the VM's NICs their switch ports, the next free number of each
    /// switch in `ports`. Called only for a VM that was created: one that
    /// failed to start takes no port, so every later VM's port number is
    /// its index in its switch (resets and counters reach the right port).
    pub fn take_ports(&mut self, ports: &mut [usize]) {
        for nic in self.nics.iter_mut() {
            if let Some(next) = ports.get_mut(nic.switch) {
                nic.port = *next;
                *next += 1;
            }
        }
    }

    /// Whether an informational line the guest caused may be printed (the
    /// first few, then ever more rarely).
    pub fn notice_allowed(&self) -> bool {
        self.notices.lock().allow()
    }

    /// Stops the VM (first reason wins) and reports it. Returns true if this
    /// call stopped it.
    pub fn stop(&self, reason: StopReason) -> bool {
        if !self.core.set_stopped(reason) {
            return false;
        }
        // Flush a partial console line so nothing the guest printed is lost.
        {
            let mut line = self.console_line.lock();
            if !line.is_empty() {
                crate::console::vm_line(&self.name, line.take());
            }
        }
        crate::nic::report(self.index);
        crate::nic::detach_vm(self.index);
        self.exits.report(&self.name);
        match reason {
            StopReason::PoweredOff => log::info!("vm {} stopped: powered off", self.name),
            StopReason::LastCpuOff => {
                log::info!(
                    "vm {} stopped: powered off (its last vCPU called CPU_OFF)",
                    self.name
                )
            }
            StopReason::Faulted(what, value) => {
                log::info!("vm {} stopped: faulted: {} ({:#x})", self.name, what, value)
            }
        }
        // Only now may the run end: the summary must follow this VM's lines.
        self.reported.store(true, Ordering::SeqCst);
        true
    }

    /// SYSTEM_RESET from vCPU `caller`: takes the NICs off their switches,
    /// puts the devices back to reset state and starts clearing RAM, which
    /// [`Vm::reset_step`] continues one [`chroma_core::vm::RESET_CHUNK`]
    /// per turn of vCPU 0's CPU, so the other vCPUs there run in between.
    /// The caller has turned every vCPU off and kicked their CPUs.
    pub fn start_reset(&self, caller: usize) {
        // The other vCPUs leave the guest at their next exit; wait until
        // none is inside it any more.
        for id in (0..self.vcpu_count()).filter(|&id| id != caller) {
            while self.running[id].load(Ordering::Acquire) {
                core::hint::spin_loop();
            }
        }
        crate::nic::detach_vm(self.index);
        self.core.reset_devices();
        self.uart_image
            .reset(&self.core.uart.lock(), &self.stage2, self.vmid);
        self.core.begin_reset();
    }

    /// One turn of a reset in progress (on vCPU 0's CPU): zeroes the next
    /// chunk of guest RAM and cleans it to the Point of Coherency (the guest
    /// may start with its caches off and must see zeroes, not stale lines);
    /// once all of RAM is clear, reloads the images and restarts vCPU 0.
    pub fn reset_step(&self) -> Result<(), VmError> {
        let Some((offset, length)) = self.core.next_reset_chunk() else {
            let entry = self.load(&self.spec, self.gic_version(), None)?;
            self.core.restart(entry);
            return Ok(());
        };
        let va = self.alias + offset;
        let length = crate::mm::host_usize(length);
        // SAFETY: `offset + length` lies within guest RAM (`ResetProgress` hands out chunks of `ram.size` only), reached through the VM's alias; every vCPU of the VM is off and none runs (`start_reset` waited), and its NICs are reset, so nothing else touches it.
        let chunk = unsafe { crate::mm::phys_slice_mut(va, length) };
        chunk.fill(0);
        // SAFETY: the chunk is mapped (above); cleaning changes no data.
        unsafe {
            chroma_cache::ops::clean_range(
                &crate::arch::CacheOps::new(),
                chroma_mem::HostVirtAddr::new(va),
                length,
            )
        };
        Ok(())
    }
}
