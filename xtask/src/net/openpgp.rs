//! OpenPGP signature checks against one pinned public key, done by GnuPG's `gpgv`
//! in a private temporary home: the user's own keyrings and trust settings never
//! take part. Generic: Flatcar images and HashiCorp's SHA256SUMS use the same code.
//!
//! Here: the keyring (import, pin, export) and running `gpgv` over a file or a
//! stream. The key as gpg lists it is `certificate`; the verdict on gpgv's status
//! lines, which decides, is `verdict`.

mod certificate;
mod verdict;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use self::certificate::parse_key_listing;
pub use self::certificate::{Certificate, Fingerprint, KeyInfo};
use self::verdict::judge_status;
pub use self::verdict::GoodSignature;
use crate::toolchain::tools;

/// One public key, imported into a private keyring that `gpgv` checks against.
/// The temporary directory goes away with the value.
pub struct Keyring {
    home: tempfile::TempDir,
    keyring: PathBuf,
    gpgv: PathBuf,
    certificate: Certificate,
}

fn program(name: &str) -> anyhow::Result<PathBuf> {
    tools::find_program(name).with_context(|| {
        format!(
            "{name} is not installed; it checks OpenPGP signatures. Install it: {}",
            tools::tool(name).install_hint(tools::detect_package_manager())
        )
    })
}

/// A temporary GnuPG home only this process can read: gpg warns about (and may
/// refuse) a home others can read.
fn private_home() -> anyhow::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::Builder::new()
        .prefix("xtask-gpg-")
        .tempdir()
        .context("creating a temporary GnuPG home")?;
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", home.path().display()))?;
    Ok(home)
}

/// Imports the armored key `armored` (from `origin`) into the GnuPG home `dir`.
fn import(sh: &Shell, gpg: &Path, dir: &Path, armored: &[u8], origin: &str) -> anyhow::Result<()> {
    let key_file = dir.join("key.asc");
    std::fs::write(&key_file, armored)
        .with_context(|| format!("writing {}", key_file.display()))?;
    // --no-autostart: importing and listing public keys needs no gpg-agent, and none
    // should be left running.
    let import = cmd!(
        sh,
        "{gpg} --batch --no-tty --no-autostart --quiet --homedir {dir} --import {key_file}"
    )
    .quiet()
    .ignore_status()
    .output()
    .with_context(|| format!("running {}", gpg.display()))?;
    if !import.status.success() {
        bail!(
            "{origin} is not a usable OpenPGP public key: {}",
            String::from_utf8_lossy(&import.stderr).trim()
        );
    }
    Ok(())
}

/// The one key `origin` must hold, and the pinned one when a pin is given.
fn the_one_key(
    mut certificates: Vec<Certificate>,
    origin: &str,
    pinned: Option<&Fingerprint>,
) -> anyhow::Result<Certificate> {
    let certificate = match certificates.len() {
        1 => certificates.remove(0),
        0 => bail!("{origin} holds no OpenPGP public key"),
        n => bail!(
            "{origin} holds {n} OpenPGP keys ({}); expected exactly one",
            certificates
                .iter()
                .map(|c| c.primary.fingerprint.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    if let Some(pinned) = pinned {
        if &certificate.primary.fingerprint != pinned {
            bail!(
                "{origin} is key {}, not the pinned key {pinned}; \
                 refusing to trust it",
                certificate.describe()
            );
        }
    }
    Ok(certificate)
}

impl Keyring {
    /// Imports the armored public key `armored` (read from `origin`, a path or URL
    /// named in messages). It must hold exactly one primary key; with `pinned`,
    /// that key's fingerprint must be the pinned one.
    pub fn from_armored(
        sh: &Shell,
        armored: &[u8],
        origin: &str,
        pinned: Option<&Fingerprint>,
    ) -> anyhow::Result<Keyring> {
        let gpg = program("gpg")?;
        let gpgv = program("gpgv")?;
        let home = private_home()?;
        let dir = home.path();
        import(sh, &gpg, dir, armored, origin)?;
        let listing = cmd!(
            sh,
            "{gpg} --batch --no-tty --no-autostart --homedir {dir} --with-colons --fixed-list-mode --list-keys"
        )
        .quiet()
        .ignore_stderr()
        .read()
        .with_context(|| format!("listing the key from {origin}"))?;
        let certificates = parse_key_listing(&listing)
            .with_context(|| format!("reading gpg's listing of the key from {origin}"))?;
        let certificate = the_one_key(certificates, origin, pinned)?;
        let keyring = dir.join("trusted.gpg");
        let primary = certificate.primary.fingerprint.as_str();
        cmd!(
            sh,
            "{gpg} --batch --no-tty --no-autostart --quiet --homedir {dir} --output {keyring} --export {primary}"
        )
        .quiet()
        .run()
        .with_context(|| format!("exporting the key from {origin} into a keyring"))?;
        Ok(Keyring {
            home,
            keyring,
            gpgv,
            certificate,
        })
    }

    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    fn gpgv(&self, args: Vec<OsString>) -> duct::Expression {
        let mut all: Vec<OsString> = vec![
            "--homedir".into(),
            self.home.path().into(),
            "--status-fd".into(),
            "1".into(),
            "--keyring".into(),
            self.keyring.clone().into(),
            // SHA-1 signatures can be forged: refuse them like any bad signature.
            "--weak-digest".into(),
            "SHA1".into(),
        ];
        all.extend(args);
        duct::cmd(&self.gpgv, all)
            .stdout_capture()
            .stderr_capture()
            .unchecked()
    }

    fn verdict(&self, output: &std::process::Output) -> anyhow::Result<GoodSignature> {
        let status = String::from_utf8_lossy(&output.stdout);
        match judge_status(&status, &self.certificate) {
            Ok(good) if output.status.success() => Ok(good),
            Ok(_) => bail!(
                "gpgv failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(problem) => bail!("{problem}"),
        }
    }

    /// Checks the detached signature in `signature` over the file `data` (HashiCorp's
    /// SHA256SUMS; the image download streams through `start_detached` instead).
    pub fn verify_detached(&self, signature: &Path, data: &Path) -> anyhow::Result<GoodSignature> {
        let output = self
            .gpgv(vec!["--".into(), signature.into(), data.into()])
            .run()
            .context("running gpgv")?;
        self.verdict(&output)
    }

    /// Whether every signature in the detached `signature` file was made by a key
    /// this keyring holds (checked over no data: only who signed matters here).
    pub fn knows_signer(&self, signature: &Path) -> anyhow::Result<bool> {
        let output = self
            .gpgv(vec!["--".into(), signature.into(), "/dev/null".into()])
            .run()
            .context("running gpgv")?;
        Ok(!verdict::signer_unknown(&String::from_utf8_lossy(
            &output.stdout,
        )))
    }

    /// Starts checking the detached signature in `signature` over bytes that the
    /// caller writes as they arrive, so that a large download is read only once.
    pub fn start_detached(&self, signature: &Path) -> anyhow::Result<StreamingCheck<'_>> {
        let (reader, writer) = std::io::pipe().context("creating a pipe to gpgv")?;
        let handle = self
            .gpgv(vec!["--".into(), signature.into(), "-".into()])
            .stdin_file(reader)
            .start()
            .context("starting gpgv")?;
        Ok(StreamingCheck {
            keyring: self,
            handle: Some(handle),
            stdin: Some(writer),
        })
    }

    /// Checks the clear-signed file `signed` and returns the text that the
    /// signature covers (never the unsigned text around it).
    pub fn verify_clearsigned(&self, signed: &Path) -> anyhow::Result<(GoodSignature, Vec<u8>)> {
        let out = self.home.path().join(format!(
            "clearsigned-{}.txt",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let output = self
            .gpgv(vec![
                "--output".into(),
                out.clone().into(),
                "--".into(),
                signed.into(),
            ])
            .run()
            .context("running gpgv")?;
        let good = self.verdict(&output)?;
        let text = std::fs::read(&out).with_context(|| format!("reading {}", out.display()))?;
        let _ = std::fs::remove_file(&out);
        Ok((good, text))
    }
}

/// A running `gpgv` that checks a detached signature over bytes written to it.
/// Dropping it unfinished stops gpgv.
pub struct StreamingCheck<'k> {
    keyring: &'k Keyring,
    handle: Option<duct::Handle>,
    stdin: Option<std::io::PipeWriter>,
}

impl StreamingCheck<'_> {
    /// Feeds the next bytes. gpgv stops reading early only when it has already
    /// failed (e.g. the signature file holds no signature): then this returns
    /// that failure.
    pub fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let Some(stdin) = self.stdin.as_mut() else {
            bail!("gpgv has already finished");
        };
        match stdin.write_all(bytes) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {
                self.stdin = None;
                Err(self.finish_inner().err().unwrap_or_else(|| {
                    anyhow::anyhow!("gpgv stopped reading before the end of the data")
                }))
            }
            Err(err) => Err(err).context("writing to gpgv"),
        }
    }

    /// Ends the data and returns gpgv's verdict.
    pub fn finish(mut self) -> anyhow::Result<GoodSignature> {
        self.finish_inner()
    }

    fn finish_inner(&mut self) -> anyhow::Result<GoodSignature> {
        drop(self.stdin.take());
        let handle = self.handle.take().context("gpgv has already finished")?;
        let output = handle.into_output().context("waiting for gpgv")?;
        self.keyring.verdict(&output)
    }
}

impl Drop for StreamingCheck<'_> {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Some(handle) = self.handle.take() {
            let _ = handle.kill();
        }
    }
}
