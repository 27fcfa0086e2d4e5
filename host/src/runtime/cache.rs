//! On-disk cache of compiled components, keyed by the SHA-256 of the
//! component bytes and the engine's compatibility hash, so a plugin is
//! compiled once per machine and every later start only maps the artifact.

use anyhow::Context;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    engine_tag: String,
}

/// Feeds `Hash` output into a SHA-256 so the engine tag is stable across runs
/// (std's `DefaultHasher` is not guaranteed to be).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CompileCache {
    /// `$WEFT_CACHE_DIR`, else `$XDG_CACHE_HOME/weft`, else `~/.cache/weft`, else a temp dir.
    pub fn default_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("WEFT_CACHE_DIR") {
            return PathBuf::from(d);
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
            return PathBuf::from(d).join("weft");
        }
        if let Some(h) = std::env::var_os("HOME") {
            return PathBuf::from(h).join(".cache/weft");
        }
        std::env::temp_dir().join("weft-cache")
    }

    pub fn new(dir: PathBuf, engine: &Engine) -> CompileCache {
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_tag = hex::encode(&h.0.finalize()[..8]);
        CompileCache { dir, engine_tag }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache file for component bytes with this SHA-256 (hex).
    fn path_for(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", &digest[..32], self.engine_tag))
    }

    /// Loads a component, from the cache when it holds a compatible artifact,
    /// and returns it with the SHA-256 (hex) of its bytes. A cache that
    /// cannot be written is not an error: we just compile.
    pub fn load(&self, engine: &Engine, path: &Path) -> anyhow::Result<(Component, String)> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        // Say what the file is not without quoting it: a plugin path may name
        // any file, and its first bytes are nobody's business.
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            anyhow::bail!(
                "{} is not a WebAssembly file (no `\\0asm` header)",
                path.display()
            );
        }
        if bytes[4..8] == [1, 0, 0, 0] {
            anyhow::bail!(
                "{} is a core WebAssembly module, not a component: build it for wasm32-wasip2, \
                 or wrap it with `wasm-tools component new`",
                path.display()
            );
        }
        let digest = hex::encode(Sha256::digest(&bytes));
        let cached = self.path_for(&digest);
        if cached.is_file() {
            // SAFETY: the file was written by `Component::serialize` of an engine
            // with the same compatibility hash (it is in the file name), into our
            // own cache directory; wasmtime re-checks the header on load.
            match unsafe { Component::deserialize_file(engine, &cached) } {
                Ok(c) => return Ok((c, digest)),
                Err(e) => {
                    tracing::warn!("ignoring unusable cache entry {}: {e:#}", cached.display())
                }
            }
        }
        let component = Component::new(engine, &bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("compiling {} (is it a wasm component?)", path.display()))?;
        if let Err(e) = self.store(&component, &cached) {
            tracing::warn!("cannot write compile cache {}: {e:#}", cached.display());
        }
        Ok((component, digest))
    }

    fn store(&self, component: &Component, cached: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let bytes = component.serialize()?;
        // Write then rename, so a concurrent reader never sees half a file.
        let tmp = cached.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, cached)?;
        Ok(())
    }
}
