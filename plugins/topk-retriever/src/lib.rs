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

pub mod config;
pub mod mmr;

pub use config::{merge_boosted, RetrieveConfig, Settings};
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

    use crate::Settings;
    use exports::weft::plugin::retrieve::Guest;
    use std::sync::OnceLock;
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
            crate::check_vector(&vector).map_err(|message| PluginError {
                kind: ErrorKind::InvalidInput,
                message,
            })?;
            let r = &s.retrieve;
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
            let search = |filter: &[Meta], n: u32| {
                weft::plugin::index::search(&vector, n, filter).map_err(|e| PluginError {
                    kind: ErrorKind::Internal,
                    message: format!("index search failed: {e}"),
                })
            };
            let mut hits = search(&metas(r.filter_for(&qmeta)), r.fetch_count())?;
            if hits.is_empty() && r.fallback_unfiltered && r.question_narrows(&qmeta) {
                hits = search(&metas(r.filter.clone()), r.fetch_count())?;
            }
            let boost_filters = r.boost_filters(&qmeta);
            let mut boosted = Vec::new();
            for f in boost_filters {
                boosted.extend(search(&metas(f), u32::try_from(r.k).unwrap_or(u32::MAX))?);
            }
            let hits = crate::merge_boosted(
                hits,
                boosted,
                r.boost,
                |h| h.chunk_id.as_str(),
                |h| &mut h.score,
            );
            let candidates: Vec<(f32, &str)> =
                hits.iter().map(|h| (h.score, h.text.as_str())).collect();
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
    fn vectors_are_checked() {
        assert!(check_vector(&[0.1, 0.2]).is_ok());
        assert!(check_vector(&[]).is_err());
        assert!(check_vector(&[f32::NAN]).is_err());
    }
}
