//! The download cache: `<root>/<channel>/<version>/<arch>/` per release, the
//! pinned signing key under `<root>/keys/`. A file counts as cached only while a
//! record written after its verification sits beside it and still matches it
//! (size, and the signature file the record names); anything else in an entry
//! directory is a partial download or an abandoned one, never trusted.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use std::os::unix::fs::{DirBuilderExt, MetadataExt};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use super::release::{Arch, Channel, Version};
use crate::hex;

/// The directory under the user's cache directory.
pub const CACHE_DIR_NAME: &str = "flatcar-capi-builder";

/// `$XDG_CACHE_HOME/flatcar-capi-builder`, else `~/.cache/flatcar-capi-builder`.
pub fn default_cache_dir() -> anyhow::Result<PathBuf> {
    cache_dir_from(
        std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

fn cache_dir_from(xdg: Option<PathBuf>, home: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    // The XDG spec: a relative XDG_CACHE_HOME is invalid and must be ignored.
    if let Some(xdg) = xdg.filter(|p| p.is_absolute()) {
        return Ok(xdg.join(CACHE_DIR_NAME));
    }
    match home.filter(|p| p.is_absolute()) {
        Some(home) => Ok(home.join(".cache").join(CACHE_DIR_NAME)),
        None => anyhow::bail!("neither XDG_CACHE_HOME nor HOME is set; pass --cache-dir"),
    }
}

/// The cache directory of one release.
pub fn entry_dir(root: &Path, channel: Channel, version: Version, arch: Arch) -> PathBuf {
    root.join(channel.name())
        .join(version.to_string())
        .join(arch.name())
}

/// Creates `dir` (the cache root or a directory below it) and checks that `root`
/// and every directory from it down to `dir` belongs to the user running this
/// and is not writable by others: whoever can write there can plant links and
/// swap files between our checks. New directories get mode 0755.
pub fn prepare_dir(root: &Path, dir: &Path) -> anyhow::Result<()> {
    let below = dir.strip_prefix(root).with_context(|| {
        format!(
            "{} is not inside the cache {}",
            dir.display(),
            root.display()
        )
    })?;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true).mode(0o755);
    builder
        .create(root)
        .with_context(|| format!("creating {}", root.display()))?;
    // The root may be a link the user chose; nothing below it may be.
    let meta = std::fs::metadata(root).with_context(|| format!("reading {}", root.display()))?;
    check_private(root, &meta)?;
    let mut path = root.to_path_buf();
    for part in below.components() {
        path.push(part);
        match std::fs::DirBuilder::new().mode(0o755).create(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err).with_context(|| format!("creating {}", path.display())),
        }
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if !meta.is_dir() {
            bail!(
                "{} is not a directory (a symbolic link or a file stands there); the cache \
                 follows no links below its root. Remove it, and check who else can write to {}",
                path.display(),
                root.display()
            );
        }
        check_private(&path, &meta)?;
    }
    Ok(())
}

fn check_private(dir: &Path, meta: &std::fs::Metadata) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        bail!(
            "the cache directory {} belongs to user {}, not to the user running this ({me}): \
             another user could swap the files this run verifies. Use a cache directory of \
             your own (--cache-dir), or run as its owner",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "the cache directory {} is writable by other users (mode {:o}): they could plant \
             links or swap the files this run verifies. Run `chmod go-w {}`, or use a cache \
             directory of your own (--cache-dir)",
            dir.display(),
            meta.mode() & 0o7777,
            dir.display()
        );
    }
    Ok(())
}

/// Refuses to vouch for `image` unless it is a regular file, not a link: a
/// record is only ever written for a file inside the cache.
pub fn ensure_regular_file(image: &Path) -> anyhow::Result<()> {
    let meta =
        std::fs::symlink_metadata(image).with_context(|| format!("reading {}", image.display()))?;
    if !meta.file_type().is_file() {
        bail!(
            "{} is not a regular file (a symbolic link or another kind of file was put there \
             during the download); nothing was recorded as verified. Remove it, and check who \
             else can write to {}",
            image.display(),
            image.parent().unwrap_or(Path::new("/")).display()
        );
    }
    Ok(())
}

/// The versions of `channel` for `arch` that have a directory in the cache,
/// newest first: candidates only, since a directory may hold nothing but a lock
/// or a failed download (the caller checks each entry's record).
pub fn cached_versions(root: &Path, channel: Channel, arch: Arch) -> Vec<Version> {
    let mut versions: Vec<Version> = std::fs::read_dir(root.join(channel.name()))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|v: &Version| entry_dir(root, channel, *v, arch).is_dir())
        .collect();
    versions.sort_unstable_by(|a, b| b.cmp(a));
    versions
}

/// Where the pinned key is kept once its fingerprint has been checked.
pub fn key_path(root: &Path, fingerprint: &str) -> PathBuf {
    root.join("keys").join(format!("{fingerprint}.asc"))
}

/// The record written beside a verified file: `<file>.verified.json`.
pub fn record_path(image: &Path) -> PathBuf {
    sibling(image, ".verified.json")
}

/// `<path><suffix>` in the same directory.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// What was verified, written only after every check passed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The cached file's name in the entry directory.
    pub file: String,
    pub size: u64,
    pub sha512: String,
    /// The URL the bytes came from (for a `.bz2`, the compressed file).
    pub source_url: String,
    /// The URL that served the bytes after redirects (absent in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_url: Option<String>,
    /// SHA-512 of the bytes downloaded, when that is not the cached file (.bz2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sha512: Option<String>,
    /// `None` only for a file fetched with `--insecure-skip-signature`.
    pub signature: Option<SignatureBinding>,
    /// Seconds since the epoch.
    pub verified_at: u64,
}

/// Ties a record to the signature that was verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureBinding {
    /// The signature file kept in the entry directory (`.sig` or `.DIGESTS.asc`).
    pub file: String,
    pub sha256: String,
    pub primary_key: String,
    pub signing_key: String,
    /// When the signature was made, seconds since the epoch.
    pub signed_at: u64,
    /// SHA-256 of the armored key file that was trusted.
    pub key_file_sha256: String,
}

/// Why a cached file is not trusted as it is.
#[derive(Debug, PartialEq, Eq)]
pub enum Miss {
    /// Nothing cached.
    Absent,
    /// Something is there but does not hold up; the reason, for a message.
    Stale(String),
    /// Verified with a key other than the one named by the expectation (which
    /// may be the same key in another file: worth a look with its fingerprint).
    OtherKey(String),
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Miss::Absent => f.write_str("not in the cache"),
            Miss::Stale(reason) | Miss::OtherKey(reason) => f.write_str(reason),
        }
    }
}

/// What the cheap check needs to know about the trust the caller requires.
pub enum Expected<'a> {
    /// A signature by this primary key, or (when the key's fingerprint is not
    /// known yet) by whatever key the key file with this SHA-256 holds: the same
    /// file is the same key, and no gpg run is needed to tell.
    Signed {
        primary_key: Option<&'a str>,
        key_file_sha256: Option<&'a str>,
    },
    /// `--insecure-skip-signature`: any verified-or-not record will do.
    Unsigned,
}

/// The cheap check (well under 50 ms whatever the image size): a record beside
/// `image` that names it, matches its size, is bound to a signature file that is
/// still there unchanged, and to the expected key.
pub fn check_cached(image: &Path, expected: &Expected<'_>) -> Result<Record, Miss> {
    let record_file = record_path(image);
    let text = match std::fs::read(&record_file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Absent),
        Err(err) => return Err(Miss::Stale(format!("{}: {err}", record_file.display()))),
    };
    let record: Record = serde_json::from_slice(&text)
        .map_err(|err| Miss::Stale(format!("{}: {err}", record_file.display())))?;
    let name = image.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if record.file != name {
        return Err(Miss::Stale(format!(
            "{} is about {}, not {name}",
            record_file.display(),
            record.file
        )));
    }
    let size = match std::fs::symlink_metadata(image) {
        Ok(meta) if !meta.file_type().is_file() => {
            return Err(Miss::Stale(format!(
                "{} is not a regular file (a symbolic link?)",
                image.display()
            )))
        }
        Ok(meta) => meta.len(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(Miss::Stale(format!("{} is missing", image.display())))
        }
        Err(err) => return Err(Miss::Stale(format!("{}: {err}", image.display()))),
    };
    if size != record.size {
        return Err(Miss::Stale(format!(
            "{} has {size} bytes, {} when it was verified",
            image.display(),
            record.size
        )));
    }
    match (&record.signature, expected) {
        (_, Expected::Unsigned) => Ok(record),
        (None, Expected::Signed { .. }) => Err(Miss::Stale(format!(
            "{} was fetched with --insecure-skip-signature; its signature was never checked",
            image.display()
        ))),
        (
            Some(binding),
            Expected::Signed {
                primary_key,
                key_file_sha256,
            },
        ) => {
            let same_key = primary_key.is_some_and(|k| k == binding.primary_key)
                || key_file_sha256.is_some_and(|h| h == binding.key_file_sha256);
            if !same_key {
                return Err(Miss::OtherKey(format!(
                    "{} was verified with key {}, not the key trusted now",
                    image.display(),
                    binding.primary_key
                )));
            }
            let signature = image.with_file_name(&binding.file);
            match sha256_file(&signature) {
                Ok(sha256) if sha256 == binding.sha256 => Ok(record),
                Ok(_) => Err(Miss::Stale(format!(
                    "{} changed since it was verified",
                    signature.display()
                ))),
                Err(err) => Err(Miss::Stale(format!("{err:#}"))),
            }
        }
    }
}

/// Re-hashes `image` and compares it with `record` (`--verify-cache`).
pub fn rehash_matches(image: &Path, record: &Record) -> anyhow::Result<bool> {
    Ok(sha512_file(image)? == record.sha512)
}

pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    hash_file::<Sha256>(path)
}

pub fn sha512_file(path: &Path) -> anyhow::Result<String> {
    hash_file::<Sha512>(path)
}

fn hash_file<D: Digest>(path: &Path) -> anyhow::Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = D::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(&hasher.finalize()))
}

pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_follows_xdg_then_home() {
        let dir = |xdg: Option<&str>, home: Option<&str>| {
            cache_dir_from(xdg.map(PathBuf::from), home.map(PathBuf::from))
                .map(|p| p.display().to_string())
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            dir(Some("/x/cache"), Some("/home/u")),
            Ok("/x/cache/flatcar-capi-builder".into())
        );
        assert_eq!(
            dir(Some("relative"), Some("/home/u")),
            Ok("/home/u/.cache/flatcar-capi-builder".into())
        );
        assert_eq!(
            dir(None, Some("/home/u")),
            Ok("/home/u/.cache/flatcar-capi-builder".into())
        );
        assert!(dir(None, None).unwrap_err().contains("--cache-dir"));
    }

    #[test]
    fn entries_are_keyed_by_channel_version_arch() {
        let v: Version = "4081.2.0".parse().unwrap();
        assert_eq!(
            entry_dir(Path::new("/c"), Channel::Stable, v, Arch::Amd64),
            Path::new("/c/stable/4081.2.0/amd64")
        );
        assert_eq!(
            record_path(Path::new("/c/x.img")),
            Path::new("/c/x.img.verified.json")
        );
    }

    #[test]
    fn digests_are_lower_case_hex() {
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
