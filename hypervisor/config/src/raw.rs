//! The TOML file as serde sees it, before validation.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The whole file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub hypervisor: RawHypervisor,
    #[serde(default)]
    pub switch: Vec<RawSwitch>,
    #[serde(default)]
    pub vm: Vec<RawVm>,
}

/// `[hypervisor]`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHypervisor {
    pub cache_mode: Option<RawCacheMode>,
    pub log_level: Option<RawLogLevel>,
}

/// `cache_mode = "auto" | "force"`.
#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawCacheMode {
    Auto,
    Force,
}

/// `arch = "aarch64" | "aarch32"` of a `[[vm]]`.
#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawArch {
    Aarch64,
    Aarch32,
}

/// `log_level = "error" | ... | "trace"`.
#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawLogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// `[[switch]]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSwitch {
    pub name: String,
    #[serde(default)]
    pub uplink: bool,
}

/// `[[vm]]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVm {
    pub name: String,
    pub arch: Option<RawArch>,
    pub kernel: String,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
    pub memory: RawSize,
    pub memory_base: Option<RawSize>,
    pub vcpus: Option<u32>,
    pub cpus: Option<Vec<u32>>,
    #[serde(default)]
    pub net: Vec<RawNet>,
}

/// `[[vm.net]]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNet {
    pub switch: String,
    pub mac: Option<String>,
    #[serde(default)]
    pub trusted: bool,
    /// `"split" | "packed"`, checked later (so a bad value gets our message).
    pub ring: Option<String>,
    /// TCP segmentation offload offered (default true).
    #[serde(default = "default_tso")]
    pub tso: bool,
}

fn default_tso() -> bool {
    true
}

/// A size as written: an integer, or a string checked later (so a bad
/// string gets our message, not serde's).
#[derive(Debug, Clone)]
pub(crate) enum RawSize {
    Bytes(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64M\" or a byte count")
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(value))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<RawSize, E> {
                u64::try_from(value)
                    .map(RawSize::Bytes)
                    .map_err(|_| E::custom(format_args!("{value} is not a size (it is negative)")))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(value.to_owned()))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}
