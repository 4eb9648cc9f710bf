//! `cargo xtask sdcard`: a bootable Raspberry Pi SD-card image in one file.
//!
//! The image is an MBR (DOS) partition table with one bootable FAT32
//! partition (type 0x0c, LBA) at 4 MiB, which holds what the Pi's firmware
//! reads from its boot partition: the firmware itself (from Debian's
//! `raspi-firmware` package, pinned in `scripts/raspi-firmware/packages.lock`
//! and unpacked by `scripts/raspi-firmware/fetch.sh`), the board's device
//! tree (Debian's, from the pinned arm64 kernel package), a `config.txt`,
//! and `kernel8.img`: the bundle `cargo xtask run` boots for the same
//! configuration and board (the hypervisor with the configuration and the
//! guest images packed in), made by the same two functions
//! ([`crate::qemu::checked_manifest`], [`crate::qemu::build_bundle`]).
//!
//! No root, loop device or mkfs: the partition table is written with
//! `mbrman` and the file system with `fatfs`, into a plain file.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::Args;

use crate::config::ManifestOptions;
use crate::process::run_checked;
use crate::{workspace_root, Board, Result};

/// Options of `cargo xtask sdcard`.
#[derive(Args, Clone, Debug)]
pub struct SdcardArgs {
    /// The Raspberry Pi board the card boots (rpi3 or rpi4).
    #[arg(long, value_enum)]
    pub board: Board,
    /// VM configuration (TOML) packed into kernel8.img [default: the
    /// board's, as `cargo xtask run` boots it].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The image file to write (replaced if it exists).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Use the images already in build/ (as `run --no-build`; for the tests).
    #[arg(long, hide = true)]
    pub no_build: bool,
}

/// Bytes in a sector of the image (an SD card's logical block).
pub const SECTOR_BYTES: u64 = 512;
/// Where the boot partition starts: 4 MiB, a multiple of every SD card's
/// erase block (allocation unit).
pub const PARTITION_START_BYTES: u64 = 4 << 20;
/// The smallest boot partition: 256 MiB, as Raspberry Pi OS makes it (and
/// comfortably above the 65525 clusters FAT32 needs).
pub const MIN_PARTITION_BYTES: u64 = 256 << 20;
/// The MBR partition type of FAT32 with LBA addressing.
pub const FAT32_LBA: u8 = 0x0c;
/// The volume label of the boot partition (FAT labels are 11 bytes).
const VOLUME_LABEL: [u8; 11] = *b"CHROMA-BOOT";
/// The FAT volume serial number and the MBR disk signature: fixed, so the
/// same inputs give a byte-identical image.
const VOLUME_ID: u32 = 0x4348_524d;
/// The MBR disk signature (`CHRM`).
const DISK_SIGNATURE: [u8; 4] = *b"CHRM";
/// The firmware's licence, copied beside the firmware files by fetch.sh.
pub const FIRMWARE_COPYRIGHT: &str = "raspi-firmware.copyright";

/// What one Raspberry Pi model's firmware needs on the boot partition.
#[derive(Debug)]
pub struct CardLayout {
    /// The board's name (`--board`).
    pub board_name: &'static str,
    /// The model, for config.txt's comment.
    pub model: &'static str,
    /// Firmware files from the package's `/usr/lib/raspi-firmware/`: the
    /// Pi 3's ROM loads `bootcode.bin`, which loads `start.elf` (the GPU
    /// firmware) and `fixup.dat` (its memory split); the Pi 4's EEPROM
    /// bootloader loads `start4.elf` and `fixup4.dat` itself. The `_x`,
    /// `_cd` and `_db` variants serve the camera, a small GPU memory and
    /// debugging: not needed.
    pub firmware: &'static [&'static str],
    /// The board's device tree: its name in `build/linux/dtbs/` and at the
    /// root of the card, where `device_tree=` names it.
    pub dtb: &'static str,
    /// config.txt lines only this model needs (with their comments).
    pub model_config: &'static str,
}

/// The Raspberry Pi 4 Model B.
pub const PI4: CardLayout = CardLayout {
    board_name: "rpi4",
    model: "Raspberry Pi 4 Model B",
    firmware: &["start4.elf", "fixup4.dat"],
    dtb: "bcm2711-rpi-4-b.dtb",
    model_config: "\
# chroma drives the GIC-400; the firmware's stub sets it up for the
# non-secure world (the default on the Pi 4, said here so it stays so).
enable_gic=1
",
};

/// The Raspberry Pi 3 Model B.
pub const PI3: CardLayout = CardLayout {
    board_name: "rpi3",
    model: "Raspberry Pi 3 Model B",
    firmware: &["bootcode.bin", "start.elf", "fixup.dat"],
    dtb: "bcm2837-rpi-3-b.dtb",
    model_config: "\
# The mini UART's baud rate derives from the core clock: enable_uart=1
# fixes it at 250 MHz on the Pi 3; said here so it stays so.
core_freq=250
",
};

/// The card layout of `board`, or why it has none.
pub fn layout(board: Board) -> Result<&'static CardLayout> {
    match board {
        Board::Rpi4 => Ok(&PI4),
        Board::Rpi3 => Ok(&PI3),
        Board::QemuVirtAarch64 | Board::QemuVirtArm => Err(format!(
            "--board {}: only a Raspberry Pi board boots from an SD card (rpi3, rpi4)",
            board.name()
        )),
    }
}

/// The `config.txt` the firmware reads for `layout`.
///
/// The console: chroma prints where the device tree's `stdout-path`
/// points, on both Pis Debian's `serial1`: the mini UART, which is the
/// *primary* UART the firmware puts on GPIO 14/15 with `enable_uart=1`
/// (the PL011 drives Bluetooth), at 115200 with the core clock fixed. So
/// no `dtoverlay=disable-bt` (Debian's package ships no overlays, and
/// Debian's trees lack the `__symbols__` one needs). Not yet checked on a
/// real board (README "Raspberry Pi: SD card").
///
/// Left at the firmware's defaults: `arm_boost` (the Pi 4's 1.8 GHz ARM
/// clock on newer boards: nothing chroma relies on), and
/// `disable_commandline_tags` (with a device tree there are no ATAGs to
/// keep out of the way).
pub fn config_txt(layout: &CardLayout) -> String {
    format!(
        "\
# config.txt for chroma on the {model} (board {board}), written by
# `cargo xtask sdcard`. The firmware reads it at power-on.

# Start the ARM cores in AArch64; the firmware's stub enters the kernel at
# EL2, where the hypervisor runs, and parks the other cores on the spin
# table the device tree names.
arm_64bit=1
# chroma's bundle: the hypervisor, its VM configuration and the guest images.
kernel=kernel8.img
# chroma is linked to run at 0x80000; the firmware may otherwise place a
# 64-bit kernel at 0x200000.
kernel_address=0x80000
# Debian's device tree for the board (beside this file); the firmware fills
# in the memory size and passes it to chroma in x0. With a device tree the
# firmware writes no ATAGs, so disable_commandline_tags is not needed.
device_tree={dtb}
# The serial console on GPIO 14 (TXD, pin 8) and GPIO 15 (RXD, pin 10),
# 115200 8N1: the primary UART, the mini UART (the PL011 drives Bluetooth),
# where the device tree's stdout-path (serial1) points and chroma prints.
enable_uart=1
{model_config}",
        model = layout.model,
        board = layout.board_name,
        dtb = layout.dtb,
        model_config = layout.model_config,
    )
}

/// One file of the boot partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardFile {
    /// Its name at the root of the partition.
    pub name: String,
    /// Its contents.
    pub bytes: Vec<u8>,
}

/// `build/raspi-firmware/boot/`: the firmware files `fetch.sh` unpacks.
pub fn firmware_dir() -> PathBuf {
    workspace_root()
        .join("build")
        .join("raspi-firmware")
        .join("boot")
}

/// Unpacks the pinned firmware package into [`firmware_dir`] (quick when it
/// is up to date).
pub fn ensure_firmware() -> Result<PathBuf> {
    let root = workspace_root();
    let mut command = Command::new("bash");
    command
        .arg(root.join("scripts").join("raspi-firmware").join("fetch.sh"))
        .current_dir(&root);
    run_checked(
        &mut command,
        "scripts/raspi-firmware/fetch.sh (the Raspberry Pi firmware from Debian's archive)",
    )?;
    Ok(firmware_dir())
}

/// Reads `path` or says which file could not be read.
fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
}

/// The files of the boot partition for `layout`: the firmware from
/// `firmware_dir`, its licence, the device tree from `dtbs_dir`, config.txt
/// and `kernel8.img` = `bundle`, in the order they are written.
pub fn card_files(
    layout: &CardLayout,
    firmware_dir: &Path,
    dtbs_dir: &Path,
    bundle: Vec<u8>,
) -> Result<Vec<CardFile>> {
    let mut files = Vec::new();
    for name in layout.firmware.iter().chain([&FIRMWARE_COPYRIGHT]) {
        files.push(CardFile {
            name: (*name).to_owned(),
            bytes: read(&firmware_dir.join(name))?,
        });
    }
    files.push(CardFile {
        name: layout.dtb.to_owned(),
        bytes: read(&dtbs_dir.join(layout.dtb))?,
    });
    files.push(CardFile {
        name: "config.txt".to_owned(),
        bytes: config_txt(layout).into_bytes(),
    });
    files.push(CardFile {
        name: "kernel8.img".to_owned(),
        bytes: bundle,
    });
    Ok(files)
}

/// The size of the boot partition for `files`: at least
/// [`MIN_PARTITION_BYTES`], else twice their size plus 32 MiB of room for
/// the FATs and for a user's additions, in whole MiB.
pub fn partition_bytes(files: &[CardFile]) -> u64 {
    let content: u64 = files
        .iter()
        .map(|file| u64::try_from(file.bytes.len()).unwrap_or(u64::MAX))
        .fold(0, u64::saturating_add);
    let wanted = content.saturating_mul(2).saturating_add(32 << 20);
    let mib = 1u64 << 20;
    wanted
        .div_ceil(mib)
        .saturating_mul(mib)
        .max(MIN_PARTITION_BYTES)
}

/// A fixed time stamp for every file (1980-01-01 00:00, the FAT epoch), so
/// that the same inputs give a byte-identical image.
#[derive(Debug)]
struct FixedTime;

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static FIXED_TIME: FixedTime = FixedTime;

/// Writes the image to `path`: the MBR with one bootable FAT32 (LBA)
/// partition at [`PARTITION_START_BYTES`] of [`partition_bytes`], formatted
/// and holding `files` at its root. The file is sparse where nothing is
/// written.
pub fn write_image(path: &Path, files: &[CardFile]) -> Result<()> {
    let at =
        |what: &str, error: &dyn std::fmt::Display| format!("{}: {what}: {error}", path.display());
    let partition = partition_bytes(files);
    let total = PARTITION_START_BYTES
        .checked_add(partition)
        .ok_or_else(|| at("size", &"too large"))?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|error| at("cannot create", &error))?;
    file.set_len(total)
        .map_err(|error| at("cannot size", &error))?;

    // The partition table: one primary partition, bootable, FAT32 LBA.
    let sector_size = u32::try_from(SECTOR_BYTES).map_err(|error| at("sector size", &error))?;
    let mut mbr = mbrman::MBR::new_from(&mut file, sector_size, DISK_SIGNATURE)
        .map_err(|error| at("partition table", &error))?;
    let starting_lba = u32::try_from(PARTITION_START_BYTES / SECTOR_BYTES)
        .map_err(|error| at("partition start", &error))?;
    let sectors = u32::try_from(partition / SECTOR_BYTES)
        .map_err(|_| at("partition", &"larger than an MBR partition can be (2 TiB)"))?;
    mbr[1] = mbrman::MBRPartitionEntry {
        boot: mbrman::BOOT_ACTIVE,
        first_chs: mbrman::CHS::empty(),
        sys: FAT32_LBA,
        last_chs: mbrman::CHS::empty(),
        starting_lba,
        sectors,
    };
    mbr.write_into(&mut file)
        .map_err(|error| at("writing the partition table", &error))?;

    // The file system, confined to the partition's bytes.
    fn slice(file: &mut File, end: u64) -> std::io::Result<fscommon::StreamSlice<&mut File>> {
        fscommon::StreamSlice::new(file, PARTITION_START_BYTES, end)
    }
    fatfs::format_volume(
        slice(&mut file, total).map_err(|error| at("partition", &error))?,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .volume_label(VOLUME_LABEL)
            .volume_id(VOLUME_ID),
    )
    .map_err(|error| at("formatting FAT32", &error))?;
    let options = fatfs::FsOptions::new().time_provider(&FIXED_TIME);
    let partition_stream = slice(&mut file, total).map_err(|error| at("partition", &error))?;
    let fs = fatfs::FileSystem::new(fscommon::BufStream::new(partition_stream), options)
        .map_err(|error| at("opening the new FAT32", &error))?;
    for card_file in files {
        let mut out = fs
            .root_dir()
            .create_file(&card_file.name)
            .map_err(|error| at(&format!("creating {}", card_file.name), &error))?;
        out.truncate()
            .and_then(|()| out.write_all(&card_file.bytes))
            .and_then(|()| out.flush())
            .map_err(|error| at(&format!("writing {}", card_file.name), &error))?;
    }
    fs.unmount()
        .map_err(|error| at("closing the FAT32", &error))?;
    set_hidden_sectors(&mut file, starting_lba).map_err(|error| at("boot sector", &error))?;
    file.sync_all().map_err(|error| at("cannot sync", &error))
}

/// Offset of BPB_HiddSec (u32) in a FAT boot sector: the sectors before the
/// partition. `fatfs` formats a volume as if it started the disk and leaves
/// it 0; `mkfs.fat` and the Raspberry Pi's own images set the partition's
/// start, and firmware that reads it should find the truth.
const HIDDEN_SECTORS_OFFSET: usize = 0x1c;
/// Offset of BPB_BkBootSec (u16) in a FAT32 boot sector: where the backup
/// copy of the boot sector is, in sectors from the partition's start.
const BACKUP_BOOT_SECTOR_OFFSET: usize = 0x32;

/// Writes `hidden` into BPB_HiddSec of the FAT32 boot sector at
/// [`PARTITION_START_BYTES`] and of its backup copy (Microsoft's FAT
/// specification, "Boot Sector and BPB"; fatfs 0.3 offers no option for it).
fn set_hidden_sectors(file: &mut File, hidden: u32) -> std::io::Result<()> {
    use std::io::{Seek as _, SeekFrom};
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut sector = [0u8; 512];
    file.seek(SeekFrom::Start(PARTITION_START_BYTES))?;
    file.read_exact(&mut sector)?;
    if sector[510..] != [0x55, 0xaa] {
        return Err(invalid("no boot sector signature"));
    }
    let backup = u16::from_le_bytes([
        sector[BACKUP_BOOT_SECTOR_OFFSET],
        sector[BACKUP_BOOT_SECTOR_OFFSET + 1],
    ]);
    for at_sector in [0, u64::from(backup)] {
        let offset = PARTITION_START_BYTES + at_sector * SECTOR_BYTES;
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(&mut sector)?;
        if sector[510..] != [0x55, 0xaa] {
            return Err(invalid("no signature on the backup boot sector"));
        }
        sector[HIDDEN_SECTORS_OFFSET..HIDDEN_SECTORS_OFFSET + 4]
            .copy_from_slice(&hidden.to_le_bytes());
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(&sector)?;
    }
    Ok(())
}

/// What [`read_image`] found on a card image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardContents {
    /// The partition's first sector.
    pub starting_lba: u32,
    /// Its length in sectors.
    pub sectors: u32,
    /// Its MBR type.
    pub partition_type: u8,
    /// Whether it is marked bootable (active).
    pub bootable: bool,
    /// How many MBR entries are in use.
    pub partition_count: usize,
    /// Whether the file system is FAT32.
    pub fat32: bool,
    /// BPB_HiddSec of the partition's boot sector.
    pub hidden_sectors: u32,
    /// The files at the root, with their contents, sorted by name.
    pub files: Vec<CardFile>,
}

/// Reads a card image back with `mbrman` and `fatfs` (`xtask sdcard` checks
/// what it wrote; the system test reads it with mtools and sfdisk instead).
pub fn read_image(path: &Path) -> Result<CardContents> {
    let at =
        |what: &str, error: &dyn std::fmt::Display| format!("{}: {what}: {error}", path.display());
    let mut file = File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|error| at("cannot open", &error))?;
    let sector_size = u32::try_from(SECTOR_BYTES).map_err(|error| at("sector size", &error))?;
    let mbr = mbrman::MBR::read_from(&mut file, sector_size)
        .map_err(|error| at("partition table", &error))?;
    let used: Vec<_> = mbr.iter().filter(|(_, entry)| entry.is_used()).collect();
    let Some((_, entry)) = used.first() else {
        return Err(at("partition table", &"no partition"));
    };
    let (starting_lba, sectors, partition_type, bootable) = (
        entry.starting_lba,
        entry.sectors,
        entry.sys,
        entry.boot == mbrman::BOOT_ACTIVE,
    );
    let start = u64::from(starting_lba) * SECTOR_BYTES;
    let end = start + u64::from(sectors) * SECTOR_BYTES;
    let hidden_sectors = {
        use std::io::{Seek as _, SeekFrom};
        let mut field = [0u8; 4];
        file.seek(SeekFrom::Start(start + HIDDEN_SECTORS_OFFSET as u64))
            .and_then(|_| file.read_exact(&mut field))
            .map_err(|error| at("boot sector", &error))?;
        u32::from_le_bytes(field)
    };
    let slice = fscommon::StreamSlice::new(&mut file, start, end)
        .map_err(|error| at("partition", &error))?;
    let fs = fatfs::FileSystem::new(slice, fatfs::FsOptions::new())
        .map_err(|error| at("FAT file system", &error))?;
    let mut files = Vec::new();
    for entry in fs.root_dir().iter() {
        let entry = entry.map_err(|error| at("root directory", &error))?;
        if entry.is_dir() {
            continue;
        }
        let mut bytes = Vec::new();
        entry
            .to_file()
            .read_to_end(&mut bytes)
            .map_err(|error| at(&format!("reading {}", entry.file_name()), &error))?;
        files.push(CardFile {
            name: entry.file_name(),
            bytes,
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(CardContents {
        starting_lba,
        sectors,
        partition_type,
        bootable,
        partition_count: used.len(),
        fat32: fs.fat_type() == fatfs::FatType::Fat32,
        hidden_sectors,
        files,
    })
}

/// Checks that `contents` is the card [`write_image`] writes for `files`:
/// one bootable FAT32 LBA partition at [`PARTITION_START_BYTES`] and
/// exactly `files`, byte for byte. The error names every difference.
pub fn check_contents(contents: &CardContents, files: &[CardFile]) -> Result<()> {
    let mut problems = Vec::new();
    if contents.partition_count != 1 {
        problems.push(format!(
            "{} partitions, expected 1",
            contents.partition_count
        ));
    }
    if u64::from(contents.starting_lba) * SECTOR_BYTES != PARTITION_START_BYTES {
        problems.push(format!(
            "the partition starts at sector {}, expected {}",
            contents.starting_lba,
            PARTITION_START_BYTES / SECTOR_BYTES
        ));
    }
    if contents.partition_type != FAT32_LBA {
        problems.push(format!(
            "partition type {:#04x}, expected {FAT32_LBA:#04x} (FAT32 LBA)",
            contents.partition_type
        ));
    }
    if !contents.bootable {
        problems.push("the partition is not marked bootable".to_owned());
    }
    if !contents.fat32 {
        problems.push("the file system is not FAT32".to_owned());
    }
    if contents.hidden_sectors != contents.starting_lba {
        problems.push(format!(
            "the boot sector says {} hidden sectors, the partition starts at {}",
            contents.hidden_sectors, contents.starting_lba
        ));
    }
    let mut expected: Vec<&CardFile> = files.iter().collect();
    expected.sort_by(|a, b| a.name.cmp(&b.name));
    for want in &expected {
        match contents.files.iter().find(|got| got.name == want.name) {
            None => problems.push(format!("{} is missing", want.name)),
            Some(got) if got.bytes != want.bytes => problems.push(format!(
                "{} differs ({} bytes, expected {})",
                want.name,
                got.bytes.len(),
                want.bytes.len()
            )),
            Some(_) => {}
        }
    }
    for got in &contents.files {
        if !expected.iter().any(|want| want.name == got.name) {
            problems.push(format!("{} is not expected", got.name));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Builds the bundle and writes the image.
pub fn run(args: &SdcardArgs) -> Result<ExitCode> {
    let layout = layout(args.board)?;
    let machine = crate::qemu::fixed_machine(args.board).ok_or_else(|| {
        format!(
            "--board {}: no fixed machine to check the configuration against",
            args.board.name()
        )
    })?;
    let config = args
        .config
        .clone()
        .unwrap_or_else(|| crate::qemu::default_config(args.board));
    // Say so before a build if the image cannot be written where asked.
    let parent = match args.output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(format!(
            "-o {}: {} is not a directory",
            args.output.display(),
            parent.display()
        ));
    }
    // The bundle exactly as `cargo xtask run` makes it for this board and
    // configuration (no run-time overrides: the file's cache mode and log
    // level stand).
    let (manifest, _uplink) =
        crate::qemu::checked_manifest(&config, &machine, &ManifestOptions::default())?;
    let dtbs_dir = {
        crate::images::ensure_rpi_dtbs()?;
        crate::images::dtbs_dir()
    };
    let firmware_dir = ensure_firmware()?;
    let (_images, bundle_path) =
        crate::qemu::build_bundle(args.board, &config, &manifest, args.no_build)?;
    let files = card_files(layout, &firmware_dir, &dtbs_dir, read(&bundle_path)?)?;

    // Write beside the output and rename, so a failure leaves no half image.
    let mut partial = args.output.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let written = write_image(&partial, &files)
        .and_then(|()| read_image(&partial))
        .and_then(|contents| {
            check_contents(&contents, &files)
                .map_err(|problem| format!("{}: read back: {problem}", partial.display()))
        });
    if let Err(error) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    std::fs::rename(&partial, &args.output).map_err(|error| {
        format!(
            "cannot rename {} to {}: {error}",
            partial.display(),
            args.output.display()
        )
    })?;
    let size = PARTITION_START_BYTES + partition_bytes(&files);
    eprintln!(
        "xtask: wrote {} ({} MiB: MBR, FAT32 boot partition at {} MiB) for {} with {}",
        args.output.display(),
        size >> 20,
        PARTITION_START_BYTES >> 20,
        layout.model,
        config.display()
    );
    for file in &files {
        eprintln!("xtask:   {:<28} {:>10} bytes", file.name, file.bytes.len());
    }
    eprintln!(
        "xtask: write it to a card with: dd if={} of=/dev/sdX bs=4M conv=fsync \
         (serial console: GPIO 14/15, 115200 8N1)",
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chroma-sdcard-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Stand-in firmware, licence and device tree for `layout` under `dir`.
    fn fake_inputs(layout: &CardLayout, dir: &Path) -> (PathBuf, PathBuf) {
        let firmware = dir.join("firmware");
        let dtbs = dir.join("dtbs");
        std::fs::create_dir_all(&firmware).unwrap();
        std::fs::create_dir_all(&dtbs).unwrap();
        for (index, name) in layout
            .firmware
            .iter()
            .chain([&FIRMWARE_COPYRIGHT])
            .enumerate()
        {
            let bytes: Vec<u8> = (0..5000 + index * 777)
                .map(|i| ((i * 7 + index) % 256).to_le_bytes()[0])
                .collect();
            std::fs::write(firmware.join(name), bytes).unwrap();
        }
        std::fs::write(dtbs.join(layout.dtb), [0xd0, 0x0d, 0xfe, 0xed, 1, 2, 3]).unwrap();
        (firmware, dtbs)
    }

    /// A stand-in bundle of `length` bytes.
    fn bundle(length: usize) -> Vec<u8> {
        (0..length).map(|i| (i % 251).to_le_bytes()[0]).collect()
    }

    #[test]
    fn only_the_pi_boards_have_a_card() {
        assert_eq!(layout(Board::Rpi4).unwrap().dtb, "bcm2711-rpi-4-b.dtb");
        assert_eq!(layout(Board::Rpi3).unwrap().dtb, "bcm2837-rpi-3-b.dtb");
        for board in [Board::QemuVirtAarch64, Board::QemuVirtArm] {
            let error = layout(board).unwrap_err();
            assert!(
                error.contains(board.name()) && error.contains("SD card"),
                "{error}"
            );
        }
    }

    #[test]
    fn config_txt_boots_kernel8_in_aarch64_with_the_dtb_and_the_uart() {
        for layout in [&PI4, &PI3] {
            let text = config_txt(layout);
            let settings: Vec<&str> = text
                .lines()
                .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
                .collect();
            let mut expected = vec![
                "arm_64bit=1",
                "kernel=kernel8.img",
                "kernel_address=0x80000",
            ];
            let device_tree = format!("device_tree={}", layout.dtb);
            expected.push(&device_tree);
            expected.push("enable_uart=1");
            if layout.board_name == "rpi4" {
                expected.push("enable_gic=1");
            } else {
                expected.push("core_freq=250");
            }
            assert_eq!(settings, expected, "{text}");
            // No overlay: Debian's package ships none.
            assert!(!text.contains("\ndtoverlay"), "{text}");
        }
        assert_eq!(PI3.firmware, ["bootcode.bin", "start.elf", "fixup.dat"]);
        assert_eq!(PI4.firmware, ["start4.elf", "fixup4.dat"]);
    }

    #[test]
    fn the_partition_is_at_least_256_mib_and_grows_with_the_files() {
        let small = [CardFile {
            name: "a".into(),
            bytes: vec![0; 1000],
        }];
        assert_eq!(partition_bytes(&small), 256 << 20);
        let big = [CardFile {
            name: "a".into(),
            bytes: vec![0; 200 << 20],
        }];
        assert_eq!(partition_bytes(&big), (400 + 32) << 20);
    }

    #[test]
    fn the_image_reads_back_with_every_file_and_is_reproducible() {
        let dir = scratch("roundtrip");
        let (firmware, dtbs) = fake_inputs(&PI4, &dir);
        let files = card_files(&PI4, &firmware, &dtbs, bundle(3 << 20)).unwrap();
        let names: Vec<&str> = files.iter().map(|file| file.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "start4.elf",
                "fixup4.dat",
                "raspi-firmware.copyright",
                "bcm2711-rpi-4-b.dtb",
                "config.txt",
                "kernel8.img"
            ]
        );
        let image = dir.join("card.img");
        write_image(&image, &files).unwrap();
        let contents = read_image(&image).unwrap();
        assert_eq!(contents.partition_count, 1);
        assert_eq!(contents.starting_lba, 8192);
        assert_eq!(u64::from(contents.sectors) * SECTOR_BYTES, 256 << 20);
        assert_eq!(contents.partition_type, 0x0c);
        assert!(contents.bootable && contents.fat32);
        // Both copies of the boot sector (the backup at sector 6) name the
        // partition's start as its hidden sectors.
        let raw = std::fs::read(&image).unwrap();
        for sector in [0usize, 6] {
            let at = (4 << 20) + sector * 512 + HIDDEN_SECTORS_OFFSET;
            assert_eq!(raw[at..at + 4], 8192u32.to_le_bytes(), "sector {sector}");
        }
        check_contents(&contents, &files).unwrap();
        assert_eq!(std::fs::metadata(&image).unwrap().len(), (4 + 256) << 20);
        // The same inputs give the same bytes.
        let again = dir.join("again.img");
        write_image(&again, &files).unwrap();
        assert!(std::fs::read(&image).unwrap() == std::fs::read(&again).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_check_catches_a_changed_byte_a_missing_and_an_extra_file() {
        let dir = scratch("negative");
        let (firmware, dtbs) = fake_inputs(&PI4, &dir);
        let files = card_files(&PI4, &firmware, &dtbs, bundle(100_000)).unwrap();
        let image = dir.join("card.img");
        write_image(&image, &files).unwrap();
        let good = read_image(&image).unwrap();
        check_contents(&good, &files).unwrap();

        // One byte of kernel8.img flipped on the card (found by its content
        // in the image file, where it sits whole: the file system is new).
        let mut raw = std::fs::read(&image).unwrap();
        let kernel = &files
            .iter()
            .find(|f| f.name == "kernel8.img")
            .unwrap()
            .bytes;
        let at = raw
            .windows(64)
            .position(|window| window == &kernel[1000..1064])
            .unwrap();
        raw[at] ^= 0x01;
        let corrupted = dir.join("corrupted.img");
        std::fs::write(&corrupted, &raw).unwrap();
        let error = check_contents(&read_image(&corrupted).unwrap(), &files).unwrap_err();
        assert!(error.contains("kernel8.img differs"), "{error}");

        // A missing firmware file, and one the card should not have.
        let mut fewer = good.clone();
        fewer.files.retain(|file| file.name != "start4.elf");
        let error = check_contents(&fewer, &files).unwrap_err();
        assert!(error.contains("start4.elf is missing"), "{error}");
        let mut more = good.clone();
        more.files.push(CardFile {
            name: "bootcode.bin".into(),
            bytes: vec![1],
        });
        let error = check_contents(&more, &files).unwrap_err();
        assert!(error.contains("bootcode.bin is not expected"), "{error}");

        // The partition's type, flag, start and file system.
        let mut wrong = good.clone();
        wrong.partition_type = 0x0b;
        wrong.bootable = false;
        wrong.starting_lba = 2048;
        wrong.fat32 = false;
        let error = check_contents(&wrong, &files).unwrap_err();
        for needle in [
            "type 0x0b",
            "not marked bootable",
            "sector 2048",
            "not FAT32",
        ] {
            assert!(error.contains(needle), "{needle}: {error}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_input_is_named() {
        let dir = scratch("missing");
        let (firmware, dtbs) = fake_inputs(&PI4, &dir);
        std::fs::remove_file(firmware.join("fixup4.dat")).unwrap();
        let error = card_files(&PI4, &firmware, &dtbs, bundle(10)).unwrap_err();
        assert!(error.contains("fixup4.dat"), "{error}");
        let error = read_image(&dir.join("no.img")).unwrap_err();
        assert!(error.contains("no.img"), "{error}");
        // Not an image: no partition table.
        std::fs::write(dir.join("zeros.img"), vec![0u8; 1 << 20]).unwrap();
        assert!(read_image(&dir.join("zeros.img")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
