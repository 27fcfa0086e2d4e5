//! The operator's policy: the ceiling on what any manifest may grant a plugin,
//! and the quotas of the tenant it belongs to.
//!
//! A stage's effective capabilities are its manifest's request, checked against
//! this policy before anything runs (deny by default). `weft serve` reads one
//! policy per tenant (`<tenants>/<tenant>/policy.toml`, owned by the operator);
//! `weft run`/`check` use the built-in default or `--policy FILE`. The per-call
//! ceilings are checked against manifests at load time; the tenant-wide
//! quotas (total memory, instances, state, index size, CPU weight, dead-letter
//! rate) are enforced while the tenant's pipelines run.

use crate::manifest::{Diagnostic, Manifest};
use crate::net::Reach;
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
    /// Hosts a stage may be granted: `*` = any public host; loopback,
    /// private and other internal addresses (and `localhost`) only when
    /// named here exactly; link-local and cloud metadata addresses never.
    pub allowed_outbound_hosts: Vec<String>,
    /// Environment variables a stage may be granted (exact names, or a prefix ending in `*`).
    pub allowed_env: Vec<String>,
    /// Directories under which read-only file grants may point. Empty = only
    /// under the manifest's own directory tree.
    pub allowed_file_roots: Vec<PathBuf>,
    /// Directories a tenant's plugin files may be loaded from under `weft
    /// serve`, besides the tenant's own directory and the operator's plugin
    /// search path (`WEFT_PLUGIN_PATH`, `target/plugins` beside weft or
    /// above the tenants directory). Without this a manifest could load
    /// another tenant's private component by a relative path.
    pub allowed_plugin_dirs: Vec<PathBuf>,
    /// Linear memories and tables of all the tenant's live instances together.
    pub max_total_memory_mb: u64,
    /// Live plugin instances of the tenant at once (one per stage today).
    pub max_instances: u64,
    /// The tenant's share of the plugin workers against other tenants that
    /// are waiting (weighted fair queuing): weight 2 gets twice weight 1.
    pub cpu_weight: u32,
    /// Committed plugin state (keys + values) of all the tenant's stages.
    pub max_state_mb: u64,
    /// Indexes the tenant may write.
    pub max_indexes: u64,
    /// Documents in one of the tenant's indexes.
    pub max_index_documents: u64,
    /// Bytes on disk of one of the tenant's indexes.
    pub max_index_mb: u64,
    /// Bytes on disk of all the tenant's tables (`[[table]]`) together; an
    /// update past it waits (it is not dropped) until the limit is raised.
    pub max_table_mb: u64,
    /// Dead letters per second (over 10 s) above which a pipeline's circuit
    /// opens: it pauses instead of dead-lettering its whole topic.
    pub max_dead_letters_per_sec: u64,
    /// Where this policy was read from, and each top-level key's line, so a
    /// refusal can point at the rule it breaks.
    #[serde(skip)]
    pub source: Option<PolicySource>,
}

/// The file a policy came from, for `file:line` references to its keys.
#[derive(Debug, Clone, Default)]
pub struct PolicySource {
    pub file: PathBuf,
    /// `key -> (line, column)`, 1-based.
    pub keys: std::collections::BTreeMap<String, (usize, usize)>,
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
            allowed_plugin_dirs: Vec::new(),
            max_total_memory_mb: 4096,
            max_instances: 64,
            cpu_weight: 1,
            max_state_mb: 256,
            max_indexes: 16,
            max_index_documents: 10_000_000,
            max_index_mb: 16 << 10,
            max_table_mb: 1024,
            max_dead_letters_per_sec: 1000,
            source: None,
        }
    }
}

impl Policy {
    /// The policy `weft run`, `check` and `dev` use without `--policy`: the
    /// defaults, plus this machine's loopback hosts, so a local stand-in or
    /// model server can be granted during development. A policy file (and
    /// every tenant's under `weft serve`) starts from the defaults, where
    /// loopback must be named.
    pub fn builtin() -> Policy {
        Policy {
            allowed_outbound_hosts: ["*", "127.0.0.1", "localhost", "[::1]"]
                .map(String::from)
                .to_vec(),
            ..Policy::default()
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
    #[error("policy {}: {message}", .path.display())]
    Invalid {
        path: std::path::PathBuf,
        message: String,
    },
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut policy: Policy = toml::from_str(&text).map_err(|source| PolicyError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        if !(1..=1000).contains(&policy.cpu_weight) {
            return Err(PolicyError::Invalid {
                path: path.to_path_buf(),
                message: format!("cpu_weight must be 1 to 1000, got {}", policy.cpu_weight),
            });
        }
        let mut keys = std::collections::BTreeMap::new();
        if let Ok(table) = toml::de::DeTable::parse(&text) {
            for (k, _) in table.get_ref() {
                let (line, col) = crate::manifest::line_col(&text, k.span().start);
                keys.insert(k.get_ref().to_string(), (line, col));
            }
        }
        policy.source = Some(PolicySource {
            file: path.to_path_buf(),
            keys,
        });
        Ok(policy)
    }

    /// Where the rule `key` comes from: ` (policy <file>:<line>)` when it
    /// was set in a policy file, ` (policy <file>, default)` when that file
    /// leaves it at the default, or ` (built-in policy)`.
    pub fn rule(&self, key: &str) -> String {
        match &self.source {
            Some(src) => match src.keys.get(key) {
                Some((line, col)) => format!(
                    "policy {}:{line}:{col} `{key}`",
                    crate::manifest::display_path(&src.file)
                ),
                None => format!(
                    "policy {}: `{key}` (default)",
                    crate::manifest::display_path(&src.file)
                ),
            },
            None => format!("built-in policy `{key}`"),
        }
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
            let mut deny = |key: &str, msg: String| {
                let mut d = s.location.clone();
                d.message = format!("stage `{}`: {msg} (denied by {})", s.name, self.rule(key));
                out.push(d);
            };
            if s.limits.memory_bytes > self.max_memory_mb << 20 {
                deny(
                    "max_memory_mb",
                    format!(
                        "limits.memory_mb {} exceeds the maximum {}",
                        s.limits.memory_bytes >> 20,
                        self.max_memory_mb
                    ),
                );
            }
            if s.limits.memory_bytes > self.max_total_memory_mb << 20 {
                deny(
                    "max_total_memory_mb",
                    format!(
                        "limits.memory_mb {} exceeds the tenant's total of {}",
                        s.limits.memory_bytes >> 20,
                        self.max_total_memory_mb
                    ),
                );
            }
            if s.limits.timeout_ms > self.max_timeout_ms {
                deny(
                    "max_timeout_ms",
                    format!(
                        "limits.timeout_ms {} exceeds the maximum {}",
                        s.limits.timeout_ms, self.max_timeout_ms
                    ),
                );
            }
            if s.limits.max_output_bytes > self.max_output_kb << 10 {
                deny(
                    "max_output_kb",
                    format!(
                        "limits.max_output_kb {} exceeds the maximum {}",
                        s.limits.max_output_bytes >> 10,
                        self.max_output_kb
                    ),
                );
            }
            if s.limits.max_outputs > self.max_outputs {
                deny(
                    "max_outputs",
                    format!(
                        "limits.max_outputs {} exceeds the maximum {}",
                        s.limits.max_outputs, self.max_outputs
                    ),
                );
            }
            for h in &s.grants.outbound_hosts {
                let named = self
                    .allowed_outbound_hosts
                    .iter()
                    .any(|a| crate::net::canonical_host(a) == h.host);
                match crate::net::reach_of_host(&h.host) {
                    Reach::Forbidden(what) => deny(
                        "allowed_outbound_hosts",
                        format!("outbound host `{}` is {what}, never allowed", h.host),
                    ),
                    Reach::Internal(what) if !named => deny(
                        "allowed_outbound_hosts",
                        format!(
                            "outbound host `{}` is {what}: the policy must name it exactly (`*` covers public hosts only)",
                            h.host
                        ),
                    ),
                    Reach::Internal(_) => {}
                    Reach::Public => {
                        if !named && !self.allowed_outbound_hosts.iter().any(|a| a == "*") {
                            deny(
                                "allowed_outbound_hosts",
                                format!("outbound host `{}` is not allowed", h.host),
                            );
                        }
                    }
                }
            }
            for e in &s.grants.env {
                let ok = self.allowed_env.iter().any(|a| match a.strip_suffix('*') {
                    Some(prefix) => e.starts_with(prefix),
                    None => a == e,
                });
                if !ok {
                    deny(
                        "allowed_env",
                        format!(
                            "environment variable `{e}` is not allowed (allowed: {})",
                            self.allowed_env.join(", ")
                        ),
                    );
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
                    deny(
                        "allowed_file_roots",
                        format!(
                            "file grant `{}` is outside the allowed roots ({})",
                            host_dir.display(),
                            roots
                                .iter()
                                .map(|r| r.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
            }
        }
        out
    }

    /// Plugin files of a tenant's manifest `m` outside `roots` (the
    /// tenant's directory and the operator's plugin directories) and
    /// outside `allowed_plugin_dirs`. Paths are compared canonical, so
    /// `..` and symbolic links cannot leave a root.
    pub fn check_plugin_dirs(&self, m: &Manifest, roots: &[PathBuf]) -> Vec<Diagnostic> {
        let allowed: Vec<PathBuf> = roots
            .iter()
            .chain(&self.allowed_plugin_dirs)
            .filter_map(|r| r.canonicalize().ok())
            .collect();
        let mut out = Vec::new();
        for s in &m.stages {
            let Ok(plugin) = s.plugin.canonicalize() else {
                continue; // a missing file is reported by the loader
            };
            if !allowed.iter().any(|r| plugin.starts_with(r)) {
                let mut d = s.location.clone();
                d.message = format!(
                    "stage `{}`: plugin {} is outside the allowed plugin directories ({}) (denied by {})",
                    s.name,
                    crate::manifest::display_path(&s.plugin),
                    allowed
                        .iter()
                        .map(|r| crate::manifest::display_path(r))
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.rule("allowed_plugin_dirs")
                );
                out.push(d);
            }
        }
        out
    }

    /// What the tenant's manifests ask for together, against the tenant-wide
    /// quotas: instances (`parallelism` per stage, 1 by default) and indexes
    /// written. Reported at the
    /// manifest that goes over.
    pub fn check_tenant(&self, manifests: &[&Manifest]) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        let mut instances = 0u64;
        let mut indexes: Vec<&str> = Vec::new();
        for m in manifests {
            // A manifest that would go over is refused and not counted, so
            // the ones after it are judged on what actually runs.
            let with = instances
                + m.stages
                    .iter()
                    .map(|s| u64::from(s.parallelism))
                    .sum::<u64>();
            if with > self.max_instances {
                out.push(Diagnostic {
                    file: m.file.clone(),
                    line: 1,
                    column: 1,
                    message: format!(
                        "pipeline `{}` would bring the tenant's plugin instances to {with}, over the maximum {} (denied by {})",
                        m.name,
                        self.max_instances,
                        self.rule("max_instances")
                    ),
                });
                continue;
            }
            if let Some(i) = &m.sink_index {
                if !indexes.contains(&i.as_str()) && indexes.len() as u64 >= self.max_indexes {
                    out.push(Diagnostic {
                        file: m.file.clone(),
                        line: 1,
                        column: 1,
                        message: format!(
                            "pipeline `{}` writes index `{i}`, one more than the tenant's maximum of {} indexes (denied by {})",
                            m.name,
                            self.max_indexes,
                            self.rule("max_indexes")
                        ),
                    });
                    continue;
                }
                if !indexes.contains(&i.as_str()) {
                    indexes.push(i);
                }
            }
            instances = with;
        }
        out
    }
}
