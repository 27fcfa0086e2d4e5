//! The query path's generator against an OpenAI-compatible endpoint: a
//! stand-in server on loopback that speaks the real protocol over HTTP, and
//! the real `openai-generator` component. Transient failures (5xx) are
//! retried with backoff; a failing endpoint dead-letters the question with
//! the reason and nothing is lost.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// Answers each request with the next status from `script` (the last one
/// repeats); 200 responses carry a chat completion citing [1]. Returns the
/// port and the request bodies seen.
fn stand_in(script: Vec<u16>) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for (n, stream) in l.incoming().flatten().enumerate() {
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            s2.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            let status = script[n.min(script.len() - 1)];
            let streamed = String::from_utf8_lossy(&body).contains("\"stream\":true");
            if status == 200 && streamed {
                // A streamed completion, as OpenAI sends it: server-sent
                // events a few words at a time, then `[DONE]`; the body
                // ends when the connection closes.
                let mut w = stream;
                let _ = write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n: stand-in\n\n"
                );
                for piece in ["An extra", " bag costs", " 60 EUR", " [1].", ""] {
                    let chunk = serde_json::json!({
                        "id": "cmpl-1", "object": "chat.completion.chunk", "model": "stand-in",
                        "choices": [{"index": 0, "delta": {"content": piece},
                            "finish_reason": if piece.is_empty() { Some("stop") } else { None }}]
                    });
                    let _ = write!(w, "data: {chunk}\n\n");
                    let _ = w.flush();
                    std::thread::sleep(std::time::Duration::from_millis(150));
                }
                let _ = write!(w, "data: [DONE]\n\n");
                continue;
            }
            let payload = if status == 200 {
                serde_json::json!({
                    "id": "cmpl-1", "object": "chat.completion", "model": "stand-in",
                    "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "An extra bag costs 60 EUR [1]."}}]
                })
                .to_string()
            } else {
                serde_json::json!({"error": {"message": "overloaded", "type": "server_error"}})
                    .to_string()
            };
            let mut w = stream;
            let _ = write!(
                w,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
                payload.len()
            );
        }
    });
    (port, seen)
}

fn run(port: u16, dir: &std::path::Path) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    run_with(port, dir, "")
}

/// [`run`] with `extra` added to the generator's config table.
fn run_with(
    port: u16,
    dir: &std::path::Path,
    extra: &str,
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let m = support::write(
        dir,
        "answer.toml",
        &format!(
            r#"name = "answer"
tenant = "demo"
[source]
topic = "questions"
format = "question"
[[stage]]
name = "prompt"
kind = "prompt-builder"
plugin = "{prompt}"
[[stage]]
name = "llm"
kind = "generator"
plugin = "{llm}"
config = {{ base_url = "http://127.0.0.1:{port}/v1", model = "stand-in", api_key_env = "OPENAI_API_KEY"{extra} }}
grants = {{ outbound_hosts = ["http://127.0.0.1:{port}"], env = ["OPENAI_API_KEY"] }}
limits = {{ timeout_ms = 5000 }}
[sink]
topic = "answers"
"#,
            prompt = support::plugin("prompt-template").display(),
            llm = support::plugin("openai-generator").display(),
        ),
    );
    let q = serde_json::json!({
        "id": "q1", "text": "How much does an extra bag cost?",
        "hits": [{"chunk_id": "policy-baggage#0", "doc_id": "policy-baggage", "score": 0.9,
                  "text": "Each additional or overweight bag costs 60 EUR per flight segment."}]
    });
    let input = support::write(dir, "q.jsonl", &format!("{q}\n"));
    let out = dir.join("out.jsonl");
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([
            "run",
            m.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--quiet",
        ])
        .env("WEFT_CACHE_DIR", support::cache_dir())
        .env("OPENAI_API_KEY", "sk-test-key")
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    (
        support::read_jsonl(&out),
        support::read_jsonl(&dir.join("out.dead-letters.jsonl")),
    )
}

#[test]
fn transient_5xx_is_retried_then_the_answer_cites_its_source() {
    let (port, seen) = stand_in(vec![503, 502, 200]);
    let dir = tempfile::tempdir().unwrap();
    let (out, dead) = run(port, dir.path());
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["id"], "q1");
    assert_eq!(out[0]["answer"], "An extra bag costs 60 EUR [1].");
    assert_eq!(out[0]["citations"][0]["doc_id"], "policy-baggage");
    let bodies = seen.lock().unwrap();
    assert_eq!(bodies.len(), 3, "two failures, then success");
    assert!(
        bodies[2].contains("60 EUR per flight segment"),
        "the prompt carries the context"
    );
    assert!(bodies[2].contains("\"model\":\"stand-in\""));
}

#[test]
fn a_streamed_completion_streams_the_answer_piece_by_piece() {
    let (port, seen) = stand_in(vec![200]);
    let dir = tempfile::tempdir().unwrap();
    let (out, dead) = run_with(port, dir.path(), ", stream = true");
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(out[0]["answer"], "An extra bag costs 60 EUR [1].");
    assert_eq!(out[0]["citations"][0]["doc_id"], "policy-baggage");
    assert!(seen.lock().unwrap()[0].contains("\"stream\":true"));
    // The pieces, as `weft run --input` writes them beside the output (the
    // records a broker run produces to `<answers>.deltas`): in order, one
    // stream, ending with the final piece, joined exactly the answer.
    let pieces = support::read_jsonl(&dir.path().join("out.deltas.jsonl"));
    assert!(pieces.len() >= 4, "{pieces:#?}");
    let text: String = pieces
        .iter()
        .map(|p| p["text"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(text, "An extra bag costs 60 EUR [1].", "{pieces:#?}");
    for (i, p) in pieces.iter().enumerate() {
        assert_eq!(p["seq"], i as u64);
        assert_eq!(p["id"], "q1");
        assert_eq!(p["stream"], pieces[0]["stream"]);
        assert_eq!(p["final"] == true, i + 1 == pieces.len(), "{pieces:#?}");
        assert!(p.get("reset").is_none(), "{pieces:#?}");
    }
}

#[test]
fn an_endpoint_that_keeps_failing_dead_letters_the_question_with_the_reason() {
    let (port, seen) = stand_in(vec![500]);
    let dir = tempfile::tempdir().unwrap();
    let (out, dead) = run(port, dir.path());
    assert!(out.is_empty());
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["stage"], "llm");
    assert_eq!(dead[0]["error_kind"], "transient");
    let msg = dead[0]["error"].as_str().unwrap();
    assert!(
        msg.contains("500") && msg.contains("after 3 retries"),
        "{msg}"
    );
    assert_eq!(seen.lock().unwrap().len(), 4, "one try and three retries");
}

#[test]
fn the_airline_query_path_answers_with_an_llm_from_the_index() {
    support::ensure_plugins();
    let (port, seen) = stand_in(vec![200]);
    let dir = tempfile::tempdir().unwrap();
    let root = support::repo_root();
    let data = dir.path().join("data");
    let weft = |cwd: &std::path::Path, args: &[&str]| {
        let r = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
            .current_dir(cwd)
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .env("WEFT_CACHE_DIR", support::cache_dir())
            .env("OPENAI_API_KEY", "sk-test-key")
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    };
    let chunks = dir.path().join("chunks.jsonl");
    weft(
        &root,
        &[
            "run",
            "pipelines/airline/ingest.toml",
            "--input",
            "data/airline/docs.jsonl",
            "--output",
            chunks.to_str().unwrap(),
            "--quiet",
        ],
    );
    // The shipped LLM manifest, pointed at the stand-in instead of OpenAI.
    let mut m = std::fs::read_to_string(root.join("pipelines/airline/query-openai.toml")).unwrap();
    m = m
        .replace(
            "https://api.openai.com/v1",
            &format!("http://127.0.0.1:{port}/v1"),
        )
        .replace(
            "https://api.openai.com",
            &format!("http://127.0.0.1:{port}"),
        );
    for p in [
        "regex-tagger",
        "hash-embedder",
        "topk-retriever",
        "prompt-template",
        "openai-generator",
    ] {
        m = m.replace(
            &format!("plugin = \"{p}\""),
            &format!("plugin = \"{}\"", support::plugin(p).display()),
        );
    }
    let manifest = support::write(dir.path(), "query-openai.toml", &m);
    let q = support::write(
        dir.path(),
        "q.jsonl",
        "{\"id\":\"q1\",\"text\":\"How much does an extra checked bag cost?\"}\n",
    );
    let out = dir.path().join("answers.jsonl");
    weft(
        dir.path(),
        &[
            "run",
            manifest.to_str().unwrap(),
            "--input",
            q.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--quiet",
        ],
    );
    let answers = support::read_jsonl(&out);
    assert_eq!(answers.len(), 1);
    let a = &answers[0];
    assert_eq!(a["answer"], "An extra bag costs 60 EUR [1].");
    // [1] is the first retrieved hit, cited with its document.
    assert_eq!(a["citations"][0]["doc_id"], a["hits"][0]["doc_id"]);
    assert_eq!(a["hits"][0]["doc_id"], "policy-baggage", "{a}");
    assert!(a["timings_ms"]["answer"].is_number());
    let bodies = seen.lock().unwrap();
    assert_eq!(bodies.len(), 1);
    assert!(
        bodies[0].contains("60 EUR per flight segment"),
        "the prompt carries the retrieved context: {}",
        bodies[0]
    );
}
