//! Outbound HTTP is denied unless granted, per scheme, host and port; a
//! plugin that imports wasi:http without any grant does not even link.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use weft::manifest::Manifest;
use weft::pipeline::Pipeline;
use weft::record::{Item, Origin, Payload};

/// A tiny HTTP server on loopback that answers `body` and counts connections.
fn server(body: &'static str) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            h.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, hits)
}

fn item(url: &str) -> Item {
    Item {
        key: None,
        headers: vec![],
        timestamp: None,
        origin: Arc::new(Origin {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            key: None,
            value: None,
        }),
        payload: Payload::Raw(Some(url.as_bytes().to_vec())),
    }
}

#[test]
fn granted_host_answers_and_other_hosts_are_denied_before_connecting() {
    let (granted, granted_hits) = server("hello from the granted host");
    let (other, other_hits) = server("secret");
    let dir = tempfile::tempdir().unwrap();
    let m = support::transform_manifest(
        dir.path(),
        &support::plugin("hostile-http"),
        &format!("grants = {{ outbound_hosts = [\"http://127.0.0.1:{granted}\"] }}"),
    );
    let mut p = Pipeline::new(&support::runtime(), Manifest::load(&m).unwrap(), None).unwrap();
    let o = p.process(vec![
        item(&format!("http://127.0.0.1:{granted}/x")),
        item(&format!("http://127.0.0.1:{other}/x")),
        item(&format!("http://localhost:{granted}/x")),
    ]);
    assert_eq!(o.outputs.len(), 1);
    match &o.outputs[0].payload {
        Payload::Raw(Some(v)) => assert_eq!(v, b"hello from the granted host"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(o.dead.len(), 2, "other port and other host name are denied");
    for d in &o.dead {
        assert!(
            d.failure.message.contains("HttpRequestDenied"),
            "{}",
            d.failure
        );
    }
    assert_eq!(granted_hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "no connection was made"
    );
}

#[test]
fn plugin_importing_http_without_a_grant_fails_to_load_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let m = support::transform_manifest(dir.path(), &support::plugin("hostile-http"), "");
    let err = Pipeline::new(&support::runtime(), Manifest::load(&m).unwrap(), None)
        .err()
        .expect("must not load");
    let msg = format!("{err:#}");
    assert!(msg.contains("pipeline.toml:5:8: stage `s`"), "{msg}");
    assert!(msg.contains("imports `wasi:http/"), "{msg}");
    assert!(msg.contains("no `grants.outbound_hosts`"), "{msg}");
}

/// A server that sends its headers at once and then its 40-byte body one
/// byte every 100 ms (4 s in all).
fn trickling_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n");
                for _ in 0..40 {
                    if s.write_all(b"x").and_then(|()| s.flush()).is_err() {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            });
        }
    });
    port
}

#[test]
fn a_body_trickled_byte_by_byte_is_cut_at_the_stage_timeout() {
    let port = trickling_server();
    let dir = tempfile::tempdir().unwrap();
    let m = support::transform_manifest(
        dir.path(),
        &support::plugin("hostile-http"),
        &format!(
            "limits = {{ timeout_ms = 1000 }}\ngrants = {{ outbound_hosts = [\"http://127.0.0.1:{port}\"] }}"
        ),
    );
    let mut p = Pipeline::new(&support::runtime(), Manifest::load(&m).unwrap(), None).unwrap();
    let t0 = std::time::Instant::now();
    let o = p.process(vec![item(&format!("http://127.0.0.1:{port}/slow"))]);
    let took = t0.elapsed();
    // The fixture takes a failed read as the end of the body, so what it
    // returns is the part that arrived before the deadline, not all 40 bytes.
    let got = match o.outputs.first().map(|i| &i.payload) {
        Some(Payload::Raw(Some(v))) => v.len(),
        _ => 0,
    };
    assert!(got < 40, "the whole trickled body was read ({got} bytes)");
    assert!(
        took < std::time::Duration::from_millis(2500),
        "the call lasted {took:?} under a 1 s timeout"
    );
}

#[test]
fn a_granted_name_that_resolves_to_an_internal_address_is_refused_when_connecting() {
    // This machine's own host name: a name the policy would take for a
    // public host, which resolves (through /etc/hosts) to loopback or a
    // private address, as a wildcard DNS name like `127.0.0.1.nip.io` does.
    let name = String::from_utf8(
        std::process::Command::new("hostname")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let (port, hits) = server("internal secret");
    use std::net::ToSocketAddrs;
    let Ok(addrs) = (name.as_str(), port).to_socket_addrs() else {
        eprintln!("skipped: host name {name} does not resolve here");
        return;
    };
    let internal = addrs
        .map(|a| weft::net::reach_of_ip(a.ip()))
        .all(|r| r != weft::net::Reach::Public);
    if !internal || name.contains("localhost") {
        eprintln!("skipped: host name {name} resolves to a public address here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = support::transform_manifest(
        dir.path(),
        &support::plugin("hostile-http"),
        &format!("grants = {{ outbound_hosts = [\"http://{name}:{port}\"] }}"),
    );
    let mut p = Pipeline::new(&support::runtime(), Manifest::load(&m).unwrap(), None).unwrap();
    let o = p.process(vec![item(&format!("http://{name}:{port}/x"))]);
    assert_eq!(o.dead.len(), 1);
    assert!(
        o.dead[0].failure.message.contains("HttpRequestDenied"),
        "{}",
        o.dead[0].failure
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no connection was made");
}
