//! Finding the artifact's signature: a detached `.sig`, or else the clear-signed
//! `.DIGESTS.asc`, with the pinned key refreshed once when a signature names a
//! subkey the cached copy does not have.

use std::path::{Path, PathBuf};

use anyhow::bail;
use xshell::Shell;

use super::trust::Trust;
use super::{discard, FetchOptions};
use crate::flatcar::cache;
use crate::fsx;
use crate::net::download::{Fetched, HttpClient};
use crate::net::openpgp::{GoodSignature, Keyring};

/// How the download is authenticated.
pub(super) enum SignatureSource {
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

/// The artifact's signature, with the pinned key refreshed once when the cached
/// copy does not know the subkey that made it (a rotation, or a revocation this
/// cache has not seen).
pub(super) fn signature_with_known_signer(
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
