#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use testkit::Haproxy;

/// A TCP server answering every connection with its name, until `stop` is dropped.
fn named(name: &'static str) -> (u16, std::sync::mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        while let Err(std::sync::mpsc::TryRecvError::Empty) = stopped.try_recv() {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.write_all(name.as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (port, stop)
}

fn ask(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    (!answer.is_empty()).then_some(answer)
}

#[test]
fn haproxy_balances_tcp_and_routes_around_a_dead_backend() -> Result<(), String> {
    let (a, stop_a) = named("a");
    let (b, _stop_b) = named("b");
    let lb = Haproxy::start(&[a, b])?;
    let mut seen: Vec<String> = (0..6).filter_map(|_| ask(lb.port())).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["a", "b"], "round robin over both backends");
    drop(stop_a);
    // Once its health check fails (every 500 ms), every connection goes to b.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answers: Vec<Option<String>> = (0..4).map(|_| ask(lb.port())).collect();
        if answers.iter().all(|a| a.as_deref() == Some("b")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still sent to the dead backend: {answers:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let port = lb.port();
    drop(lb);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    Ok(())
}

/// The example in deploy/cluster/ is a configuration HAProxy accepts.
#[test]
fn the_deploy_example_is_valid() {
    let config =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/cluster/haproxy.cfg");
    let haproxy = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .unwrap_or("haproxy");
    let out = std::process::Command::new(haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
