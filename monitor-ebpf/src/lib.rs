//! Empty library target: `monitor` lists this crate as a build-dependency so that cargo
//! rebuilds the agent (which embeds the kernel object) whenever a kernel program changes.
#![no_std]
