//! The pinned toolchains and tool versions, read from `toolchains.toml` (the one place they
//! are written down).

use std::{fs, path::Path};

use anyhow::{Context as _, Result};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pins {
    pub userspace: Toolchain,
    pub ebpf: Toolchain,
    #[serde(rename = "bpf-linker")]
    pub bpf_linker: Tool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toolchain {
    pub toolchain: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    pub version: String,
}

pub fn read(root: &Path) -> Result<Pins> {
    let path = root.join("toolchains.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_pins_parse() {
        let pins = read(&crate::workspace_root()).unwrap();
        assert!(pins.ebpf.toolchain.starts_with("nightly-"), "{pins:?}");
        assert_ne!(pins.userspace.toolchain, "");
        assert_eq!(pins.bpf_linker.version.split('.').count(), 3);
    }
}
