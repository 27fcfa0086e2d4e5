//! What `weft plugin new` and `weft plugin build` do: start a plugin project
//! for one stage kind in Rust, Python or JavaScript, and build it into a component.
//!
//! A project from `new` stands alone, outside any weft checkout: it carries a
//! copy of the contract (`wit/weft.wit`, embedded in this binary), a
//! one-stage `pipeline.toml` whose plugin path points at the component the
//! build produces, a `sample.jsonl` shaped for the stage, a README, and
//! `weft-plugin.toml` (name, kind, language), from which `build` picks the
//! toolchain. The templates are in `host/templates/`.
//!
//! Where the builds put the component (relative to the project):
//! - Rust: `target/wasm32-wasip2/release/<name with _>.wasm`, cargo's own
//!   place, so a plain `cargo build --release --target wasm32-wasip2` does
//!   too; when `CARGO_TARGET_DIR` (or cargo config) sends cargo's output
//!   elsewhere, `build` copies the component there.
//! - Python and JavaScript: `build/<name>.wasm`.
//!
//! The non-Rust toolchains are looked up like `scripts/build-polyglot-plugins`
//! does, in a weft checkout's `.tools/` (`scripts/setup-polyglot`), after an
//! explicit override and before the usual global place:
//! - componentize-py: `$WEFT_COMPONENTIZE_PY`, then `.tools/py/bin/`, then `PATH`;
//! - componentize-js: `$WEFT_NODE_MODULES`, then the project's `node_modules`
//!   (`npm install`), then `.tools/js/node_modules`; `node` from `PATH`.
//!
//! `.tools/` is searched in the project's directory and its ancestors, then
//! beside the `weft` binary and its ancestors, then in the checkout this
//! binary was built from.

use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;
use serde::Deserialize;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use weft::manifest::StageKind;

/// The plugin contract, copied into every new project.
const WIT: &str = include_str!("../../../wit/weft.wit");

/// The file `new` writes to say what the project is; `build` reads it.
const PROJECT_FILE: &str = "weft-plugin.toml";

/// Where cargo puts a release build for wasm32-wasip2, under its target dir.
const RUST_OUT: &str = "wasm32-wasip2/release";

/// A plugin language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Rust,
    #[value(alias = "py")]
    #[serde(alias = "py")]
    Python,
    #[value(alias = "javascript")]
    #[serde(alias = "javascript")]
    Js,
}

impl Lang {
    fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }

    pub(crate) fn title(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    }
}

// --- weft plugin new ----------------------------------------------------------

/// A stage kind by its manifest name (`transform`) or world name (`transformer`).
pub(crate) fn parse_kind(s: &str) -> Result<StageKind> {
    StageKind::ALL
        .into_iter()
        .find(|k| k.as_str() == s || k.world() == s)
        .ok_or_else(|| {
            let kinds: Vec<&str> = StageKind::ALL.iter().map(|k| k.as_str()).collect();
            anyhow!(
                "unknown stage kind `{s}`: expected one of {}",
                kinds.join(", ")
            )
        })
}

/// Names that cannot be Rust crate names.
const RUST_RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc_macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

/// The project name names the directory, the package (crate, npm) and the
/// pipeline, so it must suit all of them.
fn check_name(name: &str, lang: Lang) -> Result<()> {
    let mut chars = name.chars();
    let ok = name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        bail!(
            "invalid plugin name `{name}`: use 1 to 64 lower-case ASCII letters, digits, `-` \
             and `_`, starting with a letter (it names the directory, the package and the pipeline)"
        );
    }
    if lang == Lang::Rust && RUST_RESERVED.contains(&name.replace('-', "_").as_str()) {
        bail!("invalid plugin name `{name}`: it is reserved in Rust, so it cannot name a crate");
    }
    Ok(())
}

/// Creates `<dir>/<name>` and writes the project into it; never touches an
/// existing directory. Returns the project's path.
pub(crate) fn new_project(
    kind: StageKind,
    name: &str,
    lang: Lang,
    dir: Option<&Path>,
) -> Result<PathBuf> {
    check_name(name, lang)?;
    let files = project_files(kind, name, lang)?;
    let parent = dir.unwrap_or(Path::new("."));
    let root = parent.join(name);
    let exists = || {
        anyhow!(
            "{} already exists; `weft plugin new` never overwrites: choose another name or --dir",
            display_path(&root)
        )
    };
    if root.symlink_metadata().is_ok() {
        return Err(exists());
    }
    std::fs::create_dir_all(parent)
        .with_context(|| format!("creating {}", display_path(parent)))?;
    match std::fs::create_dir(&root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(exists()),
        Err(e) => return Err(e).with_context(|| format!("creating {}", display_path(&root))),
    }
    let written = files.iter().try_for_each(|(rel, text)| {
        let p = root.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", display_path(d)))?;
        }
        std::fs::write(&p, text).with_context(|| format!("writing {}", display_path(&p)))
    });
    if let Err(e) = written {
        // Only this directory, which this call created, is removed.
        let _ = std::fs::remove_dir_all(&root);
        return Err(e);
    }
    Ok(root)
}

/// The plugin source for a kind in a language.
fn source_template(kind: StageKind, lang: Lang) -> Result<&'static str> {
    let text = match (lang, kind) {
        (Lang::Rust, StageKind::Chunker) => include_str!("../../templates/rust/chunker.rs"),
        (Lang::Rust, StageKind::Embedder) => include_str!("../../templates/rust/embedder.rs"),
        (Lang::Rust, StageKind::Retriever) => include_str!("../../templates/rust/retriever.rs"),
        (Lang::Rust, StageKind::PromptBuilder) => {
            include_str!("../../templates/rust/prompt-builder.rs")
        }
        (Lang::Rust, StageKind::Generator) => include_str!("../../templates/rust/generator.rs"),
        (Lang::Rust, StageKind::Transform) => include_str!("../../templates/rust/transform.rs"),
        (Lang::Python, StageKind::Chunker) => include_str!("../../templates/python/chunker.py"),
        (Lang::Python, StageKind::PromptBuilder) => {
            include_str!("../../templates/python/prompt-builder.py")
        }
        (Lang::Python, StageKind::Transform) => include_str!("../../templates/python/transform.py"),
        (Lang::Js, StageKind::Chunker) => include_str!("../../templates/js/chunker.js"),
        (Lang::Js, StageKind::PromptBuilder) => {
            include_str!("../../templates/js/prompt-builder.js")
        }
        (Lang::Js, StageKind::Transform) => include_str!("../../templates/js/transform.js"),
        (lang, kind) => bail!(
            "the {kind} kind is not yet templated for {}; use --lang rust (python and js \
             have transform, chunker and prompt-builder)",
            lang.as_str()
        ),
    };
    Ok(text)
}

/// Per-kind parts of the pipeline, the sample and the README.
struct KindInfo {
    /// `[source] format` of the pipeline.
    format: &'static str,
    /// What the sample lines are.
    format_doc: &'static str,
    /// The stage's `config` line in pipeline.toml (may be a comment).
    config: String,
    sample: &'static str,
    /// What the plugin does, for the README.
    about: String,
    /// What the smoke test gives, for the README.
    expect: String,
}

impl KindInfo {
    fn of(kind: StageKind, name: &str) -> KindInfo {
        const DOCS: &str = "documents {\"id\", \"text\", \"title\"?, \"metadata\"?}";
        const QUESTIONS: &str = "questions {\"id\", \"text\"}, here carrying the `hits` \
                                 a retriever would have found";
        match kind {
            StageKind::Transform => KindInfo {
                format: "record",
                format_doc: "raw records: envelopes {\"key\", \"value\", \"headers\"} or any JSON",
                config: format!("# config = {{ header = \"processed-by\", value = \"{name}\" }}"),
                sample: include_str!("../../templates/samples/transform.jsonl"),
                about: format!(
                    "it passes every record through and adds the header `processed-by: {name}`."
                ),
                expect: format!(
                    "`out.jsonl` has the three records, each with the header \
                     `processed-by: {name}` added (the tombstone `order-3` too)."
                ),
            },
            StageKind::Chunker => KindInfo {
                format: "document",
                format_doc: DOCS,
                config: String::new(),
                sample: include_str!("../../templates/samples/chunker.jsonl"),
                about: "one chunk per paragraph, with ids `<doc id>#<n>`.".into(),
                expect: "`out.jsonl` has six chunks, one per paragraph: `baggage#0` to \
                         `baggage#2`, `pets#0`, `pets#1` and `refunds#0`, each with its \
                         document's metadata."
                    .into(),
            },
            StageKind::Embedder => KindInfo {
                format: "record",
                format_doc: "chunks {\"id\", \"doc_id\", \"seq\", \"text\"} (or questions)",
                config: "config = { dimension = 64 }".into(),
                sample: include_str!("../../templates/samples/embedder.jsonl"),
                about: "a tiny deterministic bag-of-words hash embedding, of dimension \
                        `dimension` from the config (64 by default)."
                    .into(),
                expect: "`out.jsonl` has the three chunks, each with a `vector` of 64 \
                         numbers (the `dimension` in `pipeline.toml`), of length 1."
                    .into(),
            },
            StageKind::Retriever => KindInfo {
                format: "question",
                format_doc: "questions {\"id\", \"text\"}, here carrying the `vector` an \
                             embedder would have made",
                config: "# The tenant's index to search: <--data-dir>/index/<tenant>/kb\n\
                         index = \"kb\"\n\
                         config = { k = 3 }"
                    .into(),
                sample: include_str!("../../templates/samples/retriever.jsonl"),
                about: "it asks the host's vector index (`index.search`) for the `k` chunks \
                        nearest to the question's vector."
                    .into(),
                expect: "the index `kb` under `--data-dir` (`.weft/data` by default) is \
                         created empty on first use, so the three questions come out in \
                         `out.jsonl` with no `hits`; that shows the component builds, links \
                         `index` and is called. Fill the index with a pipeline whose `[sink]` \
                         is `index = \"kb\"` (same tenant) and the questions come out with \
                         their nearest chunks."
                    .into(),
            },
            StageKind::PromptBuilder => KindInfo {
                format: "question",
                format_doc: QUESTIONS,
                config: "# config = { system = \"You answer from the context only.\" }".into(),
                sample: include_str!("../../templates/samples/questions.jsonl"),
                about: "a system message, then a user message with the hits as numbered \
                        context (`[1]`, `[2]`, ...) and the question."
                    .into(),
                expect: "`out.jsonl` has the three questions, each with `messages`: the \
                         system message, then the user message with the hits numbered \
                         `[1] (doc <id>) ...` and the question (`q3` has no hits: \
                         `(no context was found)`)."
                    .into(),
            },
            StageKind::Generator => KindInfo {
                format: "question",
                format_doc: QUESTIONS,
                config: String::new(),
                sample: include_str!("../../templates/samples/questions.jsonl"),
                about: "no model: it answers with the text of the best hit, cited as `[n]`.".into(),
                expect: "`out.jsonl` has three answers: `q1` and `q2` quote their best hit, \
                         with `[n]` in the text and the hit in `citations`; `q3`, without \
                         hits, says it does not know."
                    .into(),
            },
        }
    }
}

/// The component's path relative to the project, as pipeline.toml names it.
fn component_path(lang: Lang, name: &str) -> String {
    match lang {
        Lang::Rust => format!("target/{RUST_OUT}/{}.wasm", name.replace('-', "_")),
        Lang::Python | Lang::Js => format!("build/{name}.wasm"),
    }
}

/// Replaces every `{{key}}` in `template`.
fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(template.to_string(), |t, (k, v)| {
        t.replace(&format!("{{{{{k}}}}}"), v)
    })
}

/// Every file of a new project, as (relative path, contents).
fn project_files(kind: StageKind, name: &str, lang: Lang) -> Result<Vec<(String, String)>> {
    let source = source_template(kind, lang)?;
    let info = KindInfo::of(kind, name);
    let component = component_path(lang, name);
    let vars = [
        ("name", name),
        ("kind", kind.as_str()),
        ("world", kind.world()),
        ("component", component.as_str()),
    ];
    let (build, files_doc) = match lang {
        Lang::Rust => (
            "It runs `cargo build --release --target wasm32-wasip2`, which works as well \
             on its own (it needs the target: `rustup target add wasm32-wasip2`). `cargo \
             test` runs the unit tests natively.",
            "- `src/lib.rs`: the plugin: plain-Rust logic, the bindings \
             (`wit_bindgen::generate!`, compiled only for wasm) and unit tests.\n\
             - `Cargo.toml`: a standalone `cdylib` crate (its own `[workspace]`), \
             depending on `wit-bindgen = \"0.46\"`.",
        ),
        Lang::Python => (
            "It runs `componentize-py -d wit -w {{world}} componentize app -p . -o \
             {{component}}`, with componentize-py from `$WEFT_COMPONENTIZE_PY`, a weft \
             checkout's `.tools` (`scripts/setup-polyglot` installs it there) or `PATH` \
             (`pip install componentize-py==0.25.1`).",
            "- `app.py`: the plugin; its class is named after the exported interface. \
             The module's top level runs at build time, so it reads the config on the \
             first call.",
        ),
        Lang::Js => (
            "It runs `node build.mjs {{component}}`, which uses componentize-js from \
             `$WEFT_NODE_MODULES`, `./node_modules` (`npm install`; `package.json` pins \
             the versions) or a weft checkout's `.tools` (`scripts/setup-polyglot`).",
            "- `component.js`: the plugin; it exports an object named after the exported \
             interface.\n\
             - `build.mjs`: builds it with componentize-js's JS API.\n\
             - `package.json`: the componentize-js version, for `npm install`.",
        ),
    };
    let readme = fill(
        include_str!("../../templates/common/README.md"),
        &[
            ("lang", lang.title()),
            ("about", &info.about),
            ("build", build),
            ("expect", &info.expect),
            ("files", files_doc),
        ],
    );
    let mut files = vec![
        ("wit/weft.wit".to_string(), WIT.to_string()),
        (
            PROJECT_FILE.to_string(),
            format!(
                "# What this plugin project is, for `weft plugin build`.\n\
                 name = \"{name}\"\nkind = \"{kind}\"\nlang = \"{}\"\n",
                lang.as_str()
            ),
        ),
        (
            "pipeline.toml".to_string(),
            pipeline_toml(kind, name, &component, &info),
        ),
        ("sample.jsonl".to_string(), info.sample.to_string()),
        ("README.md".to_string(), fill(&readme, &vars)),
        (
            ".gitignore".to_string(),
            include_str!("../../templates/common/gitignore").to_string(),
        ),
    ];
    let source = fill(source, &vars);
    match lang {
        Lang::Rust => {
            files.push((
                "Cargo.toml".into(),
                fill(include_str!("../../templates/rust/Cargo.toml.tmpl"), &vars),
            ));
            files.push(("src/lib.rs".into(), source));
        }
        Lang::Python => files.push(("app.py".into(), source)),
        Lang::Js => {
            files.push(("component.js".into(), source));
            files.push((
                "build.mjs".into(),
                fill(include_str!("../../templates/js/build.mjs"), &vars),
            ));
            files.push((
                "package.json".into(),
                fill(include_str!("../../templates/js/package.json.tmpl"), &vars),
            ));
        }
    }
    Ok(files)
}

/// A manifest running just this stage over sample.jsonl.
fn pipeline_toml(kind: StageKind, name: &str, component: &str, info: &KindInfo) -> String {
    let config = if info.config.is_empty() {
        String::new()
    } else {
        format!("{}\n", info.config)
    };
    format!(
        "# A pipeline of just the `{name}` stage, over sample.jsonl:\n\
         #\n\
         #   weft plugin build .\n\
         #   weft run pipeline.toml --input sample.jsonl --output out.jsonl\n\
         #\n\
         # Outputs go to out.jsonl, failed records to out.dead-letters.jsonl.\n\
         name = \"{name}\"\n\
         \n\
         [source]\n\
         topic = \"in\"\n\
         # Input lines: {format_doc}.\n\
         format = \"{format}\"\n\
         \n\
         [[stage]]\n\
         name = \"{kind}\"\n\
         kind = \"{kind}\"\n\
         # The built component, relative to this file.\n\
         plugin = \"{component}\"\n\
         {config}\
         \n\
         [sink]\n\
         topic = \"out\"\n",
        format_doc = info.format_doc,
        format = info.format,
    )
}

// --- weft plugin build --------------------------------------------------------

/// `weft-plugin.toml`.
#[derive(Deserialize)]
struct ProjectFile {
    name: String,
    kind: StageKind,
    lang: Lang,
}

/// A project to build.
pub(crate) struct Project {
    /// Absolute.
    pub(crate) dir: PathBuf,
    name: String,
    /// Known from weft-plugin.toml or the Python source; Rust and JavaScript
    /// projects name their world in their own sources.
    kind: Option<StageKind>,
    pub(crate) lang: Lang,
    /// Whether it has weft-plugin.toml, i.e. came from `weft plugin new`.
    scaffolded: bool,
}

impl Project {
    /// Reads weft-plugin.toml, or else tells the language by its files:
    /// Cargo.toml (Rust), app.py (Python), package.json (JavaScript).
    pub(crate) fn detect(dir: &Path) -> Result<Project> {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot open plugin project {}", display_path(dir)))?;
        if !dir.is_dir() {
            bail!("{} is not a directory", display_path(&dir));
        }
        let pf = dir.join(PROJECT_FILE);
        if pf.is_file() {
            let text = std::fs::read_to_string(&pf)
                .with_context(|| format!("reading {}", display_path(&pf)))?;
            let p: ProjectFile = toml::from_str(&text).with_context(|| {
                format!(
                    "{}: expected `name`, `kind` (chunker, embedder, retriever, \
                     prompt-builder, generator or transform) and `lang` (rust, python or js)",
                    display_path(&pf)
                )
            })?;
            return Ok(Project {
                dir,
                name: p.name,
                kind: Some(p.kind),
                lang: p.lang,
                scaffolded: true,
            });
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin".into());
        let (lang, kind) = if dir.join("Cargo.toml").is_file() {
            (Lang::Rust, None)
        } else if dir.join("app.py").is_file() {
            (Lang::Python, python_kind(&dir.join("app.py"))?)
        } else if dir.join("package.json").is_file() {
            (Lang::Js, None)
        } else {
            bail!(
                "{} is not a plugin project: it has no {PROJECT_FILE}, Cargo.toml, app.py or \
                 package.json (`weft plugin new` starts one)",
                display_path(&dir)
            );
        };
        Ok(Project {
            dir,
            name,
            kind,
            lang,
            scaffolded: false,
        })
    }

    /// The stage kind, needed to pick the world for Python.
    fn kind(&self) -> Result<StageKind> {
        self.kind.ok_or_else(|| {
            anyhow!(
                "cannot tell the stage kind of {}: add {PROJECT_FILE} with `name`, `kind` and `lang`",
                display_path(&self.dir)
            )
        })
    }
}

/// The kind of a Python plugin without weft-plugin.toml, from the class that
/// implements the exported interface (`class Chunk(exports.Chunk)`).
fn python_kind(app: &Path) -> Result<Option<StageKind>> {
    let text =
        std::fs::read_to_string(app).with_context(|| format!("reading {}", display_path(app)))?;
    for line in text.lines() {
        let Some(rest) = line.trim_start().strip_prefix("class ") else {
            continue;
        };
        let Some((_, base)) = rest.split_once("(exports.") else {
            continue;
        };
        let iface = base.split(')').next().unwrap_or_default().trim();
        let kind = match iface {
            "Chunk" => StageKind::Chunker,
            "Embed" => StageKind::Embedder,
            "Retrieve" => StageKind::Retriever,
            "Prompt" => StageKind::PromptBuilder,
            "Generate" => StageKind::Generator,
            "Transform" => StageKind::Transform,
            _ => continue,
        };
        return Ok(Some(kind));
    }
    Ok(None)
}

/// Where a build left the component.
pub(crate) struct Built {
    /// Where pipeline.toml looks (for a Rust crate not from `weft plugin
    /// new`, where cargo put it).
    pub(crate) component: PathBuf,
    /// Where the toolchain wrote it, when it was copied from elsewhere.
    pub(crate) copied_from: Option<PathBuf>,
}

const INSTALL_RUST: &str =
    "install Rust with rustup (https://rustup.rs), then `rustup target add wasm32-wasip2`";

/// Builds a project with its language's toolchain.
pub(crate) fn build(p: &Project) -> Result<Built> {
    match p.lang {
        Lang::Rust => build_rust(p),
        Lang::Python => build_python(p),
        Lang::Js => build_js(p),
    }
}

fn build_rust(p: &Project) -> Result<Built> {
    let manifest = p.dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!("{} has no Cargo.toml", display_path(&p.dir));
    }
    let cargo: OsString = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Where cargo will put the output, with CARGO_TARGET_DIR and cargo config
    // taken into account, and the library's name.
    let out = Command::new(&cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(&manifest)
        .current_dir(&p.dir)
        .output()
        .map_err(|e| tool_error(e, "cargo", INSTALL_RUST))?;
    if !out.status.success() {
        bail!(
            "`cargo metadata` failed for {}:\n{}",
            display_path(&manifest),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading `cargo metadata` output")?;
    let target_dir = meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("`cargo metadata` gave no target_directory")?;
    let lib = cdylib_name(&meta, &manifest)?;
    check_wasm_target(&p.dir)?;

    eprintln!("building {} with cargo (wasm32-wasip2, release)", p.name);
    let status = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(&manifest)
        .current_dir(&p.dir)
        .status()
        .map_err(|e| tool_error(e, "cargo", INSTALL_RUST))?;
    if !status.success() {
        bail!("cargo build failed ({status}); its errors are above");
    }
    let wasm = format!("{lib}.wasm");
    let built = target_dir.join(RUST_OUT).join(&wasm);
    if !built.is_file() {
        bail!(
            "cargo build succeeded but {} is missing",
            display_path(&built)
        );
    }
    let component = p.dir.join("target").join(RUST_OUT).join(&wasm);
    // Only a project from `weft plugin new` has a pipeline.toml that expects
    // the component there; leave any other crate's directory alone.
    if !p.scaffolded || same_file(&built, &component) {
        return Ok(Built {
            component: built,
            copied_from: None,
        });
    }
    if let Some(d) = component.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", display_path(d)))?;
    }
    std::fs::copy(&built, &component).with_context(|| {
        format!(
            "copying {} to {}",
            display_path(&built),
            display_path(&component)
        )
    })?;
    Ok(Built {
        component,
        copied_from: Some(built),
    })
}

/// The library name of the package at `manifest` in `cargo metadata` output,
/// which must be a `cdylib`.
fn cdylib_name(meta: &serde_json::Value, manifest: &Path) -> Result<String> {
    let packages = meta["packages"].as_array().cloned().unwrap_or_default();
    let ours = packages
        .iter()
        .find(|pkg| {
            pkg["manifest_path"]
                .as_str()
                .and_then(|m| Path::new(m).canonicalize().ok())
                .is_some_and(|m| same_file(&m, manifest))
        })
        .or(packages.first())
        .context("`cargo metadata` lists no package")?;
    let targets = ours["targets"].as_array().cloned().unwrap_or_default();
    targets
        .iter()
        .find(|t| {
            t["crate_types"]
                .as_array()
                .is_some_and(|ts| ts.iter().any(|c| c == "cdylib"))
        })
        .and_then(|t| t["name"].as_str())
        .map(|n| n.replace('-', "_"))
        .with_context(|| {
            format!(
                "{} builds no cdylib: a weft plugin needs `[lib] crate-type = [\"cdylib\"]`",
                display_path(manifest)
            )
        })
}

/// Fails with the command to run when rustc lacks the wasm32-wasip2 target.
fn check_wasm_target(dir: &Path) -> Result<()> {
    let rustc: OsString = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .current_dir(dir)
        .output()
        .map_err(|e| tool_error(e, "rustc", INSTALL_RUST))?;
    if !out.status.success() {
        bail!(
            "this Rust cannot target wasm32-wasip2 (Rust 1.82 or later can): run `rustup \
             update`, then `rustup target add wasm32-wasip2`\nrustc said: {}",
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    let libdir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !Path::new(&libdir).is_dir() {
        bail!(
            "the Rust target wasm32-wasip2 is not installed: run `rustup target add wasm32-wasip2`"
        );
    }
    Ok(())
}

fn build_python(p: &Project) -> Result<Built> {
    let kind = p.kind()?;
    for needed in ["app.py", "wit"] {
        if !p.dir.join(needed).exists() {
            bail!("{} has no {needed}", display_path(&p.dir));
        }
    }
    let exe = find_componentize_py(&p.dir)?;
    let component = p.dir.join(component_path(Lang::Python, &p.name));
    let tmp = prepare_output(&component)?;
    eprintln!(
        "building {} with {} (world `{}`)",
        p.name,
        display_path(&exe),
        kind.world()
    );
    let status = Command::new(&exe)
        .args([
            "-d",
            "wit",
            "-w",
            kind.world(),
            "componentize",
            "app",
            "-p",
            ".",
            "-o",
        ])
        .arg(&tmp)
        .current_dir(&p.dir)
        .status()
        .with_context(|| format!("running {}", display_path(&exe)))?;
    finish_output(status.success(), "componentize-py", &tmp, &component)?;
    Ok(Built {
        component,
        copied_from: None,
    })
}

fn build_js(p: &Project) -> Result<Built> {
    if !p.dir.join("build.mjs").is_file() {
        bail!(
            "{} has no build.mjs (the build script `weft plugin new` writes for JavaScript)",
            display_path(&p.dir)
        );
    }
    let node = find_in_path("node").context(
        "node (Node.js 18 or later) not found in PATH: install Node.js, e.g. `apt-get install \
         nodejs npm`, then run scripts/setup-polyglot in a weft checkout or `npm install` here",
    )?;
    let modules = find_node_modules(&p.dir)?;
    let component = p.dir.join(component_path(Lang::Js, &p.name));
    let tmp = prepare_output(&component)?;
    eprintln!(
        "building {} with componentize-js from {}",
        p.name,
        display_path(&modules)
    );
    let status = Command::new(&node)
        .arg("build.mjs")
        .arg(&tmp)
        .env("WEFT_NODE_MODULES", &modules)
        .current_dir(&p.dir)
        .status()
        .with_context(|| format!("running {}", display_path(&node)))?;
    finish_output(status.success(), "componentize-js", &tmp, &component)?;
    Ok(Built {
        component,
        copied_from: None,
    })
}

/// Makes the component's directory; returns the temporary path to build to,
/// so a failed build never leaves a half-written component behind.
fn prepare_output(component: &Path) -> Result<PathBuf> {
    if let Some(d) = component.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", display_path(d)))?;
    }
    Ok(component.with_extension("wasm.tmp"))
}

fn finish_output(ok: bool, tool: &str, tmp: &Path, component: &Path) -> Result<()> {
    if !ok || !tmp.is_file() {
        let _ = std::fs::remove_file(tmp);
        bail!("{tool} failed; its errors are above");
    }
    std::fs::rename(tmp, component).with_context(|| {
        format!(
            "moving {} to {}",
            display_path(tmp),
            display_path(component)
        )
    })
}

/// `.tools` directories of weft checkouts (scripts/setup-polyglot), nearest
/// first: at the project and its ancestors, beside the weft binary and its
/// ancestors, and in the checkout this binary was built from.
fn tools_dirs(project: &Path) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = project.ancestors().map(Path::to_path_buf).collect();
    if let Ok(exe) = std::env::current_exe().and_then(|e| e.canonicalize()) {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    if let Some(checkout) = Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
        roots.push(checkout.to_path_buf());
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for r in roots {
        let t = r.join(".tools");
        if let Ok(t) = t.canonicalize() {
            if t.is_dir() && !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

fn find_componentize_py(project: &Path) -> Result<PathBuf> {
    if let Some(v) = std::env::var_os("WEFT_COMPONENTIZE_PY") {
        let p = PathBuf::from(v);
        if is_executable(&p) {
            return Ok(p);
        }
        bail!(
            "WEFT_COMPONENTIZE_PY is {}, which is not an executable file",
            p.display()
        );
    }
    let mut looked = vec!["$WEFT_COMPONENTIZE_PY (unset)".to_string()];
    for t in tools_dirs(project) {
        let p = t.join("py/bin/componentize-py");
        if is_executable(&p) {
            return Ok(p);
        }
        looked.push(display_path(&p));
    }
    if let Some(p) = find_in_path("componentize-py") {
        return Ok(p);
    }
    looked.push("PATH".into());
    bail!(
        "componentize-py not found (looked at {}): run scripts/setup-polyglot in a weft \
         checkout (it installs componentize-py 0.25.1 into .tools/py), or `pip install \
         componentize-py==0.25.1`, or set WEFT_COMPONENTIZE_PY to its path",
        looked.join(", ")
    )
}

/// A node_modules directory with componentize-js and the preview2-shim it loads.
fn find_node_modules(project: &Path) -> Result<PathBuf> {
    let has = |d: &Path| {
        d.join("@bytecodealliance/componentize-js").is_dir()
            && d.join("@bytecodealliance/preview2-shim").is_dir()
    };
    if let Some(v) = std::env::var_os("WEFT_NODE_MODULES") {
        let p = PathBuf::from(v);
        if has(&p) {
            return Ok(p);
        }
        bail!(
            "WEFT_NODE_MODULES is {}, which lacks @bytecodealliance/componentize-js or \
             @bytecodealliance/preview2-shim",
            p.display()
        );
    }
    let mut candidates = vec![project.join("node_modules")];
    candidates.extend(
        tools_dirs(project)
            .iter()
            .map(|t| t.join("js/node_modules")),
    );
    if let Some(found) = candidates.iter().find(|d| has(d)) {
        return Ok(found.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|d| display_path(d)).collect();
    bail!(
        "componentize-js not found (looked in $WEFT_NODE_MODULES (unset), {}): run `npm \
         install` in {} (package.json pins componentize-js 0.23.0), or scripts/setup-polyglot \
         in a weft checkout (it installs into .tools/js), or set WEFT_NODE_MODULES to a \
         node_modules directory that has it",
        looked.join(", "),
        display_path(project)
    )
}

/// An executable called `name` in PATH.
fn find_in_path(name: &str) -> Option<PathBuf> {
    which::which(name).ok()
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// A path as a person would type it (relative to the current directory when
/// under it), `.` for the current directory itself.
pub(crate) fn display_path(p: &Path) -> String {
    let shown = weft::manifest::display_path(p);
    if shown.is_empty() {
        ".".to_string()
    } else {
        shown
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A failure to start a tool, saying how to install it when it is missing.
fn tool_error(e: std::io::Error, tool: &str, install: &str) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow!("{tool} not found: {install}")
    } else {
        anyhow!("running {tool}: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LANGS: [Lang; 3] = [Lang::Rust, Lang::Python, Lang::Js];

    #[test]
    fn every_template_is_filled_and_its_pipeline_parses() {
        let mut made = 0;
        for lang in LANGS {
            for kind in StageKind::ALL {
                let Ok(files) = project_files(kind, "my-plugin", lang) else {
                    assert_ne!(lang, Lang::Rust, "Rust has every kind");
                    continue;
                };
                made += 1;
                for (path, text) in &files {
                    assert!(
                        !text.contains("{{"),
                        "{lang:?} {kind}: {path} has a placeholder"
                    );
                }
                let get = |p: &str| &files.iter().find(|(f, _)| f == p).expect(p).1;
                let raw: weft::manifest::RawManifest =
                    toml::from_str(get("pipeline.toml")).expect("pipeline.toml parses");
                assert_eq!(*raw.stages[0].kind.get_ref(), kind);
                assert_eq!(
                    raw.stages[0].plugin.get_ref(),
                    &component_path(lang, "my-plugin")
                );
                let pf: ProjectFile = toml::from_str(get(PROJECT_FILE)).expect("project file");
                assert_eq!((pf.kind, pf.lang), (kind, lang));
                assert_eq!(get("sample.jsonl").lines().count(), 3);
            }
        }
        assert_eq!(made, 6 + 3 + 3);
    }

    #[test]
    fn kinds_and_names() {
        assert_eq!(parse_kind("transformer").ok(), Some(StageKind::Transform));
        assert_eq!(
            parse_kind("prompt-builder").ok(),
            Some(StageKind::PromptBuilder)
        );
        let e = parse_kind("summariser").unwrap_err().to_string();
        assert!(e.contains("unknown stage kind `summariser`"), "{e}");
        assert!(check_name("my-plugin_2", Lang::Rust).is_ok());
        let long = "x".repeat(65);
        for bad in ["", "2x", "My", "a b", "a/b", &long] {
            assert!(check_name(bad, Lang::Python).is_err(), "{bad}");
        }
        assert!(check_name("test", Lang::Rust).is_err());
        assert!(check_name("test", Lang::Js).is_ok());
        let e = project_files(StageKind::Embedder, "e", Lang::Python).unwrap_err();
        assert!(e.to_string().contains("use --lang rust"), "{e}");
    }

    #[test]
    fn python_kind_from_the_class() {
        let dir = std::env::temp_dir().join(format!("weft-scaffold-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let app = dir.join("app.py");
        std::fs::write(
            &app,
            "import x\n\nclass Prompt(exports.Prompt):\n    pass\n",
        )
        .unwrap();
        assert_eq!(python_kind(&app).unwrap(), Some(StageKind::PromptBuilder));
        std::fs::write(&app, "class Helper:\n    pass\n").unwrap();
        assert_eq!(python_kind(&app).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
