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
//! HVC, and the mode, link register and fault status of the exception.
//!
//! Negative controls (by hand, each needs a rebuild; measured): map r13 and
//! r14 of Abort mode the other way round in
//! `chroma_arch::aarch64::pstate::aarch32_register` and the abort variant
//! prints "FAIL abort lr"; drop the condition check in `esr::decode_trap`
//! and the conditional WFI waits forever (the VM never prints "conditional
//! wfi ok" and the run times out).
//!
//! What QEMU cannot show: returning from an injected exception. QEMU 10's
//! TCG keeps the SPSR of the AArch32 mode an exception return from EL2
//! enters in its own cache and does not reload it from the banked register
//! EL2 wrote (SPSR_abt, SPSR_und), so the guest's handler reads a stale
//! SPSR there; the guests here power off from the handler instead of
//! returning. On hardware the banked SPSR is the architected register.

use std::path::{Path, PathBuf};
use std::process::Command;

use chroma_systest::{boot, config_toml, workspace_root, Board, Vm};

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
const COMMON: [&str; 12] = [
    "a32: hello",
    "a32: svc mode ok",
    "a32: boot registers ok",
    "a32: dtb ok",
    "a32: emulated load ok",
    // r8 of FIQ mode, r13 of IRQ mode, r14 of Undefined mode, r8 of SVC.
    "FIUs",
    "a32: conditional wfi ok",
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
