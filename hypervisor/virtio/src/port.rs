//! What the switch needs from a port: a virtio-net device, or later the uplink NIC.

use core::hint::black_box;

/// Largest Ethernet frame a port carries: 1500 bytes of payload, a 14-byte
/// header and one 802.1Q tag (no FCS). A larger frame on the switch is a
/// GSO frame ([`crate::gso`]), held in its sender's memory, never copied.
pub const MAX_FRAME_LEN: usize = 1518;
/// Smallest frame the switch forwards: an Ethernet header.
pub const MIN_FRAME_LEN: usize = 14;

/// virtio-net header flag: the checksum from `csum_start` is still to be done (§5.1.6).
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// virtio-net header flag: the checksum was already validated (§5.1.6).
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
/// virtio-net header `gso_type`: not a GSO frame.
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;

/// Bytes a port stores as a TX frame's Ethernet header, in one store:
/// the header and the frame's two bytes after it (`read_headers` in
/// `crate::net`).
pub(crate) const ETH_BLOCK: usize = 16;

/// The offload part of a virtio-net header (§5.1.6), carried with a frame
/// through the switch. `num_buffers` is per delivery, so it is not here.
///
/// Laid out as the header is on the wire (`repr(C)`, little-endian on
/// the targets): LLVM then moves the first eight bytes as one word on
/// both sides, parsing ([`NetHeader::from_bytes`]) and making the bytes
/// ([`NetHeader::to_bytes`]), so a load of the header is forwarded from
/// the store that wrote it. In Rust's own order the fields went into
/// memory one by one and came out as one word: a store-forwarding stall,
/// which waits for every older store to drain (on the hot path the last
/// frame's copy into a receive buffer: measured, most of `push_payload`'s
/// time). Aligned to 8: the word never straddles a cache line (where a
/// store does not forward either).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(8))]
pub struct NetHeader {
    /// NEEDS_CSUM / DATA_VALID.
    pub flags: u8,
    /// GSO type (`VIRTIO_NET_HDR_GSO_*`, [`crate::gso`]).
    pub gso_type: u8,
    /// Length of the headers to copy into each segment.
    pub hdr_len: u16,
    /// Segment size for GSO.
    pub gso_size: u16,
    /// Where checksumming starts (NEEDS_CSUM).
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start` (NEEDS_CSUM).
    pub csum_offset: u16,
}

/// Byte size of the VERSION_1 virtio-net header, `num_buffers` included.
pub const NET_HEADER_LEN: usize = 12;

impl NetHeader {
    /// Parses the first 10 bytes of a little-endian virtio-net header.
    ///
    /// Read as two words, the first eight bytes and the next four, then
    /// split. Field by field, LLVM merges neighbouring fields into loads
    /// that straddle the stores the header was written with (8 and 4
    /// bytes, as a 12-byte copy makes them), and so it does with the
    /// words unless they are opaque to it ([`black_box`]: each goes
    /// through a register and a stack slot of its own width): a
    /// store-forwarding stall, which waits for every older store to drain,
    /// on the hot path a whole frame's copy into a receive buffer (measured:
    /// most of `poll_tx`'s time).
    ///
    /// [`black_box`]: core::hint::black_box
    #[inline]
    pub fn from_bytes(b: &[u8; NET_HEADER_LEN]) -> Self {
        let [b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11] = *b;
        let lo = black_box(u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]));
        let hi = black_box(u32::from_le_bytes([b8, b9, b10, b11]));
        // Truncations pick each field out of its word.
        #[allow(clippy::cast_possible_truncation)]
        Self {
            flags: lo as u8,
            gso_type: (lo >> 8) as u8,
            hdr_len: (lo >> 16) as u16,
            gso_size: (lo >> 32) as u16,
            csum_start: (lo >> 48) as u16,
            csum_offset: hi as u16,
        }
    }

    /// The 12-byte header with `num_buffers`.
    #[inline]
    pub fn to_bytes(&self, num_buffers: u16) -> [u8; NET_HEADER_LEN] {
        self.wire_bytes(num_buffers, true)
    }

    /// [`NetHeader::to_bytes`], `flags` zero unless `keep_flags`.
    ///
    /// Made as two words, the first eight bytes and the last four, each
    /// opaque to LLVM ([`black_box`]) so that it stores each whole: the
    /// bytes are read back as those two words (`GuestMemory::write_in_buffer`),
    /// and a load straddling two stores does not forward (it waits for
    /// every older store to drain). The first word's fields are loaded
    /// from inside the one store the port wrote them with (see the type's
    /// layout); field by field, LLVM grouped those loads differently (two
    /// bytes, then eight), straddling it.
    #[inline]
    pub(crate) fn wire_bytes(&self, num_buffers: u16, keep_flags: bool) -> [u8; NET_HEADER_LEN] {
        // All five fields, then `flags` cleared if need be: built so, the
        // word is one 8-byte load of them (with `flags` chosen inside it,
        // LLVM loaded each field on its own, six loads and their shifts).
        let all = u64::from(self.flags)
            | u64::from(self.gso_type) << 8
            | u64::from(self.hdr_len) << 16
            | u64::from(self.gso_size) << 32
            | u64::from(self.csum_start) << 48;
        let lo = black_box(if keep_flags { all } else { all & !0xff });
        let hi = black_box(u32::from(self.csum_offset) | u32::from(num_buffers) << 16);
        let [b0, b1, b2, b3, b4, b5, b6, b7] = lo.to_le_bytes();
        let [b8, b9, b10, b11] = hi.to_le_bytes();
        [b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11]
    }
}

/// Why a port dropped a frame.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The chain was shorter than the virtio-net header.
    ShortHeader,
    /// The frame was shorter than an Ethernet header.
    Runt,
    /// The frame was longer than [`MAX_FRAME_LEN`].
    TooLong,
    /// A device-writable descriptor in a transmit chain, or a readable one
    /// after a writable one.
    WrongDirection,
    /// A zero-length descriptor.
    ZeroLength,
    /// A buffer outside the VM's RAM, or wrapping.
    BadAddress,
    /// The header asked for an offload that was not negotiated, or its
    /// checksum offsets lie outside the frame.
    BadHeader,
    /// The receive chain(s) were too small for the frame.
    BufferTooSmall,
    /// A frame longer than [`MAX_FRAME_LEN`] (GSO) came in more buffers
    /// than [`crate::net::MAX_HELD_SEGMENTS`], so it can be neither held in
    /// place nor copied.
    TooManyBuffers,
    /// A GSO frame was refused: the reason.
    Gso(crate::gso::GsoError),
    /// The receive chain(s) took more than
    /// [`crate::net::MAX_RX_DESCRIPTORS`] descriptors before the frame fit.
    TooManyDescriptors,
    /// The port is not live (not DRIVER_OK, reset pending, or down).
    PortDown,
    /// The queue hit a fatal error: the device now needs a reset.
    QueueFailed,
}

impl core::fmt::Display for DropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DropReason::ShortHeader => "chain shorter than the virtio-net header",
            DropReason::Runt => "frame shorter than an Ethernet header",
            DropReason::TooLong => "frame longer than the largest frame",
            DropReason::WrongDirection => "descriptor in the wrong direction for its queue",
            DropReason::ZeroLength => "zero-length descriptor",
            DropReason::BadAddress => "buffer outside the VM's RAM, or wrapping",
            DropReason::BadHeader => {
                "offload not negotiated, or checksum offsets outside the frame"
            }
            DropReason::BufferTooSmall => "receive buffers too small for the frame",
            DropReason::TooManyBuffers => "GSO frame in too many buffers",
            DropReason::Gso(reason) => return write!(f, "GSO frame refused: {reason}"),
            DropReason::TooManyDescriptors => "frame needed too many receive descriptors",
            DropReason::PortDown => "port not live",
            DropReason::QueueFailed => "queue failed: the device needs a reset",
        })
    }
}

/// Result of asking a port for its guest's next transmitted frame.
///
/// After `Frame` or `Held` the port may keep the frame's buffers until the
/// switch is done with it: the switch then calls [`Port::release_tx`] (the
/// frame is consumed) or [`Port::unpoll_tx`] (the frame goes back, to be
/// polled again), exactly once, before it polls the port again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxPoll {
    /// Nothing to send.
    Empty,
    /// A frame of `len` bytes is in the caller's buffer.
    Frame {
        /// Frame length in bytes: the frame's real length even when it is
        /// outside [`MIN_FRAME_LEN`]`..=`[`MAX_FRAME_LEN`] (only what fits
        /// was copied); the switch then drops it whole.
        len: usize,
        /// Its offload header.
        header: NetHeader,
    },
    /// A frame of `len` bytes (`MIN_FRAME_LEN..=MAX_FRAME_LEN`, or up to
    /// [`crate::gso::MAX_GSO_FRAME_LEN`] for a GSO frame, whose headers the
    /// port checked) stays in the port's memory; only its Ethernet header (the first
    /// [`MIN_FRAME_LEN`] bytes) is in the caller's buffer. The switch
    /// delivers it with [`Port::push_rx_held`] or fetches the rest with
    /// [`Port::read_held`].
    Held {
        /// Frame length in bytes.
        len: usize,
        /// Its offload header.
        header: NetHeader,
    },
    /// A frame was taken and dropped (its buffers were returned).
    Dropped(DropReason),
}

/// Result of delivering a frame to a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxPush {
    /// The frame is in the guest's buffers.
    Delivered,
    /// No receive buffer now: keep the frame and retry later.
    NoBuffers,
    /// The frame was dropped.
    Dropped(DropReason),
}

/// One port of the switch. A virtio-net device bound to its VM's memory
/// ([`crate::net::NetPort`]) is one; the uplink NIC driver will be another.
/// The switch is generic over this trait (no `dyn`, STYLE L1): a caller
/// with several kinds of port wraps them in an enum.
pub trait Port {
    /// Takes the guest's next transmitted frame: copied into `frame`, or
    /// held in place with its Ethernet header copied ([`TxPoll`]).
    fn poll_tx(&mut self, frame: &mut [u8; MAX_FRAME_LEN]) -> TxPoll;
    /// Delivers `frame` with `header`.
    fn push_rx(&mut self, header: &NetHeader, frame: &[u8]) -> RxPush;
    /// Delivers the frame `src` holds (its last poll returned
    /// [`TxPoll::Held`]), `eth` being its Ethernet header as the switch read
    /// it: the header goes from `eth`, the rest straight from `src`'s
    /// memory, one copy. `None` if this pair of ports cannot (the switch
    /// then copies the frame with [`Port::read_held`] and uses
    /// [`Port::push_rx`]). The default cannot.
    fn push_rx_held(
        &mut self,
        _header: &NetHeader,
        _eth: &[u8; MIN_FRAME_LEN],
        _src: &Self,
    ) -> Option<RxPush>
    where
        Self: Sized,
    {
        None
    }
    /// Copies bytes `MIN_FRAME_LEN..frame.len()` of the held frame into the
    /// same range of `frame`. `false` if they could not be read (the frame
    /// is then dropped). The default holds nothing.
    fn read_held(&mut self, _frame: &mut [u8]) -> bool {
        false
    }
    /// The switch is done with the frame of the last poll: return its
    /// buffers to the guest. Does nothing if the port kept nothing.
    fn release_tx(&mut self) {}
    /// Copies `buf.len()` bytes of the held frame from frame offset
    /// `offset` into `buf` (the switch cuts a held GSO frame into segments
    /// with it). `false` if they could not be read. The default holds
    /// nothing.
    fn read_held_at(&mut self, _offset: usize, _buf: &mut [u8]) -> bool {
        false
    }
    /// Whether the port takes a GSO frame of `gso_type` whole (virtio:
    /// the matching GUEST_TSO*, and GUEST_ECN for GSO_ECN). Otherwise the
    /// switch cuts it into segments. The default does not.
    fn accepts_gso(&self, _gso_type: u8) -> bool {
        false
    }
    /// Gives the frame of the last poll back untouched, so that the next
    /// poll returns it again (backpressure: its destination cannot take it
    /// now). `false` if the port cannot (it kept nothing): the switch then
    /// must dispose of the frame itself.
    fn unpoll_tx(&mut self) -> bool {
        false
    }
    /// Whether the port takes frames whose checksum is still to be done
    /// (virtio: GUEST_CSUM negotiated). Otherwise the switch completes it.
    fn accepts_partial_checksum(&self) -> bool;
    /// Ends a run: publishes completions and raises interrupts (the switch
    /// calls it once per port per run).
    fn flush(&mut self);
}

/// A borrowed port (`&mut dyn Port` included) delivers held frames by
/// copy: [`Port::push_rx_held`] needs both ports of one sized type.
impl<P: Port + ?Sized> Port for &mut P {
    fn poll_tx(&mut self, frame: &mut [u8; MAX_FRAME_LEN]) -> TxPoll {
        (**self).poll_tx(frame)
    }
    fn push_rx(&mut self, header: &NetHeader, frame: &[u8]) -> RxPush {
        (**self).push_rx(header, frame)
    }
    fn read_held(&mut self, frame: &mut [u8]) -> bool {
        (**self).read_held(frame)
    }
    fn read_held_at(&mut self, offset: usize, buf: &mut [u8]) -> bool {
        (**self).read_held_at(offset, buf)
    }
    fn accepts_gso(&self, gso_type: u8) -> bool {
        (**self).accepts_gso(gso_type)
    }
    fn release_tx(&mut self) {
        (**self).release_tx()
    }
    fn unpoll_tx(&mut self) -> bool {
        (**self).unpoll_tx()
    }
    fn accepts_partial_checksum(&self) -> bool {
        (**self).accepts_partial_checksum()
    }
    fn flush(&mut self) {
        (**self).flush()
    }
}
