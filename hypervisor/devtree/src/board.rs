//! What the hypervisor learns from the board's device tree, without a heap.
//!
//! [`parse_board`] validates the blob's structure (see `validate`), then
//! walks the tree once with the `fdt` crate, keeping each node's ancestors
//! so that `reg` addresses are translated through every bus's `ranges`
//! (DTSpec 2.3.8), as on the Raspberry Pi's `/soc`.

use fdt::node::FdtNode;
use fdt::Fdt;

use crate::list::List;
use crate::validate::{validate, MAX_DEPTH};
use crate::DevtreeError;

/// Most `/memory` ranges recorded.
pub const MAX_MEMORY_RANGES: usize = 8;
/// Most CPUs recorded.
pub const MAX_CPUS: usize = 16;
/// Most reserved ranges (`/memreserve/` entries) recorded.
pub const MAX_RESERVED: usize = 8;
/// Most `virtio,mmio` nodes recorded (QEMU virt has 32).
pub const MAX_VIRTIO_MMIO: usize = 32;
/// SMC64 `CPU_ON` function ID, PSCI 0.2 and later (DEN0022 5.1.4).
pub const PSCI_CPU_ON_64: u32 = 0xC400_0003;

/// A physical address range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmioRange {
    /// First byte (a CPU physical address, after bus translation).
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Whether a GIC interrupt is shared or private to a CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InterruptKind {
    /// Shared peripheral interrupt (first cell 0).
    #[default]
    Spi,
    /// Private peripheral interrupt (first cell 1).
    Ppi,
    /// A source of the BCM2836 per-core local controller (Raspberry Pi 2
    /// and 3; two cells: source, flags): 0-3 are the secure physical,
    /// non-secure physical, hypervisor and virtual timers.
    Local,
}

/// An interrupt specifier: a GIC's (`#interrupt-cells = 3`) or the BCM2836
/// local controller's (2 cells).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interrupt {
    /// SPI or PPI.
    pub kind: InterruptKind,
    /// Number within its kind (SPI 1 = INTID 33, PPI 14 = INTID 30).
    pub number: u32,
    /// Trigger flags (bits 3:0: 1 edge rising, 4 level high, 8 level low;
    /// GICv2 PPIs carry a CPU mask in bits 15:8).
    pub flags: u32,
}

impl Interrupt {
    /// The GIC interrupt ID: 32 + n for an SPI, 16 + n for a PPI. A
    /// local-controller timer source is named by the PPI a GIC gives the
    /// same timer (hypervisor 26, virtual 27, ...), so the hypervisor's
    /// interrupt roles are the same on both; its other sources have none.
    pub fn intid(&self) -> Option<u32> {
        match self.kind {
            InterruptKind::Spi => self.number.checked_add(32),
            InterruptKind::Ppi => (self.number < 16).then(|| self.number + 16),
            InterruptKind::Local => match self.number {
                0 => Some(29),
                1 => Some(30),
                2 => Some(26),
                3 => Some(27),
                _ => None,
            },
        }
    }
}

/// Which UART model a node is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UartKind {
    /// `arm,pl011`.
    #[default]
    Pl011,
    /// `brcm,bcm2835-aux-uart`, the Raspberry Pi mini-UART.
    Bcm2835Aux,
    /// Something else named by `stdout-path` (no driver here).
    Other,
}

/// A UART.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Uart {
    /// Its model.
    pub kind: UartKind,
    /// Its registers.
    pub mmio: MmioRange,
    /// Its interrupt, if the node has one.
    pub interrupt: Option<Interrupt>,
}

/// The board's interrupt controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gic {
    /// GICv2 (`arm,cortex-a15-gic`, `arm,cortex-a7-gic`, `arm,gic-400`).
    V2 {
        /// GICD.
        distributor: MmioRange,
        /// GICC.
        cpu_interface: MmioRange,
        /// GICH, the virtual interface control (absent without the
        /// virtualization extensions, e.g. QEMU without `virtualization=on`).
        hyp_interface: Option<MmioRange>,
        /// GICV, the virtual CPU interface.
        virtual_cpu_interface: Option<MmioRange>,
        /// The maintenance interrupt (a PPI, 9 on QEMU virt).
        maintenance: Option<Interrupt>,
    },
    /// GICv3 (`arm,gic-v3`).
    V3 {
        /// GICD.
        distributor: MmioRange,
        /// The first redistributor region (GICR frames of all CPUs).
        redistributors: MmioRange,
        /// `#redistributor-regions` (only the first is recorded).
        redistributor_regions: u32,
        /// The maintenance interrupt.
        maintenance: Option<Interrupt>,
    },
    /// Not a GIC (a board such as the Raspberry Pi 3): what was found, so
    /// the hypervisor can say so.
    NotGic {
        /// Which controller.
        kind: OtherController,
        /// Its registers.
        registers: MmioRange,
    },
}

/// An interrupt controller that is not a GIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtherController {
    /// The BCM2836 per-core local controller (`brcm,bcm2836-l1-intc`,
    /// Raspberry Pi 2 and 3): timer and mailbox interrupts per core.
    Bcm2836Local,
    /// The BCM2835 ARM control block's controller (`brcm,bcm2835-armctrl-ic`,
    /// `brcm,bcm2836-armctrl-ic`).
    Bcm2835Armctrl,
}

impl core::fmt::Display for OtherController {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            OtherController::Bcm2836Local => "the BCM2836 per-core local controller",
            OtherController::Bcm2835Armctrl => "the BCM2835 ARM control block's controller",
        })
    }
}

/// The architected timer's interrupts (`arm,armv8-timer`, `arm,armv7-timer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timer {
    /// Secure physical timer (PPI 13 on QEMU virt).
    pub secure_phys: Interrupt,
    /// Non-secure physical timer (PPI 14).
    pub nonsecure_phys: Interrupt,
    /// Virtual timer (PPI 11).
    pub virt: Interrupt,
    /// Hypervisor (EL2) physical timer (PPI 10).
    pub hyp: Interrupt,
}

/// How a secondary CPU is started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EnableMethod {
    /// PSCI `CPU_ON`.
    #[default]
    Psci,
    /// Spin table: write the entry point to `release_address` and `sev`.
    SpinTable {
        /// `cpu-release-addr`.
        release_address: u64,
    },
    /// Missing or something else.
    Other,
}

/// One CPU from `/cpus`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpu {
    /// `reg`: the MPIDR affinity fields (Aff3 in bits 39:32, Aff2..Aff0 in 23:0).
    pub mpidr: u64,
    /// How to start it.
    pub enable_method: EnableMethod,
}

/// PSCI calling conduit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciConduit {
    /// `method = "smc"`.
    Smc,
    /// `method = "hvc"`.
    Hvc,
}

/// The `/psci` node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Psci {
    /// SMC or HVC.
    pub conduit: PsciConduit,
    /// The `CPU_ON` function ID (the `cpu_on` property, or the standard
    /// SMC64 ID for PSCI 0.2+).
    pub cpu_on: u32,
    /// Whether the firmware implements PSCI 0.2 or later (standard IDs,
    /// `PSCI_VERSION`, `SYSTEM_OFF`, ...).
    pub v0_2_or_later: bool,
}

/// A `virtio,mmio` transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioMmio {
    /// Its registers (0x200 bytes on QEMU virt).
    pub mmio: MmioRange,
    /// Its interrupt.
    pub interrupt: Interrupt,
    /// Whether DMA is cache-coherent (`dma-coherent` on the node or an
    /// ancestor, as Linux's `of_dma_is_coherent` reads it).
    pub dma_coherent: bool,
}

/// Everything the hypervisor needs from the board's device tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoardInfo {
    /// RAM ranges from the `/memory` nodes (zero-sized ones dropped).
    pub memory: List<MmioRange, MAX_MEMORY_RANGES>,
    /// The console: `/chosen/stdout-path`, else the first `arm,pl011`.
    pub console: Uart,
    /// The first `brcm,bcm2835-aux-uart`, if any.
    pub mini_uart: Option<Uart>,
    /// The interrupt controller.
    pub gic: Gic,
    /// The architected timer's interrupts.
    pub timer: Timer,
    /// The CPUs, in tree order.
    pub cpus: List<Cpu, MAX_CPUS>,
    /// PSCI, if the board has it.
    pub psci: Option<Psci>,
    /// `virtio,mmio` transports, in tree order.
    pub virtio_mmio: List<VirtioMmio, MAX_VIRTIO_MMIO>,
    /// RAM the firmware keeps (the header's `/memreserve/` entries, e.g.
    /// the Raspberry Pi's spin-table page at 0): never the hypervisor's.
    pub reserved: List<MmioRange, MAX_RESERVED>,
}

/// Parses the board's device tree.
pub fn parse_board(dtb: &[u8]) -> Result<BoardInfo, DevtreeError> {
    let dtb = validate(dtb)?;
    let fdt = Fdt::new(dtb).map_err(|_| DevtreeError::Malformed {
        offset: 0,
        what: "rejected by the fdt crate",
    })?;
    let root = fdt
        .all_nodes()
        .next()
        .ok_or(DevtreeError::MissingNode { what: "root node" })?;

    let mut walker = Walker {
        stdout_path: stdout_path(root),
        ..Walker::default()
    };
    let mut stack = [None; MAX_DEPTH + 1];
    walker.walk(root, &mut stack, 0)?;
    let mut board = walker.finish()?;
    board.reserved = memory_reservations(dtb)?;
    Ok(board)
}

/// The header's memory reservation block (DTSpec 5.3): (address, size)
/// pairs of big-endian 64-bit values up to a pair of zeros. Read here
/// rather than with `fdt`'s iterator, which hands addresses out as pointers
/// (32 bits wide on the ARMv7 hypervisor).
fn memory_reservations(dtb: &[u8]) -> Result<List<MmioRange, MAX_RESERVED>, DevtreeError> {
    /// Offset of `off_mem_rsvmap` in the header.
    const OFF_MEM_RSVMAP: usize = 16;
    let malformed = |what| DevtreeError::Malformed {
        offset: OFF_MEM_RSVMAP,
        what,
    };
    let start = dtb
        .get(OFF_MEM_RSVMAP..OFF_MEM_RSVMAP + 4)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u32::from_be_bytes)
        .and_then(|offset| usize::try_from(offset).ok())
        .ok_or(malformed("no memory reservation block offset"))?;
    let mut reserved = List::default();
    let mut at = start;
    loop {
        let entry = at
            .checked_add(16)
            .and_then(|end| dtb.get(at..end))
            .ok_or(malformed("memory reservation block runs past the blob"))?;
        let base = read_cells(entry, 2).ok_or(malformed("reservation address"))?;
        let size = entry
            .get(8..)
            .and_then(|rest| read_cells(rest, 2))
            .ok_or(malformed("reservation size"))?;
        if base == 0 && size == 0 {
            return Ok(reserved);
        }
        if size > 0 && reserved.push(MmioRange { base, size }).is_err() {
            return Err(malformed("more /memreserve/ entries than chroma records"));
        }
        at += 16;
    }
}

/// Value of a one-cell property.
fn u32_property(node: FdtNode<'_, '_>, name: &str) -> Option<u32> {
    let value = node.property(name)?.value;
    Some(u32::from_be_bytes(value.try_into().ok()?))
}

/// A string property (up to its first NUL).
fn str_property<'a>(node: FdtNode<'_, 'a>, name: &str) -> Option<&'a str> {
    let value = node.property(name)?.value;
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    core::str::from_utf8(value.get(..end)?).ok()
}

/// Whether the node's `compatible` list contains any of `wanted`.
fn compatible_with(node: FdtNode<'_, '_>, wanted: &[&str]) -> bool {
    listed(node.property("compatible").map(|p| p.value), wanted)
}

/// Whether a `compatible` value (NUL-separated strings), if any, contains
/// any of `wanted`. [`Walker::visit`] looks the property up once per node
/// and asks this a dozen times: every lookup walks the node's properties
/// and checks each name's UTF-8, most of the boot CPU's work before the
/// first guest runs.
fn listed(compatible: Option<&[u8]>, wanted: &[&str]) -> bool {
    compatible.is_some_and(|value| {
        value
            .split(|&b| b == 0)
            .any(|entry| wanted.iter().any(|w| w.as_bytes() == entry))
    })
}

/// Reads `cells` (0..=2) big-endian cells from the start of `bytes`.
fn read_cells(bytes: &[u8], cells: u32) -> Option<u64> {
    match cells {
        0 => Some(0),
        1 => Some(u64::from(u32::from_be_bytes(
            bytes.get(..4)?.try_into().ok()?,
        ))),
        2 => Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?)),
        _ => None,
    }
}

/// `#address-cells` of a node (DTSpec 2.3.5: 2 when absent).
fn address_cells(node: FdtNode<'_, '_>) -> u32 {
    u32_property(node, "#address-cells").unwrap_or(2)
}

/// `#size-cells` of a node (DTSpec 2.3.5: 1 when absent).
fn size_cells(node: FdtNode<'_, '_>) -> u32 {
    u32_property(node, "#size-cells").unwrap_or(1)
}

/// `/chosen/stdout-path` without its `:options`, resolved through `/aliases`.
fn stdout_path<'a>(root: FdtNode<'_, 'a>) -> Option<&'a str> {
    let mut chosen = None;
    let mut aliases = None;
    for child in root.children() {
        match child.name {
            "chosen" => chosen = Some(child),
            "aliases" => aliases = Some(child),
            _ => {}
        }
    }
    let chosen = chosen?;
    let path = str_property(chosen, "stdout-path")
        .or_else(|| str_property(chosen, "linux,stdout-path"))?;
    let path = path.split(':').next()?;
    if path.starts_with('/') {
        return Some(path);
    }
    let resolved = str_property(aliases?, path)?;
    resolved.starts_with('/').then_some(resolved)
}

type Stack<'b, 'a> = [Option<FdtNode<'b, 'a>>; MAX_DEPTH + 1];

/// The ancestors of the node being visited: `stack[..depth]`, root first.
struct Ancestors<'s, 'b, 'a> {
    stack: &'s Stack<'b, 'a>,
    depth: usize,
}

impl<'b, 'a> Ancestors<'_, 'b, 'a> {
    fn get(&self, index: usize) -> Option<FdtNode<'b, 'a>> {
        if index < self.depth {
            self.stack.get(index).copied().flatten()
        } else {
            None
        }
    }

    fn parent(&self) -> Option<FdtNode<'b, 'a>> {
        self.get(self.depth.checked_sub(1)?)
    }

    /// Whether `path` (e.g. `/soc/serial@7e215040`, unit addresses optional)
    /// names `node` under these ancestors.
    fn path_names(&self, path: &str, node: FdtNode<'_, '_>) -> bool {
        let mut segments = path.split('/').filter(|segment| !segment.is_empty());
        for index in 1..self.depth {
            let Some(ancestor) = self.get(index) else {
                return false;
            };
            if !segments
                .next()
                .is_some_and(|segment| name_matches(segment, ancestor.name))
            {
                return false;
            }
        }
        segments
            .next()
            .is_some_and(|segment| name_matches(segment, node.name))
            && segments.next().is_none()
    }

    /// Whether the node or an ancestor has `dma-coherent`.
    fn dma_coherent(&self, node: FdtNode<'_, '_>) -> bool {
        node.property("dma-coherent").is_some()
            || (0..self.depth).any(|index| {
                self.get(index)
                    .is_some_and(|a| a.property("dma-coherent").is_some())
            })
    }

    /// Entry `index` of the node's `reg`, translated to a CPU address.
    fn reg(
        &self,
        node: FdtNode<'_, '_>,
        index: usize,
        what: &'static str,
    ) -> Result<Option<MmioRange>, DevtreeError> {
        let bad = DevtreeError::BadProperty {
            node: what,
            property: "reg",
        };
        let parent = self.parent().ok_or(bad)?;
        let (address_cells, size_cells) = (address_cells(parent), size_cells(parent));
        if address_cells > 2 || size_cells > 2 {
            return Err(bad);
        }
        let Some(reg) = node.property("reg") else {
            return Ok(None);
        };
        let entry_len = usize::try_from(address_cells.saturating_add(size_cells).saturating_mul(4))
            .map_err(|_| bad)?;
        if entry_len == 0 || reg.value.len() % entry_len != 0 {
            return Err(bad);
        }
        let Some(entry) = reg.value.chunks_exact(entry_len).nth(index) else {
            return Ok(None);
        };
        let address_len = usize::try_from(address_cells.saturating_mul(4)).map_err(|_| bad)?;
        let address = read_cells(entry, address_cells).ok_or(bad)?;
        let size = read_cells(entry.get(address_len..).ok_or(bad)?, size_cells).ok_or(bad)?;
        let base = self.translate(address, size, what)?;
        Ok(Some(MmioRange { base, size }))
    }

    /// Translates a bus address up through each ancestor's `ranges`.
    fn translate(
        &self,
        mut address: u64,
        size: u64,
        what: &'static str,
    ) -> Result<u64, DevtreeError> {
        let bad = DevtreeError::BadProperty {
            node: what,
            property: "ranges of its bus",
        };
        // The root's children need no translation; each deeper bus maps
        // its children's addresses into its parent's.
        for level in (1..self.depth).rev() {
            let (Some(bus), Some(bus_parent)) = (self.get(level), self.get(level - 1)) else {
                return Err(bad);
            };
            let ranges = bus.property("ranges").ok_or(bad)?;
            if ranges.value.is_empty() {
                continue; // identity mapping
            }
            let (child_cells, parent_cells, length_cells) = (
                address_cells(bus),
                address_cells(bus_parent),
                size_cells(bus),
            );
            if child_cells > 2 || parent_cells > 2 || length_cells > 2 {
                return Err(bad);
            }
            let entry_len = usize::try_from((child_cells + parent_cells + length_cells) * 4)
                .map_err(|_| bad)?;
            if entry_len == 0 || ranges.value.len() % entry_len != 0 {
                return Err(bad);
            }
            let child_len = usize::try_from(child_cells * 4).map_err(|_| bad)?;
            let parent_len = usize::try_from(parent_cells * 4).map_err(|_| bad)?;
            let mut translated = None;
            for entry in ranges.value.chunks_exact(entry_len) {
                let child = read_cells(entry, child_cells).ok_or(bad)?;
                let parent =
                    read_cells(entry.get(child_len..).ok_or(bad)?, parent_cells).ok_or(bad)?;
                let length = read_cells(
                    entry.get(child_len + parent_len..).ok_or(bad)?,
                    length_cells,
                )
                .ok_or(bad)?;
                let offset = address.checked_sub(child);
                if let Some(offset) = offset {
                    let end = offset.checked_add(size).ok_or(bad)?;
                    if end <= length {
                        translated = Some(parent.checked_add(offset).ok_or(bad)?);
                        break;
                    }
                }
            }
            address = translated.ok_or(bad)?;
        }
        Ok(address)
    }
}

fn name_matches(segment: &str, name: &str) -> bool {
    segment == name || (!segment.contains('@') && name.split('@').next() == Some(segment))
}

/// The node's `interrupts`: three cells each (a GIC parent), or two where
/// the node's own `interrupt-parent` is the BCM2836 local controller.
fn interrupts<'a>(
    node: FdtNode<'_, 'a>,
    what: &'static str,
) -> Result<impl Iterator<Item = Result<Interrupt, DevtreeError>> + 'a, DevtreeError> {
    let bad = DevtreeError::BadProperty {
        node: what,
        property: "interrupts",
    };
    let local = node
        .interrupt_parent()
        .is_some_and(|parent| compatible_with(parent, &[BCM2836_LOCAL]));
    let size = if local { 8 } else { 12 };
    let value = node.property("interrupts").map_or(&[][..], |p| p.value);
    if !value.len().is_multiple_of(size) {
        return Err(bad);
    }
    Ok(value.chunks_exact(size).map(move |cells| {
        let cell = |index: usize| {
            read_cells(cells.get(index * 4..).ok_or(bad)?, 1)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or(bad)
        };
        if local {
            return Ok(Interrupt {
                kind: InterruptKind::Local,
                number: cell(0)?,
                flags: cell(1)?,
            });
        }
        let kind = match cell(0)? {
            0 => InterruptKind::Spi,
            1 => InterruptKind::Ppi,
            _ => return Err(bad),
        };
        Ok(Interrupt {
            kind,
            number: cell(1)?,
            flags: cell(2)?,
        })
    }))
}

/// Collected during the walk; checked in `finish`.
#[derive(Default)]
struct Walker<'a> {
    stdout_path: Option<&'a str>,
    memory: List<MmioRange, MAX_MEMORY_RANGES>,
    stdout_uart: Option<Uart>,
    first_pl011: Option<Uart>,
    mini_uart: Option<Uart>,
    gic: Option<Gic>,
    /// A controller that is not a GIC, kept in case there is no GIC.
    other_controller: Option<Gic>,
    timer: Option<Timer>,
    cpus: List<Cpu, MAX_CPUS>,
    psci: Option<Psci>,
    virtio_mmio: List<VirtioMmio, MAX_VIRTIO_MMIO>,
}

const GIC_V2: [&str; 3] = ["arm,cortex-a15-gic", "arm,cortex-a7-gic", "arm,gic-400"];
const GIC_V3: [&str; 1] = ["arm,gic-v3"];
const TIMER: [&str; 2] = ["arm,armv8-timer", "arm,armv7-timer"];
/// The BCM2836 per-core local interrupt controller (Raspberry Pi 2 and 3).
const BCM2836_LOCAL: &str = "brcm,bcm2836-l1-intc";
const PSCI: [&str; 3] = ["arm,psci", "arm,psci-0.2", "arm,psci-1.0"];
const PSCI_0_2: [&str; 2] = ["arm,psci-0.2", "arm,psci-1.0"];

impl<'a> Walker<'a> {
    fn walk<'b>(
        &mut self,
        node: FdtNode<'b, 'a>,
        stack: &mut Stack<'b, 'a>,
        depth: usize,
    ) -> Result<(), DevtreeError> {
        {
            let ancestors = Ancestors { stack, depth };
            self.visit(node, &ancestors)?;
        }
        let slot = stack.get_mut(depth).ok_or(DevtreeError::Malformed {
            offset: 0,
            what: "nodes nested too deep",
        })?;
        *slot = Some(node);
        let child_depth = depth.checked_add(1).ok_or(DevtreeError::Malformed {
            offset: 0,
            what: "nodes nested too deep",
        })?;
        for child in node.children() {
            self.walk(child, stack, child_depth)?;
        }
        Ok(())
    }

    fn visit(
        &mut self,
        node: FdtNode<'_, 'a>,
        ancestors: &Ancestors<'_, '_, 'a>,
    ) -> Result<(), DevtreeError> {
        let depth = ancestors.depth;
        let device_type = str_property(node, "device_type");
        if depth == 1 && device_type == Some("memory") {
            for index in 0.. {
                let Some(range) = ancestors.reg(node, index, "memory")? else {
                    break;
                };
                if range.size > 0 {
                    self.memory.push(range).map_err(|_| DevtreeError::TooMany {
                        what: "memory ranges",
                        max: MAX_MEMORY_RANGES,
                    })?;
                }
            }
        }
        if depth == 2
            && device_type == Some("cpu")
            && ancestors.parent().is_some_and(|p| p.name == "cpus")
        {
            self.cpu(node, ancestors)?;
        }

        let compatible = node.property("compatible").map(|p| p.value);
        let is_pl011 = listed(compatible, &["arm,pl011"]);
        let is_aux = listed(compatible, &["brcm,bcm2835-aux-uart"]);
        let is_stdout = self
            .stdout_path
            .is_some_and(|path| ancestors.path_names(path, node));
        if is_pl011 || is_aux || is_stdout {
            let kind = match (is_pl011, is_aux) {
                (true, _) => UartKind::Pl011,
                (_, true) => UartKind::Bcm2835Aux,
                _ => UartKind::Other,
            };
            let mmio = ancestors
                .reg(node, 0, "UART")?
                .ok_or(DevtreeError::BadProperty {
                    node: "UART",
                    property: "reg",
                })?;
            // The console is polled: its interrupt is information only.
            // One that is not a GIC's (the Pi 3's ARM control block takes
            // two cells) is left out rather than refusing the board.
            let interrupt = interrupts(node, "UART")
                .ok()
                .and_then(|mut list| list.next())
                .and_then(Result::ok);
            let uart = Uart {
                kind,
                mmio,
                interrupt,
            };
            if is_stdout && self.stdout_uart.is_none() {
                self.stdout_uart = Some(uart);
            }
            if is_pl011 && self.first_pl011.is_none() {
                self.first_pl011 = Some(uart);
            }
            if is_aux && self.mini_uart.is_none() {
                self.mini_uart = Some(uart);
            }
        }

        let v2 = listed(compatible, &GIC_V2);
        if (v2 || listed(compatible, &GIC_V3)) && self.gic.is_none() {
            self.gic = Some(Self::gic(node, ancestors, v2)?);
        }
        let other = if listed(compatible, &[BCM2836_LOCAL]) {
            Some(OtherController::Bcm2836Local)
        } else if listed(
            compatible,
            &["brcm,bcm2836-armctrl-ic", "brcm,bcm2835-armctrl-ic"],
        ) {
            Some(OtherController::Bcm2835Armctrl)
        } else {
            None
        };
        if let Some(kind) = other {
            // The per-core controller is the root one where both exist.
            let better = match self.other_controller {
                None => true,
                Some(Gic::NotGic { kind: current, .. }) => current != OtherController::Bcm2836Local,
                Some(_) => false,
            };
            if let (true, Some(registers)) =
                (better, ancestors.reg(node, 0, "interrupt controller")?)
            {
                self.other_controller = Some(Gic::NotGic { kind, registers });
            }
        }
        if listed(compatible, &TIMER) && self.timer.is_none() {
            let bad = DevtreeError::BadProperty {
                node: "timer",
                property: "interrupts",
            };
            let mut list = interrupts(node, "timer")?;
            let mut next = || list.next().unwrap_or(Err(bad));
            self.timer = Some(Timer {
                secure_phys: next()?,
                nonsecure_phys: next()?,
                virt: next()?,
                hyp: next()?,
            });
        }
        if listed(compatible, &PSCI) && self.psci.is_none() {
            let conduit = match str_property(node, "method") {
                Some("smc") => PsciConduit::Smc,
                Some("hvc") => PsciConduit::Hvc,
                _ => {
                    return Err(DevtreeError::BadProperty {
                        node: "PSCI",
                        property: "method",
                    })
                }
            };
            let v0_2_or_later = listed(compatible, &PSCI_0_2);
            let cpu_on = match (u32_property(node, "cpu_on"), v0_2_or_later) {
                (Some(id), _) => id,
                (None, true) => PSCI_CPU_ON_64,
                (None, false) => {
                    return Err(DevtreeError::BadProperty {
                        node: "PSCI",
                        property: "cpu_on",
                    })
                }
            };
            self.psci = Some(Psci {
                conduit,
                cpu_on,
                v0_2_or_later,
            });
        }
        if listed(compatible, &["virtio,mmio"]) {
            let mmio = ancestors
                .reg(node, 0, "virtio-mmio")?
                .ok_or(DevtreeError::BadProperty {
                    node: "virtio-mmio",
                    property: "reg",
                })?;
            let interrupt =
                interrupts(node, "virtio-mmio")?
                    .next()
                    .ok_or(DevtreeError::BadProperty {
                        node: "virtio-mmio",
                        property: "interrupts",
                    })??;
            let transport = VirtioMmio {
                mmio,
                interrupt,
                dma_coherent: ancestors.dma_coherent(node),
            };
            self.virtio_mmio
                .push(transport)
                .map_err(|_| DevtreeError::TooMany {
                    what: "virtio-mmio nodes",
                    max: MAX_VIRTIO_MMIO,
                })?;
        }
        Ok(())
    }

    fn cpu(
        &mut self,
        node: FdtNode<'_, 'a>,
        ancestors: &Ancestors<'_, '_, 'a>,
    ) -> Result<(), DevtreeError> {
        let bad = |property| DevtreeError::BadProperty {
            node: "cpu",
            property,
        };
        let cpus = ancestors.parent().ok_or(bad("reg"))?;
        let cells = address_cells(cpus);
        let reg = node.property("reg").ok_or(bad("reg"))?;
        let mpidr = read_cells(reg.value, cells)
            .filter(|_| cells > 0)
            .ok_or(bad("reg"))?;
        let enable_method = match str_property(node, "enable-method") {
            Some("psci") => EnableMethod::Psci,
            Some("spin-table") => {
                let value = node
                    .property("cpu-release-addr")
                    .ok_or(bad("cpu-release-addr"))?
                    .value;
                let release_address = match value.len() {
                    4 => read_cells(value, 1),
                    8 => read_cells(value, 2),
                    _ => None,
                }
                .ok_or(bad("cpu-release-addr"))?;
                EnableMethod::SpinTable { release_address }
            }
            _ => EnableMethod::Other,
        };
        self.cpus
            .push(Cpu {
                mpidr,
                enable_method,
            })
            .map_err(|_| DevtreeError::TooMany {
                what: "CPUs",
                max: MAX_CPUS,
            })
    }

    fn gic(
        node: FdtNode<'_, 'a>,
        ancestors: &Ancestors<'_, '_, 'a>,
        v2: bool,
    ) -> Result<Gic, DevtreeError> {
        let bad = |property| DevtreeError::BadProperty {
            node: "GIC",
            property,
        };
        if u32_property(node, "#interrupt-cells") != Some(3) {
            return Err(bad("#interrupt-cells"));
        }
        let reg = |index| ancestors.reg(node, index, "GIC");
        let distributor = reg(0)?.ok_or(bad("reg"))?;
        let second = reg(1)?.ok_or(bad("reg"))?;
        let maintenance = interrupts(node, "GIC")?.next().transpose()?;
        Ok(if v2 {
            Gic::V2 {
                distributor,
                cpu_interface: second,
                hyp_interface: reg(2)?,
                virtual_cpu_interface: reg(3)?,
                maintenance,
            }
        } else {
            Gic::V3 {
                distributor,
                redistributors: second,
                redistributor_regions: u32_property(node, "#redistributor-regions").unwrap_or(1),
                maintenance,
            }
        })
    }

    fn finish(self) -> Result<BoardInfo, DevtreeError> {
        let missing = |what| DevtreeError::MissingNode { what };
        if self.memory.is_empty() {
            return Err(missing("/memory node with a non-empty reg"));
        }
        if self.cpus.is_empty() {
            return Err(missing("/cpus/cpu node"));
        }
        Ok(BoardInfo {
            memory: self.memory,
            console: self
                .stdout_uart
                .or(self.first_pl011)
                .ok_or(missing("console UART (stdout-path or arm,pl011)"))?,
            mini_uart: self.mini_uart,
            gic: self.gic.or(self.other_controller).ok_or(missing(
                "interrupt controller (arm,gic-400, arm,cortex-a15-gic, arm,gic-v3 or brcm,bcm2836-l1-intc)",
            ))?,
            timer: self.timer.ok_or(missing("timer (arm,armv8-timer)"))?,
            cpus: self.cpus,
            psci: self.psci,
            virtio_mmio: self.virtio_mmio,
            reserved: List::default(),
        })
    }
}
