//! `weft check`: every problem of a manifest, located.

use super::{Result, ServiceError};
use crate::manifest::Manifest;
use crate::policy::Policy;
use crate::runtime::{Runtime, StageShared};
use crate::stream::kafka::MAX_MESSAGE_BYTES;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Loads a manifest and checks it against the policy; every problem is a
/// `file:line:col: message` line of the error.
pub fn load_checked(policy: &Policy, path: &Path) -> Result<Manifest> {
    load_checked_in(policy, path, None)
}

/// Outside `weft serve`, a policy that names `allowed_plugin_dirs` confines
/// plugin files to those, the manifest's own directory and the plugin
/// search path (without it, `weft run`'s operator may load any file).
fn outside_operator_dirs(policy: &Policy, m: &Manifest) -> Vec<crate::manifest::Diagnostic> {
    if policy.allowed_plugin_dirs.is_empty() {
        return Vec::new();
    }
    let dir = m
        .file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(".").to_path_buf());
    let dir = dir.canonicalize().unwrap_or(dir);
    let mut roots = vec![dir.clone()];
    roots.extend(crate::manifest::PluginPath::from_env(&dir).dirs);
    policy.check_plugin_dirs(m, &roots)
}

/// [`load_checked`] for a manifest that belongs to `tenant` (its directory).
pub fn load_checked_in(policy: &Policy, path: &Path, tenant: Option<&str>) -> Result<Manifest> {
    let m = Manifest::load_in(path, tenant).map_err(|e| {
        ServiceError::Manifest(e.diagnostics.iter().map(|d| d.to_string()).collect())
    })?;
    let mut denied = policy.check(&m);
    if tenant.is_none() {
        denied.extend(outside_operator_dirs(policy, &m));
    }
    if !denied.is_empty() {
        return Err(ServiceError::Manifest(
            denied.iter().map(|d| d.to_string()).collect(),
        ));
    }
    Ok(m)
}

/// A manifest that passed every check.
#[derive(Debug, Clone)]
pub struct Checked {
    pub manifest: Manifest,
    /// `name [kind]` of each stage, in order.
    pub stages: Vec<String>,
    /// Accepted, but likely not what was meant (`file:line:col: message`).
    pub warnings: Vec<String>,
}

impl Checked {
    /// One line: file, pipeline, tenant, source -> stages -> sink.
    pub fn summary(&self) -> String {
        let m = &self.manifest;
        format!(
            "{} (pipeline `{}`, tenant `{}`: {} -> {} -> {})",
            m.file.display(),
            m.name,
            m.tenant,
            m.source_topic,
            self.stages.join(" -> "),
            m.sink_topic
                .clone()
                .or(m.sink_index.as_ref().map(|i| format!("index {i}")))
                .unwrap_or_default()
        )
    }
}

/// Checks one manifest completely: syntax, keys and types, the policy, and
/// every stage's plugin (compiled and type-checked against its world).
/// `Err` holds every problem found, one printable line each.
pub fn check_manifest(
    runtime: &Runtime,
    policy: &Policy,
    path: &Path,
) -> std::result::Result<Checked, Vec<String>> {
    check_manifest_in(runtime, policy, path, None)
}

/// Who owns a manifest under `weft serve`: its tenant, and the directories
/// its plugin files may come from (the tenant's own and the operator's).
#[derive(Clone, Copy)]
pub struct Owner<'a> {
    pub tenant: &'a str,
    pub plugin_roots: &'a [PathBuf],
    /// Whether this exact version already runs (so it passed every check,
    /// plugins included): then its plugins are not prepared and called
    /// again, which a reload would otherwise do for every manifest of
    /// every tenant whenever any file changes.
    pub unchanged: &'a dyn Fn(&Manifest) -> bool,
}

/// [`check_manifest`] for a manifest that belongs to a tenant (its directory).
pub fn check_manifest_in(
    runtime: &Runtime,
    policy: &Policy,
    path: &Path,
    owner: Option<Owner<'_>>,
) -> std::result::Result<Checked, Vec<String>> {
    let m = Manifest::load_in(path, owner.map(|o| o.tenant)).map_err(|e| {
        e.diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
    })?;
    let mut problems: Vec<String> = policy.check(&m).iter().map(|d| d.to_string()).collect();
    if owner.is_none() {
        let outside = outside_operator_dirs(policy, &m);
        if !outside.is_empty() {
            problems.extend(outside.iter().map(|d| d.to_string()));
            return Err(problems);
        }
    }
    if let Some(o) = owner {
        let outside = policy.check_plugin_dirs(&m, o.plugin_roots);
        if !outside.is_empty() {
            // Not even compiled: the file is not this tenant's to load.
            problems.extend(outside.iter().map(|d| d.to_string()));
            return Err(problems);
        }
    }
    let mut stages = Vec::new();
    let mut warnings = Vec::new();
    let unchanged = owner.is_some_and(|o| (o.unchanged)(&m));
    for s in &m.stages {
        if s.limits.max_output_bytes > MAX_MESSAGE_BYTES as u64 {
            warnings.push(format!(
                "{}: stage `{}`: limits.max_output_kb = {} allows outputs over the producer's message limit of {MAX_MESSAGE_BYTES} bytes; larger outputs will be dead-lettered as output-too-large",
                s.location,
                s.name,
                s.limits.max_output_bytes >> 10
            ));
        }
        if unchanged {
            stages.push(format!("{} [{}]", s.name, s.kind));
            continue;
        }
        let shared = Arc::new(StageShared::new(&m.tenant, &m.name, s));
        // Prepared (compiled, linked, type-checked), instantiated once and
        // called once with no data under the stage's limits, so a plugin
        // whose start-up or first call traps or never returns is caught
        // here (and a reload refuses it) rather than on every record.
        match runtime.prepare(s, shared) {
            Ok(mut plugin) => match plugin.smoke_call() {
                Ok(()) => stages.push(format!("{} [{}]", s.name, s.kind)),
                Err(f) => problems.push(format!("{}: the plugin cannot start: {f}", s.location)),
            },
            Err(e) => problems.push(format!("{}: {e:#}", s.location)),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Checked {
        manifest: m,
        stages,
        warnings,
    })
}
