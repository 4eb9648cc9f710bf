//! TCP segmentation offload between ports (virtio 1.2 §5.1.6.2, §5.1.6.4):
//! checking a GSO frame's headers, and cutting it into MTU-sized segments
//! in software for a port that cannot take it whole.
//!
//! A driver that negotiated VIRTIO_NET_F_HOST_TSO4/6 hands the device one
//! frame of up to 64 KiB of TCP payload with `gso_type` and `gso_size`
//! (the MSS) in its virtio-net header. A receiver that negotiated the
//! matching VIRTIO_NET_F_GUEST_TSO4/6 takes it as it is (the switch passes
//! it through); any other port (a driver without GUEST_TSO, the uplink)
//! gets the segments a NIC would have put on the wire: [`GsoFrame::segment`]
//! writes each one's headers, as Linux's `tcp_gso_segment` does.
//!
//! Nothing here trusts the guest: [`parse`] finds the headers itself and
//! checks them against the frame's length, and uses `hdr_len` only as the
//! hint §5.1.6.2.2 says it is (it must lie inside the frame).
// Guest buffers are parsed here: an index or slice must not panic (issue 10).
#![deny(clippy::indexing_slicing)]

use crate::checksum;
use crate::port::{NetHeader, MAX_FRAME_LEN, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE};

/// `gso_type`: TCP over IPv4 (§5.1.6).
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// `gso_type`: UDP fragmentation (not offered).
pub const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
/// `gso_type`: TCP over IPv6 (§5.1.6).
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation (not offered).
pub const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: the TCP header has CWR set (ECN, §5.1.6.2).
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;
const ETH_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const IPV6_HEADER_LEN: usize = 40;
/// Offset of the checksum field in a TCP header.
pub const TCP_CHECKSUM_OFFSET: u16 = 16;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Largest GSO frame: an IPv6 payload of 65535 bytes (the most its length
/// field says) behind a fixed IPv6 header, an Ethernet header and one
/// 802.1Q tag. An IPv4 frame is smaller (its total length is at most 65535).
pub const MAX_GSO_FRAME_LEN: usize = ETH_HEADER_LEN + VLAN_TAG_LEN + IPV6_HEADER_LEN + 65535;

/// Most header bytes a GSO frame has: Ethernet with one 802.1Q tag, an
/// IPv4 header with options (60), a TCP header with options (60).
pub const MAX_GSO_HEADERS_LEN: usize = ETH_HEADER_LEN + VLAN_TAG_LEN + 60 + 60;

/// Most segments one GSO frame may be cut into. Linux's TCP sends at most
/// 64 KiB per GSO frame; 128 segments allow an MSS down to 512 bytes (the
/// classic 536 of a peer without the MSS option) for a full one. A smaller
/// `gso_size` with that much data is refused: without the bound one
/// transmitted chain could make the switch build 65535 frames.
pub const MAX_GSO_SEGMENTS: usize = 128;

/// Why a GSO frame was refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsoError {
    /// gso_type needs a feature the driver did not negotiate (HOST_TSO4/6, HOST_ECN)
    NotNegotiated,
    /// gso_type is not TCPv4 or TCPv6 (UDP and unknown types are not offered)
    UnknownType,
    /// gso_size is zero
    ZeroSize,
    /// hdr_len lies past the end of the frame
    HeaderLengthPastFrame,
    /// the frame is not IPv4/IPv6 as gso_type says, or its IP header is malformed
    BadIpHeader,
    /// an IPv4 fragment (MF set or a fragment offset)
    Fragment,
    /// the IP length fields disagree with the frame's length
    LengthMismatch,
    /// the IP payload is not TCP (or IPv6 extension headers come first)
    NotTcp,
    /// the TCP data offset is below 5 or runs past the frame
    BadTcpHeader,
    /// there is no TCP payload to segment
    NoPayload,
    /// gso_size is so small that the frame would make too many segments
    TooManySegments,
    /// headers plus gso_size exceed the largest frame
    SegmentTooLong,
    /// NEEDS_CSUM is not set, or csum_start/csum_offset do not name the TCP checksum
    ChecksumNotPartial,
    /// the frame is in more buffers than the device holds in place
    TooManyBuffers,
}

impl core::fmt::Display for GsoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            GsoError::NotNegotiated => "GSO type not negotiated",
            GsoError::UnknownType => "GSO type not TCPv4/TCPv6",
            GsoError::ZeroSize => "GSO size zero",
            GsoError::HeaderLengthPastFrame => "hdr_len past the end of the frame",
            GsoError::BadIpHeader => "IP header malformed or not the GSO type's",
            GsoError::Fragment => "IPv4 fragment",
            GsoError::LengthMismatch => "IP length disagrees with the frame",
            GsoError::NotTcp => "not TCP",
            GsoError::BadTcpHeader => "TCP data offset malformed",
            GsoError::NoPayload => "no TCP payload",
            GsoError::TooManySegments => "GSO size too small: too many segments",
            GsoError::SegmentTooLong => "headers plus GSO size exceed the largest frame",
            GsoError::ChecksumNotPartial => "GSO frame without a partial TCP checksum",
            GsoError::TooManyBuffers => "GSO frame in too many buffers",
        })
    }
}

/// A checked GSO frame: where its headers are and how it is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GsoFrame {
    /// IPv6 (else IPv4).
    pub ipv6: bool,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the TCP header.
    pub l4: usize,
    /// Length of all headers: the offset of the TCP payload.
    pub headers_len: usize,
    /// Length of the whole frame.
    pub frame_len: usize,
    /// Payload bytes per segment (`gso_size`).
    pub mss: usize,
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let pair = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*pair.first()?, *pair.get(1)?]))
}

fn byte(bytes: &[u8], at: usize) -> Option<u8> {
    bytes.get(at).copied()
}

fn put_be16(bytes: &mut [u8], at: usize, value: u16) -> Option<()> {
    bytes
        .get_mut(at..at.checked_add(2)?)?
        .copy_from_slice(&value.to_be_bytes());
    Some(())
}

/// Checks a GSO frame of `frame_len` bytes whose virtio-net header is
/// `header` and whose first bytes are `headers` (at least
/// `min(frame_len, MAX_GSO_HEADERS_LEN)` of them). Negotiation is the
/// caller's ([`crate::net`]); this checks the frame itself.
///
/// §5.1.6.2.2: the device "MUST NOT rely on hdr_len to be correct", so the
/// headers are found by parsing; `hdr_len` only has to lie inside the
/// frame. The frame must carry a partial TCP checksum (NEEDS_CSUM at the
/// TCP checksum field): a receiver given a GSO frame must get NEEDS_CSUM
/// (§5.1.6.4.1), which only the sender's pseudo-header sum makes true.
pub fn parse(header: &NetHeader, headers: &[u8], frame_len: usize) -> Result<GsoFrame, GsoError> {
    let ipv6 = match header.gso_type & !VIRTIO_NET_HDR_GSO_ECN {
        VIRTIO_NET_HDR_GSO_TCPV4 => false,
        VIRTIO_NET_HDR_GSO_TCPV6 => true,
        _ => return Err(GsoError::UnknownType),
    };
    if header.gso_size == 0 {
        return Err(GsoError::ZeroSize);
    }
    if usize::from(header.hdr_len) > frame_len {
        return Err(GsoError::HeaderLengthPastFrame);
    }
    let headers = headers.get(..frame_len.min(headers.len())).unwrap_or(&[]);
    let bad_ip = GsoError::BadIpHeader;
    // Ethernet, then at most one 802.1Q tag.
    let mut l3 = ETH_HEADER_LEN;
    let mut ethertype = be16(headers, 12).ok_or(bad_ip)?;
    if ethertype == ETHERTYPE_VLAN {
        ethertype = be16(headers, 16).ok_or(bad_ip)?;
        l3 += VLAN_TAG_LEN;
    }
    let l4 = if ipv6 {
        if ethertype != ETHERTYPE_IPV6 || byte(headers, l3).ok_or(bad_ip)? >> 4 != 6 {
            return Err(bad_ip);
        }
        // No extension headers: the next header must be TCP.
        if byte(headers, l3 + 6).ok_or(bad_ip)? != IPPROTO_TCP {
            return Err(GsoError::NotTcp);
        }
        let payload_len = usize::from(be16(headers, l3 + 4).ok_or(bad_ip)?);
        if l3 + IPV6_HEADER_LEN + payload_len != frame_len {
            return Err(GsoError::LengthMismatch);
        }
        l3 + IPV6_HEADER_LEN
    } else {
        let version_ihl = byte(headers, l3).ok_or(bad_ip)?;
        let ihl = usize::from(version_ihl & 0xf) * 4;
        if ethertype != ETHERTYPE_IPV4 || version_ihl >> 4 != 4 || ihl < 20 {
            return Err(bad_ip);
        }
        if headers.len() < l3 + ihl {
            return Err(bad_ip);
        }
        // MF, or a fragment offset: not a whole TCP segment.
        if be16(headers, l3 + 6).ok_or(bad_ip)? & 0x3fff != 0 {
            return Err(GsoError::Fragment);
        }
        if byte(headers, l3 + 9).ok_or(bad_ip)? != IPPROTO_TCP {
            return Err(GsoError::NotTcp);
        }
        let total_len = usize::from(be16(headers, l3 + 2).ok_or(bad_ip)?);
        if total_len < ihl || l3 + total_len != frame_len {
            return Err(GsoError::LengthMismatch);
        }
        l3 + ihl
    };
    let data_offset = usize::from(byte(headers, l4 + 12).ok_or(GsoError::BadTcpHeader)? >> 4) * 4;
    let headers_len = l4 + data_offset;
    if data_offset < 20 || headers_len > headers.len() {
        return Err(GsoError::BadTcpHeader);
    }
    if headers_len >= frame_len {
        return Err(GsoError::NoPayload);
    }
    if header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0
        || usize::from(header.csum_start) != l4
        || header.csum_offset != TCP_CHECKSUM_OFFSET
    {
        return Err(GsoError::ChecksumNotPartial);
    }
    let mss = usize::from(header.gso_size);
    if headers_len + mss > MAX_FRAME_LEN {
        return Err(GsoError::SegmentTooLong);
    }
    let frame = GsoFrame {
        ipv6,
        l3,
        l4,
        headers_len,
        frame_len,
        mss,
    };
    if frame.segment_count() > MAX_GSO_SEGMENTS {
        return Err(GsoError::TooManySegments);
    }
    Ok(frame)
}

impl GsoFrame {
    /// Bytes of TCP payload.
    pub fn payload_len(&self) -> usize {
        self.frame_len - self.headers_len
    }

    /// Segments the frame is cut into.
    pub fn segment_count(&self) -> usize {
        self.payload_len().div_ceil(self.mss)
    }

    /// Segment `index`'s payload: its offset in the frame and its length.
    pub fn segment_payload(&self, index: usize) -> (usize, usize) {
        let start = index.saturating_mul(self.mss).min(self.payload_len());
        let len = self.mss.min(self.payload_len() - start);
        (self.headers_len + start, len)
    }

    /// The virtio-net header a receiver gets with the whole frame
    /// (§5.1.6.4: NEEDS_CSUM at the TCP checksum, gso_size the MSS,
    /// hdr_len the headers found).
    pub fn receive_header(&self, sent: &NetHeader) -> NetHeader {
        NetHeader {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: sent.gso_type,
            hdr_len: u16::try_from(self.headers_len).unwrap_or(u16::MAX),
            gso_size: sent.gso_size,
            csum_start: u16::try_from(self.l4).unwrap_or(u16::MAX),
            csum_offset: TCP_CHECKSUM_OFFSET,
        }
    }

    /// Makes `segment` segment `index`: `segment` holds the frame's
    /// headers (`headers_len` bytes, as parsed) followed by that segment's
    /// payload. Fixes what differs per segment, as `tcp_gso_segment` does:
    /// the IPv4 total length, ID (+1 per segment) and header checksum, or
    /// the IPv6 payload length; the TCP sequence number; FIN and PSH on
    /// the last segment only, CWR on the first only; and the TCP checksum,
    /// left partial (the pseudo-header sum in place, NEEDS_CSUM) if
    /// `partial`, else complete. Returns the segment's virtio-net header,
    /// or `None` if `segment` is not such a segment.
    pub fn segment(&self, index: usize, segment: &mut [u8], partial: bool) -> Option<NetHeader> {
        let (_, payload_len) = self.segment_payload(index);
        if index >= self.segment_count() || segment.len() != self.headers_len + payload_len {
            return None;
        }
        let (l3, l4) = (self.l3, self.l4);
        let tcp_len = u16::try_from(segment.len() - l4).ok()?;
        let mut pseudo = 0u32;
        if self.ipv6 {
            put_be16(segment, l3 + 4, tcp_len)?;
            pseudo = checksum::ones_complement_sum(pseudo, segment.get(l3 + 8..l3 + 40)?);
        } else {
            let ip_len = u16::try_from(segment.len() - l3).ok()?;
            put_be16(segment, l3 + 2, ip_len)?;
            let id = be16(segment, l3 + 4)?.wrapping_add(u16::try_from(index).ok()?);
            put_be16(segment, l3 + 4, id)?;
            put_be16(segment, l3 + 10, 0)?;
            let ip_checksum =
                !checksum::fold(checksum::ones_complement_sum(0, segment.get(l3..l4)?));
            put_be16(segment, l3 + 10, ip_checksum)?;
            pseudo = checksum::ones_complement_sum(pseudo, segment.get(l3 + 12..l3 + 20)?);
        }
        pseudo += u32::from(IPPROTO_TCP) + u32::from(tcp_len);
        // Sequence number: the first payload byte's.
        let seq_at = l4 + 4;
        let seq = u32::from_be_bytes(segment.get(seq_at..seq_at + 4)?.try_into().ok()?);
        let seq = seq.wrapping_add(u32::try_from(index * self.mss).ok()?);
        segment
            .get_mut(seq_at..seq_at + 4)?
            .copy_from_slice(&seq.to_be_bytes());
        let flags = segment.get_mut(l4 + 13)?;
        if index + 1 != self.segment_count() {
            *flags &= !(TCP_FIN | TCP_PSH);
        }
        if index != 0 {
            *flags &= !TCP_CWR;
        }
        let field = l4 + usize::from(TCP_CHECKSUM_OFFSET);
        put_be16(segment, field, checksum::fold(pseudo))?;
        let l4_start = u16::try_from(l4).ok()?;
        if !partial {
            checksum::complete_partial(segment, l4_start, TCP_CHECKSUM_OFFSET).then_some(())?;
            return Some(NetHeader::default());
        }
        Some(NetHeader {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_NONE,
            hdr_len: 0,
            gso_size: 0,
            csum_start: l4_start,
            csum_offset: TCP_CHECKSUM_OFFSET,
        })
    }
}

/// Cuts a GSO frame held whole in `frame` into segments, calling `each`
/// with every segment and its virtio-net header (built in `scratch`). For
/// tests and the fuzzers; the switch builds segments from the sender's
/// memory instead. `false` if `frame` is not a valid GSO frame.
pub fn segment_all(
    header: &NetHeader,
    frame: &[u8],
    partial: bool,
    scratch: &mut [u8; MAX_FRAME_LEN],
    mut each: impl FnMut(&NetHeader, &[u8]),
) -> Result<usize, GsoError> {
    let gso = parse(header, frame, frame.len())?;
    for index in 0..gso.segment_count() {
        let (at, len) = gso.segment_payload(index);
        let seg_len = gso.headers_len + len;
        let (Some(out), Some(headers), Some(payload)) = (
            scratch.get_mut(..seg_len),
            frame.get(..gso.headers_len),
            frame.get(at..at + len),
        ) else {
            return Err(GsoError::SegmentTooLong);
        };
        let (h, p) = out.split_at_mut(gso.headers_len);
        h.copy_from_slice(headers);
        p.copy_from_slice(payload);
        let Some(seg_header) = gso.segment(index, out, partial) else {
            return Err(GsoError::SegmentTooLong);
        };
        each(&seg_header, out);
    }
    Ok(gso.segment_count())
}
