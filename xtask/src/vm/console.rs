//! Reading a VM's serial console: protocol lines from the init, and the kernel messages that
//! mean the run is over (panic, oops) even though QEMU may keep running or exit 0.

use vm_init::protocol::{Line, Outcome};

/// Console text that means the kernel is dying: the watchdog stops the VM at once.
const FATAL: [&str; 4] = ["Kernel panic", "Oops:", "BUG: ", "general protection fault"];

/// Everything learnt from one boot's console.
#[derive(Debug, Default)]
pub struct Console {
    pub results: Vec<Line>,
    pub errors: Vec<String>,
    /// The test that started last and has no result yet.
    pub running: Option<(String, String)>,
    pub done: Option<(u32, u32)>,
    /// The first line that showed the kernel dying.
    pub fatal: Option<String>,
    /// Lines that carried the marker but did not parse (a bug in the init or torn output).
    pub garbled: Vec<String>,
}

impl Console {
    /// Takes one console line.
    pub fn feed(&mut self, raw: &str) {
        if self.fatal.is_none() && FATAL.iter().any(|f| raw.contains(f)) {
            self.fatal = Some(raw.trim().to_owned());
        }
        match Line::find(raw) {
            None => {}
            Some(Err(e)) => self.garbled.push(format!("{}: {e}", raw.trim())),
            Some(Ok(line)) => match &line {
                Line::Start { binary, test, .. } => {
                    self.running = Some((binary.clone(), test.clone()));
                }
                Line::Result { .. } => {
                    self.running = None;
                    self.results.push(line);
                }
                Line::Error { message, .. } => self.errors.push(message.clone()),
                Line::Done { passed, failed, .. } => self.done = Some((*passed, *failed)),
                // Only the host gives a kernel its verdict; one from the VM is not believed.
                Line::Kernel { .. } => self
                    .garbled
                    .push(format!("{}: a host verdict from inside the VM", raw.trim())),
            },
        }
    }

    /// Whether the VM can be stopped: the init finished or the kernel is dying.
    pub fn finished(&self) -> bool {
        self.done.is_some() || self.fatal.is_some()
    }

    /// After the VM stopped: results plus a `hung` one for the test that was running when the
    /// watchdog or a kernel death stopped it.
    pub fn close(&mut self, kernel: &str, secs_running: f64) {
        if let Some((binary, test)) = self.running.take() {
            self.results.push(Line::Result {
                kernel: kernel.to_owned(),
                binary,
                test,
                outcome: Outcome::Hung,
                secs: secs_running,
            });
        }
    }

    /// Whether this kernel's run passed: the init said DONE with no failures, nothing
    /// failed or hung, nothing went wrong on the way.
    pub fn passed(&self) -> bool {
        self.fatal.is_none()
            && self.errors.is_empty()
            && self.garbled.is_empty()
            && self.done.is_some_and(|(_, failed)| failed == 0)
            && self.results.iter().all(|l| match l {
                Line::Result { outcome, .. } => !outcome.is_failure(),
                _ => true,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "6.1.0-56-amd64";

    #[test]
    fn a_clean_run_passes() {
        let mut c = Console::default();
        for l in [
            "[    0.000000] Linux version 6.1.0-56-amd64",
            "EGRESS-VM-START 6.1.0-56-amd64 top top_lists_talkers",
            "running 1 test",
            "EGRESS-VM-RESULT 6.1.0-56-amd64 top top_lists_talkers ok 2.10",
            "EGRESS-VM-DONE 6.1.0-56-amd64 1 0",
        ] {
            c.feed(l);
        }
        c.close(K, 0.0);
        assert!(c.finished() && c.passed(), "{c:?}");
        assert_eq!(c.results.len(), 1);
    }

    #[test]
    fn a_failed_test_fails_the_kernel() {
        let mut c = Console::default();
        c.feed("EGRESS-VM-RESULT k b t FAILED 0.10");
        c.feed("EGRESS-VM-DONE k 0 1");
        assert!(!c.passed());
    }

    #[test]
    fn the_test_running_at_a_stall_is_reported_hung() {
        let mut c = Console::default();
        c.feed("EGRESS-VM-START k lifecycle agent_survives_restart");
        assert!(!c.finished());
        c.close(K, 42.0);
        assert!(!c.passed(), "no DONE: fails");
        assert_eq!(
            c.results,
            [Line::Result {
                kernel: K.into(),
                binary: "lifecycle".into(),
                test: "agent_survives_restart".into(),
                outcome: Outcome::Hung,
                secs: 42.0,
            }]
        );
    }

    #[test]
    fn a_kernel_panic_or_oops_ends_the_run() {
        for line in [
            "[    9.1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100",
            "[    9.1] Oops: 0000 [#1] PREEMPT SMP NOPTI",
            "[    9.1] BUG: kernel NULL pointer dereference, address: 0000000000000000",
        ] {
            let mut c = Console::default();
            c.feed(line);
            assert!(c.finished() && !c.passed(), "{line}");
        }
    }

    #[test]
    fn init_errors_and_garbled_lines_fail_the_run() {
        let mut c = Console::default();
        c.feed("EGRESS-VM-ERROR k mount /sys/kernel/tracing: No such device");
        c.feed("EGRESS-VM-DONE k 3 0");
        assert!(!c.passed());
        let mut c = Console::default();
        c.feed("EGRESS-VM-RESULT k b t o");
        c.feed("EGRESS-VM-DONE k 3 0");
        assert!(!c.passed() && c.garbled.len() == 1);
    }
}
