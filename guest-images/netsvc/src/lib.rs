//! Network plumbing shared by the netsvc and netclient test guests: a heap,
//! a virtio-drivers `Hal`, the virtio-net device found in the DTB, its
//! interrupt, and a smoltcp interface over it.
//!
//! - [`heap`]: the global allocator (a buddy allocator on a static arena);
//! - [`hal`]: [`hal::GuestHal`], identity-mapped DMA from that heap;
//! - [`device`]: finds the first virtio-mmio network device in the DTB and
//!   adapts the driver to smoltcp's `Device`;
//! - [`driver`]: virtio-drivers' `VirtIONet` (default), or `VirtIONetRaw`
//!   with frames left in flight (`net.tx=queued`);
//! - [`transport`]: what virtio-drivers lacks for a polling driver: batched
//!   notifications checked as §2.7.10 says, and `used_event` by hand;
//! - [`irq`]: the device's SPI and the virtual timer through the GIC, and a
//!   sleep (WFI) that wakes on either;
//! - [`stack`]: [`stack::NetStack`], the smoltcp `Interface` with its static
//!   IPv4 address from the bootargs (`net.ip=`, `net.gw=`);
//! - [`main_stack`]: a 128 KiB stack for the guest's main loop (the
//!   runtime's 16 KiB is too small for virtio-drivers' `VirtIONet`, which
//!   is built by value);
//! - [`ping`]: ICMP echo requests;
//! - [`checksum`]: FNV-1a 64 and the xorshift byte stream both ends agree on.
//!
//! The guests run with the MMU off (see `chroma-guest-rt`), so memory is
//! Device-nGnRnE: uncached, hence coherent with the device without cache
//! maintenance, and without guaranteed exclusives, hence no locks here. Only
//! the boot CPU runs guest code; interrupt handlers never allocate.
#![no_std]
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod checksum;
pub mod device;
pub mod driver;
pub mod hal;
pub mod heap;
pub mod irq;
pub mod main_stack;
pub mod ping;
pub mod stack;
pub mod transport;

pub use stack::{NetConfig, NetError, NetStack};
