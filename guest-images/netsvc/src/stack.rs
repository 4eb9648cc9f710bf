//! [`NetStack`]: the smoltcp interface over the virtio-net device, configured
//! from the bootargs, and the loop primitives the guests build on.

use core::fmt;

use chroma_guest_rt::args::BootArgs;
use chroma_guest_rt::{timer, Boot};
use smoltcp::iface::{Config, Interface, PollResult, SocketSet};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr};
use virtio_drivers::transport::mmio::MmioError;

use crate::device::{self, Counters, MmioSlot, NetDevice};
use crate::driver::{self, TxMode};
use crate::irq::{self, Wakeup};

/// Why the network could not come up.
#[non_exhaustive]
#[derive(Clone, Copy, Debug)]
pub enum NetError {
    /// no valid DTB
    NoDtb,
    /// no virtio-mmio network device (DeviceID 1) in the DTB
    NoDevice,
    /// the virtio-mmio transport refused the device
    Transport(&'static str),
    /// the virtio-net driver failed to start
    Driver(virtio_drivers::Error),
    /// a bootarg is malformed
    BadArgument(&'static str),
    /// a socket operation failed
    Socket(&'static str),
}

impl fmt::Display for NetError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoDtb => write!(formatter, "no valid DTB"),
            Self::NoDevice => write!(
                formatter,
                "no virtio-mmio network device (DeviceID 1) in the DTB"
            ),
            Self::Transport(reason) => write!(formatter, "virtio-mmio transport: {}", reason),
            Self::Driver(error) => write!(formatter, "virtio-net driver: {}", error),
            Self::BadArgument(word) => write!(formatter, "malformed bootarg {}", word),
            Self::Socket(reason) => write!(formatter, "{}", reason),
        }
    }
}

impl From<MmioError> for NetError {
    fn from(error: MmioError) -> Self {
        Self::Transport(match error {
            MmioError::BadMagic(_) => "bad magic value",
            MmioError::UnsupportedVersion(_) => "unsupported version",
            MmioError::InvalidDeviceID(_) => "invalid device ID",
            MmioError::MmioRegionTooSmall => "register frame too small",
        })
    }
}

/// The interface's address and default route.
#[derive(Clone, Copy, Debug)]
pub struct NetConfig {
    /// Address and prefix (`net.ip=10.0.2.15/24`).
    pub address: Ipv4Cidr,
    /// Default gateway (`net.gw=10.0.2.2`), if any.
    pub gateway: Option<Ipv4Address>,
    /// How frames are sent (`net.tx=wait`, the default, or `net.tx=queued`).
    pub tx_mode: TxMode,
    /// The source MAC to send from (`net.mac=52:54:00:12:34:56`); by default
    /// the one the device reports. A hostile test sets another VM's MAC: the
    /// switch must drop those frames (port security).
    pub mac: Option<[u8; 6]>,
    /// In `net.tx=queued` mode, batch the notifications and keep the
    /// device's interrupts off while polling (`net.suppress=on`, the
    /// default; `net.suppress=off`: a notification per buffer and an
    /// interrupt per used batch, as virtio-drivers does by itself).
    pub suppress: bool,
}

impl NetConfig {
    /// Reads `net.ip=A.B.C.D/N`, `net.gw=A.B.C.D`, `net.tx=wait|queued`,
    /// `net.mac=` and `net.suppress=on|off`;
    /// `default_address` and
    /// `default_gateway` stand in for words that are absent.
    pub fn from_bootargs(
        args: &BootArgs<'_>,
        default_address: Ipv4Cidr,
        default_gateway: Option<Ipv4Address>,
    ) -> Result<Self, NetError> {
        let address = match args.value("net.ip") {
            Some(text) => parse_cidr(text).ok_or(NetError::BadArgument("net.ip"))?,
            None => default_address,
        };
        let gateway = match args.value("net.gw") {
            Some(text) => Some(text.parse().map_err(|_| NetError::BadArgument("net.gw"))?),
            None => default_gateway,
        };
        let tx_mode = match args.value("net.tx") {
            None | Some("wait") => TxMode::Wait,
            Some("queued") => TxMode::Queued,
            Some(_) => return Err(NetError::BadArgument("net.tx")),
        };
        let mac = match args.value("net.mac") {
            Some(text) => Some(parse_mac(text).ok_or(NetError::BadArgument("net.mac"))?),
            None => None,
        };
        let suppress = match args.value("net.suppress") {
            None | Some("on") => true,
            Some("off") => false,
            Some(_) => return Err(NetError::BadArgument("net.suppress")),
        };
        Ok(Self {
            address,
            gateway,
            tx_mode,
            mac,
            suppress,
        })
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Parses `A.B.C.D/N` (or `A.B.C.D`, taken as /24).
pub fn parse_cidr(text: &str) -> Option<Ipv4Cidr> {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, prefix.parse::<u8>().ok()?),
        None => (text, 24),
    };
    if prefix > 32 {
        return None;
    }
    Some(Ipv4Cidr::new(address.parse().ok()?, prefix))
}

/// The smoltcp clock: the virtual counter in microseconds.
pub fn now() -> Instant {
    let micros = u128::from(timer::now()) * 1_000_000 / u128::from(timer::frequency());
    Instant::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
}

/// Virtual counter ticks in `micros` microseconds.
pub fn ticks_in_micros(micros: u64) -> u64 {
    let ticks = u128::from(micros) * u128::from(timer::frequency()) / 1_000_000;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// A MAC address as `52:54:00:12:34:56`.
pub struct MacDisplay(pub [u8; 6]);

impl fmt::Display for MacDisplay {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, f] = self.0;
        write!(formatter, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
    }
}

/// The device, the smoltcp interface over it, and the guest's sockets.
pub struct NetStack {
    /// The smoltcp interface.
    pub interface: Interface,
    /// The card.
    pub device: NetDevice,
    /// The sockets the guest added.
    pub sockets: SocketSet<'static>,
    /// How received frames wake the loop.
    pub wakeup: Wakeup,
    /// Where the device lives.
    pub slot: MmioSlot,
    /// The address configuration.
    pub config: NetConfig,
}

impl NetStack {
    /// Finds the network device in the DTB, starts the driver, wires its
    /// interrupt and builds the interface with `config`.
    pub fn start(boot: &Boot, config: NetConfig) -> Result<Self, NetError> {
        // SAFETY: the address is the one the runtime booted with, and no one
        // writes the DTB.
        let fdt =
            unsafe { chroma_guest_rt::platform::fdt(boot.dtb_address) }.ok_or(NetError::NoDtb)?;
        let slot = device::find_net_slot(&fdt).ok_or(NetError::NoDevice)?;
        let mut device = NetDevice::new(driver::open(&slot, config.tx_mode, config.suppress)?);
        let mac = EthernetAddress(config.mac.unwrap_or_else(|| device.mac_address()));
        let mut interface_config = Config::new(HardwareAddress::Ethernet(mac));
        // Initial TCP sequence numbers and the like: the counter is as good a
        // seed as a test guest has.
        interface_config.random_seed = timer::now()
            ^ u64::from_le_bytes([
                mac.0[0], mac.0[1], mac.0[2], mac.0[3], mac.0[4], mac.0[5], 0, 0,
            ]);
        let mut interface = Interface::new(interface_config, &mut device, now());
        interface.update_ip_addrs(|addresses| {
            // The interface holds two addresses; this is the first.
            let _ = addresses.push(IpCidr::Ipv4(config.address));
        });
        if let Some(gateway) = config.gateway {
            // Only fails when the route table is full; it is empty here.
            let _ = interface.routes_mut().add_default_ipv4_route(gateway);
        }
        let wakeup = irq::init(&slot);
        Ok(Self {
            interface,
            device,
            sockets: SocketSet::new(alloc::vec::Vec::new()),
            wakeup,
            slot,
            config,
        })
    }

    /// The card's MAC address.
    pub fn mac(&self) -> MacDisplay {
        MacDisplay(self.config.mac.unwrap_or_else(|| self.device.mac_address()))
    }

    /// Runs smoltcp once: every received frame in, everything queued out,
    /// with the device's interrupts off (queued mode) and the notifications
    /// the new buffers need sent at the end, as one batch. Clears the
    /// wake-up flag first, so an interrupt during the poll keeps the next
    /// [`NetStack::sleep`] from sleeping. True if a socket's state may have
    /// changed.
    pub fn poll(&mut self) -> bool {
        irq::clear_woken();
        self.device.quiet();
        let result = self
            .interface
            .poll(now(), &mut self.device, &mut self.sockets);
        self.device.flush();
        result == PollResult::SocketStateChanged
    }

    /// Sleeps until a frame arrives, smoltcp has a timer due, or the counter
    /// reaches `deadline` (ticks), whichever comes first.
    pub fn sleep(&mut self, deadline: u64) {
        let mut deadline = deadline;
        if let Some(delay) = self.interface.poll_delay(now(), &self.sockets) {
            let micros = delay.total_micros();
            deadline = deadline.min(timer::now().saturating_add(ticks_in_micros(micros)));
        }
        if self.wakeup == Wakeup::Polling {
            let poll_at = timer::now().saturating_add(timer::ticks_in_ms(irq::POLL_INTERVAL_MS));
            deadline = deadline.min(poll_at);
        }
        let device = &self.device;
        irq::sleep_until(deadline, || device.arm_wakeup());
    }

    /// The device's packet counts.
    pub fn counters(&self) -> Counters {
        self.device.counters()
    }
}
