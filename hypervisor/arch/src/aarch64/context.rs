//! The EL1 state of a vCPU that must be saved and restored when two vCPUs
//! share a physical CPU: EL1 system registers, the virtual timer, the
//! FP/SIMD registers (EL2 code is built soft-float and never touches them)
//! and, on a CPU with pointer authentication, its keys.
//!
//! Pointer-authentication keys (APIAKey, APIBKey, APDAKey, APDBKey and
//! APGAKey, each a Lo/Hi pair of `_EL1` registers) are one set per CPU:
//! HCR_EL2.APK leaves them to the guest, so without the switch a VM would
//! read another's keys (and forge its signed pointers) or replace them
//! (and crash it). They are saved and restored only where the CPU
//! implements them (`features::pointer_authentication_keys`): elsewhere
//! the registers are UNDEFINED, at EL2 too. A new vCPU starts with zero
//! keys. Restoring a guest's keys at EL2 is harmless: the hypervisor runs
//! with SCTLR_EL2.EnIA, EnIB, EnDA and EnDB clear and is built without
//! pointer authentication, so nothing at EL2 signs or authenticates with them.

use core::arch::{asm, global_asm};

/// Saved EL1 and EL0 state of a vCPU.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct El1Context {
    /// System registers, in the order of `save`/`restore` below.
    pub sysregs: [u64; 26],
    /// Q0..Q31 as pairs of u64, then FPCR and FPSR.
    pub fp: [u64; 66],
    /// Pointer-authentication keys, in the order of
    /// `for_each_pointer_authentication_key!` (zero where the CPU has none).
    pub pointer_authentication_keys: [u64; 10],
    /// The state only an AArch32 EL1 has, in the order of
    /// `for_each_aarch32_register!`: the banked SPSRs of the exception
    /// modes, DACR, IFSR and FPEXC (their AArch64 `_EL2` views). The
    /// AArch32 general-purpose registers, banked ones included, are the
    /// AArch64 x0..x30 the trap saves (Arm ARM D1.20.1).
    pub aarch32: [u64; 7],
}

impl Default for El1Context {
    fn default() -> Self {
        let mut c = Self {
            sysregs: [0; 26],
            fp: [0; 66],
            pointer_authentication_keys: [0; 10],
            aarch32: [0; 7],
        };
        // SCTLR_EL1 at reset: MMU and caches off, RES1 bits set.
        c.sysregs[0] = super::el2::sctlr_el1_at_reset();
        c
    }
}

impl El1Context {
    /// The reset context of a vCPU whose EL1 is AArch32.
    pub fn aarch32_at_reset() -> Self {
        let mut c = Self::default();
        c.sysregs[0] = super::el2::sctlr_aarch32_at_reset();
        c
    }
}

/// The AArch32-only EL1 state (see [`El1Context::aarch32`]).
macro_rules! for_each_aarch32_register {
    ($m:ident) => {
        $m!(0, "spsr_abt");
        $m!(1, "spsr_und");
        $m!(2, "spsr_irq");
        $m!(3, "spsr_fiq");
        $m!(4, "dacr32_el2");
        $m!(5, "ifsr32_el2");
        $m!(6, "fpexc32_el2");
    };
}

macro_rules! for_each_el1_register {
    ($m:ident) => {
        $m!(0, "sctlr_el1");
        $m!(1, "ttbr0_el1");
        $m!(2, "ttbr1_el1");
        $m!(3, "tcr_el1");
        $m!(4, "mair_el1");
        $m!(5, "amair_el1");
        $m!(6, "vbar_el1");
        $m!(7, "contextidr_el1");
        $m!(8, "tpidr_el0");
        $m!(9, "tpidrro_el0");
        $m!(10, "tpidr_el1");
        $m!(11, "sp_el0");
        $m!(12, "sp_el1");
        $m!(13, "elr_el1");
        $m!(14, "spsr_el1");
        $m!(15, "esr_el1");
        $m!(16, "far_el1");
        $m!(17, "afsr0_el1");
        $m!(18, "afsr1_el1");
        $m!(19, "par_el1");
        $m!(20, "cpacr_el1");
        $m!(21, "cntkctl_el1");
        $m!(22, "csselr_el1");
        $m!(23, "mdscr_el1");
        $m!(24, "cntv_cval_el0");
        $m!(25, "cntv_ctl_el0");
    };
}

/// The pointer-authentication key registers, by encoding (the assembler
/// needs no `pauth` extension for these names).
macro_rules! for_each_pointer_authentication_key {
    ($m:ident) => {
        $m!(0, "S3_0_C2_C1_0"); // APIAKeyLo_EL1
        $m!(1, "S3_0_C2_C1_1"); // APIAKeyHi_EL1
        $m!(2, "S3_0_C2_C1_2"); // APIBKeyLo_EL1
        $m!(3, "S3_0_C2_C1_3"); // APIBKeyHi_EL1
        $m!(4, "S3_0_C2_C2_0"); // APDAKeyLo_EL1
        $m!(5, "S3_0_C2_C2_1"); // APDAKeyHi_EL1
        $m!(6, "S3_0_C2_C2_2"); // APDBKeyLo_EL1
        $m!(7, "S3_0_C2_C2_3"); // APDBKeyHi_EL1
        $m!(8, "S3_0_C2_C3_0"); // APGAKeyLo_EL1
        $m!(9, "S3_0_C2_C3_1"); // APGAKeyHi_EL1
    };
}

global_asm!(
    r#"
    .arch_extension fp
    .arch_extension simd
    .global chroma_fp_save
chroma_fp_save:
    stp q0, q1, [x0, #0]
    stp q2, q3, [x0, #32]
    stp q4, q5, [x0, #64]
    stp q6, q7, [x0, #96]
    stp q8, q9, [x0, #128]
    stp q10, q11, [x0, #160]
    stp q12, q13, [x0, #192]
    stp q14, q15, [x0, #224]
    stp q16, q17, [x0, #256]
    stp q18, q19, [x0, #288]
    stp q20, q21, [x0, #320]
    stp q22, q23, [x0, #352]
    stp q24, q25, [x0, #384]
    stp q26, q27, [x0, #416]
    stp q28, q29, [x0, #448]
    stp q30, q31, [x0, #480]
    mrs x1, fpcr
    mrs x2, fpsr
    add x0, x0, #512
    stp x1, x2, [x0]
    ret
    .global chroma_fp_restore
chroma_fp_restore:
    ldp q0, q1, [x0, #0]
    ldp q2, q3, [x0, #32]
    ldp q4, q5, [x0, #64]
    ldp q6, q7, [x0, #96]
    ldp q8, q9, [x0, #128]
    ldp q10, q11, [x0, #160]
    ldp q12, q13, [x0, #192]
    ldp q14, q15, [x0, #224]
    ldp q16, q17, [x0, #256]
    ldp q18, q19, [x0, #288]
    ldp q20, q21, [x0, #320]
    ldp q22, q23, [x0, #352]
    ldp q24, q25, [x0, #384]
    ldp q26, q27, [x0, #416]
    ldp q28, q29, [x0, #448]
    ldp q30, q31, [x0, #480]
    add x0, x0, #512
    ldp x1, x2, [x0]
    msr fpcr, x1
    msr fpsr, x2
    ret
"#
);

extern "C" {
    fn chroma_fp_save(area: *mut u64);
    fn chroma_fp_restore(area: *const u64);
}

/// Where `for_each_el1_register!` keeps the virtual timer registers.
const CNTV_CVAL_EL0_INDEX: usize = 24;
const CNTV_CTL_EL0_INDEX: usize = 25;

impl El1Context {
    /// The saved virtual timer registers (CNTV_CTL_EL0, CNTV_CVAL_EL0).
    pub fn virtual_timer(&self) -> chroma_core::vtimer::TimerRegisters {
        chroma_core::vtimer::TimerRegisters {
            control: self.sysregs[CNTV_CTL_EL0_INDEX],
            compare: self.sysregs[CNTV_CVAL_EL0_INDEX],
        }
    }

    /// Saves the current EL1 state of this CPU into `self`; with `aarch32`,
    /// the AArch32-only state too (an AArch64 EL1 cannot reach it, so for
    /// an AArch64 vCPU it needs no switching).
    pub fn save(&mut self, aarch32: bool) {
        if aarch32 {
            macro_rules! save_a32 {
                ($i:expr, $reg:literal) => {
                    // SAFETY: reading an EL2 view of AArch32 EL1 state has no side effect; AArch32 EL1 is implemented (the VM runs it).
                    unsafe { asm!(concat!("mrs {}, ", $reg), out(reg) self.aarch32[$i], options(nomem, nostack)) };
                };
            }
            for_each_aarch32_register!(save_a32);
        }
        macro_rules! save_one {
            ($i:expr, $reg:literal) => {
                // SAFETY: reading an EL1 register from EL2 has no side effect.
                unsafe { asm!(concat!("mrs {}, ", $reg), out(reg) self.sysregs[$i], options(nomem, nostack)) };
            };
        }
        for_each_el1_register!(save_one);
        if super::features::pointer_authentication_keys() {
            macro_rules! save_key {
                ($i:expr, $reg:literal) => {
                    // SAFETY: the CPU implements pointer authentication (just checked), so the key register exists; reading it has no side effect.
                    unsafe { asm!(concat!("mrs {}, ", $reg), out(reg) self.pointer_authentication_keys[$i], options(nomem, nostack)) };
                };
            }
            for_each_pointer_authentication_key!(save_key);
        }
        // SAFETY: `fp` has room for 32 Q registers plus FPCR and FPSR (528 bytes).
        unsafe { chroma_fp_save(self.fp.as_mut_ptr()) };
    }

    /// Loads `self` into this CPU's EL1 state.
    ///
    /// # Safety
    /// The CPU must be about to run the vCPU this context belongs to, with
    /// that vCPU's stage-2 tables installed.
    pub unsafe fn restore(&self, aarch32: bool) {
        if aarch32 {
            macro_rules! restore_a32 {
                ($i:expr, $reg:literal) => {
                    // SAFETY: AArch32 EL1 state only affects the AArch32 guest about to run (the caller's contract).
                    unsafe { asm!(concat!("msr ", $reg, ", {}"), in(reg) self.aarch32[$i], options(nomem, nostack)) };
                };
            }
            for_each_aarch32_register!(restore_a32);
        }
        macro_rules! restore_one {
            ($i:expr, $reg:literal) => {
                // SAFETY: EL1 state only affects the guest about to run, which stage 2 confines (the caller's contract).
                unsafe { asm!(concat!("msr ", $reg, ", {}"), in(reg) self.sysregs[$i], options(nomem, nostack)) };
            };
        }
        for_each_el1_register!(restore_one);
        if super::features::pointer_authentication_keys() {
            macro_rules! restore_key {
                ($i:expr, $reg:literal) => {
                    // SAFETY: the CPU implements pointer authentication (just checked), so the key register exists. The keys only act for the guest about to run: EL2 does not use pointer authentication (SCTLR_EL2.En* clear).
                    unsafe { asm!(concat!("msr ", $reg, ", {}"), in(reg) self.pointer_authentication_keys[$i], options(nomem, nostack)) };
                };
            }
            for_each_pointer_authentication_key!(restore_key);
        }
        // SAFETY: `fp` holds 528 readable bytes.
        unsafe { chroma_fp_restore(self.fp.as_ptr()) };
        super::sysreg::isb();
    }
}
