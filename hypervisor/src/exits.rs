//! What exit handling reaches outside a VM ([`Host`], the binary's side of
//! the core's `ExitHost` seam: NICs, the console, kicking other CPUs,
//! stopping and resetting VMs), and console input.

use crate::arch::gic::Gic;
use crate::sched::{self, kick_vcpus, kick_vm, system};
use chroma_core::exit::AccessWidth;
use chroma_core::vcpu::{ExitHost, FaultReport};
use chroma_core::vgic::VcpuMask;
use chroma_core::vm::{StopReason, VmCore};
use core::sync::atomic::Ordering;

/// Exit handling's view of the world from one physical CPU.
pub struct Host<'a> {
    /// This CPU's GIC.
    pub gic: &'a Gic,
    /// This CPU's index.
    pub me: usize,
}

impl ExitHost for Host<'_> {
    fn virtio_access(
        &self,
        vm: &VmCore,
        nic: usize,
        offset: u64,
        width: AccessWidth,
        write: Option<u64>,
        cacheable: bool,
    ) -> u64 {
        crate::nic::mmio(
            self.gic, self.me, vm.index, nic, offset, width, write, cacheable,
        )
    }

    fn console_output(&self, vm: &VmCore, byte: u8) {
        let vm = &system().vms[vm.index];
        crate::console::vm_output(vm, &mut vm.console_line.lock(), byte);
    }

    fn uart_changed(&self, vm: &VmCore, uart: &chroma_core::pl011::Pl011) {
        system().vms[vm.index].uart_changed(uart);
    }

    fn kick(&self, vm: &VmCore, vcpus: VcpuMask) {
        kick_vcpus(self.gic, vm, vcpus, self.me);
    }

    fn stop(&self, vm: &VmCore, reason: StopReason) {
        system().vms[vm.index].stop(reason);
    }

    fn system_reset(&self, vm: &VmCore, caller: usize) {
        let vm = &system().vms[vm.index];
        if vm.notice_allowed() {
            log::info!("vm {}: SYSTEM_RESET: restarting from its images", vm.name);
        }
        vm.power_off_all();
        kick_vm(self.gic, vm, self.me);
        // RAM is cleared chunk by chunk on vCPU 0's CPU (`sched`), which
        // then restarts the VM.
        vm.start_reset(caller);
        kick_vm(self.gic, vm, self.me);
    }

    fn gic_cpu_interface(
        &self,
        vm: &VmCore,
        vcpu: usize,
        offset: u64,
        width: AccessWidth,
        write: Option<u64>,
    ) -> Option<u64> {
        // The vCPU runs on this CPU: its state is this CPU's software
        // interface. The list registers were read back when the vCPU
        // exited (`sched`); load them again from the model, let the access
        // act on them (an acknowledge, a completion), and read the result
        // back, as a hardware interface would have before the exit.
        let mut gic = *self.gic;
        let kick = {
            let mut vgic = vm.vgic.lock();
            vgic.flush(vcpu, &mut gic);
            let value = gic.cpu_interface_access(offset, width, write);
            let kick = vgic.sync(vcpu, &mut gic);
            value.map(|value| (value, kick))
        };
        let (value, kick) = kick?;
        if kick != 0 {
            kick_vcpus(self.gic, vm, kick, self.me);
        }
        Some(value)
    }

    fn report_fault(&self, vm: &VmCore, fault: FaultReport) {
        match fault {
            FaultReport::Abort { ipa, kind, pc, count } => log::warn!(
                "vm {}: {kind} at IPA {ipa:#x} (pc {pc:#x}) outside RAM and devices: external abort injected [{count}]",
                vm.name
            ),
            FaultReport::Undefined { syndrome, pc, count } => log::warn!(
                "vm {}: {} (syndrome {syndrome:#x}) at pc {pc:#x}: undefined instruction injected [{count}]",
                vm.name,
                chroma_arch::aarch64::esr::syndrome_name(syndrome)
            ),
        }
    }
}

/// State of the console escape: Ctrl-A was typed.
static ESCAPE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Reads typed bytes and delivers them to the VM with the input focus.
/// Ctrl-A then: `n` next VM, `c` counters, `s` the stats lines (memory
/// high-water marks, switch ports; see `stats`), `h` help, Ctrl-A a literal
/// Ctrl-A.
pub fn poll_console(gic: &Gic, me: usize) {
    let sys = system();
    if sys.vms.is_empty() {
        return;
    }
    loop {
        // Leave input in the physical UART (and QEMU's queue behind it) while
        // the receiving VM's FIFO is full: typed input is never dropped.
        let focus = &sys.vms[sched::FOCUS.load(Ordering::Relaxed) % sys.vms.len()];
        if !focus.uart.lock().can_receive() {
            return;
        }
        let Some(byte) = crate::console::poll_input() else {
            return;
        };
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
                        vm.exits.report(&vm.name);
                    }
                    crate::nic::report_switches();
                    continue;
                }
                b's' => {
                    crate::stats::report();
                    continue;
                }
                b'h' | b'?' => {
                    log::info!(
                        "console: Ctrl-A n = input to the next VM, Ctrl-A c = counters, Ctrl-A s = memory and switch stats, Ctrl-A Ctrl-A = send Ctrl-A"
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
        // The line level is set under both locks (vGIC first), so a vCPU
        // reading the UART at the same time cannot leave it stale.
        let kick = {
            let mut vgic = vm.vgic.lock();
            let mut uart = vm.uart.lock();
            uart.receive(byte);
            // The register image goes (its TLB entries invalidated on
            // every CPU) before the interrupt tells the guest to read.
            vm.uart_changed(&uart);
            vgic.set_level(vm.map.uart_intid, uart.interrupt_level())
        };
        kick_vcpus(gic, vm, kick, me);
    }
}

/// An AArch32 guest's data abort without a syndrome (ESR_EL2.ISV = 0) may be
/// a load or store with base register writeback: fetches the instruction
/// from the VM's RAM and, if `chroma_arch::aarch64::a32` decodes it, gives
/// the core an MMIO access with the writeback, in `trap`. Anything else is
/// left as it was (the guest gets its external abort).
pub fn decode_a32_abort(
    vm: &crate::vm::Vm,
    cpu: &crate::arch::vcpu::TrappedVcpu<'_>,
    trap: &mut chroma_core::vcpu::Trap,
) {
    use chroma_core::exit::{Exit, MmioAccess};
    use chroma_core::vcpu::GuestCpu as _;
    let Exit::AbortNoSyndrome { ipa, fetch: false } = trap.exit else {
        return;
    };
    let Some(at) = cpu.a32_instruction_ipa() else {
        return;
    };
    let ram = vm.ram;
    // The whole word inside RAM (a fetch from anywhere else cannot be the
    // guest's code), word-aligned as A32 instructions are.
    let Some(offset) = at
        .checked_sub(ram.ipa)
        .filter(|o| o % 4 == 0 && o + 4 <= ram.size)
    else {
        return;
    };
    let va = vm.alias + offset;
    // A guest running with its caches off wrote its code to memory, past
    // any line of it the alias may hold from an earlier read: drop that line
    // first (clean too: the hypervisor never writes it, so nothing is lost).
    // SAFETY: the word lies within the VM's RAM (checked above), reached through its alias, mapped for the hypervisor's lifetime; cleaning and invalidating a line the hypervisor does not write changes no data.
    unsafe {
        chroma_cache::ops::clean_invalidate_range(
            &crate::arch::CacheOps::new(),
            chroma_mem::HostVirtAddr::new(va),
            4,
        )
    };
    // SAFETY: as above, the word is inside the VM's RAM alias; a volatile read of it races only with the guest's own writes, which cannot break the read.
    let insn = unsafe { core::ptr::read_volatile(va as *const u32) };
    let Some(access) = chroma_arch::aarch64::a32::decode(insn, |n| cpu.register(n)) else {
        return;
    };
    let access = MmioAccess {
        ipa,
        width: access.width,
        write: access.write,
        register: access.rt,
        sign_extend: access.sign_extend,
        register_64bit: false,
        writeback: access.writeback,
    };
    // A Permission fault is a store to a read-only register image (a load
    // from it never faults); its `ipa` is the page the trap handler found
    // by translating the fault address (see `esr::fault_page_unreported`).
    trap.exit = if chroma_arch::aarch64::esr::is_permission_fault(trap.syndrome) {
        if !access.write {
            return;
        }
        Exit::ReadOnlyWrite(access)
    } else {
        Exit::Mmio(access)
    };
}
