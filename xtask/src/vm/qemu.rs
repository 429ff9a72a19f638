//! Booting one kernel + initramfs in QEMU with only a serial console, under a watchdog that
//! stops the VM when the kernel dies (panic, oops) or the console stays silent too long.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::console::Console;

/// How QEMU runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// KVM only on a real Intel or AMD KVM: a `/dev/kvm` backed by another hypervisor
    /// (`kvm_pvm`, as on the CI machines) cannot run a stock kernel and the guest hangs
    /// after the `SeaBIOS` banner.
    pub fn detect() -> Self {
        let real = ["kvm_intel", "kvm_amd"]
            .iter()
            .any(|m| Path::new("/sys/module").join(m).exists());
        if real && File::open("/dev/kvm").is_ok() {
            Self::Kvm
        } else {
            Self::Tcg
        }
    }
}

pub struct Boot<'a> {
    pub image: &'a Path,
    pub initrd: &'a Path,
    pub accel: Accel,
    /// Stop the VM after this long without a console line.
    pub silence: Duration,
    /// The whole console, for reading after the fact.
    pub log: &'a Path,
    /// Echo the console to stderr as it comes.
    pub echo: bool,
}

/// Boots and reads the console until the init is done, the kernel dies, the console stays
/// silent for `silence`, or QEMU exits. Returns what the console said and the run time.
pub fn boot(b: &Boot<'_>, kernel_label: &str) -> Result<(Console, Duration)> {
    watch(&mut qemu_command(b), b, kernel_label)
}

fn qemu_command(b: &Boot<'_>) -> Command {
    let mut qemu = Command::new("qemu-system-x86_64");
    match b.accel {
        Accel::Kvm => qemu.args(["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => qemu.args(["-accel", "tcg", "-cpu", "max"]),
    };
    qemu.args(["-m", "2048", "-smp", "2", "-nographic", "-no-reboot"])
        .args(["-serial", "stdio", "-monitor", "none"])
        .arg("-kernel")
        .arg(b.image)
        .arg("-initrd")
        .arg(b.initrd)
        // panic=-1 and oops=panic: a dying kernel reboots at once, and -no-reboot turns that
        // into a QEMU exit; the console tells the two apart.
        .args([
            "-append",
            "console=ttyS0 panic=-1 oops=panic rdinit=/init loglevel=4",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    qemu
}

/// Runs `vm` (QEMU, or a stand-in in tests) and reads its stdout as the console, under the
/// watchdog.
fn watch(vm: &mut Command, b: &Boot<'_>, kernel_label: &str) -> Result<(Console, Duration)> {
    let started = Instant::now();
    let mut child = vm
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", crate::cmd::describe(vm)))?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    let mut log = File::create(b.log).with_context(|| format!("creating {}", b.log.display()))?;
    let mut console = Console::default();
    let mut last_line = Instant::now();
    // When the test that is running now started: a hung test's result gives its own time.
    let mut test_started = Instant::now();
    let mut silent = false;
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                last_line = Instant::now();
                writeln!(log, "{line}")?;
                if b.echo {
                    eprintln!("    | {}", line.trim_end());
                }
                let was_running = console.running.clone();
                console.feed(&line);
                if console.running.is_some() && console.running != was_running {
                    test_started = Instant::now();
                }
                if console.finished() {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if last_line.elapsed() >= b.silence => {
                silent = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // After DONE the init powers off by itself; give it a moment, then make sure.
    let deadline =
        Instant::now() + Duration::from_secs(if console.done.is_some() { 20 } else { 0 });
    while Instant::now() < deadline && child.try_wait()?.is_none() {
        thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait()?.is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    let _ = reader.join();
    if silent {
        console.errors.push(format!(
            "watchdog: no console output for {:?}, VM stopped",
            b.silence
        ));
    }
    let elapsed = started.elapsed();
    console.close(kernel_label, test_started.elapsed().as_secs_f64());
    Ok((console, elapsed))
}

#[cfg(test)]
mod tests {
    use vm_init::protocol::{Line, Outcome};

    use super::*;

    fn boot_of(log: &Path, silence: Duration) -> Boot<'_> {
        Boot {
            image: Path::new("unused"),
            initrd: Path::new("unused"),
            accel: Accel::Tcg,
            silence,
            log,
            echo: false,
        }
    }

    /// The real watchdog loop on a stand-in VM that starts a test and goes silent: it is
    /// stopped after `silence`, and the running test is reported hung.
    #[test]
    fn a_silent_vm_is_stopped_and_its_running_test_named() {
        let log = std::env::temp_dir().join(format!("xtask-watchdog-{}.log", std::process::id()));
        let b = boot_of(&log, Duration::from_secs(2));
        let mut vm = Command::new("sh");
        vm.args([
            "-c",
            "echo 'EGRESS-VM-START k lifecycle stuck'; exec sleep 60",
        ]);
        let started = Instant::now();
        let (console, _) = watch(&mut vm, &b, "k").unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "killed, not waited for"
        );
        assert!(
            matches!(&console.results[..], [Line::Result { test, outcome: Outcome::Hung, .. }] if test == "stuck"),
            "{console:?}"
        );
        assert!(console.errors[0].contains("watchdog"), "{console:?}");
        assert!(!console.passed());
        assert!(std::fs::read_to_string(&log).unwrap().contains("stuck"));
        std::fs::remove_file(&log).unwrap();
    }

    /// A kernel panic stops the VM at once, however long the silence allowance.
    #[test]
    fn a_panic_stops_the_vm_at_once() {
        let log = std::env::temp_dir().join(format!("xtask-panic-{}.log", std::process::id()));
        let b = boot_of(&log, Duration::from_secs(600));
        let mut vm = Command::new("sh");
        vm.args([
            "-c",
            "echo '[ 1.0] Kernel panic - not syncing: test'; exec sleep 60",
        ]);
        let started = Instant::now();
        let (console, _) = watch(&mut vm, &b, "k").unwrap();
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(console.fatal.is_some() && !console.passed());
        std::fs::remove_file(&log).unwrap();
    }
}
