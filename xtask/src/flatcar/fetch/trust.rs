//! Which key the image's signature is checked against: the policy the user
//! chose, and the key itself (Flatcar's pinned key fetched, cached and refreshed,
//! or a key file), learned as cheaply as possible.

use std::path::PathBuf;

use anyhow::{bail, Context};
use xshell::Shell;

use super::{say, FetchOptions, FLATCAR_SIGNING_KEY_FINGERPRINT};
use crate::flatcar::cache::{self, Expected};
use crate::fsx;
use crate::net::download::{Fetched, HttpClient};
use crate::net::openpgp::{Fingerprint, Keyring};

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

/// What the trusted key is, learned as cheaply as possible: the pinned
/// fingerprint is known without running gpg; a key file's fingerprint is
/// known from a cache record made with the same file, else from gpg.
pub(super) struct Trust<'a> {
    policy: &'a SignaturePolicy,
    pub(super) primary: Option<String>,
    pub(super) key_file: Option<(Vec<u8>, String)>,
    pub(super) keyring: Option<Keyring>,
    /// The pinned key was fetched from its URL during this run.
    fresh: bool,
}

impl<'a> Trust<'a> {
    pub(super) fn new(policy: &'a SignaturePolicy) -> anyhow::Result<Trust<'a>> {
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

    pub(super) fn expected(&self) -> Expected<'_> {
        match self.policy {
            SignaturePolicy::InsecureSkip => Expected::Unsigned,
            _ => Expected::Signed {
                primary_key: self.primary.as_deref(),
                key_file_sha256: self.key_file.as_ref().map(|(_, sha)| sha.as_str()),
            },
        }
    }

    /// Imports the key (fetching and caching the pinned key if needed).
    pub(super) fn load(
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
    pub(super) fn refresh(
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
