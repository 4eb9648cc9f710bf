//! HSR (Hyp Syndrome Register) decoding: the exception class of an
//! exception taken to HYP mode and, for aborts, the fault status.
//! Arm ARM (DDI 0406C) B3.13.6 "Use of the HSR", and the AArch32 HSR in
//! DDI 0487 G8.2 for the classes ARMv8 added.

/// HSR.EC, bits `[31:26]`.
const EC_SHIFT: u32 = 26;
/// HSR.IL, bit `[25]`: a 32-bit instruction (else 16-bit).
const IL_BIT: u32 = 1 << 25;
/// HSR.ISS, bits `[24:0]`.
const ISS_MASK: u32 = (1 << 25) - 1;
/// ISS of an abort: WnR, bit `[6]` (data aborts only).
const ISS_WNR: u32 = 1 << 6;
/// ISS of an abort: the long-descriptor fault status code, bits `[5:0]`.
const ISS_FSC_MASK: u32 = 0x3f;

/// The exception classes chroma names (HSR.EC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionClass {
    /// 0x00: unknown reason (e.g. an UNDEFINED instruction in HYP mode).
    Unknown,
    /// 0x01: a trapped WFI or WFE.
    WfiWfe,
    /// 0x03: a trapped MCR or MRC to CP15.
    Cp15McrMrc,
    /// 0x04: a trapped MCRR or MRRC to CP15.
    Cp15McrrMrrc,
    /// 0x05: a trapped MCR or MRC to CP14.
    Cp14McrMrc,
    /// 0x06: a trapped LDC or STC to CP14.
    Cp14LdcStc,
    /// 0x07: an Advanced SIMD or floating-point access trapped by HCPTR.
    SimdFp,
    /// 0x08: a trapped VMRS or MRC to CP10 (ID registers).
    Cp10Id,
    /// 0x0C: a trapped MRRC to CP14.
    Cp14Mrrc,
    /// 0x0E: an illegal exception return.
    IllegalState,
    /// 0x11: an SVC taken to HYP mode.
    Svc,
    /// 0x12: an HVC.
    Hvc,
    /// 0x13: a trapped SMC.
    Smc,
    /// 0x20: a prefetch abort from a mode other than HYP (stage 2).
    PrefetchAbortLower,
    /// 0x21: a prefetch abort taken in HYP mode.
    PrefetchAbortHyp,
    /// 0x22: a PC alignment fault.
    PcAlignment,
    /// 0x24: a data abort from a mode other than HYP (stage 2).
    DataAbortLower,
    /// 0x25: a data abort taken in HYP mode.
    DataAbortHyp,
    /// Any other value.
    Other(u8),
}

impl ExceptionClass {
    /// The class of an HSR.EC value.
    pub fn from_ec(ec: u8) -> Self {
        match ec {
            0x00 => Self::Unknown,
            0x01 => Self::WfiWfe,
            0x03 => Self::Cp15McrMrc,
            0x04 => Self::Cp15McrrMrrc,
            0x05 => Self::Cp14McrMrc,
            0x06 => Self::Cp14LdcStc,
            0x07 => Self::SimdFp,
            0x08 => Self::Cp10Id,
            0x0c => Self::Cp14Mrrc,
            0x0e => Self::IllegalState,
            0x11 => Self::Svc,
            0x12 => Self::Hvc,
            0x13 => Self::Smc,
            0x20 => Self::PrefetchAbortLower,
            0x21 => Self::PrefetchAbortHyp,
            0x22 => Self::PcAlignment,
            0x24 => Self::DataAbortLower,
            0x25 => Self::DataAbortHyp,
            other => Self::Other(other),
        }
    }

    /// A name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown reason (UNDEFINED instruction?)",
            Self::WfiWfe => "trapped WFI/WFE",
            Self::Cp15McrMrc => "trapped MCR/MRC to CP15",
            Self::Cp15McrrMrrc => "trapped MCRR/MRRC to CP15",
            Self::Cp14McrMrc => "trapped MCR/MRC to CP14",
            Self::Cp14LdcStc => "trapped LDC/STC to CP14",
            Self::SimdFp => "Advanced SIMD/FP access trapped by HCPTR",
            Self::Cp10Id => "trapped VMRS/MRC to CP10",
            Self::Cp14Mrrc => "trapped MRRC to CP14",
            Self::IllegalState => "illegal exception return",
            Self::Svc => "SVC taken to HYP mode",
            Self::Hvc => "HVC",
            Self::Smc => "trapped SMC",
            Self::PrefetchAbortLower => "prefetch abort from a lower mode",
            Self::PrefetchAbortHyp => "prefetch abort taken in HYP mode",
            Self::PcAlignment => "PC alignment fault",
            Self::DataAbortLower => "data abort from a lower mode",
            Self::DataAbortHyp => "data abort taken in HYP mode",
            Self::Other(_) => "reserved exception class",
        }
    }

    /// Whether the ISS holds an abort's fault status (and HDFAR/HIFAR a VA).
    pub fn is_abort(self) -> bool {
        matches!(
            self,
            Self::PrefetchAbortLower
                | Self::PrefetchAbortHyp
                | Self::DataAbortLower
                | Self::DataAbortHyp
        )
    }

    /// Whether it is a data abort (so ISS.WnR means something).
    pub fn is_data_abort(self) -> bool {
        matches!(self, Self::DataAbortLower | Self::DataAbortHyp)
    }
}

/// A raw HSR value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hsr(pub u32);

impl Hsr {
    /// HSR.EC.
    pub fn ec(self) -> u8 {
        // EC is the top 6 bits: the shifted value is below 64 and always fits.
        u8::try_from(self.0 >> EC_SHIFT).unwrap_or(u8::MAX)
    }

    /// The decoded exception class.
    pub fn class(self) -> ExceptionClass {
        ExceptionClass::from_ec(self.ec())
    }

    /// HSR.IL: the trapped instruction was 32 bits long.
    pub fn is_32bit_instruction(self) -> bool {
        self.0 & IL_BIT != 0
    }

    /// HSR.ISS.
    pub fn iss(self) -> u32 {
        self.0 & ISS_MASK
    }

    /// For an abort, its fault status (long-descriptor format).
    pub fn fault(self) -> Option<FaultStatus> {
        self.class()
            .is_abort()
            .then(|| FaultStatus::from_code(self.iss() & ISS_FSC_MASK))
    }

    /// For a data abort, whether it was a write.
    pub fn is_write(self) -> Option<bool> {
        self.class()
            .is_data_abort()
            .then_some(self.iss() & ISS_WNR != 0)
    }
}

/// An abort's fault status code (long-descriptor format, DDI 0406C B3.13.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStatus {
    /// Translation fault at this level.
    Translation(u8),
    /// Access flag fault at this level.
    AccessFlag(u8),
    /// Permission fault at this level.
    Permission(u8),
    /// Synchronous external abort.
    ExternalAbort,
    /// Synchronous external abort on a table walk at this level.
    ExternalAbortOnWalk(u8),
    /// Alignment fault.
    Alignment,
    /// Debug event.
    Debug,
    /// Address size fault at this level.
    AddressSize(u8),
    /// A code this decoder does not name.
    Other(u8),
}

impl FaultStatus {
    /// Decodes the 6-bit fault status code.
    pub fn from_code(code: u32) -> Self {
        let code = code.to_le_bytes()[0] & 0x3f;
        let level = code & 0b11;
        match code >> 2 {
            0b0000 => Self::AddressSize(level),
            0b0001 => Self::Translation(level),
            0b0010 => Self::AccessFlag(level),
            0b0011 => Self::Permission(level),
            0b0101 => Self::ExternalAbortOnWalk(level),
            _ => match code {
                0b01_0000 => Self::ExternalAbort,
                0b10_0001 => Self::Alignment,
                0b10_0010 => Self::Debug,
                other => Self::Other(other),
            },
        }
    }
}

impl core::fmt::Display for FaultStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Translation(level) => write!(f, "translation fault, level {level}"),
            Self::AccessFlag(level) => write!(f, "access flag fault, level {level}"),
            Self::Permission(level) => write!(f, "permission fault, level {level}"),
            Self::ExternalAbort => f.write_str("synchronous external abort"),
            Self::ExternalAbortOnWalk(level) => {
                write!(f, "external abort on the table walk, level {level}")
            }
            Self::Alignment => f.write_str("alignment fault"),
            Self::Debug => f.write_str("debug event"),
            Self::AddressSize(level) => write!(f, "address size fault, level {level}"),
            Self::Other(code) => write!(f, "fault status {code:#04x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_hyp_data_abort() {
        // EC 0x25, IL, WnR, FSC 0b001111: permission fault, level 3.
        let hsr = Hsr(0x25 << 26 | 1 << 25 | 1 << 6 | 0b00_1111);
        assert_eq!(hsr.class(), ExceptionClass::DataAbortHyp);
        assert!(hsr.is_32bit_instruction());
        assert_eq!(hsr.fault(), Some(FaultStatus::Permission(3)));
        assert_eq!(hsr.is_write(), Some(true));
        assert_eq!(
            hsr.fault().unwrap().to_string(),
            "permission fault, level 3"
        );
    }

    #[test]
    fn decodes_every_named_class_and_keeps_unknown_values() {
        for ec in 0u8..64 {
            let class = ExceptionClass::from_ec(ec);
            assert_eq!(Hsr(u32::from(ec) << 26).class(), class);
            if let ExceptionClass::Other(value) = class {
                assert_eq!(value, ec);
            }
        }
        assert_eq!(Hsr(0x12 << 26).class().name(), "HVC");
        assert_eq!(Hsr(0).class(), ExceptionClass::Unknown);
    }

    #[test]
    fn only_aborts_have_a_fault_status() {
        assert_eq!(Hsr(0x12 << 26 | 0b00_0101).fault(), None);
        assert_eq!(
            Hsr(0x21 << 26 | 0b00_0101).fault(),
            Some(FaultStatus::Translation(1))
        );
        assert_eq!(Hsr(0x21 << 26).is_write(), None);
        assert_eq!(FaultStatus::from_code(0b10_0001), FaultStatus::Alignment);
        assert_eq!(
            FaultStatus::from_code(0b01_0000),
            FaultStatus::ExternalAbort
        );
        assert_eq!(
            FaultStatus::from_code(0b01_0110),
            FaultStatus::ExternalAbortOnWalk(2)
        );
        assert_eq!(FaultStatus::from_code(0b11_1111), FaultStatus::Other(0x3f));
    }
}
