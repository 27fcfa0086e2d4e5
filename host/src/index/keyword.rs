//! The keyword side of the index: BM25 over inverted postings kept in the
//! store's LMDB environment, so a document's postings change in the same
//! write transaction as its chunks and vectors (a new version replaces them,
//! a tombstone removes them; a search never sees one side updated without
//! the other).
//!
//! Layout: one entry per term and block of 4,096 item ids (`block_key`),
//! `term NUL block -> [(item u32, tf u16, len u16)]` sorted by item, so a
//! write rewrites only the blocks of the items it changes. The chunk's length in tokens travels in the posting
//! because BM25 needs it for every candidate, and reading it per candidate
//! from another table would cost a B-tree lookup each. Items are immutable
//! (a changed chunk is a new item), so a posting never goes stale; removing
//! an item recomputes its terms from its stored text with the same
//! tokenizer. Corpus totals (chunks with text, tokens) are in `meta`.
//!
//! Why postings in heed rather than tantivy: tantivy keeps its own segment
//! files and commits, which cannot share the LMDB transaction that makes a
//! chunk, its vector and its filter bitmaps appear atomically.

use std::collections::{BTreeMap, HashMap};

/// BM25 term saturation (the usual 1.2).
pub const K1: f32 = 1.2;
/// BM25 length normalisation (the usual 0.75).
pub const B: f32 = 0.75;

/// Terms longer than this are not indexed (LMDB keys are at most 511
/// bytes, and such "words" are hashes or base64, not search terms).
pub const MAX_TERM_BYTES: usize = 64;

/// Bytes of one posting: item (u32), term frequency (u16), chunk length in
/// tokens (u16).
const POSTING: usize = 8;

/// Splits `text` into lowercase words: maximal runs of alphanumeric
/// characters (Unicode), no stemming and no stopwords, so the result is
/// deterministic and the same in the index and the query ("NW8843" is
/// `nw8843`, "gate-changed" is `gate`, `changed`). BM25's idf already
/// weighs common words down.
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| w.len() <= MAX_TERM_BYTES)
        .collect()
}

/// Term frequencies of a text, and its length in tokens (both saturate at
/// u16::MAX; chunks are far shorter).
pub fn term_counts(text: &str) -> (BTreeMap<String, u16>, u16) {
    let tokens = tokenize(text);
    let len = u16::try_from(tokens.len()).unwrap_or(u16::MAX);
    let mut tf: BTreeMap<String, u16> = BTreeMap::new();
    for t in tokens {
        let e = tf.entry(t).or_insert(0);
        *e = e.saturating_add(1);
    }
    (tf, len)
}

/// Item ids per posting block: a term's postings are kept in blocks of
/// item-id ranges (`block_key`), so a write rewrites only the blocks of
/// the items it adds or removes. New items have the newest ids, so an
/// ingest batch touches the last block of each of its terms; an update of
/// an old document touches, for each of its terms, the block its item id
/// falls in. One list per term was rewritten whole: for a word in every
/// document of a 100k-chunk index, 800 KB per batch, which tripled the RAG
/// bench's freshness. Blocks of 4,096 (32 KB values, each in LMDB overflow
/// pages) still rewrote megabytes per batch of updates; 128 items (1 KB)
/// fit in a leaf page. A search reads a common term's blocks with one
/// cursor walk either way.
pub const BLOCK_ITEMS: u32 = 128;

/// The block of `item`.
pub fn block_of(item: u32) -> u32 {
    item / BLOCK_ITEMS
}

/// The key of one block of `term`'s postings: the term, a NUL (terms are
/// alphanumeric, so never contain one), then the block number as 8 hex
/// digits, so a term's blocks sort together and in item order.
pub fn block_key(term: &str, block: u32) -> String {
    format!("{term}\u{0}{block:08x}")
}

/// The prefix every block key of `term` starts with.
pub fn block_prefix(term: &str) -> String {
    format!("{term}\u{0}")
}

/// One posting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    pub item: u32,
    pub tf: u16,
    pub len: u16,
}

pub fn encode(postings: &[Posting]) -> Vec<u8> {
    let mut out = Vec::with_capacity(postings.len() * POSTING);
    for p in postings {
        out.extend_from_slice(&p.item.to_le_bytes());
        out.extend_from_slice(&p.tf.to_le_bytes());
        out.extend_from_slice(&p.len.to_le_bytes());
    }
    out
}

/// Decodes a posting list; a trailing partial entry (a damaged value) is
/// ignored rather than misread.
pub fn decode(bytes: &[u8]) -> impl Iterator<Item = Posting> + '_ {
    bytes.chunks_exact(POSTING).map(|c| Posting {
        item: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        tf: u16::from_le_bytes([c[4], c[5]]),
        len: u16::from_le_bytes([c[6], c[7]]),
    })
}

/// What one write transaction does to the postings, grouped by term so a
/// batch rewrites each touched term's list once, not once per chunk.
#[derive(Debug, Default)]
pub struct PostingChanges {
    pub add: HashMap<String, Vec<Posting>>,
    pub remove: HashMap<String, Vec<u32>>,
    /// Change of (chunks with at least one token, tokens) in the corpus.
    pub docs_delta: i64,
    pub tokens_delta: i64,
}

impl PostingChanges {
    pub fn added(&mut self, item: u32, text: &str) {
        let (tf, len) = term_counts(text);
        if len == 0 {
            return;
        }
        self.docs_delta += 1;
        self.tokens_delta += i64::from(len);
        for (term, tf) in tf {
            self.add
                .entry(term)
                .or_default()
                .push(Posting { item, tf, len });
        }
    }

    pub fn removed(&mut self, item: u32, text: &str) {
        let (tf, len) = term_counts(text);
        if len == 0 {
            return;
        }
        self.docs_delta -= 1;
        self.tokens_delta -= i64::from(len);
        for term in tf.into_keys() {
            self.remove.entry(term).or_default().push(item);
        }
    }

    /// Every (term, block) touched, in order.
    pub fn blocks(&self) -> Vec<(String, u32)> {
        let mut t: Vec<(String, u32)> = self
            .add
            .iter()
            .flat_map(|(term, ps)| ps.iter().map(move |p| (term.clone(), block_of(p.item))))
            .chain(
                self.remove
                    .iter()
                    .flat_map(|(term, ids)| ids.iter().map(move |&i| (term.clone(), block_of(i)))),
            )
            .collect();
        t.sort();
        t.dedup();
        t
    }

    /// The new postings of one block of `term` from its old ones.
    pub fn merge(&self, term: &str, block: u32, old: &[u8]) -> Vec<Posting> {
        let removed = self.remove.get(term);
        let mut out: Vec<Posting> = decode(old)
            .filter(|p| removed.is_none_or(|r| !r.contains(&p.item)))
            .collect();
        if let Some(a) = self.add.get(term) {
            out.extend(a.iter().filter(|p| block_of(p.item) == block));
            // New items have the newest ids, so this is nearly sorted.
            out.sort_by_key(|p| p.item);
            out.dedup_by_key(|p| p.item);
        }
        out
    }
}

/// BM25 inverse document frequency (the Lucene form, never negative).
pub fn idf(n: u64, df: u64) -> f32 {
    let (n, df) = (n as f32, df as f32);
    (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
}

/// BM25 contribution of one term occurrence count `tf` in a chunk of `len`
/// tokens, `avgdl` the mean chunk length.
pub fn term_score(idf: f32, tf: u16, len: u16, avgdl: f32) -> f32 {
    let tf = f32::from(tf);
    let norm = 1.0 - B + B * f32::from(len) / avgdl.max(1e-6);
    idf * tf * (K1 + 1.0) / (tf + K1 * norm)
}

/// The distinct terms of a query, in order of first appearance (a word
/// repeated in the query counts once).
pub fn query_terms(text: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    tokenize(text)
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_is_lowercase_unicode_words() {
        assert_eq!(
            tokenize("Is NW8843 on-time? Café, ÉTÉ 2026!"),
            vec!["is", "nw8843", "on", "time", "café", "été", "2026"]
        );
        assert!(tokenize(" -- ").is_empty());
        assert!(tokenize(&"x".repeat(65)).is_empty());
    }

    #[test]
    fn postings_round_trip_and_merge() {
        let mut c = PostingChanges::default();
        c.added(7, "gate gate changed");
        c.removed(3, "gate open");
        let old = encode(&[
            Posting {
                item: 3,
                tf: 1,
                len: 2,
            },
            Posting {
                item: 5,
                tf: 2,
                len: 9,
            },
        ]);
        let merged = c.merge("gate", 0, &old);
        assert_eq!(
            merged,
            vec![
                Posting {
                    item: 5,
                    tf: 2,
                    len: 9
                },
                Posting {
                    item: 7,
                    tf: 2,
                    len: 3
                }
            ]
        );
        assert_eq!(decode(&encode(&merged)).collect::<Vec<_>>(), merged);
        assert_eq!(c.docs_delta, 0);
        assert_eq!(c.tokens_delta, 1);
        let blocks: Vec<(String, u32)> = ["changed", "gate", "open"]
            .iter()
            .map(|t| (t.to_string(), 0))
            .collect();
        assert_eq!(c.blocks(), blocks);
        // Items in another block go to that block's list only.
        let far = BLOCK_ITEMS * 3 + 1;
        c.added(far, "gate");
        assert!(c.blocks().contains(&("gate".to_string(), 3)));
        assert_eq!(
            c.merge("gate", 3, &[]),
            vec![Posting {
                item: far,
                tf: 1,
                len: 1
            }]
        );
        assert!(!c.merge("gate", 0, &old).iter().any(|p| p.item == far));
        assert!(block_key("gate", 1) < block_key("gate", 16));
        assert!(block_key("gate", 0xffff_ffff).starts_with(&block_prefix("gate")));
    }

    #[test]
    fn rarer_terms_and_shorter_chunks_score_higher() {
        assert!(idf(1000, 1) > idf(1000, 500));
        assert!(idf(1000, 1000) > 0.0);
        let i = idf(100, 3);
        assert!(term_score(i, 1, 5, 10.0) > term_score(i, 1, 20, 10.0));
        assert!(term_score(i, 3, 10, 10.0) > term_score(i, 1, 10, 10.0));
    }
}
