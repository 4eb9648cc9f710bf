//! Exit dispatch against the fake vCPU and a recording host.

use super::*;
use crate::exit::{AccessWidth, Exit, MmioAccess, SysRegAccess, TrappedRegister};
use crate::fake::{FakeCpu, Injected};
use crate::guest_map::{VmShape, QEMU_VIRT};
use crate::psci;
use crate::vgic::MAX_VCPUS;
use crate::vm::RamRegion;
use crate::GuestPhysAddr;
use alloc::vec::Vec;
use core::cell::RefCell;

const RAM: u64 = 0x4000_0000;

/// One virtio access: (NIC, offset, the value written if a write, cacheable).
type VirtioAccess = (usize, u64, Option<u64>, bool);

/// Everything the dispatcher asked of the world.
#[derive(Default)]
struct Recorder {
    virtio: RefCell<Vec<VirtioAccess>>,
    console: RefCell<Vec<u8>>,
    kicks: RefCell<Vec<VcpuMask>>,
    stops: RefCell<Vec<StopReason>>,
    resets: RefCell<Vec<usize>>,
    faults: RefCell<Vec<FaultReport>>,
    /// A software GICv2 CPU interface answers (a Raspberry Pi 3).
    soft_gicc: Option<crate::soft_gicv::SoftCpuInterface>,
    gicc: RefCell<Vec<(usize, u64, Option<u64>)>>,
    /// The UART's input state at each `uart_changed`.
    uart_changes: RefCell<Vec<bool>>,
}

impl ExitHost for Recorder {
    fn virtio_access(
        &self,
        _vm: &VmCore,
        nic: usize,
        offset: u64,
        _w: AccessWidth,
        write: Option<u64>,
        cacheable: bool,
    ) -> u64 {
        self.virtio
            .borrow_mut()
            .push((nic, offset, write, cacheable));
        0x7472_6976
    }
    fn console_output(&self, _vm: &VmCore, byte: u8) {
        self.console.borrow_mut().push(byte);
    }
    fn uart_changed(&self, _vm: &VmCore, uart: &Pl011) {
        self.uart_changes.borrow_mut().push(uart.input_pending());
    }
    fn kick(&self, _vm: &VmCore, vcpus: VcpuMask) {
        self.kicks.borrow_mut().push(vcpus);
    }
    fn stop(&self, vm: &VmCore, reason: StopReason) {
        vm.set_stopped(reason);
        self.stops.borrow_mut().push(reason);
    }
    fn system_reset(&self, _vm: &VmCore, caller: usize) {
        self.resets.borrow_mut().push(caller);
    }
    fn report_fault(&self, _vm: &VmCore, fault: FaultReport) {
        self.faults.borrow_mut().push(fault);
    }
    fn gic_cpu_interface(
        &self,
        _vm: &VmCore,
        vcpu: usize,
        offset: u64,
        width: AccessWidth,
        write: Option<u64>,
    ) -> Option<u64> {
        let mut cpu = self.soft_gicc?;
        self.gicc.borrow_mut().push((vcpu, offset, write));
        cpu.mmio_read(offset, width).ok().map(u64::from)
    }
}

fn vm(gic: GicVersion, vcpus: usize, nics: usize) -> VmCore {
    VmCore::new(
        0,
        "guest".into(),
        QEMU_VIRT,
        VmShape {
            gic,
            vcpu_count: vcpus,
            nic_count: nics,
            arch: chroma_manifest::GuestArch::Aarch64,
        },
        RamRegion {
            ipa: RAM,
            size: 1 << 24,
        },
        [0; MAX_VCPUS],
        BootRequest {
            entry: RAM + 0x8_0000,
            argument: 0,
            cpu_on: false,
        },
    )
}

fn trap(exit: Exit) -> Trap {
    Trap {
        exit,
        instruction_length: 4,
        syndrome: 0x9200_0000,
    }
}

fn mmio(ipa: u64, width: AccessWidth, write: bool, register: u8) -> Trap {
    trap(Exit::Mmio(MmioAccess {
        ipa: GuestPhysAddr::new(ipa),
        width,
        write,
        register,
        sign_extend: false,
        register_64bit: true,
        writeback: None,
    }))
}

#[test]
fn a_uart_store_prints_and_moves_the_pc() {
    let (vm, host) = (vm(GicVersion::V2, 1, 0), Recorder::default());
    let mut cpu = FakeCpu::at(RAM).with_registers(&[0, 0, 0, b'h' as u64]);
    let action = handle_exit(
        &vm,
        0,
        &mut cpu,
        &mmio(0x0900_0000, AccessWidth::Word, true, 3),
        &host,
    );
    assert_eq!(action, Action::Continue);
    assert_eq!(*host.console.borrow(), b"h");
    assert_eq!(cpu.pc(), RAM + 4);
    assert!(cpu.injected.is_empty());
}

#[test]
fn only_a_latched_transmit_takes_the_fast_path() {
    let (vm, host) = (vm(GicVersion::V2, 1, 0), Recorder::default());
    let uart_intid = vm.map.uart_intid;
    let mut cpu = FakeCpu::at(RAM).with_registers(&[0, 0, 0, 0x1_0000_0068, 0x20]);
    // The guest enables the TX interrupt (UARTIMSC = TXIM) and completes it
    // (UARTICR = TXIC): the latch is clear, the line low.
    for offset in [0x38, 0x44] {
        let access = mmio(0x0900_0000 + offset, AccessWidth::Word, true, 4);
        assert!(!transmit_fast(&vm, &mut cpu, &access, &host), "{offset:#x}");
        handle_exit(&vm, 0, &mut cpu, &access, &host);
    }
    assert!(!vm.vgic.lock().is_in_flight(0, uart_intid));
    let pc = cpu.pc();
    // The first character latches the interrupt again and raises the line:
    // the fast path refuses it (changing nothing), the whole path does both.
    let store = mmio(0x0900_0000, AccessWidth::Word, true, 3);
    assert!(!transmit_fast(&vm, &mut cpu, &store, &host));
    assert!(host.console.borrow().is_empty());
    assert_eq!(cpu.pc(), pc);
    handle_exit(&vm, 0, &mut cpu, &store, &host);
    assert!(
        vm.vgic.lock().is_in_flight(0, uart_intid),
        "TX interrupt raised"
    );
    assert_eq!(*host.console.borrow(), b"h");
    // The next ones change nothing but the console (the register's low
    // byte), in place or through the read-only image.
    let kicks = host.kicks.borrow().len();
    assert!(transmit_fast(&vm, &mut cpu, &store, &host));
    assert!(transmit_fast(
        &vm,
        &mut cpu,
        &read_only_write(0x0900_0000, 3),
        &host
    ));
    assert_eq!(*host.console.borrow(), b"hhh");
    assert_eq!(cpu.pc(), pc + 12);
    assert_eq!(host.kicks.borrow().len(), kicks, "no vCPU kicked");
    // Anything else is the whole path's: a load, a 64-bit store, another
    // register, another device.
    for access in [
        mmio(0x0900_0000, AccessWidth::Word, false, 3),
        mmio(0x0900_0000, AccessWidth::Double, true, 3),
        mmio(0x0900_0004, AccessWidth::Word, true, 3),
        mmio(0x0900_0038, AccessWidth::Word, true, 3),
        mmio(0x0a00_0000, AccessWidth::Word, true, 3),
        mmio(0x0800_0000, AccessWidth::Word, true, 3),
    ] {
        assert!(
            !transmit_fast(&vm, &mut cpu, &access, &host),
            "{:?}",
            access.exit
        );
    }
    assert_eq!(cpu.pc(), pc + 12);
    assert_eq!(*host.console.borrow(), b"hhh");
}

/// A store that hit a read-only register image, its page found.
fn read_only_write(ipa: u64, register: u8) -> Trap {
    trap(Exit::ReadOnlyWrite(MmioAccess {
        ipa: GuestPhysAddr::new(ipa),
        width: AccessWidth::Word,
        write: true,
        register,
        sign_extend: false,
        register_64bit: true,
        writeback: None,
    }))
}

#[test]
fn a_store_to_the_uart_image_is_emulated_and_a_lost_page_retried() {
    let (vm, host) = (vm(GicVersion::V2, 1, 0), Recorder::default());
    let mut cpu = FakeCpu::at(RAM).with_registers(&[0, 0, 0, b'h' as u64]);
    let action = handle_exit(&vm, 0, &mut cpu, &read_only_write(0x0900_0000, 3), &host);
    assert_eq!(action, Action::Continue);
    assert_eq!(*host.console.borrow(), b"h");
    assert_eq!(cpu.pc(), RAM + 4);
    // A byte with the TX interrupt latched changed nothing a read sees: the
    // image is not rewritten; a store to UARTIMSC (0x38) is told.
    assert!(host.uart_changes.borrow().is_empty());
    cpu.set_register(4, 0x10);
    let action = handle_exit(&vm, 0, &mut cpu, &read_only_write(0x0900_0038, 4), &host);
    assert_eq!(action, Action::Continue);
    assert_eq!(*host.uart_changes.borrow(), [false], "the image is told");
    assert_eq!(cpu.pc(), RAM + 8);
    // A page the handler could not find (IPA page 0), or one that is no
    // image's: nothing emulated, the PC stays for the guest to retry.
    for ipa in [0x0000_0000, 0x4000_0000, 0x0900_1000] {
        let action = handle_exit(&vm, 0, &mut cpu, &read_only_write(ipa, 3), &host);
        assert_eq!(action, Action::Continue);
        assert_eq!(cpu.pc(), RAM + 8, "{ipa:#x}");
    }
    assert_eq!(*host.console.borrow(), b"h");
    assert!(cpu.injected.is_empty());
}

#[test]
fn a_16_bit_instruction_advances_the_pc_by_two() {
    let (vm, host) = (vm(GicVersion::V2, 1, 0), Recorder::default());
    let mut cpu = FakeCpu::at(RAM);
    let wfi = Trap {
        exit: Exit::WaitForInterrupt,
        instruction_length: 2,
        syndrome: 0,
    };
    assert_eq!(handle_exit(&vm, 0, &mut cpu, &wfi, &host), Action::Wait);
    assert_eq!(cpu.pc(), RAM + 2);
    let wfe = Trap {
        exit: Exit::WaitForEvent,
        ..wfi
    };
    assert_eq!(handle_exit(&vm, 0, &mut cpu, &wfe, &host), Action::Yield);
    assert_eq!(cpu.pc(), RAM + 4);
}

#[test]
fn loads_fill_the_register_by_width_and_sign() {
    let access = |width, sign_extend, register_64bit| MmioAccess {
        ipa: GuestPhysAddr::new(0),
        width,
        write: false,
        register: 0,
        sign_extend,
        register_64bit,
        writeback: None,
    };
    assert_eq!(
        load_result(&access(AccessWidth::Byte, false, true), 0x1ff),
        0xff
    );
    assert_eq!(
        load_result(&access(AccessWidth::Byte, true, true), 0x80),
        0xffff_ffff_ffff_ff80
    );
    assert_eq!(
        load_result(&access(AccessWidth::Half, true, false), 0x8000),
        0xffff_8000
    );
    assert_eq!(
        load_result(&access(AccessWidth::Double, false, true), u64::MAX),
        u64::MAX
    );
}

#[test]
fn gic_registers_are_read_through_the_model() {
    let (vm, host) = (vm(GicVersion::V3, 2, 0), Recorder::default());
    let mut cpu = FakeCpu::at(RAM).with_registers(&[0, 0, 0, 0, 0, 0xdead]);
    // GICR_TYPER of vCPU 1 (low word): Last is set on the last redistributor.
    let typer = 0x080A_0000 + 0x2_0000 + 0x8;
    assert_eq!(
        handle_exit(
            &vm,
            1,
            &mut cpu,
            &mmio(typer, AccessWidth::Word, false, 5),
            &host
        ),
        Action::Continue
    );
    assert_ne!(cpu.register(5), 0xdead, "the load wrote its register");
    assert!(cpu.injected.is_empty());
    // A word access to a distributor byte offset is refused with an abort.
    handle_exit(
        &vm,
        0,
        &mut cpu,
        &mmio(0x0800_0001, AccessWidth::Word, false, 5),
        &host,
    );
    assert!(matches!(
        cpu.injected[..],
        [Injected::Abort(ExternalAbort {
            instruction_fetch: false,
            write: false
        })]
    ));
}

#[test]
fn virtio_accesses_reach_the_host_with_the_guest_memory_type() {
    let (vm, host) = (vm(GicVersion::V2, 1, 2), Recorder::default());
    let mut cpu = FakeCpu::at(RAM).with_registers(&[0, 0, 9]);
    cpu.cacheable = false;
    handle_exit(
        &vm,
        0,
        &mut cpu,
        &mmio(0x0A00_0200 + 0x50, AccessWidth::Word, true, 2),
        &host,
    );
    handle_exit(
        &vm,
        0,
        &mut cpu,
        &mmio(0x0A00_0000, AccessWidth::Word, false, 4),
        &host,
    );
    assert_eq!(
        *host.virtio.borrow(),
        [(1, 0x50, Some(9), false), (0, 0, None, false)]
    );
    assert_eq!(cpu.register(4), 0x7472_6976);
}

#[test]
fn gicc_accesses_reach_a_software_cpu_interface_and_abort_without_one() {
    let vm = vm(GicVersion::V2, 2, 0);
    // A board with GICV mapped there has no software interface: an access
    // that trapped anyway (none should) is answered with an abort.
    let host = Recorder::default();
    let mut cpu = FakeCpu::at(RAM);
    handle_exit(
        &vm,
        1,
        &mut cpu,
        &mmio(0x0801_000c, AccessWidth::Word, false, 3),
        &host,
    );
    assert_eq!(
        cpu.injected,
        [Injected::Abort(ExternalAbort {
            instruction_fetch: false,
            write: false
        })]
    );
    // With one (the Raspberry Pi 3), GICC_IIDR reads the GIC-400's value.
    let host = Recorder {
        soft_gicc: Some(crate::soft_gicv::SoftCpuInterface::new()),
        ..Recorder::default()
    };
    let mut cpu = FakeCpu::at(RAM);
    handle_exit(
        &vm,
        1,
        &mut cpu,
        &mmio(0x0801_00fc, AccessWidth::Word, false, 3),
        &host,
    );
    assert!(cpu.injected.is_empty());
    assert_eq!(cpu.register(3), 0x0202_143b);
    handle_exit(
        &vm,
        1,
        &mut cpu,
        &mmio(0x0801_1000, AccessWidth::Word, true, 3),
        &host,
    );
    assert_eq!(
        *host.gicc.borrow(),
        [(1, 0xfc, None), (1, 0x1000, Some(0x0202_143b))]
    );
}

#[test]
fn accesses_outside_ram_and_devices_get_an_external_abort() {
    let (vm, host) = (vm(GicVersion::V2, 1, 1), Recorder::default());
    let mut cpu = FakeCpu::at(RAM);
    // The second transport does not exist for a VM with one NIC.
    let action = handle_exit(
        &vm,
        0,
        &mut cpu,
        &mmio(0x0A00_0200, AccessWidth::Word, true, 0),
        &host,
    );
    assert_eq!(action, Action::Continue);
    assert_eq!(
        cpu.injected,
        [Injected::Abort(ExternalAbort {
            instruction_fetch: false,
            write: true
        })]
    );
    assert_eq!(cpu.pc(), RAM, "an aborted access is not skipped");
    let fetch = trap(Exit::AbortNoSyndrome {
        ipa: GuestPhysAddr::new(0x1000),
        fetch: true,
    });
    handle_exit(&vm, 0, &mut cpu, &fetch, &host);
    assert_eq!(
        cpu.injected[1],
        Injected::Abort(ExternalAbort {
            instruction_fetch: true,
            write: false
        })
    );
    assert!(matches!(
        host.faults.borrow()[1],
        FaultReport::Abort {
            ipa: 0x1000,
            kind: "instruction fetch",
            count: 2,
            ..
        }
    ));
    assert!(host.virtio.borrow().is_empty());
}

#[test]
fn a_guest_that_keeps_faulting_is_stopped_and_the_log_is_rate_limited() {
    let (vm, host) = (vm(GicVersion::V2, 1, 0), Recorder::default());
    let mut cpu = FakeCpu::at(RAM);
    let sysreg = trap(Exit::SysReg(SysRegAccess {
        register: TrappedRegister::Other(7),
        write: true,
        value_register: 0,
        high_register: None,
    }));
    let mut last = Action::Continue;
    for _ in 0..FAULT_LIMIT {
        last = handle_exit(&vm, 0, &mut cpu, &sysreg, &host);
    }
    assert_eq!(last, Action::Off);
    assert_eq!(cpu.injected.len(), FAULT_LIMIT as usize - 1);
    assert!(matches!(cpu.injected[0], Injected::Undefined(0x9200_0000)));
    assert!(matches!(
        host.stops.borrow()[..],
        [StopReason::Faulted(_, _)]
    ));
    assert!(
        host.faults.borrow().len() < 20,
        "{} fault lines",
        host.faults.borrow().len()
    );
}

fn hvc(vm: &VmCore, host: &Recorder, vcpu: usize, args: &[u64]) -> (Action, u64) {
    let mut cpu = FakeCpu::at(RAM).with_registers(args);
    let action = handle_exit(
        vm,
        vcpu,
        &mut cpu,
        &trap(Exit::Hypercall { immediate: 0 }),
        host,
    );
    assert_eq!(cpu.pc(), RAM, "HVC returns past itself");
    (action, cpu.register(0))
}

#[test]
fn psci_starts_queries_and_stops_vcpus() {
    let (vm, host) = (vm(GicVersion::V2, 2, 0), Recorder::default());
    let ok = PsciReturn::Success.to_register();
    assert_eq!(
        hvc(&vm, &host, 0, &[u64::from(psci::PSCI_VERSION)]).1,
        u64::from(VERSION_1_1)
    );
    assert_eq!(
        hvc(&vm, &host, 0, &[u64::from(psci::AFFINITY_INFO_64), 1, 0]).1,
        Power::Off as u64
    );
    let entry = RAM + 0x1000;
    assert_eq!(
        hvc(&vm, &host, 0, &[u64::from(psci::CPU_ON_64), 1, entry, 42]),
        (Action::Continue, ok)
    );
    assert_eq!(*host.kicks.borrow(), [0b10]);
    assert_eq!(
        hvc(&vm, &host, 0, &[u64::from(psci::CPU_ON_64), 1, entry, 42]).1,
        PsciReturn::OnPending.to_register()
    );
    assert_eq!(
        vm.take_start(1),
        Some(BootRequest {
            entry,
            argument: 42,
            cpu_on: true,
        })
    );
    assert_eq!(
        hvc(&vm, &host, 0, &[u64::from(psci::CPU_ON_64), 1, entry, 0]).1,
        PsciReturn::AlreadyOn.to_register()
    );
    // Bad targets and entry points.
    let invalid = PsciReturn::InvalidParameters.to_register();
    assert_eq!(
        hvc(&vm, &host, 0, &[u64::from(psci::CPU_ON_64), 2, entry, 0]).1,
        invalid
    );
    assert_eq!(
        hvc(
            &vm,
            &host,
            0,
            &[u64::from(psci::CPU_ON_64), 0x100, entry, 0]
        )
        .1,
        invalid
    );
    assert_eq!(
        hvc(&vm, &host, 0, &[u64::from(psci::AFFINITY_INFO_64), 0, 1]).1,
        invalid
    );
    vm.power_off(1);
    let bad_entry = PsciReturn::InvalidAddress.to_register();
    assert_eq!(
        hvc(&vm, &host, 0, &[u64::from(psci::CPU_ON_64), 1, 0x1000, 0]).1,
        bad_entry
    );
    assert_eq!(
        hvc(
            &vm,
            &host,
            0,
            &[u64::from(psci::CPU_ON_64), 1, entry + 2, 0]
        )
        .1,
        bad_entry
    );
    // CPU_OFF, unknown calls, SYSTEM_RESET and SYSTEM_OFF.
    vm.request_start(1, BootRequest::default()).unwrap();
    vm.take_start(1);
    assert_eq!(
        hvc(&vm, &host, 1, &[u64::from(psci::CPU_OFF)]).0,
        Action::Off
    );
    assert_eq!(vm.power(1), Power::Off);
    assert_eq!(
        hvc(&vm, &host, 0, &[0xc200_0000]).1,
        PsciReturn::NotSupported.to_register()
    );
    assert_eq!(
        hvc(&vm, &host, 1, &[u64::from(psci::SYSTEM_RESET)]).0,
        Action::Off
    );
    assert_eq!(*host.resets.borrow(), [1]);
    assert_eq!(
        hvc(&vm, &host, 0, &[u64::from(psci::SYSTEM_OFF)]).0,
        Action::Off
    );
    assert_eq!(*host.stops.borrow(), [StopReason::PoweredOff]);
}

#[test]
fn hvc_with_a_nonzero_immediate_is_not_the_call_in_x0() {
    // HVC #1 with SYSTEM_OFF's function ID: the VM stays on (found by the
    // hostile catalogue's smccc-hvc-nonzero-immediate).
    let (vm, host) = (vm(GicVersion::V2, 1, 0), Recorder::default());
    let mut cpu = FakeCpu::at(RAM).with_registers(&[u64::from(psci::SYSTEM_OFF)]);
    handle_exit(
        &vm,
        0,
        &mut cpu,
        &trap(Exit::Hypercall { immediate: 1 }),
        &host,
    );
    assert_eq!(cpu.register(0), PsciReturn::NotSupported.to_register());
    assert!(vm.stop_reason().is_none(), "HVC #1 powered the VM off");
    // Negative control: HVC #0 is the call.
    let mut cpu = FakeCpu::at(RAM).with_registers(&[u64::from(psci::SYSTEM_OFF)]);
    handle_exit(
        &vm,
        0,
        &mut cpu,
        &trap(Exit::Hypercall { immediate: 0 }),
        &host,
    );
    assert!(vm.stop_reason().is_some());
}

#[test]
fn smc_is_not_supported_and_is_skipped() {
    let (vm, host) = (vm(GicVersion::V2, 1, 0), Recorder::default());
    let mut cpu = FakeCpu::at(RAM).with_registers(&[u64::from(psci::PSCI_VERSION)]);
    handle_exit(
        &vm,
        0,
        &mut cpu,
        &trap(Exit::SecureMonitorCall { immediate: 0 }),
        &host,
    );
    assert_eq!(cpu.register(0), PsciReturn::NotSupported.to_register());
    assert_eq!(cpu.pc(), RAM + 4);
}

#[test]
fn gicv3_sgis_are_sent_through_the_model_and_gicv2_ones_are_undefined() {
    let write_sgi1r = trap(Exit::SysReg(SysRegAccess {
        register: TrappedRegister::GicSgi1r,
        write: true,
        value_register: 2,
        high_register: None,
    }));
    // SGI 5 to Aff0 target list {1}.
    let value = 5 << 24 | 0b10;
    let (vm3, host) = (vm(GicVersion::V3, 2, 0), Recorder::default());
    let mut cpu = FakeCpu::at(RAM).with_registers(&[0, 0, value]);
    assert_eq!(
        handle_exit(&vm3, 0, &mut cpu, &write_sgi1r, &host),
        Action::Continue
    );
    assert_eq!(*host.kicks.borrow(), [0b10]);
    assert_eq!(cpu.pc(), RAM + 4);
    let (vm2, host) = (vm(GicVersion::V2, 2, 0), Recorder::default());
    let mut cpu = FakeCpu::at(RAM).with_registers(&[0, 0, value]);
    handle_exit(&vm2, 0, &mut cpu, &write_sgi1r, &host);
    assert!(matches!(cpu.injected[..], [Injected::Undefined(_)]));
    assert!(host.kicks.borrow().is_empty());
}

#[test]
fn the_fake_keeps_its_own_register_encoding() {
    // Negative control for the fake itself: its storage is not the value.
    let cpu = FakeCpu::at(0x4000).with_registers(&[1, 2, 3]);
    assert_eq!(
        (cpu.register(0), cpu.register(2), cpu.register(31)),
        (1, 3, 0)
    );
    assert_eq!(cpu.pc(), 0x4000);
}

#[test]
fn the_last_vcpu_off_stops_the_vm_and_not_before() {
    let (vm, host) = (vm(GicVersion::V2, 2, 0), Recorder::default());
    vm.take_start(0);
    vm.request_start(
        1,
        BootRequest {
            entry: RAM,
            argument: 0,
            cpu_on: false,
        },
    )
    .unwrap();
    vm.take_start(1);
    // vCPU 1 is still on: CPU_OFF of vCPU 0 leaves the VM running.
    assert_eq!(
        hvc(&vm, &host, 0, &[u64::from(psci::CPU_OFF)]).0,
        Action::Off
    );
    assert!(host.stops.borrow().is_empty());
    // The last one: nothing could ever run the VM again.
    assert_eq!(
        hvc(&vm, &host, 1, &[u64::from(psci::CPU_OFF)]).0,
        Action::Off
    );
    assert_eq!(*host.stops.borrow(), [StopReason::LastCpuOff]);
    assert!(StopReason::LastCpuOff.clean());
}

#[test]
fn a_cpu_on_pending_keeps_the_vm_alive() {
    let (vm, host) = (vm(GicVersion::V2, 2, 0), Recorder::default());
    vm.take_start(0);
    vm.request_start(
        1,
        BootRequest {
            entry: RAM,
            argument: 0,
            cpu_on: false,
        },
    )
    .unwrap();
    hvc(&vm, &host, 0, &[u64::from(psci::CPU_OFF)]);
    assert!(host.stops.borrow().is_empty(), "vCPU 1 is about to start");
}

#[test]
fn faults_of_guest_userspace_never_stop_the_vm() {
    let (vm, host) = (vm(GicVersion::V2, 1, 0), Recorder::default());
    let mut cpu = FakeCpu::at(RAM);
    cpu.user = true;
    let outside = mmio(0x0, AccessWidth::Word, false, 0);
    for _ in 0..2 * FAULT_LIMIT {
        assert_eq!(
            handle_exit(&vm, 0, &mut cpu, &outside, &host),
            Action::Continue
        );
    }
    assert_eq!(
        cpu.injected.len(),
        2 * FAULT_LIMIT as usize,
        "every one is answered"
    );
    assert!(host.stops.borrow().is_empty());
    assert!(
        host.faults.borrow().len() < 40,
        "and the log stays rate-limited"
    );
    // The same from the kernel stops it (see also the fault-limit test).
    cpu.user = false;
    for _ in 0..FAULT_LIMIT {
        handle_exit(&vm, 0, &mut cpu, &outside, &host);
    }
    assert!(matches!(host.stops.borrow()[..], [StopReason::Faulted(..)]));
}

#[test]
fn debug_and_pmu_registers_read_as_zero_and_ignore_writes() {
    let (vm, host) = (vm(GicVersion::V2, 1, 0), Recorder::default());
    for register in [TrappedRegister::Debug, TrappedRegister::PerformanceMonitor] {
        let read = trap(Exit::SysReg(SysRegAccess {
            register,
            write: false,
            value_register: 4,
            high_register: None,
        }));
        let write = trap(Exit::SysReg(SysRegAccess {
            register,
            write: true,
            value_register: 4,
            high_register: None,
        }));
        let mut cpu = FakeCpu::at(RAM).with_registers(&[0, 0, 0, 0, 0x1234]);
        assert_eq!(
            handle_exit(&vm, 0, &mut cpu, &write, &host),
            Action::Continue
        );
        assert_eq!(
            cpu.register(4),
            0x1234,
            "a write leaves the source register"
        );
        assert_eq!(
            handle_exit(&vm, 0, &mut cpu, &read, &host),
            Action::Continue
        );
        assert_eq!(cpu.register(4), 0, "reads as zero");
        assert_eq!(cpu.pc(), RAM + 8);
        assert!(
            cpu.injected.is_empty(),
            "no UNDEF: guests (Linux clears the OS lock at boot) must not fault"
        );
    }
    // Negative control: any other trapped register is UNDEFINED.
    let mut cpu = FakeCpu::at(RAM);
    let other = trap(Exit::SysReg(SysRegAccess {
        register: TrappedRegister::Other(1),
        write: false,
        value_register: 0,
        high_register: None,
    }));
    handle_exit(&vm, 0, &mut cpu, &other, &host);
    assert_eq!(cpu.injected.len(), 1);
}

/// A trapped access to `register` through x`value_register`.
fn sysreg(register: TrappedRegister, write: bool, value_register: u8) -> Trap {
    trap(Exit::SysReg(SysRegAccess {
        register,
        write,
        value_register,
        high_register: None,
    }))
}

#[test]
fn actlr_reads_as_zero_ignores_writes_and_moves_the_pc() {
    let (vm, host) = (vm(GicVersion::V2, 1, 0), Recorder::default());
    let mut cpu = FakeCpu::at(RAM).with_registers(&[0, 0, 0xdead_beef]);
    // MSR ACTLR_EL1, x2: the value stays in x2 and goes nowhere.
    let write = sysreg(TrappedRegister::AuxiliaryControl, true, 2);
    assert_eq!(
        handle_exit(&vm, 0, &mut cpu, &write, &host),
        Action::Continue
    );
    assert_eq!(cpu.register(2), 0xdead_beef);
    assert_eq!(cpu.pc(), RAM + 4);
    // MRS x2, ACTLR_EL1 reads zero, whatever was written.
    let read = sysreg(TrappedRegister::AuxiliaryControl, false, 2);
    assert_eq!(
        handle_exit(&vm, 0, &mut cpu, &read, &host),
        Action::Continue
    );
    assert_eq!(cpu.register(2), 0);
    assert_eq!(cpu.pc(), RAM + 8);
    assert!(cpu.injected.is_empty());
    assert!(host.faults.borrow().is_empty());
    assert!(cpu.set_way_cleaned.is_empty());
    // Negative control: classified as before TACR had a name (any other
    // register), the same read is UNDEFINED, the PC stays on it and the
    // register is untouched.
    let mut cpu = FakeCpu::at(RAM).with_registers(&[0, 0, 0xdead_beef]);
    let before = sysreg(TrappedRegister::Other(0x4081), false, 2);
    handle_exit(&vm, 0, &mut cpu, &before, &host);
    assert_eq!(cpu.injected, [Injected::Undefined(before.syndrome)]);
    assert_eq!(cpu.pc(), RAM);
    assert_eq!(cpu.register(2), 0xdead_beef);
}

#[test]
fn implementation_defined_registers_are_undefined_and_leave_the_pc() {
    let (vm, host) = (vm(GicVersion::V2, 1, 0), Recorder::default());
    for write in [false, true] {
        let mut cpu = FakeCpu::at(RAM).with_registers(&[0, 0, 0, 0x5a5a]);
        let access = sysreg(TrappedRegister::ImplementationDefined, write, 3);
        assert_eq!(
            handle_exit(&vm, 0, &mut cpu, &access, &host),
            Action::Continue
        );
        // UNDEFINED at the instruction itself: the injection (the back-end
        // takes the exception from this PC) is all that happens.
        assert_eq!(cpu.injected, [Injected::Undefined(access.syndrome)]);
        assert_eq!(cpu.pc(), RAM, "the PC is not moved past the access");
        assert_eq!(cpu.register(3), 0x5a5a, "a read does not write x3");
        assert!(cpu.set_way_cleaned.is_empty());
    }
    assert_eq!(host.faults.borrow().len(), 2, "each UNDEF is reported");
    // Negative control: had the space been treated like ACTLR_EL1 (RAZ/WI),
    // the read would complete with zero and no exception.
    let mut cpu = FakeCpu::at(RAM).with_registers(&[0, 0, 0, 0x5a5a]);
    handle_exit(
        &vm,
        0,
        &mut cpu,
        &sysreg(TrappedRegister::AuxiliaryControl, false, 3),
        &host,
    );
    assert!(cpu.injected.is_empty());
    assert_eq!((cpu.pc(), cpu.register(3)), (RAM + 4, 0));
}

#[test]
fn set_way_maintenance_is_a_clean_and_invalidate_of_the_same_operand() {
    use crate::exit::SetWayOperation;
    let (vm, host) = (vm(GicVersion::V2, 1, 0), Recorder::default());
    // Level 2 (field value 1), set 0x13, way 3 on some geometry; and a value
    // with bits outside the architectural fields, which the core passes on
    // untouched (the back-end keeps only the fields it knows).
    for operand in [0xc000_0262, u64::MAX] {
        for operation in [
            SetWayOperation::Invalidate,
            SetWayOperation::Clean,
            SetWayOperation::CleanInvalidate,
        ] {
            let mut cpu = FakeCpu::at(RAM).with_registers(&[0, 0, 0, 0, 0, operand]);
            let dc = sysreg(TrappedRegister::DataCacheSetWay(operation), true, 5);
            assert_eq!(handle_exit(&vm, 0, &mut cpu, &dc, &host), Action::Continue);
            assert_eq!(cpu.set_way_cleaned, [operand], "{operation:?}");
            assert_eq!(cpu.pc(), RAM + 4, "{operation:?} is skipped");
            assert_eq!(cpu.register(5), operand, "the operand register is kept");
            assert!(cpu.injected.is_empty());
        }
    }
    assert!(host.faults.borrow().is_empty());
    // Negative controls: the same DC ISW classified as before (any other
    // register) is UNDEFINED and touches no cache; and the SYSL shape (a
    // read) of the encoding is no maintenance instruction at all.
    for unhandled in [
        sysreg(TrappedRegister::Other(0x3b2), true, 5),
        sysreg(
            TrappedRegister::DataCacheSetWay(SetWayOperation::Invalidate),
            false,
            5,
        ),
    ] {
        let mut cpu = FakeCpu::at(RAM).with_registers(&[0, 0, 0, 0, 0, 0x42]);
        handle_exit(&vm, 0, &mut cpu, &unhandled, &host);
        assert!(cpu.set_way_cleaned.is_empty(), "{unhandled:?}");
        assert_eq!(cpu.injected, [Injected::Undefined(unhandled.syndrome)]);
        assert_eq!(cpu.pc(), RAM);
    }
}

fn aarch32_vm(vcpus: usize) -> VmCore {
    VmCore::new(
        0,
        "guest32".into(),
        QEMU_VIRT,
        VmShape {
            gic: GicVersion::V2,
            vcpu_count: vcpus,
            nic_count: 0,
            arch: chroma_manifest::GuestArch::Aarch32,
        },
        RamRegion {
            ipa: RAM,
            size: 1 << 24,
        },
        [0; MAX_VCPUS],
        BootRequest::default(),
    )
}

#[test]
fn an_aarch32_guest_has_smc32_psci_and_no_smc64() {
    let (guest, host) = (aarch32_vm(2), Recorder::default());
    let unknown = PsciReturn::NotSupported.to_register();
    // SMC64 function ids are unknown to AArch32 (SMCCC), and its
    // PSCI_FEATURES says so; their SMC32 twins work.
    assert_eq!(
        hvc(&guest, &host, 0, &[u64::from(psci::CPU_ON_64), 1, RAM, 0]).1,
        unknown
    );
    assert_eq!(
        hvc(
            &guest,
            &host,
            0,
            &[u64::from(psci::PSCI_FEATURES), u64::from(psci::CPU_ON_64)]
        )
        .1,
        unknown
    );
    assert_eq!(
        hvc(
            &guest,
            &host,
            0,
            &[u64::from(psci::PSCI_FEATURES), u64::from(psci::CPU_ON_32)]
        )
        .1,
        PsciReturn::Success.to_register()
    );
    assert_eq!(guest.power(1), Power::Off, "the SMC64 CPU_ON did nothing");
    // A Thumb entry point (bit 0 set) is an AArch32 guest's right ...
    let thumb = RAM + 0x1001;
    assert_eq!(
        hvc(&guest, &host, 0, &[u64::from(psci::CPU_ON_32), 1, thumb, 9]).1,
        PsciReturn::Success.to_register()
    );
    assert_eq!(
        guest.take_start(1),
        Some(BootRequest {
            entry: thumb,
            argument: 9,
            cpu_on: true,
        })
    );
    // ... an unaligned A32 one is not.
    let aarch32 = aarch32_vm(2);
    assert_eq!(
        hvc(
            &aarch32,
            &host,
            0,
            &[u64::from(psci::CPU_ON_32), 1, RAM + 2, 0]
        )
        .1,
        PsciReturn::InvalidAddress.to_register()
    );
    // An AArch64 guest gets neither: its entry points are A64, word-aligned.
    let aarch64 = vm(GicVersion::V2, 2, 0);
    assert_eq!(
        hvc(
            &aarch64,
            &host,
            0,
            &[u64::from(psci::CPU_ON_64), 1, thumb, 0]
        )
        .1,
        PsciReturn::InvalidAddress.to_register()
    );
}

#[test]
fn a_decoded_writeback_lands_only_when_the_access_does() {
    let (vm, host) = (vm(GicVersion::V2, 1, 0), Recorder::default());
    let with_writeback = |ipa| {
        trap(Exit::Mmio(MmioAccess {
            writeback: Some(crate::exit::Writeback {
                register: 5,
                value: 0x0900_0004,
            }),
            ..match mmio(ipa, AccessWidth::Word, true, 3).exit {
                Exit::Mmio(access) => access,
                other => panic!("mmio() built {other:?}, not an MMIO exit"),
            }
        }))
    };
    // A store to the UART with post-indexed writeback: r5 moves on.
    let mut cpu = FakeCpu::at(RAM).with_registers(&[0, 0, 0, u64::from(b'w'), 0, 0x0900_0000]);
    let action = handle_exit(&vm, 0, &mut cpu, &with_writeback(0x0900_0000), &host);
    assert_eq!(action, Action::Continue);
    assert_eq!(*host.console.borrow(), b"w");
    assert_eq!(cpu.register(5), 0x0900_0004);
    assert_eq!(cpu.pc(), RAM + 4);
    // Outside every device: an abort, and the base register stays.
    let mut cpu = FakeCpu::at(RAM).with_registers(&[0, 0, 0, 0, 0, 0x0d00_0000]);
    handle_exit(&vm, 0, &mut cpu, &with_writeback(0x0d00_0000), &host);
    assert_eq!(cpu.register(5), 0x0d00_0000);
    assert_eq!(cpu.injected.len(), 1);
}
