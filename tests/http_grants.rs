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
