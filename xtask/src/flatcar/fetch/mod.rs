//! Getting one image of a release (QEMU's, or a platform's own) into the cache, verified: resolve the
//! release once ([`resolve`]), then take a trusted cache entry if there is one,
//! otherwise download the image once while hashing it and feeding it to the
//! signature check, and only then move it into place.

mod check;
mod decompress;
mod signature;
mod trust;
mod verified;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use xshell::Shell;

use super::cache::{self, Expected, Miss};
use super::platform::ReleaseImage;
use super::release::{
    resolve_release, Arch, Channel, Release, ReleaseServer, Version, VersionRequest,
};
use crate::fsx;
use crate::net::download::{HttpClient, Limits, ProgressStyle};
use trust::Trust;
use verified::download_verified;

pub use trust::SignaturePolicy;

/// The primary key that signs Flatcar's official images.
pub const FLATCAR_SIGNING_KEY_FINGERPRINT: &str = "F88CFEDEFF29A5B4D9523864E25D9AED0593B34A";
/// Where Flatcar publishes that key.
pub const FLATCAR_SIGNING_KEY_URL: &str =
    "https://www.flatcar.org/security/image-signing-key/Flatcar_Image_Signing_Key.asc";

/// Everything [`fetch_image`] needs to know.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    pub channel: Channel,
    pub version: VersionRequest,
    pub arch: Arch,
    /// Which of the release's images: QEMU's (what a build boots) or a platform's own.
    pub image: ReleaseImage,
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
    pub image: ReleaseImage,
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

pub(super) fn say(opts: &FetchOptions, message: std::fmt::Arguments<'_>) {
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
            let version = newest_cached(opts, &trust, opts.image.file_name())?;
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
    let image = dir.join(opts.image.file_name());
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
        opts.image,
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
    let file_name = opts.image.file_name();
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
        image: opts.image,
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
        opts.image,
        opts.cache_dir.display()
    )
}

pub(super) fn discard(paths: &[&Path]) -> anyhow::Result<()> {
    for path in paths {
        fsx::remove_if_present(path)?;
    }
    Ok(())
}
