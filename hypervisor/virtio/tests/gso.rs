//! TCP segmentation offload (virtio 1.2 §5.1.6.2, §5.1.6.4): the software
//! segmentation against an independent checker (property tests, with
//! negative controls that feed the checker wrong segmentations), GSO frames
//! through the switch whole and cut, and malformed GSO frames dropped with
//! their reason while the other ports keep forwarding.
#![allow(clippy::cast_possible_truncation)]

use chroma_mem::vecmem::VecMemory;
use chroma_mem::{GuestMemory, GuestPhysAddr};
use chroma_virtio::gso::{
    self, GsoError, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP,
};
use chroma_virtio::mmio::feature;
use chroma_virtio::mock::{MockNetDriver, RingFormat};
use chroma_virtio::net::{net_feature, new_net_device, NetPort, VirtioNet, NET_FEATURES};
use chroma_virtio::port::{
    DropReason, NetHeader, Port, TxPoll, MAX_FRAME_LEN, NET_HEADER_LEN, VIRTIO_NET_HDR_F_NEEDS_CSUM,
};
use chroma_virtio::switch::{PortConfig, Switch, SwitchConfig};
use proptest::prelude::*;

const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const CWR: u8 = 0x80;

/// How a test GSO frame is built.
#[derive(Clone, Debug)]
struct Spec {
    ipv6: bool,
    vlan: bool,
    /// 32-bit words of IPv4 options.
    ip_option_words: usize,
    /// 32-bit words of TCP options.
    tcp_option_words: usize,
    payload: Vec<u8>,
    mss: u16,
    seq: u32,
    ip_id: u16,
    tcp_flags: u8,
    dst: [u8; 6],
    src: [u8; 6],
}

/// A built frame with its layout, as the test (not the code under test) knows it.
struct Built {
    header: NetHeader,
    frame: Vec<u8>,
    l3: usize,
    l4: usize,
    headers_len: usize,
}

/// Reference ones'-complement sum: plain u64 accumulation of big-endian
/// words, folded once at the end (not `chroma_virtio::checksum`).
fn reference_sum(parts: &[&[u8]]) -> u16 {
    let mut bytes = Vec::new();
    for p in parts {
        bytes.extend_from_slice(p);
    }
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut sum: u64 = bytes
        .chunks(2)
        .map(|w| u64::from(w[0]) << 8 | u64::from(w[1]))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn pseudo_header(ipv6: bool, ip: &[u8], tcp_len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    if ipv6 {
        p.extend_from_slice(&ip[8..40]);
        p.extend_from_slice(&(tcp_len as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 6]);
    } else {
        p.extend_from_slice(&ip[12..20]);
        p.extend_from_slice(&[0, 6]);
        p.extend_from_slice(&(tcp_len as u16).to_be_bytes());
    }
    p
}

fn build(spec: &Spec) -> Built {
    let mut f = Vec::new();
    f.extend_from_slice(&spec.dst);
    f.extend_from_slice(&spec.src);
    if spec.vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
    }
    f.extend_from_slice(if spec.ipv6 {
        &[0x86, 0xdd]
    } else {
        &[0x08, 0x00]
    });
    let l3 = f.len();
    let tcp_header_len = 20 + 4 * spec.tcp_option_words;
    if spec.ipv6 {
        let payload_len = (tcp_header_len + spec.payload.len()) as u16;
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&payload_len.to_be_bytes());
        f.extend_from_slice(&[6, 64]);
        f.extend((0..16).map(|i| 0xfd ^ i as u8));
        f.extend((0..16).map(|i| 0xfe ^ (i as u8 * 3)));
    } else {
        let ihl = 5 + spec.ip_option_words;
        let total = (ihl * 4 + tcp_header_len + spec.payload.len()) as u16;
        f.push(0x40 | ihl as u8);
        f.push(0);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&spec.ip_id.to_be_bytes());
        f.extend_from_slice(&[0x40, 0x00, 64, 6, 0, 0]);
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend(std::iter::repeat_n(1u8, 4 * spec.ip_option_words));
        let sum = !reference_sum(&[&f[l3..]]);
        f[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
    }
    let l4 = f.len();
    f.extend_from_slice(&[0x9c, 0x40, 0x13, 0x89]);
    f.extend_from_slice(&spec.seq.to_be_bytes());
    f.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    f.push(((tcp_header_len / 4) as u8) << 4);
    f.push(spec.tcp_flags);
    f.extend_from_slice(&[0xfa, 0xf0, 0, 0, 0, 0]);
    f.extend(std::iter::repeat_n(1u8, 4 * spec.tcp_option_words));
    let headers_len = f.len();
    f.extend_from_slice(&spec.payload);
    // As Linux leaves it: the pseudo-header sum (whole frame) in the field.
    let pseudo = pseudo_header(spec.ipv6, &f[l3..], f.len() - l4);
    let partial = reference_sum(&[&pseudo]);
    f[l4 + 16..l4 + 18].copy_from_slice(&partial.to_be_bytes());
    let mut gso_type = if spec.ipv6 {
        VIRTIO_NET_HDR_GSO_TCPV6
    } else {
        VIRTIO_NET_HDR_GSO_TCPV4
    };
    if spec.tcp_flags & CWR != 0 {
        gso_type |= VIRTIO_NET_HDR_GSO_ECN;
    }
    Built {
        header: NetHeader {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type,
            hdr_len: headers_len as u16,
            gso_size: spec.mss,
            csum_start: l4 as u16,
            csum_offset: 16,
        },
        frame: f,
        l3,
        l4,
        headers_len,
    }
}

/// The independent checker: do `segments` (with their virtio-net headers)
/// carry `built` as a NIC would have cut it? `partial`: whether the
/// segments may carry a partial TCP checksum (the receiver has GUEST_CSUM).
fn check_segments(
    spec: &Spec,
    built: &Built,
    segments: &[(NetHeader, Vec<u8>)],
    partial: bool,
) -> Result<(), String> {
    let (l3, l4, hl) = (built.l3, built.l4, built.headers_len);
    let orig = &built.frame;
    let mss = usize::from(spec.mss);
    let count = spec.payload.len().div_ceil(mss);
    if segments.len() != count {
        return Err(format!("{} segments, want {count}", segments.len()));
    }
    let mut payload = Vec::new();
    for (i, (h, s)) in segments.iter().enumerate() {
        let e = |what: &str| Err(format!("segment {i}: {what}"));
        if s.len() > MAX_FRAME_LEN || s.len() < hl {
            return e("length");
        }
        if h.gso_type != 0 {
            return e("gso_type not NONE");
        }
        if s[..l3] != orig[..l3] {
            return e("Ethernet header changed");
        }
        let ip = &s[l3..l4];
        if spec.ipv6 {
            if usize::from(u16::from_be_bytes([ip[4], ip[5]])) != s.len() - l3 - 40 {
                return e("IPv6 payload length");
            }
            if ip[..4] != orig[l3..l3 + 4] || ip[6..] != orig[l3 + 6..l4] {
                return e("IPv6 header changed");
            }
        } else {
            if usize::from(u16::from_be_bytes([ip[2], ip[3]])) != s.len() - l3 {
                return e("IPv4 total length");
            }
            let id = u16::from_be_bytes([ip[4], ip[5]]);
            if id != spec.ip_id.wrapping_add(i as u16) {
                return e("IPv4 ID");
            }
            if reference_sum(&[ip]) != 0xffff {
                return e("IPv4 header checksum");
            }
            if ip[..2] != orig[l3..l3 + 2]
                || ip[6..10] != orig[l3 + 6..l3 + 10]
                || ip[12..] != orig[l3 + 12..l4]
            {
                return e("IPv4 header changed");
            }
        }
        let tcp = &s[l4..];
        let seq = u32::from_be_bytes(tcp[4..8].try_into().unwrap());
        if seq != spec.seq.wrapping_add((i * mss) as u32) {
            return e("TCP sequence number");
        }
        let mut flags = spec.tcp_flags;
        if i + 1 != count {
            flags &= !(FIN | PSH);
        }
        if i != 0 {
            flags &= !CWR;
        }
        if tcp[13] != flags {
            return e("TCP flags");
        }
        if tcp[..4] != orig[l4..l4 + 4]
            || tcp[8..13] != orig[l4 + 8..l4 + 13]
            || tcp[14..16] != orig[l4 + 14..l4 + 16]
            || tcp[18..hl - l4] != orig[l4 + 18..hl]
        {
            return e("TCP header changed");
        }
        let pseudo = pseudo_header(spec.ipv6, &s[l3..], s.len() - l4);
        let mut tcp = tcp.to_vec();
        if partial {
            let want = NetHeader {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                csum_start: l4 as u16,
                csum_offset: 16,
                ..NetHeader::default()
            };
            if *h != want {
                return e("virtio-net header of a partial checksum");
            }
            // What the receiver does (§5.1.6.4): sum from csum_start with
            // the pseudo-header sum in place, store the complement.
            let completed = !reference_sum(&[&tcp]);
            tcp[16..18].copy_from_slice(&completed.to_be_bytes());
        } else if *h != NetHeader::default() {
            return e("virtio-net header of a complete checksum");
        }
        if reference_sum(&[&pseudo, &tcp]) != 0xffff {
            return e("TCP checksum");
        }
        payload.extend_from_slice(&s[hl..]);
    }
    if payload != spec.payload {
        return Err("payload does not reassemble".into());
    }
    Ok(())
}

/// A wrong segmentation made from a right one (negative controls).
type Mutation = Box<dyn Fn(&mut Vec<(NetHeader, Vec<u8>)>)>;
/// A change to a GSO frame's header and bytes.
type Edit = Box<dyn Fn(&mut NetHeader, &mut Vec<u8>)>;

fn cut(built: &Built, partial: bool) -> Result<Vec<(NetHeader, Vec<u8>)>, GsoError> {
    let mut out = Vec::new();
    let mut scratch = [0u8; MAX_FRAME_LEN];
    gso::segment_all(
        &built.header,
        &built.frame,
        partial,
        &mut scratch,
        |h, s| out.push((*h, s.to_vec())),
    )?;
    Ok(out)
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        any::<bool>(),
        0usize..=10,
        0usize..=10,
        1usize..=9000,
        256u16..=1460,
        any::<u32>(),
        any::<u16>(),
        prop::sample::select(vec![
            ACK,
            ACK | PSH,
            ACK | PSH | FIN,
            ACK | CWR,
            ACK | CWR | PSH | FIN,
            ACK | FIN,
        ]),
        any::<u8>(),
    )
        .prop_map(
            |(ipv6, vlan, ipw, tcpw, len, mss, seq, ip_id, tcp_flags, seed)| Spec {
                ipv6,
                vlan,
                ip_option_words: if ipv6 { 0 } else { ipw },
                tcp_option_words: tcpw,
                payload: (0..len)
                    .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                    .collect(),
                mss,
                seq,
                ip_id,
                tcp_flags,
                dst: [2, 0, 0, 0, 0, 0x11],
                src: [2, 0, 0, 0, 0, 0x10],
            },
        )
        .prop_filter("fits an Ethernet frame", |s| {
            let hl = 14
                + 4 * usize::from(s.vlan)
                + if s.ipv6 {
                    40
                } else {
                    20 + 4 * s.ip_option_words
                }
                + 20
                + 4 * s.tcp_option_words;
            hl + usize::from(s.mss) <= MAX_FRAME_LEN
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// §5.1.6.2: "the metadata indicates how to replicate the packet
    /// header to cut it into smaller packets": every segment checks out,
    /// with a complete checksum and with a partial one.
    #[test]
    fn spec_5_1_6_2_segments_reassemble_and_verify(spec in spec_strategy()) {
        let built = build(&spec);
        for partial in [false, true] {
            let segments = cut(&built, partial).map_err(|e| TestCaseError::fail(e.to_string()))?;
            check_segments(&spec, &built, &segments, partial).map_err(TestCaseError::fail)?;
        }
    }

    /// Negative controls: the checker rejects every kind of wrong segmentation.
    #[test]
    fn the_checker_catches_wrong_segmentations(spec in spec_strategy(), pick in any::<usize>()) {
        let built = build(&spec);
        let good = cut(&built, false).unwrap();
        let i = pick % good.len();
        let last = good.len() - 1;
        let (l3, l4, hl) = (built.l3, built.l4, built.headers_len);
        let mut mutations: Vec<Mutation> = vec![
            Box::new(move |s| s[i].1[l4 + 7] ^= 1),                // sequence number
            Box::new(move |s| s[i].1[l4 + 17] ^= 0x40),            // TCP checksum
            Box::new(move |s| { let n = s[i].1.len(); s[i].1[n - 1] ^= 1 }), // payload
            Box::new(move |s| { s.remove(i); }),                    // a segment lost
            Box::new(move |s| s[i].1[l4 + 13] ^= 0x20),            // URG flag
            Box::new(move |s| s[i].0.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM), // header lies
        ];
        if spec.ipv6 {
            mutations.push(Box::new(move |s| s[i].1[l3 + 5] ^= 1)); // payload length
        } else {
            mutations.push(Box::new(move |s| s[i].1[l3 + 5] ^= 1)); // ID (and checksum)
            mutations.push(Box::new(move |s| s[i].1[l3 + 11] ^= 1)); // header checksum
            mutations.push(Box::new(move |s| s[i].1[l3 + 3] ^= 2)); // total length
        }
        if last > 0 {
            // FIN/PSH on a segment before the last, CWR after the first.
            mutations.push(Box::new(move |s| s[0].1[l4 + 13] |= FIN));
            mutations.push(Box::new(move |s| s[last].1[l4 + 13] |= CWR));
            // Payload bytes swapped between segments.
            mutations.push(Box::new(move |s| { let b = s[0].1[hl]; s[0].1[hl] = b.wrapping_add(1); }));
        }
        for (k, mutate) in mutations.iter().enumerate() {
            let mut bad = good.clone();
            mutate(&mut bad);
            prop_assert!(check_segments(&spec, &built, &bad, false).is_err(), "mutation {} not caught", k);
        }
    }
}

fn simple_spec(ipv6: bool, len: usize, mss: u16) -> Spec {
    Spec {
        ipv6,
        vlan: false,
        ip_option_words: 0,
        tcp_option_words: 3,
        payload: (0..len).map(|i| (i * 7 + i / 251) as u8).collect(),
        // IPv6's header is 20 bytes longer: a 1500-byte MTU leaves 1428.
        mss: if ipv6 { mss.min(1428) } else { mss },
        seq: 0xffff_f000,
        ip_id: 0xfffe,
        tcp_flags: ACK | PSH | FIN | CWR,
        dst: MAC[1],
        src: MAC[0],
    }
}

#[test]
fn a_full_64k_frame_cuts_into_45_segments() {
    // Linux's largest: 65535 bytes of IPv4 total length, MSS 1448.
    let mut spec = simple_spec(false, 65535 - 20 - 32, 1448);
    spec.ip_option_words = 0;
    let built = build(&spec);
    let segments = cut(&built, false).unwrap();
    assert_eq!(segments.len(), 46);
    check_segments(&spec, &built, &segments, false).unwrap();
}

// ---- Malformed GSO headers: parse refuses them with their reason ----

#[test]
fn malformed_gso_frames_are_refused_with_their_reason() {
    let spec = simple_spec(false, 3000, 1000);
    let good = build(&spec);
    let parse = |h: &NetHeader, f: &[u8]| gso::parse(h, f, f.len());
    assert!(parse(&good.header, &good.frame).is_ok());
    let with = |edit: &dyn Fn(&mut NetHeader, &mut Vec<u8>)| {
        let (mut h, mut f) = (good.header, good.frame.clone());
        edit(&mut h, &mut f);
        parse(&h, &f)
    };
    let l3 = good.l3;
    let l4 = good.l4;
    let cases: Vec<(&str, Edit, GsoError)> = vec![
        (
            "gso_size 0",
            Box::new(|h, _| h.gso_size = 0),
            GsoError::ZeroSize,
        ),
        (
            "UDP",
            Box::new(|h, _| h.gso_type = VIRTIO_NET_HDR_GSO_UDP),
            GsoError::UnknownType,
        ),
        (
            "unknown",
            Box::new(|h, _| h.gso_type = 0x22),
            GsoError::UnknownType,
        ),
        (
            "hdr_len past the frame",
            Box::new(|h, f| h.hdr_len = f.len() as u16 + 1),
            GsoError::HeaderLengthPastFrame,
        ),
        (
            "TCPv6 on IPv4",
            Box::new(|h, _| h.gso_type = VIRTIO_NET_HDR_GSO_TCPV6),
            GsoError::BadIpHeader,
        ),
        (
            "not IP",
            Box::new(|_, f| f[12] = 0x88),
            GsoError::BadIpHeader,
        ),
        (
            "IHL 4",
            Box::new(move |_, f| f[l3] = 0x44),
            GsoError::BadIpHeader,
        ),
        (
            "IHL past the headers",
            Box::new(move |h, f| {
                f[l3] = 0x4f;
                f.truncate(l3 + 40);
                h.hdr_len = 0;
            }),
            GsoError::BadIpHeader,
        ),
        (
            "UDP payload",
            Box::new(move |_, f| f[l3 + 9] = 17),
            GsoError::NotTcp,
        ),
        (
            "MF",
            Box::new(move |_, f| f[l3 + 6] |= 0x20),
            GsoError::Fragment,
        ),
        (
            "fragment offset",
            Box::new(move |_, f| f[l3 + 7] = 1),
            GsoError::Fragment,
        ),
        (
            "total length short",
            Box::new(move |_, f| f[l3 + 3] ^= 4),
            GsoError::LengthMismatch,
        ),
        (
            "frame longer than IP says",
            Box::new(|_, f| f.push(0)),
            GsoError::LengthMismatch,
        ),
        (
            "TCP data offset 4",
            Box::new(move |_, f| f[l4 + 12] = 0x40),
            GsoError::BadTcpHeader,
        ),
        (
            "TCP data offset 15 on 3000 bytes with mss 1000",
            Box::new(move |h, f| {
                f[l4 + 12] = 0xf0;
                h.gso_size = 1450;
            }),
            GsoError::SegmentTooLong,
        ),
        (
            "no NEEDS_CSUM",
            Box::new(|h, _| h.flags = 0),
            GsoError::ChecksumNotPartial,
        ),
        (
            "csum_start elsewhere",
            Box::new(|h, _| h.csum_start -= 2),
            GsoError::ChecksumNotPartial,
        ),
        (
            "csum_offset elsewhere",
            Box::new(|h, _| h.csum_offset = 6),
            GsoError::ChecksumNotPartial,
        ),
        (
            "gso_size over the MTU",
            Box::new(|h, _| h.gso_size = 1500),
            GsoError::SegmentTooLong,
        ),
        (
            "too many segments",
            Box::new(|h, _| h.gso_size = 20),
            GsoError::TooManySegments,
        ),
    ];
    for (name, edit, want) in cases {
        assert_eq!(with(&*edit), Err(want), "{name}");
    }
    // No payload: headers only.
    let empty = build(&Spec {
        payload: Vec::new(),
        ..spec.clone()
    });
    assert_eq!(parse(&empty.header, &empty.frame), Err(GsoError::NoPayload));
    // IPv6 with an extension header first, and a lying payload length.
    let v6 = build(&simple_spec(true, 3000, 1000));
    let mut f = v6.frame.clone();
    f[v6.l3 + 6] = 0; // hop-by-hop
    assert_eq!(parse(&v6.header, &f), Err(GsoError::NotTcp));
    let mut f = v6.frame.clone();
    f[v6.l3 + 5] ^= 1;
    assert_eq!(parse(&v6.header, &f), Err(GsoError::LengthMismatch));
    // §5.1.6.2.2: hdr_len is a hint; smaller than the real headers is not
    // relied on: the headers are found by parsing and the cut is exact.
    let mut small = build(&spec);
    small.header.hdr_len = 14;
    check_segments(&spec, &small, &cut(&small, true).unwrap(), true).unwrap();
}

// ---- Through the switch ----

const MAC: [[u8; 6]; 3] = [
    [2, 0, 0, 0, 0, 0x10],
    [2, 0, 0, 0, 0, 0x11],
    [2, 0, 0, 0, 0, 0x12],
];
const BASES: [u64; 3] = [0x4000_0000, 0x8000_0000, 0xc000_0000];
const RAM: usize = 4 << 20;
/// Where a test writes a GSO frame in the sender's RAM (past the driver's rings and buffers).
const SCRATCH: u64 = 0x30_0000;

struct Net {
    mems: &'static [VecMemory],
    devs: Vec<VirtioNet>,
    switch: Switch,
    now: u64,
}

/// Three VMs; VM `i` accepts `wanted[i]` and posts `rx_len`-byte buffers.
fn make_net(
    wanted: [u64; 3],
    rx_len: u32,
    queue_size: u16,
) -> (Net, Vec<MockNetDriver<'static, VecMemory>>) {
    let mems: &'static [VecMemory] =
        Vec::leak((0..3).map(|i| VecMemory::new(BASES[i], RAM)).collect());
    let mut devs: Vec<VirtioNet> = (0..3)
        .map(|i| new_net_device(MAC[i], NET_FEATURES, 256))
        .collect();
    let drivers = (0..3)
        .map(|i| {
            let mut d = MockNetDriver::init_with(
                &mut devs[i],
                &mems[i],
                BASES[i],
                queue_size,
                rx_len,
                wanted[i],
                RingFormat::Split,
            )
            .unwrap();
            d.fill_rx();
            d
        })
        .collect();
    let mut switch = Switch::new(SwitchConfig {
        port_count: 3,
        ..SwitchConfig::default()
    });
    for (i, mac) in MAC.iter().enumerate() {
        switch.set_port(i, PortConfig::vm(*mac, false));
    }
    (
        Net {
            mems,
            devs,
            switch,
            now: 1,
        },
        drivers,
    )
}

impl Net {
    fn run(&mut self) {
        let mut ports: Vec<_> = self
            .devs
            .iter_mut()
            .zip(self.mems.iter())
            .map(|(d, m)| NetPort::new(d, m))
            .collect();
        while self.switch.run(&mut ports, self.now).more_work {}
    }
}

/// [`send_gso_with_gap`] with 64-byte gaps (scattered, as page fragments).
fn send_gso(
    d: &mut MockNetDriver<'static, VecMemory>,
    mem: &'static VecMemory,
    header: &NetHeader,
    frame: &[u8],
    pieces: usize,
    indirect: bool,
) {
    send_gso_with_gap(d, mem, header, frame, pieces, indirect, 64);
}

/// Writes `header ++ frame` from SCRATCH in VM 0 and queues it as a chain
/// of `pieces` buffers (or one INDIRECT descriptor if `indirect`), each
/// `gap` bytes after the end of the one before (0: one contiguous run,
/// which the device holds as one piece). The header with the first bytes,
/// then equal pieces (as Linux: the linear part, then page fragments).
fn send_gso_with_gap(
    d: &mut MockNetDriver<'static, VecMemory>,
    mem: &'static VecMemory,
    header: &NetHeader,
    frame: &[u8],
    pieces: usize,
    indirect: bool,
    gap: u64,
) {
    let mut bytes = header.to_bytes(0).to_vec();
    bytes.extend_from_slice(frame);
    let at = BASES[0] + SCRATCH;
    let first = (NET_HEADER_LEN + 100).min(bytes.len());
    let step = (bytes.len() - first).div_ceil(pieces.max(2) - 1).max(1);
    let mut chain = Vec::new();
    let (mut pos, mut piece_at) = (0usize, at);
    while pos < bytes.len() {
        let n = if pos == 0 {
            first
        } else {
            step.min(bytes.len() - pos)
        };
        mem.write(GuestPhysAddr::new(piece_at), &bytes[pos..pos + n])
            .unwrap();
        chain.push((piece_at, n as u32, false));
        pos += n;
        piece_at += n as u64 + gap;
    }
    if indirect {
        d.tx.add_indirect(at + 0x3_0000, &chain).unwrap();
    } else {
        d.tx.add_chain(&chain).unwrap();
    }
}

const ALL: u64 = !feature::RING_PACKED;
const NO_TSO: u64 = ALL & !net_feature::TSO;
const NO_TSO_NO_CSUM: u64 = NO_TSO & !net_feature::GUEST_CSUM;

fn received(d: &mut MockNetDriver<'static, VecMemory>) -> Vec<(NetHeader, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some((h, f)) = d.recv() {
        out.push((NetHeader::from_bytes(&h), f));
    }
    out
}

/// §5.1.6.4: a receiver with GUEST_TSO4 and MRG_RXBUF gets the whole frame
/// across its merge buffers, NEEDS_CSUM set, gso_size the MSS, hdr_len the
/// headers; byte for byte what was sent.
#[test]
fn spec_5_1_6_4_a_gso_frame_goes_whole_to_a_guest_tso_receiver() {
    for (ipv6, indirect) in [(false, false), (true, false), (false, true)] {
        let (mut net, mut d) = make_net([ALL, ALL, ALL], 2048, 256);
        let spec = simple_spec(ipv6, 60000, 1448);
        let built = build(&spec);
        let mem = &net.mems[0];
        send_gso(&mut d[0], mem, &built.header, &built.frame, 18, indirect);
        net.run();
        let got = received(&mut d[1]);
        assert_eq!(got.len(), 1, "one frame");
        let (h, f) = &got[0];
        assert_eq!(f, &built.frame);
        assert_eq!(h.gso_type, built.header.gso_type);
        assert_eq!(h.gso_size, spec.mss);
        assert_eq!(h.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert_eq!(usize::from(h.csum_start), built.l4);
        assert_eq!(h.csum_offset, 16);
        assert_eq!(usize::from(h.hdr_len), built.headers_len);
        let c = net.switch.counters(1);
        assert_eq!((c.rx_gso, c.rx_gso_cut), (1, 0));
        assert_eq!(net.switch.counters(0).tx_gso, 1);
        // On a wire the frame is its segments: the payload in MSS pieces
        // (counted by the receiver, and by the sender as sent).
        let segments = (built.frame.len() - built.headers_len).div_ceil(usize::from(spec.mss));
        assert!(segments > 1);
        assert_eq!(c.rx_gso_segments, segments as u64);
        assert_eq!(c.wire_packets(), segments as u64);
        assert_eq!(net.switch.counters(0).wire_packets(), segments as u64);
        assert!(received(&mut d[2]).is_empty());
        // The TX chain came back.
        assert!(d[0].tx.pop_used().is_some());
    }
}

/// A receiver without GUEST_TSO gets segments: partial checksums with
/// GUEST_CSUM, complete ones without; the checker accepts them.
#[test]
fn a_gso_frame_is_cut_for_a_receiver_without_guest_tso() {
    for (wanted, partial) in [(NO_TSO, true), (NO_TSO_NO_CSUM, false)] {
        for ipv6 in [false, true] {
            let (mut net, mut d) = make_net([ALL, wanted, ALL], 2048, 256);
            let spec = simple_spec(ipv6, 30000, 1400);
            let built = build(&spec);
            let mem = &net.mems[0];
            send_gso(&mut d[0], mem, &built.header, &built.frame, 10, false);
            net.run();
            let got = received(&mut d[1]);
            check_segments(&spec, &built, &got, partial).unwrap();
            assert_eq!(net.switch.counters(1).rx_gso_cut, 1);
            assert_eq!(net.switch.counters(1).rx_packets, got.len() as u64);
        }
    }
}

/// Backpressure: a GSO receiver out of buffers holds the sender back; once
/// it posts buffers the frame arrives whole. Frames of the sender behind it
/// keep their order.
#[test]
fn a_gso_frame_waits_for_a_receiver_out_of_buffers() {
    let (mut net, mut d) = make_net([ALL, ALL, ALL], 2048, 16);
    // VM 1's ring holds 16 buffers of 2 KiB: not enough for 60000 bytes.
    let built = build(&simple_spec(false, 60000, 1448));
    let mem = &net.mems[0];
    send_gso(&mut d[0], mem, &built.header, &built.frame, 8, false);
    net.run();
    assert!(received(&mut d[1]).is_empty());
    assert_eq!(net.switch.counters(1).rx_errors, 0);
    assert_eq!(net.switch.counters(1).rx_dropped, 0);
    assert_eq!(d[0].tx.pop_used(), None, "held back in the sender's ring");
    // Bigger buffers: it fits now.
    let (mut big, mut bd) = make_net([ALL, ALL, ALL], 8192, 16);
    let mem = &big.mems[0];
    send_gso(&mut bd[0], mem, &built.header, &built.frame, 8, false);
    big.run();
    let got = received(&mut bd[1]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, built.frame);
}

/// Flooded (unknown unicast to trusted ports): whole to the port with
/// GUEST_TSO, cut for the one without.
#[test]
fn a_flooded_gso_frame_goes_whole_or_cut_per_port() {
    let (mut net, mut d) = make_net([ALL, ALL, NO_TSO], 2048, 256);
    for (p, mac) in MAC.iter().enumerate() {
        net.switch.set_port(p, PortConfig::vm(*mac, true));
    }
    let mut spec = simple_spec(false, 20000, 1448);
    spec.dst = [2, 0, 0, 0, 0, 0x99];
    let built = build(&spec);
    let mem = &net.mems[0];
    send_gso(&mut d[0], mem, &built.header, &built.frame, 6, false);
    net.run();
    let whole = received(&mut d[1]);
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0].1, built.frame);
    check_segments(&spec, &built, &received(&mut d[2]), true).unwrap();
}

/// A port that is not a virtio device (the uplink) gets segments of at most
/// MAX_FRAME_LEN with complete checksums.
#[test]
fn a_non_virtio_port_gets_complete_segments() {
    #[derive(Default)]
    struct Wire(Vec<(NetHeader, Vec<u8>)>);
    impl Port for Wire {
        fn poll_tx(&mut self, _frame: &mut [u8; MAX_FRAME_LEN]) -> TxPoll {
            TxPoll::Empty
        }
        fn push_rx(&mut self, header: &NetHeader, frame: &[u8]) -> chroma_virtio::port::RxPush {
            self.0.push((*header, frame.to_vec()));
            chroma_virtio::port::RxPush::Delivered
        }
        fn accepts_partial_checksum(&self) -> bool {
            false
        }
        fn flush(&mut self) {}
    }
    #[allow(clippy::large_enum_variant)] // a test's two ports
    enum Any<'a> {
        Vm(NetPort<'a, VecMemory>),
        Wire(&'a mut Wire),
    }
    impl Port for Any<'_> {
        fn poll_tx(&mut self, frame: &mut [u8; MAX_FRAME_LEN]) -> TxPoll {
            match self {
                Any::Vm(p) => p.poll_tx(frame),
                Any::Wire(p) => p.poll_tx(frame),
            }
        }
        fn push_rx(&mut self, header: &NetHeader, frame: &[u8]) -> chroma_virtio::port::RxPush {
            match self {
                Any::Vm(p) => p.push_rx(header, frame),
                Any::Wire(p) => p.push_rx(header, frame),
            }
        }
        fn read_held_at(&mut self, offset: usize, buf: &mut [u8]) -> bool {
            match self {
                Any::Vm(p) => p.read_held_at(offset, buf),
                Any::Wire(p) => p.read_held_at(offset, buf),
            }
        }
        fn release_tx(&mut self) {
            match self {
                Any::Vm(p) => p.release_tx(),
                Any::Wire(p) => p.release_tx(),
            }
        }
        fn accepts_partial_checksum(&self) -> bool {
            match self {
                Any::Vm(p) => p.accepts_partial_checksum(),
                Any::Wire(p) => p.accepts_partial_checksum(),
            }
        }
        fn flush(&mut self) {
            match self {
                Any::Vm(p) => p.flush(),
                Any::Wire(p) => p.flush(),
            }
        }
    }
    let (mut net, mut d) = make_net([ALL, ALL, ALL], 2048, 256);
    net.switch.set_port(1, PortConfig::OPEN);
    let spec = simple_spec(true, 9000, 1440);
    let built = build(&spec);
    let mem = &net.mems[0];
    send_gso(&mut d[0], mem, &built.header, &built.frame, 5, false);
    let mut wire = Wire::default();
    {
        let [a, _, _] = &mut net.devs[..] else {
            unreachable!()
        };
        let mut ports = [Any::Vm(NetPort::new(a, &net.mems[0])), Any::Wire(&mut wire)];
        net.switch.run(&mut ports, 1);
    }
    check_segments(&spec, &built, &wire.0, false).unwrap();
}

// ---- Hostile GSO frames: dropped with their reason, nothing else hurt ----

/// Polls VM 0's port once.
fn poll_once(net: &mut Net) -> TxPoll {
    let mut port = NetPort::new(&mut net.devs[0], &net.mems[0]);
    let mut frame = [0u8; MAX_FRAME_LEN];
    let polled = port.poll_tx(&mut frame);
    port.release_tx();
    port.flush();
    polled
}

#[test]
fn hostile_gso_frames_are_dropped_with_their_reason() {
    // Small enough to pass the walk's length bound without HOST_TSO.
    let spec = simple_spec(false, 1200, 500);
    let good = build(&spec);
    let l3 = good.l3;
    let l4 = good.l4;
    let cases: Vec<(&str, u64, Edit, DropReason)> = vec![
        (
            "gso_size 0",
            ALL,
            Box::new(|h, _| h.gso_size = 0),
            DropReason::Gso(GsoError::ZeroSize),
        ),
        (
            "unknown gso_type",
            ALL,
            Box::new(|h, _| h.gso_type = 0x42),
            DropReason::Gso(GsoError::UnknownType),
        ),
        (
            "UDP",
            ALL,
            Box::new(|h, _| h.gso_type = VIRTIO_NET_HDR_GSO_UDP),
            DropReason::Gso(GsoError::UnknownType),
        ),
        (
            "HOST_TSO4 not negotiated",
            NO_TSO,
            Box::new(|_, _| {}),
            DropReason::Gso(GsoError::NotNegotiated),
        ),
        (
            "HOST_ECN not negotiated",
            ALL & !net_feature::HOST_ECN,
            Box::new(|h, _| h.gso_type |= VIRTIO_NET_HDR_GSO_ECN),
            DropReason::Gso(GsoError::NotNegotiated),
        ),
        (
            "hdr_len past the frame",
            ALL,
            Box::new(|h, _| h.hdr_len = u16::MAX),
            DropReason::Gso(GsoError::HeaderLengthPastFrame),
        ),
        (
            "IPv4 fragment",
            ALL,
            Box::new(move |_, f| f[l3 + 6] |= 0x20),
            DropReason::Gso(GsoError::Fragment),
        ),
        (
            "not TCP",
            ALL,
            Box::new(move |_, f| f[l3 + 9] = 17),
            DropReason::Gso(GsoError::NotTcp),
        ),
        (
            "IHL lies",
            ALL,
            Box::new(move |_, f| f[l3] = 0x43),
            DropReason::Gso(GsoError::BadIpHeader),
        ),
        (
            "total length lies",
            ALL,
            Box::new(move |_, f| f[l3 + 2] ^= 0x10),
            DropReason::Gso(GsoError::LengthMismatch),
        ),
        (
            "TCP data offset lies",
            ALL,
            Box::new(move |_, f| f[l4 + 12] = 0x10),
            DropReason::Gso(GsoError::BadTcpHeader),
        ),
        (
            "no partial checksum",
            ALL,
            Box::new(|h, _| h.flags = 0),
            DropReason::Gso(GsoError::ChecksumNotPartial),
        ),
        (
            "longer than 64 KiB of IP",
            ALL,
            Box::new(|_, f| f.resize(gso::MAX_GSO_FRAME_LEN + 1, 0)),
            DropReason::TooLong,
        ),
        (
            "non-GSO frame over the MTU",
            ALL,
            Box::new(|h, f| {
                h.gso_type = 0;
                f.resize(3000, 0)
            }),
            DropReason::TooLong,
        ),
    ];
    for (name, wanted, edit, want) in cases {
        let (mut net, mut d) = make_net([wanted, ALL, ALL], 2048, 256);
        let (mut h, mut f) = (good.header, good.frame.clone());
        edit(&mut h, &mut f);
        let mem = &net.mems[0];
        send_gso(&mut d[0], mem, &h, &f, 8, false);
        assert_eq!(poll_once(&mut net), TxPoll::Dropped(want), "{name}");
        assert!(net.devs[0].is_live(), "{name}: a frame error is not fatal");
        assert_eq!(
            d[0].tx.pop_used().map(|(_, len)| len),
            Some(0),
            "{name}: chain returned"
        );
        // The sender and its neighbours keep forwarding.
        assert!(d[2].send(&simple_frame(MAC[1], MAC[2])));
        assert!(d[0].send(&simple_frame(MAC[1], MAC[0])));
        net.run();
        assert_eq!(received(&mut d[1]).len(), 2, "{name}: others still forward");
    }
}

/// A GSO chain in more scattered buffers than the device holds in place is
/// dropped (it can be neither held nor copied); a chain of MAX_SKB_FRAGS +
/// 2 goes, and so does a longer one whose buffers continue each other in
/// guest memory (held as one piece).
#[test]
fn a_gso_chain_in_too_many_buffers_is_dropped() {
    use chroma_virtio::net::MAX_HELD_SEGMENTS;
    let built = build(&simple_spec(false, 20000, 1448));
    for (pieces, gap, ok) in [
        (19, 64, true),
        (MAX_HELD_SEGMENTS + 4, 64, false),
        (MAX_HELD_SEGMENTS + 4, 0, true),
    ] {
        let (mut net, mut d) = make_net([ALL, ALL, ALL], 2048, 256);
        let mem = &net.mems[0];
        send_gso_with_gap(
            &mut d[0],
            mem,
            &built.header,
            &built.frame,
            pieces,
            false,
            gap,
        );
        let polled = poll_once(&mut net);
        if ok {
            assert!(
                matches!(polled, TxPoll::Held { .. }),
                "{pieces}: {polled:?}"
            );
        } else {
            assert_eq!(
                polled,
                TxPoll::Dropped(DropReason::TooManyBuffers),
                "{pieces}"
            );
        }
    }
}

fn simple_frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0x33u8; 100];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}
