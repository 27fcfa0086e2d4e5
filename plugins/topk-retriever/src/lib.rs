//! A retriever that asks the tenant's vector index for the nearest chunks
//! and diversifies them with maximal marginal relevance (MMR), so the prompt
//! is not filled with near-copies of one passage.
//!
//! Configuration (all optional):
//! - `k` (5): hits returned.
//! - `fetch_factor` (4): the index is asked for `k * fetch_factor` candidates.
//! - `mmr_lambda` (0.7): relevance/diversity trade-off; 1.0 = plain top-k
//!   (and then only `k` candidates are fetched).
//! - `filter.<key>` = value: fixed metadata filters.
//! - `filter_from_question`: array of metadata keys whose values in the
//!   question's metadata are added as filters (missing keys add none).
//! - `fallback_unfiltered` (true): when the question's filters match
//!   nothing (a flight the index does not know), search with the fixed
//!   filters only instead of answering from no context.
//! - `boost_from_question.<question key> = "<chunk key>"`: chunks whose
//!   metadata carries the question's value (a customer's booked flight from
//!   a table join) score `boost` (0.1) higher, without narrowing the
//!   search; a hit's score is then this ranking score, not the cosine.
//! - `mode` (`"vector"`): `"keyword"` searches the index's BM25 side with the
//!   question text; `"hybrid"` fuses the vector and keyword lists by
//!   reciprocal rank (`rrf_k` 60, `vector_weight` 1, `keyword_weight` 1).
//!   Vector mode calls `index.search` as before; the others `index.query`.
//! - `keyword_stopwords` (`"none"`): `"lucene"` or `"snowball"` removes that
//!   standard English stop list from the question text before it is the
//!   keyword query (keyword and hybrid modes; see `stopwords`). The index
//!   keeps every word, so this is a per-pipeline choice.
//! - `min_offsets_timeout_ms`, `on_stale`: read by the host (how long a
//!   question's read-your-writes requirement may wait; see the README).

pub mod config;
pub mod mmr;
pub mod stopwords;

pub use config::{merge_boosted, Mode, RetrieveConfig, Settings};
pub use stopwords::Stopwords;

/// Scores rescaled to [0, 1] by the best one, for MMR: its trade-off
/// `lambda * score - (1 - lambda) * redundancy` assumes scores on the
/// scale of a cosine, while BM25 scores run to tens and RRF scores are
/// around 1/60. Cosine scores (vector mode) are used as they are.
pub fn relevance(mode: Mode, scores: &[f32]) -> Vec<f32> {
    if mode == Mode::Vector {
        return scores.to_vec();
    }
    let max = scores.iter().copied().fold(0.0f32, f32::max);
    if max <= 0.0 {
        return vec![0.0; scores.len()];
    }
    scores.iter().map(|s| s / max).collect()
}
pub use mmr::{jaccard, mmr_select, word_set};

/// Checks the question vector before it goes to the index, so a bad upstream
/// embedder is reported as this item's input problem, not as an index error.
pub fn check_vector(v: &[f32]) -> Result<(), String> {
    if v.is_empty() {
        return Err("question vector is empty".to_string());
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err("question vector has a non-finite value".to_string());
    }
    Ok(())
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../wit", world: "retriever" });

    use crate::{Mode, Settings};
    use exports::weft::plugin::retrieve::Guest;
    use std::sync::OnceLock;
    use weft::plugin::index::{SearchMode, SearchRequest};
    use weft::plugin::log::{log, Level};
    use weft::plugin::types::{ErrorKind, Hit, Meta, PluginError, Question};

    struct TopkRetriever;

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

    impl Guest for TopkRetriever {
        fn retrieve(question: Question, vector: Vec<f32>) -> Result<Vec<Hit>, PluginError> {
            let s = settings().as_ref().map_err(|e| PluginError {
                kind: ErrorKind::Config,
                message: e.clone(),
            })?;
            let r = &s.retrieve;
            if r.mode != Mode::Keyword {
                crate::check_vector(&vector).map_err(|message| PluginError {
                    kind: ErrorKind::InvalidInput,
                    message,
                })?;
            }
            let qmeta: Vec<(String, String)> = question
                .metadata
                .into_iter()
                .map(|m| (m.key, m.value))
                .collect();
            let metas = |f: Vec<(String, String)>| -> Vec<Meta> {
                f.into_iter()
                    .map(|(key, value)| Meta { key, value })
                    .collect()
            };
            let keyword_text = match r.mode {
                Mode::Vector => String::new(),
                _ => r.keyword_text(&question.text),
            };
            let search = |filter: Vec<Meta>, n: u32| {
                let found = match r.mode {
                    Mode::Vector => weft::plugin::index::search(&vector, n, &filter),
                    mode => weft::plugin::index::query(&SearchRequest {
                        vector: vector.clone(),
                        text: keyword_text.clone(),
                        k: n,
                        filter,
                        mode: match mode {
                            Mode::Keyword => SearchMode::Keyword,
                            _ => SearchMode::Hybrid,
                        },
                        rrf_k: r.rrf_k,
                        vector_weight: r.vector_weight,
                        keyword_weight: r.keyword_weight,
                    }),
                };
                found.map_err(|e| PluginError {
                    kind: ErrorKind::Internal,
                    message: format!("index search failed: {e}"),
                })
            };
            let mut hits = search(metas(r.filter_for(&qmeta)), r.fetch_count())?;
            if hits.is_empty() && r.fallback_unfiltered && r.question_narrows(&qmeta) {
                hits = search(metas(r.filter.clone()), r.fetch_count())?;
            }
            let mut boosted = Vec::new();
            for f in r.boost_filters(&qmeta) {
                boosted.extend(search(metas(f), u32::try_from(r.k).unwrap_or(u32::MAX))?);
            }
            let hits = crate::merge_boosted(
                hits,
                boosted,
                r.boost,
                |h| h.chunk_id.as_str(),
                |h| &mut h.score,
            );
            let scores: Vec<f32> = hits.iter().map(|h| h.score).collect();
            let candidates: Vec<(f32, &str)> = crate::relevance(r.mode, &scores)
                .into_iter()
                .zip(hits.iter().map(|h| h.text.as_str()))
                .collect();
            let picked = crate::mmr_select(&candidates, r.k, r.mmr_lambda);
            let mut slots: Vec<Option<Hit>> = hits.into_iter().map(Some).collect();
            Ok(picked
                .into_iter()
                .filter_map(|i| slots.get_mut(i).and_then(Option::take))
                .collect())
        }
    }

    export!(TopkRetriever);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relevance_is_rescaled_outside_vector_mode() {
        assert_eq!(relevance(Mode::Vector, &[0.9, 0.3]), vec![0.9, 0.3]);
        assert_eq!(relevance(Mode::Keyword, &[8.0, 2.0]), vec![1.0, 0.25]);
        assert_eq!(relevance(Mode::Hybrid, &[0.0]), vec![0.0]);
    }

    #[test]
    fn vectors_are_checked() {
        assert!(check_vector(&[0.1, 0.2]).is_ok());
        assert!(check_vector(&[]).is_err());
        assert!(check_vector(&[f32::NAN]).is_err());
    }
}
