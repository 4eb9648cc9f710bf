//! A VM: its memory and stage-2 tables, its emulated devices (vGIC, PL011),
//! the power state of its vCPUs, and loading its images.
//!
//! Lock order (outer to inner): `Vm::vgic`, then `Vm::uart`, then the
//! console. `Vm::boot` and `Vm::stop` are leaf locks.

use crate::guest_mem::VmMemory;
use crate::mm::{PhysTables, FRAMES};
use crate::nic::{Nic, NicCounters, NicState};
use crate::platform_info::BoardInfo;
use alloc::string::String;
use alloc::vec::Vec;
use chroma_arch::aarch64::descriptors::Stage2Format;
use chroma_core::console::LineBuffer;
use chroma_core::pagetable::{Attributes, Geometry, PageTable};
use chroma_core::pl011::Pl011;
use chroma_core::ratelimit::RateLimit;
use chroma_core::vgic::{GicVersion, Vgic, MAX_VCPUS};
use chroma_core::HostPhysAddr;
use chroma_manifest::VmSpec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use spin::Mutex;

/// vCPU power states (PSCI AFFINITY_INFO: ON 0, OFF 1, ON_PENDING 2).
pub mod power {
    /// Running or runnable.
    pub const ON: u8 = 0;
    /// Off.
    pub const OFF: u8 = 1;
    /// CPU_ON accepted; starts at the next schedule.
    pub const ON_PENDING: u8 = 2;
}

/// Why a VM stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// PSCI SYSTEM_OFF.
    PoweredOff,
    /// The guest faulted past the limit or did something that cannot be answered.
    Faulted(&'static str, u64),
}

impl StopReason {
    /// Whether the stop counts as clean.
    pub fn clean(&self) -> bool {
        matches!(self, StopReason::PoweredOff)
    }
}

/// The emulated UART and the line being printed.
pub struct VmUart {
    /// Register model.
    pub model: Pl011,
    /// Output line buffer.
    pub line: LineBuffer,
}

/// Injected aborts after which a VM is considered to keep faulting and stopped.
pub const FAULT_LIMIT: u32 = 1000;

/// One VM.
pub struct Vm {
    /// Index in the system's VM list.
    pub index: usize,
    /// Unique name from the configuration.
    pub name: String,
    /// Stage-2 VMID.
    pub vmid: u16,
    /// Stage-2 tables.
    pub stage2: PageTable,
    /// Guest RAM: IPA base, PA base, size.
    pub ram: (u64, u64, u64),
    /// vCPU count.
    pub vcpu_count: usize,
    /// Physical CPU of each vCPU.
    pub affinity: [usize; MAX_VCPUS],
    /// Interrupt controller model.
    pub vgic: Mutex<Vgic>,
    /// Console UART.
    pub uart: Mutex<VmUart>,
    /// Power state of each vCPU (see [`power`]).
    pub power: [AtomicU8; MAX_VCPUS],
    /// Entry point and context id for a vCPU started by CPU_ON.
    pub boot: [Mutex<(u64, u64)>; MAX_VCPUS],
    /// Set once the VM has stopped; its vCPUs stop at their next exit.
    pub stopped: AtomicBool,
    /// Why it stopped.
    pub stop: Mutex<Option<StopReason>>,
    /// The stop has been reported in full (last line printed).
    pub reported: AtomicBool,
    /// Aborts injected so far.
    pub faults: AtomicU32,
    /// Rate limit of the abort log lines.
    pub fault_log: Mutex<RateLimit>,
    /// Where the kernel starts (IPA) and the DTB (IPA) for vCPU 0.
    pub entry: (u64, u64),
    /// The manifest record, kept to reload the images on SYSTEM_RESET.
    pub spec: VmSpec<'static>,
    /// Each vCPU is inside the guest right now (between entry and exit).
    pub running: [AtomicBool; MAX_VCPUS],
    /// Times the VM was restarted by SYSTEM_RESET.
    pub resets: AtomicU32,
    /// Hypervisor VA of the colour-matched alias of guest RAM.
    pub alias: u64,
    /// The virtio-net NICs.
    pub nics: Vec<Nic>,
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
        })
    }
}

/// Bytes at the top of guest RAM reserved for the device tree.
const DTB_RESERVE: u64 = 2 << 20;

/// Reads the arm64 Image header: (text_offset, image_size).
fn image_header(kernel: &[u8]) -> Option<(u64, u64)> {
    let word = |at: usize| kernel.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    if kernel.get(0x38..0x3c)? != b"ARM\x64" {
        return None;
    }
    let size = word(16)?;
    // image_size 0 means an old kernel: text_offset is then 0x80000.
    if size == 0 {
        Some((0x80000, kernel.len() as u64))
    } else {
        Some((word(8)?, size))
    }
}

impl Vm {
    /// Builds a VM from its manifest record: memory, stage-2, images, DTB.
    pub fn create(
        index: usize,
        spec: &VmSpec<'static>,
        board: &BoardInfo,
        version: GicVersion,
        cache: &mut CacheSetup,
        ports: &mut [usize],
    ) -> Result<Self, VmError> {
        let ram_ipa = spec.memory_base;
        let ram_size = spec.memory_bytes;
        let ram_pa = FRAMES.lock().alloc(ram_size).ok_or(VmError::NoMemory)?;
        let vcpu_count = (spec.vcpus as usize).clamp(1, MAX_VCPUS);
        let mut tables = PhysTables;
        let ipa_bits = board.ipa_bits;
        let mut stage2 = PageTable::new(&mut tables, Geometry::stage2(ipa_bits).ok_or(VmError::Stage2)?)
            .map_err(|_| VmError::Stage2)?;
        stage2.map::<Stage2Format, _>(&mut tables, ram_ipa, ram_pa, ram_size, Attributes::RAM).map_err(|_| VmError::Stage2)?;
        let layout = chroma_platform::BOARD.guest_layout;
        if version == GicVersion::V2 {
            // The GICv2 CPU interface: the hardware virtual CPU interface
            // (GICV) appears where the guest expects GICC.
            if let Some(gicv) = board.gicv {
                stage2
                    .map::<Stage2Format, _>(&mut tables, layout.gicc, HostPhysAddr::new(gicv), 0x2000, Attributes::DEVICE)
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
        let window = crate::mm::ALIAS_WINDOW;
        let mut nics = Vec::new();
        for (i, net) in spec.nets.iter().enumerate() {
            let switch = net.switch_index as usize;
            let port = ports.get_mut(switch).map(|p| {
                *p += 1;
                *p - 1
            });
            // TX kicks start eager; nic::mmio defers them once the driver
            // shows it batches (see nic::poll_vm).
            let device = chroma_virtio::net::new_net_device(net.mac, chroma_virtio::net::NET_FEATURES, 256);
            nics.push(Nic {
                state: Mutex::new(NicState {
                    device,
                    memory: VmMemory::new(ram_ipa, ram_size, alias.raw(), cache.policy, window),
                }),
                switch,
                port: port.unwrap_or(0),
                intid: 32 + layout.virtio_spi + i as u32,
                mac: net.mac,
                counters: NicCounters::default(),
                polling: AtomicBool::new(false),
            });
        }
        let mut vm = Vm {
            index,
            name: String::from(spec.name),
            vmid: (index + 1) as u16,
            stage2,
            ram: (ram_ipa, ram_pa.raw(), ram_size),
            vcpu_count,
            affinity: core::array::from_fn(|i| usize::from(spec.cpu_affinity[i])),
            vgic: Mutex::new(Vgic::new(version, vcpu_count)),
            uart: Mutex::new(VmUart { model: Pl011::new(), line: LineBuffer::new() }),
            power: core::array::from_fn(|i| AtomicU8::new(if i == 0 { power::ON } else { power::OFF })),
            boot: core::array::from_fn(|_| Mutex::new((0, 0))),
            stopped: AtomicBool::new(false),
            stop: Mutex::new(None),
            reported: AtomicBool::new(false),
            faults: AtomicU32::new(0),
            fault_log: Mutex::new(RateLimit::default()),
            entry: (0, 0),
            spec: *spec,
            running: core::array::from_fn(|_| AtomicBool::new(false)),
            resets: AtomicU32::new(0),
            alias: alias.raw(),
            nics,
        };
        vm.entry = vm.load(spec, version)?;
        Ok(vm)
    }

    /// Copies kernel, initrd and a generated DTB into guest RAM and cleans
    /// them to the Point of Coherency. Returns (entry IPA, DTB IPA).
    fn load(&self, spec: &VmSpec, version: GicVersion) -> Result<(u64, u64), VmError> {
        let (ipa, _, size) = self.ram;
        let (text_offset, image_size) = image_header(spec.kernel).ok_or(VmError::BadKernel)?;
        let kernel_offset = text_offset;
        let kernel_end = kernel_offset.checked_add(image_size.max(spec.kernel.len() as u64)).ok_or(VmError::BadKernel)?;
        let dtb_offset = size.checked_sub(DTB_RESERVE).ok_or(VmError::NoRoom)?;
        if kernel_end > dtb_offset {
            return Err(VmError::BadKernel);
        }
        // SAFETY: guest RAM was allocated for this VM and is reached through
        // its alias; no vCPU of the VM runs while it is loaded.
        let ram = unsafe { crate::mm::phys_slice_mut(self.alias, size as usize) };
        ram[kernel_offset as usize..][..spec.kernel.len()].copy_from_slice(spec.kernel);
        let initrd = match spec.initrd {
            Some(initrd) => {
                let start = (dtb_offset.checked_sub(initrd.len() as u64).ok_or(VmError::NoRoom)?) & !0xfff;
                if start < kernel_end {
                    return Err(VmError::NoRoom);
                }
                ram[start as usize..][..initrd.len()].copy_from_slice(initrd);
                Some((ipa + start, ipa + start + initrd.len() as u64))
            }
            None => None,
        };
        let dtb = crate::platform_info::guest_dtb(spec, self.vcpu_count, version, initrd, self.nics.len())
            .map_err(|_| VmError::DeviceTree)?;
        if dtb.len() as u64 > DTB_RESERVE {
            return Err(VmError::DeviceTree);
        }
        ram[dtb_offset as usize..][..dtb.len()].copy_from_slice(&dtb);
        // Loaded code and data must reach the Point of Coherency before the
        // guest runs with its caches off.
        // SAFETY: the range is this VM's RAM alias, mapped for the hypervisor's
        // lifetime; cleaning to the PoC and invalidating the I-cache change
        // no data.
        unsafe {
            chroma_cache::ops::sync_loaded_image(
                &chroma_cache::arch::aarch64::Aarch64CacheOps::new(),
                chroma_mem::HostVirtAddr::new(self.alias),
                size as usize,
            )
        };
        Ok((ipa + kernel_offset, ipa + dtb_offset))
    }

    /// Stops the VM (first reason wins) and reports it. Returns true if this
    /// call stopped it.
    pub fn stop(&self, reason: StopReason) -> bool {
        let mut stop = self.stop.lock();
        if stop.is_some() {
            return false;
        }
        *stop = Some(reason);
        self.stopped.store(true, Ordering::SeqCst);
        drop(stop);
        // Flush a partial console line so nothing the guest printed is lost.
        {
            let mut uart = self.uart.lock();
            if !uart.line.is_empty() {
                let line: Vec<u8> = uart.line.take().to_vec();
                crate::console::vm_line(&self.name, &line);
            }
        }
        crate::nic::report(self.index);
        crate::nic::detach_vm(self.index);
        match reason {
            StopReason::PoweredOff => log::info!("vm {} stopped: powered off", self.name),
            StopReason::Faulted(what, value) => log::info!("vm {} stopped: faulted: {} ({:#x})", self.name, what, value),
        }
        // Only now may the run end: the summary must follow this VM's lines.
        self.reported.store(true, Ordering::SeqCst);
        true
    }

    /// Turns every vCPU off (the first step of a reset).
    pub fn power_off_all(&self) {
        for id in 0..self.vcpu_count {
            self.power[id].store(power::OFF, Ordering::Release);
        }
    }

    /// SYSTEM_RESET from vCPU `caller`: stops the other vCPUs, reloads the
    /// images into guest RAM and restarts vCPU 0 at the kernel entry, as a
    /// board reset would. The caller's vCPU goes off (unless it is vCPU 0,
    /// which restarts).
    pub fn reset(&self, caller: usize) -> Result<(), VmError> {
        // The caller turned every vCPU off and kicked their CPUs. The other vCPUs leave the guest at their next exit (the caller
        // kicks their CPUs); wait until none is inside it any more.
        for id in (0..self.vcpu_count).filter(|&id| id != caller) {
            while self.running[id].load(Ordering::Acquire) {
                core::hint::spin_loop();
            }
        }
        // SAFETY: no vCPU of this VM runs (checked above), so nothing else
        // touches guest RAM while it is cleared and reloaded.
        let ram = unsafe { crate::mm::phys_slice_mut(self.alias, self.ram.2 as usize) };
        ram.fill(0);
        crate::nic::detach_vm(self.index);
        let version = self.vgic.lock().version();
        let entry = self.load(&self.spec, version)?;
        *self.vgic.lock() = Vgic::new(version, self.vcpu_count);
        self.uart.lock().model = Pl011::new();
        self.faults.store(0, Ordering::Relaxed);
        self.resets.fetch_add(1, Ordering::Relaxed);
        *self.boot[0].lock() = entry;
        self.power[0].store(power::ON_PENDING, Ordering::Release);
        Ok(())
    }

    /// Whether the VM has stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}
