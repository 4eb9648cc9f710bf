//! VM configuration (TOML) parsing and validation, host side.

