//! Pipeline manifests: parse TOML, validate, and report every problem with
//! `file:line:column` so a person can jump straight to it.
//!
//! Parsing is two-phase on purpose: serde (with `deny_unknown_fields` and
//! `Spanned` values) catches shape errors with their exact span, then
//! [`Manifest::validate`] checks the meaning (duplicate names, missing plugin
//! files, stage order) and collects *all* problems rather than stopping at the
//! first, like a compiler.

use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem found in a manifest, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Every problem found in one manifest.
#[derive(Debug, thiserror::Error)]
pub struct ManifestError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// The kind of a stage decides which WIT world its component must implement
/// and which payloads it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageKind {
    Chunker,
    Embedder,
    Retriever,
    PromptBuilder,
    Generator,
    Transform,
}

impl StageKind {
    /// Every interface a plugin of this kind may export: the first is
    /// [`StageKind::export_interface`]; a chunker may return spans instead.
    pub fn export_interfaces(self) -> &'static [&'static str] {
        match self {
            StageKind::Chunker => &["weft:plugin/chunk", "weft:plugin/chunk-spans"],
            StageKind::Embedder => &["weft:plugin/embed"],
            StageKind::Retriever => &["weft:plugin/retrieve"],
            StageKind::PromptBuilder => &["weft:plugin/prompt"],
            StageKind::Generator => &["weft:plugin/generate"],
            StageKind::Transform => &["weft:plugin/transform"],
        }
    }

    /// The WIT interface the component normally exports (the one named in
    /// errors and scaffolds).
    pub fn export_interface(self) -> &'static str {
        self.export_interfaces()[0]
    }

    /// The WIT world name a plugin author targets.
    pub fn world(self) -> &'static str {
        match self {
            StageKind::Chunker => "chunker",
            StageKind::Embedder => "embedder",
            StageKind::Retriever => "retriever",
            StageKind::PromptBuilder => "prompt-builder",
            StageKind::Generator => "generator",
            StageKind::Transform => "transformer",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Chunker => "chunker",
            StageKind::Embedder => "embedder",
            StageKind::Retriever => "retriever",
            StageKind::PromptBuilder => "prompt-builder",
            StageKind::Generator => "generator",
            StageKind::Transform => "transform",
        }
    }

    pub const ALL: [StageKind; 6] = [
        StageKind::Chunker,
        StageKind::Embedder,
        StageKind::Retriever,
        StageKind::PromptBuilder,
        StageKind::Generator,
        StageKind::Transform,
    ];
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the source's record values are decoded before the first stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// JSON documents `{"id", "text", "title"?, "metadata"?}`.
    Document,
    /// JSON questions `{"id", "text", "metadata"?}`.
    Question,
    /// Opaque bytes, for transform-only pipelines.
    #[default]
    Record,
}

/// The raw manifest as written, with spans kept for error messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManifest {
    pub name: Spanned<String>,
    #[serde(default)]
    pub tenant: Option<Spanned<String>>,
    #[serde(default)]
    pub description: Option<String>,
    pub source: RawSource,
    #[serde(default, rename = "stage")]
    pub stages: Vec<RawStage>,
    pub sink: RawSink,
    #[serde(default)]
    pub dead_letter: Option<RawDeadLetter>,
    #[serde(default)]
    pub batch: Option<RawBatch>,
    /// Tables the pipeline's plugins may look up (`[[table]]`).
    #[serde(default, rename = "table")]
    pub tables: Vec<RawTable>,
}

/// `[[table]] name = "customers" topic = "customers" key = "id"`: the latest
/// value per key of a (compacted) topic of the tenant, kept by the host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTable {
    pub name: Spanned<String>,
    pub topic: Spanned<String>,
    /// The JSON field of a value that holds its key, used when a record has
    /// no Kafka key (the Kafka key wins when both are present).
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    /// How long a batch waits for the table to apply what its topic held
    /// when the batch was read (default 2000).
    #[serde(default)]
    pub wait_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub topic: Spanned<String>,
    #[serde(default)]
    pub format: Format,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    #[serde(default)]
    pub topic: Option<Spanned<String>>,
    #[serde(default)]
    pub index: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeadLetter {
    pub topic: Spanned<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch {
    #[serde(default)]
    pub max_records: Option<Spanned<u32>>,
    #[serde(default)]
    pub linger_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    pub name: Spanned<String>,
    pub kind: Spanned<StageKind>,
    pub plugin: Spanned<String>,
    /// Retriever stages: the name of the tenant's index to search.
    #[serde(default)]
    pub index: Option<Spanned<String>>,
    #[serde(default)]
    pub config: Option<Spanned<toml::Table>>,
    #[serde(default)]
    pub limits: Option<RawLimits>,
    #[serde(default)]
    pub grants: Option<RawGrants>,
    /// Instances of the component that share one batch on as many threads.
    #[serde(default)]
    pub parallelism: Option<Spanned<u32>>,
}

/// Per-stage resource limits; every field is optional and has a default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub memory_mb: Option<Spanned<u64>>,
    pub timeout_ms: Option<Spanned<u64>>,
    pub max_output_kb: Option<Spanned<u64>>,
    pub max_outputs: Option<Spanned<u64>>,
}

/// Capabilities a stage asks for. Nothing is granted by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrants {
    /// Outbound HTTP destinations, e.g. `"http://127.0.0.1:8080"` or `"https://api.openai.com"`.
    #[serde(default)]
    pub outbound_hosts: Vec<Spanned<String>>,
    /// Host directories mounted read-only, e.g. `{ host = "models", guest = "/models" }`.
    #[serde(default)]
    pub files: Vec<Spanned<RawFileGrant>>,
    /// Environment variables passed through from the host, by name.
    #[serde(default)]
    pub env: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileGrant {
    pub host: String,
    pub guest: String,
}

/// Defaults chosen so a plain plugin runs comfortably and a runaway one is
/// stopped quickly.
pub const DEFAULT_MEMORY_MB: u64 = 128;
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_MAX_OUTPUT_KB: u64 = 4_096;
/// Records one input may turn into (a 10 MB document cut into 600-character
/// chunks makes about 17k; a million empty records is an attack).
pub const DEFAULT_MAX_OUTPUTS: u64 = 20_000;
pub const DEFAULT_BATCH_RECORDS: u32 = 256;

/// Effective limits of one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub timeout_ms: u64,
    pub max_output_bytes: u64,
    /// Records one input may produce at this stage.
    pub max_outputs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: DEFAULT_MEMORY_MB << 20,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            max_output_bytes: DEFAULT_MAX_OUTPUT_KB << 10,
            max_outputs: DEFAULT_MAX_OUTPUTS,
        }
    }
}

/// A granted outbound HTTP destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGrant {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

impl HostGrant {
    /// Parses `scheme://host[:port]`; the port defaults by scheme, and the
    /// host is kept canonical ([`crate::net::canonical_host`]).
    pub fn parse(s: &str) -> Result<HostGrant, String> {
        let url = url::Url::parse(s).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
        let scheme = url.scheme().to_string();
        if scheme != "http" && scheme != "https" {
            return Err(format!("`{s}`: only http and https are supported"));
        }
        let host =
            crate::net::canonical_host(url.host_str().ok_or_else(|| format!("`{s}` has no host"))?);
        if host.is_empty() || host.contains('*') {
            return Err(format!(
                "`{s}`: grant one exact host (no wildcards: a wildcard DNS name can point anywhere)"
            ));
        }
        if url.path() != "/" && !url.path().is_empty() {
            return Err(format!(
                "`{s}`: grant a host, not a path (use `{scheme}://{host}`)"
            ));
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("`{s}` has no port"))?;
        Ok(HostGrant { scheme, host, port })
    }
}

/// Effective grants of one stage, after validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub outbound_hosts: Vec<HostGrant>,
    /// (absolute host dir, guest path), mounted read-only.
    pub files: Vec<(PathBuf, String)>,
    pub env: Vec<String>,
}

/// A validated stage.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub kind: StageKind,
    /// Absolute path of the component file.
    pub plugin: PathBuf,
    /// The `config` table flattened to `key -> string`.
    pub config: BTreeMap<String, String>,
    pub limits: Limits,
    pub grants: Grants,
    /// The tenant's index a retriever searches.
    pub index: Option<String>,
    /// Instances that split each batch between them, on as many threads
    /// (1: one instance).
    pub parallelism: u32,
    /// Where the stage is declared, for runtime errors that point back at it.
    pub location: Diagnostic,
}

/// Most instances one stage may run side by side.
pub const MAX_PARALLELISM: u32 = 64;

/// A validated `[[table]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDecl {
    pub name: String,
    /// The full topic name (`<tenant>.<topic>`).
    pub topic: String,
    /// See [`RawTable::key`].
    pub key_field: Option<String>,
    pub wait_ms: u64,
}

/// Default of [`TableDecl::wait_ms`]: long enough for a table follower to
/// apply a burst of updates, short enough that a stuck table topic delays a
/// batch only briefly (the batch then runs and the lag is reported).
pub const DEFAULT_TABLE_WAIT_MS: u64 = 2_000;

/// A validated pipeline manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub file: PathBuf,
    pub name: String,
    pub tenant: String,
    pub description: Option<String>,
    pub source_topic: String,
    pub format: Format,
    pub stages: Vec<Stage>,
    pub sink_topic: Option<String>,
    pub sink_index: Option<String>,
    pub dead_letter_topic: String,
    pub batch_records: u32,
    pub linger_ms: u64,
    /// Tables the stages may look up, in declaration order.
    pub tables: Vec<TableDecl>,
}

/// Where plugins named without a path are looked up.
#[derive(Debug, Clone, Default)]
pub struct PluginPath {
    pub dirs: Vec<PathBuf>,
}

impl PluginPath {
    /// `WEFT_PLUGIN_PATH` (colon separated), then `target/plugins` under the
    /// current directory and under every ancestor of the manifest, so that
    /// manifests in this repository work from anywhere inside it, then the
    /// `plugins` directory beside a development build's `target/<profile>/`.
    pub fn from_env(manifest_dir: &Path) -> PluginPath {
        let mut dirs = Vec::new();
        if let Ok(p) = std::env::var("WEFT_PLUGIN_PATH") {
            dirs.extend(p.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
        }
        if let Ok(cwd) = std::env::current_dir() {
            dirs.push(cwd.join("target/plugins"));
        }
        for anc in manifest_dir.ancestors() {
            let d = anc.join("target/plugins");
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        // Next to a development build of weft: target/<profile>/weft -> target/plugins.
        if let Some(d) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent()?.parent().map(|t| t.join("plugins")))
        {
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        PluginPath { dirs }
    }

    /// Resolves a plugin reference: a path (contains `/` or ends in `.wasm`,
    /// relative to the manifest) or a bare name looked up as `<dir>/<name>.wasm`.
    pub fn resolve(&self, manifest_dir: &Path, reference: &str) -> Result<PathBuf, String> {
        if reference.contains('/') || reference.ends_with(".wasm") {
            let p = manifest_dir.join(reference);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(format!("plugin file `{}` does not exist", display_path(&p)))
            };
        }
        let file = format!("{}.wasm", reference.replace('-', "_"));
        for d in &self.dirs {
            let p = d.join(&file);
            if p.is_file() {
                return Ok(p);
            }
        }
        let looked: Vec<String> = self.dirs.iter().map(|d| display_path(d)).collect();
        Err(format!(
            "plugin `{reference}` not found (looked for {file} in: {}); build the reference plugins with `scripts/build-plugins` or give a path to a .wasm file",
            looked.join(", ")
        ))
    }
}

/// A path as a person would type it: relative to the current directory when
/// it is under it, without `./` segments; absolute otherwise.
pub fn display_path(p: &Path) -> String {
    let clean: PathBuf = p
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    if let Ok(cwd) = std::env::current_dir() {
        if let Ok(rel) = clean.strip_prefix(&cwd) {
            return rel.display().to_string();
        }
    }
    clean.display().to_string()
}

/// For a type error whose span is a value, the key it was assigned to
/// (`timeout_ms = "fast"` -> `timeout_ms`), so the message can name it.
fn key_before(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let eq = line.rfind('=')?;
    let key: String = line[..eq]
        .trim_end()
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-' || *c == '.')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    (!key.is_empty()).then_some(key)
}

/// Converts a byte offset to 1-based (line, column), counting columns in characters.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

struct Reporter<'a> {
    file: &'a Path,
    text: &'a str,
    diagnostics: Vec<Diagnostic>,
}

impl Reporter<'_> {
    fn at(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        let (line, column) = line_col(self.text, span.start);
        Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.at(span, message);
        self.diagnostics.push(d);
    }
}

/// Names of tenants, pipelines, stages and topics: short, portable, no dots
/// in the tenant (the dot separates tenant and topic in `<tenant>.<topic>`).
pub fn check_name(what: &str, name: &str, allow_dot: bool) -> Result<(), String> {
    if name.is_empty() || name.len() > 100 {
        return Err(format!("{what} must be 1 to 100 characters, got `{name}`"));
    }
    let ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || (allow_dot && c == '.'));
    if !ok {
        return Err(format!(
            "{what} `{name}` may only contain ASCII letters, digits, `-`, `_`{}",
            if allow_dot { " and `.`" } else { "" }
        ));
    }
    Ok(())
}

/// A tenant name: a [`check_name`] without `_`. Kafka treats `.` and `_` in
/// topic names as the same character (metric names), so with `_` allowed,
/// tenant `a_b`'s topic `a_b.in` would collide with tenant `a`'s `a.b.in`.
pub fn check_tenant_name(name: &str) -> Result<(), String> {
    check_name("tenant", name, false)?;
    if name.contains('_') {
        return Err(format!(
            "tenant `{name}` may not contain `_`: Kafka treats `.` and `_` in topic names alike, so its topics could collide with another tenant's (use `-`)"
        ));
    }
    Ok(())
}

/// The part of a topic name after `<tenant>.`: dot-separated names, no
/// empty segment (`a..b`, a trailing dot), at most 200 characters, so
/// prefixes cannot be confused.
fn check_topic_rest(rest: &str) -> Result<(), String> {
    if rest.len() > 200 {
        return Err("longer than 200 characters".into());
    }
    for seg in rest.split('.') {
        if seg.is_empty() {
            return Err("empty name between dots (`..`, or a leading or trailing dot)".into());
        }
        check_name("topic name segment", seg, false)?;
    }
    Ok(())
}

/// Flattens a TOML table to `a.b.c -> value` strings: strings stay as they are,
/// everything else becomes its JSON text, which every plugin language can parse.
fn flatten_config(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten_config(&key, t, out),
            toml::Value::String(s) => {
                out.insert(key, s.clone());
            }
            other => {
                let json = serde_json::to_string(other).unwrap_or_else(|_| other.to_string());
                out.insert(key, json);
            }
        }
    }
}

impl Manifest {
    /// Where a question pipeline's generator streams its answers piece by
    /// piece: `<answers topic>.deltas` (see `runtime::deltas`). `None` for
    /// a pipeline with no generator or no sink topic.
    pub fn deltas_topic(&self) -> Option<String> {
        let generates = self.format == Format::Question
            && self.stages.iter().any(|s| s.kind == StageKind::Generator);
        match &self.sink_topic {
            Some(t) if generates => Some(format!("{t}.deltas")),
            _ => None,
        }
    }

    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        Manifest::load_in(path, None)
    }

    /// Reads and validates a manifest file that belongs to `tenant` (the
    /// tenant directory it lives in, under `weft serve --tenants`): its
    /// tenant is that one, and a `tenant =` key naming another is refused,
    /// so a manifest cannot claim another tenant's topics or indexes.
    pub fn load_in(path: &Path, tenant: Option<&str>) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
            diagnostics: vec![Diagnostic {
                file: path.to_path_buf(),
                line: 0,
                column: 0,
                message: format!("cannot read manifest: {e}"),
            }],
        })?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let plugins = PluginPath::from_env(&dir.canonicalize().unwrap_or_else(|_| dir.clone()));
        Manifest::parse_in(path, &text, &plugins, tenant)
    }

    /// Parses and validates manifest `text` that was read from `file`.
    pub fn parse(file: &Path, text: &str, plugins: &PluginPath) -> Result<Manifest, ManifestError> {
        Manifest::parse_in(file, text, plugins, None)
    }

    /// [`Manifest::parse`] for a manifest owned by `owner` (see [`Manifest::load_in`]).
    pub fn parse_in(
        file: &Path,
        text: &str,
        plugins: &PluginPath,
        owner: Option<&str>,
    ) -> Result<Manifest, ManifestError> {
        let mut r = Reporter {
            file,
            text,
            diagnostics: Vec::new(),
        };
        let raw: RawManifest = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let mut message = e.message().trim().to_string();
                if message.starts_with("invalid type") || message.starts_with("invalid value") {
                    if let Some(key) = key_before(text, span.start) {
                        message = format!("`{key}`: {message}");
                    }
                }
                r.error(span, message);
                return Err(ManifestError {
                    diagnostics: r.diagnostics,
                });
            }
        };
        let dir = file.parent().unwrap_or(Path::new("."));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());

        if let Err(m) = check_name("pipeline name", raw.name.get_ref(), false) {
            r.error(raw.name.span(), m);
        }
        let tenant = match (&raw.tenant, owner) {
            (Some(t), Some(owner)) if t.get_ref() != owner => {
                r.error(
                    t.span(),
                    format!(
                        "tenant `{}` disagrees with the directory: this manifest lives in tenant `{owner}`'s directory, so it runs as `{owner}` (remove the `tenant` key or move the file)",
                        t.get_ref()
                    ),
                );
                owner.to_string()
            }
            (_, Some(owner)) => owner.to_string(),
            (Some(t), None) => {
                if let Err(m) = check_tenant_name(t.get_ref()) {
                    r.error(t.span(), m);
                }
                t.get_ref().clone()
            }
            (None, None) => "default".to_string(),
        };
        let topic_of = |r: &mut Reporter, t: &Spanned<String>| -> String {
            let name = t.get_ref();
            if let Some((prefix, rest)) = name.split_once('.') {
                // `.in`, `in.`, `b..in`: a malformed name first, so it is
                // not reported as the topic of a tenant called `` or `in`.
                if name.split('.').any(str::is_empty) {
                    r.error(
                        t.span(),
                        format!("topic `{name}`: empty name between dots (`..`, or a leading or trailing dot)"),
                    );
                } else if prefix != tenant {
                    r.error(
                        t.span(),
                        format!(
                            "topic `{name}` belongs to tenant `{prefix}`; this pipeline is tenant `{tenant}` and may only name its own topics (write it without the tenant prefix)"
                        ),
                    );
                } else if let Err(m) = check_topic_rest(rest) {
                    r.error(t.span(), format!("topic `{name}`: {m}"));
                }
                return name.clone();
            }
            if let Err(m) = check_name("topic", name, false) {
                r.error(t.span(), m);
            }
            format!("{tenant}.{name}")
        };
        let source_topic = topic_of(&mut r, &raw.source.topic);
        let sink_topic = raw.sink.topic.as_ref().map(|t| topic_of(&mut r, t));
        let sink_index = raw.sink.index.as_ref().map(|i| {
            if let Err(m) = check_name("index", i.get_ref(), false) {
                r.error(
                    i.span(),
                    format!("[sink] {m} (an index always belongs to the pipeline's tenant)"),
                );
            }
            i.get_ref().clone()
        });
        if sink_topic.is_none() && sink_index.is_none() {
            // The [sink] table exists (serde requires it) but names nothing.
            let at = text.find("[sink]").unwrap_or(0);
            r.error(at..at, "[sink] needs `topic` or `index`");
        }
        let dead_letter_topic = match &raw.dead_letter {
            Some(d) => topic_of(&mut r, &d.topic),
            None => format!("{tenant}.{}.dead-letters", raw.name.get_ref()),
        };
        if raw.stages.is_empty() {
            r.error(0..0, "no stages: add at least one [[stage]]");
        }

        let mut stages = Vec::new();
        let mut seen: BTreeMap<String, Range<usize>> = BTreeMap::new();
        for s in &raw.stages {
            let name = s.name.get_ref().clone();
            if let Err(m) = check_name("stage name", &name, false) {
                r.error(s.name.span(), m);
            }
            if let Some(first) = seen.get(&name) {
                let (l, c) = line_col(text, first.start);
                r.error(
                    s.name.span(),
                    format!("duplicate stage name `{name}` (first defined at {l}:{c})"),
                );
            } else {
                seen.insert(name.clone(), s.name.span());
            }
            let plugin = match plugins.resolve(&dir, s.plugin.get_ref()) {
                Ok(p) => p,
                Err(m) => {
                    r.error(s.plugin.span(), format!("stage `{name}`: {m}"));
                    PathBuf::new()
                }
            };
            let kind = *s.kind.get_ref();
            let index = match (&s.index, kind) {
                (Some(i), StageKind::Retriever) => {
                    if let Err(m) = check_name("index", i.get_ref(), false) {
                        r.error(i.span(), format!("stage `{name}`: {m} (an index always belongs to the pipeline's tenant)"));
                    }
                    Some(i.get_ref().clone())
                }
                (Some(i), _) => {
                    r.error(
                        i.span(),
                        format!("stage `{name}`: `index` is only for retriever stages"),
                    );
                    None
                }
                (None, StageKind::Retriever) => {
                    r.error(
                        s.kind.span(),
                        format!("stage `{name}`: a retriever needs `index = \"<name>\"`, one of this tenant's indexes"),
                    );
                    None
                }
                (None, _) => None,
            };
            let mut config = BTreeMap::new();
            if let Some(c) = &s.config {
                flatten_config("", c.get_ref(), &mut config);
            }
            let mut limits = Limits::default();
            if let Some(l) = &s.limits {
                let mut pos = |v: &Option<Spanned<u64>>, what: &str| -> Option<u64> {
                    let v = v.as_ref()?;
                    if *v.get_ref() == 0 {
                        r.error(
                            v.span(),
                            format!("stage `{name}`: limits.{what} must be > 0"),
                        );
                        return None;
                    }
                    Some(*v.get_ref())
                };
                if let Some(m) = pos(&l.memory_mb, "memory_mb") {
                    limits.memory_bytes = m << 20;
                }
                if let Some(t) = pos(&l.timeout_ms, "timeout_ms") {
                    limits.timeout_ms = t;
                }
                if let Some(o) = pos(&l.max_output_kb, "max_output_kb") {
                    limits.max_output_bytes = o << 10;
                }
                if let Some(o) = pos(&l.max_outputs, "max_outputs") {
                    limits.max_outputs = o;
                }
            }
            let mut grants = Grants::default();
            if let Some(g) = &s.grants {
                for h in &g.outbound_hosts {
                    match HostGrant::parse(h.get_ref()) {
                        Ok(hg) => grants.outbound_hosts.push(hg),
                        Err(m) => r.error(h.span(), format!("stage `{name}`: outbound_hosts: {m}")),
                    }
                }
                for f in &g.files {
                    let fg = f.get_ref();
                    let host = dir.join(&fg.host);
                    match host.canonicalize() {
                        Ok(abs) if abs.is_dir() => {
                            if !fg.guest.starts_with('/') {
                                r.error(
                                    f.span(),
                                    format!(
                                        "stage `{name}`: files: guest path `{}` must be absolute",
                                        fg.guest
                                    ),
                                );
                            }
                            grants.files.push((abs, fg.guest.clone()))
                        }
                        _ => r.error(
                            f.span(),
                            format!(
                                "stage `{name}`: files: `{}` is not a directory{}",
                                display_path(&host),
                                // The shipped model plugins read their
                                // files from a grant that setup fills.
                                if host.components().any(|c| c.as_os_str() == "models") {
                                    " (model files are installed by `bash scripts/setup`, or `bash scripts/setup-models`)"
                                } else {
                                    ""
                                }
                            ),
                        ),
                    }
                }
                for e in &g.env {
                    grants.env.push(e.get_ref().clone());
                }
            }
            let parallelism = match &s.parallelism {
                Some(p) if !(1..=MAX_PARALLELISM).contains(p.get_ref()) => {
                    r.error(
                        p.span(),
                        format!("stage `{name}`: parallelism must be from 1 to {MAX_PARALLELISM}"),
                    );
                    1
                }
                Some(p) => *p.get_ref(),
                None => 1,
            };
            let location = r.at(s.name.span(), format!("stage `{name}`"));
            stages.push(Stage {
                name,
                kind,
                plugin,
                config,
                limits,
                grants,
                index,
                parallelism,
                location,
            });
        }
        let batch_records = match raw.batch.as_ref().and_then(|b| b.max_records.as_ref()) {
            Some(m) if *m.get_ref() == 0 => {
                r.error(m.span(), "batch.max_records must be > 0");
                DEFAULT_BATCH_RECORDS
            }
            Some(m) => *m.get_ref(),
            None => DEFAULT_BATCH_RECORDS,
        };
        let linger_ms = raw.batch.as_ref().and_then(|b| b.linger_ms).unwrap_or(20);
        let mut tables: Vec<TableDecl> = Vec::new();
        for t in &raw.tables {
            let name = t.name.get_ref();
            if let Err(m) = check_name("table name", name, false) {
                r.error(t.name.span(), m);
            }
            if tables.iter().any(|x| &x.name == name) {
                r.error(t.name.span(), format!("duplicate table name `{name}`"));
            }
            let topic = topic_of(&mut r, &t.topic);
            if topic == source_topic {
                r.error(
                    t.topic.span(),
                    format!("table `{name}`: topic `{topic}` is the pipeline's source; a table follows another topic"),
                );
            }
            let wait_ms = match &t.wait_ms {
                Some(w) if *w.get_ref() > 60_000 => {
                    r.error(
                        w.span(),
                        format!("table `{name}`: wait_ms must be at most 60000"),
                    );
                    DEFAULT_TABLE_WAIT_MS
                }
                Some(w) => *w.get_ref(),
                None => DEFAULT_TABLE_WAIT_MS,
            };
            tables.push(TableDecl {
                name: name.clone(),
                topic,
                key_field: t.key.as_ref().map(|k| k.get_ref().clone()),
                wait_ms,
            });
        }

        if !r.diagnostics.is_empty() {
            return Err(ManifestError {
                diagnostics: r.diagnostics,
            });
        }
        Ok(Manifest {
            file: file.to_path_buf(),
            name: raw.name.into_inner(),
            tenant,
            description: raw.description,
            source_topic,
            format: raw.source.format,
            stages,
            sink_topic,
            sink_index,
            dead_letter_topic,
            batch_records,
            linger_ms,
            tables,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one_in_characters() {
        let t = "ab\ncdé\nx";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 1));
        assert_eq!(line_col(t, t.find('x').unwrap()), (3, 1));
        assert_eq!(line_col(t, 7), (2, 4));
    }

    #[test]
    fn host_grant_defaults_port_by_scheme_and_rejects_paths() {
        assert_eq!(
            HostGrant::parse("https://api.example.com").unwrap().port,
            443
        );
        assert_eq!(
            HostGrant::parse("http://127.0.0.1:8080").unwrap().port,
            8080
        );
        assert!(HostGrant::parse("http://x.com/v1").is_err());
        assert!(HostGrant::parse("ftp://x.com").is_err());
    }

    #[test]
    fn config_flattens_nested_tables_to_strings() {
        let t: toml::Table = toml::from_str("a = 1\nb = \"s\"\n[c]\nd = true").unwrap();
        let mut out = BTreeMap::new();
        flatten_config("", &t, &mut out);
        assert_eq!(out["a"], "1");
        assert_eq!(out["b"], "s");
        assert_eq!(out["c.d"], "true");
    }
}
