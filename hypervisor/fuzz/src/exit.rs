//! Exits: the AArch64 syndrome decoder on arbitrary ESR/FAR/HPFAR, and exit
//! dispatch (`handle_exit`) of decoded traps on a fake vCPU with a recording
//! host.

use std::cell::RefCell;

use chroma_arch::aarch64::esr::{decode, decode_trap, ec, ESR_IL};
use chroma_core::exit::{AccessWidth, Exit, SysRegAccess, TrappedRegister};
use chroma_core::fake::{FakeCpu, Injected};
use chroma_core::guest_map::{VmShape, QEMU_VIRT};
use chroma_core::vcpu::{handle_exit, Action, ExitHost, FaultReport, GuestCpu};
use chroma_core::vgic::{GicVersion, VcpuMask, MAX_VCPUS};
use chroma_core::vm::{BootRequest, RamRegion, StopReason, VmCore};

use crate::{Bytes, Outcome};

/// Decoder invariants: no panic; `decode_trap` agrees with `decode` and
/// keeps the syndrome; the instruction length is 2 or 4 as ESR.IL says;
/// register numbers fit 0..=31; an emulated access's IPA is FAR's page
/// offset within HPFAR's page, inside the 52-bit IPA space.
pub fn fuzz_decode(data: &[u8]) -> Outcome {
    if data.len() < 24 {
        return Outcome::Rejected;
    }
    let mut input = Bytes::new(data);
    let (esr, far, hpfar) = (input.u64(), input.u64(), input.u64());
    // SPSR_EL2: AArch64 EL1h, or AArch32 (nRW) with the input's flags and
    // IT state, so conditional AArch32 traps are judged both ways.
    let flags = input.u32();
    let pstate = if flags & 1 == 0 {
        0x3c5
    } else {
        u64::from(flags & 0xfe00_fc00) | 0x1d3
    };
    check_decode(esr, far, hpfar, pstate);
    // The same with a class the decoder knows, so most inputs go deep.
    let classes = [
        ec::WFX,
        ec::HVC64,
        ec::SMC64,
        ec::SYS64,
        ec::IABT_LOW,
        ec::DABT_LOW,
        ec::CP15_32,
        ec::CP15_64,
        ec::CP14_32,
        ec::CP14_LS,
        ec::CP14_64,
        ec::HVC32,
        ec::SMC32,
    ];
    let class = classes[usize::from(input.u8()) % classes.len()];
    check_decode((esr & !(0x3f << 26)) | class << 26, far, hpfar, pstate);
    // An AArch32 guest's instruction word, for loads and stores without a
    // syndrome: whatever it is, the decoder answers without panicking, and
    // what it decodes names real registers and never writes back into the
    // register a load fills.
    let insn = input.u32();
    let registers: [u64; 15] = core::array::from_fn(|_| u64::from(input.u32()));
    if let Some(access) = chroma_arch::aarch64::a32::decode(insn, |n| {
        registers.get(usize::from(n)).copied().unwrap_or(0)
    }) {
        assert!(access.rt <= 14, "{insn:#010x}");
        if let Some(writeback) = access.writeback {
            assert!(writeback.register <= 14 && writeback.register != access.rt);
            assert!(writeback.value <= u64::from(u32::MAX), "{insn:#010x}");
        }
        assert!(access.width.bytes() <= 4);
    }
    Outcome::Exercised
}

fn check_decode(esr: u64, far: u64, hpfar: u64, pstate: u64) {
    let trap = decode_trap(esr, far, hpfar, pstate);
    let class = esr >> 26 & 0x3f;
    if trap.exit == Exit::ConditionFailed {
        // Only a conditional AArch32 instruction fails its condition.
        assert!(pstate & 1 << 4 != 0, "{esr:#x} from AArch64");
        assert!(
            matches!(
                class,
                ec::WFX | ec::CP15_32 | ec::CP15_64 | ec::CP14_32 | ec::CP14_LS | ec::CP14_64 | ec::SMC32
            ),
            "{esr:#x}: class {class:#x} has no condition"
        );
    } else {
        assert_eq!(trap.exit, decode(esr, far, hpfar));
    }
    if pstate & 1 << 4 == 0 {
        assert_eq!(trap.exit, decode(esr, far, hpfar), "AArch64: no condition");
    }
    assert_eq!(trap.syndrome, esr);
    // IL says 2 or 4, but an instruction in A32 state (AArch32, T clear) is
    // always 4 bytes, whatever IL (ARMv7's HSR leaves it clear on a data
    // abort without a syndrome).
    let a32 = pstate & 1 << 4 != 0 && pstate & 1 << 5 == 0;
    let expected_length = if esr & ESR_IL != 0 || a32 { 4 } else { 2 };
    assert_eq!(trap.instruction_length, expected_length);
    match trap.exit {
        Exit::Mmio(access) => {
            assert!(access.register <= 31, "MMIO register x{}", access.register);
            let ipa = access.ipa.raw();
            assert_eq!(ipa & 0xfff, far & 0xfff, "IPA page offset is FAR's");
            assert!(ipa < 1 << 52, "IPA {ipa:#x} past 52 bits");
            assert!(access.width.bytes() <= 8);
        }
        Exit::ReadOnlyWrite(access) => {
            // HPFAR is UNKNOWN for a stage-2 Permission fault: `hpfar` is
            // the page the handler found by translating FAR, or
            // FAULT_PAGE_UNKNOWN, and then only the page offset is kept.
            assert!(access.write && access.register <= 31);
            let ipa = access.ipa.raw();
            assert_eq!(ipa & 0xfff, far & 0xfff, "IPA page offset is FAR's");
            assert!(ipa < 1 << 52, "IPA {ipa:#x} past 52 bits");
            if hpfar == chroma_arch::aarch64::esr::FAULT_PAGE_UNKNOWN {
                assert_eq!(ipa, far & 0xfff, "no page found: the offset only");
            }
        }
        Exit::AbortNoSyndrome { ipa, .. } => assert!(ipa.raw() < 1 << 52),
        Exit::SysReg(access) if class != ec::SYS64 => {
            // An AArch32 coprocessor access: Rt, Rt2 are ISS fields.
            assert!(access.value_register <= 31);
            assert!(access.high_register.is_none_or(|r| r <= 31));
            assert_eq!(
                access.high_register.is_some(),
                matches!(class, ec::CP15_64 | ec::CP14_64),
                "{esr:#x}"
            );
        }
        Exit::SysReg(access) => {
            assert!(access.value_register <= 31);
            assert_eq!(access.high_register, None);
            // ESR_EL2.ISS of a trapped MSR/MRS/SYS/SYSL: op0 [21:20],
            // CRn [13:10], direction [0].
            let iss = esr & 0x1ff_ffff;
            let (op0, crn) = (iss >> 20 & 3, iss >> 10 & 0xf);
            match access.register {
                // Set/way maintenance is an operand-taking SYS (op0 1, CRn 7).
                TrappedRegister::DataCacheSetWay(_) => {
                    assert!(access.write && op0 == 1 && crn == 7, "{esr:#x}");
                }
                // ACTLR_EL1 is op0 3, CRn 1.
                TrappedRegister::AuxiliaryControl => assert!(op0 == 3 && crn == 1),
                TrappedRegister::ImplementationDefined => {
                    assert!(matches!(op0, 1 | 3) && matches!(crn, 11 | 15), "{esr:#x}");
                }
                _ => {}
            }
            // The whole IMPLEMENTATION DEFINED space is recognised.
            if matches!(op0, 1 | 3) && matches!(crn, 11 | 15) {
                assert_eq!(access.register, TrappedRegister::ImplementationDefined);
            }
        }
        _ => {}
    }
}

/// Everything the dispatcher asked of the world.
#[derive(Default)]
struct Recorder {
    vcpus: usize,
    kicks: RefCell<Vec<VcpuMask>>,
    stops: RefCell<Vec<StopReason>>,
    console: RefCell<usize>,
}

impl ExitHost for Recorder {
    fn virtio_access(
        &self,
        _vm: &VmCore,
        nic: usize,
        offset: u64,
        _width: AccessWidth,
        _write: Option<u64>,
        _cacheable: bool,
    ) -> u64 {
        assert!(
            nic < 32 && offset < 0x200,
            "virtio access {nic}/{offset:#x}"
        );
        0x7472_6976
    }
    fn console_output(&self, _vm: &VmCore, _byte: u8) {
        *self.console.borrow_mut() += 1;
    }
    fn kick(&self, _vm: &VmCore, vcpus: VcpuMask) {
        assert_eq!(vcpus >> self.vcpus, 0, "kick {vcpus:#x}: no such vCPU");
        self.kicks.borrow_mut().push(vcpus);
    }
    fn stop(&self, vm: &VmCore, reason: StopReason) {
        vm.set_stopped(reason);
        self.stops.borrow_mut().push(reason);
    }
    fn system_reset(&self, _vm: &VmCore, caller: usize) {
        assert!(caller < self.vcpus);
    }
    fn report_fault(&self, _vm: &VmCore, _fault: FaultReport) {}
}

const RAM: u64 = 0x4000_0000;
const RAM_SIZE: u64 = 1 << 24;

/// PSCI and SMCCC function IDs (DEN 0022), for x0 of an HVC.
const PSCI_CALLS: [u64; 12] = [
    0x8400_0000,
    0x8400_0001,
    0xc400_0001,
    0x8400_0002,
    0xc400_0003,
    0xc400_0004,
    0x8400_0006,
    0x8400_0008,
    0x8400_0009,
    0x8400_000a,
    0x8000_0000,
    0x8400_0003,
];

/// An IPA in one of the windows of the guest map, or anywhere.
fn ipa(input: &mut Bytes<'_>) -> u64 {
    let window = input.u8();
    let offset = u64::from(input.u16());
    match window % 8 {
        0 => QEMU_VIRT.gic_distributor.base + offset,
        1 => QEMU_VIRT.gic_cpu_interface.base + offset,
        2 => QEMU_VIRT.gic_redistributors.base + (offset << 4 & 0xf_ffff) + offset % 16,
        3 => QEMU_VIRT.uart.base + (offset & 0xfff),
        4 => QEMU_VIRT.virtio_mmio.base + offset % (0x200 * 4),
        5 => RAM + offset,
        6 => offset << 20,
        _ => input.u64(),
    }
}

/// Dispatch invariants: no panic; the PC moves by the trapped
/// instruction's length (2 or 4) exactly when the instruction completed
/// (MMIO emulated, SMC answered, WFI/WFE, a trapped SGI1R write), and stays
/// put when HVC returns (the PC is already past it), when an exception is
/// injected (the guest's vector takes it from the faulting instruction) or
/// for a physical interrupt; kicks name existing vCPUs only. Trapped
/// registers shared by the physical CPU: ACTLR_EL1 completes and reads as
/// zero; the IMPLEMENTATION DEFINED space is UNDEFINED; set/way maintenance
/// completes as exactly one clean and invalidate of the guest's operand.
pub fn fuzz_dispatch(data: &[u8]) -> Outcome {
    if data.len() < 2 {
        return Outcome::Rejected;
    }
    let mut input = Bytes::new(data);
    let setup = input.u8();
    let gic = if setup & 1 == 0 {
        GicVersion::V2
    } else {
        GicVersion::V3
    };
    let vcpus = usize::from(setup >> 1 & 7) + 1;
    let nics = usize::from(setup >> 4 & 3);
    let vm = VmCore::new(
        0,
        "fuzz".into(),
        QEMU_VIRT,
        VmShape {
            gic,
            vcpu_count: vcpus,
            nic_count: nics,
            arch: chroma_manifest::GuestArch::Aarch64,
        },
        RamRegion {
            ipa: RAM,
            size: RAM_SIZE,
        },
        [0; MAX_VCPUS],
        BootRequest {
            entry: RAM,
            argument: 0,
            cpu_on: false,
        },
    );
    let host = Recorder {
        vcpus,
        ..Recorder::default()
    };
    let mut cpus: Vec<FakeCpu> = (0..vcpus).map(|_| FakeCpu::at(RAM + 0x1000)).collect();
    while !input.is_empty() {
        let selector = input.u8();
        let vcpu = usize::from(selector >> 5) % vcpus;
        let raw = u64::from(input.u32());
        let esr = if selector & 1 == 0 {
            // A class the decoder knows; data aborts mostly with a syndrome.
            let classes = [
                ec::DABT_LOW,
                ec::DABT_LOW,
                ec::DABT_LOW,
                ec::HVC64,
                ec::SMC64,
                ec::SYS64,
                ec::WFX,
                ec::IABT_LOW,
            ];
            let class = classes[usize::from(selector >> 1 & 7)];
            let mut iss = raw & 0x1ff_ffff;
            if class == ec::DABT_LOW && raw & 1 << 31 == 0 {
                // ISV set, no S1PTW, a translation fault at level 0..3.
                iss = (iss | 1 << 24) & !(1 << 7) & !0x3f | 0x04 | (raw >> 28 & 3);
            }
            class << 26 | (raw & ESR_IL) | iss
        } else {
            raw | u64::from(input.u32()) << 32
        };
        let address = ipa(&mut input);
        let far = address & 0xfff | u64::from(input.u16()) << 12;
        let hpfar = (address >> 12) << 4;
        let trap = decode_trap(esr, far, hpfar, 0x3c5);
        let cpu = &mut cpus[vcpu];
        // The register the instruction names, and x0..x3 for PSCI.
        let value = input.u64();
        match trap.exit {
            Exit::Mmio(access) => cpu.set_register(access.register, value),
            Exit::SysReg(access) => cpu.set_register(access.value_register, value),
            Exit::Hypercall { .. } => {
                let call = PSCI_CALLS[usize::from(input.u8()) % PSCI_CALLS.len()];
                cpu.set_register(0, if value & 0xff == 0xff { value } else { call });
                cpu.set_register(1, value >> 8 & 0xf);
                cpu.set_register(2, RAM + (value >> 16 & 0xffff) * 4);
                cpu.set_register(3, value);
            }
            _ => {}
        }
        let pc = cpu.pc();
        let injected = cpu.injected.len();
        let set_way_count = cpu.set_way_cleaned.len();
        let operand = match trap.exit {
            Exit::SysReg(access) => cpu.register(access.value_register),
            _ => 0,
        };
        let action = handle_exit(&vm, vcpu, cpu, &trap, &host);
        let moved = cpu.pc().wrapping_sub(pc);
        let took_exception = cpu.injected.len() > injected;
        assert!(
            moved == 0 || moved == u64::from(trap.instruction_length),
            "PC moved by {moved} for {trap:?}"
        );
        assert!(matches!(trap.instruction_length, 2 | 4));
        if took_exception {
            assert_eq!(moved, 0, "PC moved and an exception injected: {trap:?}");
            assert_eq!(cpu.injected.len(), injected + 1);
        }
        match trap.exit {
            Exit::Hypercall { .. } | Exit::Interrupt => assert_eq!(moved, 0, "{trap:?}"),
            Exit::WaitForInterrupt => {
                assert_eq!(moved, u64::from(trap.instruction_length));
                assert_eq!(action, Action::Wait);
            }
            Exit::WaitForEvent | Exit::SecureMonitorCall { .. } => {
                assert_eq!(moved, u64::from(trap.instruction_length), "{trap:?}");
            }
            // Skipped, with nothing else done.
            Exit::ConditionFailed => {
                assert_eq!(moved, u64::from(trap.instruction_length), "{trap:?}");
                assert_eq!(action, Action::Continue);
                assert!(!took_exception);
            }
            Exit::Mmio(_) => assert!(
                took_exception || moved != 0 || action == Action::Off,
                "MMIO neither completed nor aborted: {trap:?}"
            ),
            // A store to an image page (virtio-mmio's, the UART's)
            // completes (emulated or, for a slot without a device,
            // ignored): the guest moves past it. Any other page is one
            // the handler could not find: the guest retries the store.
            Exit::ReadOnlyWrite(access) => {
                let page = access.ipa.raw() & !0xfff;
                if page == vm.map.virtio_mmio.base || page == vm.map.uart.base {
                    assert!(
                        moved != 0 || action == Action::Off,
                        "a store to a register image did not complete: {trap:?}"
                    );
                } else {
                    assert_eq!((moved, action), (0, Action::Continue), "{trap:?}");
                    assert!(!took_exception, "{trap:?}");
                }
            }
            Exit::AbortNoSyndrome { .. } | Exit::Unhandled { .. } => {
                assert!(took_exception || action == Action::Off, "{trap:?}");
            }
            Exit::SysReg(_) => assert!(took_exception || moved != 0 || action == Action::Off),
        }
        let cleaned = &cpu.set_way_cleaned[set_way_count..];
        match trap.exit {
            Exit::SysReg(SysRegAccess {
                register: TrappedRegister::DataCacheSetWay(_),
                write: true,
                ..
            }) => {
                assert_eq!(cleaned, [operand], "{trap:?}");
                assert_eq!(moved, u64::from(trap.instruction_length));
                assert!(!took_exception);
            }
            Exit::SysReg(SysRegAccess {
                register: TrappedRegister::AuxiliaryControl,
                write,
                value_register,
                high_register: None,
            }) => {
                assert!(!took_exception && moved != 0, "{trap:?}");
                if !write {
                    assert_eq!(cpu.register(value_register), 0, "ACTLR_EL1 reads zero");
                }
            }
            Exit::SysReg(SysRegAccess {
                register: TrappedRegister::ImplementationDefined,
                ..
            }) => {
                assert!(took_exception || action == Action::Off, "{trap:?}");
                assert_eq!(moved, 0);
            }
            _ => {}
        }
        if !matches!(
            trap.exit,
            Exit::SysReg(SysRegAccess {
                register: TrappedRegister::DataCacheSetWay(_),
                write: true,
                ..
            })
        ) {
            assert!(cleaned.is_empty(), "cache maintained for {trap:?}");
        }
        if matches!(cpu.injected.last(), Some(Injected::Undefined(s)) if took_exception && *s != esr)
        {
            panic!("UNDEFINED injected with another syndrome than {esr:#x}");
        }
        if vm.is_stopped() {
            break;
        }
    }
    Outcome::Exercised
}
