//! Address newtypes: guest-physical, host-physical and host-virtual.

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw address.
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }
            /// The raw address.
            pub const fn raw(self) -> u64 {
                self.0
            }
            /// `self + offset`, or `None` on overflow.
            pub const fn checked_add(self, offset: u64) -> Option<Self> {
                match self.0.checked_add(offset) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
            /// `self + offset`, wrapping (for an offset inside a range
            /// already checked not to wrap).
            pub const fn wrapping_add(self, offset: u64) -> Self {
                Self(self.0.wrapping_add(offset))
            }
            /// `self - base`, or `None` if `self < base`.
            pub const fn checked_offset_from(self, base: Self) -> Option<u64> {
                self.0.checked_sub(base.0)
            }
            /// Whether the address is a multiple of `align` (a power of two).
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    };
}

address_type!(
    /// A guest-physical address (an IPA, the input to stage-2 translation).
    GuestPhysAddr
);
address_type!(
    /// A host-physical address (the output of stage-2 translation).
    HostPhysAddr
);
address_type!(
    /// A virtual address in the hypervisor's own (EL2 stage-1) address space.
    HostVirtAddr
);
