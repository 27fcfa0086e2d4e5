//! The plugin's generation code compiled natively, for comparison with the
//! component run by weft (README, "The local LLM generator"):
//!
//!   cargo run --release -p local-llm-generator --example bench -- \
//!       pipelines/airline/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
//!       prompts.jsonl [--max-tokens 64] [--ignore-eos] [--context-tokens 1024] \
//!       [--weights q8_0|as-is]
//!
//! `prompts.jsonl` has one question per line in weft's JSON form with its
//! `messages` (what a prompt-builder stage produced: `weft run --output` of
//! a pipeline that stops after the prompt stage, or of one that answers),
//! so the native code sees exactly the messages the component sees. Each is
//! rendered with the component's chat template (`chat::render`) and
//! generated with `Llm::generate`, greedy, as the component does; the
//! defaults are the component's (`max_tokens` 64, window 1,024, Q8_0).
//!
//! Prints the model load time, then per prompt: prompt tokens, time to
//! first token (tokenisation + prefill + first sample, as the component's
//! debug line), generated tokens and the decode rate; then p50 time to
//! first token and the mean decode rate. No warm-up: the component's first
//! answer is cold too. candle's matrix products use `RAYON_NUM_THREADS`
//! threads (default: every core); the component has one thread, so compare
//! like for like with `RAYON_NUM_THREADS=1`.

use local_llm_generator::llama::WeightFormat;
use local_llm_generator::{render, Llm, Params, Turn};
use std::path::Path;
use std::time::Instant;

type Error = Box<dyn std::error::Error>;

/// CPU seconds (user + system, every thread) this process has used, from
/// `/proc/self/stat` (Linux; clock ticks taken as 100 a second), or `None`.
/// On a machine shared with other work, wall time measures the contention
/// as much as the code; CPU time much less so.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces), from `state`.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn cpu_since(start: Option<f64>) -> String {
    match (start, cpu_seconds()) {
        (Some(a), Some(b)) => format!("{:.2}", b - a),
        _ => "?".into(),
    }
}

struct Args {
    model: String,
    prompts: String,
    max_tokens: usize,
    context_tokens: usize,
    ignore_eos: bool,
    weights: WeightFormat,
}

fn args() -> Result<Args, Error> {
    let usage = "usage: bench MODEL.gguf PROMPTS.jsonl [--max-tokens N] [--ignore-eos] \
                 [--context-tokens N] [--weights q8_0|as-is]";
    let mut positional = Vec::new();
    let mut a = Args {
        model: String::new(),
        prompts: String::new(),
        max_tokens: 64,
        context_tokens: 1024,
        ignore_eos: false,
        weights: WeightFormat::Q8_0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--max-tokens" => a.max_tokens = value("--max-tokens")?.parse()?,
            "--context-tokens" => a.context_tokens = value("--context-tokens")?.parse()?,
            "--ignore-eos" => a.ignore_eos = true,
            "--weights" => {
                a.weights = match value("--weights")?.as_str() {
                    "q8_0" => WeightFormat::Q8_0,
                    "as-is" => WeightFormat::AsIs,
                    w => return Err(format!("--weights {w:?}: q8_0 or as-is").into()),
                }
            }
            "-h" | "--help" => return Err(usage.into()),
            _ if arg.starts_with("--") => {
                return Err(format!("unknown option {arg}; {usage}").into())
            }
            _ => positional.push(arg),
        }
    }
    let [model, prompts] = <[String; 2]>::try_from(positional).map_err(|_| usage)?;
    a.model = model;
    a.prompts = prompts;
    Ok(a)
}

/// A question id and its messages, (role, content).
type Chat = (String, Vec<(String, String)>);

/// One `Chat` per line of `path`.
fn prompts(path: &str) -> Result<Vec<Chat>, Error> {
    let mut out = Vec::new();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |msg: &str| format!("{path}:{}: {msg}", n + 1);
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| at(&e.to_string()))?;
        let id = v["id"].as_str().unwrap_or("?").to_string();
        let messages = v["messages"]
            .as_array()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| at("no `messages`: use the output of a prompt-builder stage"))?
            .iter()
            .map(|m| match (m["role"].as_str(), m["content"].as_str()) {
                (Some(r), Some(c)) => Ok((r.to_string(), c.to_string())),
                _ => Err(at("a message without a string `role` and `content`")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push((id, messages));
    }
    if out.is_empty() {
        return Err(format!("{path}: no prompts").into());
    }
    Ok(out)
}

fn main() -> Result<(), Error> {
    let a = args()?;
    let prompts = prompts(&a.prompts)?;
    let params = Params {
        max_tokens: a.max_tokens,
        ignore_eos: a.ignore_eos,
        ..Params::default()
    };
    let threads = candle_core::utils::get_num_threads();
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let llm = Llm::load(Path::new(&a.model), a.context_tokens, a.weights)?;
    let load = t0.elapsed();
    println!(
        "native, {threads} thread(s): load {:.2} s ({} s CPU); {} prompts, max_tokens {}, \
         ignore_eos {}, greedy",
        load.as_secs_f64(),
        cpu_since(c0),
        prompts.len(),
        a.max_tokens,
        a.ignore_eos
    );
    println!("id\tprompt_tokens\tfirst_token_ms\ttokens\ttokens_per_s\tfinish\tcpu_s\tanswer");
    let mut ttft = Vec::new();
    let mut rates = Vec::new();
    let (t, c) = (Instant::now(), cpu_seconds());
    for (id, messages) in &prompts {
        let turns: Vec<Turn<'_>> = messages
            .iter()
            .map(|(role, content)| Turn { role, content })
            .collect();
        let cpu = cpu_seconds();
        let g = llm.generate(&render(&turns), &params)?;
        let cpu = cpu_since(cpu);
        let ms = g.first_token.as_secs_f64() * 1000.0;
        println!(
            "{id}\t{}\t{ms:.0}\t{}\t{:.1}\t{:?}\t{cpu}\t{:?}",
            g.prompt_tokens,
            g.tokens,
            g.decode_rate(),
            g.finish,
            g.text.chars().take(60).collect::<String>()
        );
        ttft.push(ms);
        if g.tokens > 1 {
            rates.push(g.decode_rate());
        }
    }
    let total = t.elapsed().as_secs_f64();
    ttft.sort_by(f64::total_cmp);
    let n = ttft.len();
    let p50 = (ttft[(n - 1) / 2] + ttft[n / 2]) / 2.0;
    let mean = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
    println!(
        "summary: native {threads} thread(s): load {:.2} s, first token p50 {p50:.0} ms \
         (min {:.0}, max {:.0}), decode mean {mean:.1} tokens/s, {} prompts in {total:.1} s \
         ({} s CPU)",
        load.as_secs_f64(),
        ttft[0],
        ttft[n - 1],
        prompts.len(),
        cpu_since(c)
    );
    Ok(())
}
