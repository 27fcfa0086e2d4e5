//! The stage configuration, parsed from the host's flattened config entries.

/// Retrieval settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrieveConfig {
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
}

impl Default for RetrieveConfig {
    fn default() -> RetrieveConfig {
        RetrieveConfig {
            k: 5,
            fetch_factor: 4,
            mmr_lambda: 0.7,
            filter: Vec::new(),
            filter_from_question: Vec::new(),
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
                "filter_from_question" => {
                    r.filter_from_question =
                        serde_json::from_str::<Vec<String>>(value).map_err(|_| {
                            format!("config `filter_from_question` must be an array of metadata keys, like [\"flight\"], not {value:?}")
                        })?;
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
    fn bad_config_is_rejected() {
        for kv in [
            ("k", "0"),
            ("k", "five"),
            ("fetch_factor", "0"),
            ("mmr_lambda", "1.5"),
            ("mmr_lambda", "-0.1"),
            ("filter_from_question", "flight"),
            ("filter.", "x"),
        ] {
            assert!(Settings::from_entries(&entries(&[kv])).is_err(), "{kv:?}");
        }
        let s = Settings::from_entries(&entries(&[("kk", "1")])).unwrap();
        assert_eq!(s.warnings.len(), 1);
    }
}
