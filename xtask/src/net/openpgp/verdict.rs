//! The verdict on a signature: `gpgv --status-fd` lines read against the trusted
//! key's own listing. `gpgv` exits 0 for signatures by expired or revoked keys, so
//! its exit status alone proves little.

use super::certificate::{Certificate, Fingerprint, KeyInfo};
use crate::utc;

/// A signature that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoodSignature {
    /// The key that made the signature: the primary key or one of its subkeys.
    pub signing_key: Fingerprint,
    pub primary_key: Fingerprint,
    /// When the signature was made, seconds since the epoch.
    pub created: u64,
}

/// Whether `gpgv --status-fd` output says a signature was made by a key the
/// keyring lacks (`ERRSIG` with reason 9, `NO_PUBKEY`).
pub fn signer_unknown(status: &str) -> bool {
    status.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.get(1) {
            Some(&"NO_PUBKEY") => true,
            Some(&"ERRSIG") => fields.get(7) == Some(&"9"),
            _ => false,
        }
    })
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
    let trusted = certificate.describe();
    if let Some(failure) = reported_failure(group, &trusted) {
        return Err(failure);
    }
    let signature = valid_signature(group)?;
    let GoodSignature {
        signing_key,
        primary_key,
        created,
    } = &signature;
    if *primary_key != certificate.primary.fingerprint {
        return Err(format!(
            "the signature was made by key {signing_key} of primary key {primary_key}, not by the trusted key {trusted}"
        ));
    }
    let Some(key) = certificate.key(signing_key) else {
        return Err(format!(
            "the signature was made by key {signing_key}, which the trusted key {trusted} does not list"
        ));
    };
    let which = if signing_key == primary_key {
        format!("primary key {signing_key}")
    } else {
        format!("subkey {signing_key}")
    };
    let key_use = KeyUse {
        which: &which,
        trusted: &trusted,
        created: *created,
        revocation_reported: args_of(group, "REVKEYSIG").is_some(),
    };
    key_use.check(&which, key)?;
    key_use.check("the primary key", &certificate.primary)?;
    if !key.can_sign {
        return Err(format!(
            "the signature was made by {which}, which is not a signing key"
        ));
    }
    Ok(signature)
}

/// The arguments of the status line `keyword` in one signature's group.
fn args_of<'a>(group: &[&'a Vec<&'a str>], keyword: &str) -> Option<&'a [&'a str]> {
    group.iter().find(|l| l[0] == keyword).map(|l| &l[1..])
}

/// What gpgv itself found wrong: a bad signature, one it could not check, or one
/// that has expired.
fn reported_failure(group: &[&Vec<&str>], trusted: &str) -> Option<String> {
    if let Some(args) = args_of(group, "BADSIG") {
        return Some(format!(
            "BAD signature by key {}: the file is not what was signed",
            args.first().unwrap_or(&"?")
        ));
    }
    if let Some(args) = args_of(group, "ERRSIG") {
        // ERRSIG <keyid> <pkalgo> <hashalgo> <class> <time> <rc> [<fpr>]
        let who = args
            .get(6)
            .filter(|f| !f.is_empty() && **f != "-")
            .or(args.first())
            .unwrap_or(&"?");
        return Some(match args.get(5) {
            Some(&"9") => format!(
                "the signature was made by key {who}, which is not the trusted key {trusted} or one of its subkeys"
            ),
            Some(&"4") => format!("the signature by key {who} uses an algorithm gpgv does not support"),
            Some(&"5") => format!(
                "the signature by key {who} uses a digest algorithm refused as too weak (SHA-1 can be forged)"
            ),
            _ => format!("the signature by key {who} could not be checked"),
        });
    }
    if args_of(group, "EXPSIG").is_some() {
        return Some("the signature itself has expired".to_owned());
    }
    None
}

/// The key and time of a signature gpgv found valid, from its VALIDSIG line; not yet
/// judged against the trusted certificate.
fn valid_signature(group: &[&Vec<&str>]) -> Result<GoodSignature, String> {
    let Some(valid) = args_of(group, "VALIDSIG") else {
        return Err("gpgv reported no valid signature".to_owned());
    };
    if ["GOODSIG", "EXPKEYSIG", "REVKEYSIG"]
        .iter()
        .all(|keyword| args_of(group, keyword).is_none())
    {
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
    Ok(GoodSignature {
        signing_key,
        primary_key,
        created,
    })
}

/// A signature made at `created` by `which` (the signing key) of `trusted`: the
/// facts every key it depends on is held against.
struct KeyUse<'a> {
    which: &'a str,
    trusted: &'a str,
    created: u64,
    /// gpgv reported the signing key revoked (REVKEYSIG).
    revocation_reported: bool,
}

impl KeyUse<'_> {
    /// Whether key `k`, called `name` in messages, was usable for the signature: not
    /// revoked or invalid, and alive when the signature was made.
    fn check(&self, name: &str, k: &KeyInfo) -> Result<(), String> {
        let KeyUse {
            which,
            trusted,
            created,
            ..
        } = *self;
        if k.revoked || self.revocation_reported {
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
                    utc::format(created),
                    utc::format(expires)
                ));
            }
        }
        if created < k.created {
            return Err(format!(
                "the signature was made {}, before {name} was created {}",
                utc::format(created),
                utc::format(k.created)
            ));
        }
        Ok(())
    }
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
    utc::seconds_since_epoch(
        (n(&date[..4])?, n(&date[4..6])?, n(&date[6..8])?),
        (n(&time[..2])?, n(&time[2..4])?, n(&time[4..6])?),
    )
}

#[cfg(test)]
mod tests {
    use super::super::certificate::test_key::*;
    use super::*;

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
    fn status_times_come_in_two_formats() {
        assert_eq!(parse_status_time("1795503576"), Some(1795503576));
        assert_eq!(parse_status_time("20261124T065936"), Some(1795503576));
        assert_eq!(parse_status_time("2026-11-24"), None);
    }
}
