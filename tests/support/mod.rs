//! Shared helpers for the integration tests: build the real plugin
//! components once, write manifests into temp dirs, run the real `weft`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// Builds every plugin and fixture component (once per test binary) with
/// `scripts/build-plugins`, which is incremental.
pub fn ensure_plugins() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/build-plugins"))
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .expect("running scripts/build-plugins");
        assert!(status.success(), "scripts/build-plugins failed");
    });
}

/// The path of a built component, e.g. `plugin("text-chunker")`.
pub fn plugin(name: &str) -> PathBuf {
    ensure_plugins();
    let p = repo_root()
        .join("target/plugins")
        .join(format!("{}.wasm", name.replace('-', "_")));
    assert!(p.is_file(), "{} was not built", p.display());
    p
}

/// A compile cache shared by the tests, so each component compiles once.
pub fn cache_dir() -> PathBuf {
    repo_root().join("target/test-cache")
}

pub fn runtime() -> weft::runtime::Runtime {
    weft::runtime::Runtime::new(Some(cache_dir())).expect("runtime")
}

/// Writes `text` as `name` in `dir` and returns its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("writing test file");
    p
}

/// Runs the real `weft` binary.
pub fn weft(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .env("WEFT_CACHE_DIR", cache_dir())
        .output()
        .expect("running weft")
}

pub fn read_jsonl(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

/// A one-stage transform manifest around `plugin` with extra stage TOML.
pub fn transform_manifest(dir: &Path, plugin: &Path, stage_extra: &str) -> PathBuf {
    write(
        dir,
        "pipeline.toml",
        &format!(
            "name = \"t\"\n[source]\ntopic = \"in\"\n[[stage]]\nname = \"s\"\nkind = \"transform\"\nplugin = \"{}\"\n{stage_extra}\n[sink]\ntopic = \"out\"\n",
            plugin.display()
        ),
    )
}

/// The highest "<pipeline>: N consumed, ..." count in a weft progress log.
pub fn consumed(log: &Path) -> u64 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(": ").nth(1)?.split(' ').next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// A source item as the runners make them: key `k<n>`, a `trace` header,
/// a timestamp, offset `n`, and `value` as its raw value.
pub fn item(n: i64, value: &str) -> weft::record::Item {
    use weft::record::{Item, Origin, Payload};
    Item {
        key: Some(format!("k{n}").into_bytes()),
        headers: vec![("trace".into(), format!("t{n}").into_bytes())],
        timestamp: Some(1_700_000_000_000 + n),
        origin: std::sync::Arc::new(Origin {
            topic: "test".into(),
            partition: 0,
            offset: n,
            key: None,
            value: Some(value.as_bytes().to_vec()),
        }),
        payload: Payload::Raw(Some(value.as_bytes().to_vec())),
    }
}

/// The raw values of a batch's outputs, as text.
pub fn values(o: &weft::pipeline::BatchOutcome) -> Vec<String> {
    o.outputs
        .iter()
        .map(|i| match &i.payload {
            weft::record::Payload::Raw(Some(v)) => String::from_utf8_lossy(v).into_owned(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// A transform component, written against the published contract in the
/// component text format, around `core_module` (which exports `memory`,
/// `cabi_realloc` and `transform`), written to `dir/name`.
pub fn transform_component(
    dir: &std::path::Path,
    name: &str,
    core_module: &str,
) -> std::path::PathBuf {
    let text = format!(
        r#"(component
  {core_module}
  (core instance $i (instantiate $m))
  (type $header-def (record (field "key" string) (field "value" (list u8))))
  (export $header "header" (type $header-def))
  (type $record-def (record (field "key" (option (list u8))) (field "value" (option (list u8))) (field "headers" (list $header))))
  (export $record "record" (type $record-def))
  (type $kind-def (enum "invalid-input" "config" "transient" "internal"))
  (export $kind "error-kind" (type $kind-def))
  (type $error-def (record (field "kind" $kind) (field "message" string)))
  (export $error "plugin-error" (type $error-def))
  (type $ty (func (param "records" (list $record)) (result (list (result (list $record) (error $error))))))
  (func $transform (type $ty)
    (canon lift (core func $i "transform") (memory (core memory $i "memory")) (realloc (core func $i "cabi_realloc"))))
  (instance $exports
    (export "header" (type $header))
    (export "record" (type $record))
    (export "error-kind" (type $kind))
    (export "plugin-error" (type $error))
    (export "transform" (func $transform)))
  (export "weft:plugin/transform@0.1.0" (instance $exports)))"#
    );
    let path = dir.join(name);
    std::fs::write(
        &path,
        wat::parse_str(text).expect("the component text parses"),
    )
    .expect("writing the component");
    path
}

/// A host on `dir/data` with the default policy and the tests' compile cache.
#[allow(dead_code)]
pub fn host(dir: &Path) -> weft::service::Host {
    weft::service::Host::new(
        Some(cache_dir()),
        weft::policy::Policy::default(),
        &dir.join("data"),
    )
    .expect("host")
}

/// `<root>/<name>/{policy.toml,pipelines/}` with `policy` as the tenant's
/// policy; returns the tenant's directory. The tests' plugins are the
/// repository's built ones, outside the tenant's directory, so the policy
/// also allows that directory (`allowed_plugin_dirs`).
#[allow(dead_code)]
pub fn tenant(root: &Path, name: &str, policy: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("pipelines")).unwrap();
    let plugins = repo_root().join("target/plugins");
    std::fs::write(
        dir.join("policy.toml"),
        format!(
            "{policy}\nallowed_plugin_dirs = [{:?}]\n",
            plugins.display().to_string()
        ),
    )
    .unwrap();
    dir
}

/// Sends SIGTERM to `child`.
#[allow(dead_code)]
pub fn sigterm(child: &std::process::Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("running kill")
        .success();
    assert!(ok, "kill -TERM {} failed", child.id());
}

/// A bump allocator as a core module's `cabi_realloc` (never frees), for
/// the core modules that `transform_component` wraps.
#[allow(dead_code)]
pub const BUMP_REALLOC: &str = r#"(global $bump (mut i32) (i32.const 1024))
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $bump) (i32.const 7)) (i32.const -8)))
      (global.set $bump (i32.add (local.get $p) (local.get 3)))
      (local.get $p))"#;

/// Produces `records` to `topic` and waits for the broker's acknowledgement.
#[allow(dead_code)]
pub fn produce(brokers: &str, topic: &str, records: Vec<weft::stream::kafka::KeyValue>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(weft::stream::kafka::produce_values(brokers, topic, records))
        .expect("produce");
}

/// The first `n` records of `topic` (a fresh reader's group join can take
/// tansu several seconds, so this waits for a count, not for silence; it
/// gives up after 60 s without a record).
#[allow(dead_code)]
pub fn read_first(brokers: &str, topic: &str, n: usize) -> Vec<weft::stream::kafka::ReadRecord> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut rx = weft::stream::kafka::follow_topic(brokers, topic).expect("reader");
        let mut out = Vec::new();
        while out.len() < n {
            match tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv()).await {
                Ok(Some((r, _))) => out.push(r),
                _ => break,
            }
        }
        out
    })
}

/// A child process that is stopped when dropped, so a failing test does not
/// leave a `weft` (and the local broker it started) running: SIGTERM, up to
/// 10 s to exit, then SIGKILL.
pub struct Reaped(pub std::process::Child);

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let t0 = std::time::Instant::now();
        while t0.elapsed() < std::time::Duration::from_secs(10) {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
