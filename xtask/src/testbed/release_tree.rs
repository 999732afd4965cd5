//! The one builder of Flatcar-shaped release trees, as a release server lays them
//! out: `<root>/<channel>/<arch>-usr/<version>/` with `version.txt`, the image, its
//! `.DIGESTS` and the signatures (`.sig`, `.DIGESTS.sig`, `.DIGESTS.asc`), and the
//! `current` alias. A faulty release (a wrong digest, a bad or missing signature, a
//! damaged or missing image, a version.txt that is not one) is asked for with
//! explicit options, so every consumer states what it serves.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use xshell::{cmd, Shell};

use super::signer::{with_suffix, Form, Signing};

/// What the `.DIGESTS` file of an image holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Digests {
    /// MD5, SHA1 and SHA512 sections, as Flatcar publishes them.
    All,
    /// Only the SHA512 section.
    Sha512Only,
    /// MD5 and SHA1, no SHA512.
    WithoutSha512,
    /// All three, with a SHA-512 that is not the image's.
    WrongSha512,
}

/// The `<image>.sig` next to an image.
#[derive(Clone, Copy)]
pub enum Signature<'a> {
    /// None served.
    Missing,
    /// A detached signature of the image.
    By(Signing<'a>),
    /// A file holding this text instead (a server's error page).
    Text(&'a str),
}

/// The image as served, after its digests and signatures were made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    Intact,
    /// One byte in the middle flipped.
    FlippedByte,
    /// Not there at all (its digests and signatures still are).
    Missing,
}

/// One image of a release and the files around it.
#[derive(Clone, Copy)]
pub struct Image<'a> {
    /// Its file name, e.g. `flatcar_production_qemu_image.img`.
    pub name: &'a str,
    /// The bytes to serve, copied (never linked: a test that tampers with a served
    /// file must not reach the original).
    pub source: &'a Path,
    pub digests: Digests,
    /// `<name>.sig`.
    pub signature: Signature<'a>,
    /// `<name>.DIGESTS.sig`, a detached signature of the DIGESTS.
    pub digests_signature: Option<Signing<'a>>,
    /// `<name>.DIGESTS.asc`, the DIGESTS clear-signed.
    pub clearsigned_digests: Option<Signing<'a>>,
    pub served: Served,
}

impl<'a> Image<'a> {
    /// `source` served as `name` with all digests and no signature: set the
    /// signatures wanted.
    pub fn new(name: &'a str, source: &'a Path) -> Image<'a> {
        Image {
            name,
            source,
            digests: Digests::All,
            signature: Signature::Missing,
            digests_signature: None,
            clearsigned_digests: None,
            served: Served::Intact,
        }
    }

    /// Every file Flatcar publishes for an image, each signed by `signing`.
    pub fn published(name: &'a str, source: &'a Path, signing: Signing<'a>) -> Image<'a> {
        Image {
            signature: Signature::By(signing),
            digests_signature: Some(signing),
            clearsigned_digests: Some(signing),
            ..Image::new(name, source)
        }
    }
}

/// One release directory to write.
pub struct Release<'a> {
    pub channel: &'a str,
    pub arch: &'a str,
    pub version: &'a str,
    /// `FLATCAR_BUILD_ID` in version.txt.
    pub build_id: &'a str,
    /// version.txt's whole text instead of the one made from `version`.
    pub version_txt: Option<&'a str>,
    pub images: Vec<Image<'a>>,
    /// Also serve the release as `current` (hard links to its files).
    pub current: bool,
}

impl<'a> Release<'a> {
    /// `version` of `channel` for `arch`, with version.txt only.
    pub fn new(channel: &'a str, arch: &'a str, version: &'a str) -> Release<'a> {
        Release {
            channel,
            arch,
            version,
            build_id: "test-bed",
            version_txt: None,
            images: Vec::new(),
            current: false,
        }
    }
}

/// The directory of `version` of `channel` below a release tree's `root`.
pub fn release_dir(root: &Path, channel: &str, arch: &str, version: &str) -> PathBuf {
    root.join(channel).join(format!("{arch}-usr")).join(version)
}

/// Writes `release` below `root`, the release server's `{channel}` parent; the
/// version's directory.
pub fn write(root: &Path, release: &Release) -> anyhow::Result<PathBuf> {
    let sh = Shell::new().context("setting up a shell")?;
    let dir = release_dir(root, release.channel, release.arch, release.version);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = match release.version_txt {
        Some(text) => text.to_owned(),
        None => version_txt(release.version, release.build_id),
    };
    write_file(&dir.join("version.txt"), text)?;
    for image in &release.images {
        write_image(&sh, &dir, image)?;
    }
    if release.current {
        link_tree(
            &dir,
            &release_dir(root, release.channel, release.arch, "current"),
        )?;
    }
    Ok(dir)
}

fn write_image(sh: &Shell, dir: &Path, image: &Image) -> anyhow::Result<()> {
    let served = dir.join(image.name);
    std::fs::copy(image.source, &served)
        .with_context(|| format!("copying {} to {}", image.source.display(), served.display()))?;
    let sections: &[(&str, &str)] = match image.digests {
        Digests::All | Digests::WrongSha512 => {
            &[("md5", "MD5"), ("sha1", "SHA1"), ("sha512", "SHA512")]
        }
        Digests::Sha512Only => &[("sha512", "SHA512")],
        Digests::WithoutSha512 => &[("md5", "MD5"), ("sha1", "SHA1")],
    };
    let mut digests = Vec::new();
    for &(algorithm, section) in sections {
        let mut hex = file_digest(sh, algorithm, &served)?;
        if algorithm == "sha512" && image.digests == Digests::WrongSha512 {
            hex = hex.chars().rev().collect();
        }
        digests.push((section, hex));
    }
    let digests_file = with_suffix(&served, ".DIGESTS");
    write_file(&digests_file, digests_text(image.name, &digests))?;
    match image.signature {
        Signature::Missing => {}
        Signature::By(signing) => {
            signing.sign(Form::Detached, &served, &with_suffix(&served, ".sig"))?
        }
        Signature::Text(text) => write_file(&with_suffix(&served, ".sig"), text)?,
    }
    let digests_signatures = [
        (image.digests_signature, Form::Detached, ".sig"),
        (image.clearsigned_digests, Form::ClearSigned, ".asc"),
    ];
    for (signing, form, suffix) in digests_signatures {
        if let Some(signing) = signing {
            signing.sign(form, &digests_file, &with_suffix(&digests_file, suffix))?;
        }
    }
    match image.served {
        Served::Intact => Ok(()),
        Served::FlippedByte => flip_middle_byte(&served),
        Served::Missing => {
            std::fs::remove_file(&served).with_context(|| format!("removing {}", served.display()))
        }
    }
}

/// A release's `version.txt`, shaped like Flatcar's.
pub fn version_txt(version: &str, build_id: &str) -> String {
    let mut parts = version.split('.');
    let build = parts.next().unwrap_or("0");
    let branch = parts.next().unwrap_or("0");
    let patch = parts.next().unwrap_or("0");
    format!(
        "FLATCAR_BUILD={build}\n\
         FLATCAR_BRANCH={branch}\n\
         FLATCAR_PATCH={patch}\n\
         FLATCAR_VERSION={version}\n\
         FLATCAR_VERSION_ID={version}\n\
         FLATCAR_BUILD_ID=\"{build_id}\"\n\
         FLATCAR_SDK_VERSION={version}\n"
    )
}

/// A `.DIGESTS` file: `# <ALGO> HASH` sections, each with a `<hex>  <file>` line.
pub fn digests_text(file_name: &str, digests: &[(&str, String)]) -> String {
    digests
        .iter()
        .map(|(algorithm, hex)| format!("# {algorithm} HASH\n{hex}  {file_name}\n"))
        .collect()
}

/// The lower-case hex digest of a file, from coreutils' `<algorithm>sum`.
pub fn file_digest(sh: &Shell, algorithm: &str, path: &Path) -> anyhow::Result<String> {
    let program = format!("{algorithm}sum");
    let output = cmd!(sh, "{program} {path}")
        .quiet()
        .read()
        .with_context(|| format!("computing the {algorithm} of {}", path.display()))?;
    output
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .with_context(|| format!("{program} printed nothing for {}", path.display()))
}

fn write_file(path: &Path, text: impl AsRef<[u8]>) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn flip_middle_byte(path: &Path) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let middle = file.metadata()?.len() / 2;
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(middle))?;
    file.read_exact(&mut byte)?;
    file.seek(SeekFrom::Start(middle))?;
    file.write_all(&[byte[0] ^ 0x01])
        .with_context(|| format!("damaging {}", path.display()))
}

/// Fills `to` with hard links to the files of `from` (copies where the file system
/// has no hard links): `current` is that version, as on the release server.
fn link_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry.with_context(|| format!("reading {}", from.display()))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if std::fs::hard_link(&source, &target).is_err() {
            std::fs::copy(&source, &target)
                .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flatcar::digests::{parse_digests, HashAlgorithm};
    use crate::net::openpgp::Keyring;
    use crate::testbed::signer::Signer;

    const IMG: &str = "flatcar_production_qemu_image.img";

    #[test]
    fn version_txt_parses_with_the_builds_parser() {
        let text = version_txt("9999.0.0", "rehearsal");
        let info = crate::flatcar::release::parse_version_txt(&text).unwrap();
        assert_eq!(info.version.to_string(), "9999.0.0");
        assert_eq!(info.build_id.as_deref(), Some("rehearsal"));
        assert!(text.contains("FLATCAR_BUILD=9999\nFLATCAR_BRANCH=0\nFLATCAR_PATCH=0\n"));
    }

    #[test]
    fn digests_parse_with_the_builds_parser() {
        let text = digests_text(
            IMG,
            &[
                ("MD5", "a".repeat(32)),
                ("SHA1", "b".repeat(40)),
                ("SHA512", "c".repeat(128)),
            ],
        );
        assert!(text.starts_with("# MD5 HASH\naaaa"));
        let parsed = parse_digests(&text).unwrap();
        assert_eq!(
            parsed.find(&HashAlgorithm::Sha512, IMG),
            Some("c".repeat(128).as_str())
        );
    }

    /// The I/O half on a small file: coreutils and gpg for real, and the build's own
    /// OpenPGP and DIGESTS checks on the result.
    #[test]
    fn a_published_release_verifies_and_faults_are_what_was_asked() {
        let signer = Signer::new("Release Tree Test <test@localhost>").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("image");
        std::fs::write(&source, b"not really a disk image").unwrap();
        let sh = Shell::new().unwrap();
        let root = dir.path().join("www");
        let release = Release {
            images: vec![Image::published(IMG, &source, signer.signing())],
            current: true,
            ..Release::new("stable", "amd64", "9999.0.0")
        };
        let version_dir = write(&root, &release).unwrap();
        assert_eq!(version_dir, root.join("stable/amd64-usr/9999.0.0"));
        let keyring = Keyring::from_armored(
            &sh,
            signer.public_key().unwrap().as_bytes(),
            "the test key",
            None,
        )
        .unwrap();
        for dir in [version_dir, root.join("stable/amd64-usr/current")] {
            let served = dir.join(IMG);
            let digests_file = with_suffix(&served, ".DIGESTS");
            for signed in [&served, &digests_file] {
                let signature = with_suffix(signed, ".sig");
                keyring.verify_detached(&signature, signed).unwrap();
            }
            let clearsigned = with_suffix(&digests_file, ".asc");
            let (_, text) = keyring.verify_clearsigned(&clearsigned).unwrap();
            let digests = parse_digests(&String::from_utf8(text).unwrap()).unwrap();
            assert_eq!(
                digests.find(&HashAlgorithm::Sha512, IMG),
                Some(file_digest(&sh, "sha512", &served).unwrap().as_str())
            );
        }

        let faulty = Release {
            images: vec![Image {
                digests: Digests::WrongSha512,
                signature: Signature::Text("<html>Not Found</html>\n"),
                served: Served::FlippedByte,
                ..Image::new(IMG, &source)
            }],
            version_txt: Some("<html>Moved</html>\n"),
            ..Release::new("beta", "amd64", "9999.1.0")
        };
        let faulty_dir = write(&root, &faulty).unwrap();
        let served = std::fs::read(faulty_dir.join(IMG)).unwrap();
        let original = std::fs::read(&source).unwrap();
        let differing = served.iter().zip(&original).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 1);
        let digests = std::fs::read_to_string(faulty_dir.join(format!("{IMG}.DIGESTS"))).unwrap();
        let listed = parse_digests(&digests).unwrap();
        let listed = listed.find(&HashAlgorithm::Sha512, IMG).unwrap();
        assert_ne!(listed, file_digest(&sh, "sha512", &source).unwrap());
        assert!(!faulty_dir.join(format!("{IMG}.DIGESTS.asc")).exists());
        assert!(!root.join("beta/amd64-usr/current").exists());
        assert_eq!(
            std::fs::read_to_string(faulty_dir.join("version.txt")).unwrap(),
            "<html>Moved</html>\n"
        );
    }
}
