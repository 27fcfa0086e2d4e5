//! Rendering of the numbered context and of the prompt template.

/// The system message used when the config sets none. The numbered-citation
/// convention matches what the generators parse back (`[n]` = the n-th hit).
pub const DEFAULT_SYSTEM: &str =
    "You answer questions using only the numbered context passages provided. \
Cite every passage you use by its number in square brackets, like [1] or [2][3]. \
If the context does not contain the answer, say that you don't know.";

/// The user message used when the config sets none.
pub const DEFAULT_TEMPLATE: &str = "Context:\n{context}\n\nQuestion: {question}";

/// Budget for the rendered context, in characters: about 1,500 tokens, which
/// leaves room for the answer in small local models' context windows.
pub const DEFAULT_MAX_CONTEXT_CHARS: usize = 6000;

/// Rendered in place of the context when there are no hits, so the model can
/// see that retrieval found nothing rather than an empty section.
pub const NO_CONTEXT: &str = "(no relevant context was found)";

/// A partially fitting passage is cut to fit only if at least this much of it
/// survives; a shorter fragment is more confusing than useful.
const MIN_PARTIAL_CHARS: usize = 100;

/// The parts of a hit the prompt uses.
#[derive(Debug, Clone, Copy)]
pub struct Passage<'a> {
    pub doc_id: &'a str,
    pub text: &'a str,
}

/// The prompt settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptConfig {
    pub system: String,
    pub template: String,
    pub max_context_chars: usize,
}

impl Default for PromptConfig {
    fn default() -> PromptConfig {
        PromptConfig {
            system: DEFAULT_SYSTEM.to_string(),
            template: DEFAULT_TEMPLATE.to_string(),
            max_context_chars: DEFAULT_MAX_CONTEXT_CHARS,
        }
    }
}

/// The system and user messages for `question` and its passages.
pub fn build_prompt(
    question: &str,
    passages: &[Passage<'_>],
    cfg: &PromptConfig,
) -> Result<(String, String), String> {
    let question = question.trim();
    if question.is_empty() {
        return Err("question text is empty".to_string());
    }
    let context = render_context(passages, cfg.max_context_chars);
    Ok((
        fill(&cfg.system, question, &context),
        fill(&cfg.template, question, &context),
    ))
}

/// Lists passages as `[n] (doc <doc-id>) <text>`, numbered from 1 in hit
/// order, separated by blank lines, within `max_chars` characters. Whitespace
/// inside a passage is collapsed so each passage is one paragraph and the
/// numbering stays unambiguous. Passages that do not fit are left out from
/// the end, so `[n]` always means the n-th hit; the last included one may be
/// cut at a word boundary (marked with `…`).
pub fn render_context(passages: &[Passage<'_>], max_chars: usize) -> String {
    if passages.is_empty() {
        return NO_CONTEXT.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for (i, p) in passages.iter().enumerate() {
        let sep = if i == 0 { "" } else { "\n\n" };
        let head = format!("{sep}[{}] (doc {}) ", i + 1, p.doc_id);
        let text = collapse_whitespace(p.text);
        let head_len = head.chars().count();
        let text_len = text.chars().count();
        if used + head_len + text_len <= max_chars {
            out.push_str(&head);
            out.push_str(&text);
            used += head_len + text_len;
            continue;
        }
        let room = max_chars.saturating_sub(used + head_len);
        if room >= MIN_PARTIAL_CHARS || (i == 0 && room > 1) {
            out.push_str(&head);
            out.push_str(&truncate_words(&text, room));
        }
        break;
    }
    out
}

/// Replaces `{question}` and `{context}` in one pass, so placeholder-like
/// text inside the question or the passages is never expanded.
pub fn fill(template: &str, question: &str, context: &str) -> String {
    let mut out = String::with_capacity(template.len() + question.len() + context.len());
    let mut rest = template;
    while let Some(pos) = rest.find('{') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("{question}") {
            out.push_str(question);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{context}") {
            out.push_str(context);
            rest = after;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `max` characters of `s`, ending with `…`, cut after a whole word
/// unless that would drop more than half of the room.
fn truncate_words(s: &str, max: usize) -> String {
    let keep = max.saturating_sub(1);
    let cut = s.char_indices().nth(keep).map_or(s.len(), |(i, _)| i);
    let mut head = &s[..cut];
    if let Some(space) = head.rfind(' ') {
        if head[..space].chars().count() * 2 >= keep {
            head = &head[..space];
        }
    }
    format!("{}…", head.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p<'a>(doc_id: &'a str, text: &'a str) -> Passage<'a> {
        Passage { doc_id, text }
    }

    #[test]
    fn default_prompt_numbers_the_context() {
        let (system, user) = build_prompt(
            "How much is a bag?",
            &[
                p("baggage", "Bags cost 60 EUR."),
                p("pets", "Pets\n\nfly  too."),
            ],
            &PromptConfig::default(),
        )
        .unwrap();
        assert_eq!(system, DEFAULT_SYSTEM);
        assert_eq!(
            user,
            "Context:\n[1] (doc baggage) Bags cost 60 EUR.\n\n[2] (doc pets) Pets fly too.\n\nQuestion: How much is a bag?"
        );
    }

    #[test]
    fn custom_template_and_system_placeholders() {
        let cfg = PromptConfig {
            system: "Sources:\n{context}".to_string(),
            template: "Q: {question} {unknown} {".to_string(),
            max_context_chars: 100,
        };
        let (system, user) = build_prompt(" why? ", &[p("d", "because")], &cfg).unwrap();
        assert_eq!(system, "Sources:\n[1] (doc d) because");
        assert_eq!(user, "Q: why? {unknown} {");
    }

    #[test]
    fn placeholders_in_inputs_are_not_expanded() {
        let out = fill("{question} | {context}", "say {context}", "ctx {question}");
        assert_eq!(out, "say {context} | ctx {question}");
    }

    #[test]
    fn context_respects_the_budget() {
        let long = "word ".repeat(100);
        let passages = [p("a", &long), p("b", &long), p("c", &long)];
        for max in [50, 300, 600, 1000, 5000] {
            let ctx = render_context(&passages, max);
            assert!(ctx.chars().count() <= max, "{max}: {}", ctx.chars().count());
            assert!(ctx.starts_with("[1] (doc a) word"));
        }
        let ctx = render_context(&passages, 700);
        assert!(ctx.contains("[2] (doc b)"));
        assert!(ctx.ends_with("word…"), "{ctx}");
        assert!(!ctx.contains("[3]"));
        // Too little room for a useful fragment of the third passage.
        let two_full = render_context(&passages[..2], 10_000).chars().count();
        let ctx = render_context(&passages, two_full + 50);
        assert!(!ctx.contains("[3]"));
    }

    #[test]
    fn no_hits_and_empty_question() {
        assert_eq!(render_context(&[], 100), NO_CONTEXT);
        assert!(build_prompt("  ", &[], &PromptConfig::default()).is_err());
    }

    #[test]
    fn truncation_is_char_safe() {
        let s = "é".repeat(300);
        let t = truncate_words(&s, 101);
        assert_eq!(t.chars().count(), 101);
        assert!(t.ends_with('…'));
    }
}
