//! A libtest binary for testing `cargo xtask vm-test` itself: with `EGRESS_VM_FIXTURE` unset
//! every test passes at once (so plain `cargo test` is unaffected); `fail` makes `fails`
//! fail and `hang` makes `hangs` sleep forever, so the harness must report a failure and a
//! hung test by name.

fn mode() -> String {
    std::env::var("EGRESS_VM_FIXTURE").unwrap_or_default()
}

#[test]
fn passes() {
    // Something of the VM's own set-up that every real test relies on: `lo` is up.
    if !mode().is_empty() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind on lo");
        let addr = listener.local_addr().expect("local addr");
        std::net::TcpStream::connect(addr).expect("connect over lo");
    }
}

#[test]
fn fails() {
    assert_ne!(
        mode(),
        "fail",
        "failing on purpose (EGRESS_VM_FIXTURE=fail)"
    );
}

#[test]
fn hangs() {
    if mode() == "hang" {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}
