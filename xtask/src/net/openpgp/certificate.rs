//! A public key as `gpg --with-colons --fixed-list-mode` lists it: its fingerprint,
//! its subkeys with their creation and expiry times, revocation and capabilities,
//! and its user IDs. What a signature is judged against (`verdict`).

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context};

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
    /// The primary key or the subkey with this fingerprint.
    pub fn key(&self, fingerprint: &Fingerprint) -> Option<&KeyInfo> {
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

/// The test key of the unit tests: gpg 2.2.40's listing of a key with one good
/// signing subkey, one that expired at 1794733176, one revoked, one without the
/// signing capability.
#[cfg(test)]
pub(super) mod test_key {
    use super::{parse_key_listing, Certificate};

    pub const PRIMARY: &str = "650DCC2AA54B3A8D7AD2A3DAF96B8FEC18B2AA13";
    pub const GOOD_SUB: &str = "CC74D0DC9618F22957A4A6C6B0F130CEDC1E79D4";
    pub const EXPIRED_SUB: &str = "1E9B2CAA0EE12EC6F2BAF78928F8DC33FD6B4FE5";
    pub const REVOKED_SUB: &str = "1F1EDADCA8658772D7844270FB49E2097B7AEA8D";
    pub const CERT_ONLY_SUB: &str = "68B55B68960A9F7B98A9CABFA418BFC76C737544";

    pub fn listing() -> String {
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

    pub fn certificate() -> Certificate {
        parse_key_listing(&listing()).unwrap().remove(0)
    }
}

#[cfg(test)]
mod tests {
    use super::test_key::*;
    use super::*;

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
}
