//! System bring-up and the per-CPU scheduler loop: the wiring between the
//! portable run-loop decisions (`chroma_core::run`), exit dispatch
//! (`chroma_core::vcpu`) and the AArch64 back-end that enters guests.
//!
//! Every vCPU is pinned to one physical CPU; each CPU runs its vCPUs
//! round-robin, parks those waiting in WFI, rotates them on a slice when
//! several are runnable and sleeps until the next virtual-timer deadline
//! when none is (see `chroma_core::run` for the rules).

use crate::arch::cpu;
use crate::arch::gic::{Gic, GicKind};
use crate::arch::irq::GicCpuTarget;
use crate::arch::vcpu::{self as arch_vcpu, Vcpu};
use crate::arch::ExceptionKind;
use crate::exits::Host;
use crate::platform_info::{BoardInfo, SecondaryStart};
use crate::vm::Vm;
use crate::{console, shutdown};
use alloc::vec::Vec;
use chroma_core::irq::{self, Completion, InterruptController, IrqRole, IrqRoles};
use chroma_core::pagetable::Geometry;
use chroma_core::run::{self, Clock, Next, RoundRobin};
use chroma_core::vcpu::{handle_exit, Action};
use chroma_core::vgic::{GicVersion, VcpuMask, MAX_VCPUS};
use chroma_core::vm::{Power, StopReason, VmCore};
use chroma_manifest::Manifest;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use spin::{Mutex, Once};

/// The SGI one physical CPU sends another to make it re-examine its vCPUs.
const KICK_SGI: u32 = 0;
/// Most physical CPUs.
const MAX_CPUS: usize = crate::arch::MAX_CPUS;

/// Everything shared by all CPUs, set up once by the boot CPU.
pub struct System {
    /// The VMs that were created.
    pub vms: Vec<Vm>,
    /// VMs from the manifest that could not be created.
    pub failed_to_start: usize,
    /// The physical GIC.
    pub gic: GicKind,
    /// Stage-2 control, the same on every CPU.
    pub vtcr: u64,
    /// What each physical interrupt the hypervisor takes means.
    pub roles: IrqRoles,
    /// The counter's ticks per millisecond.
    pub clock: Clock,
    /// How to reach each physical CPU with an IPI (learnt when it starts).
    pub cpu_targets: [Mutex<GicCpuTarget>; MAX_CPUS],
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
    SYSTEM
        .get()
        .unwrap_or_else(|| crate::fatal("system not initialised"))
}

/// VTCR_EL2 for `ipa_bits`: T0SZ, start level, write-back inner shareable
/// walks, 4 KiB granule, PS from the CPU, RES1 bit 31.
fn vtcr_value(ipa_bits: u8, start_level: u8) -> u64 {
    crate::arch::vtcr(ipa_bits, start_level)
}

/// The stage-2 geometry of every VM: an IPA space as large as the VMs'
/// machine and RAM need (of at least 32 bits) rather than all the CPU
/// translates, so that walks start at level 2 where they can. A guest
/// access past it faults at stage 2 as any unmapped address does.
fn stage2_geometry(board: &BoardInfo, manifest: &Manifest<'static>) -> Geometry {
    let ipa_end = manifest
        .vms()
        .map(|spec| spec.memory_base.saturating_add(spec.memory_bytes))
        .fold(chroma_core::guest_map::QEMU_VIRT.devices_end(), u64::max);
    let geometry = Geometry::stage2_covering(ipa_end, board.ipa_bits)
        .unwrap_or_else(|| crate::fatal("the CPU's IPA size is outside what stage 2 supports"));
    log::debug!(
        "stage 2: {}-bit IPA space, walks start at level {}",
        geometry.input_bits,
        geometry.start_level
    );
    geometry
}

/// Creates the VMs and the shared state (boot CPU, before secondaries start).
pub fn init_system(board: &BoardInfo, manifest: &Manifest<'static>) {
    let version = match board.gic {
        // A board without a GIC gets a GICv2 in software.
        GicKind::V2 { .. } | GicKind::Bcm2836Local { .. } => GicVersion::V2,
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
    // No dirty line in the caches from here on but for what the hypervisor
    // writes itself: the VMs' fresh RAM need not be cleaned whole. This
    // holds only while nothing frees frames before the VMs are built (the
    // switches' uplink, which may, is probed after them).
    let mut boot_caches = crate::vm::BootCaches::clean_at_boot();
    let stage2 = stage2_geometry(board, manifest);
    for spec in manifest.vms() {
        let started = cpu::now();
        match Vm::create(
            vms.len(),
            &spec,
            board,
            stage2,
            version,
            &mut cache,
            &mut boot_caches,
        ) {
            Ok(mut vm) => {
                crate::boot_time::report_vm_load(spec.name, started);
                vm.take_ports(&mut ports);
                log::info!(
                    "vm {}: {} MiB at IPA {:#x} (PA {:#x}), {} vCPU(s) on CPU(s) {:?}",
                    vm.name,
                    vm.ram.size >> 20,
                    vm.ram.ipa,
                    vm.ram_pa,
                    vm.vcpu_count(),
                    &vm.affinity[..vm.vcpu_count()]
                );
                vms.push(vm);
            }
            Err(e) => {
                log::warn!("vm {} not started: {}", spec.name, e);
                failed += 1;
            }
        }
    }
    // What the loads left to a clean by set/way, before anything else runs.
    boot_caches.finish();
    if let Err(e) = cache.aliases.check_invariant() {
        crate::fatal_fmt(format_args!(
            "guest-RAM aliases break the colour invariant: {e}"
        ));
    }
    let switches = build_switches(manifest, &vms, board);
    let uplink = switches
        .iter()
        .enumerate()
        .find_map(|(i, s)| s.state.lock().uplink.as_ref().map(|u| (i, u.intid)));
    SYSTEM.call_once(|| System {
        vms,
        failed_to_start: failed,
        gic: board.gic,
        vtcr: vtcr_value(stage2.input_bits, stage2.start_level),
        roles: IrqRoles {
            kick: KICK_SGI,
            maintenance: board.maintenance_intid,
            hypervisor_timer: board.hyp_timer_intid,
            virtual_timer: board.virt_timer_intid,
            uplink: uplink.map(|(_, intid)| intid),
        },
        clock: Clock::from_frequency(cpu::counter_frequency()),
        cpu_targets: core::array::from_fn(|_| Mutex::new(GicCpuTarget::default())),
        cpu_count: board.cpus.iter().flatten().count().clamp(1, MAX_CPUS),
        switches,
        uplink,
        cache: (cache.geometry, cache.forced),
    });
    // SAFETY: the GIC frames come from the device tree and were mapped as device memory by `mm::init`.
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
    let geometry = crate::arch::cache_geometry();
    let (policy, colours) = match &geometry {
        Ok(g) => {
            // Guests map their rings write-back (virtio nodes are dma-coherent);
            // a guest with its caches off is caught when its driver starts.
            let policy = Policy::choose(
                g,
                PolicyInputs {
                    forced,
                    ..PolicyInputs::default()
                },
            );
            let colours = if forced {
                g.data_colours().max(4)
            } else if policy.colours() {
                g.data_colours()
            } else {
                1
            };
            (policy, colours)
        }
        Err(_) => (
            if forced {
                Policy::ColourAndMaintain
            } else {
                Policy::Maintain
            },
            if forced { 4 } else { 1 },
        ),
    };
    match geometry.as_ref().ok().and_then(|g| g.l1_data().map(|l1| (g, l1))) {
        Some((g, l1)) => log::info!(
            "caches: L1 D {} KiB {}-way {} B lines {:?}, {} data colour(s); policy {:?}{}, {} colour(s) for guest-memory aliases",
            l1.size() >> 10,
            l1.ways,
            l1.line_size,
            l1.indexing,
            g.data_colours(),
            policy,
            if forced { " (forced)" } else { "" },
            colours
        ),
        None => log::info!(
            "caches: unknown geometry; policy {:?}{}, {} colour(s) for guest-memory aliases",
            policy,
            if forced { " (forced)" } else { "" },
            colours
        ),
    }
    let (base, size) = crate::mm::alias_window();
    let aliases = chroma_cache::ColourAllocator::new(
        chroma_mem::HostVirtAddr::new(base),
        size,
        chroma_core::pagetable::PAGE_SIZE,
        colours,
    )
    .ok()?;
    Some(crate::vm::CacheSetup {
        aliases,
        policy,
        geometry: geometry.ok(),
        forced,
    })
}

/// Builds the switches of the manifest with their VM ports, and the uplink.
fn build_switches(
    manifest: &Manifest<'static>,
    vms: &[Vm],
    board: &BoardInfo,
) -> Vec<crate::nic::SwitchEntry> {
    use chroma_virtio::switch::{PortConfig, Switch, SwitchConfig};
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
                log::warn!(
                    "switch {}: the board has no virtio-net NIC: no uplink",
                    spec.name
                );
            }
            u
        } else {
            None
        };
        // The configuration refuses more ports than a switch has
        // (`run_switch` keeps its port tables on the stack); a manifest
        // built otherwise loses the extra ports, loudly.
        const _: () =
            assert!(chroma_virtio::switch::MAX_PORTS == chroma_manifest::MAX_SWITCH_PORTS);
        let room = chroma_virtio::switch::MAX_PORTS - usize::from(uplink.is_some());
        if members.len() > room {
            log::error!(
                "switch {}: {} VM port(s), at most {room} fit: the rest stay unplugged",
                spec.name,
                members.len()
            );
            members.truncate(room);
        }
        let port_count = members.len() + usize::from(uplink.is_some());
        let config = SwitchConfig {
            port_count: port_count.max(1),
            ..SwitchConfig::default()
        };
        log::info!(
            "switch {}: {} port(s){}",
            spec.name,
            port_count,
            if uplink.is_some() { ", uplink" } else { "" }
        );
        // Port security: VM ports are locked to their MACs unless trusted;
        // the uplink (the last port) stays open.
        let mut switch = Switch::new(config);
        for (port, &(v, n)) in members.iter().enumerate() {
            let nic = &vms[v].nics[n];
            switch.set_port(port, PortConfig::vm(nic.mac, nic.trusted));
        }
        // Every port starts locked (`Switch::new`); the uplink stands for
        // the outside world's many stations, so its security is lifted.
        if uplink.is_some() {
            switch.set_port(members.len(), PortConfig::OPEN);
        }
        switches.push(crate::nic::SwitchEntry {
            name: spec.name,
            state: spin::Mutex::new(crate::nic::SwitchState {
                switch,
                members,
                uplink,
                holds: crate::nic::HoldStats::default(),
            }),
            pending: AtomicUsize::new(0),
        });
    }
    switches
}

/// Starts the other CPUs the way the device tree says. Returns how many
/// started.
pub fn start_secondaries(board: &BoardInfo) -> usize {
    let me = cpu::affinity();
    let mut started = 0;
    for (index, slot) in board.cpus.iter().enumerate().skip(1) {
        let Some((mpidr, how)) = slot else { continue };
        if *mpidr == me {
            continue;
        }
        match how {
            SecondaryStart::Psci(conduit) => match cpu::start_secondary(*conduit, *mpidr, index) {
                Ok(()) => started += 1,
                Err(code) => {
                    log::warn!("CPU {index} (MPIDR {mpidr:#x}) did not start: PSCI {code}")
                }
            },
            SecondaryStart::SpinTable(release) => {
                // The spin-table entry takes its index from MPIDR Aff0.
                if *mpidr & 0xff != index as u64 {
                    log::warn!("CPU {index} (MPIDR {mpidr:#x}) stays off: a spin-table CPU's index must be its Aff0");
                    continue;
                }
                // SAFETY: the release address is the CPU's `cpu-release-addr` from the device tree, in RAM the EL2 map covers, reserved by the firmware (`/memreserve/`, kept out of the frames); the secondaries' MMU settings were published by `mm::init`.
                match unsafe { cpu::release_from_spin_table(*release) } {
                    Ok(()) => started += 1,
                    Err(why) => log::warn!("CPU {index} (MPIDR {mpidr:#x}) did not start: {why}"),
                }
            }
            SecondaryStart::Unsupported(what) => {
                log::warn!("CPU {index} (MPIDR {mpidr:#x}) stays off: enable method {what} is not supported by this build")
            }
        }
    }
    started
}

/// A vCPU as its physical CPU runs it.
struct VcpuSlot {
    vm: &'static Vm,
    id: usize,
    vcpu: Vcpu,
    /// Parked in WFI until an interrupt is pending for it.
    waiting: bool,
}

/// One physical CPU's scheduler state.
pub struct Cpu {
    index: usize,
    gic: Gic,
    vcpus: Vec<VcpuSlot>,
    /// Which of `vcpus` has its EL1 state in the CPU's registers.
    loaded: Option<usize>,
    round_robin: RoundRobin,
}

/// The per-CPU loop. Never returns.
pub fn run_cpu(index: usize) -> ! {
    let sys = system();
    // SAFETY: the GIC frames were mapped by the boot CPU before this CPU started.
    let gic = unsafe { Gic::new(sys.gic) };
    gic.init_cpu(&sys.roles.private_interrupts());
    crate::vtimer::init_cpu();
    *sys.cpu_targets[index.min(MAX_CPUS - 1)].lock() = gic.this_cpu();
    init_el2_controls(sys);
    let mut cpu = Cpu {
        index,
        gic,
        vcpus: Vec::new(),
        loaded: None,
        round_robin: RoundRobin::default(),
    };
    for vm in sys.vms.iter() {
        for id in (0..vm.vcpu_count()).filter(|&id| vm.affinity[id] == index) {
            cpu.vcpus.push(VcpuSlot {
                vm,
                id,
                vcpu: Vcpu::default(),
                waiting: false,
            });
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
        // Switch runs this CPU owes (a run that stopped at its bound).
        crate::nic::run_pending(&cpu.gic, index);
        // Parked vCPUs whose timer expired while others ran become runnable.
        cpu.wake_expired_timers();
        let slots = &cpu.vcpus;
        match cpu.round_robin.pick(slots.len(), |k| {
            run::runnable(&slots[k].vm.core, slots[k].id, slots[k].waiting)
        }) {
            Some(k) => cpu.run(k),
            None => cpu.idle(),
        }
    }
}

/// Trap and timer controls that are the same for every vCPU on this CPU.
fn init_el2_controls(sys: &System) {
    // SAFETY: no guest runs on this CPU yet, and `sys.vtcr` is the VTCR_EL2 of the stage-2 geometry every VM's tables were built for (`vtcr_value`).
    unsafe { crate::arch::init_controls(sys.vtcr) };
}

impl Cpu {
    fn runnable_count(&self) -> usize {
        self.vcpus
            .iter()
            .filter(|v| run::runnable(&v.vm.core, v.id, v.waiting))
            .count()
    }

    /// Makes vCPU `k`'s EL1 state the CPU's.
    fn load(&mut self, k: usize) {
        if self.loaded == Some(k) {
            return;
        }
        if let Some(old) = self.loaded {
            self.vcpus[old].vcpu.save(&self.gic);
        }
        // SAFETY: vCPU k runs next on this CPU, after `run` installs its VM's stage-2 tables.
        unsafe { self.vcpus[k].vcpu.restore(&self.gic) };
        crate::vtimer::load(&mut self.gic, self.vcpus[k].vm, self.vcpus[k].id);
        self.loaded = Some(k);
    }

    fn run(&mut self, k: usize) {
        let sys = system();
        let (vm, id) = (self.vcpus[k].vm, self.vcpus[k].id);
        if vm.reset_in_progress() {
            // A SYSTEM_RESET clearing RAM: one bounded chunk per turn, then
            // the other vCPUs of this CPU have theirs (`run::runnable`).
            if id == 0 {
                if let Err(e) = vm.reset_step() {
                    if vm.stop(StopReason::Faulted("reset failed", 0)) {
                        log::warn!("vm {}: reset failed: {e}", vm.name);
                    }
                    report_if_all_stopped();
                }
                // No guest runs between chunks, nor does the CPU idle: take
                // the interrupts that came meanwhile here (the loaded vCPU's
                // timer above all, which `wake_expired_timers` leaves to its
                // PPI), or they wait for the whole reset.
                self.handle_interrupts();
            }
            return;
        }
        let restarted = vm.take_start(id);
        if let Some(start) = &restarted {
            self.vcpus[k].vcpu.reset(start, vm.is_aarch32());
            self.vcpus[k].waiting = false;
            // Its fresh state must be loaded, not the CPU's stale copy kept.
            if self.loaded == Some(k) {
                self.loaded = None;
            }
        }
        if vm.power(id) != Power::On {
            return;
        }
        self.load(k);
        // SAFETY: the stage-2 root and VMID are this VM's own.
        unsafe { arch_vcpu::switch_to(vm.vmid, vm.stage2.root().raw(), id, vm.is_aarch32()) };
        if restarted.is_some() {
            // A vCPU (re)started by its VM's boot, SYSTEM_RESET or CPU_ON
            // finds no translation of its previous life in this CPU's TLB,
            // as after a reset on hardware (its VMID's, now installed).
            arch_vcpu::invalidate_vm_tlbs();
        }
        let now = cpu::now();
        let runnable = self.runnable_count();
        let extra = run::entry_deadline(sys.clock, now, runnable, crate::nic::vm_polling(vm.index));
        // The end of this run's slice, once another vCPU here is runnable.
        let mut slice_end = run::slice_after_wake(sys.clock, now, None, runnable);
        cpu::arm_timer(self.next_deadline(Some(k), extra));
        self.vcpus[k].waiting = false;
        // Whether the list registers still hold the last flush: an exit
        // handled without the vGIC (`transmit_fast`) neither reads them
        // back nor needs them loaded again.
        let mut lrs_current = false;
        loop {
            // An interrupt raised on this CPU since (the NIC work after the
            // exit, say) must reach the list registers: read them back
            // first, then load them as after any other exit.
            if take_look_again(self.index) && lrs_current {
                sync_vgic(&mut self.gic, vm, id, self.index);
                lrs_current = false;
            }
            if !lrs_current {
                vm.vgic.lock().flush(id, &mut self.gic);
                self.gic.update_virtual_lines();
            }
            lrs_current = false;
            vm.running[id].store(true, Ordering::Release);
            // A reset or stop may have turned this vCPU off since it was picked.
            if vm.power(id) != Power::On || vm.is_stopped() {
                vm.running[id].store(false, Ordering::Release);
                // Hand back what flush loaded, so it is not stuck "in a list
                // register" of a vCPU that will not run.
                let kick = vm.vgic.lock().sync(id, &mut self.gic);
                kick_vcpus(&self.gic, vm, kick, self.index);
                return;
            }
            // SAFETY: the context is loaded and the stage 2 installed (above); HCR_EL2 traps what the hypervisor must see.
            let kind = unsafe { self.vcpus[k].vcpu.enter() };
            let exited = cpu::now();
            vm.running[id].store(false, Ordering::Release);
            // The kind of this exit, as `ExitCounts` counts it.
            let mut counted = 0;
            let action = match kind {
                ExceptionKind::Synchronous => {
                    // Used in place: moved out of the pair (and again past the
                    // AArch32 decode), the 64-byte trap was a `memcpy` each time.
                    let mut exit = self.vcpus[k].vcpu.trapped();
                    let (trapped, trap) = (&mut exit.0, &mut exit.1);
                    if vm.is_aarch32() {
                        crate::exits::decode_a32_abort(vm, trapped, trap);
                    }
                    counted = vm.exits.count(&vm.core, &trap.exit);
                    let host = Host {
                        gic: &self.gic,
                        me: self.index,
                    };
                    if chroma_core::vcpu::transmit_fast(&vm.core, trapped, trap, &host) {
                        // A console character: no interrupt changed, so the
                        // list registers are left as the guest left them.
                        // Another CPU's kick meanwhile is a physical
                        // interrupt, taken as soon as the guest runs.
                        lrs_current = true;
                        Action::Continue
                    } else {
                        sync_vgic(&mut self.gic, vm, id, self.index);
                        let host = Host {
                            gic: &self.gic,
                            me: self.index,
                        };
                        handle_exit(&vm.core, id, trapped, trap, &host)
                    }
                }
                ExceptionKind::Irq | ExceptionKind::Fiq => {
                    sync_vgic(&mut self.gic, vm, id, self.index);
                    counted = vm
                        .exits
                        .count(&vm.core, &chroma_core::exit::Exit::Interrupt);
                    let action = self.handle_interrupts();
                    // Another vCPU here may have become runnable (a kick, a
                    // timer): bound this one's run by a slice from now on.
                    let now = cpu::now();
                    if let Some(end) =
                        run::slice_after_wake(sys.clock, now, slice_end, self.runnable_count())
                    {
                        if slice_end.is_none() {
                            slice_end = Some(end);
                            cpu::arm_timer(self.next_deadline(Some(k), Some(end)));
                        }
                    }
                    action
                }
                ExceptionKind::SError => {
                    sync_vgic(&mut self.gic, vm, id, self.index);
                    let (_, trap) = self.vcpus[k].vcpu.trapped();
                    vm.stop(StopReason::Faulted(
                        "SError while the guest ran",
                        trap.syndrome,
                    ));
                    Action::Off
                }
            };
            // The rest of a bounded switch run this CPU owes: its self-kick
            // brought the guest out, and interrupts were taken since.
            crate::nic::run_pending(&self.gic, self.index);
            // Poll the VM's NICs that defer TX kicks (cheap when none does).
            if crate::nic::vm_polling(vm.index) {
                // Preempted by the hypervisor timer rather than trapped on its own.
                let preempted = kind != ExceptionKind::Synchronous && action == Action::Yield;
                crate::nic::poll_vm(&self.gic, self.index, vm.index, preempted);
            }
            // A NIC interrupt held back by moderation (held on this CPU's
            // exit, perhaps): the timer must fire by its bound.
            if crate::nic::held_deadline().is_some() {
                let bound = [extra, slice_end].into_iter().flatten().min();
                cpu::arm_timer(self.next_deadline(Some(k), bound));
            }
            let next = run::after_exit(&vm.core, id, action);
            if lrs_current && next != Next::Reenter {
                // Leaving: what the guest left in the list registers goes
                // back to the model before another vCPU's flush replaces it.
                sync_vgic(&mut self.gic, vm, id, self.index);
            }
            if vm.is_stopped() {
                kick_vm(&self.gic, vm, self.index);
                report_if_all_stopped();
                return;
            }
            vm.exits
                .add_handling(counted, cpu::now().saturating_sub(exited));
            match next {
                Next::Reenter => {}
                Next::Park => {
                    self.vcpus[k].waiting = true;
                    return;
                }
                Next::Leave => return,
            }
        }
    }

    /// Acknowledges and handles every pending physical interrupt. Returns
    /// what the running vCPU should do.
    fn handle_interrupts(&mut self) -> Action {
        let sys = system();
        let gic = self.gic;
        let mut action = Action::Continue;
        irq::drain(&gic, &sys.roles, |role, _| match role {
            IrqRole::VirtualTimer => {
                // The loaded vCPU's virtual timer fired: delivered through a
                // HW list register, the PPI stays active until the guest is
                // done with it (priority drop only; see vtimer).
                crate::vtimer::fired(
                    &gic,
                    self.loaded.map(|k| (self.vcpus[k].vm, self.vcpus[k].id)),
                );
                if let Some(k) = self.loaded {
                    self.vcpus[k].waiting = false;
                }
                Completion::HandledByHandler
            }
            IrqRole::Uplink => {
                if let Some((switch, _)) = sys.uplink {
                    if let Some(u) = sys.switches[switch].state.lock().uplink.as_mut() {
                        u.ack_interrupt();
                    }
                    crate::nic::run_switch(&gic, self.index, switch);
                }
                Completion::End
            }
            IrqRole::HypervisorTimer => {
                cpu::disarm_timer();
                self.wake_expired_timers();
                action = Action::Yield;
                Completion::End
            }
            // A kick or the maintenance interrupt: the state they signal is
            // re-read before the next entry.
            IrqRole::Kick | IrqRole::Maintenance | IrqRole::Unexpected => Completion::End,
        });
        action
    }

    /// Delivers the virtual timer of vCPUs off the CPU whose deadline passed
    /// (once per expiry: not while their timer interrupt is in flight).
    fn wake_expired_timers(&mut self) {
        let now = cpu::now();
        for (k, slot) in self.vcpus.iter_mut().enumerate() {
            if self.loaded != Some(k)
                && crate::vtimer::wake_if_expired(slot.vm, slot.id, slot.vcpu.saved_timer(), now)
            {
                slot.waiting = false;
            }
        }
    }

    /// The earliest moment this CPU must look at its vCPUs again (see
    /// `run::next_deadline`); `running`'s own timer fires by itself (the
    /// vCPU running, or the one loaded while the CPU idles: either way its
    /// timer registers are the CPU's, and drive the physical PPI).
    fn next_deadline(&self, running: Option<usize>, extra: Option<u64>) -> u64 {
        // A held NIC interrupt is due (`nic::held_deadline`).
        let extra = [extra, crate::nic::held_deadline()]
            .into_iter()
            .flatten()
            .min();
        let deadlines = self
            .vcpus
            .iter()
            .enumerate()
            .filter(|&(k, _)| Some(k) != running)
            .map(|(k, slot)| {
                let registers = if self.loaded == Some(k) {
                    arch_vcpu::live_timer()
                } else {
                    slot.vcpu.saved_timer()
                };
                crate::vtimer::deadline(slot.vm, slot.id, registers)
            });
        run::next_deadline(
            system().clock,
            cpu::now(),
            self.index == 0,
            extra,
            deadlines,
        )
    }

    /// Nothing to run: sleep until an interrupt or the next timer deadline.
    fn idle(&mut self) {
        // The loaded vCPU's timer drives the physical PPI, which ends the
        // wait by itself (as for a running vCPU). Its deadline is left out:
        // an emulator raises the PPI only when its own timer thread gets to
        // it, and a deadline already past armed this CPU's timer in the past,
        // so that it woke at once, again and again until then (under QEMU on
        // a loaded host, spins of milliseconds that held the host CPU the
        // other vCPU and the emulator's timers needed).
        cpu::arm_timer(self.next_deadline(self.loaded, None));
        cpu::wait_for_interrupt();
        self.handle_interrupts();
        self.wake_expired_timers();
    }
}

/// Makes the CPUs that run `vm`'s vCPUs look at them again.
pub fn kick_vm(gic: &Gic, vm: &VmCore, me: usize) {
    kick_vcpus(gic, vm, (1 << vm.vcpu_count()) - 1, me);
}

/// Sends this CPU its own kick: a guest entered next exits at once, and an
/// idle wait ends, so the run loop looks at its pending work again.
pub fn kick_self(gic: &Gic, me: usize) {
    let sys = system();
    if me < sys.cpu_count {
        gic.send_ipi(*sys.cpu_targets[me].lock(), KICK_SGI);
    }
}

/// Reads back vCPU `id`'s list registers after it exited on this CPU
/// (`me`), and kicks the vCPUs that must look again.
fn sync_vgic(gic: &mut Gic, vm: &VmCore, id: usize, me: usize) {
    let kick = vm.vgic.lock().sync(id, gic);
    if kick != 0 {
        kick_vcpus(gic, vm, kick, me);
    }
}

/// Per physical CPU: a kick for one of its own vCPUs came from the CPU
/// itself since its scheduler loop last looked (an interrupt the NIC work
/// or an exit's handling raised here). The loop then loads the list
/// registers again even after an exit that did not touch them
/// (`transmit_fast`): no IPI says so, as for a kick from another CPU.
/// Set and taken only by its own CPU.
static LOOK_AGAIN: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Whether a kick for one of this CPU's (`me`) vCPUs came from this CPU
/// since the last call; clears it.
fn take_look_again(me: usize) -> bool {
    LOOK_AGAIN
        .get(me)
        .is_some_and(|flag| flag.swap(false, Ordering::Relaxed))
}

/// Kicks the physical CPUs of the vCPUs in `vcpus` (bit n = vCPU n); one
/// on this CPU (`me`) is told by [`LOOK_AGAIN`] instead of an IPI.
pub fn kick_vcpus(gic: &Gic, vm: &VmCore, vcpus: VcpuMask, me: usize) {
    let sys = system();
    let mut cpus = 0u32;
    for id in (0..vm.vcpu_count().min(MAX_VCPUS)).filter(|id| vcpus & (1 << id) != 0) {
        cpus |= 1 << vm.affinity[id];
    }
    if cpus & (1 << me) != 0 {
        if let Some(flag) = LOOK_AGAIN.get(me) {
            flag.store(true, Ordering::Relaxed);
        }
    }
    cpus &= !(1 << me);
    for target in (0..sys.cpu_count).filter(|cpu| cpus & (1 << cpu) != 0) {
        gic.send_ipi(*sys.cpu_targets[target].lock(), KICK_SGI);
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
    let clean = sys
        .vms
        .iter()
        .filter(|vm| vm.stop_reason().is_some_and(|r| r.clean()))
        .count();
    let failed = sys.vms.len() - clean + sys.failed_to_start;
    // The VMs' NIC counters were printed as each stopped; the switches'
    // and the uplinks' belong to no VM.
    crate::nic::report_switches();
    shutdown::print_summary(clean, failed);
    let _ = console::poll_input();
    shutdown::power_off()
}
