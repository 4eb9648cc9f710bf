//! The architecture-neutral state of one VM that exit handling and the
//! scheduler share: its machine (map, GIC version, vCPUs, NICs), the
//! emulated interrupt controller and console, the power state of each vCPU,
//! and why it stopped.
//!
//! Lock order (outer to inner): `vgic`, then `uart`. `boot` and `stop` are
//! leaf locks. The binary's own locks (console, NICs, switches) are taken
//! outside these or after they are released.

use crate::guest_map::{GuestMap, VmShape};
use crate::pl011::Pl011;
use crate::ratelimit::RateLimit;
use crate::vgic::{GicVersion, Vgic, MAX_VCPUS};
use alloc::string::String;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use spin::Mutex;

/// A vCPU's power state, numbered as PSCI AFFINITY_INFO reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Power {
    /// Running or runnable.
    On = 0,
    /// Off.
    Off = 1,
    /// CPU_ON accepted (or the VM restarted): starts at its next schedule.
    OnPending = 2,
}

impl Power {
    fn from_raw(raw: u8) -> Self {
        match raw {
            0 => Power::On,
            2 => Power::OnPending,
            _ => Power::Off,
        }
    }
}

/// Why a VM stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// PSCI SYSTEM_OFF.
    PoweredOff,
    /// Its last vCPU called PSCI CPU_OFF: nothing can run it again.
    LastCpuOff,
    /// The guest faulted past the limit or did something that cannot be
    /// answered: what, and a value for the report.
    Faulted(&'static str, u64),
}

impl StopReason {
    /// Whether the stop counts as clean.
    pub fn clean(&self) -> bool {
        matches!(self, StopReason::PoweredOff | StopReason::LastCpuOff)
    }
}

/// Where a vCPU starts: the entry point and the value of its first argument
/// register (the DTB for the boot vCPU, the context id for CPU_ON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootRequest {
    /// Entry point (IPA). For an AArch32 CPU_ON, bit 0 is the T bit (the
    /// entry point is Thumb code).
    pub entry: u64,
    /// The DTB's IPA for the kernel's boot protocol, the context id for
    /// CPU_ON.
    pub argument: u64,
    /// A PSCI CPU_ON (the argument goes in x0 / r0) rather than the
    /// kernel's boot protocol (AArch64: x0 = DTB; AArch32: r0 = 0,
    /// r1 = ~0, r2 = DTB).
    pub cpu_on: bool,
}

/// Guest RAM as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRegion {
    /// First guest-physical address.
    pub ipa: u64,
    /// Size in bytes.
    pub size: u64,
}

impl RamRegion {
    /// Whether `ipa` lies in RAM.
    pub fn contains(&self, ipa: u64) -> bool {
        ipa.checked_sub(self.ipa)
            .is_some_and(|offset| offset < self.size)
    }
}

/// Bytes of guest RAM a SYSTEM_RESET clears (zeroes and cleans to the
/// Point of Coherency) per turn of its physical CPU: about a millisecond of
/// work even under an emulator, so a VM with gigabytes of RAM cannot stall
/// the other vCPUs of its CPU while it resets (issue 10).
pub const RESET_CHUNK: u64 = 2 << 20;

/// A SYSTEM_RESET in progress: how much of guest RAM is cleared. The VM's
/// vCPUs are all off meanwhile; the CPU of vCPU 0 clears one chunk per turn
/// ([`crate::run::runnable`] counts the work as vCPU 0's), then reloads the
/// images and restarts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetProgress {
    size: u64,
    cleared: u64,
}

impl ResetProgress {
    /// Nothing of `size` bytes cleared yet.
    pub const fn new(size: u64) -> Self {
        Self { size, cleared: 0 }
    }

    /// The next `(offset, length)` to clear, at most `chunk` bytes (at
    /// least one), counted as done; `None` once all of RAM is.
    pub fn next_chunk(&mut self, chunk: u64) -> Option<(u64, u64)> {
        let left = self.size.checked_sub(self.cleared).filter(|&l| l > 0)?;
        let length = left.min(chunk.max(1));
        let offset = self.cleared;
        self.cleared = offset.saturating_add(length);
        Some((offset, length))
    }

    /// Bytes cleared so far.
    pub fn cleared(&self) -> u64 {
        self.cleared
    }
}

/// Injected faults after which a VM is considered to keep faulting and stopped.
pub const FAULT_LIMIT: u32 = 1000;

/// The shared, architecture-neutral state of one VM.
pub struct VmCore {
    /// Index in the system's VM list.
    pub index: usize,
    /// Unique name from the configuration.
    pub name: String,
    /// The machine the guest sees.
    pub map: GuestMap,
    /// GIC version, vCPU and NIC counts.
    pub shape: VmShape,
    /// Guest RAM.
    pub ram: RamRegion,
    /// Physical CPU of each vCPU.
    pub affinity: [usize; MAX_VCPUS],
    /// Interrupt controller model.
    pub vgic: Mutex<Vgic>,
    /// Console UART model.
    pub uart: Mutex<Pl011>,
    power: [AtomicU8; MAX_VCPUS],
    boot: [Mutex<BootRequest>; MAX_VCPUS],
    stopped: AtomicBool,
    stop: Mutex<Option<StopReason>>,
    /// Each vCPU is inside the guest right now (between entry and exit).
    pub running: [AtomicBool; MAX_VCPUS],
    /// Faults injected (aborts, undefined instructions) since the last reset.
    pub faults: AtomicU32,
    /// Rate limit of the fault log lines.
    pub fault_log: Mutex<RateLimit>,
    /// Times the VM was restarted by SYSTEM_RESET.
    pub resets: AtomicU32,
    /// The SYSTEM_RESET in progress, if any (a leaf lock).
    reset: Mutex<Option<ResetProgress>>,
}

impl VmCore {
    /// A VM whose vCPU 0 starts at `boot` and whose other vCPUs are off.
    pub fn new(
        index: usize,
        name: String,
        map: GuestMap,
        shape: VmShape,
        ram: RamRegion,
        affinity: [usize; MAX_VCPUS],
        boot: BootRequest,
    ) -> Self {
        let vcpu_count = shape.vcpu_count.clamp(1, MAX_VCPUS);
        let shape = VmShape {
            vcpu_count,
            ..shape
        };
        Self {
            index,
            name,
            map,
            shape,
            ram,
            affinity,
            vgic: Mutex::new(Vgic::new(shape.gic, vcpu_count)),
            uart: Mutex::new(Pl011::new()),
            power: core::array::from_fn(|i| {
                AtomicU8::new(if i == 0 { Power::OnPending } else { Power::Off } as u8)
            }),
            boot: core::array::from_fn(|i| {
                Mutex::new(if i == 0 { boot } else { BootRequest::default() })
            }),
            stopped: AtomicBool::new(false),
            stop: Mutex::new(None),
            running: core::array::from_fn(|_| AtomicBool::new(false)),
            faults: AtomicU32::new(0),
            fault_log: Mutex::new(RateLimit::default()),
            resets: AtomicU32::new(0),
            reset: Mutex::new(None),
        }
    }

    /// vCPUs of the VM.
    pub fn vcpu_count(&self) -> usize {
        self.shape.vcpu_count
    }

    /// The guest-visible GIC version.
    pub fn gic_version(&self) -> GicVersion {
        self.shape.gic
    }

    /// Whether the guest's EL1 runs in AArch32 state.
    pub fn is_aarch32(&self) -> bool {
        self.shape.arch == chroma_manifest::GuestArch::Aarch32
    }

    /// vCPU `id`'s power state.
    pub fn power(&self, id: usize) -> Power {
        self.power
            .get(id)
            .map_or(Power::Off, |p| Power::from_raw(p.load(Ordering::Acquire)))
    }

    /// Turns vCPU `id` off.
    pub fn power_off(&self, id: usize) {
        if let Some(p) = self.power.get(id) {
            p.store(Power::Off as u8, Ordering::Release);
        }
    }

    /// Whether every vCPU is off (none running, none starting).
    pub fn all_off(&self) -> bool {
        (0..self.vcpu_count()).all(|id| self.power(id) == Power::Off)
    }

    /// Turns every vCPU off (the first step of a reset).
    pub fn power_off_all(&self) {
        (0..self.vcpu_count()).for_each(|id| self.power_off(id));
    }

    /// Asks for vCPU `id` to start at `request` (PSCI CPU_ON). Fails with
    /// the vCPU's state when it is not off.
    pub fn request_start(&self, id: usize, request: BootRequest) -> Result<(), Power> {
        let Some(power) = self.power.get(id) else {
            return Err(Power::Off);
        };
        // Hold the boot slot so the starter never sees a half-written request.
        let mut boot = self.boot[id].lock();
        match power.compare_exchange(
            Power::Off as u8,
            Power::OnPending as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                *boot = request;
                Ok(())
            }
            Err(state) => Err(Power::from_raw(state)),
        }
    }

    /// Restarts vCPU 0 at `request` (after a reset reloaded the images).
    pub fn restart(&self, request: BootRequest) {
        *self.boot[0].lock() = request;
        self.power[0].store(Power::OnPending as u8, Ordering::Release);
    }

    /// Takes vCPU `id`'s pending start: the request, with the vCPU now on.
    /// `None` when it is not waiting to start.
    pub fn take_start(&self, id: usize) -> Option<BootRequest> {
        let power = self.power.get(id)?;
        let boot = self.boot[id].lock();
        power
            .compare_exchange(
                Power::OnPending as u8,
                Power::On as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .ok()
            .map(|_| *boot)
    }

    /// Records why the VM stops (the first reason wins). True if this call
    /// stopped it; its vCPUs leave the guest at their next exit.
    pub fn set_stopped(&self, reason: StopReason) -> bool {
        let mut stop = self.stop.lock();
        if stop.is_some() {
            return false;
        }
        *stop = Some(reason);
        self.stopped.store(true, Ordering::SeqCst);
        true
    }

    /// Whether the VM has stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Why it stopped, once it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.stop.lock()
    }

    /// Starts clearing RAM for a SYSTEM_RESET (the caller has turned every
    /// vCPU off). A reset already in progress starts over.
    pub fn begin_reset(&self) {
        *self.reset.lock() = Some(ResetProgress::new(self.ram.size));
    }

    /// Whether a SYSTEM_RESET is still clearing RAM.
    pub fn reset_in_progress(&self) -> bool {
        self.reset.lock().is_some()
    }

    /// The next chunk of RAM the reset must clear, `(offset, length)`, at
    /// most [`RESET_CHUNK`] bytes. `None` when there is nothing (left) to
    /// clear: the reset is then over (no longer in progress).
    pub fn next_reset_chunk(&self) -> Option<(u64, u64)> {
        let mut reset = self.reset.lock();
        let chunk = reset.as_mut()?.next_chunk(RESET_CHUNK);
        if chunk.is_none() {
            *reset = None;
        }
        chunk
    }

    /// Puts the emulated devices back to their reset state (SYSTEM_RESET).
    pub fn reset_devices(&self) {
        *self.vgic.lock() = Vgic::new(self.shape.gic, self.vcpu_count());
        *self.uart.lock() = Pl011::new();
        self.faults.store(0, Ordering::Relaxed);
        self.resets.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_map::QEMU_VIRT;

    fn vm() -> VmCore {
        VmCore::new(
            3,
            "t".into(),
            QEMU_VIRT,
            VmShape {
                gic: GicVersion::V3,
                vcpu_count: 2,
                nic_count: 0,
                arch: chroma_manifest::GuestArch::Aarch64,
            },
            RamRegion {
                ipa: 0x4000_0000,
                size: 0x100_0000,
            },
            [0; MAX_VCPUS],
            BootRequest {
                entry: 0x4008_0000,
                argument: 0x40f0_0000,
                cpu_on: false,
            },
        )
    }

    #[test]
    fn psci_power_states_move_off_pending_on() {
        let vm = vm();
        assert_eq!(
            (vm.power(0), vm.power(1), vm.power(7), vm.power(99)),
            (Power::OnPending, Power::Off, Power::Off, Power::Off)
        );
        let request = BootRequest {
            entry: 0x4000_1000,
            argument: 5,
            cpu_on: true,
        };
        assert_eq!(vm.request_start(1, request), Ok(()));
        assert_eq!(vm.request_start(1, request), Err(Power::OnPending));
        assert_eq!(vm.take_start(1), Some(request));
        assert_eq!(vm.request_start(1, request), Err(Power::On));
        assert_eq!(
            vm.request_start(99, request),
            Err(Power::Off),
            "no such vCPU"
        );
        vm.power_off_all();
        assert_eq!((vm.power(0), vm.power(1)), (Power::Off, Power::Off));
        assert_eq!(vm.take_start(0), None);
        vm.restart(request);
        assert_eq!(vm.take_start(0), Some(request));
    }

    #[test]
    fn the_first_stop_reason_wins() {
        let vm = vm();
        assert!(!vm.is_stopped());
        assert!(vm.set_stopped(StopReason::Faulted("x", 1)));
        assert!(!vm.set_stopped(StopReason::PoweredOff));
        assert_eq!(vm.stop_reason(), Some(StopReason::Faulted("x", 1)));
        assert!(
            vm.is_stopped()
                && !StopReason::Faulted("x", 1).clean()
                && StopReason::PoweredOff.clean()
        );
    }

    #[test]
    fn a_reset_clears_ram_in_bounded_chunks_then_ends() {
        let vm = vm();
        assert!(!vm.reset_in_progress() && vm.next_reset_chunk().is_none());
        vm.begin_reset();
        assert!(vm.reset_in_progress());
        let mut covered = 0;
        let mut chunks = 0;
        while let Some((offset, length)) = vm.next_reset_chunk() {
            assert_eq!(offset, covered, "chunks in order, no gap, no overlap");
            assert!(length > 0 && length <= RESET_CHUNK);
            covered += length;
            chunks += 1;
        }
        assert_eq!((covered, chunks), (vm.ram.size, vm.ram.size / RESET_CHUNK));
        assert!(!vm.reset_in_progress(), "done once all of RAM is cleared");
        // A size that is not a multiple of the chunk ends with a short one.
        let mut odd = ResetProgress::new(RESET_CHUNK + 5);
        assert_eq!(odd.next_chunk(RESET_CHUNK), Some((0, RESET_CHUNK)));
        assert_eq!(odd.next_chunk(RESET_CHUNK), Some((RESET_CHUNK, 5)));
        assert_eq!(
            (odd.next_chunk(RESET_CHUNK), odd.cleared()),
            (None, RESET_CHUNK + 5)
        );
    }

    #[test]
    fn a_reset_clears_the_devices_and_counts() {
        let vm = vm();
        vm.faults.store(7, Ordering::Relaxed);
        vm.uart.lock().receive(b'x');
        vm.reset_devices();
        assert_eq!(vm.faults.load(Ordering::Relaxed), 0);
        assert_eq!(vm.resets.load(Ordering::Relaxed), 1);
        assert!(!vm.uart.lock().interrupt_level());
        assert!(
            vm.ram.contains(0x40ff_ffff) && !vm.ram.contains(0x4100_0000) && !vm.ram.contains(0)
        );
    }
}
