//! Published checksums: which algorithm, and reading the files upstreams publish
//! them in (a bare hex digest as dl.k8s.io writes it, `<hex>  <name>` as GitHub
//! release assets carry it, or a whole sha256sum listing naming several files).

use std::fmt;

use serde::Serialize;
use sha2::Digest;

/// A hash algorithm a checksum is published with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Hex digits in a digest.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha512 => "SHA-512",
        })
    }
}

/// A running hash of either algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// Lower-case hex.
    pub fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => crate::hex::encode(&h.finalize()),
            Hasher::Sha512(h) => crate::hex::encode(&h.finalize()),
        }
    }
}

/// Whether `text` is a digest of `algorithm` in hex.
pub fn is_digest(text: &str, algorithm: Algorithm) -> bool {
    text.len() == algorithm.hex_len() && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The digest a checksum file gives for `file_name`, lower-case: a bare digest, or
/// the line of a `<hex>  <name>` / `<hex> *<name>` listing that names the file
/// (a path before the name is allowed, as sha256sum writes it). A listing of one
/// line is taken whatever name it gives, as upstreams name the file they had.
pub fn parse_checksum_file(
    text: &str,
    file_name: &str,
    algorithm: Algorithm,
) -> Result<String, String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let entries: Vec<(&str, Option<&str>)> = lines
        .iter()
        .map(|line| match line.split_once(char::is_whitespace) {
            Some((hex, name)) => (hex, Some(name.trim().trim_start_matches('*'))),
            None => (*line, None),
        })
        .collect();
    let named = |name: Option<&str>| {
        name.is_some_and(|n| n == file_name || n.rsplit('/').next() == Some(file_name))
    };
    let chosen = match entries[..] {
        [] => return Err("it is empty".into()),
        [(hex, _)] => hex,
        _ => match entries.iter().find(|(_, name)| named(*name)) {
            Some((hex, _)) => hex,
            None => return Err(format!("no line names {file_name}")),
        },
    };
    if !is_digest(chosen, algorithm) {
        return Err(format!(
            "`{}` is not a {algorithm} digest ({} hex digits)",
            chosen.chars().take(140).collect::<String>(),
            algorithm.hex_len()
        ));
    }
    Ok(chosen.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "fdcdb9b24f1a7726003586503fdeb264fd68fc37fbfcea022dcfe825a7fee18b";

    #[test]
    fn reads_the_upstream_formats() {
        let s = Algorithm::Sha256;
        assert_eq!(
            parse_checksum_file(&format!("{HEX}\n"), "kubeadm", s),
            Ok(HEX.into())
        );
        let upper = HEX.to_ascii_uppercase();
        assert_eq!(parse_checksum_file(&upper, "kubeadm", s), Ok(HEX.into()));
        assert_eq!(
            parse_checksum_file(&format!("{HEX}  cni.tgz\n"), "cni.tgz", s),
            Ok(HEX.into())
        );
        // One line is taken whatever name it gives.
        assert_eq!(
            parse_checksum_file(&format!("{HEX}  other.tgz\n"), "cni.tgz", s),
            Ok(HEX.into())
        );
        let other = "ab".repeat(32);
        let listing = format!("{other}  a.tgz\n{HEX} *dist/cni.tgz\n");
        assert_eq!(parse_checksum_file(&listing, "cni.tgz", s), Ok(HEX.into()));
        assert_eq!(
            parse_checksum_file(&listing, "x.tgz", s),
            Err("no line names x.tgz".into())
        );
    }

    #[test]
    fn refuses_what_is_not_a_digest() {
        let s = Algorithm::Sha256;
        assert_eq!(
            parse_checksum_file(" \n", "f", s),
            Err("it is empty".into())
        );
        let err = parse_checksum_file("<html>404</html>", "f", s).unwrap_err();
        assert!(
            err.contains("not a SHA-256 digest (64 hex digits)"),
            "{err}"
        );
        let sha512 = "ab".repeat(64);
        assert!(parse_checksum_file(&sha512, "f", s).is_err());
        assert!(parse_checksum_file(&sha512, "f", Algorithm::Sha512).is_ok());
    }

    #[test]
    fn hashes_with_either_algorithm() {
        let mut h = Algorithm::Sha256.hasher();
        h.update(b"abc");
        assert_eq!(
            h.finish(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut h = Algorithm::Sha512.hasher();
        h.update(b"");
        assert!(h.finish().starts_with("cf83e1357eefb8bd"));
    }
}
