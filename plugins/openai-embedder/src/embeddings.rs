//! The embeddings request and response.

use crate::failure::{truncate, Failure};
use serde_json::{json, Value};

/// The JSON body of `POST {base_url}/embeddings`.
pub fn request_body(model: &str, texts: &[String], dimensions: Option<u32>) -> Vec<u8> {
    let mut body = json!({ "model": model, "input": texts });
    if let (Some(d), Some(obj)) = (dimensions, body.as_object_mut()) {
        obj.insert("dimensions".to_string(), json!(d));
    }
    body.to_string().into_bytes()
}

/// Rejects texts the API would refuse anyway (it answers 400 for empty
/// input), naming the culprit so the host's one-by-one retry isolates it.
pub fn check_texts(texts: &[String]) -> Result<(), Failure> {
    match texts.iter().position(|t| t.trim().is_empty()) {
        Some(i) => Err(Failure::invalid_input(format!(
            "text {i} of the batch is empty"
        ))),
        None => Ok(()),
    }
}

/// The vectors of a successful response, `data[i].embedding` in `index`
/// order, checked to be exactly one per input, `dimension` long and finite.
pub fn parse_response(
    body: &[u8],
    expected: usize,
    dimension: u32,
) -> Result<Vec<Vec<f32>>, Failure> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Failure::internal(format!(
            "the embeddings response is not JSON ({e}): {}",
            truncate(&String::from_utf8_lossy(body), 200)
        ))
    })?;
    let data = v.get("data").and_then(Value::as_array).ok_or_else(|| {
        Failure::internal(format!(
            "the embeddings response has no `data` array: {}",
            truncate(&v.to_string(), 200)
        ))
    })?;
    if data.len() != expected {
        return Err(Failure::internal(format!(
            "the embeddings response has {} vectors for {expected} texts",
            data.len()
        )));
    }
    let mut out: Vec<Option<Vec<f32>>> = vec![None; expected];
    for (pos, item) in data.iter().enumerate() {
        // `index` is optional in some servers; position is the fallback.
        let index = match item.get("index") {
            None => pos,
            Some(i) => i
                .as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .ok_or_else(|| Failure::internal(format!("data[{pos}].index is not an index")))?,
        };
        let slot = out.get_mut(index).ok_or_else(|| {
            Failure::internal(format!("data[{pos}].index {index} is out of range"))
        })?;
        if slot.is_some() {
            return Err(Failure::internal(format!(
                "data index {index} appears twice"
            )));
        }
        let raw = item
            .get("embedding")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                Failure::internal(format!(
                    "data[{pos}].embedding is not an array of numbers (base64 encoding is not supported)"
                ))
            })?;
        if raw.len() != dimension as usize {
            return Err(Failure::config(format!(
                "the model returned {}-dimensional vectors but `dimension` is {dimension}: set `dimension = {}`",
                raw.len(),
                raw.len()
            )));
        }
        let vector: Vec<f32> = raw
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32).filter(|f| f.is_finite()))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| {
                Failure::internal(format!(
                    "data[{pos}].embedding has a non-numeric or non-finite value"
                ))
            })?;
        *slot = Some(vector);
    }
    // Every slot is filled: `expected` distinct in-range indices were seen.
    Ok(out.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::FailureKind;

    #[test]
    fn builds_the_request() {
        let texts = vec!["a".to_string(), "b \"c\"".to_string()];
        let v: Value = serde_json::from_slice(&request_body("m", &texts, None)).unwrap();
        assert_eq!(v, json!({"model": "m", "input": ["a", "b \"c\""]}));
        let v: Value = serde_json::from_slice(&request_body("m", &texts, Some(256))).unwrap();
        assert_eq!(v["dimensions"], 256);
    }

    #[test]
    fn parses_an_embeddings_response_in_index_order() {
        let body = br#"{
          "object": "list",
          "data": [
            {"object": "embedding", "index": 1, "embedding": [0.5, -0.25, 1e-3]},
            {"object": "embedding", "index": 0, "embedding": [1, 0, 0]}
          ],
          "model": "text-embedding-3-small",
          "usage": {"prompt_tokens": 8, "total_tokens": 8}
        }"#;
        let v = parse_response(body, 2, 3).unwrap();
        assert_eq!(v, vec![vec![1.0, 0.0, 0.0], vec![0.5, -0.25, 0.001]]);
    }

    #[test]
    fn bad_responses_are_errors() {
        let k = |body: &[u8], n, d| parse_response(body, n, d).unwrap_err().kind;
        assert_eq!(k(b"nope", 1, 2), FailureKind::Internal);
        assert_eq!(k(br#"{"data":[]}"#, 1, 2), FailureKind::Internal);
        assert_eq!(
            k(br#"{"data":[{"index":0,"embedding":[1,2,3]}]}"#, 1, 2),
            FailureKind::Config
        );
        assert_eq!(
            k(br#"{"data":[{"index":3,"embedding":[1,2]}]}"#, 1, 2),
            FailureKind::Internal
        );
        assert_eq!(
            k(
                br#"{"data":[{"index":0,"embedding":[1,2]},{"index":0,"embedding":[1,2]}]}"#,
                2,
                2
            ),
            FailureKind::Internal
        );
        assert_eq!(
            k(br#"{"data":[{"index":0,"embedding":"AAAA"}]}"#, 1, 2),
            FailureKind::Internal
        );
        assert_eq!(
            k(br#"{"data":[{"index":0,"embedding":[1,"x"]}]}"#, 1, 2),
            FailureKind::Internal
        );
        // Without `index`, position decides.
        let v = parse_response(
            br#"{"data":[{"embedding":[1,2]},{"embedding":[3,4]}]}"#,
            2,
            2,
        )
        .unwrap();
        assert_eq!(v, vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
    }

    #[test]
    fn empty_texts_are_rejected_up_front() {
        assert!(check_texts(&["a".into(), "b".into()]).is_ok());
        let f = check_texts(&["a".into(), " ".into()]).unwrap_err();
        assert_eq!(f.kind, FailureKind::InvalidInput);
        assert!(f.message.contains("text 1"));
    }
}
