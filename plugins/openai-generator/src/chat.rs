//! The chat completions request and response.

use crate::failure::{truncate, Failure};
use serde_json::{json, Value};

/// A chat message, independent of the WIT bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: &'static str,
    pub content: String,
}

/// The JSON body of `POST {base_url}/chat/completions`.
pub fn request_body(
    model: &str,
    messages: &[ChatMessage],
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    stream: bool,
) -> Vec<u8> {
    let mut body = json!({
        "model": model,
        "messages": messages
            .iter()
            .map(|m| json!({ "role": m.role, "content": m.content }))
            .collect::<Vec<_>>(),
        "stream": stream,
    });
    if let Some(obj) = body.as_object_mut() {
        if let Some(t) = temperature {
            obj.insert("temperature".to_string(), json!(t));
        }
        if let Some(n) = max_tokens {
            obj.insert("max_tokens".to_string(), json!(n));
        }
    }
    body.to_string().into_bytes()
}

/// The answer text of a successful chat completion: `choices[0].message.content`.
pub fn parse_response(body: &[u8]) -> Result<String, Failure> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Failure::internal(format!(
            "the chat completion is not JSON ({e}): {}",
            truncate(&String::from_utf8_lossy(body), 200)
        ))
    })?;
    let choice = v.pointer("/choices/0").ok_or_else(|| {
        Failure::internal(format!(
            "the chat completion has no choices: {}",
            truncate(&v.to_string(), 200)
        ))
    })?;
    match choice.pointer("/message/content").and_then(Value::as_str) {
        Some(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        _ => Err(no_answer_text(
            choice.get("finish_reason").and_then(Value::as_str),
        )),
    }
}

/// Why a completion (whole or streamed) has no answer text, from its
/// `finish_reason`: a refusal is the input's fault, a cut the config's.
pub fn no_answer_text(finish_reason: Option<&str>) -> Failure {
    match finish_reason {
        Some("content_filter") => {
            Failure::invalid_input("the model declined to answer (content filter)")
        }
        Some("length") => {
            Failure::config("the model stopped before writing any answer text: raise `max_tokens`")
        }
        reason => Failure::internal(format!(
            "the chat completion has no answer text (finish_reason {reason:?})"
        )),
    }
}

/// The hits an answer cites, as 0-based indices into `n_hits` hits, in order
/// of first citation. Markers are `[n]` or `[n, m]`, 1-based as the prompt
/// numbered them; numbers out of range are ignored (the model made them up).
pub fn cited_hits(text: &str, n_hits: usize) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else { break };
        let inside = &rest[..close];
        let numbers: Option<Vec<usize>> = inside
            .split(',')
            .map(|p| p.trim().parse::<usize>().ok())
            .collect();
        if let Some(numbers) = numbers {
            for n in numbers {
                if (1..=n_hits).contains(&n) && !out.contains(&(n - 1)) {
                    out.push(n - 1);
                }
            }
            rest = &rest[close + 1..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::FailureKind;

    #[test]
    fn builds_the_request() {
        let body = request_body(
            "gpt-4o-mini",
            &[
                ChatMessage {
                    role: "system",
                    content: "Be brief.".into(),
                },
                ChatMessage {
                    role: "user",
                    content: "Q \"quoted\"".into(),
                },
            ],
            Some(0.0),
            None,
            false,
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["model"], "gpt-4o-mini");
        assert_eq!(v["messages"][0]["role"], "system");
        assert_eq!(v["messages"][1]["content"], "Q \"quoted\"");
        assert_eq!(v["temperature"], 0.0);
        assert_eq!(v["stream"], false);
        assert!(v.get("max_tokens").is_none());
    }

    #[test]
    fn parses_a_chat_completion() {
        let body = br#"{
          "id": "chatcmpl-123", "object": "chat.completion", "created": 1677652288,
          "model": "gpt-4o-mini",
          "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "\n\nAn extra bag costs 60 EUR [1]."},
            "logprobs": null, "finish_reason": "stop"
          }],
          "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
        }"#;
        assert_eq!(
            parse_response(body).unwrap(),
            "An extra bag costs 60 EUR [1]."
        );
    }

    #[test]
    fn odd_completions_are_errors() {
        assert_eq!(
            parse_response(b"<html>").unwrap_err().kind,
            FailureKind::Internal
        );
        assert_eq!(
            parse_response(br#"{"choices":[]}"#).unwrap_err().kind,
            FailureKind::Internal
        );
        let filtered =
            br#"{"choices":[{"message":{"content":null},"finish_reason":"content_filter"}]}"#;
        assert_eq!(
            parse_response(filtered).unwrap_err().kind,
            FailureKind::InvalidInput
        );
        let cut = br#"{"choices":[{"message":{"content":""},"finish_reason":"length"}]}"#;
        assert_eq!(parse_response(cut).unwrap_err().kind, FailureKind::Config);
    }

    #[test]
    fn citations_are_parsed() {
        assert_eq!(
            cited_hits("A [2]. B [1][2]. C [3, 1] D [9] [x] [", 3),
            vec![1, 0, 2]
        );
        assert_eq!(cited_hits("no markers", 3), Vec::<usize>::new());
        assert_eq!(cited_hits("[[1]]", 1), vec![0]);
        assert_eq!(cited_hits("[0] [1]", 0), Vec::<usize>::new());
    }
}
