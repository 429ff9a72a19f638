//! `cargo xtask bench`: written in the next step of this change.
use std::path::Path;

use anyhow::{Result, bail};

use crate::bootstrap::Tools;

pub fn all(_root: &Path, _tools: &Tools, _bin: &Path, _rounds: u32) -> Result<()> {
    bail!("bench is not implemented yet")
}
