//! A guest's PL1 state on ARMv7 that the hardware keeps one copy of per
//! CPU: the CP15 registers of its translation regime, faults, vectors and
//! thread IDs, its virtual timer, the SPSRs of its modes, and its VFP /
//! Advanced SIMD registers. Saved when its vCPU leaves the CPU, restored
//! when it comes back (the general-purpose and banked SP/LR registers are
//! saved at every trap, in `GuestRegisters`).
//!
//! ACTLR is not switched: HCR.TAC traps a guest's accesses (its
//! IMPLEMENTATION DEFINED controls are per CPU), as ACTLR_EL1 on AArch64.

use super::sysreg as sr;
use core::arch::global_asm;

/// The reset value of SCTLR a Cortex-A15 or A7 has (MMU, caches and
/// alignment checks off, little-endian, low vectors; the RAO/SBOP bits 3-6,
/// 16, 18, 22, 23 set): what a kernel finds at entry.
const SCTLR_AT_RESET: u32 = 0x00c5_0078;

/// VFPv3/v4 and Advanced SIMD registers: d0-d31, FPSCR and FPEXC.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FpState {
    /// d0-d31.
    pub d: [u64; 32],
    /// FPSCR.
    pub fpscr: u32,
    /// FPEXC (EN is the guest's: it enables VFP for itself).
    pub fpexc: u32,
}

/// The switched registers.
#[derive(Clone, Copy, Debug)]
pub struct Pl1Context {
    sctlr: u32,
    cpacr: u32,
    ttbr0: u64,
    ttbr1: u64,
    ttbcr: u32,
    dacr: u32,
    dfsr: u32,
    ifsr: u32,
    adfsr: u32,
    aifsr: u32,
    dfar: u32,
    ifar: u32,
    par: u64,
    mair0: u32,
    mair1: u32,
    amair0: u32,
    amair1: u32,
    vbar: u32,
    contextidr: u32,
    tpidrurw: u32,
    tpidruro: u32,
    tpidrprw: u32,
    csselr: u32,
    cntkctl: u32,
    cntv_ctl: u32,
    cntv_cval: u64,
    /// SPSR_svc, _abt, _und, _irq, _fiq.
    spsr: [u32; 5],
    fp: FpState,
}

impl Default for Pl1Context {
    fn default() -> Self {
        Self {
            sctlr: SCTLR_AT_RESET,
            cpacr: 0,
            ttbr0: 0,
            ttbr1: 0,
            ttbcr: 0,
            dacr: 0,
            dfsr: 0,
            ifsr: 0,
            adfsr: 0,
            aifsr: 0,
            dfar: 0,
            ifar: 0,
            par: 0,
            mair0: 0,
            mair1: 0,
            amair0: 0,
            amair1: 0,
            vbar: 0,
            contextidr: 0,
            tpidrurw: 0,
            tpidruro: 0,
            tpidrprw: 0,
            csselr: 0,
            cntkctl: 0,
            cntv_ctl: 0,
            cntv_cval: 0,
            spsr: [0; 5],
            fp: FpState::default(),
        }
    }
}

extern "C" {
    fn chroma_save_fp(state: *mut FpState);
    fn chroma_restore_fp(state: *const FpState);
}

// d0-d31, FPSCR and FPEXC. Accessing them from HYP mode needs FPEXC.EN
// (HCPTR does not trap CP10/CP11): each routine sets EN for its own
// accesses and leaves FPEXC as the guest's. `.fpu` lets the soft-float
// build assemble the VFP instructions; nothing else in the hypervisor uses
// VFP registers (the target is soft-float).
global_asm!(
    r#"
    .text
    .arm
    .fpu neon-vfpv4
    .global chroma_save_fp
chroma_save_fp:
    vmrs    r1, fpexc
    orr     r2, r1, #(1 << 30)
    vmsr    fpexc, r2
    isb
    vstmia  r0!, {{d0-d15}}
    vstmia  r0!, {{d16-d31}}
    vmrs    r2, fpscr
    str     r2, [r0]
    str     r1, [r0, #4]
    vmsr    fpexc, r1
    bx      lr

    .global chroma_restore_fp
chroma_restore_fp:
    vmrs    r1, fpexc
    orr     r1, r1, #(1 << 30)
    vmsr    fpexc, r1
    isb
    vldmia  r0!, {{d0-d15}}
    vldmia  r0!, {{d16-d31}}
    ldr     r2, [r0]
    vmsr    fpscr, r2
    ldr     r1, [r0, #4]
    vmsr    fpexc, r1
    bx      lr
"#
);

impl Pl1Context {
    /// The virtual timer registers as saved.
    pub fn virtual_timer(&self) -> chroma_core::vtimer::TimerRegisters {
        chroma_core::vtimer::TimerRegisters {
            control: u64::from(self.cntv_ctl),
            compare: self.cntv_cval,
        }
    }

    /// Reads this CPU's PL1 state into the context.
    pub fn save(&mut self) {
        self.sctlr = sr::sctlr();
        self.cpacr = sr::cpacr();
        self.ttbr0 = sr::ttbr0();
        self.ttbr1 = sr::ttbr1();
        self.ttbcr = sr::ttbcr();
        self.dacr = sr::dacr();
        self.dfsr = sr::dfsr();
        self.ifsr = sr::ifsr();
        self.adfsr = sr::adfsr();
        self.aifsr = sr::aifsr();
        self.dfar = sr::dfar();
        self.ifar = sr::ifar();
        self.par = sr::par();
        self.mair0 = sr::mair0();
        self.mair1 = sr::mair1();
        self.amair0 = sr::amair0();
        self.amair1 = sr::amair1();
        self.vbar = sr::vbar();
        self.contextidr = sr::contextidr();
        self.tpidrurw = sr::tpidrurw();
        self.tpidruro = sr::tpidruro();
        self.tpidrprw = sr::tpidrprw();
        self.csselr = sr::csselr();
        self.cntkctl = sr::cntkctl();
        self.cntv_ctl = sr::cntv_ctl();
        self.cntv_cval = sr::cntv_cval();
        self.spsr = [
            sr::spsr_svc(),
            sr::spsr_abt(),
            sr::spsr_und(),
            sr::spsr_irq(),
            sr::spsr_fiq(),
        ];
        // SAFETY: `chroma_save_fp` stores 33 words and FPEXC into the `FpState` it is given, which is this context's own.
        unsafe { chroma_save_fp(&mut self.fp) };
    }

    /// Writes the context into this CPU's PL1 registers.
    ///
    /// # Safety
    /// The vCPU this context belongs to runs next on this CPU (its VM's
    /// stage 2 installed before it does): these registers are its own.
    pub unsafe fn restore(&self) {
        // SAFETY: the caller's contract: every register written is the PL1 state of the guest that runs next; none is the hypervisor's.
        unsafe {
            sr::write_sctlr(self.sctlr);
            sr::write_cpacr(self.cpacr);
            sr::write_ttbr0(self.ttbr0);
            sr::write_ttbr1(self.ttbr1);
            sr::write_ttbcr(self.ttbcr);
            sr::write_dacr(self.dacr);
            sr::write_dfsr(self.dfsr);
            sr::write_ifsr(self.ifsr);
            sr::write_adfsr(self.adfsr);
            sr::write_aifsr(self.aifsr);
            sr::write_dfar(self.dfar);
            sr::write_ifar(self.ifar);
            sr::write_par(self.par);
            sr::write_mair0(self.mair0);
            sr::write_mair1(self.mair1);
            sr::write_amair0(self.amair0);
            sr::write_amair1(self.amair1);
            sr::write_vbar(self.vbar);
            sr::write_contextidr(self.contextidr);
            sr::write_tpidrurw(self.tpidrurw);
            sr::write_tpidruro(self.tpidruro);
            sr::write_tpidrprw(self.tpidrprw);
            sr::write_csselr(self.csselr);
            sr::write_cntkctl(self.cntkctl);
            // The compare value first: the control may enable the timer.
            sr::write_cntv_cval(self.cntv_cval);
            sr::write_cntv_ctl(self.cntv_ctl);
            let [svc, abt, und, irq, fiq] = self.spsr;
            sr::write_spsr_svc(svc);
            sr::write_spsr_abt(abt);
            sr::write_spsr_und(und);
            sr::write_spsr_irq(irq);
            sr::write_spsr_fiq(fiq);
            chroma_restore_fp(&self.fp);
        }
        sr::isb();
    }
}
