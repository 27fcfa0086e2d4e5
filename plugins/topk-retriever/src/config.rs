//! The stage configuration, parsed from the host's flattened config entries.

use crate::stopwords::Stopwords;

/// Which side of the index answers (the WIT `search-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Nearest vectors, through `index.search` exactly as before modes
    /// existed (the default, so existing pipelines' figures do not move).
    #[default]
    Vector,
    /// BM25 over the chunks' words, the question text as the query.
    Keyword,
    /// Vector and keyword lists fused by reciprocal rank.
    Hybrid,
}

/// Retrieval settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrieveConfig {
    /// `mode`: vector (default), keyword or hybrid.
    pub mode: Mode,
    /// `rrf_k`: the reciprocal-rank-fusion constant of hybrid mode.
    pub rrf_k: f32,
    /// `vector_weight`, `keyword_weight`: the two sides' weights in hybrid
    /// mode. Equal by default: chosen a priori, not tuned on any questions.
    pub vector_weight: f32,
    pub keyword_weight: f32,
    /// `keyword_stopwords`: the stop list removed from the question text
    /// before it is the keyword query (keyword and hybrid modes). None by
    /// default.
    pub keyword_stopwords: Stopwords,
    /// Hits returned.
    pub k: usize,
    /// Candidates fetched per returned hit, giving MMR room to diversify.
    pub fetch_factor: usize,
    /// MMR trade-off between relevance (1.0) and diversity (0.0).
    pub mmr_lambda: f32,
    /// Fixed metadata filters (`filter.<key>` = value).
    pub filter: Vec<(String, String)>,
    /// Question metadata keys whose values become filters too.
    pub filter_from_question: Vec<String>,
    /// When the question's filters match nothing, search again with the
    /// fixed filters only, rather than answer from no context.
    pub fallback_unfiltered: bool,
    /// (question metadata key, chunk metadata key): chunks whose metadata
    /// has the question's value rank higher by `boost` (a customer's booked
    /// flight, say, without narrowing the search to it).
    pub boost_from_question: Vec<(String, String)>,
    /// Added to the similarity of a boosted chunk (its score is then the
    /// ranking score, so a generator weighing sources agrees with the order).
    pub boost: f32,
}

impl Default for RetrieveConfig {
    fn default() -> RetrieveConfig {
        RetrieveConfig {
            mode: Mode::Vector,
            rrf_k: 60.0,
            vector_weight: 1.0,
            keyword_weight: 1.0,
            keyword_stopwords: Stopwords::None,
            k: 5,
            fetch_factor: 4,
            mmr_lambda: 0.7,
            filter: Vec::new(),
            filter_from_question: Vec::new(),
            fallback_unfiltered: true,
            boost_from_question: Vec::new(),
            boost: 0.1,
        }
    }
}

/// Bounds that keep a typo from asking the index for millions of hits.
pub const MAX_K: usize = 1000;
pub const MAX_FETCH_FACTOR: usize = 100;
pub const MAX_FETCH: usize = 10_000;

impl RetrieveConfig {
    /// How many candidates to ask the index for: `k * fetch_factor`, capped,
    /// or just `k` when MMR is off and extra candidates would be discarded.
    pub fn fetch_count(&self) -> u32 {
        let n = if self.mmr_lambda >= 1.0 {
            self.k
        } else {
            self.k.saturating_mul(self.fetch_factor).min(MAX_FETCH)
        };
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The search filter: the fixed entries, then the listed keys of the
    /// question's metadata that the question has. A key the question lacks
    /// adds no filter (a question without a flight number searches all
    /// flights' documents). All entries are ANDed by the index, so a
    /// question cannot widen a fixed filter, only narrow it.
    pub fn filter_for(&self, question_meta: &[(String, String)]) -> Vec<(String, String)> {
        let mut out = self.filter.clone();
        for key in &self.filter_from_question {
            for (k, v) in question_meta.iter().filter(|(k, _)| k == key) {
                if !out.iter().any(|(ok, ov)| ok == k && ov == v) {
                    out.push((k.clone(), v.clone()));
                }
            }
        }
        out
    }

    /// The keyword query of a question: its text minus the stop list
    /// (`keyword_stopwords`), unchanged without one.
    pub fn keyword_text(&self, question: &str) -> String {
        self.keyword_stopwords.strip(question)
    }

    /// Whether the question added filters of its own (so a search that
    /// found nothing may fall back to the fixed filters).
    pub fn question_narrows(&self, question_meta: &[(String, String)]) -> bool {
        self.filter_for(question_meta).len() > self.filter.len()
    }

    /// The filters of the boost searches: for each boost key the question
    /// has, the fixed filters plus (chunk key = the question's value).
    pub fn boost_filters(&self, question_meta: &[(String, String)]) -> Vec<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (qk, ck) in &self.boost_from_question {
            for (_, v) in question_meta.iter().filter(|(k, _)| k == qk) {
                let mut f = self.filter.clone();
                f.push((ck.clone(), v.clone()));
                out.push(f);
            }
        }
        out
    }
}

/// Merges the main search's candidates with those of the boost searches:
/// each boosted candidate's score rises by `boost`, a candidate found by
/// both appears once, and the result is ordered by score. The score a hit
/// carries on is this ranking score, so later stages (a generator weighing
/// its sources) agree with the retriever's order.
pub fn merge_boosted<T>(
    main: Vec<T>,
    boosted: Vec<T>,
    boost: f32,
    id: impl Fn(&T) -> &str,
    score: impl Fn(&mut T) -> &mut f32,
) -> Vec<T> {
    let lifted: std::collections::HashSet<String> =
        boosted.iter().map(|b| id(b).to_string()).collect();
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<(f32, T)> = Vec::new();
    for mut c in main.into_iter().chain(boosted) {
        if !seen.insert(id(&c).to_string()) {
            continue;
        }
        if lifted.contains(id(&c)) {
            *score(&mut c) += boost;
        }
        let s = *score(&mut c);
        out.push((s, c));
    }
    // Stable: equal scores keep the index's order.
    out.sort_by(|a, b| b.0.total_cmp(&a.0));
    out.into_iter().map(|(_, c)| c).collect()
}

/// The parsed configuration, plus warnings worth logging once.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub retrieve: RetrieveConfig,
    pub warnings: Vec<String>,
}

impl Settings {
    /// Parses `entries` (key, value) as given by `config::entries()`.
    pub fn from_entries(entries: &[(String, String)]) -> Result<Settings, String> {
        let mut r = RetrieveConfig::default();
        let mut warnings = Vec::new();
        for (key, value) in entries {
            let v = value.trim().trim_matches('"');
            match key.as_str() {
                "k" => r.k = integer(key, v, MAX_K)?,
                "fetch_factor" => r.fetch_factor = integer(key, v, MAX_FETCH_FACTOR)?,
                "mmr_lambda" => {
                    r.mmr_lambda = v
                        .parse::<f32>()
                        .ok()
                        .filter(|l| (0.0..=1.0).contains(l))
                        .ok_or_else(|| {
                            format!("config `mmr_lambda` must be a number from 0.0 to 1.0, not {value:?}")
                        })?;
                }
                "mode" => {
                    r.mode = match v {
                        "vector" => Mode::Vector,
                        "keyword" => Mode::Keyword,
                        "hybrid" => Mode::Hybrid,
                        _ => {
                            return Err(format!(
                                "config `mode` must be \"vector\", \"keyword\" or \"hybrid\", not {value:?}"
                            ))
                        }
                    }
                }
                "rrf_k" => r.rrf_k = number(key, v, 1.0, 10_000.0)?,
                "vector_weight" => r.vector_weight = number(key, v, 0.0, 1000.0)?,
                "keyword_weight" => r.keyword_weight = number(key, v, 0.0, 1000.0)?,
                "keyword_stopwords" => {
                    r.keyword_stopwords = Stopwords::parse(v).ok_or_else(|| {
                        format!(
                            "config `keyword_stopwords` must be \"none\", \"lucene\" or \"snowball\", not {value:?}"
                        )
                    })?;
                }
                // Read by the host, not by this plugin (read-your-writes:
                // how long the index may wait for a question's required
                // offsets, and what to do when it cannot).
                "min_offsets_timeout_ms" | "on_stale" => {}
                "filter_from_question" => {
                    r.filter_from_question =
                        serde_json::from_str::<Vec<String>>(value).map_err(|_| {
                            format!("config `filter_from_question` must be an array of metadata keys, like [\"flight\"], not {value:?}")
                        })?;
                }
                "fallback_unfiltered" => {
                    r.fallback_unfiltered = match v {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(format!(
                                "config `fallback_unfiltered` must be true or false, not {value:?}"
                            ))
                        }
                    }
                }
                "boost" => {
                    r.boost = v
                        .parse::<f32>()
                        .ok()
                        .filter(|b| (0.0..=2.0).contains(b))
                        .ok_or_else(|| {
                            format!(
                                "config `boost` must be a number from 0.0 to 2.0, not {value:?}"
                            )
                        })?;
                }
                _ if key.starts_with("boost_from_question.") => {
                    let qk = &key["boost_from_question.".len()..];
                    if qk.is_empty() || v.is_empty() {
                        return Err(format!(
                            "config `{key}` = {value:?}: write boost_from_question = {{ <question key> = \"<chunk key>\" }}"
                        ));
                    }
                    r.boost_from_question.push((qk.to_string(), v.to_string()));
                }
                _ => match key.strip_prefix("filter.") {
                    Some("") => {
                        return Err(
                            "config `filter.` needs a metadata key after the dot".to_string()
                        )
                    }
                    Some(k) => r.filter.push((k.to_string(), value.clone())),
                    None => warnings.push(format!("unknown config key `{key}` is ignored")),
                },
            }
        }
        Ok(Settings {
            retrieve: r,
            warnings,
        })
    }
}

fn number(key: &str, v: &str, min: f32, max: f32) -> Result<f32, String> {
    v.parse::<f32>()
        .ok()
        .filter(|n| n.is_finite() && (min..=max).contains(n))
        .ok_or_else(|| format!("config `{key}` must be a number from {min} to {max}, not {v:?}"))
}

fn integer(key: &str, v: &str, max: usize) -> Result<usize, String> {
    v.parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| format!("config `{key}` must be an integer from 1 to {max}, not {v:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn meta(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        entries(kv)
    }

    #[test]
    fn defaults_and_fetch_count() {
        let r = Settings::from_entries(&[]).unwrap().retrieve;
        assert_eq!(r, RetrieveConfig::default());
        assert_eq!(r.fetch_count(), 20);
        let r = Settings::from_entries(&entries(&[("k", "3"), ("mmr_lambda", "1.0")]))
            .unwrap()
            .retrieve;
        assert_eq!(r.fetch_count(), 3);
        let r = Settings::from_entries(&entries(&[("k", "1000"), ("fetch_factor", "100")]))
            .unwrap()
            .retrieve;
        assert_eq!(r.fetch_count(), MAX_FETCH as u32);
    }

    #[test]
    fn filters_combine_fixed_and_question_metadata() {
        let s = Settings::from_entries(&entries(&[
            ("filter.kind", "policy"),
            ("filter_from_question", r#"["flight","customer"]"#),
        ]))
        .unwrap();
        let r = s.retrieve;
        assert_eq!(
            r.filter_for(&meta(&[("flight", "NW1"), ("lang", "en")])),
            meta(&[("kind", "policy"), ("flight", "NW1")])
        );
        assert_eq!(r.filter_for(&[]), meta(&[("kind", "policy")]));
    }

    #[test]
    fn fallback_and_boost_settings() {
        let r = Settings::from_entries(&entries(&[
            ("filter.kind", "flight-status"),
            ("filter_from_question", r#"["flight"]"#),
            ("boost_from_question.booked_flight", "flight"),
            ("boost", "0.2"),
        ]))
        .unwrap()
        .retrieve;
        assert!(r.fallback_unfiltered);
        assert!(r.question_narrows(&meta(&[("flight", "NW1")])));
        assert!(!r.question_narrows(&meta(&[("booked_flight", "NW1")])));
        assert_eq!(
            r.boost_filters(&meta(&[("booked_flight", "NW7")])),
            vec![meta(&[("kind", "flight-status"), ("flight", "NW7")])]
        );
        assert!(r.boost_filters(&[]).is_empty());
        assert_eq!(r.boost, 0.2);
    }

    #[test]
    fn boosted_candidates_rank_higher_once_each() {
        // (id, score)
        let main = vec![("a", 0.50), ("b", 0.45), ("c", 0.30)];
        let boosted = vec![("c", 0.30), ("d", 0.20)];
        let out = merge_boosted(main, boosted, 0.25, |c| c.0, |c| &mut c.1);
        let order: Vec<&str> = out.iter().map(|c| c.0).collect();
        assert_eq!(order, ["c", "a", "b", "d"]);
        assert!((out[0].1 - 0.55).abs() < 1e-6);
        assert!((out[3].1 - 0.45).abs() < 1e-6);
    }

    #[test]
    fn modes_and_weights() {
        assert_eq!(RetrieveConfig::default().mode, Mode::Vector);
        let r = Settings::from_entries(&entries(&[
            ("mode", "\"hybrid\""),
            ("rrf_k", "30"),
            ("keyword_weight", "2"),
        ]))
        .unwrap()
        .retrieve;
        assert_eq!(r.mode, Mode::Hybrid);
        assert_eq!(
            (r.rrf_k, r.vector_weight, r.keyword_weight),
            (30.0, 1.0, 2.0)
        );
        let s =
            Settings::from_entries(&entries(&[("mode", "keyword"), ("on_stale", "flag")])).unwrap();
        assert_eq!(s.retrieve.mode, Mode::Keyword);
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn keyword_stopwords_are_opt_in() {
        let r = RetrieveConfig::default();
        assert_eq!(r.keyword_stopwords, Stopwords::None);
        assert_eq!(
            r.keyword_text("What is the status of flight NW5783?"),
            "What is the status of flight NW5783?"
        );
        let r = Settings::from_entries(&entries(&[
            ("mode", "hybrid"),
            ("keyword_stopwords", "\"snowball\""),
        ]))
        .unwrap()
        .retrieve;
        assert_eq!(r.keyword_stopwords, Stopwords::Snowball);
        assert_eq!(
            r.keyword_text("What is the status of flight NW5783?"),
            "status flight nw5783"
        );
        let r = Settings::from_entries(&entries(&[("keyword_stopwords", "lucene")]))
            .unwrap()
            .retrieve;
        assert_eq!(r.keyword_stopwords, Stopwords::Lucene);
        let r = Settings::from_entries(&entries(&[("keyword_stopwords", "none")]))
            .unwrap()
            .retrieve;
        assert_eq!(r, RetrieveConfig::default());
    }

    #[test]
    fn bad_config_is_rejected() {
        for kv in [
            ("k", "0"),
            ("k", "five"),
            ("fetch_factor", "0"),
            ("mmr_lambda", "1.5"),
            ("mmr_lambda", "-0.1"),
            ("filter_from_question", "flight"),
            ("filter.", "x"),
            ("fallback_unfiltered", "yes"),
            ("boost", "3"),
            ("boost_from_question.", "flight"),
            ("mode", "bm25"),
            ("rrf_k", "0"),
            ("vector_weight", "-1"),
            ("keyword_weight", "NaN"),
            ("keyword_stopwords", "english"),
            ("keyword_stopwords", "true"),
        ] {
            assert!(Settings::from_entries(&entries(&[kv])).is_err(), "{kv:?}");
        }
        let s = Settings::from_entries(&entries(&[("kk", "1")])).unwrap();
        assert_eq!(s.warnings.len(), 1);
    }
}
