//! Fetching a build's artifacts on the host, a few at a time: each one comes from
//! the cache when a verified copy is there (nothing downloaded), else its checksum
//! is fetched and read, the file is downloaded (resumed, retried on transient
//! failures only, capped in size) while it is hashed, and only a file whose digest
//! matches enters the cache, with its record written last.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context};

use super::cache::{self, Cached};
use super::checksum::{parse_checksum_file, Algorithm, Hasher};
use super::list::{Artifact, ChecksumSource};
use crate::flatcar::cache::{ensure_regular_file, prepare_dir, record_path, sibling, Miss};
use crate::fsx;
use crate::net::credentials::redact;
use crate::net::download::{Fetched, HttpClient, Observer};

/// Downloads at once: enough to overlap round trips, few enough to be kind to a mirror.
pub const PARALLEL: usize = 4;

/// The artifacts of a build, each from the cache or downloaded and verified into
/// it, in the order given. Offline, only the cache is used. Every failure is
/// reported, not just the first.
pub fn fetch_all(
    client: &HttpClient,
    cache_root: &Path,
    artifacts: &[Artifact],
    offline: bool,
) -> anyhow::Result<Vec<Cached>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<anyhow::Result<Cached>>>> =
        Mutex::new(artifacts.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL.min(artifacts.len()) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(artifact) = artifacts.get(index) else {
                    break;
                };
                let result = fetch_one(client, cache_root, artifact, offline);
                results.lock().expect("the results lock")[index] = Some(result);
            });
        }
    });
    let mut fetched = Vec::new();
    let mut problems = Vec::new();
    for result in results
        .into_inner()
        .expect("the results lock")
        .into_iter()
        .flatten()
    {
        match result {
            Ok(cached) => fetched.push(cached),
            Err(err) => problems.push(format!("{err:#}")),
        }
    }
    if !problems.is_empty() {
        let advice = if offline {
            "\nFill the cache on a machine that has the network: `cargo xtask mirror DIR` (and \
             build from its tree) or one build without --offline."
        } else {
            ""
        };
        bail!(
            "{} of {} artifacts could not be used:\n  {}{advice}",
            problems.len(),
            artifacts.len(),
            problems.join("\n  ")
        );
    }
    Ok(fetched)
}

/// One artifact, cached or fetched.
pub fn fetch_one(
    client: &HttpClient,
    cache_root: &Path,
    artifact: &Artifact,
    offline: bool,
) -> anyhow::Result<Cached> {
    let dir = cache::entry_dir(cache_root, artifact);
    prepare_dir(cache_root, &dir)?;
    let _lock = fsx::lock_dir(&dir)?;
    let miss = match cache::check_cached(cache_root, artifact) {
        Ok(hit) => return Ok(hit),
        Err(miss) => miss,
    };
    let url = redact(&artifact.url);
    if offline {
        bail!(
            "{} {} ({url}): {}; --offline uses only the cache {}",
            artifact.name,
            artifact.version,
            match miss {
                Miss::Absent => "not in the cache".to_owned(),
                other => other.to_string(),
            },
            cache_root.display()
        );
    }
    download_verified(client, cache_root, artifact)
        .with_context(|| format!("{} {} ({url})", artifact.name, artifact.version))
}

/// Feeds every byte to a running hash.
struct Hashing {
    algorithm: Algorithm,
    hasher: Hasher,
}

impl Observer for Hashing {
    fn bytes(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        self.hasher.update(chunk);
        Ok(())
    }

    fn restart(&mut self) -> anyhow::Result<()> {
        self.hasher = self.algorithm.hasher();
        Ok(())
    }
}

fn download_verified(
    client: &HttpClient,
    cache_root: &Path,
    artifact: &Artifact,
) -> anyhow::Result<Cached> {
    let path = cache::file_path(cache_root, artifact);
    // No record vouches for this entry until the new download has passed.
    fsx::remove_if_present(&record_path(&path))?;
    let algorithm = artifact.checksum.algorithm();
    let (expected, checksum_text) = expected_digest(client, artifact)?;
    let part = sibling(&path, ".part");
    let mut hashing = Hashing {
        algorithm,
        hasher: algorithm.hasher(),
    };
    let downloaded = match client.download(&artifact.url, &part, &mut hashing)? {
        Fetched::Found(downloaded) => downloaded,
        Fetched::NotFound(status) => bail!("the server answered {status}"),
    };
    let actual = hashing.hasher.finish();
    if actual != expected {
        fsx::remove_if_present(&part)?;
        bail!(
            "{} does not match its published checksum: {algorithm} {actual} downloaded, {expected} \
             expected ({}); the file was deleted. The mirror serves a different file than the \
             one published: do not build from it until it is fixed",
            artifact.file_name(),
            checksum_origin(&artifact.checksum),
        );
    }
    ensure_regular_file(&part)?;
    fsx::rename_durably(&part, &path)?;
    let checksum_path = cache::checksum_path(cache_root, artifact);
    if let (Some(sums), Some(text)) = (&checksum_path, &checksum_text) {
        fsx::write_atomically(sums, text)?;
    }
    ensure_regular_file(&path)?;
    let verified_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let record = cache::record_for(artifact, downloaded.size, &actual, algorithm, verified_at);
    let json = serde_json::to_vec_pretty(&record).context("encoding the cache record")?;
    fsx::write_atomically(&record_path(&path), &json)?;
    Ok(Cached {
        artifact: Artifact {
            size: Some(downloaded.size),
            ..artifact.clone()
        },
        path,
        checksum_path,
        size: downloaded.size,
        digest: actual,
        downloaded: true,
    })
}

/// Where the expected digest comes from, for messages.
fn checksum_origin(source: &ChecksumSource) -> String {
    match source {
        ChecksumSource::File { url, .. } => format!("from {}", redact(url)),
        ChecksumSource::Fixed { .. } => "the published value in the image definitions".to_owned(),
    }
}

/// The digest the file must have, and the checksum file's text when there is one.
fn expected_digest(
    client: &HttpClient,
    artifact: &Artifact,
) -> anyhow::Result<(String, Option<Vec<u8>>)> {
    match &artifact.checksum {
        ChecksumSource::Fixed { digest, .. } => Ok((digest.clone(), None)),
        ChecksumSource::File { url, algorithm } => {
            let text = match client.get_small(url)? {
                Fetched::Found(text) => text,
                Fetched::NotFound(status) => {
                    bail!("its checksum file {} is not there: {status}", redact(url))
                }
            };
            let digest = parse_checksum_file(
                &String::from_utf8_lossy(&text),
                artifact.file_name(),
                *algorithm,
            )
            .map_err(|why| anyhow::anyhow!("its checksum file {}: {why}", redact(url)))?;
            Ok((digest, Some(text)))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::artifacts::list::tests::{pypy, vars};
    use crate::artifacts::{artifact_list, variables_at};
    use crate::net::download::ProgressStyle;
    use crate::net::file_server::{FileServer, Files};

    /// A mirror directory holding every artifact of the test build, with checksum
    /// files in the upstream formats; the PyPy archive's digest is the fixed one.
    fn mirror(dir: &Path) -> (Vec<Artifact>, FileServer) {
        let upstream = artifact_list(&vars(), &pypy()).unwrap();
        let root = dir.join("mirror");
        let mut sums = BTreeMap::new();
        for a in &upstream {
            let file = root.join(&a.served_path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            let body = format!("{} {}", a.name, a.version);
            std::fs::write(&file, &body).unwrap();
            let mut h = Algorithm::Sha256.hasher();
            h.update(body.as_bytes());
            let digest = h.finish();
            if let Some(served) = a.checksum_served_path().unwrap() {
                std::fs::write(root.join(served), format!("{digest}  {}\n", a.file_name()))
                    .unwrap();
            }
            sums.insert(a.name.clone(), digest);
        }
        let server = FileServer::start(Files::Directory(root)).unwrap();
        let mut p = pypy();
        p.sha256 = sums["pypy"].clone();
        let moved: BTreeMap<String, String> = vars()
            .into_iter()
            .chain(variables_at(&vars(), &server.url()).unwrap())
            .collect();
        (artifact_list(&moved, &p).unwrap(), server)
    }

    #[test]
    fn fetches_verifies_and_then_hits_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (artifacts, server) = mirror(dir.path());
        let cache = dir.path().join("cache");
        let client = HttpClient::new(0, ProgressStyle::Quiet);
        let first = fetch_all(&client, &cache, &artifacts, false).unwrap();
        assert!(first.iter().all(|c| c.downloaded && c.size > 0));
        // Seven files and six checksum files, each asked for once, by the xtask.
        let log = server.requests();
        assert_eq!(log.len(), 13, "{log:#?}");
        assert!(log.iter().all(|r| r
            .user_agent
            .as_deref()
            .is_some_and(|ua| ua.starts_with(crate::net::download::USER_AGENT_NAME))));

        server.clear_requests();
        let second = fetch_all(&client, &cache, &artifacts, true).unwrap();
        assert!(second.iter().all(|c| !c.downloaded));
        assert_eq!(server.requests(), []);
        assert_eq!(
            first.iter().map(|c| &c.digest).collect::<Vec<_>>(),
            second.iter().map(|c| &c.digest).collect::<Vec<_>>()
        );
        let served = crate::artifacts::served_files(&second).unwrap();
        assert_eq!(served.len(), 13);
    }

    #[test]
    fn a_tampered_file_names_itself_its_url_and_both_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let (artifacts, _server) = mirror(dir.path());
        let kubelet = &artifacts[1];
        std::fs::write(
            dir.path()
                .join("mirror")
                .join(artifacts[1].served_path.split_once('/').unwrap().1),
            "tampered",
        )
        .unwrap();
        let cache = dir.path().join("cache");
        let client = HttpClient::new(0, ProgressStyle::Quiet);
        let err = format!(
            "{:#}",
            fetch_all(&client, &cache, &artifacts, false).unwrap_err()
        );
        let mut h = Algorithm::Sha256.hasher();
        h.update(b"tampered");
        let actual = h.finish();
        assert!(err.contains("1 of 7 artifacts"), "{err}");
        assert!(err.contains(&kubelet.url), "{err}");
        assert!(
            err.contains(&format!(
                "kubelet does not match its published checksum: SHA-256 {actual}"
            )),
            "{err}"
        );
        assert!(err.contains("kubelet.sha256"), "{err}");
        assert!(!cache::file_path(&cache, kubelet).exists());
        assert!(!record_path(&cache::file_path(&cache, kubelet)).exists());
    }

    #[test]
    fn offline_names_what_is_missing_and_how_to_fill_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (artifacts, server) = mirror(dir.path());
        let client = HttpClient::new(0, ProgressStyle::Quiet);
        let err = format!(
            "{:#}",
            fetch_all(&client, &dir.path().join("cache"), &artifacts, true).unwrap_err()
        );
        assert!(err.contains("7 of 7 artifacts"), "{err}");
        assert!(
            err.contains(&format!(
                "containerd 2.3.3 ({}): not in the cache",
                artifacts[5].url
            )),
            "{err}"
        );
        assert!(err.contains("cargo xtask mirror"), "{err}");
        assert_eq!(server.requests(), []);
    }
}
