//! `cargo xtask sdcard`: the Raspberry Pi SD-card image, read back with
//! tools that share nothing with the code that wrote it (`sfdisk` from
//! util-linux for the partition table, mtools for the FAT32 file system,
//! `dpkg-deb` and `sha256sum` for the pinned firmware package):
//!
//! - one bootable FAT32 (type 0x0c, LBA) partition at 4 MiB, whose boot
//!   sector counts the 8192 sectors before it as hidden;
//! - exactly the expected files at its root;
//! - `config.txt` with the settings the firmware needs;
//! - the device tree byte-equal to `build/linux/dtbs/`'s, the firmware
//!   byte-equal to the files of the pinned `raspi-firmware` .deb (its
//!   SHA-256 checked against the lock);
//! - `kernel8.img` byte-equal to the bundle `cargo xtask run --board rpi4`
//!   just booted under QEMU's `raspi4b` for the same configuration, whose
//!   probe guests passed: so the card's kernel is one that boots.
//!
//! The negative controls change one thing each in a copy of the image (a
//! byte of `kernel8.img`, a missing firmware file, an extra file, a
//! `config.txt` without the UART, the partition type, the boot sector's
//! hidden sectors) and the same check
//! must fail on each, naming it.
//!
//! Every test is named `sdcard_...` (`scripts/test.sh sdcard`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chroma_systest::{boot, config_toml, expected_lines, workspace_root, xtask_command, Board, Vm};

/// Where the boot partition starts in the image.
const PARTITION_OFFSET: u64 = 4 << 20;

/// One board's card, as the firmware of that Raspberry Pi model needs it.
struct Card {
    /// `--board`.
    board: &'static str,
    /// The device tree's file name (in `build/linux/dtbs/` and on the card).
    dtb: &'static str,
    /// The firmware files from the package's `/usr/lib/raspi-firmware/`.
    firmware: &'static [&'static str],
    /// config.txt settings only this model has.
    model_settings: &'static [&'static str],
}

/// The Raspberry Pi 4 Model B: its EEPROM loads start4.elf itself.
const PI4: Card = Card {
    board: "rpi4",
    dtb: "bcm2711-rpi-4-b.dtb",
    firmware: &["start4.elf", "fixup4.dat"],
    model_settings: &["enable_gic=1"],
};

/// The Raspberry Pi 3 Model B's card.
const PI3: Card = Card {
    board: "rpi3",
    dtb: "bcm2837-rpi-3-b.dtb",
    firmware: &["bootcode.bin", "start.elf", "fixup.dat"],
    model_settings: &["core_freq=250"],
};

/// What the card must hold.
struct Expected {
    /// The card's model.
    card: &'static Card,
    /// The firmware files, taken from the pinned package.
    firmware: Vec<(String, Vec<u8>)>,
    /// The device tree's name and bytes.
    dtb: (String, Vec<u8>),
    /// The bundle `xtask run` booted.
    bundle: Vec<u8>,
}

/// Runs `command`, returning its stdout, or an error with its stderr.
fn output(command: &mut Command) -> Result<Vec<u8>, String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run {command:?}: {error}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "{command:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// An mtools command on the image's boot partition.
fn mtools(tool: &str, image: &Path) -> Command {
    let mut command = Command::new(tool);
    // The image is not a floppy: no geometry checks.
    command.env("MTOOLS_SKIP_CHECK", "1");
    command
        .arg("-i")
        .arg(format!("{}@@{PARTITION_OFFSET}", image.display()));
    command
}

/// `sfdisk`, which Debian installs in /usr/sbin (not on every user's PATH).
fn sfdisk() -> Command {
    let sbin = Path::new("/usr/sbin/sfdisk");
    if sbin.exists() {
        Command::new(sbin)
    } else {
        Command::new("sfdisk")
    }
}

/// Checks the card image with sfdisk and mtools; the error lists every problem.
fn check_card(image: &Path, expected: &Expected) -> Result<(), String> {
    let mut problems = Vec::new();

    // The partition table: DOS, one partition at 8192 sectors, type c, bootable.
    let dump = String::from_utf8_lossy(&output(sfdisk().arg("--dump").arg(image))?).into_owned();
    if !dump.lines().any(|line| line.trim() == "label: dos") {
        problems.push(format!("not a DOS partition table:\n{dump}"));
    }
    let partitions: Vec<&str> = dump
        .lines()
        .filter(|line| line.contains(": start="))
        .collect();
    match partitions.as_slice() {
        [one] => {
            let fields: Vec<String> = one
                .split_once(':')
                .map(|(_, rest)| rest)
                .unwrap_or_default()
                .split(',')
                .map(|field| field.split_whitespace().collect::<Vec<_>>().join(""))
                .collect();
            for want in ["start=8192", "type=c", "bootable"] {
                if !fields.iter().any(|field| field == want) {
                    problems.push(format!("partition {one:?} lacks {want}"));
                }
            }
        }
        _ => problems.push(format!("expected one partition:\n{dump}")),
    }

    // The file system: FAT32 (the boot sector's type string at 0x52).
    let raw = std::fs::read(image).map_err(|error| format!("{}: {error}", image.display()))?;
    let fs_type = usize::try_from(PARTITION_OFFSET)
        .ok()
        .and_then(|offset| raw.get(offset + 0x52..offset + 0x5a));
    if fs_type != Some(&b"FAT32   "[..]) {
        problems.push(format!(
            "boot sector's file system type is {fs_type:?}, not FAT32"
        ));
    }
    // Its hidden sectors (BPB_HiddSec at 0x1c): the partition's start.
    let hidden = usize::try_from(PARTITION_OFFSET)
        .ok()
        .and_then(|offset| raw.get(offset + 0x1c..offset + 0x20));
    if hidden != Some(&8192u32.to_le_bytes()[..]) {
        problems.push(format!(
            "boot sector's hidden sectors are {hidden:?}, not 8192"
        ));
    }

    // The listing: exactly these files.
    let listing =
        String::from_utf8_lossy(&output(mtools("mdir", image).args(["-b", "::"]))?).into_owned();
    let mut found: Vec<String> = listing
        .lines()
        .filter_map(|line| line.trim().strip_prefix("::/"))
        .map(str::to_owned)
        .collect();
    found.sort();
    let mut wanted: Vec<String> = expected
        .firmware
        .iter()
        .map(|(name, _)| name.clone())
        .chain([
            expected.dtb.0.clone(),
            "config.txt".into(),
            "kernel8.img".into(),
        ])
        .collect();
    wanted.sort();
    if found != wanted {
        problems.push(format!("files {found:?}, expected {wanted:?}"));
    }

    // The bytes of every file (a missing one is reported above).
    let card_file =
        |name: &str| output(mtools("mcopy", image).args(["-n", &format!("::{name}"), "-"]));
    let mut compare = |name: &str, want: &[u8]| match card_file(name) {
        Ok(got) if got == want => {}
        Ok(got) => problems.push(format!(
            "{name} differs from what it should be ({} bytes, expected {})",
            got.len(),
            want.len()
        )),
        Err(error) => problems.push(format!("{name}: {error}")),
    };
    for (name, bytes) in &expected.firmware {
        compare(name, bytes);
    }
    compare(&expected.dtb.0, &expected.dtb.1);
    compare("kernel8.img", &expected.bundle);

    // config.txt: what the firmware needs to boot chroma.
    match card_file("config.txt") {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let settings: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .collect();
            let device_tree = format!("device_tree={}", expected.card.dtb);
            let common = [
                "arm_64bit=1",
                "enable_uart=1",
                "kernel=kernel8.img",
                "kernel_address=0x80000",
                device_tree.as_str(),
            ];
            for want in common.iter().chain(expected.card.model_settings) {
                if !settings.contains(want) {
                    problems.push(format!("config.txt lacks {want}:\n{text}"));
                }
            }
        }
        Err(error) => problems.push(format!("config.txt: {error}")),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// `card`'s firmware files and the licence, unpacked with dpkg-deb from the
/// .deb that `scripts/raspi-firmware/packages.lock` pins (in fetch.sh's
/// cache, its SHA-256 checked here against the lock).
fn pinned_firmware(card: &Card, scratch: &Path) -> Vec<(String, Vec<u8>)> {
    let root = workspace_root();
    let lock = std::fs::read_to_string(root.join("scripts/raspi-firmware/packages.lock"))
        .expect("read the firmware lock");
    let line = lock
        .lines()
        .find(|line| line.starts_with("raspi-firmware "))
        .expect("the lock pins raspi-firmware");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (sha, pool_path) = (fields[3], fields[6]);
    let deb = root
        .join("build/raspi-firmware/cache")
        .join(pool_path.rsplit('/').next().unwrap());
    let sum = output(Command::new("sha256sum").arg(&deb)).expect("sha256sum of the cached .deb");
    assert!(
        String::from_utf8_lossy(&sum).starts_with(sha),
        "{} does not match the lock's SHA-256 {sha}",
        deb.display()
    );
    let unpacked = scratch.join("raspi-firmware");
    let _ = std::fs::remove_dir_all(&unpacked);
    output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked)).expect("dpkg-deb -x");
    let file = |path: &str| std::fs::read(unpacked.join(path)).expect(path);
    let mut files: Vec<(String, Vec<u8>)> = card
        .firmware
        .iter()
        .map(|name| {
            (
                (*name).to_owned(),
                file(&format!("usr/lib/raspi-firmware/{name}")),
            )
        })
        .collect();
    files.push((
        "raspi-firmware.copyright".into(),
        file("usr/share/doc/raspi-firmware/copyright"),
    ));
    files
}

/// A sparse copy of `image` at `copy`.
fn copy_image(image: &Path, copy: &Path) {
    output(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(image)
            .arg(copy),
    )
    .expect("copy the image");
}

/// The check fails on `image` and names `needle`.
fn assert_caught(image: &Path, expected: &Expected, needle: &str) {
    match check_card(image, expected) {
        Ok(()) => panic!(
            "{}: the check passed, expected it to catch {needle:?}",
            image.display()
        ),
        Err(problems) => assert!(problems.contains(needle), "{needle:?} not in:\n{problems}"),
    }
}

/// Boots a probe pair with `xtask run` on `board`, writes `card`'s image for
/// the same configuration, checks it, and shows that the check catches one
/// thing wrong in each of five copies.
fn card_holds_the_bundle_run_boots(card: &'static Card, board: Board) {
    // Boot the configuration with `xtask run` first: its probes pass, and
    // its bundle is what kernel8.img must be.
    let name = format!("sdcard_{}", card.board);
    let config = config_toml(&[
        Vm::new("probe", "probe").vcpus(2),
        Vm::new("probe2", "probe"),
    ]);
    let run = boot(&name, &config, board);
    run.assert_vm_printed_in_order("probe", &expected_lines("probe"));
    run.assert_vm_never_printed("probe", "FAIL");
    run.assert_all_stopped(2, 0);
    run.assert_success();
    let root = workspace_root();
    let scratch = root.join("target").join("systest").join(&name);
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let config_path: PathBuf = root
        .join("target")
        .join("systest")
        .join(format!("{name}.toml"));
    let bundle = std::fs::read(
        root.join("build")
            .join(card.board)
            .join(format!("bundle-{name}.bin")),
    )
    .expect("the bundle xtask run booted");

    // The card for the same configuration.
    let image = scratch.join(format!("chroma-{}.img", card.board));
    let mut sdcard = xtask_command();
    sdcard
        .args(["sdcard", "--board", card.board, "--config"])
        .arg(&config_path)
        .arg("-o")
        .arg(&image);
    if std::env::var_os("CHROMA_XTASK").is_some() {
        sdcard.arg("--no-build");
    }
    eprintln!("systest: {name}: {sdcard:?}");
    let made = sdcard
        .stdin(Stdio::null())
        .output()
        .expect("run xtask sdcard");
    let stderr = String::from_utf8_lossy(&made.stderr);
    assert!(made.status.success(), "xtask sdcard failed:\n{stderr}");
    assert!(stderr.contains("dd if="), "{stderr}");

    let expected = Expected {
        card,
        firmware: pinned_firmware(card, &scratch),
        dtb: (
            card.dtb.to_owned(),
            std::fs::read(root.join("build/linux/dtbs").join(card.dtb)).expect("the DTB"),
        ),
        bundle,
    };
    if let Err(problems) = check_card(&image, &expected) {
        panic!("{}:\n{problems}", image.display());
    }

    // Negative controls, each on a copy of the good image.
    // 1. One byte of kernel8.img flipped.
    let flipped = scratch.join("flipped.img");
    copy_image(&image, &flipped);
    let mut kernel = expected.bundle.clone();
    let middle = kernel.len() / 2;
    kernel[middle] ^= 0x01;
    let kernel_file = scratch.join("kernel8.img");
    std::fs::write(&kernel_file, &kernel).unwrap();
    output(
        mtools("mcopy", &flipped)
            .arg("-o")
            .arg(&kernel_file)
            .arg("::kernel8.img"),
    )
    .expect("mcopy the corrupted kernel8.img");
    assert_caught(&flipped, &expected, "kernel8.img differs");
    // 2. A firmware file missing (the last one: fixup*.dat).
    let missing = scratch.join("missing.img");
    copy_image(&image, &missing);
    let gone = card.firmware[card.firmware.len() - 1];
    output(mtools("mdel", &missing).arg(format!("::{gone}"))).expect("mdel");
    assert_caught(&missing, &expected, &format!("{gone}: "));
    assert_caught(&missing, &expected, "files [");
    // 3. A file too many.
    let extra = scratch.join("extra.img");
    copy_image(&image, &extra);
    output(
        mtools("mcopy", &extra)
            .arg(&kernel_file)
            .arg("::kernel7.img"),
    )
    .expect("mcopy");
    assert_caught(&extra, &expected, "files [");
    // 4. config.txt without the UART.
    let no_uart = scratch.join("no-uart.img");
    copy_image(&image, &no_uart);
    let text = output(mtools("mcopy", &image).args(["-n", "::config.txt", "-"])).unwrap();
    let config_file = scratch.join("config.txt");
    let text = String::from_utf8(text).unwrap();
    std::fs::write(&config_file, text.replace("enable_uart=1", "enable_uart=0")).unwrap();
    output(
        mtools("mcopy", &no_uart)
            .arg("-o")
            .arg(&config_file)
            .arg("::config.txt"),
    )
    .expect("mcopy");
    assert_caught(&no_uart, &expected, "config.txt lacks enable_uart=1");
    // 5. A FAT16 partition type (0x0e) in the table.
    let retyped = scratch.join("retyped.img");
    copy_image(&image, &retyped);
    output(sfdisk().arg("--part-type").arg(&retyped).args(["1", "e"])).expect("sfdisk --part-type");
    assert_caught(&retyped, &expected, "lacks type=c");
    // 6. A boot sector that counts no hidden sectors (what fatfs alone writes).
    let unhidden = scratch.join("unhidden.img");
    copy_image(&image, &unhidden);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&unhidden)
            .unwrap();
        file.seek(SeekFrom::Start(PARTITION_OFFSET + 0x1c)).unwrap();
        file.write_all(&[0; 4]).unwrap();
    }
    assert_caught(&unhidden, &expected, "hidden sectors are");
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn sdcard_rpi4_image_holds_the_firmware_dtb_config_and_the_bundle_run_boots() {
    if !chroma_systest::qemu_at_least(10, 0, "the raspi4b machine (--board rpi4)") {
        return;
    }
    card_holds_the_bundle_run_boots(&PI4, Board::rpi4());
}

#[test]
fn sdcard_rpi3_image_holds_the_firmware_dtb_config_and_the_bundle_run_boots() {
    if !chroma_systest::qemu_at_least(10, 0, "the raspi3b machine (--board rpi3)") {
        return;
    }
    card_holds_the_bundle_run_boots(&PI3, Board::rpi3());
}
