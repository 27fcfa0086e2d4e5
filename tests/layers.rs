//! The layering rule of the host (README, "Layout"): a module may use only
//! modules of lower layers (and named neighbours of its own layer). This
//! test reads every source file under host/src and fails on an import that
//! points up or sideways, so the rule cannot erode silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Layer of each top-level module; `cli` is the binary.
const LAYERS: &[(&str, u32)] = &[
    ("net", 0),
    ("manifest", 1),
    ("policy", 1),
    ("metrics", 1),
    ("runtime", 2),
    ("record", 3),
    ("pipeline", 3),
    ("table", 3),
    ("index", 4),
    ("stream", 4),
    ("service", 5),
    ("cli", 6),
];

/// Same-layer uses that are allowed (from, to).
const NEIGHBOURS: &[(&str, &str)] = &[("policy", "manifest"), ("pipeline", "record")];

/// The index files that translate between the index and the layers below
/// it; every other index file is the core, which must not know the Wasm
/// runtime, the pipeline or records at all.
const INDEX_EDGE: &[&str] = &["adapter.rs", "sink.rs"];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The top-level module a file under `src` belongs to.
fn module_of(rel: &Path) -> Option<String> {
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    match first.as_str() {
        "main.rs" => Some("cli".into()),
        "lib.rs" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// `(line, referenced module)` for every `crate::x` / `weft::x` path in
/// code (comments are skipped; `exports::weft::plugin` style WIT paths are
/// not module references).
fn references(source: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in source.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for prefix in ["crate::", "weft::"] {
            let mut from = 0;
            while let Some(i) = line[from..].find(prefix) {
                let at = from + i;
                from = at + prefix.len();
                let before = line[..at].chars().last();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let name: String = line[from..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push((n + 1, name));
                }
            }
        }
    }
    out
}

/// Every violation in one file, as `file:line: message`.
fn violations(rel: &Path, source: &str) -> Vec<String> {
    let Some(module) = module_of(rel) else {
        return Vec::new();
    };
    let Some(own) = layer(&module) else {
        return vec![format!(
            "{}: module `{module}` has no layer; add it to LAYERS and the README",
            rel.display()
        )];
    };
    let index_core = module == "index"
        && rel
            .file_name()
            .is_some_and(|f| !INDEX_EDGE.contains(&f.to_string_lossy().as_ref()));
    let mut out = Vec::new();
    for (line, target) in references(source) {
        if target == module {
            continue;
        }
        if index_core && matches!(target.as_str(), "runtime" | "pipeline" | "record") {
            out.push(format!(
                "{}:{line}: the index core uses `{target}`; only index/adapter.rs and index/sink.rs may",
                rel.display()
            ));
            continue;
        }
        let Some(theirs) = layer(&target) else {
            continue; // not a module of ours (e.g. `crate::Result`)
        };
        let neighbour = NEIGHBOURS.contains(&(module.as_str(), target.as_str()));
        if theirs > own || (theirs == own && !neighbour) {
            out.push(format!(
                "{}:{line}: `{module}` (layer {own}) uses `{target}` (layer {theirs})",
                rel.display()
            ));
        }
    }
    if index_core && source.contains("wasmtime") {
        out.push(format!("{}: the index core names wasmtime", rel.display()));
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn lower_layers_never_import_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 20,
        "found only {} files under {}",
        files.len(),
        src.display()
    );
    let mut per_module: BTreeMap<String, usize> = BTreeMap::new();
    let mut all = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).expect("under src");
        if let Some(m) = module_of(rel) {
            *per_module.entry(m).or_default() += 1;
        }
        let text = std::fs::read_to_string(f).expect("read source");
        all.extend(violations(rel, &text));
    }
    assert!(all.is_empty(), "layering violations:\n{}", all.join("\n"));
    // Every layer exists, so a renamed module cannot slip out of the check.
    for (m, _) in LAYERS {
        assert!(per_module.contains_key(*m), "no files of module `{m}`");
    }
}

#[test]
fn the_checker_catches_an_upward_import() {
    let bad = "use crate::pipeline::Pipeline;\nfn f() { crate::service::run(); }\n";
    let v = violations(Path::new("runtime/ctx.rs"), bad);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v[0].contains("runtime/ctx.rs:1"), "{v:?}");
    // A sideways import between siblings of one layer.
    let v = violations(
        Path::new("stream/kafka.rs"),
        "use crate::index::VectorIndex;",
    );
    assert_eq!(v.len(), 1, "{v:?}");
    // The index core may not name runtime types, though the layer may.
    let v = violations(Path::new("index/store.rs"), "use crate::runtime::IndexHit;");
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(violations(
        Path::new("index/adapter.rs"),
        "use crate::runtime::IndexHit;"
    )
    .is_empty());
    // Comments and WIT paths are not imports.
    let ok = "// crate::service is above\nuse super::bindings::exports::weft::plugin::x;\n";
    assert!(violations(Path::new("runtime/mod.rs"), ok).is_empty());
}
