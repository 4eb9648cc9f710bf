//! One test per refusal, each beside the valid configuration it breaks.

use std::fs;
use std::path::{Path, PathBuf};

use chroma_manifest::Manifest;
use tempfile::TempDir;

use super::*;

const BOARD: BoardLimits = BoardLimits::aarch64(2, 1 << 30);

/// A fake arm64 Image: header with `text_offset`, `image_size` and the magic.
fn image(image_size: u64, file_len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; file_len.max(64)];
    bytes[8..16].copy_from_slice(&0u64.to_le_bytes());
    bytes[16..24].copy_from_slice(&image_size.to_le_bytes());
    bytes[0x38..0x3c].copy_from_slice(b"ARM\x64");
    bytes
}

/// A directory with `images/Image` (1 MiB loaded), `images/initrd` and a
/// configuration file written from `text`.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("images")).unwrap();
        fs::write(dir.path().join("images/Image"), image(1 << 20, 4096)).unwrap();
        fs::write(dir.path().join("images/initrd"), vec![7u8; 5000]).unwrap();
        fs::write(dir.path().join("images/not-an-image"), vec![0u8; 4096]).unwrap();
        Self { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("chroma.toml")
    }

    fn load(&self, text: &str) -> Result<Config, ConfigError> {
        self.load_on(text, &BOARD)
    }

    fn load_on(&self, text: &str, board: &BoardLimits) -> Result<Config, ConfigError> {
        fs::write(self.path(), text).unwrap();
        load(&self.path(), board)
    }

    /// Loads `text`, expects a refusal, and checks its key and kind.
    fn refuse(&self, text: &str, key: &str) -> ErrorKind {
        let error = self
            .load(text)
            .expect_err("configuration should be refused");
        assert_eq!(error.key, key, "{error}");
        assert_eq!(error.file, self.path());
        error.kind
    }
}

const VALID: &str = r#"
[hypervisor]
cache_mode = "force"
log_level = "debug"

[[switch]]
name = "lan0"
uplink = true

[[switch]]
name = "lan1"

[[vm]]
name = "probe"
kernel = "images/Image"
initrd = "images/initrd"
cmdline = "console=ttyAMA0"
memory = "64M"
vcpus = 2
cpus = [1, 0]
[[vm.net]]
switch = "lan0"
mac = "52:54:00:12:34:01"
[[vm.net]]
switch = "lan1"
trusted = true
ring = "split"

[[vm]]
name = "second"
kernel = "images/Image"
memory = 134217728
memory_base = 0x80000000
"#;

/// `VALID` with `from` replaced by `to` (which must occur).
fn edit(from: &str, to: &str) -> String {
    assert!(VALID.contains(from), "{from:?} not in VALID");
    VALID.replacen(from, to, 1)
}

#[test]
fn valid_configuration_loads() {
    let fixture = Fixture::new();
    let config = fixture.load(VALID).unwrap();
    assert_eq!(config.cache_mode, CacheMode::Force);
    assert_eq!(config.log_level, 3);
    assert_eq!(
        config.switches,
        [
            Switch {
                name: "lan0".into(),
                uplink: true
            },
            Switch {
                name: "lan1".into(),
                uplink: false
            }
        ]
    );
    assert_eq!(config.vms.len(), 2);

    let probe = &config.vms[0];
    assert_eq!(probe.name, "probe");
    assert_eq!(probe.kernel, fixture.dir.path().join("images/Image"));
    assert_eq!(
        probe.initrd.as_deref(),
        Some(fixture.dir.path().join("images/initrd").as_path())
    );
    assert_eq!(probe.initrd_bytes, 5000);
    assert_eq!(
        probe.kernel_header,
        ImageHeader {
            arch: GuestArch::Aarch64,
            text_offset: 0,
            image_size: 1 << 20,
            file_len: 4096
        }
    );
    assert_eq!(probe.memory_bytes, 64 << 20);
    assert_eq!(probe.memory_base, 0x4000_0000);
    assert_eq!(probe.vcpus, 2);
    assert_eq!(probe.cpus, [1, 0]);
    assert_eq!(probe.cmdline, "console=ttyAMA0");
    assert_eq!(
        probe.nets[0],
        Net {
            switch_index: 0,
            mac: [0x52, 0x54, 0, 0x12, 0x34, 1],
            trusted: false,
            ring: DEFAULT_RING,
            tso: true,
        }
    );
    assert_eq!(probe.nets[1].ring, RingLayout::Split);
    assert_eq!(probe.nets[1].switch_index, 1);
    assert!(probe.nets[1].trusted);
    assert_eq!(probe.nets[1].mac, derive_mac("probe", 1));

    let second = &config.vms[1];
    assert_eq!(second.memory_bytes, 128 << 20);
    assert_eq!(second.memory_base, 0x8000_0000);
    assert_eq!(second.vcpus, 1);
    assert_eq!(second.cpus, [0]);
    assert_eq!(second.initrd, None);
    assert_eq!(second.cmdline, "");
    assert!(second.nets.is_empty());
}

#[test]
fn defaults_apply_to_a_minimal_configuration() {
    let fixture = Fixture::new();
    let config = fixture
        .load("[[vm]]\nname = \"a\"\nkernel = \"images/Image\"\nmemory = \"2M\"\n")
        .unwrap_err();
    // 2 MiB cannot hold a 1 MiB kernel plus the 2 MiB device tree...
    assert!(matches!(config.kind, ErrorKind::ImagesDoNotFit { .. }));
    // ...but 4 MiB can.
    let config = fixture
        .load("[[vm]]\nname = \"a\"\nkernel = \"images/Image\"\nmemory = \"4M\"\n")
        .unwrap();
    assert_eq!(config.cache_mode, CacheMode::Auto);
    assert_eq!(config.log_level, 2);
    assert!(config.switches.is_empty());
    assert_eq!(config.vms[0].memory_base, DEFAULT_MEMORY_BASE);
}

#[test]
fn manifest_round_trips_the_configuration() {
    let fixture = Fixture::new();
    let config = fixture.load(VALID).unwrap();
    let runtime = RuntimeOptions {
        console_switch_key: 0x02,
    };
    let bytes = config.to_manifest(&runtime).unwrap();
    let manifest = Manifest::parse(&bytes).unwrap();
    let options = manifest.options();
    assert_eq!(options.cache_mode, CacheMode::Force);
    assert_eq!(options.log_level, 3);
    assert_eq!(options.console_switch_key, 0x02);
    assert_eq!(
        manifest.uplink_switch().map(|(index, s)| (index, s.name)),
        Some((0, "lan0"))
    );
    let vms: Vec<_> = manifest.vms().collect();
    assert_eq!(vms.len(), 2);
    assert_eq!(vms[0].name, "probe");
    assert_eq!(vms[0].kernel, image(1 << 20, 4096).as_slice());
    assert_eq!(vms[0].initrd, Some(vec![7u8; 5000].as_slice()));
    assert_eq!(vms[0].cmdline, "console=ttyAMA0");
    assert_eq!(vms[0].cpu_affinity, [1, 0, 0, 0, 0, 0, 0, 0]);
    let nets: Vec<_> = vms[0].nets.iter().collect();
    assert_eq!(nets.len(), 2);
    assert_eq!(nets[0].mac, [0x52, 0x54, 0, 0x12, 0x34, 1]);
    assert_eq!(nets[1].switch_index, 1);
    assert_eq!((nets[0].trusted, nets[1].trusted), (false, true));
    assert_eq!(
        (nets[0].ring, nets[1].ring),
        (DEFAULT_RING, RingLayout::Split)
    );
    assert_eq!(vms[1].memory_base, 0x8000_0000);
    assert_eq!(vms[1].initrd, None);
}

#[test]
fn manifest_refuses_a_kernel_that_changed_since_load() {
    let fixture = Fixture::new();
    let config = fixture.load(VALID).unwrap();
    fs::write(
        fixture.dir.path().join("images/Image"),
        b"no longer an image",
    )
    .unwrap();
    let error = config.to_manifest(&RuntimeOptions::default()).unwrap_err();
    assert_eq!(error.key, "vm[0] (\"probe\").kernel");
    assert!(matches!(error.kind, ErrorKind::NotAnImage { .. }));
}

#[test]
fn message_names_file_key_and_reason() {
    let fixture = Fixture::new();
    let error = fixture
        .load(&edit("memory = \"64M\"", "memory = \"64Q\""))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: vm[0] (\"probe\").memory: \"64Q\" is not a size (use 64M, 1G, ...)",
            fixture.path().display()
        )
    );
}

#[test]
fn unreadable_configuration_is_refused() {
    let error = load(Path::new("/nonexistent/chroma.toml"), &BOARD).unwrap_err();
    assert!(matches!(error.kind, ErrorKind::ReadConfig { .. }));
    assert!(error
        .to_string()
        .starts_with("/nonexistent/chroma.toml: cannot read"));
}

#[test]
fn syntax_error_gives_line_and_column() {
    let fixture = Fixture::new();
    let kind = fixture.refuse(&edit("vcpus = 2", "vcpus = = 2"), "");
    let ErrorKind::Syntax { line, .. } = kind else {
        panic!("{kind:?}")
    };
    assert_eq!(
        line,
        VALID.lines().position(|l| l == "vcpus = 2").unwrap() + 1
    );
}

#[test]
fn unknown_keys_are_refused_with_their_path() {
    let fixture = Fixture::new();
    for (text, key) in [
        (
            edit("vcpus = 2", "vcpus = 2\nvcpu_count = 2"),
            "vm[0] (\"probe\").vcpu_count",
        ),
        (
            edit(
                "log_level = \"debug\"",
                "log_level = \"debug\"\nverbose = true",
            ),
            "hypervisor.verbose",
        ),
        (
            edit("switch = \"lan1\"", "switch = \"lan1\"\nmodel = \"e1000\""),
            "vm[0] (\"probe\").net[1].model",
        ),
        (
            edit("uplink = true", "uplink = true\nvlan = 3"),
            "switch[0] (\"lan0\").vlan",
        ),
        (format!("{VALID}\n[extra]\n"), "extra"),
    ] {
        let error = fixture.load(&text).unwrap_err();
        let ErrorKind::Syntax { message, .. } = &error.kind else {
            panic!("{error}")
        };
        assert!(message.contains("unknown field"), "{error}");
        assert_eq!(error.key, key, "{error}");
    }
}

#[test]
fn ring_key_chooses_the_offered_layout_and_refuses_anything_else() {
    let fixture = Fixture::new();
    for (value, ring) in [("packed", RingLayout::Packed), ("split", RingLayout::Split)] {
        let config = fixture
            .load(&edit("ring = \"split\"", &format!("ring = \"{value}\"")))
            .unwrap();
        assert_eq!(config.vms[0].nets[1].ring, ring, "{value}");
        // The other NIC has no key: the default.
        assert_eq!(config.vms[0].nets[0].ring, DEFAULT_RING);
    }
    for (value, text) in [("Packed", "Packed"), ("event-idx", "event-idx"), ("", "")] {
        let kind = fixture.refuse(
            &edit("ring = \"split\"", &format!("ring = \"{value}\"")),
            "vm[0] (\"probe\").net[1].ring",
        );
        assert_eq!(kind, ErrorKind::BadRing { text: text.into() });
    }
    // The one line a user sees names file, key and reason.
    let error = fixture
        .load(&edit("ring = \"split\"", "ring = \"event-idx\""))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: vm[0] (\"probe\").net[1].ring: \"event-idx\" is not a ring layout (use \"packed\" or \"split\")",
            fixture.path().display()
        )
    );
    // Not a string at all: serde's message, at the same key.
    assert!(matches!(
        fixture.refuse(
            &edit("ring = \"split\"", "ring = true"),
            "vm[0] (\"probe\").net[1].ring"
        ),
        ErrorKind::Syntax { .. }
    ));
}

#[test]
fn wrong_types_and_values_are_refused() {
    let fixture = Fixture::new();
    assert!(matches!(
        fixture.refuse(
            &edit("trusted = true", "trusted = \"yes\""),
            "vm[0] (\"probe\").net[1].trusted"
        ),
        ErrorKind::Syntax { .. }
    ));
    assert!(matches!(
        fixture.refuse(
            &edit("vcpus = 2", "vcpus = \"two\""),
            "vm[0] (\"probe\").vcpus"
        ),
        ErrorKind::Syntax { .. }
    ));
    assert!(matches!(
        fixture.refuse(
            &edit("log_level = \"debug\"", "log_level = \"loud\""),
            "hypervisor.log_level"
        ),
        ErrorKind::Syntax { .. }
    ));
    assert!(matches!(
        fixture.refuse(
            &edit("cache_mode = \"force\"", "cache_mode = \"never\""),
            "hypervisor.cache_mode"
        ),
        ErrorKind::Syntax { .. }
    ));
    assert!(matches!(
        fixture.refuse(
            &edit("memory = \"64M\"", "memory = -64"),
            "vm[0] (\"probe\").memory"
        ),
        ErrorKind::Syntax { .. }
    ));
    assert!(matches!(
        fixture.refuse(&edit("name = \"probe\"\n", ""), "vm[0]"),
        ErrorKind::Syntax { .. }
    ));
}

#[test]
fn bad_sizes_are_refused() {
    let fixture = Fixture::new();
    let key = "vm[0] (\"probe\").memory";
    assert_eq!(
        fixture.refuse(&edit("\"64M\"", "\"64Q\""), key),
        ErrorKind::BadSize { text: "64Q".into() }
    );
    assert_eq!(
        fixture.refuse(&edit("\"64M\"", "\"M\""), key),
        ErrorKind::BadSize { text: "M".into() }
    );
    assert_eq!(
        fixture.refuse(&edit("\"64M\"", "\"99999999999T\""), key),
        ErrorKind::BadSize {
            text: "99999999999T".into()
        }
    );
    assert_eq!(
        fixture.refuse(&edit("\"64M\"", "\"65M\""), key),
        ErrorKind::NotAligned { bytes: 65 << 20 }
    );
    assert_eq!(
        fixture.refuse(&edit("\"64M\"", "\"1M\""), key),
        ErrorKind::MemoryTooSmall
    );
    assert_eq!(
        fixture.refuse(&edit("\"64M\"", "0"), key),
        ErrorKind::MemoryTooSmall
    );
}

#[test]
fn memory_overlapping_the_device_window_is_refused() {
    let fixture = Fixture::new();
    let kind = fixture.refuse(
        &edit("memory_base = 0x80000000", "memory_base = 0x3fe00000"),
        "vm[1] (\"second\").memory_base",
    );
    assert_eq!(
        kind,
        ErrorKind::OverlapsDeviceWindow {
            base: 0x3fe0_0000,
            end: 0x3fe0_0000 + (128 << 20)
        }
    );
    let kind = fixture.refuse(
        &edit("memory_base = 0x80000000", "memory_base = 0x80000001"),
        "vm[1] (\"second\").memory_base",
    );
    assert_eq!(kind, ErrorKind::NotAligned { bytes: 0x8000_0001 });
}

#[test]
fn memory_past_the_ipa_limit_is_refused() {
    let fixture = Fixture::new();
    let kind = fixture.refuse(
        &edit("memory_base = 0x80000000", "memory_base = 0xfffc000000"),
        "vm[1] (\"second\").memory_base",
    );
    assert_eq!(
        kind,
        ErrorKind::BeyondIpaLimit {
            base: 0xff_fc00_0000
        }
    );
    // Negative control: ending exactly at 1 TiB is fine.
    fixture
        .load(&edit(
            "memory_base = 0x80000000",
            "memory_base = 0xfff8000000",
        ))
        .unwrap();
}

#[test]
fn oversized_memory_is_refused() {
    let fixture = Fixture::new();
    let kind = fixture.refuse(
        &edit("memory = 134217728", "memory = \"2G\""),
        "vm[1] (\"second\").memory",
    );
    assert_eq!(
        kind,
        ErrorKind::MemoryExceedsBoard {
            bytes: 2 << 30,
            available: 1 << 30
        }
    );
    let kind = fixture.refuse(
        &edit("memory = 134217728", "memory = \"992M\""),
        "vm[1] (\"second\").memory",
    );
    assert_eq!(
        kind,
        ErrorKind::TotalMemoryExceedsBoard {
            total: (64 + 992) << 20,
            available: 1 << 30
        }
    );
    // Negative control: exactly the board's guest RAM in total is fine.
    fixture
        .load(&edit("memory = 134217728", "memory = \"960M\""))
        .unwrap();
}

#[test]
fn images_that_do_not_fit_are_refused() {
    let fixture = Fixture::new();
    // A kernel that loads to 62 MiB + the initrd + 2 MiB for the DTB > 64 MiB.
    fs::write(fixture.dir.path().join("images/Big"), image(62 << 20, 4096)).unwrap();
    let kind = fixture.refuse(
        &edit(
            "kernel = \"images/Image\"\ninitrd",
            "kernel = \"images/Big\"\ninitrd",
        ),
        "vm[0] (\"probe\").memory",
    );
    assert_eq!(
        kind,
        ErrorKind::ImagesDoNotFit {
            need: (64 << 20) + 8192,
            have: 64 << 20
        }
    );
    // Negative control: without the initrd it fits exactly.
    fixture
        .load(&edit(
            "kernel = \"images/Image\"\ninitrd = \"images/initrd\"",
            "kernel = \"images/Big\"",
        ))
        .unwrap();
}

#[test]
fn bad_vcpu_counts_are_refused() {
    let fixture = Fixture::new();
    let key = "vm[0] (\"probe\").vcpus";
    assert_eq!(
        fixture.refuse(&edit("vcpus = 2", "vcpus = 0"), key),
        ErrorKind::VcpuCount { count: 0 }
    );
    assert_eq!(
        fixture.refuse(&edit("vcpus = 2", "vcpus = 9"), key),
        ErrorKind::VcpuCount { count: 9 }
    );
    let kind = fixture.refuse(&edit("vcpus = 2\ncpus = [1, 0]", "vcpus = 3"), key);
    assert_eq!(kind, ErrorKind::MoreVcpusThanCpus { vcpus: 3, cpus: 2 });
    // Negative control: the same VM on a board with more CPUs.
    let board = BoardLimits {
        physical_cpus: 4,
        ..BOARD
    };
    fixture
        .load_on(&edit("vcpus = 2\ncpus = [1, 0]", "vcpus = 3"), &board)
        .unwrap();
}

#[test]
fn bad_pinning_is_refused() {
    let fixture = Fixture::new();
    let key = "vm[0] (\"probe\").cpus";
    assert_eq!(
        fixture.refuse(&edit("cpus = [1, 0]", "cpus = [1, 2]"), key),
        ErrorKind::PinOutOfRange { cpu: 2, cpus: 2 }
    );
    assert_eq!(
        fixture.refuse(&edit("cpus = [1, 0]", "cpus = [1, 300]"), key),
        ErrorKind::PinOutOfRange { cpu: 300, cpus: 2 }
    );
    assert_eq!(
        fixture.refuse(&edit("cpus = [1, 0]", "cpus = [1]"), key),
        ErrorKind::PinCount { pins: 1, vcpus: 2 }
    );
    // Negative control: both vCPUs on one CPU is allowed.
    fixture
        .load(&edit("cpus = [1, 0]", "cpus = [1, 1]"))
        .unwrap();
}

#[test]
fn missing_or_wrong_images_are_refused() {
    let fixture = Fixture::new();
    let key = "vm[0] (\"probe\").kernel";
    let kind = fixture.refuse(
        &edit("\"images/Image\"\ninitrd", "\"images/missing\"\ninitrd"),
        key,
    );
    assert!(
        matches!(kind, ErrorKind::ReadImage { ref path, .. } if path.ends_with("images/missing")),
        "{kind:?}"
    );
    let kind = fixture.refuse(
        &edit(
            "\"images/Image\"\ninitrd",
            "\"images/not-an-image\"\ninitrd",
        ),
        key,
    );
    assert!(matches!(kind, ErrorKind::NotAnImage { .. }), "{kind:?}");
    let kind = fixture.refuse(&edit("\"images/Image\"\ninitrd", "\"images\"\ninitrd"), key);
    assert!(matches!(kind, ErrorKind::ReadImage { .. }), "{kind:?}");
    let kind = fixture.refuse(
        &edit("\"images/initrd\"", "\"images/no-initrd\""),
        "vm[0] (\"probe\").initrd",
    );
    assert!(matches!(kind, ErrorKind::ReadImage { .. }), "{kind:?}");
}

#[test]
fn names_are_checked() {
    let fixture = Fixture::new();
    let kind = fixture.refuse(
        &edit("name = \"second\"", "name = \"probe\""),
        "vm[1] (\"probe\").name",
    );
    assert_eq!(
        kind,
        ErrorKind::DuplicateName {
            name: "probe".into(),
            first: "vm[0] (\"probe\")".into()
        }
    );
    let kind = fixture.refuse(
        &edit("name = \"second\"", "name = \"bad name\""),
        "vm[1] (\"bad name\").name",
    );
    assert_eq!(
        kind,
        ErrorKind::BadName {
            name: "bad name".into()
        }
    );
    let kind = fixture.refuse(
        &edit("name = \"second\"", "name = \"seventeen-chars-x\""),
        "vm[1] (\"seventeen-chars-x\").name",
    );
    assert!(matches!(kind, ErrorKind::BadName { .. }));
    let kind = fixture.refuse(
        &edit("name = \"lan1\"", "name = \"lan0\""),
        "switch[1] (\"lan0\").name",
    );
    assert!(matches!(kind, ErrorKind::DuplicateName { .. }));
    // Negative control: 16 characters is the limit.
    fixture
        .load(&edit("name = \"second\"", "name = \"sixteen-chars-xx\""))
        .unwrap();
}

#[test]
fn no_vms_is_refused() {
    let fixture = Fixture::new();
    let text = VALID.split("[[vm]]").next().unwrap();
    assert_eq!(fixture.refuse(text, "vm"), ErrorKind::NoVms);
}

#[test]
fn unknown_switch_is_refused() {
    let fixture = Fixture::new();
    let kind = fixture.refuse(
        &edit("switch = \"lan1\"", "switch = \"lan9\""),
        "vm[0] (\"probe\").net[1].switch",
    );
    assert_eq!(
        kind,
        ErrorKind::UnknownSwitch {
            name: "lan9".into()
        }
    );
}

#[test]
fn bad_and_duplicate_macs_are_refused() {
    let fixture = Fixture::new();
    let key = "vm[0] (\"probe\").net[0].mac";
    for bad in [
        "52:54:00:12:34",
        "52:54:00:12:34:01:02",
        "52-54-00-12-34-01",
        "52:54:00:12:34:zz",
        "52:54:00:12:34:1",
    ] {
        let kind = fixture.refuse(&edit("52:54:00:12:34:01", bad), key);
        assert_eq!(kind, ErrorKind::BadMac { text: bad.into() });
    }
    let kind = fixture.refuse(&edit("52:54:00:12:34:01", "01:00:5e:00:00:01"), key);
    assert!(matches!(kind, ErrorKind::MulticastMac { .. }));
    let text = edit(
        "switch = \"lan1\"",
        "switch = \"lan1\"\nmac = \"52:54:00:12:34:01\"",
    );
    let kind = fixture.refuse(&text, "vm[0] (\"probe\").net[1].mac");
    assert_eq!(
        kind,
        ErrorKind::DuplicateMac {
            mac: "52:54:00:12:34:01".into(),
            first: "vm[0] (\"probe\").net[0]".into()
        }
    );
    // Negative control: upper-case hex is the same valid address.
    fixture
        .load(&edit("52:54:00:12:34:01", "52:54:00:AB:CD:EF"))
        .unwrap();
}

#[test]
fn two_uplinks_are_refused() {
    let fixture = Fixture::new();
    let kind = fixture.refuse(
        &edit("name = \"lan1\"", "name = \"lan1\"\nuplink = true"),
        "switch[1] (\"lan1\").uplink",
    );
    assert_eq!(
        kind,
        ErrorKind::TwoUplinks {
            first: "switch[0] (\"lan0\")".into()
        }
    );
}

#[test]
fn too_many_ports_on_a_switch_are_refused() {
    let fixture = Fixture::new();
    // lan1 has probe's NIC; `second` adds `extra` more.
    let with = |extra: usize| {
        edit(
            "memory_base = 0x80000000\n",
            &format!(
                "memory_base = 0x80000000\n{}",
                "[[vm.net]]\nswitch = \"lan1\"\n".repeat(extra)
            ),
        )
    };
    let max = chroma_manifest::MAX_SWITCH_PORTS;
    let kind = fixture.refuse(&with(max), "switch[1] (\"lan1\")");
    assert_eq!(
        kind,
        ErrorKind::TooManyPorts {
            ports: max + 1,
            max
        }
    );
    // Negative control: exactly the maximum is accepted.
    fixture.load(&with(max - 1)).unwrap();
}

#[test]
fn bad_cmdline_is_refused() {
    let fixture = Fixture::new();
    let long = format!("cmdline = \"{}\"", "x".repeat(2048));
    let kind = fixture.refuse(
        &edit("cmdline = \"console=ttyAMA0\"", &long),
        "vm[0] (\"probe\").cmdline",
    );
    assert!(matches!(kind, ErrorKind::BadCmdline { .. }));
    let kind = fixture.refuse(
        &edit("console=ttyAMA0", "a\\u0000b"),
        "vm[0] (\"probe\").cmdline",
    );
    assert!(matches!(kind, ErrorKind::BadCmdline { .. }));
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("64M"), Some(64 << 20));
    assert_eq!(parse_size("1G"), Some(1 << 30));
    assert_eq!(parse_size("512K"), Some(512 << 10));
    assert_eq!(parse_size("2MiB"), Some(2 << 20));
    assert_eq!(parse_size("4096"), Some(4096));
    assert_eq!(parse_size("0x4000_0000"), Some(0x4000_0000));
    assert_eq!(parse_size(" 8 M "), Some(8 << 20));
    for bad in ["", "M", "64Q", "-1M", "1.5G", "0x", "0xzz", "20000000T"] {
        assert_eq!(parse_size(bad), None, "{bad:?}");
    }
}

#[test]
fn derived_macs_are_stable_local_unicast_and_distinct() {
    let a0 = derive_mac("probe", 0);
    assert_eq!(a0, derive_mac("probe", 0));
    assert_ne!(a0, derive_mac("probe", 1));
    assert_ne!(a0, derive_mac("probf", 0));
    for mac in [a0, derive_mac("probe", 1), derive_mac("x", 7)] {
        assert_eq!(mac[0] & 0b11, 0b10, "{}", format_mac(mac));
    }
    assert_eq!(
        format_mac([0x52, 0x54, 0, 0xab, 0xcd, 1]),
        "52:54:00:ab:cd:01"
    );
    assert_eq!(
        parse_mac("52:54:00:ab:cd:01"),
        Some([0x52, 0x54, 0, 0xab, 0xcd, 1])
    );
}

#[test]
fn image_header_is_decoded() {
    let mut header = image(0x1234_0000, 64);
    header[8..16].copy_from_slice(&0x8_0000u64.to_le_bytes());
    let decoded = ImageHeader::parse(&header, 64).unwrap();
    assert_eq!(
        decoded,
        ImageHeader {
            arch: GuestArch::Aarch64,
            text_offset: 0x8_0000,
            image_size: 0x1234_0000,
            file_len: 64
        }
    );
    assert_eq!(decoded.load_end(), Some(0x8_0000 + 0x1234_0000));
    // image_size 0: pre-3.17 kernel, text_offset is 0x80000 whatever the field says.
    let old = ImageHeader::parse(&image(0, 64), 5000).unwrap();
    assert_eq!(old.text_offset, 0x8_0000);
    assert_eq!(old.load_end(), Some(0x8_0000 + 5000));
    assert_eq!(ImageHeader::parse(&[0u8; 64], 64), None);
    assert_eq!(ImageHeader::parse(&[0u8; 10], 10), None);
}

/// A fake ARM zImage: the magic at 0x24.
fn zimage(file_len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; file_len.max(64)];
    bytes[0x24..0x28].copy_from_slice(&0x016f_2818u32.to_le_bytes());
    bytes
}

#[test]
fn an_aarch32_vm_takes_a_zimage_and_only_a_zimage() {
    let fixture = Fixture::new();
    fs::write(fixture.dir.path().join("images/zImage"), zimage(8192)).unwrap();
    let second = "[[vm]]\nname = \"second\"\nkernel = \"images/Image\"";
    let config = fixture
        .load(&edit(
            second,
            "[[vm]]\nname = \"second\"\narch = \"aarch32\"\nkernel = \"images/zImage\"",
        ))
        .unwrap();
    assert_eq!(config.vms[0].arch, GuestArch::Aarch64, "the default");
    let vm = &config.vms[1];
    assert_eq!(vm.arch, GuestArch::Aarch32);
    assert_eq!(vm.kernel_header.text_offset, 0x8000);
    let bytes = config.to_manifest(&RuntimeOptions::default()).unwrap();
    let manifest = chroma_manifest::Manifest::parse(&bytes).unwrap();
    let archs: Vec<_> = manifest.vms().map(|vm| vm.arch).collect();
    assert_eq!(archs, [GuestArch::Aarch64, GuestArch::Aarch32]);

    // An arm64 Image in an AArch32 VM, and a zImage in an AArch64 one
    // (with a hint: the commonest slip), are refused.
    let key = "vm[1] (\"second\").kernel";
    let kind = fixture.refuse(
        &edit(
            second,
            "[[vm]]\nname = \"second\"\narch = \"aarch32\"\nkernel = \"images/Image\"",
        ),
        key,
    );
    assert!(
        matches!(
            kind,
            ErrorKind::NotAnImage {
                arch: GuestArch::Aarch32,
                ..
            }
        ),
        "{kind:?}"
    );
    assert!(kind.to_string().contains("is not an ARM zImage"), "{kind}");
    let kind = fixture.refuse(
        &edit(
            second,
            "[[vm]]\nname = \"second\"\nkernel = \"images/zImage\"",
        ),
        key,
    );
    assert!(
        kind.to_string()
            .ends_with("it is an ARM zImage: set arch = \"aarch32\" for this VM"),
        "{kind}"
    );
    let error = fixture
        .load(&edit(
            second,
            "[[vm]]\nname = \"second\"\narch = \"arm\"\nkernel = \"images/Image\"",
        ))
        .unwrap_err();
    assert!(error.to_string().contains("arch"), "{error}");
}

#[test]
fn tso_key_withdraws_segmentation_offload_and_defaults_on() {
    let fixture = Fixture::new();
    let config = fixture.load(VALID).unwrap();
    assert!(config.vms[0].nets.iter().all(|n| n.tso), "default on");
    let config = fixture
        .load(&edit("ring = \"split\"", "ring = \"split\"\ntso = false"))
        .unwrap();
    assert!(!config.vms[0].nets[1].tso);
    assert!(config.vms[0].nets[0].tso, "the other NIC keeps its default");
    assert!(matches!(
        fixture.refuse(
            &edit("ring = \"split\"", "ring = \"split\"\ntso = \"no\""),
            "vm[0] (\"probe\").net[1].tso"
        ),
        ErrorKind::Syntax { .. }
    ));
}
