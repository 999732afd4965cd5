//! Downloading a release's image when the cache has no trusted copy: find the
//! artifact and its DIGESTS, fetch the signature, stream the download through
//! the checks, judge it, and only then move it into the cache with its record.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use xshell::Shell;

use super::check::{Checked, ImageCheck};
use super::decompress::decompress_into_place;
use super::signature::{signature_with_known_signer, SignatureSource};
use super::trust::Trust;
use super::{discard, say, FetchOptions, SignatureRecord, VerifiedImage};
use crate::flatcar::cache::{self, Record, SignatureBinding};
use crate::flatcar::digests::{parse_digests, HashAlgorithm};
use crate::flatcar::release::Release;
use crate::net::download::{Fetched, HttpClient};
use crate::net::openpgp::{GoodSignature, Keyring};
use crate::{fsx, utc};

/// The file the release serves for the image (the image itself or, in older
/// releases, only its `.bz2`), and the DIGESTS that lists it.
struct Artifact {
    /// Its file name on the server and in the cache entry.
    name: String,
    url: String,
    /// Where it is kept in the cache entry.
    path: PathBuf,
    digests_url: String,
}

impl SignatureSource {
    /// The signature's URL, when there is one.
    fn url(&self) -> Option<&str> {
        match self {
            SignatureSource::Detached { url, .. }
            | SignatureSource::ClearsignedDigests { url, .. } => Some(url),
            SignatureSource::None => None,
        }
    }

    /// The signature's file in the cache entry, when there is one.
    fn path(&self) -> Option<&Path> {
        match self {
            SignatureSource::Detached { path, .. }
            | SignatureSource::ClearsignedDigests { path, .. } => Some(path),
            SignatureSource::None => None,
        }
    }

    /// The URL of a signature streamed with the download; "" otherwise.
    fn detached_url(&self) -> &str {
        match self {
            SignatureSource::Detached { url, .. } => url,
            _ => "",
        }
    }
}

pub(super) fn download_verified(
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
    let (artifact, digests) = find_artifact(opts, client, release, dir, file_name)?;
    let signature = match trust.keyring.is_some() {
        false => SignatureSource::None,
        true => {
            signature_with_known_signer(sh, client, opts, trust, &artifact.url, &artifact.path)?
        }
    };
    let key_file_sha256 = trust.key_file.as_ref().map(|(_, sha)| sha.clone());
    let keyring = trust.keyring.as_ref();
    let digests_text = signed_digests(keyring, &signature, digests)?;
    let expected_sha512 = expected_sha512(&digests_text, &artifact)?;

    let part = cache::sibling(&artifact.path, ".part");
    let (size, final_url, checked) = stream(opts, client, keyring, &signature, &artifact, &part)?;
    let actual_sha512 = checked.sha512.clone();
    let good = judge(
        &signature,
        checked,
        &expected_sha512,
        &artifact,
        &part,
        size,
    )?;
    report_verified(opts, &artifact.name, signature.url(), good.as_ref());

    let compressed = artifact.name != file_name;
    let (final_size, final_sha512, source_sha512) =
        into_place(&part, &image, compressed, size, actual_sha512)?;
    fsx::write_atomically(&cache::sibling(&artifact.path, ".DIGESTS"), &digests_text)?;
    fsx::write_atomically(&dir.join("version.txt"), &release.version_txt)?;
    let signature_file = signature.path().map(Path::to_path_buf);
    let record = Record {
        file: file_name.to_owned(),
        size: final_size,
        sha512: final_sha512.clone(),
        source_url: artifact.url.clone(),
        final_url: Some(final_url.clone()),
        source_sha512,
        signature: binding(good.as_ref(), signature_file.as_deref(), key_file_sha256)?,
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
        image: opts.image,
        path: image,
        size: final_size,
        sha512: final_sha512,
        source_url: artifact.url,
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

/// Moves the verified download to `image`, decompressing it when `compressed`.
/// Returns the image's size and SHA-512, and the compressed file's SHA-512.
fn into_place(
    part: &Path,
    image: &Path,
    compressed: bool,
    size: u64,
    sha512: String,
) -> anyhow::Result<(u64, String, Option<String>)> {
    if compressed {
        let (image_size, image_sha512) = decompress_into_place(part, image)?;
        fsx::remove_if_present(part)?;
        Ok((image_size, image_sha512, Some(sha512)))
    } else {
        fsx::rename_durably(part, image)?;
        Ok((size, sha512, None))
    }
}

/// Which artifact the release serves: the plain image, or (older releases) only
/// its .bz2; known from which of them has a DIGESTS file, returned with it.
fn find_artifact(
    opts: &FetchOptions,
    client: &HttpClient,
    release: &Release,
    dir: &Path,
    file_name: &str,
) -> anyhow::Result<(Artifact, Vec<u8>)> {
    let candidates = [file_name.to_owned(), format!("{file_name}.bz2")];
    let mut answers = Vec::new();
    for candidate in candidates {
        let url = format!("{}{candidate}.DIGESTS", release.url);
        match client.get_small(&url)? {
            Fetched::Found(bytes) => {
                let artifact = Artifact {
                    url: format!("{}{candidate}", release.url),
                    path: dir.join(&candidate),
                    name: candidate,
                    digests_url: url,
                };
                return Ok((artifact, bytes));
            }
            Fetched::NotFound(status) => answers.push(format!("{url} answered {status}")),
        }
    }
    bail!(
        "Flatcar {} {} has no {file_name} for {} (neither it nor its .bz2 is listed: {}); \
         this release may not be built for {}",
        release.channel,
        release.version,
        release.arch,
        answers.join(", "),
        opts.image
    )
}

/// The DIGESTS to trust: the text a clear signature covers, never the unsigned
/// copy beside it; otherwise the copy as served.
fn signed_digests(
    keyring: Option<&Keyring>,
    signature: &SignatureSource,
    served: Vec<u8>,
) -> anyhow::Result<Vec<u8>> {
    match signature {
        SignatureSource::ClearsignedDigests { path, .. } => {
            let (_, text) = keyring
                .expect("a signature source implies a keyring")
                .verify_clearsigned(path)?;
            Ok(text)
        }
        _ => Ok(served),
    }
}

/// The artifact's SHA-512 as the DIGESTS lists it.
fn expected_sha512(digests_text: &[u8], artifact: &Artifact) -> anyhow::Result<String> {
    let Artifact {
        name, digests_url, ..
    } = artifact;
    std::str::from_utf8(digests_text)
        .map_err(|_| anyhow::anyhow!("not UTF-8 text"))
        .and_then(parse_digests)
        .with_context(|| format!("{digests_url} is not a valid DIGESTS file"))?
        .find(&HashAlgorithm::Sha512, name)
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "{digests_url} has no SHA512 entry for {name}, so the download could not be checked; \
                 nothing was downloaded"
            )
        })
}

/// Downloads the artifact into `part`, hashing it and checking a detached
/// signature on the way. Returns its size, the URL that served it, and what the
/// checks found. A download the signature rejected midway is deleted; one cut
/// short by the network stays for the next run to resume.
fn stream(
    opts: &FetchOptions,
    client: &HttpClient,
    keyring: Option<&Keyring>,
    signature: &SignatureSource,
    artifact: &Artifact,
    part: &Path,
) -> anyhow::Result<(u64, String, Checked)> {
    let (signature_path, streaming_keyring) = match signature {
        SignatureSource::Detached { path, .. } => (path.clone(), keyring),
        _ => (PathBuf::new(), None),
    };
    let artifact_url = &artifact.url;
    say(opts, format_args!("Downloading {artifact_url}"));
    let (downloaded, checked) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let mut check = ImageCheck::start(scope, streaming_keyring, &signature_path)?;
        let downloaded = client.download(artifact_url, part, &mut check);
        Ok((downloaded, check.finish()))
    })?;
    match downloaded {
        Ok(Fetched::Found(done)) => Ok((done.size, done.final_url, checked)),
        Ok(Fetched::NotFound(status)) => {
            discard(&[part])?;
            bail!(
                "{artifact_url} answered {status}, though {} lists it; \
                 the release server is incomplete (try again later or another mirror)",
                artifact.digests_url
            )
        }
        Err(err) => {
            if let (true, Some(Err(rejection))) = (checked.rejected_early, checked.signature) {
                discard(&[part])?;
                return Err(rejection.context(format!(
                    "the OpenPGP signature {} does not verify {artifact_url}; \
                     the download was stopped and deleted",
                    signature.detached_url()
                )));
            }
            // A network failure: the partial file stays for the next run to resume.
            Err(err)
        }
    }
}

/// Every check of a finished download, every failure listed: the good signature
/// (if one was checked) and the failures, SHA-512 first.
fn verdict(
    signature: &SignatureSource,
    streamed: Option<anyhow::Result<GoodSignature>>,
    actual_sha512: &str,
    expected_sha512: &str,
    digests_url: &str,
) -> (Option<GoodSignature>, Vec<String>) {
    let mut failures = Vec::new();
    if actual_sha512 != expected_sha512 {
        failures.push(format!(
            "SHA-512 mismatch: the download is {actual_sha512}, {digests_url} says {expected_sha512}"
        ));
    }
    let good = match (signature, streamed) {
        (SignatureSource::Detached { .. }, Some(Ok(good))) => Some(good),
        (SignatureSource::Detached { url, .. }, Some(Err(err))) => {
            failures.push(format!("OpenPGP signature {url}: {err:#}"));
            None
        }
        (SignatureSource::Detached { .. }, None) => {
            unreachable!("a detached signature is always streamed")
        }
        (SignatureSource::ClearsignedDigests { good, .. }, _) => Some(good.clone()),
        (SignatureSource::None, _) => None,
    };
    (good, failures)
}

/// The [`verdict`] on the download; on any failure the download and its
/// signature are deleted and nothing is cached.
fn judge(
    signature: &SignatureSource,
    checked: Checked,
    expected_sha512: &str,
    artifact: &Artifact,
    part: &Path,
    size: u64,
) -> anyhow::Result<Option<GoodSignature>> {
    let actual_sha512 = checked.sha512;
    let (good, failures) = verdict(
        signature,
        checked.signature,
        &actual_sha512,
        expected_sha512,
        &artifact.digests_url,
    );
    if failures.is_empty() {
        return Ok(good);
    }
    let mut doomed: Vec<&Path> = vec![part];
    doomed.extend(signature.path());
    discard(&doomed)?;
    let advice = if actual_sha512 != expected_sha512 {
        "Run again to download it afresh; if this persists, the server sends a damaged or forged file."
    } else {
        "The bytes match DIGESTS, but not a signature by the trusted key: do not use this \
         server's image, or (a custom Flatcar build) name its key with --signing-key."
    };
    bail!(
        "{} ({size} bytes) failed verification and was deleted; nothing was cached:\n  - {}\n{advice}",
        artifact.url,
        failures.join("\n  - ")
    );
}

fn report_verified(
    opts: &FetchOptions,
    artifact: &str,
    signature_url: Option<&str>,
    good: Option<&GoodSignature>,
) {
    if let (Some(good), Some(url)) = (good, signature_url) {
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
}

/// What the cache record says about the signature that vouched for the image.
fn binding(
    good: Option<&GoodSignature>,
    file: Option<&Path>,
    key_file_sha256: Option<String>,
) -> anyhow::Result<Option<SignatureBinding>> {
    let (Some(good), Some(file)) = (good, file) else {
        return Ok(None);
    };
    Ok(Some(SignatureBinding {
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
    }))
}
