//! Host-side guest memory backed by a `Vec`, for tests of the layers above.

use crate::{GuestMemory, GuestPhysAddr, MemError};
use core::cell::RefCell;
use core::sync::atomic::Ordering;

/// One region of simulated guest RAM at `base`.
#[derive(Debug)]
pub struct VecMemory {
    base: GuestPhysAddr,
    bytes: RefCell<Vec<u8>>,
}

impl VecMemory {
    /// `size` zeroed bytes of guest RAM starting at `base`.
    pub fn new(base: u64, size: usize) -> Self {
        Self {
            base: GuestPhysAddr::new(base),
            bytes: RefCell::new(vec![0; size]),
        }
    }

    fn offset(&self, gpa: GuestPhysAddr, len: u64) -> Result<usize, MemError> {
        let end = gpa.checked_add(len).ok_or(MemError::Overflow)?;
        let size = self.bytes.borrow().len() as u64;
        match (
            gpa.checked_offset_from(self.base),
            end.checked_offset_from(self.base),
        ) {
            (Some(off), Some(end_off)) if end_off <= size => {
                usize::try_from(off).map_err(|_| MemError::Overflow)
            }
            _ => Err(MemError::OutOfRange {
                gpa: gpa.raw(),
                len,
            }),
        }
    }
}

impl GuestMemory for VecMemory {
    fn check_range(&self, gpa: GuestPhysAddr, len: u64) -> Result<(), MemError> {
        self.offset(gpa, len).map(|_| ())
    }
    fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let off = self.offset(gpa, buf.len() as u64)?;
        buf.copy_from_slice(&self.bytes.borrow()[off..off + buf.len()]);
        Ok(())
    }
    fn write(&self, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), MemError> {
        let off = self.offset(gpa, data.len() as u64)?;
        self.bytes.borrow_mut()[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn load_u16(&self, gpa: GuestPhysAddr, _order: Ordering) -> Result<u16, MemError> {
        if !gpa.is_aligned(2) {
            return Err(MemError::Unaligned);
        }
        let mut b = [0; 2];
        self.read(gpa, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    fn store_u16(&self, gpa: GuestPhysAddr, value: u16, _order: Ordering) -> Result<(), MemError> {
        if !gpa.is_aligned(2) {
            return Err(MemError::Unaligned);
        }
        self.write(gpa, &value.to_le_bytes())
    }
    fn fence(&self, _order: Ordering) {}
}
