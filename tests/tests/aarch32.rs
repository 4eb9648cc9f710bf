//! AArch32 VMs on the AArch64 hypervisor (issue 11, item 5): a VM with
//! `arch = "aarch32"` runs its EL1 in AArch32 state (HCR_EL2.RW = 0),
//! beside AArch64 VMs on the same physical CPU.
//!
//! The guest is `guest-images/a32-traps/traps.S`, a zImage assembled here
//! with LLVM (llvm-mc, ld.lld, llvm-objcopy from llvm-19 and lld-19, which
//! the setup installs) in two variants: one ends in the data abort chroma
//! injects for an access outside RAM and devices, the other in the
//! UNDEFINED it injects for an IMPLEMENTATION DEFINED register. Each
//! checks the boot protocol, emulated loads and stores from banked
//! registers, conditional traps, trapped coprocessor registers, PSCI over
//! HVC, Thumb instructions stepped by their length and an IT block moved on
//! past a skipped WFI, and the mode, link register and fault status of the
//! exception.
//!
//! Negative controls (by hand, each needs a rebuild; measured): map r13 and
//! r14 of Abort mode the other way round in
//! `chroma_arch::aarch64::pstate::aarch32_register` and the abort variant
//! prints "FAIL abort lr"; step every trapped instruction by 4 bytes in
//! `esr::decode_trap` (ignoring ESR_EL2.IL) and the 16-bit Thumb store
//! skips the instruction after it: no "T2" line. The conditional WFIs (ARM, and Thumb inside an
//! IT block) check that the guest goes on correctly, but QEMU's TCG does
//! not trap a WFI whose condition fails, so they do not reach chroma's
//! `Exit::ConditionFailed` path or its IT-state advance here (measured:
//! with `advance_it` disabled the test still passes); those are covered by
//! the host tests in `pstate.rs` and `esr.rs` and by the exit fuzz targets.
//!
//! What QEMU cannot show: returning from an injected exception. QEMU 10's
//! TCG keeps the SPSR of the AArch32 mode an exception return from EL2
//! enters in its own cache and does not reload it from the banked register
//! EL2 wrote (SPSR_abt, SPSR_und), so the guest's handler reads a stale
//! SPSR there; the guests here power off from the handler instead of
//! returning. On hardware the banked SPSR is the architected register.

use std::path::{Path, PathBuf};
use std::process::Command;

use chroma_systest::{
    boot, config_toml, expected_lines, guest_image_arm, workspace_root, Board, Vm,
};

/// LLVM's tools, from Debian's llvm-19 and lld-19.
const LLVM_BIN: &str = "/usr/lib/llvm-19/bin";

/// Assembles `traps.S` (with `defsym`, if any) into a zImage linked at
/// RAM + 0x8000, returns its path.
fn assemble(variant: &str, defsym: Option<&str>) -> PathBuf {
    let source = workspace_root().join("guest-images/a32-traps/traps.S");
    let dir = workspace_root().join("target/systest/a32-traps");
    std::fs::create_dir_all(&dir).expect("create target/systest/a32-traps");
    let object = dir.join(format!("{variant}.o"));
    let elf = dir.join(format!("{variant}.elf"));
    let image = dir.join(format!("{variant}.zImage"));
    let tool = |name: &str| Path::new(LLVM_BIN).join(name);
    let mut mc = Command::new(tool("llvm-mc"));
    mc.args(["-triple=armv7a-none-eabi", "-filetype=obj"]);
    if let Some(symbol) = defsym {
        mc.args(["--defsym", symbol]);
    }
    mc.arg(&source).arg("-o").arg(&object);
    let steps = [
        mc,
        {
            let mut ld = Command::new(tool("ld.lld"));
            ld.args(["-Ttext=0x40008000", "-e", "_start"])
                .arg(&object)
                .arg("-o")
                .arg(&elf);
            ld
        },
        {
            let mut objcopy = Command::new(tool("llvm-objcopy"));
            objcopy.args(["-O", "binary"]).arg(&elf).arg(&image);
            objcopy
        },
    ];
    for mut step in steps {
        let status = step.status().unwrap_or_else(|error| {
            panic!(
                "cannot run {:?} ({error}): install llvm-19 and lld-19 (scripts/setup.sh does)",
                step.get_program()
            )
        });
        assert!(status.success(), "{step:?} failed: {status}");
    }
    image
}

/// The lines every variant prints before its exception, in order.
const COMMON: [&str; 14] = [
    "a32: hello",
    "a32: svc mode ok",
    "a32: boot registers ok",
    "a32: dtb ok",
    "a32: emulated load ok",
    // r8 of FIQ mode, r13 of IRQ mode, r14 of Undefined mode, r8 of SVC.
    "FIUs",
    "a32: conditional wfi ok",
    // A 16-bit and a 32-bit Thumb store, then an IT block around a
    // trapped WFI whose condition fails.
    "T2",
    "a32: thumb ok",
    "a32: trapped registers ok",
    "a32: set/way ok",
    "a32: psci version ok",
    "a32: smc64 refused ok",
    "a32: done",
];

fn lines(exception: &[&str]) -> Vec<String> {
    let (before, done) = COMMON.split_at(COMMON.len() - 1);
    before
        .iter()
        .chain(exception)
        .chain(done)
        .map(|line| (*line).to_owned())
        .collect()
}

#[test]
fn aarch32_vms_run_beside_an_aarch64_vm_on_one_cpu() {
    let abort = assemble("abort", None);
    let undefined = assemble("undefined", Some("UNDEF=1"));
    // All three on CPU 0: the CPU switches between AArch32 and AArch64 EL1.
    let config = config_toml(&[
        Vm::aarch32("abort", &abort).cpus(&[0]),
        Vm::aarch32("undef", &undefined).cpus(&[0]),
        Vm::new("probe", "probe").cpus(&[0]),
    ]);
    let run = boot("aarch32_beside_aarch64", &config, Board::new(2, 2));
    run.assert_vm_printed_in_order(
        "abort",
        &lines(&[
            "a32: abort mode ok",
            "a32: abort lr ok",
            "a32: abort fsr ok",
        ]),
    );
    run.assert_vm_printed_in_order(
        "undef",
        &lines(&["a32: undefined mode ok", "a32: undefined lr ok"]),
    );
    for vm in ["abort", "undef", "probe"] {
        run.assert_vm_never_printed(vm, "FAIL");
        run.assert_stopped(vm, "powered off");
    }
    // The AArch64 neighbour saw nothing of it: its own run, to the end.
    run.assert_vm_printed_containing("probe", "probe: timer tick 5");
    run.assert_all_stopped(3, 0);
    run.assert_success();
}

#[test]
fn a_zimage_in_an_aarch64_vm_is_refused_with_a_hint() {
    let image = assemble("refused", None);
    let config = config_toml(&[Vm {
        aarch32: false,
        ..Vm::aarch32("wrong", &image)
    }]);
    let run = boot("aarch32_refused", &config, Board::new(2, 2));
    run.assert_qemu_not_started();
    assert!(
        run.stderr.contains("set arch = \"aarch32\" for this VM"),
        "no hint in the refusal:\n{}",
        run.stderr
    );
}

/// An armhf file of `build/linux-armhf/`.
fn armhf_file(name: &str) -> String {
    workspace_root()
        .join("build/linux-armhf")
        .join(name)
        .display()
        .to_string()
}

/// Debian's armhf LPAE kernel (guest-images/linux, `--arch armhf`) as an
/// AArch32 VM with 2 vCPUs (its second one through an SMC32 CPU_ON), on one
/// switch with Debian's arm64 kernel and the bare-metal service guest: it
/// takes typed input, and the two Linux guests ping each other and the
/// service guest, and its TCP reaches the service guest's sink.
#[test]
fn an_armhf_linux_pings_an_arm64_linux_and_the_bare_metal_guest() {
    let linux64 = workspace_root().join("build/linux");
    let config = format!(
        "[[switch]]\nname = \"lan0\"\n\n\
         [[vm]]\nname = \"arm32\"\narch = \"aarch32\"\nkernel = {:?}\ninitrd = {:?}\nmemory = \"256M\"\nvcpus = 2\n\
         cmdline = \"console=ttyAMA0 rdinit=/init chroma.ip=10.0.2.21/24 chroma.gw=none chroma.ping=10.0.2.22 chroma.wait=90 chroma.run=\\\"ping -c 3 10.0.2.15; ping -c 3 10.0.2.22\\\"\"\n\
         [[vm.net]]\nswitch = \"lan0\"\nmac = \"52:54:00:12:34:21\"\n\n\
         [[vm]]\nname = \"arm64\"\nkernel = {:?}\ninitrd = {:?}\nmemory = \"128M\"\ncpus = [1]\n\
         cmdline = \"console=ttyAMA0 rdinit=/init chroma.ip=10.0.2.22/24 chroma.gw=none chroma.ping=10.0.2.21 chroma.wait=90 chroma.run=\\\"ping -c 3 10.0.2.21\\\"\"\n\
         [[vm.net]]\nswitch = \"lan0\"\nmac = \"52:54:00:12:34:22\"\n\n\
         [[vm]]\nname = \"svc\"\nkernel = {:?}\nmemory = \"32M\"\ncmdline = \"net.ip=10.0.2.15/24 svc.sinks=1\"\ncpus = [1]\n\
         [[vm.net]]\nswitch = \"lan0\"\n",
        armhf_file("zImage"),
        armhf_file("initramfs.cpio.gz"),
        linux64.join("Image").display().to_string(),
        linux64.join("initramfs.cpio.gz").display().to_string(),
        chroma_systest::guest_image("netsvc").display().to_string(),
    );
    let mut run = chroma_systest::start_with(
        "aarch32_linux",
        &config,
        Board {
            name: "qemu-virt-aarch64",
            gic: 2,
            smp: 2,
            timeout_seconds: 170,
        },
        &[],
    );
    run.wait_for("arm32", "linux-guest: run exit", 150);
    run.wait_for("arm64", "linux-guest: run exit", 30);
    run.wait_for("arm32", "built-in shell (ash)", 10);
    std::thread::sleep(std::time::Duration::from_millis(500));
    run.type_text("echo typed-$((6*7)) on $(uname -m) with $(nproc) cpus\n");
    run.wait_for("arm32", "typed-42 on armv7l with 2 cpus", 20);
    // TCP to the bare-metal sink, which then ends (svc.sinks=1).
    run.type_text("printf hello-sink | nc 10.0.2.15 9\n");
    run.wait_for("chroma", "vm svc stopped", 20);
    run.type_text("poweroff -f\n");
    run.wait_for("chroma", "vm arm32 stopped", 20);
    run.type_text("\x01n");
    std::thread::sleep(std::time::Duration::from_millis(300));
    run.type_text("poweroff -f\n");
    run.wait_for("chroma", "vm arm64 stopped", 20);
    let outcome = run.finish(20);
    outcome.assert_vm_printed_containing("arm32", "CPU: ARMv7 Processor");
    outcome.assert_vm_printed_containing("arm32", "SMP: Total of 2 processors activated");
    for vm in ["arm32", "arm64"] {
        outcome.assert_vm_printed_containing(vm, "linux-guest: network up");
        outcome.assert_vm_printed_containing(vm, "linux-guest: run exit 0");
        outcome.assert_vm_never_printed(vm, "BUG:");
        outcome.assert_vm_never_printed(vm, "Oops");
    }
    outcome.assert_vm_printed_containing("svc", "netsvc: sink received 10 bytes");
    outcome.assert_vm_printed_containing("arm32", "len=10 fnv64=");
    for vm in ["arm32", "arm64", "svc"] {
        outcome.assert_stopped(vm, "powered off");
    }
    outcome.assert_all_stopped(3, 0);
    outcome.assert_vm_printed_containing("arm32", "linux-guest: ping 10.0.2.22 ok");
    outcome.assert_vm_printed_containing("arm64", "linux-guest: ping 10.0.2.21 ok");
    for (vm, ip) in [
        ("arm32", "10.0.2.15"),
        ("arm32", "10.0.2.22"),
        ("arm64", "10.0.2.21"),
    ] {
        let replies = outcome
            .vm_lines(vm)
            .iter()
            // A reply can share its line with the shell's prompt: anywhere.
            .filter(|line| line.contains(&format!("64 bytes from {ip}: seq=")))
            .count();
        assert!(replies >= 3, "VM {vm}: {replies} echo replies from {ip}");
    }
}

/// The 32-bit probe (guest-images/probe built for ARMv7-A) as an AArch32 VM
/// with 2 vCPUs beside the 64-bit probe, on GICv`gic`: console, PSCI (SMC32
/// CPU_ON and CPU_OFF), the virtual timer through CP15 on both vCPUs, SGIs.
/// Its isolation check returns from an injected abort, which QEMU's TCG
/// cannot show (see the module comment): `probe.noabort` skips it; the
/// abort itself is checked by the a32-traps test above.
fn probes_32_and_64(gic: u8) {
    let config = config_toml(&[
        Vm::aarch32("probe32", &guest_image_arm("probe"))
            .vcpus(2)
            .cmdline("probe.noabort"),
        Vm::new("probe64", "probe").vcpus(2),
    ]);
    let run = boot(
        &format!("aarch32_probe_gicv{gic}"),
        &config,
        Board::new(gic, 2),
    );
    let expected = expected_lines("probe");
    let without_isolation: Vec<String> = expected
        .iter()
        .filter(|line| !line.contains("isolation ok"))
        .cloned()
        .collect();
    run.assert_vm_printed_in_order("probe32", &without_isolation);
    run.assert_vm_printed_containing("probe32", "probe: isolation skipped");
    run.assert_vm_printed_in_order("probe64", &expected);
    for vm in ["probe32", "probe64"] {
        run.assert_vm_never_printed(vm, "FAIL");
        run.assert_vm_never_printed(vm, "PANIC");
        run.assert_stopped(vm, "powered off");
    }
    run.assert_all_stopped(2, 0);
    run.assert_success();
}

#[test]
fn the_32bit_probe_runs_beside_the_64bit_one_gicv2() {
    probes_32_and_64(2);
}

#[test]
fn the_32bit_probe_runs_beside_the_64bit_one_gicv3() {
    probes_32_and_64(3);
}
