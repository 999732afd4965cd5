//! Getting one release's QEMU image into the cache, verified: resolve the
//! release once ([`resolve`]), then take a trusted cache entry if there is one,
//! otherwise download the image once while hashing it and feeding it to the
//! signature check, and only then move it into place.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use anyhow::{bail, Context};
use sha2::{Digest, Sha512};
use xshell::Shell;

use super::cache::{self, Expected, Miss, Record, SignatureBinding};
use super::digests::{parse_digests, HashAlgorithm};
use super::release::{
    resolve_release, Arch, Channel, Release, ReleaseServer, Variant, Version, VersionRequest,
};
use crate::net::download::{Fetched, HttpClient, Limits, Observer, ProgressStyle};
use crate::net::openpgp::{Fingerprint, GoodSignature, Keyring, StreamingCheck};
use crate::{fsx, hex, utc};

/// The primary key that signs Flatcar's official images.
pub const FLATCAR_SIGNING_KEY_FINGERPRINT: &str = "F88CFEDEFF29A5B4D9523864E25D9AED0593B34A";
/// Where Flatcar publishes that key.
pub const FLATCAR_SIGNING_KEY_URL: &str =
    "https://www.flatcar.org/security/image-signing-key/Flatcar_Image_Signing_Key.asc";

/// Which signatures to trust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignaturePolicy {
    /// A key fetched from `key_url`, accepted only with the primary key
    /// `fingerprint` (Flatcar's unless the user pins another), then cached and
    /// refreshed: at a bounded age, and when a signature names a subkey the
    /// cached copy does not have (Flatcar rotates signing subkeys).
    PinnedFlatcarKey {
        key_url: String,
        fingerprint: Fingerprint,
    },
    /// The armored public key in this file (custom Flatcar builds, tests).
    KeyFile(PathBuf),
    /// No signature check at all (`--insecure-skip-signature`); SHA-512 still.
    InsecureSkip,
}

/// How long a cached pinned key is used before it is fetched again, so that a
/// revocation or a new subkey reaches an existing cache.
const PINNED_KEY_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

impl SignaturePolicy {
    /// Why the trust anchor is not Flatcar's pinned key, when it is not: said on
    /// stderr every run, and recorded in build.json.
    pub fn replaced_anchor(&self) -> Option<String> {
        match self {
            SignaturePolicy::PinnedFlatcarKey { fingerprint, .. }
                if fingerprint.as_str() == FLATCAR_SIGNING_KEY_FINGERPRINT =>
            {
                None
            }
            SignaturePolicy::PinnedFlatcarKey { fingerprint, .. } => Some(format!(
                "the pinned key is {fingerprint} (--signing-key-fingerprint / FLATCAR_SIGNING_KEY_FINGERPRINT)"
            )),
            SignaturePolicy::KeyFile(path) => Some(format!(
                "the key in {} (--signing-key / FLATCAR_SIGNING_KEY)",
                path.display()
            )),
            SignaturePolicy::InsecureSkip => None,
        }
    }
}

/// Everything [`fetch_image`] needs to know.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    pub channel: Channel,
    pub version: VersionRequest,
    pub arch: Arch,
    pub variant: Variant,
    pub server: ReleaseServer,
    pub signature: SignaturePolicy,
    pub cache_dir: PathBuf,
    /// Use only the cache; never touch the network.
    pub offline: bool,
    /// Re-hash a cached image instead of trusting its size and record.
    pub verify_cache: bool,
    /// Retries for transient network failures.
    pub retries: u32,
    /// Size and time limits of every download.
    pub limits: Limits,
    pub progress: ProgressStyle,
}

/// Who signed a verified image.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SignatureRecord {
    pub primary_key: String,
    pub signing_key: String,
    /// Seconds since the epoch.
    pub signed_at: u64,
    /// The signature file that was checked (`.sig` or `.DIGESTS.asc`).
    pub file: PathBuf,
}

/// A QEMU disk image in the cache that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedImage {
    pub channel: Channel,
    pub version: Version,
    pub arch: Arch,
    pub variant: Variant,
    pub path: PathBuf,
    pub size: u64,
    /// Lower-case hex SHA-512 of the file at `path`.
    pub sha512: String,
    pub source_url: String,
    /// Where the bytes finally came from, after redirects.
    pub final_url: String,
    /// `None` only with [`SignaturePolicy::InsecureSkip`].
    pub signature: Option<SignatureRecord>,
    /// Found in the cache: nothing was downloaded.
    pub from_cache: bool,
}

/// What the trusted key is, learned as cheaply as possible: the pinned
/// fingerprint is known without running gpg; a key file's fingerprint is
/// known from a cache record made with the same file, else from gpg.
struct Trust<'a> {
    policy: &'a SignaturePolicy,
    primary: Option<String>,
    key_file: Option<(Vec<u8>, String)>,
    keyring: Option<Keyring>,
    /// The pinned key was fetched from its URL during this run.
    fresh: bool,
}

impl<'a> Trust<'a> {
    fn new(policy: &'a SignaturePolicy) -> anyhow::Result<Trust<'a>> {
        let mut trust = Trust {
            policy,
            primary: None,
            key_file: None,
            keyring: None,
            fresh: false,
        };
        match policy {
            SignaturePolicy::PinnedFlatcarKey { fingerprint, .. } => {
                trust.primary = Some(fingerprint.to_string());
            }
            SignaturePolicy::KeyFile(path) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("reading the signing key {}", path.display()))?;
                let sha256 = cache::sha256_bytes(&bytes);
                trust.key_file = Some((bytes, sha256));
            }
            SignaturePolicy::InsecureSkip => {}
        }
        Ok(trust)
    }

    fn expected(&self) -> Expected<'_> {
        match self.policy {
            SignaturePolicy::InsecureSkip => Expected::Unsigned,
            _ => Expected::Signed {
                primary_key: self.primary.as_deref(),
                key_file_sha256: self.key_file.as_ref().map(|(_, sha)| sha.as_str()),
            },
        }
    }

    /// Imports the key (fetching and caching the pinned key if needed).
    fn load(
        &mut self,
        sh: &Shell,
        client: &HttpClient,
        opts: &FetchOptions,
    ) -> anyhow::Result<Option<&Keyring>> {
        if self.keyring.is_none() {
            match self.policy {
                SignaturePolicy::InsecureSkip => return Ok(None),
                SignaturePolicy::KeyFile(path) => {
                    let (bytes, _) = self.key_file.as_ref().expect("read in Trust::new");
                    let keyring =
                        Keyring::from_armored(sh, bytes, &path.display().to_string(), None)?;
                    self.primary = Some(keyring.certificate().primary.fingerprint.to_string());
                    self.keyring = Some(keyring);
                }
                SignaturePolicy::PinnedFlatcarKey {
                    key_url,
                    fingerprint,
                } => {
                    let (keyring, bytes, fresh) =
                        pinned_keyring(sh, client, opts, key_url, fingerprint, false)?;
                    let sha256 = cache::sha256_bytes(&bytes);
                    self.key_file = Some((bytes, sha256));
                    self.keyring = Some(keyring);
                    self.fresh = fresh;
                }
            }
        }
        Ok(self.keyring.as_ref())
    }

    /// Fetches the pinned key again unless this run already did (a signature
    /// named a subkey the cached copy lacks). `false`: nothing to refresh.
    fn refresh(
        &mut self,
        sh: &Shell,
        client: &HttpClient,
        opts: &FetchOptions,
    ) -> anyhow::Result<bool> {
        let SignaturePolicy::PinnedFlatcarKey {
            key_url,
            fingerprint,
        } = self.policy
        else {
            return Ok(false);
        };
        if self.fresh || opts.offline {
            return Ok(false);
        }
        let (keyring, bytes, _) = pinned_keyring(sh, client, opts, key_url, fingerprint, true)?;
        let sha256 = cache::sha256_bytes(&bytes);
        self.key_file = Some((bytes, sha256));
        self.keyring = Some(keyring);
        self.fresh = true;
        say(
            opts,
            format_args!("The signature names a key the cached copy lacks: the key was refreshed from {key_url}."),
        );
        Ok(true)
    }
}

/// The pinned key, from the cache or from `key_url` (then cached): fetched when
/// `refresh` says so, when the cached copy is older than [`PINNED_KEY_MAX_AGE`], or
/// missing. The last value: it was fetched now.
fn pinned_keyring(
    sh: &Shell,
    client: &HttpClient,
    opts: &FetchOptions,
    key_url: &str,
    pinned: &Fingerprint,
    refresh: bool,
) -> anyhow::Result<(Keyring, Vec<u8>, bool)> {
    let cached = cache::key_path(&opts.cache_dir, pinned.as_str());
    let age = std::fs::metadata(&cached)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    let stale = !opts.offline && age.is_none_or(|age| age > PINNED_KEY_MAX_AGE);
    if !refresh && !stale {
        if let Ok(bytes) = std::fs::read(&cached) {
            match Keyring::from_armored(sh, &bytes, &cached.display().to_string(), Some(pinned)) {
                Ok(keyring) => return Ok((keyring, bytes, false)),
                Err(err) => {
                    eprintln!("warning: ignoring the cached signing key: {err:#}");
                    fsx::remove_if_present(&cached)?;
                }
            }
        }
    }
    if opts.offline {
        bail!(
            "--offline: the signing key {pinned} is not in the cache ({}); run once without --offline",
            cached.display()
        );
    }
    let bytes = match client.get_small(key_url)? {
        Fetched::Found(bytes) => bytes,
        Fetched::NotFound(status) => {
            bail!("the signing key is not at {key_url} ({status}); check --signing-key-url")
        }
    };
    let keyring = Keyring::from_armored(sh, &bytes, key_url, Some(pinned))?;
    cache::prepare_dir(
        &opts.cache_dir,
        cached.parent().expect("key path has a parent"),
    )?;
    fsx::write_atomically(&cached, &bytes)?;
    Ok((keyring, bytes, true))
}

fn say(opts: &FetchOptions, message: std::fmt::Arguments<'_>) {
    if opts.progress != ProgressStyle::Quiet {
        eprintln!("{message}");
    }
}

/// Resolves the release `opts` names, once per run, without downloading the image.
/// A version whose image the cache holds verified is known from the `version.txt`
/// kept beside it, without asking the server; offline, the cache is all there is,
/// and `current` is the newest release whose image is trusted there (never a
/// directory left by a failed download). Otherwise the release server's
/// `version.txt` says which release `current` is, or that the version asked for exists.
pub fn resolve(opts: &FetchOptions) -> anyhow::Result<Release> {
    let trust = Trust::new(&opts.signature)?;
    let version = match opts.version {
        VersionRequest::Exact(version) => version,
        VersionRequest::Current if opts.offline => {
            let version = newest_cached(opts, &trust, opts.variant.image_file_name())?;
            say(
                opts,
                format_args!(
                    "--offline: using {version}, the newest {} release in the cache",
                    opts.channel
                ),
            );
            version
        }
        VersionRequest::Current => return resolve_online(opts),
    };
    let dir = cache::entry_dir(&opts.cache_dir, opts.channel, version, opts.arch);
    // The cheap check: fetch_image makes the full one (--verify-cache) once.
    let image = dir.join(opts.variant.image_file_name());
    if cache::check_cached(&image, &trust.expected()).is_ok() {
        return cached_release(opts, &dir, version);
    }
    if opts.offline {
        return Err(not_in_cache(opts, version));
    }
    resolve_online(opts)
}

fn resolve_online(opts: &FetchOptions) -> anyhow::Result<Release> {
    let client = HttpClient::with_limits(opts.retries, opts.progress, opts.limits);
    let release = resolve_release(&client, &opts.server, opts.channel, opts.version, opts.arch)?;
    if opts.version == VersionRequest::Current {
        say(
            opts,
            format_args!(
                "The current {} release for {} is {}.",
                opts.channel, opts.arch, release.version
            ),
        );
    }
    Ok(release)
}

/// The release of a verified cache entry, from the `version.txt` kept in it.
fn cached_release(opts: &FetchOptions, dir: &Path, version: Version) -> anyhow::Result<Release> {
    let path = dir.join("version.txt");
    let text = std::fs::read(&path).with_context(|| {
        format!(
            "reading {} (run without --offline to fetch the release again)",
            path.display()
        )
    })?;
    let release = Release::from_version_txt(&opts.server, opts.channel, opts.arch, text)
        .with_context(|| format!("{} is not a valid version.txt", path.display()))?;
    if release.version != version {
        bail!(
            "{} says FLATCAR_VERSION={}, not {version}: the cache entry is damaged; \
             run without --offline to fetch it again",
            path.display(),
            release.version
        );
    }
    Ok(release)
}

fn not_in_cache(opts: &FetchOptions, version: Version) -> anyhow::Error {
    anyhow::anyhow!(
        "--offline: Flatcar {} {version} {} ({}) is not in the cache {}; \
         run without --offline to download it",
        opts.channel,
        opts.arch,
        opts.variant,
        opts.cache_dir.display()
    )
}

/// Returns the QEMU image of `release` (resolved by [`resolve`]) from the cache,
/// downloading and verifying it first unless a trusted copy is there.
pub fn fetch_image(
    sh: &Shell,
    opts: &FetchOptions,
    release: &Release,
) -> anyhow::Result<VerifiedImage> {
    if opts.signature == SignaturePolicy::InsecureSkip {
        eprintln!(
            "WARNING: --insecure-skip-signature: the image's OpenPGP signature is NOT checked; \
             only its SHA-512 against an unsigned DIGESTS file. Anyone who can alter the \
             download can alter the image."
        );
    }
    if let Some(anchor) = opts.signature.replaced_anchor() {
        eprintln!(
            "WARNING: the image's signature is checked against {anchor}, NOT Flatcar's \
             pinned image-signing key {FLATCAR_SIGNING_KEY_FINGERPRINT}. Trust the result \
             only as far as you trust that key."
        );
    }
    let client = HttpClient::with_limits(opts.retries, opts.progress, opts.limits);
    let mut trust = Trust::new(&opts.signature)?;
    let file_name = opts.variant.image_file_name();
    let dir = cache::entry_dir(
        &opts.cache_dir,
        release.channel,
        release.version,
        release.arch,
    );
    let image = dir.join(file_name);

    let mut miss = cached(opts, &image, &trust)?;
    if matches!(miss, Some(Miss::OtherKey(_))) && trust.primary.is_none() {
        // Made with a key file we have not seen: learn its fingerprint and look again.
        trust.load(sh, &client, opts)?;
        miss = cached(opts, &image, &trust)?;
    }
    let Some(miss) = miss else {
        return hit(opts, release, &image);
    };
    if miss != Miss::Absent {
        say(opts, format_args!("Not using the cached image: {miss}."));
    }
    if opts.offline {
        return Err(not_in_cache(opts, release.version));
    }

    cache::prepare_dir(&opts.cache_dir, &dir)?;
    let _lock = fsx::lock_dir(&dir)?;
    // Another run may have filled the entry while we waited for the lock.
    if cached(opts, &image, &trust)?.is_none() {
        return hit(opts, release, &image);
    }
    trust.load(sh, &client, opts)?;
    download_verified(sh, opts, &client, release, &dir, file_name, &mut trust)
}

/// `None`: a trusted entry is there. With `--verify-cache`, a trusted entry
/// whose bytes no longer match is a miss (and its record is removed).
fn cached(opts: &FetchOptions, image: &Path, trust: &Trust<'_>) -> anyhow::Result<Option<Miss>> {
    let record = match cache::check_cached(image, &trust.expected()) {
        Ok(record) => record,
        Err(miss) => return Ok(Some(miss)),
    };
    if opts.verify_cache && !cache::rehash_matches(image, &record)? {
        fsx::remove_if_present(&cache::record_path(image))?;
        return Ok(Some(Miss::Stale(format!(
            "{} no longer has the SHA-512 it was verified with (--verify-cache)",
            image.display()
        ))));
    }
    Ok(None)
}

fn hit(opts: &FetchOptions, release: &Release, image: &Path) -> anyhow::Result<VerifiedImage> {
    let record = cache::check_cached(image, &Expected::Unsigned).map_err(|miss| {
        anyhow::anyhow!(
            "the cache entry {} changed while in use: {miss}",
            image.display()
        )
    })?;
    Ok(VerifiedImage {
        channel: release.channel,
        version: release.version,
        arch: release.arch,
        variant: opts.variant,
        path: image.to_path_buf(),
        size: record.size,
        sha512: record.sha512,
        final_url: record
            .final_url
            .unwrap_or_else(|| record.source_url.clone()),
        source_url: record.source_url,
        signature: record.signature.map(|b| SignatureRecord {
            primary_key: b.primary_key,
            signing_key: b.signing_key,
            signed_at: b.signed_at,
            file: image.with_file_name(b.file),
        }),
        from_cache: true,
    })
}

/// The newest version of the channel whose image is trusted in the cache.
fn newest_cached(
    opts: &FetchOptions,
    trust: &Trust<'_>,
    file_name: &str,
) -> anyhow::Result<Version> {
    for version in cache::cached_versions(&opts.cache_dir, opts.channel, opts.arch) {
        let image =
            cache::entry_dir(&opts.cache_dir, opts.channel, version, opts.arch).join(file_name);
        if cached(opts, &image, trust)?.is_none() {
            return Ok(version);
        }
    }
    bail!(
        "--offline: no {} release for {} ({}) is in the cache {}; \
         run without --offline to download one",
        opts.channel,
        opts.arch,
        opts.variant,
        opts.cache_dir.display()
    )
}

/// How the download is authenticated.
enum SignatureSource {
    /// `<artifact>.sig`: a detached signature over the artifact itself.
    Detached {
        url: String,
        path: PathBuf,
    },
    /// `<artifact>.DIGESTS.asc`: the DIGESTS, clear-signed; the artifact is
    /// authenticated through the SHA-512 in the signed text.
    ClearsignedDigests {
        url: String,
        path: PathBuf,
        good: GoodSignature,
    },
    None,
}

/// Hashes the download and feeds it to gpgv on a worker thread, so that
/// receiving and writing, our SHA-512 and gpgv's own hashing run side by side
/// (one pass over the bytes, three cores' worth of work on two).
struct ImageCheck<'scope, 'env> {
    scope: &'scope std::thread::Scope<'scope, 'env>,
    keyring: Option<&'env Keyring>,
    signature_path: &'env Path,
    worker: Option<Worker<'scope>>,
}

struct Worker<'scope> {
    chunks: mpsc::SyncSender<Vec<u8>>,
    /// Buffers the worker is done with, for reuse.
    spare: mpsc::Receiver<Vec<u8>>,
    /// gpgv stopped reading: its verdict is in, and it is a failure.
    rejected: Arc<AtomicBool>,
    handle: std::thread::ScopedJoinHandle<'scope, Checked>,
}

/// What the worker found.
struct Checked {
    sha512: String,
    /// `None` when no detached signature is streamed.
    signature: Option<anyhow::Result<GoodSignature>>,
    /// The signature failed before the data ended (the download was cut short).
    rejected_early: bool,
}

impl<'scope, 'env> ImageCheck<'scope, 'env> {
    fn start(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        keyring: Option<&'env Keyring>,
        signature_path: &'env Path,
    ) -> anyhow::Result<ImageCheck<'scope, 'env>> {
        let mut check = ImageCheck {
            scope,
            keyring,
            signature_path,
            worker: None,
        };
        check.restart()?;
        Ok(check)
    }

    fn finish(&mut self) -> Checked {
        let worker = self.worker.take().expect("a worker runs until finish");
        drop(worker.chunks);
        worker.handle.join().expect("the hashing thread panicked")
    }
}

fn hash_and_check(
    chunks: mpsc::Receiver<Vec<u8>>,
    spare: mpsc::SyncSender<Vec<u8>>,
    rejected: Arc<AtomicBool>,
    mut signature: Option<StreamingCheck<'_>>,
) -> Checked {
    let mut sha512 = Sha512::new();
    for chunk in chunks {
        sha512.update(&chunk);
        if let Some(check) = signature.as_mut() {
            if let Err(err) = check.write(&chunk) {
                rejected.store(true, Ordering::SeqCst);
                return Checked {
                    sha512: String::new(),
                    signature: Some(Err(err)),
                    rejected_early: true,
                };
            }
        }
        let _ = spare.try_send(chunk);
    }
    Checked {
        sha512: hex::encode(&sha512.finalize()),
        signature: signature.map(StreamingCheck::finish),
        rejected_early: false,
    }
}

impl Observer for ImageCheck<'_, '_> {
    fn bytes(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        let worker = self.worker.as_ref().expect("a worker runs until finish");
        let mut buffer = worker.spare.try_recv().unwrap_or_default();
        buffer.clear();
        buffer.extend_from_slice(chunk);
        if worker.rejected.load(Ordering::SeqCst) || worker.chunks.send(buffer).is_err() {
            bail!("the OpenPGP signature check failed before the download ended");
        }
        Ok(())
    }

    fn restart(&mut self) -> anyhow::Result<()> {
        if self.worker.is_some() {
            // Whatever the old worker found is about bytes now thrown away.
            self.finish();
        }
        let signature = match self.keyring {
            Some(keyring) => Some(keyring.start_detached(self.signature_path)?),
            None => None,
        };
        let (chunks, chunks_rx) = mpsc::sync_channel(8);
        let (spare_tx, spare) = mpsc::sync_channel(8);
        let rejected = Arc::new(AtomicBool::new(false));
        let flag = rejected.clone();
        let handle = self
            .scope
            .spawn(move || hash_and_check(chunks_rx, spare_tx, flag, signature));
        self.worker = Some(Worker {
            chunks,
            spare,
            rejected,
            handle,
        });
        Ok(())
    }
}

fn download_verified(
    sh: &Shell,
    opts: &FetchOptions,
    client: &HttpClient,
    release: &Release,
    dir: &Path,
    file_name: &str,
    trust: &mut Trust<'_>,
) -> anyhow::Result<VerifiedImage> {
    let image = dir.join(file_name);
    // From here on no record vouches for anything in this entry until the new
    // download has passed every check.
    fsx::remove_if_present(&cache::record_path(&image))?;

    // Which artifact: the plain image, or (older releases) only its .bz2.
    let (artifact, digests_url, digests) = {
        let candidates = [file_name.to_owned(), format!("{file_name}.bz2")];
        let mut found = None;
        let mut answers = Vec::new();
        for candidate in candidates {
            let url = format!("{}{candidate}.DIGESTS", release.url);
            match client.get_small(&url)? {
                Fetched::Found(bytes) => {
                    found = Some((candidate, url, bytes));
                    break;
                }
                Fetched::NotFound(status) => answers.push(format!("{url} answered {status}")),
            }
        }
        found.with_context(|| {
            format!(
                "Flatcar {} {} has no {file_name} for {} (neither it nor its .bz2 is listed: {}); \
                 this release may not be built for QEMU {}",
                release.channel,
                release.version,
                release.arch,
                answers.join(", "),
                opts.variant
            )
        })?
    };
    let compressed = artifact != file_name;
    let artifact_url = format!("{}{artifact}", release.url);
    let artifact_path = dir.join(&artifact);

    let signature = match trust.keyring.is_some() {
        false => SignatureSource::None,
        true => {
            signature_with_known_signer(sh, client, opts, trust, &artifact_url, &artifact_path)?
        }
    };
    let key_file_sha256 = trust.key_file.as_ref().map(|(_, sha)| sha.clone());
    let keyring = trust.keyring.as_ref();
    let digests_text = match &signature {
        // Use the text the signature covers, never the unsigned copy.
        SignatureSource::ClearsignedDigests { path, .. } => {
            let (_, text) = keyring
                .expect("a signature source implies a keyring")
                .verify_clearsigned(path)?;
            text
        }
        _ => digests,
    };
    let expected_sha512 = std::str::from_utf8(&digests_text)
        .map_err(|_| anyhow::anyhow!("not UTF-8 text"))
        .and_then(parse_digests)
        .with_context(|| format!("{digests_url} is not a valid DIGESTS file"))?
        .find(&HashAlgorithm::Sha512, &artifact)
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "{digests_url} has no SHA512 entry for {artifact}, so the download could not be checked; \
                 nothing was downloaded"
            )
        })?;

    // Download, hashing and checking the signature on the way.
    let part = cache::sibling(&artifact_path, ".part");
    let signature_path = match &signature {
        SignatureSource::Detached { path, .. } => path.clone(),
        _ => PathBuf::new(),
    };
    let streaming_keyring = match &signature {
        SignatureSource::Detached { .. } => keyring,
        _ => None,
    };
    say(opts, format_args!("Downloading {artifact_url}"));
    let (downloaded, checked) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let mut check = ImageCheck::start(scope, streaming_keyring, &signature_path)?;
        let downloaded = client.download(&artifact_url, &part, &mut check);
        Ok((downloaded, check.finish()))
    })?;
    let signature_url = match &signature {
        SignatureSource::Detached { url, .. } => url.as_str(),
        _ => "",
    };
    let (size, final_url) = match downloaded {
        Ok(Fetched::Found(done)) => (done.size, done.final_url),
        Ok(Fetched::NotFound(status)) => {
            discard(&[&part])?;
            bail!(
                "{artifact_url} answered {status}, though {digests_url} lists it; \
                 the release server is incomplete (try again later or another mirror)"
            )
        }
        Err(err) => {
            if let (true, Some(Err(rejection))) = (checked.rejected_early, checked.signature) {
                discard(&[&part])?;
                return Err(rejection.context(format!(
                    "the OpenPGP signature {signature_url} does not verify {artifact_url}; \
                     the download was stopped and deleted"
                )));
            }
            // A network failure: the partial file stays for the next run to resume.
            return Err(err);
        }
    };

    // Every check, every failure reported.
    let actual_sha512 = checked.sha512;
    let mut failures = Vec::new();
    if actual_sha512 != expected_sha512 {
        failures.push(format!(
            "SHA-512 mismatch: the download is {actual_sha512}, {digests_url} says {expected_sha512}"
        ));
    }
    let good = match (&signature, checked.signature) {
        (SignatureSource::Detached { .. }, Some(Ok(good))) => Some(good),
        (SignatureSource::Detached { .. }, Some(Err(err))) => {
            failures.push(format!("OpenPGP signature {signature_url}: {err:#}"));
            None
        }
        (SignatureSource::Detached { .. }, None) => {
            unreachable!("a detached signature is always streamed")
        }
        (SignatureSource::ClearsignedDigests { good, .. }, _) => Some(good.clone()),
        (SignatureSource::None, _) => None,
    };
    if !failures.is_empty() {
        let signature_files: Vec<PathBuf> = match &signature {
            SignatureSource::Detached { path, .. }
            | SignatureSource::ClearsignedDigests { path, .. } => vec![path.clone()],
            SignatureSource::None => Vec::new(),
        };
        let mut doomed: Vec<&Path> = vec![&part];
        doomed.extend(signature_files.iter().map(PathBuf::as_path));
        discard(&doomed)?;
        let advice = if actual_sha512 != expected_sha512 {
            "Run again to download it afresh; if this persists, the server sends a damaged or forged file."
        } else {
            "The bytes match DIGESTS, but not a signature by the trusted key: do not use this \
             server's image, or (a custom Flatcar build) name its key with --signing-key."
        };
        bail!(
            "{artifact_url} ({size} bytes) failed verification and was deleted; nothing was cached:\n  - {}\n{advice}",
            failures.join("\n  - ")
        );
    }
    let (signature_url, signature_file) = match &signature {
        SignatureSource::Detached { url, path } => (Some(url.clone()), Some(path.clone())),
        SignatureSource::ClearsignedDigests { url, path, .. } => {
            (Some(url.clone()), Some(path.clone()))
        }
        SignatureSource::None => (None, None),
    };
    if let (Some(good), Some(url)) = (&good, &signature_url) {
        say(
            opts,
            format_args!(
                "Verified {artifact}: SHA-512 matches, {url} is a good signature by key {} made {}.",
                good.signing_key,
                utc::format(good.created)
            ),
        );
    } else {
        say(
            opts,
            format_args!("Verified {artifact}: SHA-512 matches (signature NOT checked)."),
        );
    }

    // Into place.
    let (final_size, final_sha512, source_sha512) = if compressed {
        let (size, sha512) = decompress_into_place(&part, &image)?;
        fsx::remove_if_present(&part)?;
        (size, sha512, Some(actual_sha512))
    } else {
        fsx::rename_durably(&part, &image)?;
        (size, actual_sha512, None)
    };
    fsx::write_atomically(&cache::sibling(&artifact_path, ".DIGESTS"), &digests_text)?;
    fsx::write_atomically(&dir.join("version.txt"), &release.version_txt)?;
    let binding = match (&good, &signature_file) {
        (Some(good), Some(file)) => Some(SignatureBinding {
            file: file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned(),
            sha256: cache::sha256_file(file)?,
            primary_key: good.primary_key.to_string(),
            signing_key: good.signing_key.to_string(),
            signed_at: good.created,
            key_file_sha256: key_file_sha256.unwrap_or_default(),
        }),
        _ => None,
    };
    let record = Record {
        file: file_name.to_owned(),
        size: final_size,
        sha512: final_sha512.clone(),
        source_url: artifact_url.clone(),
        final_url: Some(final_url.clone()),
        source_sha512,
        signature: binding,
        verified_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    cache::ensure_regular_file(&image)?;
    let json = serde_json::to_vec_pretty(&record).context("encoding the cache record")?;
    fsx::write_atomically(&cache::record_path(&image), &json)?;
    Ok(VerifiedImage {
        channel: release.channel,
        version: release.version,
        arch: release.arch,
        variant: opts.variant,
        path: image,
        size: final_size,
        sha512: final_sha512,
        source_url: artifact_url,
        final_url,
        signature: good.map(|g| SignatureRecord {
            primary_key: g.primary_key.to_string(),
            signing_key: g.signing_key.to_string(),
            signed_at: g.created,
            file: signature_file.unwrap_or_default(),
        }),
        from_cache: false,
    })
}

/// The artifact's signature, with the pinned key refreshed once when the cached
/// copy does not know the subkey that made it (a rotation, or a revocation this
/// cache has not seen).
fn signature_with_known_signer(
    sh: &Shell,
    client: &HttpClient,
    opts: &FetchOptions,
    trust: &mut Trust<'_>,
    artifact_url: &str,
    artifact_path: &Path,
) -> anyhow::Result<SignatureSource> {
    let keyring = trust.keyring.as_ref().expect("loaded by the caller");
    let signature = fetch_signature(client, keyring, artifact_url, artifact_path);
    let unknown_signer = match &signature {
        Ok(SignatureSource::Detached { path, .. }) => !keyring.knows_signer(path)?,
        Ok(_) => false,
        Err(err) => format!("{err:#}").contains("not the trusted key"),
    };
    if unknown_signer && trust.refresh(sh, client, opts)? {
        let keyring = trust.keyring.as_ref().expect("just refreshed");
        return fetch_signature(client, keyring, artifact_url, artifact_path);
    }
    signature
}

/// Fetches `<artifact>.sig`, or failing that `<artifact>.DIGESTS.asc` (checked
/// at once: it is small), into the entry directory.
fn fetch_signature(
    client: &HttpClient,
    keyring: &Keyring,
    artifact_url: &str,
    artifact_path: &Path,
) -> anyhow::Result<SignatureSource> {
    let sig_url = format!("{artifact_url}.sig");
    let sig_answer = match client.get_small(&sig_url)? {
        Fetched::Found(bytes) => {
            let path = cache::sibling(artifact_path, ".sig");
            fsx::write_atomically(&path, &bytes)?;
            return Ok(SignatureSource::Detached { url: sig_url, path });
        }
        Fetched::NotFound(status) => status,
    };
    let asc_url = format!("{artifact_url}.DIGESTS.asc");
    match client.get_small(&asc_url)? {
        Fetched::Found(bytes) => {
            let path = cache::sibling(artifact_path, ".DIGESTS.asc");
            fsx::write_atomically(&path, &bytes)?;
            let good = match keyring.verify_clearsigned(&path) {
                Ok((good, _)) => good,
                Err(err) => {
                    discard(&[&path])?;
                    return Err(err.context(format!(
                        "the OpenPGP signature {asc_url} does not verify; nothing was downloaded"
                    )));
                }
            };
            Ok(SignatureSource::ClearsignedDigests {
                url: asc_url,
                path,
                good,
            })
        }
        Fetched::NotFound(status) => bail!(
            "{artifact_url} has no signature: {sig_url} answered {sig_answer} and {asc_url} answered {status}. \
             Refusing to use an unsigned image (--insecure-skip-signature skips the check, with a warning)"
        ),
    }
}

/// Streams `bzip2 -dc <compressed>` into a temporary file beside `image`,
/// hashing on the way, then moves it into place. Returns (size, SHA-512).
fn decompress_into_place(compressed: &Path, image: &Path) -> anyhow::Result<(u64, String)> {
    let bzip2 = crate::toolchain::tools::find_program("bzip2").context(
        "bzip2 is not installed; this release ships its image compressed. Install it \
         (e.g. `sudo apt-get install bzip2`) and run again",
    )?;
    let mut reader = duct::cmd(&bzip2, ["-dc".as_ref(), compressed.as_os_str()])
        .reader()
        .with_context(|| format!("starting {}", bzip2.display()))?;
    let mut out = fsx::AtomicFile::create(image)?;
    let mut sha512 = Sha512::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = reader
            .read(&mut buffer)
            .with_context(|| format!("decompressing {}", compressed.display()))?;
        if n == 0 {
            break;
        }
        out.write_all(&buffer[..n])
            .with_context(|| format!("writing {} (is the disk full?)", image.display()))?;
        sha512.update(&buffer[..n]);
        size += n as u64;
    }
    out.commit()?;
    Ok((size, hex::encode(&sha512.finalize())))
}

fn discard(paths: &[&Path]) -> anyhow::Result<()> {
    for path in paths {
        fsx::remove_if_present(path)?;
    }
    Ok(())
}
