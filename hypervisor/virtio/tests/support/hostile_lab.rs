//! Three VMs on one switch for the hostile catalogues (`hostile.rs` on
//! split rings, `hostile_packed.rs` on packed ones): port 0's guest breaks
//! a rule, the helpers assert how the device contained it and that ports
//! 1 and 2 keep forwarding.
#![allow(dead_code, clippy::cast_possible_truncation)]

use chroma_mem::{GuestMemory, GuestPhysAddr, MemError};
use chroma_virtio::mmio::{feature, interrupt, reg, status, MmioAction};
use chroma_virtio::mock::{MockNetDriver, RingFormat};
use chroma_virtio::net::{new_net_device, NetPort, VirtioNet, NET_FEATURES};
use chroma_virtio::switch::{PortConfig, PortCounters, Switch, SwitchConfig};
use chroma_virtio::VirtioError;

pub const SIZE: u16 = 16;
pub const RAM: usize = 1 << 20;
pub const BASES: [u64; 3] = [0x4000_0000, 0x8000_0000, 0xc000_0000];
pub const MAC: [[u8; 6]; 3] = [
    [2, 0, 0, 0, 0, 0x10],
    [2, 0, 0, 0, 0, 0x11],
    [2, 0, 0, 0, 0, 0x12],
];
/// The victim's port.
pub const V: usize = 0;

pub struct Lab<'m, M: GuestMemory> {
    pub mems: &'m [M; 3],
    pub devs: Vec<VirtioNet>,
    pub switch: Switch,
    pub now: u64,
}

impl<'m, M: GuestMemory> Lab<'m, M> {
    /// Three devices (the victim offering `victim_features`, the others
    /// everything, packed rings included), each driven on its ring format,
    /// every receive buffer posted; ports locked to their addresses.
    pub fn new(
        mems: &'m [M; 3],
        victim_features: u64,
        formats: [RingFormat; 3],
    ) -> (Self, Vec<MockNetDriver<'m, M>>) {
        let mut devs: Vec<VirtioNet> = (0..3)
            .map(|i| {
                let features = if i == V {
                    victim_features
                } else {
                    NET_FEATURES | feature::RING_PACKED
                };
                new_net_device(MAC[i], features, 256)
            })
            .collect();
        let drivers = (0..3)
            .map(|i| {
                let mut d = MockNetDriver::init_with(
                    &mut devs[i],
                    &mems[i],
                    BASES[i],
                    SIZE,
                    2048,
                    u64::MAX,
                    formats[i],
                )
                .unwrap();
                d.fill_rx();
                let packed = devs[i].queue(1).unwrap().is_packed();
                assert_eq!(
                    packed,
                    formats[i] == RingFormat::Packed,
                    "port {i}'s ring format"
                );
                d
            })
            .collect();
        let mut switch = Switch::new(SwitchConfig {
            port_count: 3,
            egress_capacity: 8,
            ..SwitchConfig::default()
        });
        // Ports start locked: each VM's port gets its own address.
        for (port, mac) in MAC.iter().enumerate() {
            switch.set_port(port, PortConfig::vm(*mac, false));
        }
        let lab = Lab {
            mems,
            devs,
            switch,
            now: 0,
        };
        (lab, drivers)
    }

    pub fn run(&mut self) {
        self.now += 1;
        let mut ports: Vec<_> = self
            .devs
            .iter_mut()
            .zip(self.mems.iter())
            .map(|(d, m)| NetPort::new(d, m))
            .collect();
        while self.switch.run(&mut ports, self.now).more_work {}
    }

    pub fn victim(&self) -> &VirtioNet {
        &self.devs[V]
    }

    pub fn counters(&self) -> PortCounters {
        self.switch.counters(V)
    }

    /// DEVICE_NEEDS_RESET with its configuration interrupt, not live.
    pub fn assert_needs_reset(&self) {
        let v = self.victim();
        assert_ne!(
            v.status() & status::DEVICE_NEEDS_RESET,
            0,
            "DEVICE_NEEDS_RESET not set"
        );
        assert_ne!(
            v.interrupt_status() & interrupt::CONFIG_CHANGE,
            0,
            "no config interrupt"
        );
        assert!(!v.is_live());
    }

    /// A ring error found while running: as [`Self::assert_needs_reset`],
    /// the switch counted it once, and no frame got through.
    pub fn assert_ring_error(&self) {
        self.assert_needs_reset();
        assert_eq!(
            self.counters().fatal_errors,
            1,
            "fatal error not counted once"
        );
        assert_eq!(self.counters().tx_packets, 0, "a frame got through");
    }

    pub fn assert_live(&self) {
        assert!(
            self.victim().is_live(),
            "victim device should still be live"
        );
    }
}

pub fn frame(dst: [u8; 6], src: [u8; 6], len: usize, tag: u8) -> Vec<u8> {
    let mut f = vec![tag; len];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

/// Ports 1 and 2 exchange frames both ways, each arrives intact, and
/// neither device was hurt.
pub fn assert_others_forward<M: GuestMemory>(
    lab: &mut Lab<'_, M>,
    drivers: &mut [MockNetDriver<'_, M>],
) {
    // Whatever the victim managed to send before is not under test here.
    lab.run();
    for d in drivers[1..].iter_mut() {
        while d.recv().is_some() {}
    }
    for (from, to) in [(1usize, 2usize), (2, 1)] {
        for k in 0..3u8 {
            let f = frame(MAC[to], MAC[from], 60 + 400 * usize::from(k), 0xa0 + k);
            assert!(drivers[from].send(&f));
            lab.run();
            let (_, got) = drivers[to].recv().expect("healthy port stopped forwarding");
            assert_eq!(got, f);
        }
    }
    for d in &drivers[1..] {
        assert_eq!(d.rx.bad_returns + d.tx.bad_returns, 0);
        assert_eq!(d.rx.out_of_order + d.tx.out_of_order, 0);
    }
    for port in 1..3 {
        assert!(lab.devs[port].is_live());
        assert_eq!(lab.switch.counters(port).fatal_errors, 0);
    }
}

/// After a dropped frame the victim can still send a good one.
pub fn victim_still_sends<M: GuestMemory>(lab: &mut Lab<'_, M>, d: &mut MockNetDriver<'_, M>) {
    lab.assert_live();
    while d.tx.pop_used().is_some() {}
    assert_eq!(d.tx.outstanding_count(), 0, "TX chain leaked");
    let before = lab.switch.counters(V).tx_packets;
    assert!(d.send(&frame(MAC[1], MAC[V], 100, 7)));
    lab.run();
    assert_eq!(lab.switch.counters(V).tx_packets, before + 1);
}

/// A well-formed frame (zero header, then `len` bytes to port 1) written
/// at the victim's TX buffer `index`: its address.
pub fn good_tx_buffer<M: GuestMemory>(
    d: &MockNetDriver<'_, M>,
    mem: &M,
    index: u16,
    len: usize,
) -> u64 {
    let addr = d.tx_buffer(index);
    let mut bytes = vec![0u8; 12];
    bytes.extend(frame(MAC[1], MAC[V], len, 0x55));
    mem.write(GuestPhysAddr::new(addr), &bytes).unwrap();
    addr
}

/// One case: `Lab::new(&mems(), features, FORMATS)` (both from the
/// calling file), the body with the lab, the victim's driver and memory,
/// then [`assert_others_forward`].
macro_rules! hostile {
    ($name:ident, $features:expr, |$lab:ident, $d:ident, $m:ident| $body:block) => {
        #[test]
        fn $name() {
            let mems = mems();
            let ($lab, drivers) = Lab::new(&mems, $features, FORMATS);
            let mut $lab = $lab;
            let mut drivers = drivers;
            {
                let $d = &mut drivers[V];
                let $m = &mems[V];
                let _ = &$m;
                let $lab = &mut $lab;
                $body
            }
            assert_others_forward(&mut $lab, &mut drivers);
        }
    };
}
pub(crate) use hostile;

// ---- Registers ----

pub fn w<M: GuestMemory>(
    lab: &mut Lab<'_, M>,
    off: u64,
    width: u8,
    value: u32,
) -> Result<MmioAction, VirtioError> {
    let mem = &lab.mems[V];
    lab.devs[V].mmio_write(off, width, value, mem)
}

/// Resets the victim and walks it to FEATURES_OK accepting `features`'
/// high word (VERSION_1, and RING_PACKED if asked), queue 0 selected.
pub fn to_features_ok<M: GuestMemory>(lab: &mut Lab<'_, M>, features: u64) {
    w(lab, reg::STATUS, 4, 0).unwrap();
    w(lab, reg::STATUS, 4, status::ACKNOWLEDGE | status::DRIVER).unwrap();
    w(lab, reg::DRIVER_FEATURES_SEL, 4, 1).unwrap();
    w(lab, reg::DRIVER_FEATURES, 4, (features >> 32) as u32).unwrap();
    w(
        lab,
        reg::STATUS,
        4,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    )
    .unwrap();
    assert!(lab.victim().has_feature(features & !0xffff_ffff));
    w(lab, reg::QUEUE_SEL, 4, 0).unwrap();
}

/// Programs queue 0 (size, descriptor area, driver area, device area) and
/// sets QueueReady.
pub fn set_queue<M: GuestMemory>(
    lab: &mut Lab<'_, M>,
    size: u32,
    desc: u64,
    avail: u64,
    used: u64,
) -> Result<MmioAction, VirtioError> {
    w(lab, reg::QUEUE_NUM, 4, size)?;
    w(lab, reg::QUEUE_DESC_LOW, 4, desc as u32)?;
    w(lab, reg::QUEUE_DESC_HIGH, 4, (desc >> 32) as u32)?;
    w(lab, reg::QUEUE_DRIVER_LOW, 4, avail as u32)?;
    w(lab, reg::QUEUE_DRIVER_HIGH, 4, (avail >> 32) as u32)?;
    w(lab, reg::QUEUE_DEVICE_LOW, 4, used as u32)?;
    w(lab, reg::QUEUE_DEVICE_HIGH, 4, (used >> 32) as u32)?;
    w(lab, reg::QUEUE_READY, 4, 1)
}

/// QueueReady was refused with `want`, reads back 0, and the device needs
/// a reset.
pub fn assert_queue_refused<M: GuestMemory>(
    lab: &mut Lab<'_, M>,
    result: Result<MmioAction, VirtioError>,
    want: VirtioError,
) {
    assert_eq!(result, Err(want));
    assert_eq!(lab.devs[V].mmio_read(reg::QUEUE_READY, 4), Ok(0));
    lab.assert_needs_reset();
}

/// The error of a guest range outside RAM.
pub fn out_of_range(gpa: u64, len: u64) -> VirtioError {
    VirtioError::Memory(MemError::OutOfRange { gpa, len })
}

/// The victim's driver makes `buffers` available as one TX chain: the
/// frame is dropped and counted, the chain comes back used with length 0,
/// and the victim still sends.
pub fn assert_tx_dropped<M: GuestMemory>(
    lab: &mut Lab<'_, M>,
    d: &mut MockNetDriver<'_, M>,
    buffers: &[(u64, u32, bool)],
) {
    let id = d.tx.add_chain(buffers).unwrap();
    lab.run();
    assert_eq!(lab.counters().tx_errors, 1);
    assert_eq!(d.tx.pop_used(), Some((u32::from(id), 0)));
    victim_still_sends(lab, d);
}

/// The victim's driver sends a small TCP GSO frame (fits one TX buffer),
/// its header edited by `edit`, from port 0 to port 1: dropped, counted,
/// the chain returned, and the victim (and everyone else) still sends.
pub fn gso_case<M: GuestMemory>(
    lab: &mut Lab<'_, M>,
    d: &mut MockNetDriver<'_, M>,
    edit: impl Fn(&mut chroma_virtio::port::NetHeader, &mut Vec<u8>),
) {
    let payload = vec![0x5au8; 1200];
    let (mut header, mut frame) =
        chroma_virtio::mock::tcp_gso_frame(MAC[1], MAC[V], false, 3, 500, 1, 0x18, &payload);
    edit(&mut header, &mut frame);
    assert!(d.send_with_header(&header.to_bytes(0), &frame));
    lab.run();
    assert_eq!(lab.counters().tx_errors, 1, "dropped and counted");
    assert_eq!(
        d.tx.pop_used().map(|(_, len)| len),
        Some(0),
        "chain returned"
    );
    victim_still_sends(lab, d);
}
