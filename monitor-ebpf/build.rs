//! Rebuild the kernel programs when the bpf-linker binary changes (a new LLVM can change the
//! produced object). When bpf-linker is not on PATH (lint-only host builds of the library
//! target), there is nothing to track.
fn main() {
    if let Ok(bpf_linker) = which::which("bpf-linker") {
        println!("cargo::rerun-if-changed={}", bpf_linker.display());
    }
}
