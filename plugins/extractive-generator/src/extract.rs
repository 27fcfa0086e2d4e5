//! Sentence extraction: answers a question with the sentences of the
//! retrieved passages that share the most informative words with it.

use std::collections::{HashMap, HashSet};

/// The answer when there is nothing to answer from. Not an error: "no
/// relevant context" is a legitimate outcome the user should see.
pub const NO_CONTEXT_ANSWER: &str = "I don't know: no relevant context was found.";

/// The parts of a hit extraction uses.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub text: &'a str,
    /// Retrieval score, higher is better (cosine similarity, usually 0..1).
    pub score: f32,
    /// The document title (the chunker puts it in the `title` metadata).
    /// Documents often repeat it as their first line; a heading matches the
    /// question's words well but answers nothing, so it is never quoted.
    pub title: Option<&'a str>,
}

/// An extracted answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Extract {
    /// The chosen sentences, each group followed by its `[n]` marker, where
    /// `n` is the 1-based position of the hit in the input (the numbering
    /// the prompt builder uses too).
    pub text: String,
    /// Indices into the input of the hits the sentences came from, best first.
    pub cited: Vec<usize>,
}

/// A candidate sentence.
#[derive(Debug, Clone)]
struct Sentence<'a> {
    hit: usize,
    pos: usize,
    text: &'a str,
    terms: HashSet<String>,
    score: f64,
}

/// Picks up to `max_sentences` sentences that best answer `question`.
///
/// A sentence scores the summed rarity (`1 + ln(N/df)` over the N candidate
/// sentences) of the question's content words it contains, times a weight of
/// `0.25 + score` (score clamped to 0..1) for its hit, so a good match in a
/// better hit wins. Duplicate sentences (overlapping chunks repeat text) count
/// once. If no sentence shares a word with the question, the retriever's
/// best hit still is the best evidence there is, so its opening sentences are
/// used. The sentences are then grouped by hit, groups ordered by their best
/// sentence and sentences within a group in document order, which reads
/// better than a strict ranking.
pub fn extract_answer(question: &str, hits: &[Source<'_>], max_sentences: usize) -> Extract {
    extract_answer_from(question, hits, max_sentences, false)
}

/// [`extract_answer`]; with `one_source`, every sentence comes from the hit
/// of the best one. Without a metadata filter the hits may be several
/// near-identical notes ("Current status: on time." in each flight's), and a
/// second sentence taken from another hit would answer about the wrong one.
pub fn extract_answer_from(
    question: &str,
    hits: &[Source<'_>],
    max_sentences: usize,
    one_source: bool,
) -> Extract {
    let max_sentences = max_sentences.max(1);
    let mut sentences: Vec<Sentence<'_>> = Vec::new();
    for (hit, h) in hits.iter().enumerate() {
        let title = h.title.map(normalise_heading);
        for (pos, text) in split_sentences(h.text).into_iter().enumerate() {
            if title.as_deref() == Some(normalise_heading(text).as_str()) {
                continue;
            }
            sentences.push(Sentence {
                hit,
                pos,
                text,
                terms: terms(text).into_iter().collect(),
                score: 0.0,
            });
        }
    }
    if sentences.is_empty() {
        return Extract {
            text: NO_CONTEXT_ANSWER.to_string(),
            cited: Vec::new(),
        };
    }
    let q_terms: HashSet<String> = terms(question).into_iter().collect();
    let mut df: HashMap<&str, usize> = HashMap::new();
    for s in &sentences {
        for t in q_terms.iter().filter(|t| s.terms.contains(*t)) {
            *df.entry(t.as_str()).or_default() += 1;
        }
    }
    let n = sentences.len() as f64;
    for s in &mut sentences {
        let matched: f64 = df
            .iter()
            .filter(|(t, _)| s.terms.contains(**t))
            .map(|(_, &d)| 1.0 + (n / d as f64).ln())
            .sum();
        let weight = 0.25 + f64::from(hits[s.hit].score).clamp(0.0, 1.0);
        s.score = matched * weight;
    }
    // Best first; ties go to the better-ranked hit, then the earlier sentence.
    let mut order: Vec<usize> = (0..sentences.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&sentences[a], &sentences[b]);
        y.score
            .total_cmp(&x.score)
            .then(x.hit.cmp(&y.hit))
            .then(x.pos.cmp(&y.pos))
    });
    let mut seen: HashSet<String> = HashSet::new();
    let best_hit = order.first().map(|&i| sentences[i].hit);
    let mut chosen: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| sentences[i].score > 0.0)
        .filter(|&i| !one_source || Some(sentences[i].hit) == best_hit)
        .filter(|&i| seen.insert(normalise(sentences[i].text)))
        .take(max_sentences)
        .collect();
    // Too few sentences match: the best one's continuation in its own hit
    // is the next best evidence ("Flight NW1 from A to B." is followed by
    // "Current status: delayed.", which shares no word with "Is NW1 on time?").
    if let Some(&first) = chosen.first() {
        let (hit, pos) = (sentences[first].hit, sentences[first].pos);
        let follow: Vec<usize> = (0..sentences.len())
            .filter(|&i| sentences[i].hit == hit && sentences[i].pos > pos)
            .collect();
        for i in follow {
            if chosen.len() >= max_sentences {
                break;
            }
            if !chosen.contains(&i) && seen.insert(normalise(sentences[i].text)) {
                chosen.push(i);
            }
        }
    }
    if chosen.is_empty() {
        let best = (0..hits.len())
            .filter(|&h| sentences.iter().any(|s| s.hit == h))
            .max_by(|&a, &b| hits[a].score.total_cmp(&hits[b].score).then(b.cmp(&a)))
            .unwrap_or(0);
        chosen = (0..sentences.len())
            .filter(|&i| sentences[i].hit == best)
            .take(max_sentences)
            .collect();
    }
    // Group by hit: groups in order of their best sentence (`chosen` is best
    // first), sentences in document order within a group.
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for &i in &chosen {
        let hit = sentences[i].hit;
        match groups.iter_mut().find(|(h, _)| *h == hit) {
            Some((_, members)) => members.push(i),
            None => groups.push((hit, vec![i])),
        }
    }
    let mut parts: Vec<String> = Vec::new();
    for (hit, members) in &mut groups {
        members.sort_by_key(|&i| sentences[i].pos);
        let body: Vec<&str> = members.iter().map(|&i| sentences[i].text).collect();
        parts.push(format!("{} [{}]", body.join(" "), *hit + 1));
    }
    Extract {
        text: parts.join(" "),
        cited: groups.iter().map(|(h, _)| *h).collect(),
    }
}

/// Splits text into sentences: after `.`, `!`, `?` or `…` (optionally closed
/// by quotes or brackets) followed by whitespace, and at line breaks, which in
/// chunk text separate titles, list items and paragraphs. Sentences without
/// any letter or digit are dropped.
pub fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev_end_mark = false;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next_is_space = chars.peek().is_none_or(|&(_, n)| n.is_whitespace());
        let ends = c == '\n'
            || (next_is_space && matches!(c, '.' | '!' | '?' | '…'))
            || (next_is_space && prev_end_mark && matches!(c, '"' | '\'' | '”' | '’' | ')' | ']'));
        prev_end_mark = matches!(c, '.' | '!' | '?' | '…')
            || (prev_end_mark && matches!(c, '"' | '\'' | '”' | '’' | ')' | ']'));
        if ends {
            let end = i + c.len_utf8();
            push_sentence(&mut out, &text[start..end]);
            start = end;
        }
    }
    push_sentence(&mut out, &text[start..]);
    out
}

fn push_sentence<'a>(out: &mut Vec<&'a str>, s: &'a str) {
    let s = s.trim();
    if s.chars().any(char::is_alphanumeric) {
        out.push(s);
    }
}

/// Lowercase content words with a light plural stemming, so `bags` matches
/// `bag` and `costs` matches `cost`.
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !is_stopword(w))
        .map(|w| stem(&w))
        .collect()
}

/// A deliberately light stemmer: plural `-s`/`-ies` and verb `-ed`/`-ing`,
/// undoubling a final consonant (`cancelled` -> `cancel`), so `bags`/`bag`,
/// `delayed`/`delay` and `booking`/`book` match. Short words are left alone
/// because their endings are rarely inflections (`bus`, `need`, `king`).
fn stem(w: &str) -> String {
    let n = w.chars().count();
    let base = if n > 4 && w.ends_with("ies") {
        return format!("{}y", &w[..w.len() - 3]);
    } else if n > 5 && w.ends_with("ing") {
        &w[..w.len() - 3]
    } else if n > 4 && w.ends_with("ed") && !w.ends_with("eed") {
        &w[..w.len() - 2]
    } else if n > 3 && w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") {
        return w[..w.len() - 1].to_string();
    } else {
        return w.to_string();
    };
    let b = base.as_bytes();
    match b {
        [.., x, y] if x == y && b"bdglmnprt".contains(x) => base[..base.len() - 1].to_string(),
        _ => base.to_string(),
    }
}

/// A heading or sentence reduced for comparison with a title: lowercase
/// words without the final punctuation.
fn normalise_heading(s: &str) -> String {
    normalise(s.trim_end_matches(['.', ':', '!', '?']))
}

/// A key under which repeated sentences compare equal.
fn normalise(s: &str) -> String {
    s.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Common English function words, which carry no topic: matching them
/// would make every sentence look relevant.
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "if", "of", "to", "in", "on", "at", "by", "for", "with",
    "from", "as", "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did",
    "have", "has", "had", "i", "me", "my", "you", "your", "we", "our", "he", "she", "it", "its",
    "they", "them", "their", "this", "that", "these", "those", "what", "which", "who", "whom",
    "how", "when", "where", "why", "can", "could", "would", "should", "will", "shall", "may",
    "might", "must", "there", "here", "so", "than", "then", "too", "very", "not", "no", "into",
    "about", "any", "some", "much", "many", "get", "s", "after", "before", "during", "over",
    "under", "up", "out", "off", "also", "just", "only", "more", "most", "other", "such", "same",
    "each", "all", "both", "while", "until", "because", "per", "us", "please",
];

fn is_stopword(w: &str) -> bool {
    STOPWORDS.contains(&w)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAGGAGE: &str =
        "Checked baggage allowance. In Economy you may check 1 bag of up to 23 kg each. \
Each additional or overweight bag costs 60 EUR per flight segment. \
Bags heavier than 32 kg are not accepted as checked baggage.";
    const PETS: &str = "Pets in the cabin. Small dogs and cats up to 8 kg may travel in the cabin. A pet fee of 50 EUR applies.";

    fn src(text: &str, score: f32) -> Source<'_> {
        Source {
            text,
            score,
            title: None,
        }
    }

    #[test]
    fn picks_the_best_matching_sentence() {
        let e = extract_answer(
            "How much does an additional bag cost?",
            &[src(PETS, 0.4), src(BAGGAGE, 0.8)],
            1,
        );
        assert_eq!(
            e.text,
            "Each additional or overweight bag costs 60 EUR per flight segment. [2]"
        );
        assert_eq!(e.cited, vec![1]);
    }

    #[test]
    fn groups_sentences_by_hit_in_document_order() {
        let e = extract_answer(
            "checked bag weight kg limit pets cabin",
            &[src(BAGGAGE, 0.9), src(PETS, 0.5)],
            3,
        );
        assert_eq!(e.cited, vec![0, 1], "{e:?}");
        assert_eq!(
            e.text,
            "In Economy you may check 1 bag of up to 23 kg each. \
Bags heavier than 32 kg are not accepted as checked baggage. [1] \
Pets in the cabin. [2]"
        );
    }

    #[test]
    fn hit_score_breaks_ties_between_equal_matches() {
        let e = extract_answer(
            "pet fee",
            &[src(PETS, 0.2), src("The pet fee is 70 EUR.", 0.9)],
            1,
        );
        assert_eq!(e.text, "The pet fee is 70 EUR. [2]");
        assert_eq!(e.cited, vec![1]);
    }

    #[test]
    fn duplicate_sentences_count_once() {
        let e = extract_answer("pet fee", &[src(PETS, 0.9), src(PETS, 0.8)], 2);
        assert_eq!(e.text.matches("pet fee of 50 EUR").count(), 1, "{e:?}");
    }

    #[test]
    fn no_hits_means_i_dont_know() {
        let e = extract_answer("anything?", &[], 2);
        assert_eq!(e.text, NO_CONTEXT_ANSWER);
        assert!(e.cited.is_empty());
        let e = extract_answer("anything?", &[src("  ...  ", 0.5)], 2);
        assert_eq!(e.text, NO_CONTEXT_ANSWER);
    }

    #[test]
    fn titles_are_not_quoted() {
        let titled = Source {
            text: "Travelling with pets.\nPets travel in the cabin. The fee is 125 EUR.",
            score: 0.9,
            title: Some("Travelling with Pets"),
        };
        let e = extract_answer("travelling with pets", &[titled], 1);
        assert_eq!(e.text, "Pets travel in the cabin. [1]");
    }

    #[test]
    fn without_overlap_the_best_hit_opens_the_answer() {
        let e = extract_answer("zebra?", &[src(PETS, 0.3), src(BAGGAGE, 0.7)], 1);
        assert_eq!(e.text, "Checked baggage allowance. [2]");
        assert_eq!(e.cited, vec![1]);
    }

    #[test]
    fn too_few_matches_are_followed_by_the_best_sentences_continuation() {
        let hits = [
            src(
                "Flight NW1 from Oslo to Rome. Current status: delayed. Gate B2.",
                0.9,
            ),
            src("Baggage rules apply to every passenger.", 0.1),
        ];
        let e = extract_answer("Is NW1 on time?", &hits, 2);
        assert!(e.text.contains("Current status: delayed."), "{}", e.text);
        assert!(!e.text.contains("Gate B2"), "{}", e.text);
    }

    #[test]
    fn sentence_splitting() {
        assert_eq!(
            split_sentences("Title\nOne. Two! \"Three?\" Four 3.5 kg. e.g.x"),
            vec![
                "Title",
                "One.",
                "Two!",
                "\"Three?\"",
                "Four 3.5 kg.",
                "e.g.x"
            ]
        );
        assert!(split_sentences(" \n ").is_empty());
    }

    #[test]
    fn terms_are_stemmed_content_words() {
        assert_eq!(
            terms("How much do extra Bags cost?"),
            vec!["extra", "bag", "cost"]
        );
        assert_eq!(terms("policies class bus"), vec!["policy", "class", "bus"]);
        assert_eq!(
            terms("delayed cancelled booking checked need travelling"),
            vec!["delay", "cancel", "book", "check", "need", "travel"]
        );
    }

    #[test]
    fn one_source_keeps_every_sentence_in_the_best_hit() {
        let a = "Flight NW1 from Oslo to Rome, gate A3. Current status: delayed.";
        let b = "Flight NW2 from Oslo to Paris, gate B4. Current status: on time.";
        let c = "Current status of every flight: see the board.";
        let hits = [src(a, 0.9), src(b, 0.8), src(c, 0.7)];
        let mixed = extract_answer("What is the status of flight NW1?", &hits, 2);
        let one = extract_answer_from("What is the status of flight NW1?", &hits, 2, true);
        assert_eq!(one.cited, vec![0], "{}", one.text);
        assert!(one.text.contains("delayed"), "{}", one.text);
        assert!(!one.text.contains("on time") && !one.text.contains("board"));
        // Without it, the second sentence may come from another hit.
        assert!(!mixed.cited.is_empty());
    }
}
