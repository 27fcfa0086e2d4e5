//! The stage configuration, parsed from the host's flattened config entries.

use crate::template::PromptConfig;

/// The parsed configuration, plus warnings worth logging once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub prompt: PromptConfig,
    pub warnings: Vec<String>,
}

impl Settings {
    /// Parses `entries` (key, value) as given by `config::entries()`, and
    /// checks the template can show the model both the question and the
    /// context, since a prompt missing either silently produces useless answers.
    pub fn from_entries(entries: &[(String, String)]) -> Result<Settings, String> {
        let mut prompt = PromptConfig::default();
        let mut warnings = Vec::new();
        for (key, value) in entries {
            match key.as_str() {
                "system" => prompt.system = value.clone(),
                "template" => prompt.template = value.clone(),
                "max_context_chars" => {
                    prompt.max_context_chars = value
                        .trim()
                        .trim_matches('"')
                        .parse::<usize>()
                        .ok()
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| {
                            format!("config `max_context_chars` must be a positive integer, not {value:?}")
                        })?;
                }
                _ => warnings.push(format!("unknown config key `{key}` is ignored")),
            }
        }
        if !prompt.template.contains("{question}") {
            return Err("config `template` must contain the placeholder {question}".to_string());
        }
        if !prompt.template.contains("{context}") && !prompt.system.contains("{context}") {
            return Err(
                "config `template` (or `system`) must contain the placeholder {context}"
                    .to_string(),
            );
        }
        Ok(Settings { prompt, warnings })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(
            Settings::from_entries(&[]).unwrap().prompt,
            PromptConfig::default()
        );
        let s = Settings::from_entries(&entries(&[
            ("system", "Be brief."),
            ("template", "{context}\n---\n{question}"),
            ("max_context_chars", "1200"),
        ]))
        .unwrap();
        assert_eq!(s.prompt.system, "Be brief.");
        assert_eq!(s.prompt.max_context_chars, 1200);
    }

    #[test]
    fn bad_config_is_rejected() {
        for kv in [
            vec![("template", "{context} only")],
            vec![("template", "{question} only")],
            vec![("max_context_chars", "0")],
            vec![("max_context_chars", "lots")],
        ] {
            assert!(Settings::from_entries(&entries(&kv)).is_err(), "{kv:?}");
        }
        // The context may live in the system message instead.
        assert!(Settings::from_entries(&entries(&[
            ("template", "{question}"),
            ("system", "Use: {context}")
        ]))
        .is_ok());
    }
}
