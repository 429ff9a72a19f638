//! Everything that touches the kernel directly: privileges, the cgroup v2 mount, the
//! compatibility table, loading and attaching the programs, and raw map syscalls aya lacks.

pub mod batch;
pub mod caps;
pub mod cgroup2;
pub mod clock;
pub mod compat;
pub mod loader;
