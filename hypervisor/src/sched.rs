//! System bring-up and the per-CPU scheduler loop.
//!
//! Every vCPU is pinned to one physical CPU. Each CPU runs the vCPUs pinned
//! to it round-robin: a vCPU runs until it traps; WFI with nothing pending
//! parks it until an interrupt for it arrives (its virtual timer, an SGI, a
//! device), and when several are runnable a 10 ms slice on the EL2 physical
//! timer rotates them. A CPU with nothing to run sleeps in WFI with its
//! EL2 timer set to the earliest virtual-timer deadline of its parked vCPUs.

use crate::exits::{self, Action};
use crate::platform_info::BoardInfo;
use crate::vm::{power, StopReason, Vm};
use crate::{console, semihosting};
use alloc::vec::Vec;
use chroma_arch::aarch64::context::El1Context;
use chroma_arch::aarch64::gic::{Gic, GicKind};
use chroma_arch::aarch64::sysreg;
use chroma_arch::aarch64::vectors::{enter_guest, ExceptionKind, GuestRegisters};
use chroma_core::vgic::{GicVersion, MAX_VCPUS};
use chroma_manifest::Manifest;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use spin::Once;

/// The SGI one physical CPU sends another to make it re-examine its vCPUs.
const KICK_SGI: u32 = 0;
/// PPI of the GIC maintenance interrupt (INTID 25).
const MAINTENANCE_INTID: u32 = 25;
/// Time slice when several vCPUs share a CPU.
const SLICE_MS: u64 = 10;
/// A VM with a NIC in deferred-kick mode exits at least this often.
const POLL_MS: u64 = 1;
/// Console input is polled at least this often by CPU 0.
const CONSOLE_POLL_MS: u64 = 20;
/// Most physical CPUs.
const MAX_CPUS: usize = chroma_arch::aarch64::boot::MAX_CPUS;

/// Everything shared by all CPUs, set up once by the boot CPU.
pub struct System {
    /// The VMs that were created.
    pub vms: Vec<Vm>,
    /// VMs from the manifest that could not be created.
    pub failed_to_start: usize,
    /// The physical GIC.
    pub gic: GicKind,
    /// The guest-visible GIC version (the physical one).
    pub version: GicVersion,
    /// Stage-2 control, the same on every CPU.
    pub vtcr: u64,
    /// INTIDs of the EL2 physical timer and the virtual timer.
    pub hyp_timer_intid: u32,
    /// The virtual timer's INTID.
    pub virt_timer_intid: u32,
    /// Timer ticks per millisecond.
    pub ticks_per_ms: u64,
    /// MPIDR of each physical CPU (from the device tree).
    pub cpu_mpidr: [AtomicU64; MAX_CPUS],
    /// GICv2 CPU interface mask of each CPU (learnt when it starts).
    pub cpu_v2_mask: [AtomicU8; MAX_CPUS],
    /// Number of physical CPUs.
    pub cpu_count: usize,
    /// The switches.
    pub switches: Vec<crate::nic::SwitchEntry>,
    /// The switch with the uplink and the uplink's INTID.
    pub uplink: Option<(usize, u32)>,
    /// Cache geometry and the forced mode, for per-device policy choices.
    pub cache: (Option<chroma_cache::CacheGeometry>, bool),
}

static SYSTEM: Once<System> = Once::new();
static FINISHING: AtomicBool = AtomicBool::new(false);
/// The VM that receives console input.
pub static FOCUS: AtomicUsize = AtomicUsize::new(0);

/// The shared system state.
pub fn system() -> &'static System {
    SYSTEM.get().unwrap_or_else(|| crate::fatal("system not initialised"))
}

/// VTCR_EL2 for `ipa_bits`: T0SZ, start level, write-back inner shareable
/// walks, 4 KiB granule, PS from the CPU, RES1 bit 31.
fn vtcr_value(ipa_bits: u8, start_level: u8) -> u64 {
    let sl0 = match start_level {
        0 => 2,
        1 => 1,
        _ => 0,
    };
    (64 - u64::from(ipa_bits)) | sl0 << 6 | 0b01 << 8 | 0b01 << 10 | 0b11 << 12 | crate::mm::pa_range_field() << 16 | 1 << 31
}

/// Creates the VMs and the shared state (boot CPU, before secondaries start).
pub fn init_system(board: &BoardInfo, manifest: &Manifest<'static>) {
    semihosting::configure(manifest.options().exit_via_semihosting);
    let version = match board.gic {
        GicKind::V2 { .. } => GicVersion::V2,
        GicKind::V3 { .. } => GicVersion::V3,
    };
    let cache = cache_setup(manifest);
    let mut cache = match cache {
        Some(c) => c,
        None => crate::fatal("no VA window for guest-RAM aliases"),
    };
    let mut ports = alloc::vec![0usize; manifest.switches().count()];
    let mut vms = Vec::new();
    let mut failed = 0;
    for spec in manifest.vms() {
        match Vm::create(vms.len(), &spec, board, version, &mut cache, &mut ports) {
            Ok(vm) => {
                log::info!(
                    "vm {}: {} MiB at IPA {:#x} (PA {:#x}), {} vCPU(s) on CPU(s) {:?}",
                    vm.name,
                    vm.ram.2 >> 20,
                    vm.ram.0,
                    vm.ram.1,
                    vm.vcpu_count,
                    &vm.affinity[..vm.vcpu_count]
                );
                vms.push(vm);
            }
            Err(e) => {
                log::warn!("vm {} not started: {}", spec.name, e);
                failed += 1;
            }
        }
    }
    if let Err(e) = cache.aliases.check_invariant() {
        crate::fatal_fmt(format_args!("guest-RAM aliases break the colour invariant: {e:?}"));
    }
    let switches = build_switches(manifest, &vms, board);
    let uplink = switches.iter().enumerate().find_map(|(i, s)| s.state.lock().uplink.as_ref().map(|u| (i, u.intid)));
    let geometry = chroma_core::pagetable::Geometry::stage2(board.ipa_bits).unwrap_or_else(|| crate::fatal("IPA size"));
    SYSTEM.call_once(|| System {
        vms,
        failed_to_start: failed,
        gic: board.gic,
        version,
        vtcr: vtcr_value(board.ipa_bits, geometry.start_level),
        hyp_timer_intid: board.hyp_timer_intid,
        virt_timer_intid: board.virt_timer_intid,
        ticks_per_ms: (sysreg::cntfrq_el0() / 1000).max(1),
        cpu_mpidr: core::array::from_fn(|i| AtomicU64::new(board.cpus.get(i).copied().flatten().unwrap_or(0))),
        cpu_v2_mask: core::array::from_fn(|_| AtomicU8::new(0)),
        cpu_count: board.cpus.iter().flatten().count().clamp(1, MAX_CPUS),
        switches,
        uplink,
        cache: (cache.geometry.clone(), cache.forced),
    });
    // SAFETY: the GIC frames come from the device tree and were mapped as
    // device memory by `mm::init`.
    let gic = unsafe { Gic::new(board.gic) };
    gic.init_distributor();
    if let Some((_, intid)) = uplink {
        gic.enable_spi(intid);
    }
}

/// Reads the cache geometry and picks the policy for guest-memory access.
fn cache_setup(manifest: &Manifest<'static>) -> Option<crate::vm::CacheSetup> {
    use chroma_cache::{Policy, PolicyInputs};
    let forced = manifest.options().cache_mode == chroma_manifest::CacheMode::Force;
    let geometry = chroma_cache::arch::aarch64::read_geometry(chroma_core::pagetable::PAGE_SIZE);
    let (policy, colours) = match &geometry {
        Ok(g) => {
            // Guests map their rings write-back (virtio nodes are dma-coherent);
            // a guest with its caches off is caught when its driver starts.
            let policy = Policy::choose(g, PolicyInputs { forced, ..PolicyInputs::default() });
            let colours = if forced { g.data_colours().max(4) } else if policy.colours() { g.data_colours() } else { 1 };
            (policy, colours)
        }
        Err(_) => (if forced { Policy::ColourAndMaintain } else { Policy::Maintain }, if forced { 4 } else { 1 }),
    };
    log::info!(
        "caches: {:?}; policy {:?}{}, {} colour(s) for guest-memory aliases",
        geometry.as_ref().map(|g| g.data_colours()).map_err(|_| "unknown geometry"),
        policy,
        if forced { " (forced)" } else { "" },
        colours
    );
    let (base, size) = crate::mm::ALIAS_WINDOW;
    let aliases = chroma_cache::ColourAllocator::new(
        chroma_mem::HostVirtAddr::new(base),
        size,
        chroma_core::pagetable::PAGE_SIZE,
        colours,
    )
    .ok()?;
    Some(crate::vm::CacheSetup { aliases, policy, geometry: geometry.ok(), forced })
}

/// Builds the switches of the manifest with their VM ports, and the uplink.
fn build_switches(manifest: &Manifest<'static>, vms: &[Vm], board: &BoardInfo) -> Vec<crate::nic::SwitchEntry> {
    use chroma_virtio::switch::{Switch, SwitchConfig};
    let mut switches = Vec::new();
    for (index, spec) in manifest.switches().enumerate() {
        let mut members: Vec<(usize, usize)> = Vec::new();
        for vm in vms {
            for (n, nic) in vm.nics.iter().enumerate() {
                if nic.switch == index {
                    members.push((vm.index, n));
                }
            }
        }
        members.sort_by_key(|&(v, n)| vms[v].nics[n].port);
        let uplink = if spec.uplink {
            let windows: Vec<(u64, u64, u32)> = board.virtio.iter().flatten().copied().collect();
            let u = crate::uplink::Uplink::probe(&windows);
            if u.is_none() {
                log::warn!("switch {}: the board has no virtio-net NIC: no uplink", spec.name);
            }
            u
        } else {
            None
        };
        let port_count = members.len() + usize::from(uplink.is_some());
        let config = SwitchConfig { port_count: port_count.max(1), ..SwitchConfig::default() };
        log::info!("switch {}: {} port(s){}", spec.name, port_count, if uplink.is_some() { ", uplink" } else { "" });
        switches.push(crate::nic::SwitchEntry {
            name: spec.name,
            state: spin::Mutex::new(crate::nic::SwitchState { switch: Switch::new(config), members, uplink }),
        });
    }
    switches
}

/// Starts the other CPUs with PSCI CPU_ON. Returns how many started.
pub fn start_secondaries(board: &BoardInfo) -> usize {
    let me = sysreg::mpidr_el1() & 0xff_00ff_ffff;
    let mut started = 0;
    for (index, mpidr) in board.cpus.iter().enumerate().skip(1) {
        let Some(mpidr) = mpidr else { continue };
        if *mpidr == me {
            continue;
        }
        // SAFETY: the entry is chroma's secondary entry, which sets up its
        // own stack (by index) and MMU before running Rust code.
        let result = unsafe {
            sysreg::smc_call(0xc400_0003, *mpidr, chroma_arch::aarch64::boot::secondary_entry_address(), index as u64)
        };
        if result == 0 {
            started += 1;
        } else {
            log::warn!("CPU {index} (MPIDR {mpidr:#x}) did not start: PSCI {}", result as i64);
        }
    }
    started
}

/// A vCPU as its physical CPU runs it.
pub struct VcpuRun {
    /// The VM.
    pub vm: &'static Vm,
    /// vCPU number in the VM.
    pub id: usize,
    /// General-purpose registers, PC and PSTATE.
    pub registers: GuestRegisters,
    context: El1Context,
    vmcr: u64,
    /// Parked in WFI until an interrupt is pending for it.
    waiting: bool,
    /// Has run since its last power-on (its registers are initialised).
    started: bool,
}

/// One physical CPU's scheduler state.
pub struct Cpu {
    /// This CPU's index.
    pub index: usize,
    /// The physical GIC seen from this CPU.
    pub gic: Gic,
    /// The vCPUs pinned to this CPU.
    pub vcpus: Vec<VcpuRun>,
    /// Which of `vcpus` has its EL1 state in the CPU's registers.
    loaded: Option<usize>,
    next: usize,
}

/// The per-CPU loop. Never returns.
pub fn run_cpu(index: usize) -> ! {
    let sys = system();
    // SAFETY: the GIC frames were mapped by the boot CPU before this CPU started.
    let gic = unsafe { Gic::new(sys.gic) };
    gic.init_cpu(&[KICK_SGI, MAINTENANCE_INTID, sys.hyp_timer_intid, sys.virt_timer_intid]);
    crate::vtimer::init_cpu();
    sys.cpu_v2_mask[index.min(MAX_CPUS - 1)].store(gic.cpu_interface_mask(), Ordering::SeqCst);
    sys.cpu_mpidr[index.min(MAX_CPUS - 1)].store(sysreg::mpidr_el1() & 0xff_00ff_ffff, Ordering::SeqCst);
    init_el2_controls(sys);
    let mut cpu = Cpu { index, gic, vcpus: Vec::new(), loaded: None, next: 0 };
    for vm in sys.vms.iter() {
        for id in 0..vm.vcpu_count {
            if vm.affinity[id] == index {
                cpu.vcpus.push(VcpuRun {
                    vm,
                    id,
                    registers: GuestRegisters::default(),
                    context: El1Context::default(),
                    vmcr: 0,
                    waiting: false,
                    started: false,
                });
            }
        }
    }
    if index == 0 {
        report_if_all_stopped();
    }
    loop {
        if index == 0 {
            crate::console::show_quiet_line();
            crate::exits::poll_console(&cpu.gic, index);
            // Frames the uplink could not take earlier are retried here.
            if let Some((switch, _)) = system().uplink {
                crate::nic::run_switch(&cpu.gic, index, switch);
            }
        }
        // Parked vCPUs whose timer expired while others ran become runnable.
        cpu.wake_expired_timers();
        match cpu.pick() {
            Some(k) => cpu.run(k),
            None => cpu.idle(),
        }
    }
}

/// Trap and timer controls that are the same for every vCPU on this CPU.
fn init_el2_controls(sys: &System) {
    // SAFETY: these values set up trapping for guests (see `hcr_value`), give
    // the guest the virtual counter/timer and keep EL1 off the physical
    // timer; no guest runs on this CPU yet.
    unsafe {
        sysreg::write_hcr_el2(hcr_value());
        sysreg::write_vtcr_el2(sys.vtcr);
        // EL1PCTEN: guests may read the physical counter; EL1PCEN clear: the
        // physical timer belongs to the hypervisor.
        sysreg::write_cnthctl_el2(1);
        sysreg::write_cntvoff_el2(0);
        // CPTR_EL2: no FP/SIMD traps (the guest owns those registers), RES1 bits.
        sysreg::write_cptr_el2(0x33ff);
        sysreg::write_mdcr_el2(0);
        sysreg::write_cnthp_ctl_el2(0);
        sysreg::isb();
    }
}

/// HCR_EL2 while guests run (R2: one place, one reason per bit).
fn hcr_value() -> u64 {
    const VM: u64 = 1 << 0; // stage-2 translation on
    const SWIO: u64 = 1 << 1; // set/way invalidate becomes clean+invalidate
    const FMO: u64 = 1 << 3; // physical FIQs to EL2, virtual FIQs to the guest
    const IMO: u64 = 1 << 4; // physical IRQs to EL2, virtual IRQs to the guest
    const AMO: u64 = 1 << 5; // physical SErrors to EL2
    const FB: u64 = 1 << 9; // TLB and I-cache maintenance broadcast in the inner shareable domain
    const BSU_INNER: u64 = 1 << 10; // barriers are at least inner shareable
    const TWI: u64 = 1 << 13; // WFI traps: a waiting vCPU gives its CPU away
    const TSC: u64 = 1 << 19; // SMC traps: firmware belongs to the hypervisor
    const RW: u64 = 1 << 31; // EL1 is AArch64
    const APK: u64 = 1 << 40; // pointer-authentication key registers do not trap
    const API: u64 = 1 << 41; // pointer-authentication instructions do not trap
    VM | SWIO | FMO | IMO | AMO | FB | BSU_INNER | TWI | TSC | RW | APK | API
}

fn now() -> u64 {
    sysreg::cntpct_el0()
}

impl Cpu {
    fn runnable(&self, k: usize) -> bool {
        let v = &self.vcpus[k];
        if v.vm.is_stopped() {
            return false;
        }
        match v.vm.power[v.id].load(Ordering::Acquire) {
            power::ON_PENDING => true,
            power::ON => !v.waiting || v.vm.vgic.lock().has_pending(v.id),
            _ => false,
        }
    }

    fn pick(&mut self) -> Option<usize> {
        let n = self.vcpus.len();
        (0..n).map(|i| (self.next + i) % n).find(|&k| self.runnable(k)).inspect(|&k| self.next = (k + 1) % n)
    }

    fn runnable_count(&self) -> usize {
        (0..self.vcpus.len()).filter(|&k| self.runnable(k)).count()
    }

    /// Makes vCPU `k`'s EL1 state the CPU's.
    fn load(&mut self, k: usize) {
        if self.loaded == Some(k) {
            return;
        }
        if let Some(old) = self.loaded {
            let v = &mut self.vcpus[old];
            v.context.save();
            v.vmcr = self.gic.save_vmcr();
        }
        let v = &self.vcpus[k];
        // SAFETY: the context belongs to vCPU k, which runs next on this CPU
        // with its own stage-2 tables (installed below).
        unsafe { v.context.restore() };
        self.gic.restore_vmcr(v.vmcr);
        crate::vtimer::load(&mut self.gic, v.vm, v.id);
        self.loaded = Some(k);
    }

    fn run(&mut self, k: usize) {
        let sys = system();
        let vm = self.vcpus[k].vm;
        let id = self.vcpus[k].id;
        if vm.power[id].load(Ordering::Acquire) == power::ON_PENDING || !self.vcpus[k].started {
            if vm.power[id].load(Ordering::Acquire) == power::OFF {
                return;
            }
            let (pc, x0) = if vm.power[id].load(Ordering::Acquire) == power::ON_PENDING {
                *vm.boot[id].lock()
            } else {
                (vm.entry.0, vm.entry.1)
            };
            let v = &mut self.vcpus[k];
            v.registers = GuestRegisters::default();
            v.registers.pc = pc;
            v.registers.x[0] = x0;
            // EL1h with D, A, I and F masked, as the boot protocol requires.
            v.registers.pstate = 0x3c5;
            v.context = El1Context::default();
            v.vmcr = 0;
            v.waiting = false;
            v.started = true;
            if self.loaded == Some(k) {
                self.loaded = None;
            }
            vm.power[id].store(power::ON, Ordering::Release);
        }
        self.load(k);
        // SAFETY: VTTBR_EL2 names this VM's stage-2 root and VMID; VMPIDR
        // gives the vCPU its own affinity (Aff0 = vCPU id; bit 31 RES1).
        unsafe {
            sysreg::write_vttbr_el2(u64::from(vm.vmid) << 48 | vm.stage2.root().raw());
            sysreg::write_vmpidr_el2(1 << 31 | id as u64);
            sysreg::isb();
        }
        // Wake up for the earliest of: the end of a slice (another vCPU is
        // runnable here), a parked vCPU's timer, the console poll.
        let slice = (self.runnable_count() > 1).then(|| now() + SLICE_MS * sys.ticks_per_ms);
        // A NIC of this VM defers TX kicks: make sure an exit polls it soon.
        let slice = if crate::nic::vm_polling(vm.index) {
            Some(slice.unwrap_or(u64::MAX).min(now() + POLL_MS * sys.ticks_per_ms))
        } else {
            slice
        };
        self.arm_timer(self.next_deadline(Some(k), slice));
        self.vcpus[k].waiting = false;
        loop {
            vm.vgic.lock().flush(id, &mut self.gic);
            vm.running[id].store(true, Ordering::Release);
            // A reset or stop may have turned this vCPU off since it was picked.
            if vm.power[id].load(Ordering::Acquire) != power::ON || vm.is_stopped() {
                vm.running[id].store(false, Ordering::Release);
                return;
            }
            // SAFETY: stage 2, VMPIDR and the EL1 context are vCPU k's (set
            // above); HCR_EL2 traps what the hypervisor must see.
            let kind = unsafe { enter_guest(&mut self.vcpus[k].registers) };
            vm.running[id].store(false, Ordering::Release);
            vm.vgic.lock().sync(id, &mut self.gic);
            let action = match kind {
                ExceptionKind::Synchronous => exits::handle_sync(self, k),
                ExceptionKind::Irq | ExceptionKind::Fiq => self.handle_interrupts(),
                ExceptionKind::SError => {
                    vm.stop(StopReason::Faulted("SError while the guest ran", sysreg::esr_el2()));
                    Action::Off
                }
            };
            // Poll the VM's NICs that defer TX kicks (cheap when none does).
            if crate::nic::vm_polling(vm.index) {
                // Preempted by the EL2 timer rather than trapped on its own.
                let preempted = kind != ExceptionKind::Synchronous && action == Action::Yield;
                crate::nic::poll_vm(&self.gic, self.index, vm.index, preempted);
            }
            if vm.is_stopped() {
                kick_vm(&self.gic, vm, self.index);
                report_if_all_stopped();
                return;
            }
            match action {
                Action::Continue => {}
                Action::Wait => {
                    if vm.vgic.lock().has_pending(id) {
                        continue;
                    }
                    self.vcpus[k].waiting = true;
                    return;
                }
                Action::Yield => return,
                Action::Off => return,
            }
        }
    }

    /// Arms the EL2 physical timer for `deadline` (counter ticks).
    fn arm_timer(&self, deadline: u64) {
        // SAFETY: the EL2 physical timer belongs to the hypervisor.
        unsafe {
            sysreg::write_cnthp_cval_el2(deadline);
            sysreg::write_cnthp_ctl_el2(1);
        }
    }

    /// Acknowledges and handles every pending physical interrupt. Returns
    /// what the running vCPU should do.
    pub fn handle_interrupts(&mut self) -> Action {
        let sys = system();
        let mut action = Action::Continue;
        while let Some(intid) = self.gic.acknowledge() {
            if intid == sys.virt_timer_intid {
                // The loaded vCPU's virtual timer fired: delivered through a
                // HW list register, the PPI stays active until the guest is
                // done with it (no end_of_interrupt here; see vtimer).
                crate::vtimer::fired(&self.gic, self.loaded.map(|k| (self.vcpus[k].vm, self.vcpus[k].id)));
                if let Some(k) = self.loaded {
                    self.vcpus[k].waiting = false;
                }
                continue;
            } else if sys.uplink.is_some_and(|(_, u)| u == intid) {
                if let Some((switch, _)) = sys.uplink {
                    if let Some(u) = sys.switches[switch].state.lock().uplink.as_mut() {
                        u.ack_interrupt();
                    }
                    crate::nic::run_switch(&self.gic, self.index, switch);
                }
            } else if intid == sys.hyp_timer_intid {
                // SAFETY: disarms the hypervisor's own timer.
                unsafe { sysreg::write_cnthp_ctl_el2(0) };
                self.wake_expired_timers();
                action = Action::Yield;
            }
            // KICK_SGI and maintenance: nothing to do here; the state they
            // signal is re-read before the next entry.
            self.gic.end_of_interrupt(intid);
        }
        action
    }

    /// Delivers the virtual timer of vCPUs off the CPU whose deadline passed
    /// (once per expiry: not while their timer interrupt is in flight).
    fn wake_expired_timers(&mut self) {
        let t = now();
        for k in 0..self.vcpus.len() {
            if self.loaded == Some(k) {
                continue;
            }
            let v = &mut self.vcpus[k];
            if crate::vtimer::wake_if_expired(v.vm, v.id, &v.context, t) {
                v.waiting = false;
            }
        }
    }

    /// The earliest moment this CPU must look at its vCPUs again: a parked
    /// vCPU's virtual timer (other than `running`, whose timer fires by
    /// itself), the console poll on CPU 0, and `extra`.
    fn next_deadline(&self, running: Option<usize>, extra: Option<u64>) -> u64 {
        let sys = system();
        let poll = if self.index == 0 { CONSOLE_POLL_MS } else { 1000 };
        let mut deadline = now() + poll * sys.ticks_per_ms;
        if let Some(extra) = extra {
            deadline = deadline.min(extra);
        }
        for (k, v) in self.vcpus.iter().enumerate() {
            if Some(k) == running {
                continue;
            }
            let live = self.loaded == Some(k);
            let registers = if live { crate::vtimer::live_registers() } else { v.context.virtual_timer() };
            if let Some(at) = crate::vtimer::deadline(v.vm, v.id, registers) {
                deadline = deadline.min(at);
            }
        }
        deadline
    }

    /// Nothing to run: sleep until an interrupt or the next timer deadline.
    fn idle(&mut self) {
        self.arm_timer(self.next_deadline(None, None));
        sysreg::wfi();
        self.handle_interrupts();
        self.wake_expired_timers();
    }
}

/// Makes the CPUs that run `vm`'s vCPUs look at them again.
pub fn kick_vm(gic: &Gic, vm: &Vm, me: usize) {
    kick_vcpus(gic, vm, (1u32 << vm.vcpu_count) - 1, me);
}

/// Kicks the physical CPUs of the vCPUs in `vcpus` (bit n = vCPU n).
pub fn kick_vcpus(gic: &Gic, vm: &Vm, vcpus: u32, me: usize) {
    let sys = system();
    let mut cpus = 0u32;
    for id in 0..vm.vcpu_count.min(MAX_VCPUS) {
        if vcpus & (1 << id) != 0 {
            cpus |= 1 << vm.affinity[id];
        }
    }
    cpus &= !(1 << me);
    for cpu in 0..sys.cpu_count {
        if cpus & (1 << cpu) != 0 {
            gic.send_sgi(KICK_SGI, sys.cpu_mpidr[cpu].load(Ordering::Relaxed), sys.cpu_v2_mask[cpu].load(Ordering::Relaxed));
        }
    }
}

/// If every VM has stopped, prints the summary and ends the run.
pub fn report_if_all_stopped() {
    let sys = system();
    // Every VM stopped and its stop fully reported (another CPU may still be
    // printing the last VM's lines).
    if !sys.vms.iter().all(|vm| vm.reported.load(Ordering::SeqCst)) {
        return;
    }
    if FINISHING.swap(true, Ordering::SeqCst) {
        return;
    }
    let clean = sys.vms.iter().filter(|vm| vm.stop.lock().is_some_and(|r| r.clean())).count();
    let failed = sys.vms.len() - clean + sys.failed_to_start;
    log::info!("all VMs stopped ({clean} clean, {failed} failed)");
    let _ = console::poll_input();
    semihosting::exit(if failed == 0 { 0 } else { 1 })
}
