//! iperf3 runs on loopback: bulk TCP throughput and 1-KiB UDP packet rate.

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{IPERF_PORT, IPERF_SECONDS};

fn iperf(client_args: &[&str]) -> Result<Value> {
    let port = IPERF_PORT.to_string();
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 server")?;
    let secs = IPERF_SECONDS.to_string();
    let mut last_err = None;
    // The server needs a moment to listen; retry the client a few times.
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(100));
        let out = Command::new("iperf3")
            .args(["-c", "127.0.0.1", "-p", &port, "-t", &secs, "-J"])
            .args(client_args)
            .output()
            .context("running iperf3 client")?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if out.status.success() && v.get("error").is_none() {
            let _ = server.wait();
            return Ok(v);
        }
        last_err = Some(v["error"].as_str().unwrap_or("iperf3 failed").to_owned());
    }
    let _ = server.kill();
    let _ = server.wait();
    bail!("iperf3: {}", last_err.unwrap_or_default())
}

pub(super) fn iperf_tcp_bulk() -> Result<f64> {
    let v = iperf(&[])?;
    v["end"]["sum_sent"]["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON without end.sum_sent")
}

pub(super) fn iperf_udp_small() -> Result<f64> {
    let v = iperf(&["-u", "-b", "0", "-l", "1024"])?;
    let sum = &v["end"]["sum"];
    let packets = sum["packets"]
        .as_f64()
        .context("iperf3 JSON without end.sum.packets")?;
    let seconds = sum["seconds"].as_f64().unwrap_or(f64::from(IPERF_SECONDS));
    Ok(packets / seconds)
}
