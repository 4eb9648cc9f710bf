//! Exit dispatch: what a vCPU's trap means and what the hypervisor answers.
//!
//! The architecture back-end decodes its syndrome into a [`Trap`] and gives
//! access to the trapped vCPU through [`GuestCpu`] (registers by number, the
//! PC, injecting an exception). [`handle_exit`] routes MMIO to the emulated
//! devices through the VM's [`GuestMap`](crate::guest_map::GuestMap),
//! answers HVC/SMC (PSCI, SMCCC), WFI/WFE and trapped system registers, and
//! gives everything a guest may not do its architectural answer: an external
//! abort for an access outside RAM and devices, UNDEFINED for an instruction
//! chroma does not emulate. What reaches outside the VM (its NICs, the
//! console, other physical CPUs, stopping or resetting it) goes through
//! [`ExitHost`], which the binary implements.
//!
//! # CPU state shared between VMs
//!
//! Several VMs' vCPUs take turns on one physical CPU, so nothing one VM
//! writes to per-CPU state may be seen by, or act on, another. The EL1
//! registers that are architecturally the guest's are switched with the
//! vCPU by the back-end (pointer-authentication keys included, where the
//! CPU has them, so a VM can neither read nor replace another's keys).
//! What cannot be switched traps, and is answered here:
//!
//! - debug, OS-lock and PMU registers ([`TrappedRegister::Debug`],
//!   [`TrappedRegister::PerformanceMonitor`]) and the auxiliary control
//!   register ([`TrappedRegister::AuxiliaryControl`]) read as zero and
//!   ignore writes: a VM cannot arm breakpoints in, count events of, or
//!   change IMPLEMENTATION DEFINED behaviour (prefetching, coherency,
//!   errata workarounds) of the next VM, nor read what it left;
//! - the IMPLEMENTATION DEFINED register and instruction space
//!   ([`TrappedRegister::ImplementationDefined`]) is UNDEFINED: its
//!   registers (CPU and L2 control, error records, ...) are per CPU or per
//!   cluster and cannot be given one copy per VM;
//! - data cache maintenance by set/way
//!   ([`TrappedRegister::DataCacheSetWay`]) is performed by the back-end
//!   as a clean and invalidate of the same set and way
//!   ([`GuestCpu::clean_invalidate_data_cache_by_set_way`]): a line at a
//!   set and way may hold another VM's dirty data, which an invalidate
//!   would discard (losing its writes, or showing it stale memory).
// Guest input is parsed here: an index or slice must not panic (issue 10).
#![deny(clippy::indexing_slicing)]

use crate::exit::{AccessWidth, Exit, MmioAccess, SysRegAccess, TrappedRegister};
use crate::guest_map::GuestDevice;
use crate::pl011::{Pl011, Pl011Effect};
use crate::psci::{PsciCall, PsciReturn, VERSION_1_1};
use crate::vgic::{GicFrame, GicVersion, VcpuMask};
use crate::vm::{BootRequest, Power, StopReason, VmCore, FAULT_LIMIT};
use core::sync::atomic::Ordering;

/// A trap as the back-end decoded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trap {
    /// What happened.
    pub exit: Exit,
    /// Bytes of the trapped instruction (4, or 2 for a 16-bit Thumb one).
    pub instruction_length: u8,
    /// The raw syndrome, for reports.
    pub syndrome: u64,
}

/// What kind of synchronous external abort to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExternalAbort {
    /// An instruction fetch (else a data access). The back-end reports the
    /// fault address the guest trapped with.
    pub instruction_fetch: bool,
    /// A store (data aborts only).
    pub write: bool,
}

/// The trapped vCPU on the current physical CPU, through its back-end.
///
/// Register numbers are the architecture's (AArch64 x0..x30, AArch32
/// r0..r14); reading one that the trap named as "zero register" reads 0 and
/// writing it is ignored.
pub trait GuestCpu {
    /// General-purpose register `index`.
    fn register(&self, index: u8) -> u64;
    /// Writes general-purpose register `index`.
    fn set_register(&mut self, index: u8, value: u64);
    /// The guest PC.
    fn pc(&self) -> u64;
    /// Moves the PC past the trapped instruction (`length` bytes).
    fn skip_instruction(&mut self, length: u8);
    /// Takes a synchronous external abort at the guest's exception vector.
    fn inject_external_abort(&mut self, abort: ExternalAbort);
    /// Takes an undefined-instruction exception at the guest's vector.
    fn inject_undefined(&mut self, trap: &Trap);
    /// Whether the trap came from the guest's kernel (EL1 / PL1) rather than
    /// its userspace (EL0 / PL0).
    fn trapped_in_kernel(&self) -> bool;
    /// Whether the guest runs with its MMU and data cache on (its memory
    /// accesses are cacheable), for the NICs' cache policy.
    fn memory_cacheable(&self) -> bool;
    /// Cleans and invalidates, in this physical CPU's caches, the data or
    /// unified cache line at the level, set and way that `operand` (the
    /// guest's set/way operand, as it wrote it) names. The back-end uses
    /// only the operand's architectural fields; whatever they name, the
    /// line is cleaned before it is invalidated, so no data is lost.
    fn clean_invalidate_data_cache_by_set_way(&mut self, operand: u64);
}

/// What the scheduler does after an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Re-enter the same vCPU.
    Continue,
    /// The vCPU waits for an interrupt.
    Wait,
    /// Give the CPU to the next vCPU.
    Yield,
    /// The vCPU is off (CPU_OFF, or its VM stopped or restarts).
    Off,
}

/// A device access refused: the guest gets an external abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoDevice;

impl core::fmt::Display for NoDevice {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("no device at this address")
    }
}

/// What exit handling needs from around the VM.
pub trait ExitHost {
    /// An access to virtio-mmio transport `nic` of `vm`; returns the value
    /// read (ignored for writes). `cacheable` says how the guest maps memory.
    fn virtio_access(
        &self,
        vm: &VmCore,
        nic: usize,
        offset: u64,
        width: AccessWidth,
        write: Option<u64>,
        cacheable: bool,
    ) -> u64;
    /// A byte the guest transmitted on its console.
    fn console_output(&self, vm: &VmCore, byte: u8);
    /// The emulated UART of `vm` changed (a trapped access; called with its
    /// lock held, `uart` the model): whatever serves the guest's reads
    /// without a trap (a read-only register image) must now show the new
    /// state, or stop serving them.
    fn uart_changed(&self, vm: &VmCore, uart: &Pl011) {
        let _ = (vm, uart);
    }
    /// Makes the physical CPUs of the vCPUs in `vcpus` look at them again.
    fn kick(&self, vm: &VmCore, vcpus: VcpuMask);
    /// Stops the VM for `reason` and reports it.
    fn stop(&self, vm: &VmCore, reason: StopReason);
    /// Restarts the VM from its images (PSCI SYSTEM_RESET from `caller`).
    fn system_reset(&self, vm: &VmCore, caller: usize);
    /// Logs a guest-caused fault (rate-limited by the caller).
    fn report_fault(&self, vm: &VmCore, fault: FaultReport);
    /// An access to the GICv2 CPU interface of `vcpu` (running on this
    /// CPU) at `offset`, on a board whose CPU interface is emulated in
    /// software ([`crate::soft_gicv`]); returns the value read (ignored for
    /// writes), or `None` where there is none to answer: the access is
    /// then an external abort. A board with a hardware virtual CPU
    /// interface maps it at the guest's GICC window, and accesses never
    /// trap there.
    fn gic_cpu_interface(
        &self,
        vm: &VmCore,
        vcpu: usize,
        offset: u64,
        width: AccessWidth,
        write: Option<u64>,
    ) -> Option<u64> {
        let _ = (vm, vcpu, offset, width, write);
        None
    }
}

/// A guest-caused fault, for the (rate-limited) log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultReport {
    /// An access outside RAM and devices was answered with an external abort.
    Abort {
        /// The guest-physical address.
        ipa: u64,
        /// Fetch, read or write.
        kind: &'static str,
        /// The guest PC.
        pc: u64,
        /// Faults so far.
        count: u32,
    },
    /// An instruction chroma does not emulate was answered with UNDEFINED.
    Undefined {
        /// The syndrome.
        syndrome: u64,
        /// The guest PC.
        pc: u64,
        /// Faults so far.
        count: u32,
    },
}

/// SMCCC_VERSION's answer: 1.1.
const SMCCC_VERSION_1_1: u64 = 0x1_0001;
/// SMCCC function id bit 30: the SMC64/HVC64 calling convention.
const SMC64_BIT: u64 = 1 << 30;
/// MIGRATE_INFO_TYPE's answer: "Trusted OS not present or does not require migration".
const MIGRATE_INFO_TYPE_NONE: u64 = 2;

/// Handles a synchronous exit of vCPU `vcpu` of `vm`.
pub fn handle_exit<C: GuestCpu, H: ExitHost>(
    vm: &VmCore,
    vcpu: usize,
    cpu: &mut C,
    trap: &Trap,
    host: &H,
) -> Action {
    match trap.exit {
        Exit::Mmio(access) => match emulate_mmio(vm, vcpu, cpu, &access, host) {
            Ok(kick) => complete_mmio(vm, cpu, trap, &access, kick, host),
            Err(NoDevice) => inject_abort(vm, cpu, access.ipa.raw(), false, access.write, host),
        },
        Exit::ReadOnlyWrite(access) => {
            // The pages stage 2 maps read-only are register images: the
            // first page of virtio-mmio transports, and the UART's while its
            // receive FIFO is empty. A store there is emulated as if the
            // page were unmapped; one to a virtio slot with no device is
            // ignored, as QEMU ignores one to an empty transport (the image
            // reads as one). Any other page is one the trap handler could
            // not find (the guest changed its stage 1 meanwhile): the guest
            // retries the store, which faults again if it must.
            let page = access.ipa.raw() & !(crate::pagetable::PAGE_SIZE - 1);
            if page != vm.map.virtio_mmio.base && page != vm.map.uart.base {
                return Action::Continue;
            }
            let kick = emulate_mmio(vm, vcpu, cpu, &access, host).unwrap_or(0);
            complete_mmio(vm, cpu, trap, &access, kick, host)
        }
        Exit::AbortNoSyndrome { ipa, fetch } => {
            inject_abort(vm, cpu, ipa.raw(), fetch, false, host)
        }
        // HVC returns past itself: the PC already points at the next instruction.
        Exit::Hypercall { immediate: 0 } => hypercall(vm, vcpu, cpu, host),
        // The SMC Calling Convention only uses HVC #0; other immediates are
        // a hypervisor's own ABI (Xen's #0xEA1), which chroma has none of.
        // Answered NOT_SUPPORTED, as KVM does: never taken as the call in x0.
        Exit::Hypercall { .. } => {
            cpu.set_register(0, PsciReturn::NotSupported.to_register());
            Action::Continue
        }
        Exit::SecureMonitorCall { .. } => {
            // chroma offers PSCI over HVC only; SMC answers NOT_SUPPORTED (SMCCC).
            cpu.set_register(0, PsciReturn::NotSupported.to_register());
            cpu.skip_instruction(trap.instruction_length);
            Action::Continue
        }
        Exit::ConditionFailed => {
            cpu.skip_instruction(trap.instruction_length);
            Action::Continue
        }
        Exit::WaitForInterrupt => {
            cpu.skip_instruction(trap.instruction_length);
            Action::Wait
        }
        Exit::WaitForEvent => {
            cpu.skip_instruction(trap.instruction_length);
            Action::Yield
        }
        Exit::SysReg(SysRegAccess {
            register: TrappedRegister::GicSgi1r,
            write: true,
            value_register,
            high_register,
        }) if vm.gic_version() == GicVersion::V3 => {
            let value = match high_register {
                // MCRR: Rt2:Rt.
                Some(high) => cpu.register(value_register) & 0xffff_ffff | cpu.register(high) << 32,
                None => cpu.register(value_register),
            };
            cpu.skip_instruction(trap.instruction_length);
            let kick = vm.vgic.lock().write_sgi1r(vcpu, value);
            host.kick(vm, kick);
            Action::Continue
        }
        Exit::SysReg(SysRegAccess {
            register:
                TrappedRegister::Debug
                | TrappedRegister::PerformanceMonitor
                | TrappedRegister::AuxiliaryControl,
            write,
            value_register,
            high_register,
        }) => {
            // Shared by every VM on the physical CPU: the VM sees none
            // (reads as zero, writes ignored), so it can neither arm a
            // breakpoint in, count events of, nor change the IMPLEMENTATION
            // DEFINED controls (ACTLR_EL1) of another VM.
            if !write {
                cpu.set_register(value_register, 0);
                if let Some(high) = high_register {
                    cpu.set_register(high, 0);
                }
            }
            cpu.skip_instruction(trap.instruction_length);
            Action::Continue
        }
        Exit::SysReg(SysRegAccess {
            register: TrappedRegister::DataCacheSetWay(_),
            write: true,
            value_register,
            ..
        }) => {
            // Invalidate, clean, or both: always clean and invalidate, with
            // the guest's operand. An invalidate alone could discard
            // another VM's dirty line at that set and way; a clean and
            // invalidate writes it back first, so nothing is lost and the
            // guest still gets what it asked for (its line is no longer in
            // that cache, and is in memory).
            let operand = cpu.register(value_register);
            cpu.clean_invalidate_data_cache_by_set_way(operand);
            cpu.skip_instruction(trap.instruction_length);
            Action::Continue
        }
        // IMPLEMENTATION DEFINED registers and instructions (and any other
        // trapped register chroma does not emulate) are UNDEFINED: the
        // guest sees a CPU without them.
        Exit::SysReg(SysRegAccess {
            register: TrappedRegister::ImplementationDefined,
            ..
        }) => inject_undefined(vm, cpu, trap, host),
        Exit::SysReg(_) | Exit::Unhandled { .. } => inject_undefined(vm, cpu, trap, host),
        Exit::Interrupt => Action::Continue,
    }
}

/// The value a load of `access` leaves in its register: truncated to the
/// access width, sign-extended if asked, and cut to 32 bits for a W register.
pub fn load_result(access: &MmioAccess, value: u64) -> u64 {
    let bits = access.width.bytes() * 8;
    let mut value = if bits == 64 {
        value
    } else {
        value & ((1 << bits) - 1)
    };
    if access.sign_extend && bits < 64 && value & (1 << (bits - 1)) != 0 {
        value |= !((1u64 << bits) - 1);
    }
    if !access.register_64bit {
        value &= 0xffff_ffff;
    }
    value
}

/// Emulates an access to a device. Returns vCPUs to kick.
/// Finishes an emulated access: the base register's writeback (an AArch32
/// load or store with writeback), the PC past the instruction, and the
/// vCPUs the access made runnable kicked.
/// The console's common exit, taken without the vGIC: a store of one
/// character to the UART's data register while its transmit interrupt is
/// latched already, which changes no register a read sees and no interrupt
/// line (only the first character after the guest clears the latch does).
/// Handles it (the byte to the console, the PC past the store) and returns
/// true, or returns false having changed nothing: the exit then takes the
/// whole path ([`handle_exit`], after the vGIC's sync).
///
/// The caller may then skip reading back and reloading the list
/// registers: nothing here makes an interrupt pending or changes one.
pub fn transmit_fast<C: GuestCpu, H: ExitHost>(
    vm: &VmCore,
    cpu: &mut C,
    trap: &Trap,
    host: &H,
) -> bool {
    let (Exit::Mmio(access) | Exit::ReadOnlyWrite(access)) = trap.exit else {
        return false;
    };
    if !access.write || access.width == AccessWidth::Double {
        return false;
    }
    if vm.map.uart.offset_of(access.ipa.raw()) != Some(crate::pl011::DATA_REGISTER) {
        return false;
    }
    let value = crate::exit::low_word(cpu.register(access.register));
    let Some(byte) = vm.uart.lock().transmit_unchanged(value) else {
        return false;
    };
    host.console_output(vm, byte);
    complete_mmio(vm, cpu, trap, &access, 0, host);
    true
}

fn complete_mmio<C: GuestCpu, H: ExitHost>(
    vm: &VmCore,
    cpu: &mut C,
    trap: &Trap,
    access: &MmioAccess,
    kick: VcpuMask,
    host: &H,
) -> Action {
    if let Some(writeback) = access.writeback {
        cpu.set_register(writeback.register, writeback.value);
    }
    cpu.skip_instruction(trap.instruction_length);
    if kick != 0 {
        host.kick(vm, kick);
    }
    Action::Continue
}

fn emulate_mmio<C: GuestCpu, H: ExitHost>(
    vm: &VmCore,
    vcpu: usize,
    cpu: &mut C,
    access: &MmioAccess,
    host: &H,
) -> Result<VcpuMask, NoDevice> {
    let value = cpu.register(access.register);
    let device = vm.map.route(access.ipa.raw(), vm.shape).ok_or(NoDevice)?;
    let gic_frame = match device {
        GuestDevice::GicDistributor(offset) => Some(GicFrame::Distributor(offset)),
        GuestDevice::GicRedistributor(n, offset) => Some(GicFrame::Redistributor(n, offset)),
        _ => None,
    };
    if let Some(frame) = gic_frame {
        let mut vgic = vm.vgic.lock();
        return if access.write {
            vgic.mmio_write(vcpu, frame, access.width, value)
                .map_err(|_| NoDevice)
        } else {
            let v = vgic
                .mmio_read(vcpu, frame, access.width)
                .map_err(|_| NoDevice)?;
            cpu.set_register(access.register, load_result(access, v));
            Ok(0)
        };
    }
    match device {
        GuestDevice::GicCpuInterface(offset) => {
            let write = access.write.then_some(value);
            let v = host
                .gic_cpu_interface(vm, vcpu, offset, access.width, write)
                .ok_or(NoDevice)?;
            if !access.write {
                cpu.set_register(access.register, load_result(access, v));
            }
            Ok(0)
        }
        GuestDevice::VirtioMmio(nic, offset) => {
            let write = access.write.then_some(value);
            let v =
                host.virtio_access(vm, nic, offset, access.width, write, cpu.memory_cacheable());
            if !access.write {
                cpu.set_register(access.register, load_result(access, v));
            }
            Ok(0)
        }
        GuestDevice::Uart(offset) => {
            // PL011 registers are 32-bit; Linux's earlycon also uses 8-bit
            // data accesses, which the model accepts at the register's address.
            if access.width == AccessWidth::Double {
                return Err(NoDevice);
            }
            // The interrupt line follows the model under both locks (vGIC
            // first, the lock order): set after the UART lock was dropped, a
            // stale level from one vCPU could overwrite a newer one from
            // another vCPU or from console input, and lose the interrupt.
            let (kick, transmitted) = {
                let mut vgic = vm.vgic.lock();
                let mut uart = vm.uart.lock();
                let before = uart.read_state();
                let transmitted = if access.write {
                    // The model keeps the register's low 32 bits.
                    match uart.write(offset, crate::exit::low_word(value)) {
                        Some(Pl011Effect::Transmit(byte)) => Some(byte),
                        _ => None,
                    }
                } else {
                    let v = uart.read(offset).ok_or(NoDevice)?;
                    cpu.set_register(access.register, load_result(access, u64::from(v)));
                    None
                };
                // Most accesses (a byte transmitted, the TX interrupt
                // already latched) change nothing a read sees.
                if uart.read_state() != before {
                    host.uart_changed(vm, &uart);
                }
                (
                    vgic.set_level(vm.map.uart_intid, uart.interrupt_level()),
                    transmitted,
                )
            };
            if let Some(byte) = transmitted {
                host.console_output(vm, byte);
            }
            Ok(kick)
        }
        GuestDevice::GicDistributor(_) | GuestDevice::GicRedistributor(..) => Err(NoDevice),
    }
}

/// A guest fault that is answered: how many the VM has taken, and whether
/// the (rate-limited) log reports this one.
struct CountedFault {
    count: u32,
    report: bool,
}

/// Counts a guest fault; stops the VM when it keeps faulting (`None`).
///
/// Faults its userspace takes are the guest kernel's business (a process
/// that faults is killed by its kernel): they are answered and logged
/// (rate-limited) but never stop the VM.
fn count_fault<C: GuestCpu, H: ExitHost>(
    vm: &VmCore,
    cpu: &C,
    host: &H,
    what: &'static str,
    value: u64,
) -> Option<CountedFault> {
    let count = if cpu.trapped_in_kernel() {
        let count = vm.faults.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if count >= FAULT_LIMIT {
            host.stop(vm, StopReason::Faulted(what, value));
            return None;
        }
        count
    } else {
        vm.faults.load(Ordering::Relaxed)
    };
    Some(CountedFault {
        count,
        report: vm.fault_log.lock().allow(),
    })
}

/// Answers an access the guest may not make: a synchronous external abort
/// at its exception vector, as Xen and KVM do.
fn inject_abort<C: GuestCpu, H: ExitHost>(
    vm: &VmCore,
    cpu: &mut C,
    ipa: u64,
    fetch: bool,
    write: bool,
    host: &H,
) -> Action {
    let Some(CountedFault { count, report }) = count_fault(
        vm,
        cpu,
        host,
        "keeps faulting: external aborts injected",
        u64::from(FAULT_LIMIT),
    ) else {
        return Action::Off;
    };
    if report {
        let kind = if fetch {
            "instruction fetch"
        } else if write {
            "write"
        } else {
            "read"
        };
        host.report_fault(
            vm,
            FaultReport::Abort {
                ipa,
                kind,
                pc: cpu.pc(),
                count,
            },
        );
    }
    cpu.inject_external_abort(ExternalAbort {
        instruction_fetch: fetch,
        write: write && !fetch,
    });
    Action::Continue
}

/// Answers an instruction chroma does not emulate with UNDEFINED.
fn inject_undefined<C: GuestCpu, H: ExitHost>(
    vm: &VmCore,
    cpu: &mut C,
    trap: &Trap,
    host: &H,
) -> Action {
    let Some(CountedFault { count, report }) = count_fault(
        vm,
        cpu,
        host,
        "keeps faulting: undefined instructions injected",
        trap.syndrome,
    ) else {
        return Action::Off;
    };
    if report {
        host.report_fault(
            vm,
            FaultReport::Undefined {
                syndrome: trap.syndrome,
                pc: cpu.pc(),
                count,
            },
        );
    }
    cpu.inject_undefined(trap);
    Action::Continue
}

/// The vCPU with MPIDR affinity `target` (Aff0 = vCPU id, others zero).
fn vcpu_of(vm: &VmCore, target: u64) -> Option<usize> {
    let id = usize::try_from(target & 0xff).ok()?;
    (target & !0xff == 0 && id < vm.vcpu_count()).then_some(id)
}

/// PSCI and SMCCC over HVC (DEN 0022, DEN 0028): function id in register 0,
/// arguments in 1..3, the result in register 0.
fn hypercall<C: GuestCpu, H: ExitHost>(vm: &VmCore, vcpu: usize, cpu: &mut C, host: &H) -> Action {
    // An AArch32 guest has no SMC64/HVC64 calls (SMCCC 2.5): a function id
    // with the SMC64 bit is unknown to it, as its PSCI_FEATURES says.
    let smc64 = |function: u64| function & SMC64_BIT != 0;
    if vm.is_aarch32() && smc64(cpu.register(0)) {
        cpu.set_register(0, PsciReturn::NotSupported.to_register());
        return Action::Continue;
    }
    let call = PsciCall::decode([
        cpu.register(0),
        cpu.register(1),
        cpu.register(2),
        cpu.register(3),
    ]);
    let mut action = Action::Continue;
    let result: u64 = match call {
        PsciCall::Version => u64::from(VERSION_1_1),
        PsciCall::SmcccVersion => SMCCC_VERSION_1_1,
        PsciCall::Features(function) if vm.is_aarch32() && smc64(function.into()) => {
            PsciReturn::NotSupported.to_register()
        }
        PsciCall::Features(function) => PsciCall::features(function).to_register(),
        PsciCall::MigrateInfoType => MIGRATE_INFO_TYPE_NONE,
        PsciCall::CpuSuspend => {
            // A standby suspend: wait for an interrupt, then return SUCCESS.
            action = Action::Wait;
            PsciReturn::Success.to_register()
        }
        PsciCall::CpuOn {
            target,
            entry,
            context,
        } => cpu_on(vm, target, entry, context, host).to_register(),
        PsciCall::CpuOff => {
            vm.power_off(vcpu);
            // With no vCPU left on (and none starting), nothing can ever
            // run the VM again: it is stopped, so the run can end.
            if vm.all_off() {
                host.stop(vm, StopReason::LastCpuOff);
            }
            action = Action::Off;
            PsciReturn::Success.to_register()
        }
        PsciCall::AffinityInfo { target, level } => match (level, vcpu_of(vm, target)) {
            (0, Some(t)) => vm.power(t) as u64,
            _ => PsciReturn::InvalidParameters.to_register(),
        },
        PsciCall::SystemOff => {
            host.stop(vm, StopReason::PoweredOff);
            action = Action::Off;
            0
        }
        PsciCall::SystemReset => {
            host.system_reset(vm, vcpu);
            action = Action::Off;
            0
        }
        PsciCall::Unknown(_) => PsciReturn::NotSupported.to_register(),
    };
    cpu.set_register(0, result);
    action
}

fn cpu_on<H: ExitHost>(vm: &VmCore, target: u64, entry: u64, context: u64, host: &H) -> PsciReturn {
    let Some(t) = vcpu_of(vm, target) else {
        return PsciReturn::InvalidParameters;
    };
    // A64 and A32 code is word-aligned; an AArch32 entry with bit 0 set
    // is T32 code (PSCI 1.1, 5.6.3), halfword-aligned.
    let aligned = entry.is_multiple_of(4) || vm.is_aarch32() && entry & 1 == 1;
    if !vm.ram.contains(entry & !1) || !aligned {
        return PsciReturn::InvalidAddress;
    }
    match vm.request_start(
        t,
        BootRequest {
            entry,
            argument: context,
            cpu_on: true,
        },
    ) {
        Ok(()) => {
            host.kick(vm, 1 << t);
            PsciReturn::Success
        }
        Err(Power::OnPending) => PsciReturn::OnPending,
        Err(_) => PsciReturn::AlreadyOn,
    }
}

#[cfg(test)]
mod tests;
