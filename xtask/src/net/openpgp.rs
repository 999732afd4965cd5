//! OpenPGP signature checks against one pinned public key, done by GnuPG's `gpgv`
//! in a private temporary home: the user's own keyrings and trust settings never
//! take part. Generic: Flatcar images and HashiCorp's SHA256SUMS use the same code.
//!
//! `gpgv` exits 0 for signatures by expired or revoked keys, so its exit status
//! alone proves little: the verdict comes from its `--status-fd` lines, checked
//! against the key's own listing (see [`judge_status`]).

use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::toolchain::tools;

/// A key fingerprint: upper-case hex, 40 digits (v4 keys) or 64 (v5/v6 keys).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(String);

impl FromStr for Fingerprint {
    type Err = String;

    /// Accepts the usual spellings: upper or lower case, grouped with spaces, `0x`.
    fn from_str(s: &str) -> Result<Fingerprint, String> {
        let compact: String = s
            .trim()
            .trim_start_matches("0x")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_uppercase();
        if (compact.len() == 40 || compact.len() == 64)
            && compact.bytes().all(|b| b.is_ascii_hexdigit())
        {
            Ok(Fingerprint(compact))
        } else {
            Err(format!(
                "`{s}` is not an OpenPGP fingerprint (40 or 64 hex digits)"
            ))
        }
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Fingerprint {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One primary key or subkey, as `gpg --with-colons --fixed-list-mode` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub fingerprint: Fingerprint,
    /// Seconds since the epoch.
    pub created: u64,
    pub expires: Option<u64>,
    pub revoked: bool,
    /// gpg found the key's self-signatures unusable (validity `i`).
    pub invalid: bool,
    pub can_sign: bool,
}

/// A public key with its subkeys and user IDs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    pub primary: KeyInfo,
    pub subkeys: Vec<KeyInfo>,
    pub user_ids: Vec<String>,
}

impl Certificate {
    fn key(&self, fingerprint: &Fingerprint) -> Option<&KeyInfo> {
        std::iter::once(&self.primary)
            .chain(&self.subkeys)
            .find(|k| &k.fingerprint == fingerprint)
    }

    /// `<fingerprint> ("<first user ID>")`, for messages.
    pub fn describe(&self) -> String {
        match self.user_ids.first() {
            Some(uid) => format!("{} (\"{uid}\")", self.primary.fingerprint),
            None => self.primary.fingerprint.to_string(),
        }
    }
}

/// Parses `gpg --with-colons --fixed-list-mode --list-keys` (or `--show-keys`)
/// output into certificates, in listing order.
pub fn parse_key_listing(colons: &str) -> anyhow::Result<Vec<Certificate>> {
    let mut certificates: Vec<Certificate> = Vec::new();
    // A `pub`/`sub` record is complete only once its `fpr` record follows.
    let mut pending: Option<(bool, KeyInfo)> = None;
    for (index, line) in colons.lines().enumerate() {
        let fields: Vec<&str> = line.split(':').collect();
        let field = |n: usize| fields.get(n - 1).copied().unwrap_or("");
        let number = index + 1;
        match field(1) {
            kind @ ("pub" | "sub") => {
                if pending.is_some() {
                    bail!("line {number}: key record without a fingerprint before it");
                }
                if kind == "sub" && certificates.is_empty() {
                    bail!("line {number}: subkey before any primary key");
                }
                let created = field(6)
                    .parse()
                    .with_context(|| format!("line {number}: creation time `{}`", field(6)))?;
                let expires = match field(7) {
                    "" => None,
                    text => Some(
                        text.parse()
                            .with_context(|| format!("line {number}: expiry time `{text}`"))?,
                    ),
                };
                let validity = field(2);
                let key = KeyInfo {
                    // Filled in from the `fpr` record that follows.
                    fingerprint: Fingerprint(String::new()),
                    created,
                    expires,
                    revoked: validity == "r",
                    invalid: validity == "i",
                    // Lower-case letters are this key's own capabilities.
                    can_sign: field(12).contains('s'),
                };
                pending = Some((kind == "pub", key));
            }
            "fpr" => {
                if let Some((is_primary, mut key)) = pending.take() {
                    key.fingerprint = field(10)
                        .parse()
                        .map_err(|e: String| anyhow::anyhow!("line {number}: {e}"))?;
                    if is_primary {
                        certificates.push(Certificate {
                            primary: key,
                            subkeys: Vec::new(),
                            user_ids: Vec::new(),
                        });
                    } else if let Some(last) = certificates.last_mut() {
                        last.subkeys.push(key);
                    }
                }
            }
            "uid" => {
                if let Some(last) = certificates.last_mut() {
                    last.user_ids.push(unescape_colons(field(10)));
                }
            }
            _ => {}
        }
    }
    if pending.is_some() {
        bail!("the last key record has no fingerprint");
    }
    Ok(certificates)
}

/// gpg escapes `:` and control characters in user IDs as `\xNN`.
fn unescape_colons(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') && i + 3 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&text[i + 2..i + 4], 16) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A signature that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoodSignature {
    /// The key that made the signature: the primary key or one of its subkeys.
    pub signing_key: Fingerprint,
    pub primary_key: Fingerprint,
    /// When the signature was made, seconds since the epoch.
    pub created: u64,
}

/// The verdict on `gpgv --status-fd` output for a signature checked against
/// `certificate`. Accepts only when every signature in the file is a good one by
/// `certificate`'s primary key or one of its signing subkeys that was neither
/// revoked nor invalid, and that had not expired when the signature was made
/// (Flatcar rotates signing subkeys: old releases carry signatures by subkeys
/// that have expired since). The error is a sentence saying what was wrong.
pub fn judge_status(status: &str, certificate: &Certificate) -> Result<GoodSignature, String> {
    let lines: Vec<Vec<&str>> = status
        .lines()
        .filter_map(|l| l.strip_prefix("[GNUPG:] "))
        .map(|l| l.split(' ').collect())
        .collect();
    let mut groups: Vec<Vec<&Vec<&str>>> = Vec::new();
    for line in &lines {
        if line[0] == "NEWSIG" {
            groups.push(Vec::new());
        } else if let Some(group) = groups.last_mut() {
            group.push(line);
        }
    }
    if groups.is_empty() {
        return Err("the signature file holds no OpenPGP signature".to_owned());
    }
    let mut accepted = None;
    for group in &groups {
        let good = judge_one(group, certificate)?;
        accepted.get_or_insert(good);
    }
    Ok(accepted.expect("at least one group"))
}

fn judge_one(group: &[&Vec<&str>], certificate: &Certificate) -> Result<GoodSignature, String> {
    let find = |keyword: &str| group.iter().find(|l| l[0] == keyword).map(|l| &l[1..]);
    let trusted = certificate.describe();
    if let Some(args) = find("BADSIG") {
        return Err(format!(
            "BAD signature by key {}: the file is not what was signed",
            args.first().unwrap_or(&"?")
        ));
    }
    if let Some(args) = find("ERRSIG") {
        // ERRSIG <keyid> <pkalgo> <hashalgo> <class> <time> <rc> [<fpr>]
        let who = args
            .get(6)
            .filter(|f| !f.is_empty() && **f != "-")
            .or(args.first())
            .unwrap_or(&"?");
        return Err(match args.get(5) {
            Some(&"9") => format!(
                "the signature was made by key {who}, which is not the trusted key {trusted} or one of its subkeys"
            ),
            Some(&"4") => format!("the signature by key {who} uses an algorithm gpgv does not support"),
            _ => format!("the signature by key {who} could not be checked"),
        });
    }
    if find("EXPSIG").is_some() {
        return Err("the signature itself has expired".to_owned());
    }
    let Some(valid) = find("VALIDSIG") else {
        return Err("gpgv reported no valid signature".to_owned());
    };
    if find("GOODSIG").is_none() && find("EXPKEYSIG").is_none() && find("REVKEYSIG").is_none() {
        return Err("gpgv reported no good signature".to_owned());
    }
    // VALIDSIG <fpr> <date> <timestamp> <expire> <version> <reserved> <pkalgo>
    //          <hashalgo> <class> <primary-fpr>
    let signing_key: Fingerprint = valid
        .first()
        .and_then(|f| f.parse().ok())
        .ok_or("gpgv's VALIDSIG line names no fingerprint")?;
    let primary_key: Fingerprint = valid
        .get(9)
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| signing_key.clone());
    let created = valid
        .get(2)
        .and_then(|t| parse_status_time(t))
        .ok_or("gpgv's VALIDSIG line has no signature time")?;
    if primary_key != certificate.primary.fingerprint {
        return Err(format!(
            "the signature was made by key {signing_key} of primary key {primary_key}, not by the trusted key {trusted}"
        ));
    }
    let Some(key) = certificate.key(&signing_key) else {
        return Err(format!(
            "the signature was made by key {signing_key}, which the trusted key {trusted} does not list"
        ));
    };
    let which = if signing_key == primary_key {
        format!("primary key {signing_key}")
    } else {
        format!("subkey {signing_key}")
    };
    for (name, k) in [
        (which.as_str(), key),
        ("the primary key", &certificate.primary),
    ] {
        if k.revoked || find("REVKEYSIG").is_some() {
            return Err(format!(
                "the signature was made by {which} of {trusted}, and {name} has been revoked"
            ));
        }
        if k.invalid {
            return Err(format!(
                "the signature was made by {which} of {trusted}, and {name} has no valid self-signature"
            ));
        }
        if let Some(expires) = k.expires {
            if created >= expires {
                return Err(format!(
                    "the signature was made {} by {which} of {trusted}, but {name} had expired {}",
                    utc(created),
                    utc(expires)
                ));
            }
        }
        if created < k.created {
            return Err(format!(
                "the signature was made {}, before {name} was created {}",
                utc(created),
                utc(k.created)
            ));
        }
    }
    if !key.can_sign {
        return Err(format!(
            "the signature was made by {which}, which is not a signing key"
        ));
    }
    Ok(GoodSignature {
        signing_key,
        primary_key,
        created,
    })
}

/// gpg prints times as seconds since the epoch, or ISO 8601 (`20240131T120000`).
fn parse_status_time(text: &str) -> Option<u64> {
    if let Ok(seconds) = text.parse() {
        return Some(seconds);
    }
    let (date, time) = text.split_once('T')?;
    if date.len() != 8 || time.len() < 6 {
        return None;
    }
    let n = |s: &str| s.parse::<u64>().ok();
    let days = days_from_civil(n(&date[..4])?, n(&date[4..6])?, n(&date[6..8])?)?;
    Some(days * 86_400 + n(&time[..2])? * 3600 + n(&time[2..4])? * 60 + n(&time[4..6])?)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || year < 1970 {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// `2024-01-31 12:00:00 UTC`
pub fn utc(seconds: u64) -> String {
    let days = seconds / 86_400;
    let rest = seconds % 86_400;
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

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
        let home = tempfile::Builder::new()
            .prefix("xtask-gpg-")
            .tempdir()
            .context("creating a temporary GnuPG home")?;
        let dir = home.path().to_path_buf();
        // gpg warns about (and may refuse) a home others can read.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restricting {}", dir.display()))?;
        }
        let key_file = dir.join("key.asc");
        std::fs::write(&key_file, armored)
            .with_context(|| format!("writing {}", key_file.display()))?;
        // --no-autostart: importing and listing public keys needs no gpg-agent,
        // and none should be left running.
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
        let listing = cmd!(
            sh,
            "{gpg} --batch --no-tty --no-autostart --homedir {dir} --with-colons --fixed-list-mode --list-keys"
        )
        .quiet()
        .ignore_stderr()
        .read()
        .with_context(|| format!("listing the key from {origin}"))?;
        let mut certificates = parse_key_listing(&listing)
            .with_context(|| format!("reading gpg's listing of the key from {origin}"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: &str = "650DCC2AA54B3A8D7AD2A3DAF96B8FEC18B2AA13";
    const GOOD_SUB: &str = "CC74D0DC9618F22957A4A6C6B0F130CEDC1E79D4";
    const EXPIRED_SUB: &str = "1E9B2CAA0EE12EC6F2BAF78928F8DC33FD6B4FE5";
    const REVOKED_SUB: &str = "1F1EDADCA8658772D7844270FB49E2097B7AEA8D";
    const CERT_ONLY_SUB: &str = "68B55B68960A9F7B98A9CABFA418BFC76C737544";

    /// What gpg 2.2.40 lists for a test key: one good signing subkey, one that
    /// expired at 1794733176, one revoked, one without the signing capability.
    fn listing() -> String {
        format!(
            "tru::1:1795503752:0:3:1:5\n\
             pub:-:255:22:F96B8FEC18B2AA13:1794639569:::-:::cSC:::::ed25519:::0:\n\
             fpr:::::::::{PRIMARY}:\n\
             uid:-::::1794639569::A02F62172DC809E5A6FC7E06BDE9133B50443BE6::Test Signing \\x3a) <test@example.invalid>::::::::::0:\n\
             sub:-:255:22:B0F130CEDC1E79D4:1794639569::::::s:::::ed25519::\n\
             fpr:::::::::{GOOD_SUB}:\n\
             sub:e:255:22:28F8DC33FD6B4FE5:1794639569:1794733176:::::s:::::ed25519::\n\
             fpr:::::::::{EXPIRED_SUB}:\n\
             sub:r:255:22:FB49E2097B7AEA8D:1795503580::::::s:::::ed25519::\n\
             fpr:::::::::{REVOKED_SUB}:\n\
             sub:-:255:18:A418BFC76C737544:1794639569::::::e:::::cv25519::\n\
             fpr:::::::::{CERT_ONLY_SUB}:\n"
        )
    }

    fn certificate() -> Certificate {
        parse_key_listing(&listing()).unwrap().remove(0)
    }

    fn status(kind: &str, signing: &str, keyid: &str, time: u64) -> String {
        format!(
            "[GNUPG:] NEWSIG\n\
             [GNUPG:] KEYEXPIRED 1794733176\n\
             [GNUPG:] KEY_CONSIDERED {PRIMARY} 0\n\
             [GNUPG:] SIG_ID V/e8RxAtPCvkTvfRFyhIx2VPKQc 2026-11-24 {time}\n\
             [GNUPG:] {kind} {keyid} Test Signing <test@example.invalid>\n\
             [GNUPG:] VALIDSIG {signing} 2026-11-24 {time} 0 4 0 22 8 00 {PRIMARY}\n"
        )
    }

    #[test]
    fn fingerprints_normalise() {
        let f: Fingerprint = "f88c fede ff29 a5b4 d952  3864 e25d 9aed 0593 b34a"
            .parse()
            .unwrap();
        assert_eq!(f.as_str(), "F88CFEDEFF29A5B4D9523864E25D9AED0593B34A");
        assert!("F88CFEDE".parse::<Fingerprint>().is_err());
        assert!("Z".repeat(40).parse::<Fingerprint>().is_err());
    }

    #[test]
    fn parses_gpg_key_listings() {
        let cert = certificate();
        assert_eq!(cert.primary.fingerprint.as_str(), PRIMARY);
        // `cSC`: the primary key itself only certifies; its subkeys sign.
        assert!(!cert.primary.can_sign);
        assert_eq!(cert.user_ids, ["Test Signing :) <test@example.invalid>"]);
        assert_eq!(cert.subkeys.len(), 4);
        assert_eq!(cert.subkeys[1].expires, Some(1794733176));
        assert!(cert.subkeys[2].revoked);
        assert!(!cert.subkeys[3].can_sign);
        assert!(parse_key_listing("").unwrap().is_empty());
        assert!(parse_key_listing("pub:-:255:22:X:1:::-:::cSC:\n").is_err());
        assert!(parse_key_listing("sub:-:255:22:X:1::::::s:\nfpr:::::::::AB:\n").is_err());
    }

    #[test]
    fn accepts_a_good_subkey_signature() {
        let good = judge_status(
            &status("GOODSIG", GOOD_SUB, "B0F130CEDC1E79D4", 1795503576),
            &certificate(),
        )
        .unwrap();
        assert_eq!(good.signing_key.as_str(), GOOD_SUB);
        assert_eq!(good.primary_key.as_str(), PRIMARY);
        assert_eq!(good.created, 1795503576);
    }

    #[test]
    fn accepts_a_subkey_that_expired_after_signing() {
        let good = judge_status(
            &status("EXPKEYSIG", EXPIRED_SUB, "28F8DC33FD6B4FE5", 1794643176),
            &certificate(),
        )
        .unwrap();
        assert_eq!(good.signing_key.as_str(), EXPIRED_SUB);
    }

    #[test]
    fn rejects_a_signature_made_after_the_subkey_expired() {
        let err = judge_status(
            &status("EXPKEYSIG", EXPIRED_SUB, "28F8DC33FD6B4FE5", 1795071576),
            &certificate(),
        )
        .unwrap_err();
        assert!(err.contains("had expired 2026-11-15"), "{err}");
        assert!(err.contains("made 2026-11-19"), "{err}");
    }

    #[test]
    fn rejects_revoked_subkeys_even_when_gpgv_says_good() {
        for kind in ["REVKEYSIG", "GOODSIG"] {
            let err = judge_status(
                &status(kind, REVOKED_SUB, "FB49E2097B7AEA8D", 1795503580),
                &certificate(),
            )
            .unwrap_err();
            assert!(err.contains("has been revoked"), "{err}");
        }
    }

    #[test]
    fn rejects_subkeys_without_the_signing_capability() {
        let err = judge_status(
            &status("GOODSIG", CERT_ONLY_SUB, "A418BFC76C737544", 1795503580),
            &certificate(),
        )
        .unwrap_err();
        assert!(err.contains("not a signing key"), "{err}");
    }

    #[test]
    fn rejects_other_keys_bad_signatures_and_no_signature() {
        let other = "[GNUPG:] NEWSIG\n\
                     [GNUPG:] ERRSIG C68DB4A8D45E4A17 22 8 00 1795503758 9 8DD99D9EBE1D9981FF103077C68DB4A8D45E4A17\n\
                     [GNUPG:] NO_PUBKEY C68DB4A8D45E4A17\n";
        let err = judge_status(other, &certificate()).unwrap_err();
        assert!(
            err.starts_with("the signature was made by key 8DD99D9EBE1D9981FF103077C68DB4A8D45E4A17, which is not the trusted key 650DCC"),
            "{err}"
        );
        let bad = "[GNUPG:] NEWSIG\n[GNUPG:] BADSIG B0F130CEDC1E79D4 Test\n";
        assert!(judge_status(bad, &certificate())
            .unwrap_err()
            .starts_with("BAD signature by key B0F130CEDC1E79D4"));
        let none = "[GNUPG:] NODATA 1\n[GNUPG:] NODATA 2\n";
        assert_eq!(
            judge_status(none, &certificate()).unwrap_err(),
            "the signature file holds no OpenPGP signature"
        );
        let expired_sig = format!(
            "{}[GNUPG:] EXPSIG B0F130CEDC1E79D4 Test\n",
            status("GOODSIG", GOOD_SUB, "B0F130CEDC1E79D4", 1795503576)
        );
        assert!(judge_status(&expired_sig, &certificate()).is_err());
    }

    #[test]
    fn rejects_a_primary_key_it_was_not_given() {
        let status = status("GOODSIG", GOOD_SUB, "B0F130CEDC1E79D4", 1795503576)
            .replace(&format!(" {PRIMARY}\n"), &format!(" {}\n", "A".repeat(40)));
        let err = judge_status(&status, &certificate()).unwrap_err();
        assert!(
            err.contains(&format!("of primary key {}", "A".repeat(40))),
            "{err}"
        );
    }

    #[test]
    fn every_signature_in_the_file_must_pass() {
        let two = format!(
            "{}{}",
            status("GOODSIG", GOOD_SUB, "B0F130CEDC1E79D4", 1795503576),
            status("REVKEYSIG", REVOKED_SUB, "FB49E2097B7AEA8D", 1795503580)
        );
        assert!(judge_status(&two, &certificate()).is_err());
    }

    #[test]
    fn status_times_in_both_formats() {
        assert_eq!(parse_status_time("1795503576"), Some(1795503576));
        assert_eq!(parse_status_time("20261124T065936"), Some(1795503576));
        assert_eq!(parse_status_time("2026-11-24"), None);
        assert_eq!(utc(1795503576), "2026-11-24 06:59:36 UTC");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }
}
