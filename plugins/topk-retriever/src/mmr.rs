//! Maximal marginal relevance over hits that carry text but no vectors.

use std::collections::HashSet;

/// Picks up to `k` of `candidates` (score, text), best first, by maximal
/// marginal relevance: each step takes the candidate maximising
/// `lambda * score - (1 - lambda) * max_redundancy`, where redundancy is the
/// Jaccard similarity of word sets with an already picked candidate. Word
/// overlap stands in for vector similarity because hits carry no vectors;
/// it catches what MMR is mostly needed for here, the near-duplicates that
/// overlapping chunks and re-ingested documents produce. `lambda >= 1`
/// is plain top-k in input order. Ties go to the earlier candidate.
pub fn mmr_select(candidates: &[(f32, &str)], k: usize, lambda: f32) -> Vec<usize> {
    let k = k.min(candidates.len());
    if lambda >= 1.0 {
        return (0..k).collect();
    }
    let lambda = f64::from(lambda.max(0.0));
    let words: Vec<HashSet<String>> = candidates.iter().map(|(_, t)| word_set(t)).collect();
    let mut picked: Vec<usize> = Vec::with_capacity(k);
    // The highest redundancy of each candidate with the picked ones so far,
    // updated incrementally so the whole selection is O(k * n) Jaccards.
    let mut redundancy = vec![0f64; candidates.len()];
    let mut taken = vec![false; candidates.len()];
    while picked.len() < k {
        let mut best: Option<(f64, usize)> = None;
        for i in (0..candidates.len()).filter(|&i| !taken[i]) {
            let mmr = lambda * f64::from(candidates[i].0) - (1.0 - lambda) * redundancy[i];
            if best.is_none_or(|(b, _)| mmr > b) {
                best = Some((mmr, i));
            }
        }
        let Some((_, i)) = best else { break };
        taken[i] = true;
        picked.push(i);
        for j in (0..candidates.len()).filter(|&j| !taken[j]) {
            redundancy[j] = redundancy[j].max(jaccard(&words[i], &words[j]));
        }
    }
    picked
}

/// |A ∩ B| / |A ∪ B|; two empty sets count as unrelated.
pub fn jaccard(a: &HashSet<String>, b: &HashSet<String>) -> f64 {
    let inter = a.intersection(b).count();
    let union = a.len() + b.len() - inter;
    if union == 0 {
        0.0
    } else {
        inter as f64 / union as f64
    }
}

/// Lowercase alphanumeric words minus very common English words, which would
/// make every pair of English passages look alike.
pub fn word_set(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !is_stopword(w))
        .collect()
}

fn is_stopword(w: &str) -> bool {
    matches!(
        w,
        "a" | "an"
            | "the"
            | "and"
            | "or"
            | "but"
            | "if"
            | "of"
            | "to"
            | "in"
            | "on"
            | "at"
            | "by"
            | "for"
            | "with"
            | "from"
            | "as"
            | "is"
            | "are"
            | "was"
            | "were"
            | "be"
            | "been"
            | "it"
            | "its"
            | "this"
            | "that"
            | "these"
            | "those"
            | "you"
            | "your"
            | "we"
            | "our"
            | "they"
            | "their"
            | "not"
            | "no"
            | "can"
            | "may"
            | "will"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_one_is_plain_top_k() {
        let c = [(0.9, "same text"), (0.8, "same text"), (0.7, "other")];
        assert_eq!(mmr_select(&c, 2, 1.0), vec![0, 1]);
        assert_eq!(mmr_select(&c, 5, 1.0), vec![0, 1, 2]);
        assert_eq!(mmr_select(&[], 5, 0.7), Vec::<usize>::new());
    }

    #[test]
    fn near_duplicates_are_demoted() {
        let c = [
            (0.90, "Each additional bag costs 60 EUR per flight segment."),
            (
                0.89,
                "Each additional bag costs 60 EUR per flight segment. Bags over 32 kg",
            ),
            (
                0.80,
                "Sports equipment such as skis travels as a checked bag.",
            ),
        ];
        assert_eq!(mmr_select(&c, 2, 0.7), vec![0, 2]);
        assert_eq!(mmr_select(&c, 3, 0.7), vec![0, 2, 1]);
    }

    #[test]
    fn lambda_zero_maximises_diversity() {
        let c = [
            (0.9, "alpha beta gamma"),
            (0.8, "alpha beta delta"),
            (0.1, "omega"),
        ];
        assert_eq!(mmr_select(&c, 2, 0.0), vec![0, 2]);
    }

    #[test]
    fn jaccard_of_word_sets() {
        let a = word_set("The bag, the BAG and a fee");
        assert_eq!(a.len(), 2);
        assert_eq!(jaccard(&a, &word_set("bag fee")), 1.0);
        assert_eq!(jaccard(&a, &word_set("bag")), 0.5);
        assert_eq!(jaccard(&word_set(""), &word_set("")), 0.0);
    }
}
