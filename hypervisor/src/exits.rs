//! Handling a vCPU's synchronous exits: emulated devices (vGIC, PL011),
//! PSCI and SMCCC calls, WFI, trapped system registers, and the
//! architectural answer to everything a guest may not do (an injected
//! external abort or undefined-instruction exception).

use crate::sched::{self, kick_vcpus, system, Cpu};
use crate::vm::{power, StopReason, Vm, FAULT_LIMIT};
use chroma_arch::aarch64::esr::{self, ICC_SGI1R_EL1};
use chroma_arch::aarch64::sysreg;
use chroma_arch::aarch64::vectors::GuestRegisters;
use chroma_core::exit::{AccessWidth, Exit, MmioAccess};
use chroma_core::pl011::{self, Pl011Effect};
use chroma_core::psci::{PsciCall, PsciReturn, VERSION_1_1};
use chroma_core::vgic::{GicFrame, GicVersion, GICR_STRIDE};
use core::sync::atomic::Ordering;

/// What the scheduler does after an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Re-enter the same vCPU.
    Continue,
    /// The vCPU waits for an interrupt.
    Wait,
    /// Give the CPU to the next vCPU.
    Yield,
    /// The vCPU is off (CPU_OFF, or its VM stopped).
    Off,
}

/// Bytes of the GICv2 distributor window (and of the GICv3 one).
const GICD_SIZE: u64 = 0x1_0000;

fn read_register(registers: &GuestRegisters, index: u8) -> u64 {
    // Register 31 is the zero register in a load/store.
    registers.x.get(usize::from(index)).copied().unwrap_or(0)
}

fn write_register(registers: &mut GuestRegisters, access: &MmioAccess, value: u64) {
    let bits = access.width.bytes() * 8;
    let mut value = if bits == 64 { value } else { value & ((1 << bits) - 1) };
    if access.sign_extend && bits < 64 && value & (1 << (bits - 1)) != 0 {
        value |= !((1u64 << bits) - 1);
    }
    if !access.register_64bit {
        value &= 0xffff_ffff;
    }
    if let Some(slot) = registers.x.get_mut(usize::from(access.register)) {
        *slot = value;
    }
}

/// Handles a synchronous exit of `cpu.vcpus[k]`.
pub fn handle_sync(cpu: &mut Cpu, k: usize) -> Action {
    let esr_value = sysreg::esr_el2();
    let exit = esr::decode(esr_value, sysreg::far_el2(), sysreg::hpfar_el2());
    let vm = cpu.vcpus[k].vm;
    let id = cpu.vcpus[k].id;
    match exit {
        Exit::Mmio(access) => {
            let registers = &mut cpu.vcpus[k].registers;
            match emulate_mmio(&cpu.gic, cpu.index, vm, id, &access, registers) {
                Ok(kick) => {
                    registers.pc += 4;
                    if kick != 0 {
                        kick_vcpus(&cpu.gic, vm, kick, cpu.index);
                    }
                    Action::Continue
                }
                Err(()) => inject_abort(vm, registers, access.ipa.raw(), false, access.write),
            }
        }
        Exit::AbortNoSyndrome { ipa, fetch } => inject_abort(vm, &mut cpu.vcpus[k].registers, ipa.raw(), fetch, false),
        Exit::Hypercall { .. } => hypercall(cpu, k),
        Exit::SecureMonitorCall { .. } => {
            // chroma offers PSCI over HVC only; SMC is NOT_SUPPORTED (SMCCC).
            let registers = &mut cpu.vcpus[k].registers;
            registers.x[0] = PsciReturn::NotSupported.to_register();
            registers.pc += 4;
            Action::Continue
        }
        Exit::WaitForInterrupt => {
            cpu.vcpus[k].registers.pc += 4;
            Action::Wait
        }
        Exit::WaitForEvent => {
            cpu.vcpus[k].registers.pc += 4;
            Action::Yield
        }
        Exit::SysReg(access) if access.encoding == ICC_SGI1R_EL1 && access.write && system().version == GicVersion::V3 => {
            let registers = &mut cpu.vcpus[k].registers;
            let value = read_register(registers, access.register);
            registers.pc += 4;
            let kick = vm.vgic.lock().write_sgi1r(id, value);
            kick_vcpus(&cpu.gic, vm, kick, cpu.index);
            Action::Continue
        }
        Exit::SysReg(_) | Exit::Unhandled { .. } => inject_undefined(vm, &mut cpu.vcpus[k].registers, esr_value),
        Exit::Interrupt => Action::Continue,
    }
}

/// Emulates an access to a device; `Err` means no device there. Returns
/// vCPUs to kick.
fn emulate_mmio(
    gic: &chroma_arch::aarch64::gic::Gic,
    me: usize,
    vm: &Vm,
    vcpu: usize,
    access: &MmioAccess,
    registers: &mut GuestRegisters,
) -> Result<u32, ()> {
    let layout = chroma_platform::BOARD.guest_layout;
    let ipa = access.ipa.raw();
    let sys = system();
    let value = read_register(registers, access.register);
    let frame = if (layout.gicd..layout.gicd + GICD_SIZE).contains(&ipa) {
        Some(GicFrame::Distributor(ipa - layout.gicd))
    } else if sys.version == GicVersion::V3
        && (layout.gicr..layout.gicr + GICR_STRIDE * vm.vcpu_count as u64).contains(&ipa)
    {
        let offset = ipa - layout.gicr;
        Some(GicFrame::Redistributor((offset / GICR_STRIDE) as usize, offset % GICR_STRIDE))
    } else {
        None
    };
    if let Some(frame) = frame {
        let mut vgic = vm.vgic.lock();
        return if access.write {
            vgic.mmio_write(vcpu, frame, access.width, value).map_err(|_| ())
        } else {
            let v = vgic.mmio_read(vcpu, frame, access.width).map_err(|_| ())?;
            write_register(registers, access, v);
            Ok(0)
        };
    }
    let virtio_end = layout.virtio_mmio + crate::nic::TRANSPORT_SIZE * vm.nics.len() as u64;
    if (layout.virtio_mmio..virtio_end).contains(&ipa) {
        let offset = ipa - layout.virtio_mmio;
        let index = (offset / crate::nic::TRANSPORT_SIZE) as usize;
        let width = access.width.bytes() as u8;
        let write = access.write.then_some(value);
        let v = crate::nic::mmio(gic, me, vm.index, index, offset % crate::nic::TRANSPORT_SIZE, width, write);
        if !access.write {
            write_register(registers, access, v);
        }
        return Ok(0);
    }
    if (layout.uart..layout.uart + pl011::WINDOW_SIZE).contains(&ipa) {
        // PL011 registers are 32-bit; Linux's earlycon also uses 8-bit data
        // accesses, which the model accepts at the register's address.
        if access.width == AccessWidth::Double {
            return Err(());
        }
        let offset = ipa - layout.uart;
        let level = {
            let mut uart = vm.uart.lock();
            if access.write {
                if let Some(Pl011Effect::Transmit(byte)) = uart.model.write(offset, value as u32) {
                    crate::console::vm_output(vm, &mut uart.line, byte);
                }
            } else {
                let v = uart.model.read(offset).ok_or(())?;
                write_register(registers, access, u64::from(v));
            }
            uart.model.interrupt_level()
        };
        return Ok(vm.vgic.lock().set_level(32 + layout.uart_spi, level));
    }
    Err(())
}

/// Answers an access the guest may not make: a synchronous external abort
/// at its exception vector, as Xen and KVM do. Stops the VM when it keeps
/// faulting.
fn inject_abort(vm: &Vm, registers: &mut GuestRegisters, ipa: u64, fetch: bool, write: bool) -> Action {
    let count = vm.faults.fetch_add(1, Ordering::Relaxed) + 1;
    if vm.fault_log.lock().allow() {
        log::warn!(
            "vm {}: {} at IPA {:#x} (pc {:#x}) outside RAM and devices: external abort injected [{}]",
            vm.name,
            if fetch { "instruction fetch" } else if write { "write" } else { "read" },
            ipa,
            registers.pc,
            count
        );
    }
    if count >= FAULT_LIMIT {
        vm.stop(StopReason::Faulted("keeps faulting: external aborts injected", u64::from(count)));
        return Action::Off;
    }
    // Data abort (0x24/0x25) or instruction abort (0x20/0x21) "from the same
    // EL" when the guest was at EL1; DFSC/IFSC 0x10: synchronous external abort.
    let from_el1 = registers.pstate & 0b1100 != 0;
    let class = match (fetch, from_el1) {
        (false, true) => 0x25,
        (false, false) => 0x24,
        (true, true) => 0x21,
        (true, false) => 0x20,
    };
    let iss = 0x10 | if write && !fetch { 1 << 6 } else { 0 };
    inject_exception(registers, class << 26 | esr::ESR_IL | iss, sysreg::far_el2());
    Action::Continue
}

/// Answers an instruction chroma does not emulate with UNDEFINED.
fn inject_undefined(vm: &Vm, registers: &mut GuestRegisters, syndrome: u64) -> Action {
    let count = vm.faults.fetch_add(1, Ordering::Relaxed) + 1;
    if vm.fault_log.lock().allow() {
        log::warn!(
            "vm {}: {} (ESR {:#x}) at pc {:#x}: undefined instruction injected [{}]",
            vm.name,
            esr::class_name(esr::exception_class(syndrome)),
            syndrome,
            registers.pc,
            count
        );
    }
    if count >= FAULT_LIMIT {
        vm.stop(StopReason::Faulted("keeps faulting: undefined instructions injected", syndrome));
        return Action::Off;
    }
    inject_exception(registers, esr::ESR_IL, 0);
    Action::Continue
}

/// Takes a synchronous exception to the guest's EL1 (Arm ARM D1.10.2).
fn inject_exception(registers: &mut GuestRegisters, syndrome: u64, fault_address: u64) {
    let mode = registers.pstate & 0xf;
    // The vector: current EL with SP_EL0 (EL1t), with SP_EL1 (EL1h), or
    // lower EL using AArch64 (from EL0).
    let offset = match mode {
        0b0100 => 0x000,
        0b0101 => 0x200,
        _ => 0x400,
    };
    // SAFETY: these EL1 registers belong to the vCPU that just trapped on
    // this CPU; writing them is what taking an exception to EL1 does.
    unsafe {
        sysreg::write_elr_el1(registers.pc);
        sysreg::write_spsr_el1(registers.pstate);
        sysreg::write_esr_el1(syndrome);
        sysreg::write_far_el1(fault_address);
    }
    registers.pc = sysreg::vbar_el1() + offset;
    // EL1h with D, A, I, F masked.
    registers.pstate = 0x3c5;
}

/// PSCI and SMCCC over HVC.
fn hypercall(cpu: &mut Cpu, k: usize) -> Action {
    let vm = cpu.vcpus[k].vm;
    let id = cpu.vcpus[k].id;
    let x = cpu.vcpus[k].registers.x;
    let call = PsciCall::decode([x[0], x[1], x[2], x[3]]);
    let mut action = Action::Continue;
    let result: u64 = match call {
        PsciCall::Version => u64::from(VERSION_1_1),
        PsciCall::SmcccVersion => 0x1_0001,
        PsciCall::Features(function) => PsciCall::features(function).to_register(),
        PsciCall::MigrateInfoType => 2,
        PsciCall::CpuSuspend => {
            action = Action::Wait;
            PsciReturn::Success.to_register()
        }
        PsciCall::CpuOn { target, entry, context } => cpu_on(cpu, vm, target, entry, context).to_register(),
        PsciCall::CpuOff => {
            vm.power[id].store(power::OFF, Ordering::Release);
            action = Action::Off;
            PsciReturn::Success.to_register()
        }
        PsciCall::AffinityInfo { target, level } => {
            if level != 0 {
                PsciReturn::InvalidParameters.to_register()
            } else {
                match vcpu_of(vm, target) {
                    Some(t) => u64::from(vm.power[t].load(Ordering::Acquire)),
                    None => PsciReturn::InvalidParameters.to_register(),
                }
            }
        }
        PsciCall::SystemOff => {
            vm.stop(StopReason::PoweredOff);
            action = Action::Off;
            0
        }
        PsciCall::SystemReset => {
            log::info!("vm {}: SYSTEM_RESET: restarting from its images", vm.name);
            vm.power_off_all();
            sched::kick_vm(&cpu.gic, vm, cpu.index);
            if let Err(e) = vm.reset(id) {
                vm.stop(StopReason::Faulted("reset failed", 0));
                log::warn!("vm {}: reset failed: {e}", vm.name);
            }
            sched::kick_vm(&cpu.gic, vm, cpu.index);
            action = Action::Off;
            0
        }
        PsciCall::Unknown(function) => {
            log::debug!("vm {}: unknown hypercall {function:#x}", vm.name);
            PsciReturn::NotSupported.to_register()
        }
    };
    cpu.vcpus[k].registers.x[0] = result;
    action
}

/// The vCPU with MPIDR affinity `target` (Aff0 = vCPU id, others zero).
fn vcpu_of(vm: &Vm, target: u64) -> Option<usize> {
    let id = (target & 0xff) as usize;
    (target & !0xff == 0 && id < vm.vcpu_count).then_some(id)
}

fn cpu_on(cpu: &Cpu, vm: &Vm, target: u64, entry: u64, context: u64) -> PsciReturn {
    let Some(t) = vcpu_of(vm, target) else { return PsciReturn::InvalidParameters };
    let (ram_ipa, _, ram_size) = vm.ram;
    if !(ram_ipa..ram_ipa + ram_size).contains(&entry) || entry % 4 != 0 {
        return PsciReturn::InvalidAddress;
    }
    let mut boot = vm.boot[t].lock();
    match vm.power[t].compare_exchange(power::OFF, power::ON_PENDING, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            *boot = (entry, context);
            drop(boot);
            kick_vcpus(&cpu.gic, vm, 1 << t, cpu.index);
            PsciReturn::Success
        }
        Err(power::ON_PENDING) => PsciReturn::OnPending,
        Err(_) => PsciReturn::AlreadyOn,
    }
}

/// State of the console escape: Ctrl-A was typed.
static ESCAPE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Reads typed bytes and delivers them to the VM with the input focus.
/// Ctrl-A then: `n` next VM, `c` counters, `h` help, Ctrl-A a literal Ctrl-A.
pub fn poll_console(gic: &chroma_arch::aarch64::gic::Gic, me: usize) {
    let sys = system();
    if sys.vms.is_empty() {
        return;
    }
    loop {
        // Leave input in the physical UART (and QEMU's queue behind it) while
        // the receiving VM's FIFO is full: typed input is never dropped.
        let focus = &sys.vms[sched::FOCUS.load(Ordering::Relaxed) % sys.vms.len()];
        if !focus.uart.lock().model.can_receive() {
            return;
        }
        let Some(byte) = crate::console::poll_input() else { return };
        if ESCAPE.swap(false, Ordering::Relaxed) {
            match byte {
                b'n' => {
                    let next = (sched::FOCUS.load(Ordering::Relaxed) + 1) % sys.vms.len();
                    sched::FOCUS.store(next, Ordering::Relaxed);
                    log::info!("console input -> vm {}", sys.vms[next].name);
                    continue;
                }
                b'c' => {
                    for vm in sys.vms.iter() {
                        log::info!(
                            "vm {}: {} aborts/undefs injected, {} reset(s){}",
                            vm.name,
                            vm.faults.load(Ordering::Relaxed),
                            vm.resets.load(Ordering::Relaxed),
                            if vm.is_stopped() { ", stopped" } else { "" }
                        );
                        crate::nic::report(vm.index);
                    }
                    continue;
                }
                b'h' | b'?' => {
                    log::info!(
                        "console: Ctrl-A n = input to the next VM, Ctrl-A c = counters, Ctrl-A Ctrl-A = send Ctrl-A"
                    );
                    continue;
                }
                0x01 => {}
                _ => continue,
            }
        } else if byte == 0x01 {
            ESCAPE.store(true, Ordering::Relaxed);
            continue;
        }
        let vm = &sys.vms[sched::FOCUS.load(Ordering::Relaxed) % sys.vms.len()];
        let level = {
            let mut uart = vm.uart.lock();
            uart.model.receive(byte);
            uart.model.interrupt_level()
        };
        let layout = chroma_platform::BOARD.guest_layout;
        let kick = vm.vgic.lock().set_level(32 + layout.uart_spi, level);
        kick_vcpus(gic, vm, kick, me);
    }
}
