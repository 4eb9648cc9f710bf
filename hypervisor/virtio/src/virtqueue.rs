//! One virtqueue in either ring format: [`Virtqueue`] holds a split
//! (§2.7, [`SplitQueue`]) or a packed (§2.8, [`PackedQueue`]) queue and
//! gives the transport and the net device one interface over both.
//!
//! The format is fixed per device by feature negotiation
//! (VIRTIO_F_RING_PACKED, §6) and chosen when the driver sets QueueReady.
//! Everything the callers do with a queue goes through this enum's methods:
//! pop a chain ([`Virtqueue::pop`] returns a [`Popped`] token and a
//! [`Chain`] walker), give chains back ([`Virtqueue::rewind_to`]), use them
//! ([`Virtqueue::add_used`]), publish ([`Virtqueue::publish_used`], whose
//! answer is the interrupt decision), and ask for or suppress driver
//! notifications. Each method forwards to the ring's own code, which holds
//! the ring's bounds checks; nothing here reads guest memory itself.
//!
//! A frame's path (the net device's transmit and receive) instead matches
//! on the format once and runs generic over [`Ring`], which both queue
//! types implement with the same code these methods forward to: it is
//! compiled once per format, each with its own chain walker ([`Walk`]),
//! so the per-frame steps neither ask the format again nor move the
//! either-format [`Chain`] between them.
//!
//! Buffers are used in the order they were popped, on both formats, so
//! the net device offers VIRTIO_F_IN_ORDER (see
//! [`crate::net::OFFERABLE_FEATURES`]); it never uses the batching that
//! feature allows (§2.7.9, §2.8.9: one used element for several buffers).
// Guest input is parsed below this module: nothing here may panic either.
#![deny(clippy::indexing_slicing)]

use core::num::Wrapping;

use chroma_mem::GuestMemory;

use crate::packed::{PackedChain, PackedQueue, RingPosition};
use crate::queue::{Descriptor, DescriptorChain, QueueLayout, SplitQueue};
use crate::VirtioError;

/// A split or a packed virtqueue.
// The split queue is the larger (its batches of heads and used elements,
// `SplitQueue::pop`, `SplitQueue::add_used`): each queue of a device has
// one slot either way, and a box would allocate when a queue goes live.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Virtqueue {
    /// A split virtqueue (§2.7): descriptor table, avail ring, used ring.
    Split(SplitQueue),
    /// A packed virtqueue (§2.8): one descriptor ring and two event
    /// suppression structures.
    Packed(PackedQueue),
}

impl Default for Virtqueue {
    fn default() -> Self {
        Virtqueue::Split(SplitQueue::new())
    }
}

/// Where the device stood in the driver's ring before a pop: a split
/// queue's `next_avail`, or a packed queue's next slot and wrap counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AvailMark {
    Split(Wrapping<u16>),
    Packed(RingPosition),
}

/// A chain taken by [`Virtqueue::pop`]: what [`Virtqueue::add_used`] and
/// [`Virtqueue::rewind_to`] need of it. Small and `Copy`, so a caller can
/// keep many (a frame's receive chains) on the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Popped {
    /// The id echoed in its used element: a split chain's head index, a
    /// packed chain's Buffer ID.
    pub id: u16,
    /// Ring slots it spans (packed; 1 for a split chain).
    slots: u16,
    mark: AvailMark,
}

impl Popped {
    /// A placeholder for arrays of tokens; never passed back to a queue.
    pub const EMPTY: Self = Self {
        id: 0,
        slots: 0,
        mark: AvailMark::Split(Wrapping(0)),
    };
}

/// Walks one popped chain, in either format.
#[derive(Clone, Debug)]
pub enum Chain {
    /// A split chain (descriptor table, possibly indirect).
    Split(DescriptorChain),
    /// A packed chain (ring slots, or an indirect table).
    Packed(PackedChain),
}

impl Chain {
    /// Whether the chain has no buffer left to walk.
    #[inline(always)]
    pub fn ended(&self) -> bool {
        match self {
            Chain::Split(c) => c.ended(),
            Chain::Packed(c) => c.ended(),
        }
    }

    /// The next buffer of the chain, `None` at its end; an error is fatal
    /// for the queue.
    #[inline(always)]
    pub fn next_descriptor<M: GuestMemory>(
        &mut self,
        mem: &M,
    ) -> Result<Option<Descriptor>, VirtioError> {
        match self {
            Chain::Split(c) => c.next_descriptor(mem),
            Chain::Packed(c) => c.next_descriptor(mem),
        }
    }
}

/// One ring format's walker over a popped chain: a split chain, a packed
/// chain, or [`Chain`] (either).
pub trait Walk {
    /// The next buffer of the chain, `None` at its end; an error is fatal
    /// for the queue.
    fn next_descriptor<M: GuestMemory>(
        &mut self,
        mem: &M,
    ) -> Result<Option<Descriptor>, VirtioError>;
    /// Whether the chain has no buffer left to walk.
    fn ended(&self) -> bool;
}

impl Walk for Chain {
    #[inline(always)]
    fn next_descriptor<M: GuestMemory>(
        &mut self,
        mem: &M,
    ) -> Result<Option<Descriptor>, VirtioError> {
        Chain::next_descriptor(self, mem)
    }
    #[inline(always)]
    fn ended(&self) -> bool {
        Chain::ended(self)
    }
}

impl Walk for DescriptorChain {
    #[inline(always)]
    fn next_descriptor<M: GuestMemory>(
        &mut self,
        mem: &M,
    ) -> Result<Option<Descriptor>, VirtioError> {
        DescriptorChain::next_descriptor(self, mem)
    }
    #[inline(always)]
    fn ended(&self) -> bool {
        DescriptorChain::ended(self)
    }
}

impl Walk for PackedChain {
    #[inline(always)]
    fn next_descriptor<M: GuestMemory>(
        &mut self,
        mem: &M,
    ) -> Result<Option<Descriptor>, VirtioError> {
        PackedChain::next_descriptor(self, mem)
    }
    #[inline(always)]
    fn ended(&self) -> bool {
        PackedChain::ended(self)
    }
}

/// One ring format's device side, as a frame's path through a queue uses
/// it: pop, give back, use, ask for a notification. [`SplitQueue`] and
/// [`PackedQueue`] implement it; a path generic over it (the caller
/// matches on [`Virtqueue`] once) is compiled once per format, with that
/// format's own walker, rather than asking [`Virtqueue`] which format it
/// is at every step and moving the either-format [`Chain`] (the size of
/// the larger, packed, walker) from step to step.
pub trait Ring {
    /// The walker over a popped chain.
    type Chain: Walk;
    /// `queue` as this format, if it is one.
    fn of(queue: &mut Virtqueue) -> Option<&mut Self>;
    /// [`Virtqueue::pop`].
    fn pop_chain<M: GuestMemory>(
        &mut self,
        mem: &M,
    ) -> Result<Option<(Popped, Self::Chain)>, VirtioError>;
    /// [`Virtqueue::rewind_to`].
    fn rewind_to_popped(&mut self, first: &Popped);
    /// [`Virtqueue::add_used`].
    fn add_used_popped<M: GuestMemory>(
        &mut self,
        mem: &M,
        chain: &Popped,
        len: u32,
    ) -> Result<(), VirtioError>;
    /// [`Virtqueue::enable_notification`].
    fn arm_notification<M: GuestMemory>(&mut self, mem: &M) -> Result<bool, VirtioError>;
}

impl Ring for SplitQueue {
    type Chain = DescriptorChain;
    #[inline(always)]
    fn of(queue: &mut Virtqueue) -> Option<&mut Self> {
        match queue {
            Virtqueue::Split(q) => Some(q),
            Virtqueue::Packed(_) => None,
        }
    }
    #[inline(always)]
    fn pop_chain<M: GuestMemory>(
        &mut self,
        mem: &M,
    ) -> Result<Option<(Popped, DescriptorChain)>, VirtioError> {
        let mark = AvailMark::Split(self.next_avail());
        Ok(self.pop(mem)?.map(|head| {
            let popped = Popped {
                id: head,
                slots: 1,
                mark,
            };
            (popped, self.chain(head))
        }))
    }
    #[inline(always)]
    fn rewind_to_popped(&mut self, first: &Popped) {
        // A token of the other format never came from this queue:
        // nothing was popped from it, nothing to give back.
        if let AvailMark::Split(mark) = first.mark {
            self.rewind((self.next_avail() - mark).0);
        }
    }
    #[inline(always)]
    fn add_used_popped<M: GuestMemory>(
        &mut self,
        mem: &M,
        chain: &Popped,
        len: u32,
    ) -> Result<(), VirtioError> {
        self.add_used(mem, chain.id, len)
    }
    #[inline(always)]
    fn arm_notification<M: GuestMemory>(&mut self, mem: &M) -> Result<bool, VirtioError> {
        self.enable_notification(mem)
    }
}

impl Ring for PackedQueue {
    type Chain = PackedChain;
    #[inline(always)]
    fn of(queue: &mut Virtqueue) -> Option<&mut Self> {
        match queue {
            Virtqueue::Packed(q) => Some(q),
            Virtqueue::Split(_) => None,
        }
    }
    #[inline(always)]
    fn pop_chain<M: GuestMemory>(
        &mut self,
        mem: &M,
    ) -> Result<Option<(Popped, PackedChain)>, VirtioError> {
        Ok(self.pop(mem)?.map(|head| {
            let popped = Popped {
                id: head.id,
                slots: head.slots,
                mark: AvailMark::Packed(head.start),
            };
            (popped, self.chain(&head))
        }))
    }
    #[inline(always)]
    fn rewind_to_popped(&mut self, first: &Popped) {
        if let AvailMark::Packed(position) = first.mark {
            self.rewind_to(position);
        }
    }
    #[inline(always)]
    fn add_used_popped<M: GuestMemory>(
        &mut self,
        mem: &M,
        chain: &Popped,
        len: u32,
    ) -> Result<(), VirtioError> {
        self.add_used_slots(mem, chain.id, chain.slots, len)
    }
    #[inline(always)]
    fn arm_notification<M: GuestMemory>(&mut self, mem: &M) -> Result<bool, VirtioError> {
        self.enable_notification(mem)
    }
}

impl Virtqueue {
    /// Validates `layout` for the format (`packed`: §2.8.10.1, otherwise
    /// §2.7) and makes the queue live. On error the queue is not ready.
    pub fn activate<M: GuestMemory>(
        &mut self,
        packed: bool,
        layout: QueueLayout,
        max_size: u16,
        event_idx: bool,
        indirect: bool,
        mem: &M,
    ) -> Result<(), VirtioError> {
        if packed {
            let mut q = PackedQueue::new();
            let result = q.activate(layout, max_size, event_idx, indirect, mem);
            *self = Virtqueue::Packed(q);
            result
        } else {
            let mut q = SplitQueue::new();
            let result = q.activate(layout, max_size, event_idx, indirect, mem);
            *self = Virtqueue::Split(q);
            result
        }
    }

    /// Stops the queue (QueueReady = 0 or device reset).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Whether the queue is live.
    #[inline(always)]
    pub fn ready(&self) -> bool {
        match self {
            Virtqueue::Split(q) => q.ready(),
            Virtqueue::Packed(q) => q.ready(),
        }
    }

    /// Whether this is a packed ring.
    pub fn is_packed(&self) -> bool {
        matches!(self, Virtqueue::Packed(_))
    }

    /// The layout it was activated with: `avail` is the driver area (the
    /// avail ring, or the driver event suppression structure), `used` the
    /// device area (the used ring, or the device event suppression
    /// structure).
    pub fn layout(&self) -> QueueLayout {
        match self {
            Virtqueue::Split(q) => q.layout(),
            Virtqueue::Packed(q) => q.layout(),
        }
    }

    /// Whether the queue negotiated VIRTIO_F_EVENT_IDX.
    pub fn event_idx(&self) -> bool {
        match self {
            Virtqueue::Split(q) => q.event_idx(),
            Virtqueue::Packed(q) => q.event_idx(),
        }
    }

    /// Buffers used so far, modulo 2^16: a split queue's next `used.idx`;
    /// for a packed queue a running count of used buffers (the packed ring
    /// has no used index, §2.8).
    #[inline(always)]
    pub fn next_used(&self) -> Wrapping<u16> {
        match self {
            Virtqueue::Split(q) => q.next_used(),
            Virtqueue::Packed(q) => q.used_count(),
        }
    }

    /// Whether used elements were added since the last publish.
    #[inline(always)]
    pub fn has_unpublished_used(&self) -> bool {
        match self {
            Virtqueue::Split(q) => q.has_unpublished_used(),
            Virtqueue::Packed(q) => q.has_unpublished_used(),
        }
    }

    /// Whether the driver made a chain available that the device has not
    /// taken.
    #[inline(always)]
    pub fn has_available<M: GuestMemory>(&mut self, mem: &M) -> Result<bool, VirtioError> {
        match self {
            Virtqueue::Split(q) => q.has_available(mem),
            Virtqueue::Packed(q) => q.has_available(mem),
        }
    }

    /// Whether the driver will notify before its next chain (split rings:
    /// [`SplitQueue::quiet`]; a packed ring says `false`, so it is polled).
    pub fn quiet(&self) -> bool {
        match self {
            Virtqueue::Split(q) => q.quiet(),
            Virtqueue::Packed(_) => false,
        }
    }

    /// The driver notified this queue.
    pub fn notified(&mut self) {
        if let Virtqueue::Split(q) = self {
            q.notified();
        }
    }

    /// Takes the next available chain, or `None` if there is none: its
    /// token and a walker over its buffers. A packed chain must be walked
    /// to its end before the next [`Self::add_used`] (a used descriptor may
    /// overwrite its slots).
    #[inline(always)]
    pub fn pop<M: GuestMemory>(&mut self, mem: &M) -> Result<Option<(Popped, Chain)>, VirtioError> {
        match self {
            Virtqueue::Split(q) => Ok(q.pop_chain(mem)?.map(|(p, c)| (p, Chain::Split(c)))),
            Virtqueue::Packed(q) => Ok(q.pop_chain(mem)?.map(|(p, c)| (p, Chain::Packed(c)))),
        }
    }

    /// Gives back `first` and every chain popped after it, none of them
    /// used: a later [`Self::pop`] returns them again.
    #[inline(always)]
    pub fn rewind_to(&mut self, first: &Popped) {
        match self {
            Virtqueue::Split(q) => q.rewind_to_popped(first),
            Virtqueue::Packed(q) => q.rewind_to_popped(first),
        }
    }

    /// Returns `chain` to the driver with `len` bytes written; visible at
    /// the next [`Self::publish_used`].
    #[inline(always)]
    pub fn add_used<M: GuestMemory>(
        &mut self,
        mem: &M,
        chain: &Popped,
        len: u32,
    ) -> Result<(), VirtioError> {
        match self {
            Virtqueue::Split(q) => q.add_used_popped(mem, chain, len),
            Virtqueue::Packed(q) => q.add_used_popped(mem, chain, len),
        }
    }

    /// Publishes the used elements added so far (Release) and says whether
    /// the driver asked to be interrupted (§2.7.10, §2.8.10).
    #[inline(always)]
    pub fn publish_used<M: GuestMemory>(&mut self, mem: &M) -> Result<bool, VirtioError> {
        match self {
            Virtqueue::Split(q) => q.publish_used(mem),
            Virtqueue::Packed(q) => q.publish_used(mem),
        }
    }

    /// Asks the driver to notify at its next available chain, then looks
    /// again after a full barrier; returns whether one is available now.
    #[inline(always)]
    pub fn enable_notification<M: GuestMemory>(&mut self, mem: &M) -> Result<bool, VirtioError> {
        match self {
            Virtqueue::Split(q) => q.enable_notification(mem),
            Virtqueue::Packed(q) => q.enable_notification(mem),
        }
    }

    /// Asks the driver not to notify until `ahead` more chains (split) or
    /// slots (packed) are available (EVENT_IDX), the device polling
    /// meanwhile; returns whether one is available now.
    #[inline(always)]
    pub fn suppress_notification<M: GuestMemory>(
        &mut self,
        mem: &M,
        ahead: u16,
    ) -> Result<bool, VirtioError> {
        match self {
            Virtqueue::Split(q) => q.suppress_notification(mem, ahead),
            Virtqueue::Packed(q) => q.suppress_notification(mem, ahead),
        }
    }
}
