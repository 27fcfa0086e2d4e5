//! SmolLM2's chat template and the `[n]` citation markers of an answer.
//! Plain string work, no model: unit-tested natively.

/// The system message SmolLM2's template inserts when a conversation has
/// none (from the GGUF's `tokenizer.chat_template`).
pub const DEFAULT_SYSTEM: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// Marks where the context was cut to fit the model's context window.
pub const CUT_MARK: &str = " …";

/// One chat message, role as the template spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn<'a> {
    pub role: &'a str,
    pub content: &'a str,
}

/// A rendered prompt in three parts, so that a prompt too long for the
/// context window can lose tokens from the *context* (`body`) and keep the
/// instructions before it and the question after it.
///
/// `head + body + tail` is exactly the SmolLM2 chat template applied to the
/// messages, ending with the opened assistant turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The system turn, earlier turns and the start of the last user turn.
    pub head: String,
    /// The last user turn up to its last paragraph: the retrieved context,
    /// as the prompt-template stage renders it (`Context:\n[1] ...`).
    pub body: String,
    /// The last paragraph of the last user turn (the question) and the
    /// opened assistant turn.
    pub tail: String,
}

impl Prompt {
    pub fn text(&self) -> String {
        format!("{}{}{}", self.head, self.body, self.tail)
    }
}

fn turn(role: &str, content: &str) -> String {
    format!("<|im_start|>{role}\n{content}<|im_end|>\n")
}

/// Applies SmolLM2's chat template (`<|im_start|>role\n...<|im_end|>\n` per
/// message, its default system message when the first is not a system one,
/// then `<|im_start|>assistant\n`). The last user message is split at its
/// last blank line: the prompt-template stage puts the question there, after
/// the context.
pub fn render(turns: &[Turn<'_>]) -> Prompt {
    let mut head = String::new();
    if turns.first().map(|t| t.role) != Some("system") {
        head.push_str(&turn("system", DEFAULT_SYSTEM));
    }
    let last_user = turns.iter().rposition(|t| t.role == "user");
    let mut body = String::new();
    let mut tail = String::new();
    for (i, t) in turns.iter().enumerate() {
        if Some(i) == last_user {
            head.push_str("<|im_start|>user\n");
            match t.content.rfind("\n\n") {
                Some(at) => {
                    body.push_str(&t.content[..at]);
                    tail.push_str(&t.content[at..]);
                }
                None => tail.push_str(t.content),
            }
            tail.push_str("<|im_end|>\n");
        } else if last_user.is_some_and(|u| i > u) {
            tail.push_str(&turn(t.role, t.content));
        } else {
            head.push_str(&turn(t.role, t.content));
        }
    }
    tail.push_str("<|im_start|>assistant\n");
    Prompt { head, body, tail }
}

/// The hit numbers (1-based, as in the prompt's `[n]`) an answer cites, in
/// order of first mention, each once; numbers outside `1..=hits` are
/// ignored. Accepts `[2]`, `[1][3]` and `[1, 3]`.
pub fn cited(answer: &str, hits: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else { break };
        let inside = &rest[..close];
        let numbers: Option<Vec<usize>> = inside
            .split(',')
            .map(|n| n.trim().parse::<usize>().ok())
            .collect();
        for n in numbers.unwrap_or_default() {
            if (1..=hits).contains(&n) && !out.contains(&n) {
                out.push(n);
            }
        }
        rest = &rest[close + 1..];
    }
    out
}

/// The text up to the first of `stop` (and whether one was found).
pub fn cut_at_stop<'a>(text: &'a str, stop: &[String]) -> (&'a str, bool) {
    match stop.iter().filter_map(|s| text.find(s.as_str())).min() {
        Some(at) => (&text[..at], true),
        None => (text, false),
    }
}

/// The part of an answer decoded so far that can no longer change, so it
/// can be streamed: without leading whitespace, cut before an incomplete
/// character (`U+FFFD` while a multi-byte character's bytes are still
/// coming), before trailing whitespace (the answer is trimmed) and before
/// a tail that may still grow into a stop sequence.
pub fn settled<'a>(text: &'a str, stop: &[String]) -> &'a str {
    let mut t = text.trim_start();
    if let Some(i) = t.find('\u{FFFD}') {
        t = &t[..i];
    }
    t = t.trim_end();
    let hold = stop
        .iter()
        .map(|s| {
            (1..s.len())
                .rev()
                .filter(|&i| s.is_char_boundary(i))
                .find(|&i| t.ends_with(&s[..i]))
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    t[..t.len() - hold].trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_text_holds_back_what_may_still_change() {
        let stop = vec!["\nQuestion:".to_string()];
        assert_eq!(settled("  The gate is B7. ", &stop), "The gate is B7.");
        assert_eq!(settled("Gate B7\nQue", &stop), "Gate B7");
        assert_eq!(settled("Gate B7\nQ", &stop), "Gate B7");
        assert_eq!(settled("Gate B7 caf\u{FFFD}", &stop), "Gate B7 caf");
        assert_eq!(settled("Gate B7, Queue", &stop), "Gate B7, Queue");
    }

    #[test]
    fn template_matches_smollm2() {
        let p = render(&[
            Turn {
                role: "system",
                content: "Be brief.",
            },
            Turn {
                role: "user",
                content: "Context:\n[1] Bags cost 60 EUR.\n\nQuestion: How much?",
            },
        ]);
        assert_eq!(
            p.text(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nContext:\n[1] Bags cost \
             60 EUR.\n\nQuestion: How much?<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(p.body, "Context:\n[1] Bags cost 60 EUR.");
        assert_eq!(
            p.tail,
            "\n\nQuestion: How much?<|im_end|>\n<|im_start|>assistant\n"
        );
        let q = render(&[Turn {
            role: "user",
            content: "Hi",
        }]);
        assert!(q
            .head
            .starts_with("<|im_start|>system\nYou are a helpful AI assistant"));
        assert_eq!(q.body, "");
        assert_eq!(q.tail, "Hi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn citations_are_parsed_in_order_once_and_in_range() {
        assert_eq!(
            cited("A [2] and B [1][2], C [1, 3] [9] [x] [", 3),
            vec![2, 1, 3]
        );
        assert_eq!(cited("no markers", 3), Vec::<usize>::new());
        assert_eq!(cited("[1]", 0), Vec::<usize>::new());
    }

    #[test]
    fn stop_sequences_cut_the_answer() {
        let stop = vec!["\n\n".to_string(), "Question:".to_string()];
        assert_eq!(
            cut_at_stop("Yes [1].\n\nQuestion: more", &stop),
            ("Yes [1].", true)
        );
        assert_eq!(cut_at_stop("Yes [1].", &stop), ("Yes [1].", false));
    }
}
