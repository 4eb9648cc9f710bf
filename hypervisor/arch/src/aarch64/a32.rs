//! Decoding the A32 load and store instructions an AArch32 guest may use on
//! a device, for the data aborts whose syndrome does not describe the access
//! (ESR_EL2.ISV = 0): those with base register writeback (pre-indexed with
//! `!`, or post-indexed), which compilers emit for volatile accesses to
//! consecutive registers. Linux's `readl`/`writel` avoid them; Rust's
//! `read_volatile` does not, so a guest using `virtio-drivers` needs this.
//!
//! Only single-register LDR, STR, LDRB, STRB, LDRH, STRH, LDRSB and LDRSH
//! (immediate or register offset, shifted register included) in ARM state
//! are decoded (Arm ARM F5.1); the unprivileged forms (LDRT, ...), LDRD,
//! STRD, LDM, STM, exclusives and every Thumb encoding are not, and the
//! guest gets the external abort it would without this decoder. An
//! UNPREDICTABLE combination (PC as a register, Rn = Rt with writeback) is
//! refused too. Pure, host-tested; the back-end fetches the instruction.
// Guest input is parsed here: an index or slice must not panic (issue 10).
#![deny(clippy::indexing_slicing)]

use chroma_core::exit::{AccessWidth, Writeback};

/// A decoded single load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadStore {
    /// A store (else a load).
    pub write: bool,
    /// Access width.
    pub width: AccessWidth,
    /// A load sign-extends (LDRSB, LDRSH).
    pub sign_extend: bool,
    /// The transfer register, r0..r14.
    pub rt: u8,
    /// The base register's update, computed from its value and the offset.
    pub writeback: Option<Writeback>,
}

/// Decodes A32 instruction `insn`; `register(n)` reads r0..r14 as the
/// guest had them. `None` when it is not one of the forms above.
pub fn decode(insn: u32, register: impl Fn(u8) -> u64) -> Option<LoadStore> {
    let bit = |n: u32| insn >> n & 1 == 1;
    let field = |shift: u32, bits: u32| insn >> shift & ((1 << bits) - 1);
    // cond = 0b1111 is the unconditional space: no loads or stores here.
    if field(28, 4) == 0xf {
        return None;
    }
    let (pre, up, writeback_bit, load) = (bit(24), bit(23), bit(21), bit(20));
    // P = 0 with W = 1 is the unprivileged (T) form; not decoded.
    if !pre && writeback_bit {
        return None;
    }
    let rn = u8::try_from(field(16, 4)).ok()?;
    let rt = u8::try_from(field(12, 4)).ok()?;
    let (width, sign_extend, offset) = match field(25, 3) {
        // LDR/STR/LDRB/STRB, immediate: imm12.
        0b010 => {
            let width = if bit(22) {
                AccessWidth::Byte
            } else {
                AccessWidth::Word
            };
            (width, false, u64::from(field(0, 12)))
        }
        // LDR/STR/LDRB/STRB, (shifted) register: bit 4 clear (set is media).
        0b011 if !bit(4) => {
            let width = if bit(22) {
                AccessWidth::Byte
            } else {
                AccessWidth::Word
            };
            let rm = u8::try_from(field(0, 4)).ok()?;
            if rm == 15 {
                return None;
            }
            let value = register(rm) & 0xffff_ffff;
            (width, false, shifted(value, field(5, 2), field(7, 5))?)
        }
        // The "extra" loads and stores: bits 7 and 4 set, op2 (6:5) != 0.
        0b000 if bit(7) && bit(4) && field(5, 2) != 0 => {
            let (width, sign_extend) = match (load, field(5, 2)) {
                (_, 0b01) => (AccessWidth::Half, false),
                (true, 0b10) => (AccessWidth::Byte, true),
                (true, 0b11) => (AccessWidth::Half, true),
                // LDRD, STRD: two registers, not decoded.
                _ => return None,
            };
            let offset = if bit(22) {
                u64::from(field(8, 4) << 4 | field(0, 4))
            } else {
                // Register offset: bits 11:8 are (0).
                let rm = u8::try_from(field(0, 4)).ok()?;
                if rm == 15 || field(8, 4) != 0 {
                    return None;
                }
                register(rm) & 0xffff_ffff
            };
            (width, sign_extend, offset)
        }
        _ => return None,
    };
    if rt == 15 || rn == 15 {
        return None;
    }
    let writes_back = !pre || writeback_bit;
    // Writeback to the register a load fills is UNPREDICTABLE.
    if writes_back && rn == rt {
        return None;
    }
    let base = register(rn) & 0xffff_ffff;
    let moved = if up {
        base.wrapping_add(offset)
    } else {
        base.wrapping_sub(offset)
    } & 0xffff_ffff;
    Some(LoadStore {
        write: !load,
        width,
        sign_extend,
        rt,
        writeback: writes_back.then_some(Writeback {
            register: rn,
            value: moved,
        }),
    })
}

/// `value` shifted as the instruction's `type` (LSL, LSR, ASR, ROR) and
/// `imm5` say (DecodeImmShift); `None` for RRX (ROR #0), which needs the
/// carry flag (no compiler uses it for an address).
fn shifted(value: u64, kind: u32, imm5: u32) -> Option<u64> {
    let value = value & 0xffff_ffff;
    let word = u32::try_from(value).ok()?;
    Some(u64::from(match (kind, imm5) {
        (0b00, n) => word.checked_shl(n).unwrap_or(0),
        (0b01, 0) => 0,
        (0b01, n) => word >> n,
        (0b10, 0) => {
            if word >> 31 == 1 {
                u32::MAX
            } else {
                0
            }
        }
        (0b10, n) => {
            // Arithmetic: the sign bit fills from the left.
            let fill = if word >> 31 == 1 {
                u32::MAX << (32 - n)
            } else {
                0
            };
            word >> n | fill
        }
        (0b11, 0) => return None,
        (_, n) => word.rotate_right(n),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(values: &[u64]) -> impl Fn(u8) -> u64 + '_ {
        move |n| values.get(usize::from(n)).copied().unwrap_or(0)
    }

    const R: [u64; 8] = [0, 0, 0, 0, 0, 0x0a00_0000, 0x10, 0];

    #[test]
    fn post_indexed_and_pre_indexed_word_accesses_write_back() {
        // ldr r3, [r5], #256 (what rustc emitted for virtio-drivers).
        let ldr = decode(0xe495_3100, regs(&R)).unwrap();
        assert_eq!(
            ldr,
            LoadStore {
                write: false,
                width: AccessWidth::Word,
                sign_extend: false,
                rt: 3,
                writeback: Some(Writeback {
                    register: 5,
                    value: 0x0a00_0100
                }),
            }
        );
        // str r1, [r5, #-4]! : pre-indexed, down, writeback.
        let str_pre = decode(0xe525_1004, regs(&R)).unwrap();
        assert!(str_pre.write);
        assert_eq!(str_pre.writeback.unwrap().value, 0x09ff_fffc);
        // ldr r3, [r5, #8]: no writeback (such an access has a syndrome,
        // but decoding it is still right).
        assert_eq!(decode(0xe595_3008, regs(&R)).unwrap().writeback, None);
        // strb r2, [r5], r6, lsl #2: register offset, shifted.
        let strb = decode(0xe6c5_2106, regs(&R)).unwrap();
        assert_eq!(strb.width, AccessWidth::Byte);
        assert_eq!(strb.writeback.unwrap().value, 0x0a00_0040);
    }

    #[test]
    fn halfword_and_signed_forms() {
        // ldrh r3, [r5], #2 ; ldrsb r3, [r5], #1 ; ldrsh r3, [r5, #-2]!
        let ldrh = decode(0xe0d5_30b2, regs(&R)).unwrap();
        assert_eq!(
            (ldrh.width, ldrh.sign_extend, ldrh.write),
            (AccessWidth::Half, false, false)
        );
        assert_eq!(ldrh.writeback.unwrap().value, 0x0a00_0002);
        let ldrsb = decode(0xe0d5_30d1, regs(&R)).unwrap();
        assert_eq!((ldrsb.width, ldrsb.sign_extend), (AccessWidth::Byte, true));
        let ldrsh = decode(0xe175_30f2, regs(&R)).unwrap();
        assert_eq!((ldrsh.width, ldrsh.sign_extend), (AccessWidth::Half, true));
        assert_eq!(ldrsh.writeback.unwrap().value, 0x09ff_fffe);
        // strh r3, [r5], r6
        let strh = decode(0xe085_30b6, regs(&R)).unwrap();
        assert!(strh.write);
        assert_eq!(strh.writeback.unwrap().value, 0x0a00_0010);
    }

    #[test]
    fn what_is_not_decoded_is_refused() {
        let refused = |insn: u32| decode(insn, regs(&R)).is_none();
        assert!(refused(0xe4b5_3100), "ldrt r3, [r5], #256 (unprivileged)");
        assert!(refused(0xe0c5_20d8), "ldrd r2, r3, [r5], #8");
        assert!(refused(0xe8b5_000c), "ldm r5!, {{r2, r3}}");
        assert!(
            refused(0xe495_5100),
            "ldr r5, [r5], #256: Rn = Rt with writeback"
        );
        assert!(refused(0xe49f_3100), "ldr r3, [pc], #256");
        assert!(refused(0xe495_f100), "ldr pc, [r5], #256");
        assert!(refused(0xe695_3066), "ldr r3, [r5], r6, rrx");
        assert!(refused(0xf495_3100), "the unconditional space");
        assert!(refused(0xe190_3f9f), "ldrex");
        assert!(refused(0xe6f5_3076), "a media instruction (uxth)");
    }
}
