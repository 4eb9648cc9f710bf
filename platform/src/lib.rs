//! Boards chroma runs on: each is mostly constant data (what the device tree
//! does not say, or what is needed before it is parsed) plus the small
//! drivers for its console. Board facts otherwise come from the device tree.
//! What a guest sees is the same machine on every board
//! (`chroma_core::guest_map::QEMU_VIRT`), so it is not a board fact.
#![no_std]
#![deny(missing_docs)]
// No panic on a path a guest can reach (issue 10); tests may unwrap (clippy.toml).
// Where `clippy::indexing_slicing` is denied, and why: "Panics" in chroma-core's docs.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

pub mod bcm2835_pm;
pub mod mini_uart;
pub mod pl011;
pub mod qemu_virt_aarch64;
pub mod qemu_virt_arm;
pub mod rpi3;
pub mod rpi4;
pub mod uart;

/// What chroma needs to know about a board before and beyond its device tree.
#[derive(Clone, Copy, Debug)]
pub struct Board {
    /// The name the build and `--board` use.
    pub name: &'static str,
    /// The console UART, used until the device tree is parsed.
    pub early_uart: usize,
    /// Its model.
    pub early_uart_model: uart::UartModel,
    /// How the board is switched off when the device tree has no PSCI.
    pub power_off: PowerOff,
    /// The largest stage-2 leaf (bytes) that maps guest RAM: blocks as
    /// large as alignment allows on hardware, where they save TLB entries
    /// and walks ([`LARGEST_LEAF`]); pages only on QEMU's `virt` boards
    /// ([`PAGES_ONLY`]), whose TCG TLB keeps each stage 1+2 translation at
    /// the larger of the two stages' sizes (QEMU `target/arm/ptw.c`,
    /// `get_phys_addr_twostage`) and flushes its whole TLB for the
    /// translation regime on any by-VA invalidation inside a range it
    /// holds such a large page for (`accel/tcg/cputlb.c`,
    /// `tlb_flush_page_locked`). With 2 MiB stage-2 blocks every guest
    /// page counts as a large page, so each of a Linux guest's `TLBI VAE1`
    /// (fixmap updates at boot, every unmap later) empties the TLB, and the
    /// next accesses walk both stages again: a quarter of a Linux boot.
    pub stage2_largest_ram_leaf: u64,
}

/// [`Board::stage2_largest_ram_leaf`] for blocks as large as alignment allows.
pub const LARGEST_LEAF: u64 = u64::MAX;
/// [`Board::stage2_largest_ram_leaf`] for 4 KiB pages only.
pub const PAGES_ONLY: u64 = 4096;

/// How a board without PSCI ends a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerOff {
    /// PSCI SYSTEM_OFF (the device tree's `/psci` conduit).
    Psci,
    /// A reset by the BCM2835/BCM2711 power-management watchdog at `base`
    /// (the Raspberry Pi has no power switch; QEMU with `-no-reboot` exits
    /// on the reset).
    Bcm2835Watchdog {
        /// The PM block's physical (and, identity-mapped, virtual) address.
        base: usize,
    },
}

/// The board this image was built for.
#[cfg(feature = "board-qemu-virt-aarch64")]
pub const BOARD: Board = qemu_virt_aarch64::BOARD;

/// The board this image was built for.
#[cfg(all(feature = "board-rpi4", not(feature = "board-qemu-virt-aarch64")))]
pub const BOARD: Board = rpi4::BOARD;

/// The board this image was built for.
#[cfg(all(
    feature = "board-rpi3",
    not(feature = "board-qemu-virt-aarch64"),
    not(feature = "board-rpi4")
))]
pub const BOARD: Board = rpi3::BOARD;

/// The board this image was built for. (With both board features on, as
/// in `cargo clippy --all-features` on the host, the AArch64 board wins, as
/// in the hypervisor's build script.)
#[cfg(all(
    feature = "board-qemu-virt-arm",
    not(feature = "board-qemu-virt-aarch64"),
    not(feature = "board-rpi4"),
    not(feature = "board-rpi3")
))]
pub const BOARD: Board = qemu_virt_arm::BOARD;
