//! Writes to a GIC virtual interface that would change nothing, skipped.

/// List registers whose invalid contents [`WriteShadow`] remembers (GICv2
/// has at most 64, GICv3 16; the vGIC loads at most 16).
const MAX_REMEMBERED_LRS: usize = 16;

/// Which writes to the virtual interface's list registers and HCR would
/// change nothing. Most exits find nothing to load, so flush writes every
/// list register invalid again, and sync and flush set HCR to what it
/// was; on QEMU every GICH access is an MMIO under its global lock, and
/// skipping them keeps one vCPU's exits from queueing behind the other
/// CPU's. Only invalid list register values are remembered, because the
/// hardware never changes an invalid entry (a pending or active one it may
/// retire while the guest runs); of HCR, only En and UIE are written, and
/// the hardware changes only EOICount, which chroma does not use.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteShadow {
    /// Bit n: list register n holds `empty_values[n]`, an invalid entry.
    empty: u32,
    /// The raw invalid value of each remembered list register.
    empty_values: [u64; MAX_REMEMBERED_LRS],
    /// The last value written to HCR, if any.
    hcr: Option<u32>,
}

impl WriteShadow {
    /// Whether writing `raw` (an invalid entry if `invalid`) to list
    /// register `index` changes it; records the write if so.
    pub fn list_register(&mut self, index: usize, raw: u64, invalid: bool) -> bool {
        let bit = u32::try_from(index)
            .ok()
            .and_then(|i| 1u32.checked_shl(i))
            .unwrap_or(0);
        let Some(last) = self.empty_values.get_mut(index) else {
            return true;
        };
        if self.empty & bit != 0 && *last == raw {
            return false;
        }
        if invalid {
            *last = raw;
            self.empty |= bit;
        } else {
            self.empty &= !bit;
        }
        true
    }

    /// Whether writing `value` to HCR changes it; records the write if so.
    pub fn hcr(&mut self, value: u32) -> bool {
        let changed = self.hcr != Some(value);
        self.hcr = Some(value);
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::WriteShadow;

    #[test]
    fn an_invalid_list_register_written_again_is_skipped() {
        let mut shadow = WriteShadow::default();
        // Unknown at first: written.
        assert!(shadow.list_register(0, 0, true));
        assert!(!shadow.list_register(0, 0, true));
        // Another register is unknown until written.
        assert!(shadow.list_register(1, 0, true));
        // A different invalid value is a change.
        assert!(shadow.list_register(0, 1 << 62, true));
        assert!(!shadow.list_register(0, 1 << 62, true));
    }

    /// The hardware may retire a pending entry while the guest runs, so the
    /// same pending value written twice is written twice, and an invalid
    /// one after it is written (it may differ from what the register holds).
    #[test]
    fn a_pending_list_register_is_always_written() {
        let mut shadow = WriteShadow::default();
        let pending = 1u64 << 28 | 27;
        assert!(shadow.list_register(2, pending, false));
        assert!(shadow.list_register(2, pending, false));
        assert!(shadow.list_register(2, 0, true));
        assert!(!shadow.list_register(2, 0, true));
        // Past the remembered ones: always written.
        assert!(shadow.list_register(40, 0, true));
        assert!(shadow.list_register(40, 0, true));
    }

    #[test]
    fn hcr_is_written_when_it_changes() {
        let mut shadow = WriteShadow::default();
        assert!(shadow.hcr(1));
        assert!(!shadow.hcr(1));
        assert!(shadow.hcr(3));
        assert!(shadow.hcr(1));
    }
}
