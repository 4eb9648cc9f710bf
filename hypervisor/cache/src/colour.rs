//! Colour-aware allocation of hypervisor virtual aliases of guest pages.
//!
//! On a VIPT cache whose way is larger than a page, the index bits above the
//! page offset (the *colour*) come from the virtual address. Two aliases of
//! one physical page with different colours occupy different sets and can
//! hold different data; with the same colour they meet in one set, the
//! physical tag matches, and they are one line. So every hypervisor alias of
//! a guest page must have the colour of the guest's own view of that page.
//!
//! [`ColourAllocator`] hands out aliases from a fixed VA window and records
//! each one. Its only search walks candidate pages *of the requested colour*,
//! so it cannot return another colour, and [`ColourAllocator::map`] refuses
//! a second alias of a physical page with a different colour. The invariant
//! is re-checkable at any time with [`ColourAllocator::check_invariant`].
//! No heap: the table is a fixed array; allocation runs at queue setup, not
//! per packet.

use chroma_mem::{GuestPhysAddr, HostPhysAddr, HostVirtAddr};

use crate::CacheError;

/// A cache colour: `(address / page_size) % colours`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Colour(u32);

impl Colour {
    /// The colour of virtual address `va` with `colours` colours of `page_size`.
    pub fn of(va: u64, page_size: u64, colours: u32) -> Self {
        let colours = u64::from(colours.max(1));
        // The remainder is smaller than `colours`, a u32.
        Self(u32::try_from((va / page_size) % colours).unwrap_or(0))
    }

    /// The colour of the guest's view of `gpa`, for a guest whose kernel maps
    /// its RAM linearly with a colour-aligned offset (Linux does: the linear
    /// map offset is a multiple of the largest SHMLBA), so VA colour = IPA colour.
    pub fn of_guest(gpa: GuestPhysAddr, page_size: u64, colours: u32) -> Self {
        Self::of(gpa.raw(), page_size, colours)
    }

    /// The colour as an index in `0..colours`.
    pub const fn index(self) -> u32 {
        self.0
    }
}

/// One alias handed out by the allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alias {
    /// First hypervisor virtual address of the alias.
    pub va: HostVirtAddr,
    /// First physical address it maps.
    pub phys: HostPhysAddr,
    /// Number of pages.
    pub pages: u64,
    /// The colour of the guest's view of the first page.
    pub colour: Colour,
}

/// Hands out hypervisor VAs whose colour matches the guest's view.
///
/// `N` is the most aliases live at once.
#[derive(Clone, Debug)]
pub struct ColourAllocator<const N: usize> {
    base: HostVirtAddr,
    window_pages: u64,
    page_size: u64,
    colours: u32,
    aliases: [Option<Alias>; N],
}

impl<const N: usize> ColourAllocator<N> {
    /// An allocator over the VA window `base..base + size`.
    ///
    /// `colours` comes from [`crate::CacheGeometry::data_colours`] (1 on a
    /// non-aliasing cache: every address then has colour 0).
    pub fn new(
        base: HostVirtAddr,
        size: u64,
        page_size: u64,
        colours: u32,
    ) -> Result<Self, CacheError> {
        if !page_size.is_power_of_two() || page_size < 4096 {
            return Err(CacheError::InvalidPageSize);
        }
        if !base.is_aligned(page_size) || !size.is_multiple_of(page_size) {
            return Err(CacheError::Unaligned);
        }
        base.checked_add(size).ok_or(CacheError::Overflow)?;
        Ok(Self {
            base,
            window_pages: size / page_size,
            page_size,
            colours: colours.max(1),
            aliases: [None; N],
        })
    }

    /// Number of colours this allocator separates.
    pub const fn colours(&self) -> u32 {
        self.colours
    }

    /// The VA window `(base, size)` the aliases live in.
    pub fn window(&self) -> (HostVirtAddr, u64) {
        (self.base, self.window_pages * self.page_size)
    }

    /// The colour of hypervisor address `va`.
    pub fn colour_of(&self, va: HostVirtAddr) -> Colour {
        Colour::of(va.raw(), self.page_size, self.colours)
    }

    /// The live aliases.
    pub fn aliases(&self) -> impl Iterator<Item = &Alias> {
        self.aliases.iter().flatten()
    }

    /// Maps `len` bytes of physical memory at `phys` (page aligned) whose
    /// first page the guest sees with colour `guest_colour`, and returns a
    /// hypervisor VA of the same colour.
    ///
    /// Refuses (`ColourConflict`) if any of these pages already has an alias
    /// of another colour: that alias would be the bug this module prevents.
    pub fn map(
        &mut self,
        phys: HostPhysAddr,
        len: u64,
        guest_colour: Colour,
    ) -> Result<HostVirtAddr, CacheError> {
        if guest_colour.index() >= self.colours {
            return Err(CacheError::InvalidColour);
        }
        if !phys.is_aligned(self.page_size) || len == 0 {
            return Err(CacheError::Unaligned);
        }
        let pages = len.div_ceil(self.page_size);
        phys.checked_add(
            pages
                .checked_mul(self.page_size)
                .ok_or(CacheError::Overflow)?,
        )
        .ok_or(CacheError::Overflow)?;
        self.check_against_existing(phys, pages, guest_colour)?;
        let slot = self
            .aliases
            .iter()
            .position(Option::is_none)
            .ok_or(CacheError::TableFull)?;
        let va = self.find_free(pages, guest_colour)?;
        let alias = Alias {
            va,
            phys,
            pages,
            colour: guest_colour,
        };
        // The search only visits pages of `guest_colour`; check it anyway,
        // so a future edit of `find_free` cannot silently break the rule.
        if self.colour_of(va) != guest_colour {
            return Err(CacheError::ColourConflict { phys: phys.raw() });
        }
        self.aliases[slot] = Some(alias);
        Ok(va)
    }

    /// Maps guest RAM at `gpa` (backed by `phys`) with the colour of the
    /// guest's linear-map view of `gpa`.
    pub fn map_guest(
        &mut self,
        gpa: GuestPhysAddr,
        phys: HostPhysAddr,
        len: u64,
    ) -> Result<HostVirtAddr, CacheError> {
        let colour = Colour::of_guest(gpa, self.page_size, self.colours);
        self.map(phys, len, colour)
    }

    /// Releases the alias starting at `va`.
    pub fn unmap(&mut self, va: HostVirtAddr) -> Result<Alias, CacheError> {
        let slot = self
            .aliases
            .iter_mut()
            .find(|a| matches!(a, Some(a) if a.va == va))
            .ok_or(CacheError::NotAllocated)?;
        slot.take().ok_or(CacheError::NotAllocated)
    }

    /// Checks the invariant: every alias has the colour recorded for it, and
    /// no physical page has two aliases of different colours.
    pub fn check_invariant(&self) -> Result<(), CacheError> {
        for a in self.aliases() {
            if self.colour_of(a.va) != a.colour {
                return Err(CacheError::ColourConflict { phys: a.phys.raw() });
            }
            self.check_pages(a, self.aliases().filter(|b| !core::ptr::eq(*b, a)))?;
        }
        Ok(())
    }

    /// Whether `phys..+pages` (wanting `colour` on its first page) agrees with every alias.
    fn check_against_existing(
        &self,
        phys: HostPhysAddr,
        pages: u64,
        colour: Colour,
    ) -> Result<(), CacheError> {
        // A candidate alias at a VA of `colour`: its page i has colour
        // (colour + i) % colours, the same rule `check_pages` applies.
        let candidate = Alias {
            va: HostVirtAddr::new(u64::from(colour.index()) * self.page_size),
            phys,
            pages,
            colour,
        };
        self.check_pages(&candidate, self.aliases())
    }

    /// For every physical page `a` shares with an alias in `others`, the two
    /// aliases must give that page the same colour.
    fn check_pages<'a>(
        &self,
        a: &Alias,
        others: impl Iterator<Item = &'a Alias>,
    ) -> Result<(), CacheError> {
        let page = self.page_size;
        let a_start = a.phys.raw() / page;
        let a_end = a_start + a.pages;
        for b in others {
            let b_start = b.phys.raw() / page;
            let b_end = b_start + b.pages;
            let (lo, hi) = (a_start.max(b_start), a_end.min(b_end));
            // Colours repeat every `colours` pages: checking that many shared pages suffices.
            for p in lo..hi.min(lo + u64::from(self.colours)) {
                let colour_a = Colour::of(a.va.raw() + (p - a_start) * page, page, self.colours);
                let colour_b = Colour::of(b.va.raw() + (p - b_start) * page, page, self.colours);
                if colour_a != colour_b {
                    return Err(CacheError::ColourConflict { phys: p * page });
                }
            }
        }
        Ok(())
    }

    /// The first free run of `pages` pages starting on a page of `colour`.
    fn find_free(&self, pages: u64, colour: Colour) -> Result<HostVirtAddr, CacheError> {
        let colours = u64::from(self.colours);
        let base_page = self.base.raw() / self.page_size;
        // First window page whose absolute page number has the wanted colour.
        let first = (u64::from(colour.index()) + colours - base_page % colours) % colours;
        let mut start = first;
        while start + pages <= self.window_pages {
            let va = self.base.raw() + start * self.page_size;
            let end = va + pages * self.page_size;
            match self
                .aliases()
                .find(|a| va < a.va.raw() + a.pages * self.page_size && a.va.raw() < end)
            {
                None => return Ok(HostVirtAddr::new(va)),
                // Skip past the blocking alias, to the next page of this colour.
                Some(a) => {
                    let after = (a.va.raw() - self.base.raw()) / self.page_size + a.pages;
                    start = after + (first + colours - after % colours) % colours;
                }
            }
        }
        Err(CacheError::OutOfVirtualSpace)
    }

    #[cfg(test)]
    fn insert_unchecked(&mut self, alias: Alias) {
        let slot = self.aliases.iter().position(Option::is_none).unwrap();
        self.aliases[slot] = Some(alias);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    fn alloc(colours: u32) -> ColourAllocator<64> {
        ColourAllocator::new(HostVirtAddr::new(0x40_0000_1000), 256 * PAGE, PAGE, colours).unwrap()
    }

    #[test]
    fn hands_out_the_guest_colour() {
        for colours in [1, 2, 4, 8] {
            let mut a = alloc(colours);
            for page in 0..40u64 {
                let gpa = GuestPhysAddr::new(0x4000_0000 + page * PAGE);
                let va = a
                    .map_guest(gpa, HostPhysAddr::new(0x8000_0000 + page * PAGE), PAGE)
                    .unwrap();
                assert_eq!(a.colour_of(va), Colour::of_guest(gpa, PAGE, colours));
            }
            a.check_invariant().unwrap();
        }
    }

    #[test]
    fn multi_page_aliases_match_on_every_page() {
        let mut a = alloc(4);
        let gpa = GuestPhysAddr::new(0x4000_3000);
        let va = a
            .map_guest(gpa, HostPhysAddr::new(0x9000_0000), 5 * PAGE)
            .unwrap();
        for i in 0..5 {
            assert_eq!(
                Colour::of(va.raw() + i * PAGE, PAGE, 4),
                Colour::of_guest(GuestPhysAddr::new(gpa.raw() + i * PAGE), PAGE, 4)
            );
        }
    }

    #[test]
    fn refuses_a_second_alias_of_another_colour() {
        let mut a = alloc(4);
        let phys = HostPhysAddr::new(0x9000_0000);
        a.map(phys, 2 * PAGE, Colour(1)).unwrap();
        // Same page, same colour: fine (a second same-colour alias is coherent).
        a.map(phys, PAGE, Colour(1)).unwrap();
        // The second page of the first alias has colour 2.
        a.map(HostPhysAddr::new(phys.raw() + PAGE), PAGE, Colour(2))
            .unwrap();
        assert_eq!(
            a.map(phys, PAGE, Colour(3)),
            Err(CacheError::ColourConflict { phys: phys.raw() })
        );
        assert_eq!(
            a.map(HostPhysAddr::new(phys.raw() + PAGE), PAGE, Colour(1)),
            Err(CacheError::ColourConflict {
                phys: phys.raw() + PAGE
            })
        );
        assert_eq!(a.map(phys, PAGE, Colour(4)), Err(CacheError::InvalidColour));
        a.check_invariant().unwrap();
    }

    // Negative control: the checker catches an other-colour alias that was
    // slipped into the table behind the allocator's back.
    #[test]
    fn invariant_checker_catches_a_wrong_colour_alias() {
        let mut a = alloc(4);
        let phys = HostPhysAddr::new(0x9000_0000);
        let va = a.map(phys, PAGE, Colour(2)).unwrap();
        a.check_invariant().unwrap();
        a.insert_unchecked(Alias {
            va: HostVirtAddr::new(va.raw() + PAGE),
            phys,
            pages: 1,
            colour: Colour(3),
        });
        assert_eq!(
            a.check_invariant(),
            Err(CacheError::ColourConflict { phys: phys.raw() })
        );
        // And one whose VA does not have its recorded colour.
        let mut b = alloc(4);
        b.insert_unchecked(Alias {
            va: HostVirtAddr::new(0x40_0000_1000),
            phys,
            pages: 1,
            colour: Colour(0),
        });
        assert!(b.check_invariant().is_err());
    }

    /// Randomised map/unmap: every returned VA has the asked colour, never
    /// overlaps a live alias, and the invariant holds throughout.
    #[test]
    fn randomised_map_unmap() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for colours in [2u32, 4, 8] {
            let mut a = alloc(colours);
            let mut live: [Option<HostVirtAddr>; 64] = [None; 64];
            for _ in 0..5000 {
                let i = (next() % 64) as usize;
                if let Some(va) = live[i].take() {
                    a.unmap(va).unwrap();
                } else {
                    let colour = Colour::of((next() % u64::from(colours)) * PAGE, PAGE, colours);
                    let pages = 1 + next() % 4;
                    let phys = HostPhysAddr::new(0x8000_0000 + (next() % 1024) * PAGE);
                    match a.map(phys, pages * PAGE, colour) {
                        Ok(va) => {
                            assert_eq!(a.colour_of(va), colour);
                            live[i] = Some(va);
                        }
                        Err(CacheError::ColourConflict { .. } | CacheError::OutOfVirtualSpace) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                a.check_invariant().unwrap();
            }
            // No two live aliases overlap in VA.
            let all: [Option<Alias>; 64] = a.aliases;
            for (i, x) in all.iter().flatten().enumerate() {
                for y in all.iter().flatten().skip(i + 1) {
                    let (xe, ye) = (x.va.raw() + x.pages * PAGE, y.va.raw() + y.pages * PAGE);
                    assert!(xe <= y.va.raw() || ye <= x.va.raw());
                }
            }
        }
    }

    #[test]
    fn exhaustion_and_unmap() {
        let mut a: ColourAllocator<8> =
            ColourAllocator::new(HostVirtAddr::new(0x1000_0000), 8 * PAGE, PAGE, 4).unwrap();
        // Two pages of colour 1 exist in an 8-page window.
        let v1 = a.map(HostPhysAddr::new(0x1000), PAGE, Colour(1)).unwrap();
        a.map(HostPhysAddr::new(0x2000), PAGE, Colour(1)).unwrap();
        assert_eq!(
            a.map(HostPhysAddr::new(0x3000), PAGE, Colour(1)),
            Err(CacheError::OutOfVirtualSpace)
        );
        a.unmap(v1).unwrap();
        assert_eq!(a.map(HostPhysAddr::new(0x3000), PAGE, Colour(1)), Ok(v1));
        assert_eq!(
            a.unmap(HostVirtAddr::new(0x42)),
            Err(CacheError::NotAllocated)
        );
    }
}
