//! The tenants directory `weft serve` hosts and `weft check --tenants`
//! checks:
//!
//! ```text
//! <tenants>/<tenant>/policy.toml          owned by the operator
//! <tenants>/<tenant>/pipelines/*.toml     owned by the tenant
//! ```
//!
//! A manifest's tenant is the directory it lives in, whatever it says; its
//! policy is that directory's `policy.toml`, which is required (a tenant the
//! operator wrote no policy for runs nothing).

use super::check::{check_manifest_in, Checked, Owner};
use super::{Result, ServiceError};
use crate::manifest::{check_tenant_name, display_path, Manifest};
use crate::policy::Policy;
use crate::runtime::Runtime;
use std::path::{Path, PathBuf};

/// One tenant's directory: its policy (or why it cannot be read) and its
/// manifest files, sorted by name.
#[derive(Debug)]
pub struct TenantDir {
    pub name: String,
    pub dir: PathBuf,
    pub policy: std::result::Result<Policy, String>,
    pub manifests: Vec<PathBuf>,
}

impl TenantDir {
    pub fn policy_file(&self) -> PathBuf {
        self.dir.join("policy.toml")
    }
}

/// Every tenant directory under `root`, sorted by name. Entries that are not
/// directories (or start with `.`) are ignored; a directory whose name is
/// not a valid tenant name comes back with that as its policy error. A
/// missing `root` is an error.
pub fn scan(root: &Path) -> Result<Vec<TenantDir>> {
    let entries = std::fs::read_dir(root).map_err(|e| {
        ServiceError::io(
            format!("reading tenants directory {}", display_path(root)),
            e,
        )
    })?;
    let mut tenants = Vec::new();
    for e in entries {
        let e = e.map_err(|e| ServiceError::io(format!("reading {}", display_path(root)), e))?;
        let dir = e.path();
        if !dir.is_dir() {
            continue;
        }
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        // A directory that cannot be a tenant is reported (as that
        // tenant's problem) and runs nothing; the others are unaffected.
        if let Err(m) = check_tenant_name(&name) {
            tenants.push(TenantDir {
                name,
                policy: Err(format!("{}: {m}", display_path(&dir))),
                dir,
                manifests: Vec::new(),
            });
            continue;
        }
        let policy_file = dir.join("policy.toml");
        let policy = if policy_file.is_file() {
            Policy::load(&policy_file).map_err(|e| e.to_string())
        } else {
            Err(format!(
                "{}: missing: the operator writes each tenant's policy (see README, \"Tenants\")",
                display_path(&policy_file)
            ))
        };
        let mut manifests = Vec::new();
        let pdir = dir.join("pipelines");
        if pdir.is_dir() {
            let listing = std::fs::read_dir(&pdir)
                .map_err(|e| ServiceError::io(format!("reading {}", display_path(&pdir)), e))?;
            for f in listing {
                let f =
                    f.map_err(|e| ServiceError::io(format!("reading {}", display_path(&pdir)), e))?;
                let p = f.path();
                if p.extension().is_some_and(|x| x == "toml") && p.is_file() {
                    manifests.push(p);
                }
            }
        }
        manifests.sort();
        tenants.push(TenantDir {
            name,
            dir,
            policy,
            manifests,
        });
    }
    tenants.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tenants)
}

/// Where a tenant's plugin files may come from: its own directory and the
/// operator's plugin search path, i.e. `WEFT_PLUGIN_PATH`, `target/plugins`
/// beside weft or the current directory, and above (never inside) the
/// tenants directory.
fn plugin_roots(t: &TenantDir) -> Vec<PathBuf> {
    let above = t
        .dir
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"));
    let mut roots = vec![t.dir.clone()];
    roots.extend(crate::manifest::PluginPath::from_env(above).dirs);
    roots
}

/// What checking one tenant found.
#[derive(Debug)]
pub struct TenantCheck {
    pub tenant: String,
    /// Manifests that passed every check.
    pub ok: Vec<Checked>,
    /// Every problem, one printable line each (`file:line:col: message`).
    pub problems: Vec<String>,
}

/// Checks every manifest of `t` against its tenant and policy (as
/// [`check_manifest_in`]), then the manifests together against the
/// tenant-wide quotas.
/// `unchanged` says which manifests are versions already running (see
/// [`Owner::unchanged`]); `weft check --tenants` has none.
pub fn check_tenant(
    runtime: &Runtime,
    t: &TenantDir,
    unchanged: &dyn Fn(&Manifest) -> bool,
) -> TenantCheck {
    let mut out = TenantCheck {
        tenant: t.name.clone(),
        ok: Vec::new(),
        problems: Vec::new(),
    };
    let policy = match &t.policy {
        Ok(p) => p,
        Err(e) => {
            out.problems.push(e.clone());
            return out;
        }
    };
    let roots = plugin_roots(t);
    let owner = Owner {
        tenant: &t.name,
        plugin_roots: &roots,
        unchanged,
    };
    for m in &t.manifests {
        match check_manifest_in(runtime, policy, m, Some(owner)) {
            Ok(c) => out.ok.push(c),
            Err(p) => out.problems.extend(p),
        }
    }
    // Two manifests with one pipeline name would share a consumer group:
    // the second is refused.
    let mut names: Vec<String> = Vec::new();
    out.ok.retain(|c| {
        let m = &c.manifest;
        if names.contains(&m.name) {
            out.problems.push(format!(
                "{}: pipeline name `{}` is used twice in tenant `{}` (names must be unique: they name the consumer group)",
                display_path(&m.file),
                m.name,
                t.name
            ));
            return false;
        }
        names.push(m.name.clone());
        true
    });
    // The manifests that take the tenant over a quota are refused (the
    // ones before them, in file name order, run).
    let loaded: Vec<&Manifest> = out.ok.iter().map(|c| &c.manifest).collect();
    let over = policy.check_tenant(&loaded);
    let refused: Vec<PathBuf> = over.iter().map(|d| d.file.clone()).collect();
    out.problems.extend(over.iter().map(|d| d.to_string()));
    out.ok.retain(|c| !refused.contains(&c.manifest.file));
    out
}

/// Checks a whole tenants tree (`weft check --tenants DIR`).
pub fn check_tree(runtime: &Runtime, root: &Path) -> Result<Vec<TenantCheck>> {
    Ok(scan(root)?
        .iter()
        .map(|t| check_tenant(runtime, t, &|_| false))
        .collect())
}
