//! The one OpenPGP signer of the test bed: a key generated in a throwaway GnuPG home,
//! shaped like Flatcar's (a certification-only primary key, signing subkeys), that
//! makes detached and clear-signed signatures and exports its public half. Key
//! states a verifier must refuse (expired, revoked subkeys; signatures made at
//! another time) are explicit calls. The home's gpg-agent is stopped and the home
//! removed when the signer is dropped.

use std::path::{Path, PathBuf};

use anyhow::Context;
use xshell::{cmd, Shell};

/// What a signature file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// A binary signature of the file, kept apart from it (`.sig`).
    Detached,
    /// The file's text with an armored signature around it (`.asc`).
    ClearSigned,
}

/// A signature to make: by which subkey, and at what time.
#[derive(Clone, Copy)]
pub struct Signing<'a> {
    pub signer: &'a Signer,
    /// The subkey's fingerprint; `None`: the signer's first signing subkey.
    pub subkey: Option<&'a str>,
    /// Unix seconds to sign at (gpg's faked system time); `None`: now.
    pub at: Option<u64>,
}

impl Signing<'_> {
    /// Writes `output`, a signature of `file` in `form`.
    pub fn sign(&self, form: Form, file: &Path, output: &Path) -> anyhow::Result<()> {
        let subkey = self.subkey.unwrap_or(&self.signer.subkey);
        self.signer.sign_as(subkey, self.at, form, file, output)
    }
}

/// A generated key in its own GnuPG home.
pub struct Signer {
    /// Removed when dropped, after the agent is stopped (fields drop after `drop`).
    home_dir: tempfile::TempDir,
    sh: Shell,
    /// The primary key's fingerprint.
    fingerprint: String,
    /// The first signing subkey's fingerprint.
    subkey: String,
}

impl Signer {
    /// A key for `uid` made now: a certification-only primary key and one signing
    /// subkey.
    pub fn new(uid: &str) -> anyhow::Result<Signer> {
        Signer::created_at(uid, None)
    }

    /// The same, with keys created at `at` (Unix seconds), so that later signatures
    /// and expiry dates can be placed around it.
    pub fn created_at(uid: &str, at: Option<u64>) -> anyhow::Result<Signer> {
        // In the system's temp dir, not the workspace: gpg-agent's socket path must
        // stay short. Mode 0700, or gpg warns about unsafe permissions.
        let home_dir = tempfile::Builder::new()
            .prefix("xtask-gnupg-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .context("creating a GnuPG home for a signing key")?;
        let mut signer = Signer {
            home_dir,
            sh: Shell::new().context("setting up a shell for gpg")?,
            fingerprint: String::new(),
            subkey: String::new(),
        };
        signer
            .gpg(
                at,
                &["--quick-generate-key", uid, "ed25519", "cert", "never"],
            )
            .with_context(|| format!("generating the key `{uid}`"))?;
        signer.fingerprint = signer.fingerprints()?[0].clone();
        signer.subkey = signer.add_signing_subkey(at)?;
        Ok(signer)
    }

    /// The primary key's fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The first signing subkey's fingerprint.
    pub fn subkey(&self) -> &str {
        &self.subkey
    }

    /// The GnuPG home (for a verifier that should use this keyring).
    pub fn home(&self) -> &Path {
        self.home_dir.path()
    }

    /// Adds a signing subkey created at `at` (now for `None`); its fingerprint.
    pub fn add_signing_subkey(&self, at: Option<u64>) -> anyhow::Result<String> {
        let primary = self.fingerprint.as_str();
        self.gpg(
            at,
            &["--quick-add-key", primary, "ed25519", "sign", "never"],
        )
        .context("adding a signing subkey")?;
        self.fingerprints()?
            .pop()
            .context("gpg listed no subkey after adding one")
    }

    /// A signature by the first signing subkey, made now.
    pub fn signing(&self) -> Signing<'_> {
        Signing {
            signer: self,
            subkey: None,
            at: None,
        }
    }

    /// Writes `output`, a signature of `file` in `form` by the first signing subkey.
    pub fn sign(&self, form: Form, file: &Path, output: &Path) -> anyhow::Result<()> {
        self.signing().sign(form, file, output)
    }

    fn sign_as(
        &self,
        subkey: &str,
        at: Option<u64>,
        form: Form,
        file: &Path,
        output: &Path,
    ) -> anyhow::Result<()> {
        let mode = match form {
            Form::Detached => "--detach-sign",
            Form::ClearSigned => "--clearsign",
        };
        let (key, out, input) = (format!("{subkey}!"), path_arg(output), path_arg(file));
        self.gpg(
            at,
            &[
                "--yes",
                "--local-user",
                &key,
                "--output",
                &out,
                mode,
                &input,
            ],
        )
        .with_context(|| format!("signing {}", file.display()))
        .map(drop)
    }

    /// The armored public key, primary and subkeys.
    pub fn public_key(&self) -> anyhow::Result<String> {
        self.gpg(None, &["--armor", "--export", &self.fingerprint])
            .map(|key| key + "\n")
            .context("exporting the public key")
    }

    /// Writes the public key to `path`: armored, or binary (a keyring for `gpgv`).
    pub fn write_public_key(&self, path: &Path, armored: bool) -> anyhow::Result<()> {
        if armored {
            let key = self.public_key()?;
            return std::fs::write(path, key)
                .with_context(|| format!("writing {}", path.display()));
        }
        let out = path_arg(path);
        self.gpg(
            None,
            &["--yes", "--output", &out, "--export", &self.fingerprint],
        )
        .with_context(|| format!("writing {}", path.display()))
        .map(drop)
    }

    /// Sets the expiry of `subkeys` to `expiry` (gpg's spelling: `1d`, `2y`), as if
    /// done at `at`.
    pub fn expire_subkeys(
        &self,
        at: Option<u64>,
        expiry: &str,
        subkeys: &[&str],
    ) -> anyhow::Result<()> {
        let mut args = vec!["--quick-set-expire", &self.fingerprint, expiry];
        args.extend_from_slice(subkeys);
        self.gpg(at, &args)
            .context("setting the subkeys' expiry")
            .map(drop)
    }

    /// Revokes the `n`th subkey (1: the first) through `--edit-key`: gpg has no
    /// quick command for it.
    pub fn revoke_subkey(&self, n: usize) -> anyhow::Result<()> {
        let home = self.home();
        let primary = &self.fingerprint;
        // key N, revkey, confirm, reason 0, empty description, confirm, save.
        let answers = format!("key {n}\nrevkey\ny\n0\n\ny\nsave\n");
        cmd!(
            self.sh,
            "gpg --homedir {home} --batch --no-tty --command-fd 0 --edit-key {primary}"
        )
        .stdin(answers)
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .with_context(|| format!("revoking subkey {n}"))
    }

    /// `gpg --with-colons --list-keys` of this key.
    pub fn listing(&self) -> anyhow::Result<String> {
        self.gpg(None, &["--with-colons", "--list-keys", &self.fingerprint])
            .context("listing the key")
    }

    /// The primary key's fingerprint, then the subkeys' in listing order.
    fn fingerprints(&self) -> anyhow::Result<Vec<String>> {
        let listing = self
            .gpg(None, &["--with-colons", "--fingerprint", "--list-keys"])
            .context("listing the key")?;
        let fingerprints: Vec<String> = listing
            .lines()
            .filter(|line| line.starts_with("fpr:"))
            .filter_map(|line| line.split(':').nth(9))
            .map(str::to_owned)
            .collect();
        anyhow::ensure!(!fingerprints.is_empty(), "gpg listed no key:\n{listing}");
        Ok(fingerprints)
    }

    /// Runs gpg in this home, unattended, at `at` if given; its stdout.
    fn gpg(&self, at: Option<u64>, args: &[&str]) -> anyhow::Result<String> {
        let home = self.home();
        let faked: Vec<String> = at
            .map(|at| vec!["--faked-system-time".to_owned(), format!("{at}!")])
            .unwrap_or_default();
        let output = cmd!(
            self.sh,
            "gpg --homedir {home} --batch --no-tty --pinentry-mode loopback --passphrase '' {faked...} {args...}"
        )
        .quiet()
        .ignore_status()
        .output()
        .context("running gpg")?;
        anyhow::ensure!(
            output.status.success(),
            "gpg {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        String::from_utf8(output.stdout).context("gpg's output is not UTF-8")
    }
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

impl Drop for Signer {
    fn drop(&mut self) {
        // gpg started an agent for this home; stop it before the home goes.
        let _ = duct::cmd!(
            "gpgconf",
            "--homedir",
            self.home_dir.path(),
            "--kill",
            "all"
        )
        .stdout_null()
        .stderr_null()
        .unchecked()
        .run();
    }
}

/// `file` with `suffix` appended to its name (`image.img` → `image.img.sig`).
pub fn with_suffix(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::openpgp::Keyring;

    /// gpg for real, checked by the build's own verifier.
    #[test]
    fn signatures_verify_with_the_exported_key_and_the_home_goes() {
        let signer = Signer::new("Test Signer <test@localhost>").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data");
        std::fs::write(&file, "signed bytes\n").unwrap();
        signer
            .sign(Form::Detached, &file, &with_suffix(&file, ".sig"))
            .unwrap();
        signer
            .sign(Form::ClearSigned, &file, &with_suffix(&file, ".asc"))
            .unwrap();
        let sh = Shell::new().unwrap();
        let key = signer.public_key().unwrap();
        let keyring = Keyring::from_armored(&sh, key.as_bytes(), "the test key", None).unwrap();
        keyring
            .verify_detached(&with_suffix(&file, ".sig"), &file)
            .unwrap();
        let (_, text) = keyring
            .verify_clearsigned(&with_suffix(&file, ".asc"))
            .unwrap();
        assert_eq!(text, b"signed bytes\n");
        assert_eq!(signer.fingerprint().len(), 40);
        assert_ne!(signer.fingerprint(), signer.subkey());

        let other = signer.add_signing_subkey(None).unwrap();
        signer.revoke_subkey(2).unwrap();
        let listing = signer.listing().unwrap();
        let revoked = listing
            .lines()
            .filter(|l| l.starts_with("sub:"))
            .map(|l| l.split(':').nth(1).unwrap())
            .collect::<Vec<_>>();
        assert_eq!(revoked, ["u", "r"], "{listing}");
        assert!(listing.contains(&other));

        let home = signer.home().to_path_buf();
        drop(signer);
        assert!(!home.exists(), "{} is left behind", home.display());
    }
}
