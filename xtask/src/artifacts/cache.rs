//! The artifact cache, beside the Flatcar image cache:
//! `<cache>/artifacts/<name>/<version>/<goarch>/` holds the file, the checksum file
//! it was checked against (as published, so it can be served again), and a record
//! written only after the check passed. The same hardening as the image cache: no
//! link followed below the root, a directory others can write refused, a record
//! only for a regular file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::checksum::{parse_checksum_file, Algorithm};
use super::list::{Artifact, ChecksumSource};
use crate::flatcar::cache::{record_path, Miss};

/// The folder of the cache root that holds artifacts (no channel has this name).
pub const DIR: &str = "artifacts";

/// The entry directory of `artifact` under the cache root.
pub fn entry_dir(root: &Path, artifact: &Artifact) -> PathBuf {
    root.join(DIR)
        .join(&artifact.name)
        .join(&artifact.version)
        .join(&artifact.goarch)
}

/// The file's place in its entry.
pub fn file_path(root: &Path, artifact: &Artifact) -> PathBuf {
    entry_dir(root, artifact).join(artifact.file_name())
}

/// Where the checksum file is kept in the entry, when there is one: under its
/// published name.
pub fn checksum_path(root: &Path, artifact: &Artifact) -> Option<PathBuf> {
    match &artifact.checksum {
        ChecksumSource::File { url, .. } => {
            let name = url.rsplit('/').next().unwrap_or_default();
            Some(entry_dir(root, artifact).join(name))
        }
        ChecksumSource::Fixed { .. } => None,
    }
}

/// What was verified, written after the check passed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub file: String,
    pub size: u64,
    pub algorithm: String,
    /// Lower-case hex.
    pub digest: String,
    /// Where the bytes came from.
    pub source_url: String,
    /// Where the digest came from: a checksum file's URL, or `published` for a fixed value.
    pub checksum_source: String,
    /// Seconds since the epoch.
    pub verified_at: u64,
}

/// An artifact with a verified copy in the cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cached {
    pub artifact: Artifact,
    pub path: PathBuf,
    /// The checksum file beside it, for artifacts that publish one.
    pub checksum_path: Option<PathBuf>,
    pub size: u64,
    pub digest: String,
    /// Downloaded by this run (not a cache hit).
    pub downloaded: bool,
}

/// What a server hands out for `cached`: each file and checksum file at its
/// served path (the upstream host and path).
pub fn served_files(cached: &[Cached]) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut files = BTreeMap::new();
    for c in cached {
        files.insert(c.artifact.served_path.clone(), c.path.clone());
        if let (Some(served), Some(path)) = (c.artifact.checksum_served_path()?, &c.checksum_path) {
            files.insert(served, path.clone());
        }
    }
    Ok(files)
}

/// The cheap check: a record that names the file, the expected algorithm and (for
/// a fixed checksum) the expected digest; a regular file of the recorded size; and
/// for a checksum file, that file still there and still saying the recorded digest.
pub fn check_cached(root: &Path, artifact: &Artifact) -> Result<Cached, Miss> {
    let path = file_path(root, artifact);
    let record_file = record_path(&path);
    let text = match std::fs::read(&record_file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Absent),
        Err(err) => return Err(Miss::Stale(format!("{}: {err}", record_file.display()))),
    };
    let stale = |why: String| Miss::Stale(format!("{}: {why}", record_file.display()));
    let record: Record = serde_json::from_slice(&text).map_err(|e| stale(e.to_string()))?;
    let algorithm = artifact.checksum.algorithm();
    if record.file != artifact.file_name() || record.algorithm != algorithm.name() {
        return Err(stale(format!(
            "it records {} ({}), not {} ({})",
            record.file,
            record.algorithm,
            artifact.file_name(),
            algorithm.name()
        )));
    }
    if let ChecksumSource::Fixed { digest, .. } = &artifact.checksum {
        if *digest != record.digest {
            return Err(stale(format!(
                "verified as {}, but the build expects {digest}",
                record.digest
            )));
        }
    }
    let size = regular_file_size(&path).map_err(stale)?;
    if size != record.size {
        return Err(stale(format!(
            "{} has {size} bytes, the record {}",
            path.display(),
            record.size
        )));
    }
    let checksum_path = checksum_path(root, artifact);
    if let Some(sums) = &checksum_path {
        regular_file_size(sums).map_err(stale)?;
        let text = std::fs::read_to_string(sums).map_err(|e| stale(e.to_string()))?;
        let said = parse_checksum_file(&text, artifact.file_name(), algorithm)
            .map_err(|e| stale(format!("{}: {e}", sums.display())))?;
        if said != record.digest {
            return Err(stale(format!(
                "{} no longer says {}",
                sums.display(),
                record.digest
            )));
        }
    }
    Ok(Cached {
        artifact: Artifact {
            size: Some(size),
            ..artifact.clone()
        },
        path,
        checksum_path,
        size,
        digest: record.digest,
        downloaded: false,
    })
}

/// The size of `path` if it is a regular file (never following a link).
fn regular_file_size(path: &Path) -> Result<u64, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.file_type().is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    Ok(meta.len())
}

/// The digest named `algorithm`, for a record.
pub fn record_for(
    artifact: &Artifact,
    size: u64,
    digest: &str,
    algorithm: Algorithm,
    verified_at: u64,
) -> Record {
    Record {
        file: artifact.file_name().to_owned(),
        size,
        algorithm: algorithm.name().to_owned(),
        digest: digest.to_owned(),
        source_url: crate::net::credentials::redact(&artifact.url).into_owned(),
        checksum_source: match &artifact.checksum {
            ChecksumSource::File { url, .. } => crate::net::credentials::redact(url).into_owned(),
            ChecksumSource::Fixed { .. } => "published".to_owned(),
        },
        verified_at,
    }
}
