//! The operator's policy: the ceiling on what any manifest may grant a plugin.
//!
//! A stage's effective capabilities are its manifest's request, checked against
//! this policy before anything runs (deny by default). Per-tenant policies will
//! extend this; for now there is one built-in default, overridable from a TOML
//! file with `--policy`.

use crate::manifest::{Diagnostic, Manifest};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Largest linear memory a stage may ask for.
    pub max_memory_mb: u64,
    /// Longest CPU/wall time per call a stage may ask for.
    pub max_timeout_ms: u64,
    /// Largest output per item.
    pub max_output_kb: u64,
    /// Most records one input may produce at a stage.
    pub max_outputs: u64,
    /// Hosts a stage may be granted (`*` = any public host name). Exact host
    /// names; link-local and cloud metadata addresses are always refused.
    pub allowed_outbound_hosts: Vec<String>,
    /// Environment variables a stage may be granted (exact names, or a prefix ending in `*`).
    pub allowed_env: Vec<String>,
    /// Directories under which read-only file grants may point. Empty = only
    /// under the manifest's own directory tree.
    pub allowed_file_roots: Vec<PathBuf>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_memory_mb: 1024,
            max_timeout_ms: 120_000,
            max_output_kb: 65_536,
            max_outputs: 100_000,
            allowed_outbound_hosts: vec!["*".into()],
            allowed_env: vec!["WEFT_*".into(), "OPENAI_*".into()],
            allowed_file_roots: Vec::new(),
        }
    }
}

/// Why a policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading policy {}: {source}", .path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing policy {}: {source}", .path.display())]
    Parse {
        path: std::path::PathBuf,
        #[source]
        source: toml::de::Error,
    },
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| PolicyError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Every way in which `m` asks for more than this policy allows.
    pub fn check(&self, m: &Manifest) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        let manifest_root = m
            .file
            .parent()
            .and_then(|p| {
                if p.as_os_str().is_empty() {
                    None
                } else {
                    Some(p)
                }
            })
            .unwrap_or(Path::new("."))
            .canonicalize()
            .unwrap_or_default();
        for s in &m.stages {
            let mut deny = |msg: String| {
                let mut d = s.location.clone();
                d.message = format!("stage `{}`: {msg} (denied by policy)", s.name);
                out.push(d);
            };
            if s.limits.memory_bytes > self.max_memory_mb << 20 {
                deny(format!(
                    "limits.memory_mb {} exceeds the maximum {}",
                    s.limits.memory_bytes >> 20,
                    self.max_memory_mb
                ));
            }
            if s.limits.timeout_ms > self.max_timeout_ms {
                deny(format!(
                    "limits.timeout_ms {} exceeds the maximum {}",
                    s.limits.timeout_ms, self.max_timeout_ms
                ));
            }
            if s.limits.max_output_bytes > self.max_output_kb << 10 {
                deny(format!(
                    "limits.max_output_kb {} exceeds the maximum {}",
                    s.limits.max_output_bytes >> 10,
                    self.max_output_kb
                ));
            }
            if s.limits.max_outputs > self.max_outputs {
                deny(format!(
                    "limits.max_outputs {} exceeds the maximum {}",
                    s.limits.max_outputs, self.max_outputs
                ));
            }
            for h in &s.grants.outbound_hosts {
                if is_forbidden_address(&h.host) {
                    deny(format!(
                        "outbound host `{}` is a link-local or metadata address",
                        h.host
                    ));
                    continue;
                }
                let ok = self
                    .allowed_outbound_hosts
                    .iter()
                    .any(|a| a == "*" || a.eq_ignore_ascii_case(&h.host));
                if !ok {
                    deny(format!("outbound host `{}` is not allowed", h.host));
                }
            }
            for e in &s.grants.env {
                let ok = self.allowed_env.iter().any(|a| match a.strip_suffix('*') {
                    Some(prefix) => e.starts_with(prefix),
                    None => a == e,
                });
                if !ok {
                    deny(format!(
                        "environment variable `{e}` is not allowed (allowed: {})",
                        self.allowed_env.join(", ")
                    ));
                }
            }
            for (host_dir, _) in &s.grants.files {
                let roots: Vec<PathBuf> = if self.allowed_file_roots.is_empty() {
                    vec![manifest_root.clone()]
                } else {
                    self.allowed_file_roots
                        .iter()
                        .filter_map(|r| r.canonicalize().ok())
                        .collect()
                };
                if !roots.iter().any(|r| host_dir.starts_with(r)) {
                    deny(format!(
                        "file grant `{}` is outside the allowed roots ({})",
                        host_dir.display(),
                        roots
                            .iter()
                            .map(|r| r.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        out
    }
}

/// Addresses no plugin may ever reach: link-local (cloud metadata services live
/// at 169.254.169.254) and the unspecified address.
fn is_forbidden_address(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    match h.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => v4.is_link_local() || v4.is_unspecified(),
        Ok(std::net::IpAddr::V6(v6)) => {
            v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
        Err(_) => h.eq_ignore_ascii_case("metadata.google.internal"),
    }
}
