//! The protocol between the VM's `/init` and `cargo xtask vm-test`: the manifest the host
//! writes into the initramfs, and the lines the init prints on the serial console.
//!
//! Dependency-free so xtask (any stable >= 1.85) and the static init share one definition.

pub mod manifest;
pub mod protocol;
