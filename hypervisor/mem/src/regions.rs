//! A VM's guest-RAM regions and the range check every access goes through.

use crate::{GuestPhysAddr, HostPhysAddr, HostVirtAddr, MemError};

/// Most RAM regions a VM can have.
pub const MAX_REGIONS: usize = 8;

/// One contiguous range of guest RAM and where the hypervisor sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First guest-physical address of the region.
    pub guest: GuestPhysAddr,
    /// Host-physical address backing `guest`.
    pub host_phys: HostPhysAddr,
    /// Hypervisor virtual address of `guest` (a colour-matched alias).
    pub host_virt: HostVirtAddr,
    /// Size in bytes.
    pub size: u64,
}

impl Region {
    /// Offset of `gpa..gpa+len` inside this region, if it fits entirely.
    pub fn offset_of(&self, gpa: GuestPhysAddr, len: u64) -> Option<u64> {
        let offset = gpa.checked_offset_from(self.guest)?;
        let end = offset.checked_add(len)?;
        (end <= self.size).then_some(offset)
    }
}

/// The regions of one VM, fixed-size so it needs no heap.
#[derive(Clone, Debug, Default)]
pub struct RegionTable {
    regions: [Option<Region>; MAX_REGIONS],
}

impl RegionTable {
    /// An empty table.
    pub const fn new() -> Self {
        Self {
            regions: [None; MAX_REGIONS],
        }
    }

    /// Adds a region; refuses overlaps, wrap-around and a full table.
    pub fn add(&mut self, region: Region) -> Result<(), MemError> {
        let end = region
            .guest
            .raw()
            .checked_add(region.size)
            .ok_or(MemError::Overflow)?;
        for r in self.iter() {
            let r_end = r.guest.raw() + r.size;
            if region.guest.raw() < r_end && r.guest.raw() < end {
                return Err(MemError::Overlap);
            }
        }
        let slot = self
            .regions
            .iter_mut()
            .find(|s| s.is_none())
            .ok_or(MemError::TooManyRegions)?;
        *slot = Some(region);
        Ok(())
    }

    /// The regions in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &Region> {
        self.regions.iter().flatten()
    }

    /// The region holding all of `gpa..gpa+len` and the offset into it.
    ///
    /// A range that straddles two regions is refused even if they are
    /// adjacent: their host aliases need not be.
    pub fn translate(&self, gpa: GuestPhysAddr, len: u64) -> Result<(&Region, u64), MemError> {
        gpa.checked_add(len).ok_or(MemError::Overflow)?;
        self.iter()
            .find_map(|r| r.offset_of(gpa, len).map(|off| (r, off)))
            .ok_or(MemError::OutOfRange {
                gpa: gpa.raw(),
                len,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(guest: u64, size: u64) -> Region {
        Region {
            guest: GuestPhysAddr::new(guest),
            host_phys: HostPhysAddr::new(0x8000_0000),
            host_virt: HostVirtAddr::new(0x1_0000_0000),
            size,
        }
    }

    #[test]
    fn translate_checks_bounds_and_wrap() {
        let mut t = RegionTable::new();
        t.add(region(0x4000_0000, 0x1000)).unwrap();
        assert_eq!(
            t.translate(GuestPhysAddr::new(0x4000_0ff0), 0x10)
                .unwrap()
                .1,
            0xff0
        );
        assert!(t.translate(GuestPhysAddr::new(0x4000_0ff0), 0x11).is_err());
        assert!(t.translate(GuestPhysAddr::new(0x3fff_ffff), 2).is_err());
        assert_eq!(
            t.translate(GuestPhysAddr::new(u64::MAX), 2),
            Err(MemError::Overflow)
        );
    }

    #[test]
    fn overlapping_regions_are_refused() {
        let mut t = RegionTable::new();
        t.add(region(0x4000_0000, 0x2000)).unwrap();
        assert_eq!(t.add(region(0x4000_1000, 0x2000)), Err(MemError::Overlap));
        t.add(region(0x4000_2000, 0x1000)).unwrap();
        // Adjacent regions are separate: a range over both is refused.
        assert!(t.translate(GuestPhysAddr::new(0x4000_1ff0), 0x20).is_err());
    }
}
