//! `/init` of the test VMs: mounts what the tests need, inserts the kernel modules, brings
//! `lo` up, runs every test of every binary in `/manifest` (one process per test, so a hung
//! test is killed alone and named), prints one protocol line per test, and powers off.
//!
//! It never panics on purpose and never exits: if init exits the kernel panics, and with
//! `-no-reboot` QEMU then exits 0 as if all went well. Every failure is printed as an
//! `EGRESS-VM-ERROR` line, then the machine powers off.

mod sys;
mod tests;

use std::{fs, io::Write as _};

use vm_init::{manifest::Manifest, protocol::Line};

fn main() {
    let kernel = sys::kernel_release();
    let mut report = Report::new(kernel.clone());
    // A panic must still end in a power-off with a line the host can read.
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut report)));
    if run.is_err() {
        report.error("the init panicked (message above)");
    }
    report.done();
    sys::power_off();
}

/// Prints protocol lines and keeps the totals.
pub struct Report {
    pub kernel: String,
    pub passed: u32,
    pub failed: u32,
}

impl Report {
    fn new(kernel: String) -> Self {
        Self {
            kernel,
            passed: 0,
            failed: 0,
        }
    }

    pub fn line(&self, line: &Line) {
        // Own line: the test's output may have left the cursor mid-line.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "\n{line}");
        let _ = out.flush();
    }

    pub fn error(&mut self, message: &str) {
        self.failed += 1;
        self.line(&Line::Error {
            kernel: self.kernel.clone(),
            message: message.to_owned(),
        });
    }

    fn done(&self) {
        self.line(&Line::Done {
            kernel: self.kernel.clone(),
            passed: self.passed,
            failed: self.failed,
        });
    }
}

fn run(report: &mut Report) {
    for err in sys::mount_all() {
        report.error(&err);
    }
    let manifest = match fs::read_to_string("/manifest")
        .map_err(|e| format!("reading /manifest: {e}"))
        .and_then(|t| Manifest::parse(&t).map_err(|e| e.to_string()))
    {
        Ok(m) => m,
        Err(e) => {
            report.error(&e);
            return;
        }
    };
    for module in &manifest.modules {
        if let Err(e) = sys::insert_module(module) {
            report.error(&format!("finit_module {module}: {e}"));
        }
    }
    if let Err(e) = sys::loopback_up() {
        report.error(&format!("bringing lo up: {e}"));
    }
    for (k, v) in &manifest.env {
        // SAFETY: single-threaded here; no other thread reads the environment.
        unsafe { std::env::set_var(k, v) };
    }
    for binary in &manifest.tests {
        tests::run_binary(report, binary, manifest.timeout_secs);
    }
    for command in &manifest.commands {
        tests::run_command(report, command);
    }
}
