//! Cache geometry decoded from raw ID register values (pure, portable).
//!
//! The decoders take register values, not registers, so they run and are
//! tested on the host; `crate::arch` reads the registers and calls them.
//!
//! Sources: Arm ARM (DDI 0487) D23 "CTR_EL0", "CLIDR_EL1", "CCSIDR_EL1";
//! Armv7 ARM (DDI 0406C) B4.1.42 CTR, B4.1.20 CLIDR, B4.1.19 CCSIDR; the
//! ARM1176JZF-S TRM (DDI 0301H) 3.2.3 for the Armv6 CTR format; Linux
//! `arch/arm/kernel/setup.c::cacheid_init` for which D-caches alias.

use crate::CacheError;

/// Most cache levels CLIDR can describe.
pub const MAX_LEVELS: usize = 7;
/// Most caches a geometry holds (an I and a D cache per level).
pub const MAX_CACHES: usize = 2 * MAX_LEVELS;

/// How a cache forms its index and tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Indexing {
    /// Physically indexed, physically tagged: never aliases.
    Pipt,
    /// Virtually indexed, physically tagged: aliases if a way exceeds a page.
    Vipt,
    /// Virtually indexed, virtually tagged: every alias is a separate line.
    Vivt,
    /// VMID-aware PIPT (Armv8 CTR_EL0.L1Ip = 0b00, I-caches only).
    Vpipt,
}

/// What a cache holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheKind {
    /// Instructions only.
    Instruction,
    /// Data only.
    Data,
    /// Instructions and data.
    Unified,
}

impl CacheKind {
    /// Whether data accesses (and so the ring backend) go through this cache.
    pub const fn holds_data(self) -> bool {
        matches!(self, CacheKind::Data | CacheKind::Unified)
    }
}

/// One cache of one level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheInfo {
    /// Cache level, 1-based as Arm numbers them.
    pub level: u8,
    /// Instruction, data or unified.
    pub kind: CacheKind,
    /// Line size in bytes.
    pub line_size: u32,
    /// Associativity.
    pub ways: u32,
    /// Number of sets.
    pub sets: u32,
    /// Indexing policy.
    pub indexing: Indexing,
}

impl CacheInfo {
    /// Bytes covered by one way (the span of the index bits).
    pub const fn way_size(&self) -> u64 {
        self.line_size as u64 * self.sets as u64
    }

    /// Total size in bytes.
    pub const fn size(&self) -> u64 {
        self.way_size() * self.ways as u64
    }

    /// Number of alias colours for `page_size`: way size / page size for a
    /// virtually indexed cache whose way exceeds a page, else 1.
    ///
    /// A VIVT cache gets the same count (its index also comes from the VA),
    /// but colouring alone does not make it safe: its tag is virtual too.
    pub fn colours(&self, page_size: u64) -> u32 {
        match self.indexing {
            Indexing::Vipt | Indexing::Vivt if self.way_size() > page_size => {
                // sets < 2^24 and line <= 2^10 bytes, so this fits a u32.
                u32::try_from(self.way_size() / page_size).unwrap_or(u32::MAX)
            }
            _ => 1,
        }
    }
}

/// The cache type register fields this crate uses (CTR_EL0 / Armv7 CTR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheType {
    /// Smallest D-cache line in the system, bytes (`4 << DminLine`).
    pub dminline: u32,
    /// Smallest I-cache line in the system, bytes (`4 << IminLine`).
    pub iminline: u32,
    /// L1 instruction cache policy (L1Ip).
    pub l1_ip: Indexing,
}

/// Decodes an Armv7/Armv8 format cache type register (CTR_EL0 or CTR).
///
/// CTR_EL0 bit 31 is RES1 and bits `[30:28]` may hold DIC/IDC on later cores,
/// so only bit 31 is checked for AArch64; Armv7 checks `[31:29] == 0b100`
/// in [`decode_armv7_ctr`].
pub fn decode_ctr_el0(ctr: u64) -> Result<CacheType, CacheError> {
    if ctr & (1 << 31) == 0 {
        return Err(CacheError::UnknownCtrFormat { ctr });
    }
    let dminline = 4u32 << ((ctr >> 16) & 0xf);
    let iminline = 4u32 << (ctr & 0xf);
    // L1Ip, bits [15:14]: 00 VPIPT (Armv8.2+; reserved before), 01 AIVIVT
    // (ASID-tagged VIVT, Armv7/Armv8.0), 10 VIPT, 11 PIPT.
    let l1_ip = match (ctr >> 14) & 0b11 {
        0b00 => Indexing::Vpipt,
        0b01 => Indexing::Vivt,
        0b10 => Indexing::Vipt,
        _ => Indexing::Pipt,
    };
    Ok(CacheType {
        dminline,
        iminline,
        l1_ip,
    })
}

/// Decodes an Armv7 CTR (format `[31:29] == 0b100`).
pub fn decode_armv7_ctr(ctr: u32) -> Result<CacheType, CacheError> {
    if ctr >> 29 != 0b100 {
        return Err(CacheError::UnknownCtrFormat { ctr: ctr.into() });
    }
    decode_ctr_el0(ctr.into())
}

/// The fields of CLIDR_EL1 / CLIDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheLevels {
    /// Ctype1..Ctype7: which caches exist at each level.
    pub ctype: [Option<LevelType>; MAX_LEVELS],
    /// Level of Coherency.
    pub loc: u8,
    /// Level of Unification, Uniprocessor.
    pub louu: u8,
    /// Level of Unification, Inner Shareable.
    pub louis: u8,
}

/// The caches present at one level (a CLIDR Ctype field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LevelType {
    /// Instruction cache only (0b001).
    InstructionOnly,
    /// Data cache only (0b010).
    DataOnly,
    /// Separate instruction and data caches (0b011).
    Separate,
    /// Unified cache (0b100).
    Unified,
}

/// Decodes CLIDR_EL1 (AArch64) or CLIDR (Armv7; same layout in bits `[29:0]`).
///
/// Decoding stops at the first level whose Ctype is 0b000 (no cache), as
/// the architecture requires software to.
pub fn decode_clidr(clidr: u64) -> CacheLevels {
    let mut ctype = [None; MAX_LEVELS];
    for (n, slot) in ctype.iter_mut().enumerate() {
        *slot = match (clidr >> (3 * n)) & 0b111 {
            0b001 => Some(LevelType::InstructionOnly),
            0b010 => Some(LevelType::DataOnly),
            0b011 => Some(LevelType::Separate),
            0b100 => Some(LevelType::Unified),
            _ => None,
        };
        if slot.is_none() {
            break;
        }
    }
    // Masks of 3 bits always fit in a u8.
    let field = |shift: u32| ((clidr >> shift) & 0b111) as u8;
    CacheLevels {
        ctype,
        loc: field(24),
        louu: field(27),
        louis: field(21),
    }
}

/// Line size, ways and sets of one cache, decoded from CCSIDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSize {
    /// Line size in bytes.
    pub line_size: u32,
    /// Associativity.
    pub ways: u32,
    /// Number of sets.
    pub sets: u32,
}

/// Decodes CCSIDR_EL1 / CCSIDR.
///
/// `ccidx` selects the FEAT_CCIDX 64-bit layout (ID_AA64MMFR2_EL1.CCIDX != 0):
/// NumSets `[55:32]`, Associativity `[23:3]`, LineSize `[2:0]`. Without it:
/// NumSets `[27:13]`, Associativity `[12:3]`, LineSize `[2:0]`. LineSize is
/// log2(bytes) - 4 in both.
pub fn decode_ccsidr(ccsidr: u64, ccidx: bool) -> Result<CacheSize, CacheError> {
    let (sets_m1, ways_m1) = if ccidx {
        ((ccsidr >> 32) & 0xff_ffff, (ccsidr >> 3) & 0x1f_ffff)
    } else {
        ((ccsidr >> 13) & 0x7fff, (ccsidr >> 3) & 0x3ff)
    };
    let line_size = 16u32 << (ccsidr & 0b111);
    // Both fields are at most 24 bits wide, so `+ 1` fits a u32.
    let sets = u32::try_from(sets_m1 + 1).map_err(|_| CacheError::InvalidCacheSize { ccsidr })?;
    let ways = u32::try_from(ways_m1 + 1).map_err(|_| CacheError::InvalidCacheSize { ccsidr })?;
    // Reject a cache whose size does not fit u64 arithmetic used elsewhere.
    (line_size as u64)
        .checked_mul(sets.into())
        .and_then(|w| w.checked_mul(ways.into()))
        .ok_or(CacheError::InvalidCacheSize { ccsidr })?;
    Ok(CacheSize {
        line_size,
        ways,
        sets,
    })
}

/// Which Armv4-Armv6 core generation a legacy-format CTR belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyArch {
    /// Armv4/Armv5 (ARM920T, ARM926EJ-S, ...): VIVT caches.
    Armv5,
    /// Armv6 (ARM1136, ARM1176): VIPT caches that alias when a way exceeds a page.
    Armv6,
}

/// The cache description the hypervisor works from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheGeometry {
    caches: [Option<CacheInfo>; MAX_CACHES],
    /// Smallest D-cache line in the system in bytes: the maintenance stride.
    pub dminline: u32,
    /// Smallest I-cache line in the system in bytes.
    pub iminline: u32,
    /// Level of Coherency (0 if unknown).
    pub loc: u8,
    /// Level of Unification, Uniprocessor (0 if unknown).
    pub louu: u8,
    /// Page size the colours are counted in.
    pub page_size: u64,
}

fn check_page_size(page_size: u64) -> Result<(), CacheError> {
    if page_size.is_power_of_two() && page_size >= 4096 {
        Ok(())
    } else {
        Err(CacheError::InvalidPageSize)
    }
}

impl CacheGeometry {
    /// An empty geometry (no caches): what a cacheless system reports.
    pub const fn empty(page_size: u64) -> Self {
        Self {
            caches: [None; MAX_CACHES],
            dminline: 64,
            iminline: 64,
            loc: 0,
            louu: 0,
            page_size,
        }
    }

    /// A geometry built from explicit cache descriptions (tests, simulator, config).
    pub fn from_caches(caches: &[CacheInfo], page_size: u64) -> Result<Self, CacheError> {
        check_page_size(page_size)?;
        let mut g = Self::empty(page_size);
        if caches.len() > MAX_CACHES {
            return Err(CacheError::TableFull);
        }
        for (slot, c) in g.caches.iter_mut().zip(caches) {
            *slot = Some(*c);
        }
        let min_line = |want_data: bool| {
            caches
                .iter()
                .filter(|c| c.kind.holds_data() == want_data || c.kind == CacheKind::Unified)
                .map(|c| c.line_size)
                .min()
                .unwrap_or(64)
        };
        g.dminline = min_line(true);
        g.iminline = min_line(false);
        Ok(g)
    }

    /// Builds the AArch64 geometry from CTR_EL0, CLIDR_EL1 and a reader of
    /// CCSIDR_EL1 for `(level, instruction)` (the caller selects it through
    /// CSSELR_EL1). `ccidx` is whether FEAT_CCIDX is implemented.
    ///
    /// D-side and unified caches are PIPT in behaviour: the Arm ARM requires
    /// AArch64 data caches to behave as PIPT (no colour aliasing). The L1
    /// I-cache policy comes from CTR_EL0.L1Ip; outer levels are unified.
    pub fn from_aarch64(
        ctr_el0: u64,
        clidr_el1: u64,
        ccsidr_el1: impl FnMut(u8, bool) -> u64,
        ccidx: bool,
        page_size: u64,
    ) -> Result<Self, CacheError> {
        let ctr = decode_ctr_el0(ctr_el0)?;
        Self::from_v7_v8(ctr, decode_clidr(clidr_el1), ccsidr_el1, ccidx, page_size)
    }

    /// Builds the Armv7 geometry from CTR, CLIDR and a reader of CCSIDR for
    /// `(level, instruction)` (selected through CSSELR).
    ///
    /// As on AArch64, Armv7 data caches never alias by colour (Armv7 ARM
    /// B2.2.2: data caches behave as PIPT); the I-cache policy is CTR.L1Ip.
    pub fn from_armv7(
        ctr: u32,
        clidr: u32,
        ccsidr: impl FnMut(u8, bool) -> u64,
        page_size: u64,
    ) -> Result<Self, CacheError> {
        let ctr = decode_armv7_ctr(ctr)?;
        Self::from_v7_v8(ctr, decode_clidr(clidr.into()), ccsidr, false, page_size)
    }

    fn from_v7_v8(
        ctr: CacheType,
        levels: CacheLevels,
        mut ccsidr: impl FnMut(u8, bool) -> u64,
        ccidx: bool,
        page_size: u64,
    ) -> Result<Self, CacheError> {
        check_page_size(page_size)?;
        let mut g = Self::empty(page_size);
        g.dminline = ctr.dminline;
        g.iminline = ctr.iminline;
        g.loc = levels.loc;
        g.louu = levels.louu;
        let mut next = 0usize;
        for (index, ctype) in levels.ctype.iter().enumerate() {
            let Some(ctype) = ctype else { break };
            // `index < MAX_LEVELS = 7`, so the level fits a u8.
            let level = u8::try_from(index + 1).unwrap_or(u8::MAX);
            let wanted: &[(CacheKind, bool)] = match ctype {
                LevelType::InstructionOnly => &[(CacheKind::Instruction, true)],
                LevelType::DataOnly => &[(CacheKind::Data, false)],
                LevelType::Separate => &[(CacheKind::Data, false), (CacheKind::Instruction, true)],
                LevelType::Unified => &[(CacheKind::Unified, false)],
            };
            for &(kind, instruction) in wanted {
                let size = decode_ccsidr(ccsidr(level, instruction), ccidx)?;
                let indexing = if kind == CacheKind::Instruction && level == 1 {
                    ctr.l1_ip
                } else {
                    Indexing::Pipt
                };
                g.caches[next] = Some(CacheInfo {
                    level,
                    kind,
                    line_size: size.line_size,
                    ways: size.ways,
                    sets: size.sets,
                    indexing,
                });
                next += 1;
            }
        }
        Ok(g)
    }

    /// Builds the geometry of an Armv4-Armv6 core from its legacy-format CTR
    /// (`[31:29] == 0b000`): Ctype `[28:25]`, S `[24]`, Dsize `[23:12]`, Isize `[11:0]`.
    ///
    /// Each size field is P `[11]`, Size `[9:6]`, Assoc `[5:3]`, M `[2]`, Len `[1:0]`
    /// (ARM1176JZF-S TRM 3.2.3). Armv6 caches are VIPT, Armv5 caches VIVT.
    pub fn from_legacy_ctr(ctr: u32, arch: LegacyArch, page_size: u64) -> Result<Self, CacheError> {
        check_page_size(page_size)?;
        if ctr >> 29 != 0 {
            return Err(CacheError::UnknownCtrFormat { ctr: ctr.into() });
        }
        let indexing = match arch {
            LegacyArch::Armv5 => Indexing::Vivt,
            LegacyArch::Armv6 => Indexing::Vipt,
        };
        let separate = ctr & (1 << 24) != 0;
        let mut caches = [None; 2];
        let fields: &[(u32, CacheKind)] = if separate {
            &[(ctr >> 12, CacheKind::Data), (ctr, CacheKind::Instruction)]
        } else {
            &[(ctr >> 12, CacheKind::Unified)]
        };
        for (slot, &(field, kind)) in caches.iter_mut().zip(fields) {
            *slot = decode_legacy_size(field & 0xfff, ctr)?.map(|s| CacheInfo {
                level: 1,
                kind,
                line_size: s.line_size,
                ways: s.ways,
                sets: s.sets,
                indexing,
            });
        }
        let present: [CacheInfo; 2] = [caches[0].unwrap_or(EMPTY), caches[1].unwrap_or(EMPTY)];
        let count = caches.iter().take_while(|c| c.is_some()).count();
        Self::from_caches(&present[..count], page_size)
    }

    /// All caches, innermost level first, data before instruction per level.
    pub fn caches(&self) -> impl Iterator<Item = &CacheInfo> {
        self.caches.iter().flatten()
    }

    /// The largest number of alias colours over the caches data goes through.
    pub fn data_colours(&self) -> u32 {
        self.caches()
            .filter(|c| c.kind.holds_data())
            .map(|c| c.colours(self.page_size))
            .max()
            .unwrap_or(1)
    }

    /// The largest number of alias colours over the instruction caches.
    pub fn instruction_colours(&self) -> u32 {
        self.caches()
            .filter(|c| c.kind != CacheKind::Data)
            .map(|c| c.colours(self.page_size))
            .max()
            .unwrap_or(1)
    }

    /// Whether any cache data goes through is virtually tagged.
    pub fn data_vivt(&self) -> bool {
        self.caches()
            .any(|c| c.kind.holds_data() && c.indexing == Indexing::Vivt)
    }

    /// The L1 data (or unified) cache, if any.
    pub fn l1_data(&self) -> Option<&CacheInfo> {
        self.caches().find(|c| c.level == 1 && c.kind.holds_data())
    }
}

const EMPTY: CacheInfo = CacheInfo {
    level: 0,
    kind: CacheKind::Data,
    line_size: 0,
    ways: 0,
    sets: 0,
    indexing: Indexing::Pipt,
};

/// Decodes one 12-bit Armv4-Armv6 CTR size field; `None` if the cache is absent.
fn decode_legacy_size(field: u32, ctr: u32) -> Result<Option<CacheSize>, CacheError> {
    let size_code = (field >> 6) & 0xf;
    let assoc_code = (field >> 3) & 0b111;
    let m = field & (1 << 2) != 0;
    let len_code = field & 0b11;
    // M = 1 with Assoc = 0 means "no cache" (Armv6 ARM B6.1.3).
    if m && assoc_code == 0 {
        return Ok(None);
    }
    let (size, ways) = if m {
        (768u32 << size_code, 3u32 << (assoc_code - 1))
    } else {
        (512u32 << size_code, 1u32 << assoc_code)
    };
    let line_size = 8u32 << len_code;
    let sets = size / ways / line_size;
    if sets == 0 {
        return Err(CacheError::InvalidCacheSize { ccsidr: ctr.into() });
    }
    Ok(Some(CacheSize {
        line_size,
        ways,
        sets,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    /// A CCSIDR reader over a table of `(level, instruction, value)`.
    fn table(entries: &'static [(u8, bool, u64)]) -> impl FnMut(u8, bool) -> u64 {
        move |level, instruction| {
            entries
                .iter()
                .find(|e| e.0 == level && e.1 == instruction)
                .map(|e| e.2)
                .unwrap_or(0)
        }
    }

    fn find(g: &CacheGeometry, level: u8, kind: CacheKind) -> CacheInfo {
        *g.caches()
            .find(|c| c.level == level && c.kind == kind)
            .unwrap()
    }

    // Cortex-A53 TRM (DDI 0500D): CTR_EL0 reset value 0x84448004 (4.3.x,
    // DminLine 16 words, L1Ip VIPT, IminLine 16 words); CLIDR_EL1 0x0A200023
    // (L1 separate, L2 unified, LoUIS 1, LoC 2, LoUU 1); CCSIDR encodings
    // from Table 4-181: 32KB L1 D 0x700FE01A (4-way, 128 sets, 64B),
    // 32KB L1 I 0x201FE00A (2-way, 256 sets, 64B), 512KB L2 0x703FE07A
    // (16-way, 512 sets). The Raspberry Pi 3 (BCM2837) uses 32KB/32KB/512KB.
    // CTR, CLIDR and the L1 values match QEMU's cortex-a53 model
    // (target/arm cpu64.c), which copies them from the TRM.
    #[test]
    fn cortex_a53() {
        let g = CacheGeometry::from_aarch64(
            0x8444_8004,
            0x0A20_0023,
            table(&[
                (1, false, 0x700F_E01A),
                (1, true, 0x201F_E00A),
                (2, false, 0x703F_E07A),
            ]),
            false,
            PAGE,
        )
        .unwrap();
        assert_eq!((g.dminline, g.iminline, g.loc, g.louu), (64, 64, 2, 1));
        let l1d = find(&g, 1, CacheKind::Data);
        assert_eq!(
            (l1d.line_size, l1d.ways, l1d.sets, l1d.size()),
            (64, 4, 128, 32 * 1024)
        );
        assert_eq!(l1d.indexing, Indexing::Pipt);
        let l1i = find(&g, 1, CacheKind::Instruction);
        assert_eq!((l1i.ways, l1i.sets, l1i.indexing), (2, 256, Indexing::Vipt));
        // 16KB I-cache way over 4KB pages: the I-side has 4 colours.
        assert_eq!(l1i.colours(PAGE), 4);
        let l2 = find(&g, 2, CacheKind::Unified);
        assert_eq!((l2.ways, l2.sets, l2.size()), (16, 512, 512 * 1024));
        assert_eq!(g.data_colours(), 1);
        assert_eq!(g.instruction_colours(), 4);
        assert!(!g.data_vivt());
    }

    // Cortex-A57 TRM (DDI 0488D) 4.3 CTR_EL0 0x8444C004 (L1Ip PIPT); CLIDR_EL1
    // 0x0A200023; Table 4.37 CCSIDR_EL1: L1 D 32KB 2-way 0x701FE00A, L1 I
    // 48KB 3-way 0x201FE012, L2 2MB 16-way 0x70FFE07A (the "cortex-a57"
    // nodes of amd-seattle-cpus.dtsi agree: 256 sets of 64B for both L1s).
    // All five values match QEMU's cortex-a57 model (target/arm cpu64.c).
    #[test]
    fn cortex_a57() {
        let g = CacheGeometry::from_aarch64(
            0x8444_C004,
            0x0A20_0023,
            table(&[
                (1, false, 0x701F_E00A),
                (1, true, 0x201F_E012),
                (2, false, 0x70FF_E07A),
            ]),
            false,
            PAGE,
        )
        .unwrap();
        let l1i = find(&g, 1, CacheKind::Instruction);
        assert_eq!(
            (l1i.ways, l1i.sets, l1i.size(), l1i.indexing),
            (3, 256, 48 * 1024, Indexing::Pipt)
        );
        let l1d = find(&g, 1, CacheKind::Data);
        assert_eq!((l1d.ways, l1d.sets, l1d.size()), (2, 256, 32 * 1024));
        // A 16KB way, but the D-side is PIPT in behaviour: no colours.
        assert_eq!(l1d.way_size(), 16 * 1024);
        assert_eq!(g.data_colours(), 1);
        assert_eq!(g.instruction_colours(), 1);
        assert_eq!(find(&g, 2, CacheKind::Unified).size(), 2 * 1024 * 1024);
    }

    // Cortex-A72 TRM (100095_0003_06) 4.3 CTR_EL0 0x8444C004, CLIDR_EL1
    // 0x0A200023; CCSIDR_EL1 encodings: L1 D 32KB 2-way 0x701FE00A, L1 I 48KB
    // 3-way 0x201FE012, L2 1MB 16-way 0x707FE07A (Raspberry Pi 4, BCM2711);
    // as in QEMU's cortex-a72 model.
    #[test]
    fn cortex_a72() {
        let g = CacheGeometry::from_aarch64(
            0x8444_C004,
            0x0A20_0023,
            table(&[
                (1, false, 0x701F_E00A),
                (1, true, 0x201F_E012),
                (2, false, 0x707F_E07A),
            ]),
            false,
            PAGE,
        )
        .unwrap();
        assert_eq!(find(&g, 2, CacheKind::Unified).size(), 1024 * 1024);
        assert_eq!(find(&g, 1, CacheKind::Instruction).indexing, Indexing::Pipt);
        assert_eq!((g.data_colours(), g.instruction_colours()), (1, 1));
    }

    // FEAT_CCIDX layout of the A72's L2 (16-way, 1024 sets, 64B): NumSets in
    // [55:32], Associativity in [23:3].
    #[test]
    fn ccidx_format() {
        let v = (1023u64 << 32) | (15 << 3) | 2;
        assert_eq!(
            decode_ccsidr(v, true).unwrap(),
            CacheSize {
                line_size: 64,
                ways: 16,
                sets: 1024
            }
        );
        // The same bits read in the legacy layout mean something else.
        assert_ne!(decode_ccsidr(v, false).unwrap().sets, 1024);
        // A 2^24-set, 2^21-way cache still decodes without overflow.
        let max = (0xff_ffffu64 << 32) | (0x1f_ffff << 3) | 7;
        assert_eq!(decode_ccsidr(max, true).unwrap().sets, 1 << 24);
    }

    // Cortex-A7 MPCore TRM (DDI 0464F): CTR 0x84448003 (4.3.x: DminLine 16
    // words, L1Ip VIPT, IminLine 8 words), CLIDR 0x0A200023; I-cache 2-way
    // with 32-byte lines (6.6.2: S = log2(size / (2 * 32))), D-cache 4-way
    // with 64-byte lines (6.6.1): 32KB I 0x203FE009, 32KB D 0x700FE01A,
    // 512KB 8-way L2 0x707FE03A. The CTR matches QEMU's cortex-a7 model; the
    // CCSIDR values are encoded from the TRM's cache parameters (QEMU reuses
    // its A15 values for the A7 and is no help there).
    #[test]
    fn cortex_a7() {
        let g = CacheGeometry::from_armv7(
            0x8444_8003,
            0x0A20_0023,
            table(&[
                (1, false, 0x700F_E01A),
                (1, true, 0x203F_E009),
                (2, false, 0x707F_E03A),
            ]),
            PAGE,
        )
        .unwrap();
        assert_eq!((g.dminline, g.iminline), (64, 32));
        let l1i = find(&g, 1, CacheKind::Instruction);
        assert_eq!(
            (l1i.line_size, l1i.ways, l1i.sets, l1i.indexing),
            (32, 2, 512, Indexing::Vipt)
        );
        assert_eq!(l1i.colours(PAGE), 4);
        assert_eq!(find(&g, 2, CacheKind::Unified).ways, 8);
        assert_eq!(g.data_colours(), 1);
    }

    // Cortex-A15 MPCore TRM (DDI 0438I) 4.3.x: CTR 0x8444C004 (L1Ip PIPT),
    // CLIDR 0x0A200023, CCSIDR: L1 D 32KB 2-way 0x701FE00A, L1 I 32KB 2-way
    // 0x201FE00A, L2 1MB 16-way 0x707FE07A. CTR, CLIDR and the L1 values
    // match QEMU's cortex-a15 model.
    #[test]
    fn cortex_a15() {
        let g = CacheGeometry::from_armv7(
            0x8444_C004,
            0x0A20_0023,
            table(&[
                (1, false, 0x701F_E00A),
                (1, true, 0x201F_E00A),
                (2, false, 0x707F_E07A),
            ]),
            PAGE,
        )
        .unwrap();
        assert_eq!(find(&g, 1, CacheKind::Instruction).indexing, Indexing::Pipt);
        assert_eq!(find(&g, 1, CacheKind::Data).size(), 32 * 1024);
        assert_eq!((g.data_colours(), g.instruction_colours()), (1, 1));
    }

    // ARM1176JZF-S TRM (DDI 0301H) Table 3-8: CTR 0x1D152152 = separate
    // 16KB 4-way caches with 32-byte lines, P = 0 (the BCM2835 of the
    // Raspberry Pi 1). A 4KB way: VIPT but no aliasing.
    #[test]
    fn arm1176_16k() {
        let g = CacheGeometry::from_legacy_ctr(0x1D15_2152, LegacyArch::Armv6, PAGE).unwrap();
        let d = find(&g, 1, CacheKind::Data);
        assert_eq!(
            (d.line_size, d.ways, d.sets, d.size(), d.indexing),
            (32, 4, 128, 16 * 1024, Indexing::Vipt)
        );
        assert_eq!(g.data_colours(), 1);
        assert_eq!(g.dminline, 32);
    }

    // The same core built with 32KB caches: Table 3-6 says P is set above
    // 16KB (restriction on VA bits [13:12]); Size = 0b0110. 0x1D992992 is the
    // value those field encodings give. An 8KB way: 2 colours.
    #[test]
    fn arm1176_32k_aliases() {
        let g = CacheGeometry::from_legacy_ctr(0x1D99_2992, LegacyArch::Armv6, PAGE).unwrap();
        assert_eq!(find(&g, 1, CacheKind::Data).size(), 32 * 1024);
        assert_eq!(g.data_colours(), 2);
        assert_eq!(g.instruction_colours(), 2);
        // The Armv7 decoder refuses the legacy format, and vice versa.
        assert!(decode_armv7_ctr(0x1D99_2992).is_err());
        assert!(CacheGeometry::from_legacy_ctr(0x8444_C004, LegacyArch::Armv6, PAGE).is_err());
    }

    // ARM926EJ-S TRM (DDI 0198D) 2.3.2: an Armv5 core, VIVT caches.
    #[test]
    fn armv5_is_vivt() {
        let g = CacheGeometry::from_legacy_ctr(0x1D15_2152, LegacyArch::Armv5, PAGE).unwrap();
        assert!(g.data_vivt());
    }

    #[test]
    fn l1ip_encodings_and_bad_input() {
        assert_eq!(decode_ctr_el0(0x8444_0004).unwrap().l1_ip, Indexing::Vpipt);
        assert_eq!(decode_ctr_el0(0x8444_4004).unwrap().l1_ip, Indexing::Vivt);
        // CTR_EL0 with DIC/IDC set (bits 29/28) still decodes.
        assert_eq!(decode_ctr_el0(0xB444_C004).unwrap().dminline, 64);
        assert!(decode_ctr_el0(0x0444_C004).is_err());
        assert_eq!(
            CacheGeometry::from_aarch64(0x8444_C004, 0, |_, _| 0, false, 1000),
            Err(CacheError::InvalidPageSize)
        );
        // CLIDR with no caches: an empty geometry.
        let g = CacheGeometry::from_aarch64(0x8444_C004, 0, |_, _| 0, false, PAGE).unwrap();
        assert_eq!(g.caches().count(), 0);
        assert_eq!(g.data_colours(), 1);
    }

    // 16KB pages shrink the colour count of the same cache.
    #[test]
    fn colours_scale_with_page_size() {
        let g = CacheGeometry::from_legacy_ctr(0x1D99_2992, LegacyArch::Armv6, 16384).unwrap();
        assert_eq!(g.data_colours(), 1);
    }
}
