//! VMs on one switch for the data-path tests: each VM's RAM is an arena
//! region seen through [`Probe`], which counts what the device reads and
//! writes where, and a mock driver per VM.
#![allow(dead_code, clippy::cast_possible_truncation)]

use std::cell::Cell;
use std::sync::atomic::Ordering;

use chroma_mem::{GuestMemory, GuestPhysAddr, HostSpan, MemError};
use chroma_virtio::mmio::feature;
use chroma_virtio::mock::{MockNetDriver, RingFormat};
use chroma_virtio::net::{new_net_device, NetPort, VirtioNet, NET_FEATURES};
use chroma_virtio::port::{NetHeader, Port, RxPush, TxPoll, MAX_FRAME_LEN, MIN_FRAME_LEN};
use chroma_virtio::switch::{PortConfig, Switch, SwitchConfig};

use super::arena::RawMemory;

pub const RAM: usize = 4 << 20;

pub fn base(vm: usize) -> u64 {
    0x4000_0000 * (vm as u64 + 1)
}

pub fn mac(vm: usize) -> [u8; 6] {
    [2, 0, 0, 0, 0, 0x10 + vm as u8]
}

/// One VM's RAM, with counters over a watched range and a watched address.
pub struct Probe {
    pub inner: RawMemory,
    /// Bytes of `window` read into hypervisor buffers (`read`).
    pub buffered_reads: Cell<u64>,
    /// Bytes of `window` read in place (`read_span`, a one-copy source).
    pub span_reads: Cell<u64>,
    /// Bytes written from hypervisor buffers (`write`) inside `window`.
    pub buffered_writes: Cell<u64>,
    /// Bytes copied into `window` from another memory (`copy_from`).
    pub copied_in: Cell<u64>,
    pub window: Cell<(u64, u64)>,
    /// Release stores into any of these ranges `[lo, hi)`: where each
    /// queue publishes (split: used.idx; packed: the descriptor ring,
    /// where only the publishing flags store is Release).
    pub watched: Cell<[(u64, u64); 2]>,
    pub watched_stores: Cell<u64>,
}

impl Probe {
    pub fn new(vm: usize) -> Self {
        Self {
            inner: RawMemory::new(base(vm), RAM),
            buffered_reads: Cell::new(0),
            span_reads: Cell::new(0),
            buffered_writes: Cell::new(0),
            copied_in: Cell::new(0),
            window: Cell::new((0, 0)),
            watched: Cell::new([(0, 0); 2]),
            watched_stores: Cell::new(0),
        }
    }

    fn overlap(&self, gpa: GuestPhysAddr, len: usize) -> u64 {
        let (lo, hi) = self.window.get();
        let (a, b) = (gpa.raw().max(lo), (gpa.raw() + len as u64).min(hi));
        b.saturating_sub(a)
    }

    pub fn reset_counts(&self) {
        self.buffered_reads.set(0);
        self.span_reads.set(0);
        self.buffered_writes.set(0);
        self.copied_in.set(0);
        self.watched_stores.set(0);
    }
}

fn add(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

impl GuestMemory for Probe {
    fn check_range(&self, gpa: GuestPhysAddr, len: u64) -> Result<(), MemError> {
        self.inner.check_range(gpa, len)
    }
    fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        add(&self.buffered_reads, self.overlap(gpa, buf.len()));
        self.inner.read(gpa, buf)
    }
    fn write(&self, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), MemError> {
        add(&self.buffered_writes, self.overlap(gpa, data.len()));
        self.inner.write(gpa, data)
    }
    fn load_u16(&self, gpa: GuestPhysAddr, order: Ordering) -> Result<u16, MemError> {
        self.inner.load_u16(gpa, order)
    }
    fn store_u16(&self, gpa: GuestPhysAddr, value: u16, order: Ordering) -> Result<(), MemError> {
        let a = gpa.raw();
        if order == Ordering::Release
            && self.watched.get().iter().any(|&(lo, hi)| lo <= a && a < hi)
        {
            add(&self.watched_stores, 1);
        }
        self.inner.store_u16(gpa, value, order)
    }
    fn fence(&self, order: Ordering) {
        self.inner.fence(order)
    }
    fn read_span(&self, gpa: GuestPhysAddr, len: usize) -> Option<HostSpan<'_>> {
        add(&self.span_reads, self.overlap(gpa, len));
        self.inner.read_span(gpa, len)
    }
    fn copy_from<S: GuestMemory + ?Sized>(
        &self,
        gpa: GuestPhysAddr,
        src: &S,
        src_gpa: GuestPhysAddr,
        len: usize,
    ) -> Result<(), MemError> {
        add(&self.copied_in, self.overlap(gpa, len));
        self.inner.copy_from(gpa, src, src_gpa, len)
    }
}

/// A port that can be told not to hold frames back (the negative control
/// of backpressure) or to publish after every frame (of batching).
pub struct Ctl<'a> {
    pub port: NetPort<'a, Probe>,
    pub hold: bool,
    pub flush_each_frame: bool,
    /// The port's memory, and writes its guest makes into it just before
    /// the switch delivers a frame held there (a racing vCPU).
    pub mem: &'a Probe,
    pub race: &'a [(u64, u8)],
}

impl Port for Ctl<'_> {
    fn poll_tx(&mut self, frame: &mut [u8; MAX_FRAME_LEN]) -> TxPoll {
        self.port.poll_tx(frame)
    }
    fn push_rx(&mut self, header: &NetHeader, frame: &[u8]) -> RxPush {
        self.port.push_rx(header, frame)
    }
    fn push_rx_held(
        &mut self,
        header: &NetHeader,
        eth: &[u8; MIN_FRAME_LEN],
        src: &Self,
    ) -> Option<RxPush> {
        for &(gpa, byte) in src.race {
            src.mem
                .inner
                .write(GuestPhysAddr::new(gpa), &[byte])
                .unwrap();
        }
        self.port.push_rx_held(header, eth, &src.port)
    }
    fn read_held(&mut self, frame: &mut [u8]) -> bool {
        self.port.read_held(frame)
    }
    fn release_tx(&mut self) {
        self.port.release_tx();
        if self.flush_each_frame {
            self.port.flush();
        }
    }
    fn unpoll_tx(&mut self) -> bool {
        if !self.hold {
            return false;
        }
        self.port.unpoll_tx()
    }
    fn accepts_partial_checksum(&self) -> bool {
        self.port.accepts_partial_checksum()
    }
    fn flush(&mut self) {
        self.port.flush()
    }
}

/// VMs with queues of `sizes[i]` entries, their devices, drivers (every
/// RX buffer, 2048 bytes, posted at start) and one switch.
pub struct Lab {
    pub mems: &'static [Probe],
    pub devs: Vec<VirtioNet>,
    pub drivers: Vec<MockNetDriver<'static, Probe>>,
    pub switch: Switch,
    pub now: u64,
    pub hold: bool,
    pub flush_each_frame: bool,
    /// Racing writes of each VM's guest (see [`Ctl::race`]).
    pub races: Vec<Vec<(u64, u8)>>,
}

impl Lab {
    pub fn new(sizes: &[u16], config: SwitchConfig) -> Self {
        Self::with_rx_len(sizes, 2048, config)
    }

    /// As [`Lab::new`] with RX buffers of `rx_len` bytes (MRG_RXBUF is
    /// negotiated: a frame may span several).
    pub fn with_rx_len(sizes: &[u16], rx_len: u32, config: SwitchConfig) -> Self {
        Self::on(RingFormat::Split, sizes, rx_len, config)
    }

    /// As [`Lab::with_rx_len`] on ring `format` (the devices offer packed
    /// rings, the drivers take them or not).
    pub fn on(format: RingFormat, sizes: &[u16], rx_len: u32, config: SwitchConfig) -> Self {
        let n = sizes.len();
        let mems: &'static [Probe] = Vec::leak((0..n).map(Probe::new).collect());
        let mut devs: Vec<VirtioNet> = (0..n)
            .map(|i| new_net_device(mac(i), NET_FEATURES | feature::RING_PACKED, 256))
            .collect();
        let drivers = (0..n)
            .map(|i| {
                let mut d = MockNetDriver::init_with(
                    &mut devs[i],
                    &mems[i],
                    base(i),
                    sizes[i],
                    rx_len,
                    u64::MAX,
                    format,
                )
                .unwrap();
                d.fill_rx();
                for q in [0, 1] {
                    let packed = devs[i].queue(q).is_some_and(|q| q.is_packed());
                    assert_eq!(packed, format == RingFormat::Packed, "ring format");
                }
                mems[i]
                    .watched
                    .set([d.rx.publish_range(), d.tx.publish_range()]);
                d
            })
            .collect();
        let mut switch = Switch::new(SwitchConfig {
            port_count: n,
            ..config
        });
        for i in 0..n {
            switch.set_port(i, PortConfig::vm(mac(i), false));
        }
        Self {
            mems,
            devs,
            drivers,
            switch,
            now: 0,
            hold: true,
            flush_each_frame: false,
            races: vec![Vec::new(); n],
        }
    }

    /// One switch run at the current tick.
    pub fn run_once(&mut self) -> chroma_virtio::switch::RunReport {
        let mems = self.mems;
        let (hold, flush_each_frame) = (self.hold, self.flush_each_frame);
        let mut ports: Vec<Ctl<'_>> = self
            .devs
            .iter_mut()
            .zip(mems.iter())
            .zip(self.races.iter())
            .map(|((d, m), race)| Ctl {
                port: NetPort::new(d, m),
                hold,
                flush_each_frame,
                mem: m,
                race,
            })
            .collect();
        self.switch.run(&mut ports, self.now)
    }

    /// Watches VM `vm`'s TX buffers.
    pub fn watch_tx(&self, vm: usize) {
        let d = &self.drivers[vm];
        self.mems[vm]
            .window
            .set((d.tx_buffer(0), d.tx_buffer(d.tx.layout.size)));
    }

    /// Watches VM `vm`'s RX buffers (and the TX buffers after them, which
    /// the device never writes).
    pub fn watch_rx(&self, vm: usize) {
        let d = &self.drivers[vm];
        self.mems[vm].window.set((d.rx_buffers_base, d.end()));
    }
}

/// A frame `dst` <- `src`, `len` bytes, carrying `tag` after the header.
pub fn frame(dst: [u8; 6], src: [u8; 6], len: usize, tag: u32) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14..18].copy_from_slice(&tag.to_le_bytes());
    for (i, b) in f.iter_mut().enumerate().skip(18) {
        *b = (i as u32 ^ tag) as u8;
    }
    f
}

/// Runs each named test body (a `fn(RingFormat)`) on split and on packed
/// rings, as the tests `NAME::split` and `NAME::packed`.
macro_rules! on_both_rings {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn split() {
                    super::$name(chroma_virtio::mock::RingFormat::Split);
                }
                #[test]
                fn packed() {
                    super::$name(chroma_virtio::mock::RingFormat::Packed);
                }
            }
        )*
    };
}
pub(crate) use on_both_rings;
