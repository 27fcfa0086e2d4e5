//! Stopword lists for the keyword side of the index: words removed from the
//! question text before it becomes a BM25 query (`keyword_stopwords`).
//!
//! Why: BM25's idf weighs a word by how few chunks contain it. In a corpus
//! of templated notes ("Flight NW5783 ... status: delayed") and a few prose
//! policies, function words such as "the", "of" and "is" occur only in the
//! prose, so their idf is high and they pull the prose above the note whose
//! identifier the question names. Removing a standard English stop set from
//! the *query* is the textbook remedy (the index keeps every word, so a
//! list can be switched on or off per pipeline without reindexing).
//!
//! The lists are copied from their published sources, not chosen on any
//! questions:
//! - [`LUCENE`]: Apache Lucene's `EnglishAnalyzer.ENGLISH_STOP_WORDS_SET`
//!   (the classic 33 words of `StopAnalyzer`), Apache License 2.0.
//! - [`SNOWBALL`]: the Snowball project's English stop list
//!   (`algorithms/english/stop.txt`, Martin Porter, BSD licence), without
//!   its contractions ("don't", "i'm", ...): the index splits words at the
//!   apostrophe, so a contraction never is one query word.

/// Apache Lucene's English stop set (`EnglishAnalyzer.ENGLISH_STOP_WORDS_SET`).
pub const LUCENE: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

/// The Snowball English stop list (snowballstem.org, `english/stop.txt`),
/// contractions left out (see the module note).
#[rustfmt::skip]
pub const SNOWBALL: &[&str] = &[
    // pronouns
    "i", "me", "my", "myself", "we", "our", "ours", "ourselves", "you", "your", "yours",
    "yourself", "yourselves", "he", "him", "his", "himself", "she", "her", "hers", "herself",
    "it", "its", "itself", "they", "them", "their", "theirs", "themselves", "what", "which",
    "who", "whom", "this", "that", "these", "those",
    // verb forms
    "am", "is", "are", "was", "were", "be", "been", "being", "have", "has", "had", "having",
    "do", "does", "did", "doing", "would", "should", "could", "ought", "cannot",
    // articles, conjunctions, prepositions
    "a", "an", "the", "and", "but", "if", "or", "because", "as", "until", "while", "of", "at",
    "by", "for", "with", "about", "against", "between", "into", "through", "during", "before",
    "after", "above", "below", "to", "from", "up", "down", "in", "out", "on", "off", "over",
    "under", "again", "further", "then", "once", "here", "there", "when", "where", "why", "how",
    "all", "any", "both", "each", "few", "more", "most", "other", "some", "such", "no", "nor",
    "not", "only", "own", "same", "so", "than", "too", "very",
];

/// Which stop list strips the keyword query (`keyword_stopwords`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stopwords {
    /// The question text is the query as it is (the default: existing
    /// pipelines' figures do not move).
    #[default]
    None,
    /// [`LUCENE`].
    Lucene,
    /// [`SNOWBALL`].
    Snowball,
}

impl Stopwords {
    /// Parses the config value: "none", "lucene" or "snowball".
    pub fn parse(v: &str) -> Option<Stopwords> {
        match v {
            "none" => Some(Stopwords::None),
            "lucene" => Some(Stopwords::Lucene),
            "snowball" => Some(Stopwords::Snowball),
            _ => None,
        }
    }

    /// The words of this list.
    pub fn words(self) -> &'static [&'static str] {
        match self {
            Stopwords::None => &[],
            Stopwords::Lucene => LUCENE,
            Stopwords::Snowball => SNOWBALL,
        }
    }

    /// The keyword query for `text`: its words split as the index splits
    /// them (maximal runs of Unicode alphanumerics, lowercased), minus this
    /// list's words, joined by spaces. With no list, `text` unchanged. A
    /// question made only of stopwords is searched as it was, rather than
    /// by no words at all.
    pub fn strip(self, text: &str) -> String {
        if self == Stopwords::None {
            return text.to_string();
        }
        let words = self.words();
        let kept: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .filter(|w| !words.contains(&w.as_str()))
            .collect();
        if kept.is_empty() {
            text.to_string()
        } else {
            kept.join(" ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_list_keeps_the_text_as_it_is() {
        assert_eq!(
            Stopwords::None.strip("What is the status of flight NW5783?"),
            "What is the status of flight NW5783?"
        );
        assert_eq!(Stopwords::default(), Stopwords::None);
    }

    #[test]
    fn lucene_strips_its_33_words_only() {
        assert_eq!(LUCENE.len(), 33);
        assert_eq!(
            Stopwords::Lucene.strip("What is the status of flight NW5783?"),
            "what status flight nw5783"
        );
        // "my" and "can" are not in Lucene's set.
        assert_eq!(
            Stopwords::Lucene.strip("Can I bring my dog on the plane?"),
            "can i bring my dog plane"
        );
    }

    #[test]
    fn snowball_strips_pronouns_and_auxiliaries_too() {
        assert_eq!(
            Stopwords::Snowball.strip("What is the status of flight NW5783?"),
            "status flight nw5783"
        );
        assert_eq!(
            Stopwords::Snowball.strip("Has my flight to Oslo been delayed?"),
            "flight oslo delayed"
        );
    }

    #[test]
    fn words_are_split_and_lowercased_like_the_index() {
        // Hyphens and apostrophes split words; case folds; Unicode letters stay.
        assert_eq!(
            Stopwords::Lucene.strip("The GATE-changed note, Zürich's"),
            "gate changed note zürich s"
        );
    }

    #[test]
    fn a_query_of_only_stopwords_is_kept() {
        assert_eq!(Stopwords::Snowball.strip("Is it?"), "Is it?");
        assert_eq!(Stopwords::Lucene.strip(""), "");
    }

    #[test]
    fn lists_are_lowercase_single_words_without_duplicates() {
        for list in [LUCENE, SNOWBALL] {
            let mut seen = std::collections::HashSet::new();
            for w in list {
                assert!(
                    !w.is_empty() && w.chars().all(|c| c.is_alphanumeric() && !c.is_uppercase()),
                    "{w:?}"
                );
                assert!(seen.insert(*w), "duplicate {w:?}");
            }
        }
        // Lucene's set is Snowball's but for "will" (a noun too, which
        // Snowball keeps).
        let extra: Vec<&str> = LUCENE
            .iter()
            .copied()
            .filter(|w| !SNOWBALL.contains(w))
            .collect();
        assert_eq!(extra, ["will"]);
    }

    #[test]
    fn parse_names() {
        assert_eq!(Stopwords::parse("lucene"), Some(Stopwords::Lucene));
        assert_eq!(Stopwords::parse("snowball"), Some(Stopwords::Snowball));
        assert_eq!(Stopwords::parse("none"), Some(Stopwords::None));
        assert_eq!(Stopwords::parse("english"), None);
    }
}
