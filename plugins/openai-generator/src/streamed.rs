//! A streamed chat completion (`"stream": true`): server-sent events, one
//! `data: {chunk}` line per piece (`choices[0].delta.content`), ending with
//! `data: [DONE]`. Assembled here as the bytes arrive, handing on the text
//! that can no longer change, so the host can stream it to readers.

use crate::failure::Failure;
use serde_json::Value;

/// The completion so far.
#[derive(Debug, Default)]
pub struct StreamedCompletion {
    /// Bytes of an unfinished line.
    line: Vec<u8>,
    text: String,
    /// Bytes of the settled text already handed on.
    sent: usize,
    finish_reason: Option<String>,
    error: Option<String>,
    done: bool,
}

impl StreamedCompletion {
    /// Takes the next bytes of the response; returns the new settled text
    /// (the answer without its leading and, so far, trailing whitespace,
    /// which the final answer does not keep either), empty if none.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.on_line(&line);
            } else {
                self.line.push(b);
            }
        }
        let settled = self.text.trim();
        if settled.len() > self.sent && settled.is_char_boundary(self.sent) {
            let piece = settled[self.sent..].to_string();
            self.sent = settled.len();
            piece
        } else {
            String::new()
        }
    }

    fn on_line(&mut self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let Some(data) = line.trim_end_matches('\r').strip_prefix("data:") else {
            return; // comments (`: ping`), `event:`, `id:` and blank lines
        };
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            self.error = Some(format!("a streamed chunk is not JSON: {}", cut(data, 200)));
            return;
        };
        if let Some(e) = v.get("error") {
            let m = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("no message");
            self.error = Some(format!("the endpoint failed mid-stream: {}", cut(m, 300)));
            return;
        }
        if let Some(c) = v
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            self.text.push_str(c);
        }
        if let Some(r) = v
            .pointer("/choices/0/finish_reason")
            .and_then(Value::as_str)
        {
            self.finish_reason = Some(r.to_string());
        }
    }

    /// The answer once the response has ended.
    pub fn finish(mut self) -> Result<String, Failure> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.on_line(&line);
        }
        if let Some(e) = self.error {
            // Cut off mid-answer: worth another try.
            return Err(Failure::transient(e));
        }
        let text = self.text.trim();
        if !text.is_empty() {
            if !self.done && self.finish_reason.is_none() {
                return Err(Failure::transient(
                    "the streamed completion ended without `[DONE]` or a finish reason",
                ));
            }
            return Ok(text.to_string());
        }
        Err(crate::chat::no_answer_text(self.finish_reason.as_deref()))
    }
}

fn cut(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::FailureKind;

    fn chunk(content: &str) -> String {
        format!(
            "data: {}\n\n",
            serde_json::json!({"object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
        )
    }

    #[test]
    fn pieces_arrive_settled_and_join_to_the_answer() {
        let mut c = StreamedCompletion::default();
        let mut pieces = Vec::new();
        let stream = format!(
            ": keep-alive\n\n{}{}{}{}data: [DONE]\n\n",
            chunk("\n An"),
            chunk(" extra bag "),
            chunk("costs 60 EUR"),
            chunk(" [1]. \n")
        );
        // Split anywhere, even inside a line.
        for part in stream.as_bytes().chunks(7) {
            let p = c.push(part);
            if !p.is_empty() {
                pieces.push(p);
            }
        }
        let answer = c.finish().unwrap();
        assert_eq!(answer, "An extra bag costs 60 EUR [1].");
        assert_eq!(pieces.concat(), answer);
        assert!(pieces.len() >= 3, "{pieces:?}");
    }

    #[test]
    fn broken_streams_are_errors() {
        let mut c = StreamedCompletion::default();
        c.push(chunk("half an answer").as_bytes());
        assert_eq!(c.finish().unwrap_err().kind, FailureKind::Transient);

        let mut c = StreamedCompletion::default();
        c.push(b"data: {\"error\": {\"message\": \"overloaded\"}}\n\n");
        let e = c.finish().unwrap_err();
        assert!(e.message.contains("overloaded"), "{}", e.message);

        let mut c = StreamedCompletion::default();
        c.push(b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n");
        assert_eq!(c.finish().unwrap_err().kind, FailureKind::Config);
    }
}
