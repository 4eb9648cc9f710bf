//! The cache maintenance trait and the by-range operations built on it.
//!
//! Implementations provide per-line primitives; the range operations here
//! are shared, so the rule "a partial line at either end of an invalidate is
//! cleaned and invalidated, never simply invalidated" is written once and
//! tested once (against the simulator, which would lose a neighbour's bytes).

use chroma_mem::HostVirtAddr;

/// Data and instruction cache maintenance by virtual address, and barriers.
///
/// All by-VA operations act to the Point of Coherency.
///
/// # Safety
///
/// Implementations must perform the operation named on the cache line that
/// holds `va` (and nothing weaker), or the callers' correctness arguments
/// fail. Callers must pass addresses that are mapped in the current
/// translation regime (a by-VA operation on an unmapped address faults).
pub unsafe trait CacheOps {
    /// The maintenance stride: the smallest D-cache line in bytes (a power of two).
    fn line_size(&self) -> usize;

    /// Cleans the line holding `va` to the Point of Coherency (`DC CVAC`).
    ///
    /// # Safety
    ///
    /// `va` must be mapped.
    unsafe fn clean_line(&self, va: HostVirtAddr);

    /// Invalidates the line holding `va` (`DC IVAC`), discarding dirty data.
    ///
    /// # Safety
    ///
    /// `va` must be mapped, and nothing in the whole line may hold dirty
    /// data that anyone still needs: it is thrown away.
    unsafe fn invalidate_line(&self, va: HostVirtAddr);

    /// Cleans and invalidates the line holding `va` (`DC CIVAC`).
    ///
    /// # Safety
    ///
    /// `va` must be mapped.
    unsafe fn clean_invalidate_line(&self, va: HostVirtAddr);

    /// Invalidates all instruction caches to the Point of Unification (`IC IALLU`).
    fn invalidate_icache_all(&self);

    /// Waits until all earlier memory accesses and maintenance completed (`DSB SY`).
    fn dsb(&self);

    /// Orders earlier memory accesses before later ones (`DMB SY`).
    fn dmb(&self);

    /// Flushes the pipeline so later instructions see earlier changes (`ISB`).
    fn isb(&self);

    /// [`clean_range`] through these operations.
    ///
    /// # Safety
    ///
    /// As [`clean_range`].
    unsafe fn clean_range(&self, va: HostVirtAddr, len: usize) -> usize {
        // SAFETY: forwarded from the caller.
        unsafe { clean_range(self, va, len) }
    }

    /// [`invalidate_range`] through these operations (partial edge lines
    /// are cleaned and invalidated).
    ///
    /// # Safety
    ///
    /// As [`invalidate_range`].
    unsafe fn invalidate_range(&self, va: HostVirtAddr, len: usize) -> usize {
        // SAFETY: forwarded from the caller.
        unsafe { invalidate_range(self, va, len) }
    }

    /// [`clean_invalidate_range`] through these operations.
    ///
    /// # Safety
    ///
    /// As [`clean_invalidate_range`].
    unsafe fn clean_invalidate_range(&self, va: HostVirtAddr, len: usize) -> usize {
        // SAFETY: forwarded from the caller.
        unsafe { clean_invalidate_range(self, va, len) }
    }
}

/// The line-aligned span covering `va..va+len`: `(first line, line count)`.
/// `line` is a power of two (a cache line as CTR gives it): the count is
/// a shift, not a division (a 64-bit division is a library call on
/// AArch32, made for every maintained access).
///
/// Returns `None` on overflow; `len == 0` gives zero lines.
pub fn line_span(va: HostVirtAddr, len: usize, line: usize) -> Option<(u64, usize)> {
    if len == 0 {
        return Some((va.raw() & !(line as u64 - 1), 0));
    }
    let line = line as u64;
    let first = va.raw() & !(line - 1);
    let last_byte = va.raw().checked_add(u64::try_from(len).ok()? - 1)?;
    let last = last_byte & !(line - 1);
    let count = usize::try_from(((last - first) >> line.trailing_zeros()) + 1).ok()?;
    Some((first, count))
}

/// Cleans every line of `va..va+len`, then waits for completion (`DSB`).
/// Returns the number of lines cleaned.
///
/// # Safety
///
/// The whole range must be mapped.
pub unsafe fn clean_range<O: CacheOps + ?Sized>(ops: &O, va: HostVirtAddr, len: usize) -> usize {
    let line = ops.line_size();
    let Some((first, count)) = line_span(va, len, line) else {
        return 0;
    };
    for i in 0..count {
        // `line_span` proved `first + (count - 1) * line` does not overflow.
        let at = HostVirtAddr::new(first + i as u64 * line as u64);
        // SAFETY: `at` lies in the caller's mapped range.
        unsafe { ops.clean_line(at) };
    }
    ops.dsb();
    count
}

/// Cleans and invalidates every line of `va..va+len`, then `DSB`.
/// Returns the number of lines maintained.
///
/// # Safety
///
/// The whole range must be mapped.
pub unsafe fn clean_invalidate_range<O: CacheOps + ?Sized>(
    ops: &O,
    va: HostVirtAddr,
    len: usize,
) -> usize {
    let line = ops.line_size();
    let Some((first, count)) = line_span(va, len, line) else {
        return 0;
    };
    for i in 0..count {
        let at = HostVirtAddr::new(first + i as u64 * line as u64);
        // SAFETY: `at` lies in the caller's mapped range.
        unsafe { ops.clean_invalidate_line(at) };
    }
    ops.dsb();
    count
}

/// Invalidates `va..va+len`, then `DSB`. Lines only partly inside the range
/// are cleaned and invalidated instead (a neighbour's dirty bytes survive);
/// lines wholly inside are invalidated. Returns the number of lines maintained.
///
/// # Safety
///
/// The whole range must be mapped, and no byte inside it may hold dirty
/// data anyone still needs (it is discarded).
pub unsafe fn invalidate_range<O: CacheOps + ?Sized>(
    ops: &O,
    va: HostVirtAddr,
    len: usize,
) -> usize {
    let line = ops.line_size();
    let Some((first, count)) = line_span(va, len, line) else {
        return 0;
    };
    let start = va.raw();
    // `line_span` succeeded, so `start + len` does not overflow.
    let end = start + len as u64;
    for i in 0..count {
        let at = first + i as u64 * line as u64;
        let whole = at >= start && at + line as u64 <= end;
        let at = HostVirtAddr::new(at);
        if whole {
            // SAFETY: the line lies wholly inside the caller's range, whose dirty data the caller gave up.
            unsafe { ops.invalidate_line(at) };
        } else {
            // SAFETY: `at` is mapped (it holds a byte of the range).
            unsafe { ops.clean_invalidate_line(at) };
        }
    }
    ops.dsb();
    count
}

/// Prepares a freshly written guest image for execution: clean it to the
/// Point of Coherency, invalidate the I-caches, synchronise the pipeline.
/// Returns the number of D-cache lines cleaned.
///
/// # Safety
///
/// The whole range must be mapped.
pub unsafe fn sync_loaded_image<O: CacheOps + ?Sized>(
    ops: &O,
    va: HostVirtAddr,
    len: usize,
) -> usize {
    // SAFETY: forwarded from the caller.
    let lines = unsafe { clean_range(ops, va, len) };
    ops.invalidate_icache_all();
    ops.dsb();
    ops.isb();
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::RefCell;

    #[derive(Debug, PartialEq, Eq, Clone, Copy)]
    enum Op {
        Clean(u64),
        Inval(u64),
        CleanInval(u64),
        Ic,
        Dsb,
        Isb,
    }

    struct Recorder {
        line: usize,
        log: RefCell<[Option<Op>; 32]>,
        n: RefCell<usize>,
    }

    impl Recorder {
        fn new(line: usize) -> Self {
            Self {
                line,
                log: RefCell::new([None; 32]),
                n: RefCell::new(0),
            }
        }
        fn push(&self, op: Op) {
            let mut n = self.n.borrow_mut();
            self.log.borrow_mut()[*n] = Some(op);
            *n += 1;
        }
        fn ops(&self) -> ([Option<Op>; 32], usize) {
            (*self.log.borrow(), *self.n.borrow())
        }
    }

    // SAFETY: a test double that records the operations instead of doing them.
    unsafe impl CacheOps for Recorder {
        fn line_size(&self) -> usize {
            self.line
        }
        unsafe fn clean_line(&self, va: HostVirtAddr) {
            self.push(Op::Clean(va.raw()));
        }
        unsafe fn invalidate_line(&self, va: HostVirtAddr) {
            self.push(Op::Inval(va.raw()));
        }
        unsafe fn clean_invalidate_line(&self, va: HostVirtAddr) {
            self.push(Op::CleanInval(va.raw()));
        }
        fn invalidate_icache_all(&self) {
            self.push(Op::Ic);
        }
        fn dsb(&self) {
            self.push(Op::Dsb);
        }
        fn dmb(&self) {}
        fn isb(&self) {
            self.push(Op::Isb);
        }
    }

    #[test]
    fn span() {
        let va = HostVirtAddr::new(0x1030);
        assert_eq!(line_span(va, 0x20, 64), Some((0x1000, 2)));
        assert_eq!(line_span(va, 0x10, 64), Some((0x1000, 1)));
        assert_eq!(
            line_span(HostVirtAddr::new(0x1000), 0x40, 64),
            Some((0x1000, 1))
        );
        assert_eq!(line_span(HostVirtAddr::new(u64::MAX), 2, 64), None);
        assert_eq!(line_span(va, 0, 64).unwrap().1, 0);
    }

    #[test]
    fn invalidate_cleans_partial_edges() {
        let r = Recorder::new(32);
        // 0x1010..0x1070: partial line 0x1000, whole 0x1020 and 0x1040, partial 0x1060.
        // SAFETY: the recorder touches no memory.
        let n = unsafe { invalidate_range(&r, HostVirtAddr::new(0x1010), 0x60) };
        assert_eq!(n, 4);
        let (log, len) = r.ops();
        assert_eq!(
            &log[..len],
            &[
                Some(Op::CleanInval(0x1000)),
                Some(Op::Inval(0x1020)),
                Some(Op::Inval(0x1040)),
                Some(Op::CleanInval(0x1060)),
                Some(Op::Dsb)
            ]
        );
    }

    #[test]
    fn aligned_invalidate_and_clean() {
        let r = Recorder::new(64);
        // SAFETY: the recorder touches no memory.
        unsafe {
            invalidate_range(&r, HostVirtAddr::new(0x2000), 0x80);
            clean_range(&r, HostVirtAddr::new(0x2004), 2);
        }
        let (log, len) = r.ops();
        assert_eq!(
            &log[..len],
            &[
                Some(Op::Inval(0x2000)),
                Some(Op::Inval(0x2040)),
                Some(Op::Dsb),
                Some(Op::Clean(0x2000)),
                Some(Op::Dsb)
            ]
        );
    }

    #[test]
    fn loaded_image_sequence() {
        let r = Recorder::new(64);
        // SAFETY: the recorder touches no memory.
        let n = unsafe { sync_loaded_image(&r, HostVirtAddr::new(0x4000), 100) };
        assert_eq!(n, 2);
        let (log, len) = r.ops();
        assert_eq!(
            log[len - 4..len],
            [Some(Op::Dsb), Some(Op::Ic), Some(Op::Dsb), Some(Op::Isb)]
        );
    }
}
