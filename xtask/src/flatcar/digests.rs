//! The `.DIGESTS` files of the release server: sections headed `# <ALGO> HASH`,
//! each followed by `<hex>  <file name>` lines.

use anyhow::bail;

/// A hash algorithm a DIGESTS file may list. Sections with other names are kept
/// under [`HashAlgorithm::Other`] so that a new section never breaks parsing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashAlgorithm {
    Md5,
    Sha1,
    Sha256,
    Sha512,
    Other(String),
}

impl HashAlgorithm {
    fn from_section(name: &str) -> HashAlgorithm {
        match name.to_ascii_uppercase().as_str() {
            "MD5" => HashAlgorithm::Md5,
            "SHA1" => HashAlgorithm::Sha1,
            "SHA256" => HashAlgorithm::Sha256,
            "SHA512" => HashAlgorithm::Sha512,
            other => HashAlgorithm::Other(other.to_owned()),
        }
    }

    /// The length of a digest in hex digits, where the algorithm is known.
    fn hex_len(&self) -> Option<usize> {
        match self {
            HashAlgorithm::Md5 => Some(32),
            HashAlgorithm::Sha1 => Some(40),
            HashAlgorithm::Sha256 => Some(64),
            HashAlgorithm::Sha512 => Some(128),
            HashAlgorithm::Other(_) => None,
        }
    }
}

impl std::fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HashAlgorithm::Md5 => "MD5",
            HashAlgorithm::Sha1 => "SHA1",
            HashAlgorithm::Sha256 => "SHA256",
            HashAlgorithm::Sha512 => "SHA512",
            HashAlgorithm::Other(name) => name,
        })
    }
}

/// One `<hex>  <file>` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestEntry {
    pub algorithm: HashAlgorithm,
    /// Lower-case hex.
    pub hex: String,
    pub file: String,
}

/// A parsed DIGESTS file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Digests {
    pub entries: Vec<DigestEntry>,
}

impl Digests {
    /// The lower-case hex digest of `file` under `algorithm`, if listed.
    pub fn find(&self, algorithm: &HashAlgorithm, file: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| &e.algorithm == algorithm && e.file == file)
            .map(|e| e.hex.as_str())
    }
}

/// Parses a DIGESTS file. Fails on lines that fit neither shape, on digests of
/// the wrong length for their section, and on one file listed twice with two
/// different digests in one section.
pub fn parse_digests(text: &str) -> anyhow::Result<Digests> {
    let mut digests = Digests::default();
    let mut section: Option<HashAlgorithm> = None;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix('#') {
            let words: Vec<&str> = header.split_whitespace().collect();
            match words.as_slice() {
                [name, hash] if hash.eq_ignore_ascii_case("HASH") => {
                    section = Some(HashAlgorithm::from_section(name));
                }
                _ => bail!("line {number}: expected a `# <ALGORITHM> HASH` header, found `{line}`"),
            }
            continue;
        }
        let Some(algorithm) = section.clone() else {
            bail!("line {number}: digest before any `# <ALGORITHM> HASH` header");
        };
        let Some((hex, file)) = line.split_once(char::is_whitespace) else {
            bail!("line {number}: expected `<hex digest>  <file name>`, found `{line}`");
        };
        // `sha512sum` marks binary mode with a `*` before the name.
        let file = file.trim_start().trim_start_matches('*');
        if file.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("line {number}: expected `<hex digest>  <file name>`, found `{line}`");
        }
        if let Some(len) = algorithm.hex_len() {
            if hex.len() != len {
                bail!(
                    "line {number}: a {algorithm} digest has {len} hex digits, this one has {}",
                    hex.len()
                );
            }
        }
        let hex = hex.to_ascii_lowercase();
        if let Some(existing) = digests.find(&algorithm, file) {
            if existing != hex {
                bail!("line {number}: {file} is listed twice with different {algorithm} digests");
            }
            continue;
        }
        digests.entries.push(DigestEntry {
            algorithm,
            hex,
            file: file.to_owned(),
        });
    }
    Ok(digests)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMG: &str = "flatcar_production_qemu_image.img";

    fn sample() -> String {
        format!(
            "# MD5 HASH\n{md5}  {IMG}\n# SHA1 HASH\n{sha1}  {IMG}\n\
             # BLAKE2B HASH\n{b2}  {IMG}\n# SHA512 HASH\n{sha512}  {IMG}\n",
            md5 = "a".repeat(32),
            sha1 = "B".repeat(40),
            b2 = "c".repeat(128),
            sha512 = "d".repeat(128),
        )
    }

    #[test]
    fn finds_each_section() {
        let digests = parse_digests(&sample()).unwrap();
        assert_eq!(digests.entries.len(), 4);
        assert_eq!(
            digests.find(&HashAlgorithm::Md5, IMG),
            Some(&*"a".repeat(32))
        );
        // Upper-case hex is normalised.
        assert_eq!(
            digests.find(&HashAlgorithm::Sha1, IMG),
            Some(&*"b".repeat(40))
        );
        assert_eq!(
            digests.find(&HashAlgorithm::Other("BLAKE2B".into()), IMG),
            Some(&*"c".repeat(128))
        );
        assert_eq!(
            digests.find(&HashAlgorithm::Sha512, IMG),
            Some(&*"d".repeat(128))
        );
        assert_eq!(digests.find(&HashAlgorithm::Sha512, "other.img"), None);
        assert_eq!(digests.find(&HashAlgorithm::Sha256, IMG), None);
    }

    #[test]
    fn accepts_binary_marks_several_files_and_crlf() {
        let text = format!(
            "# SHA512 HASH\r\n{a} *{IMG}\r\n{b}  {IMG}.bz2\r\n\r\n",
            a = "1".repeat(128),
            b = "2".repeat(128)
        );
        let digests = parse_digests(&text).unwrap();
        assert_eq!(
            digests.find(&HashAlgorithm::Sha512, IMG),
            Some(&*"1".repeat(128))
        );
        assert_eq!(
            digests.find(&HashAlgorithm::Sha512, &format!("{IMG}.bz2")),
            Some(&*"2".repeat(128))
        );
    }

    #[test]
    fn no_sha512_section_means_no_sha512() {
        let text = format!("# MD5 HASH\n{}  {IMG}\n", "a".repeat(32));
        let digests = parse_digests(&text).unwrap();
        assert_eq!(digests.find(&HashAlgorithm::Sha512, IMG), None);
        assert_eq!(parse_digests("").unwrap(), Digests::default());
    }

    #[test]
    fn rejects_malformed_files() {
        let err = |text: String| format!("{:#}", parse_digests(&text).unwrap_err());
        assert_eq!(
            err(format!("{}  {IMG}\n", "a".repeat(128))),
            "line 1: digest before any `# <ALGORITHM> HASH` header"
        );
        assert_eq!(
            err(format!("# SHA512 HASH\n{}  {IMG}\n", "a".repeat(127))),
            "line 2: a SHA512 digest has 128 hex digits, this one has 127"
        );
        assert!(err("# SHA512 HASH\n<html>\n".into()).starts_with("line 2: expected `<hex digest>"));
        assert!(err("# SHA512 HASH\nzz  file\n".into()).starts_with("line 2: expected"));
        assert!(
            err("# hello world\n".into()).starts_with("line 1: expected a `# <ALGORITHM> HASH`")
        );
        assert_eq!(
            err(format!(
                "# SHA512 HASH\n{}  {IMG}\n{}  {IMG}\n",
                "a".repeat(128),
                "b".repeat(128)
            )),
            format!("line 3: {IMG} is listed twice with different SHA512 digests")
        );
    }
}
