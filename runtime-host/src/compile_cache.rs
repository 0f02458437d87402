//! Compiled components kept across starts: a start loads machine code instead
//! of running Cranelift over every component (seconds of CPU each).
//!
//! Hand-written over `Engine::precompile_component` and
//! `Component::deserialize` rather than wasmtime's own cache
//! (`wasmtime::Cache`): that one stores entries without a checksum, and what is
//! in an entry is run as machine code, so a flipped bit on disk would run. Here
//! every entry carries the SHA-256 of its artefact, checked before it is
//! loaded; an entry that fails the check, or that wasmtime refuses (another
//! wasmtime version, target or configuration), is compiled again and replaced.
//!
//! An entry's name is the SHA-256 of the component's bytes (after
//! composition) and of the engine's `precompile_compatibility_hash` (wasmtime's
//! version, the target and every setting that changes code generation), so a
//! changed `.wasm` or engine never meets a stale artefact. What the checksum
//! cannot catch is a valid artefact written on purpose by someone who can write
//! to the directory: the directory must be writable by this user only, which
//! [`CompileCache::open`] checks.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Entries kept; the least recently used beyond these are removed, so
/// rebuilt components do not fill the disk.
const MAX_ENTRIES: usize = 32;
/// First bytes of every entry, then the artefact's SHA-256, then the artefact.
const MAGIC: &[u8] = b"sluice-host compiled component v1\n";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("creating the compilation cache {0}: {1}")]
    Create(PathBuf, std::io::Error),
    #[error(
        "the compilation cache {0} is writable by other users (mode {1:o}): what is in it is \
         loaded as machine code; `chmod go-w` it or choose another with --compile-cache"
    )]
    Shared(PathBuf, u32),
    #[error("compiling: {0:#}")]
    Compile(wasmtime::Error),
}

/// A directory of compiled components.
pub struct CompileCache {
    dir: PathBuf,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CompileCache {
    /// Opens (creating, private to this user) the directory `dir`; refuses
    /// one that other users may write to.
    pub fn open(dir: &Path) -> Result<CompileCache, CacheError> {
        let create = || {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir)?;
            dir.canonicalize()
        };
        let dir = create().map_err(|e| CacheError::Create(dir.to_path_buf(), e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dir)
                .map_err(|e| CacheError::Create(dir.clone(), e))?
                .permissions()
                .mode();
            if mode & 0o022 != 0 {
                return Err(CacheError::Shared(dir, mode & 0o7777));
            }
        }
        Ok(CompileCache {
            dir,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Components loaded from the cache since it was opened.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Components compiled since it was opened (and written, when it could be).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// `bytes` compiled for `engine`: loaded from the cache when a sound
    /// entry is there, else compiled and stored.
    pub fn component(&self, engine: &Engine, bytes: &[u8]) -> Result<Component, CacheError> {
        let path = self.dir.join(format!("{}.cwasm", key(engine, bytes)));
        if let Some(artefact) = read_entry(&path) {
            match load(engine, &artefact) {
                Ok(component) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    // Its time is when it was last used: what pruning keeps.
                    let _ = std::fs::File::options()
                        .append(true)
                        .open(&path)
                        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                    return Ok(component);
                }
                Err(error) => tracing::warn!(event = "compile_cache_entry_refused",
                    path = %path.display(), error = %format!("{error:#}"),
                    "compiling again"),
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let artefact = engine
            .precompile_component(bytes)
            .map_err(CacheError::Compile)?;
        let component = load(engine, &artefact).map_err(CacheError::Compile)?;
        if let Err(error) = write_entry(&path, &artefact) {
            // A read-only cache (a container's, filled at build time) still serves.
            tracing::warn!(event = "compile_cache_write_failed", path = %path.display(),
                error = %error, "the component is compiled but not cached");
        } else {
            self.prune();
        }
        Ok(component)
    }

    /// Removes the least recently used entries beyond [`MAX_ENTRIES`], and
    /// temporary files a crash left behind.
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut kept = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let modified = entry.metadata().and_then(|m| m.modified());
            match path.extension().and_then(|e| e.to_str()) {
                Some("cwasm") => {
                    if let Ok(modified) = modified {
                        kept.push((modified, path));
                    }
                }
                Some("tmp") => {
                    let stale = modified
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .is_some_and(|age| age.as_secs() > 3600);
                    if stale {
                        let _ = std::fs::remove_file(&path);
                    }
                }
                _ => {}
            }
        }
        kept.sort_by_key(|entry| std::cmp::Reverse(entry.0));
        for (_, path) in kept.into_iter().skip(MAX_ENTRIES) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The entry's name: the component's bytes and what the engine's code depends on.
fn key(engine: &Engine, bytes: &[u8]) -> String {
    /// Feeds `Hash` output into SHA-256 (std's hashers are not meant to be stable).
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            0
        }
    }
    let mut hasher = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.update(Sha256::digest(bytes));
    hex::encode(hasher.0.finalize())
}

/// The artefact of a sound entry at `path`, or nothing (missing, truncated,
/// or its checksum does not match).
fn read_entry(path: &Path) -> Option<Vec<u8>> {
    let data = std::fs::read(path).ok()?;
    let rest = data.strip_prefix(MAGIC)?;
    let (digest, artefact) = rest.split_at_checked(32)?;
    if Sha256::digest(artefact).as_slice() != digest {
        tracing::warn!(event = "compile_cache_entry_corrupt", path = %path.display(),
            "checksum mismatch; compiling again");
        return None;
    }
    Some(artefact.to_vec())
}

/// Writes an entry whole or not at all (a temporary file renamed into place).
fn write_entry(path: &Path, artefact: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let mut options = std::fs::File::options();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(MAGIC)?;
        file.write_all(&Sha256::digest(artefact))?;
        file.write_all(artefact)?;
        file.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(error) => {
            let _ = std::fs::remove_file(&tmp);
            Err(error)
        }
    }
}

/// Loads an artefact this engine compiled (checked above, or made just now).
#[expect(unsafe_code, reason = "loading precompiled components, see SAFETY")]
fn load(engine: &Engine, artefact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` runs the artefact's code, so it must be
    // one wasmtime produced: here it either was compiled in this process or
    // carries the checksum written with it, in a directory only this user
    // can write (checked in `open`); wasmtime itself refuses an artefact of
    // another version or configuration.
    unsafe { Component::deserialize(engine, artefact) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tampered_entry_is_not_read() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("x.cwasm");
        write_entry(&path, b"artefact").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_entry(&path).as_deref(), Some(&b"artefact"[..]));
        let mut data = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
        let last = data.len() - 1;
        data[last] ^= 1;
        std::fs::write(&path, &data).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_entry(&path), None, "one flipped bit");
        std::fs::write(&path, &data[..20]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_entry(&path), None, "truncated");
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            CompileCache::open(&shared),
            Err(CacheError::Shared(..))
        ));
        let private = dir.path().join("private");
        let cache = CompileCache::open(&private).unwrap_or_else(|e| panic!("{e}"));
        let mode = std::fs::metadata(cache.dir())
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
