//! Packer from HashiCorp's release server: the release's SHA256SUMS checked against
//! its OpenPGP signature by HashiCorp's pinned key (`net::openpgp`), the archive
//! checked against it while it downloads (`net::download`), unpacked with `unzip` in a
//! `.tmp-*` work directory with its plugins (Packer >= 1.7), then renamed into place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

use super::{forget, now, InstallOptions};
use crate::net::download::{Fetched, HttpClient, Observer};
use crate::net::openpgp::{Fingerprint, GoodSignature, Keyring};
use crate::toolchain::layout::{self, Component, Record};
use crate::toolchain::tools::{self, Version};
use crate::{fsx, hex};

/// The Packer installed by default. 1.11 loads plugins only from PACKER_PLUGIN_PATH
/// (or the user's plugin directory), so the project's plugins stay in `.local/`.
pub const DEFAULT_PACKER_VERSION: &str = "1.11.2";
pub const DEFAULT_HASHICORP_RELEASES: &str = "https://releases.hashicorp.com";
/// HashiCorp's published release key ("HashiCorp Security (HashiCorp Package
/// Signing) <security+packaging@hashicorp.com>").
pub const HASHICORP_KEY_URL: &str = "https://www.hashicorp.com/.well-known/pgp-key.txt";
/// Its primary key fingerprint, as HashiCorp publishes it on
/// https://www.hashicorp.com/security (key ID 72D7468F, in use since the 2021
/// rotation, HCSEC-2021-12).
pub const HASHICORP_KEY_FINGERPRINT: &str = "C874011F0AB405110D02105534365D9472D7468F";

/// The version each of [`tools::PACKER_PLUGINS`] is installed at, never "latest":
/// a new plugin release changes a build only when this table does. `packer plugins
/// install` checks the plugin's archive against the SHA256SUMS of its GitHub
/// release, but takes no checksum of ours, so these pins are by version only.
pub const PACKER_PLUGIN_VERSIONS: [(&str, &str); 3] = [
    ("github.com/hashicorp/qemu", "1.1.1"),
    ("github.com/hashicorp/ansible", "1.1.4"),
    ("github.com/hashicorp/vagrant", "1.1.6"),
];

/// `plugins install <plugin> v<version>` for a plugin of [`tools::PACKER_PLUGINS`].
pub fn plugin_install_args(plugin: &str) -> anyhow::Result<[String; 4]> {
    let (_, version) = PACKER_PLUGIN_VERSIONS
        .iter()
        .find(|(name, _)| *name == plugin)
        .with_context(|| format!("the Packer plugin {plugin} has no pinned version"))?;
    Ok([
        "plugins".to_owned(),
        "install".to_owned(),
        plugin.to_owned(),
        format!("v{version}"),
    ])
}

/// HashiCorp's name for a platform, `<os>_<arch>`, from Rust's names for the host
/// (`std::env::consts::OS` and `ARCH`).
pub fn packer_platform(os: &str, arch: &str) -> Result<String, String> {
    let hashicorp_os = match os {
        "linux" => Some("linux"),
        "macos" => Some("darwin"),
        "freebsd" => Some("freebsd"),
        "openbsd" => Some("openbsd"),
        "netbsd" => Some("netbsd"),
        "solaris" | "illumos" => Some("solaris"),
        _ => None,
    };
    let hashicorp_arch = match arch {
        "x86_64" => Some("amd64"),
        "aarch64" => Some("arm64"),
        "x86" => Some("386"),
        "arm" => Some("arm"),
        _ => None,
    };
    match (hashicorp_os, hashicorp_arch) {
        (Some(os), Some(arch)) => Ok(format!("{os}_{arch}")),
        _ => Err(format!(
            "cannot install Packer on {os}/{arch}: HashiCorp's release archives that this \
             installer knows are for Linux, macOS, FreeBSD, OpenBSD, NetBSD and Solaris on \
             x86_64, aarch64, x86 and arm. Install packer with your system's package manager \
             instead, or run with --no-install"
        )),
    }
}

/// The `<hex>  <file>` lines of a SHA256SUMS file, by file name.
pub fn parse_sha256sums(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut sums = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(hex), Some(name), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(format!(
                "line {}: expected `<sha256>  <file>`, found `{line}`",
                index + 1
            ));
        };
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("line {}: `{hex}` is not a SHA-256", index + 1));
        }
        // `sha256sum` marks binary mode with `*` before the name.
        let name = name.trim_start_matches('*');
        sums.insert(name.to_owned(), hex.to_ascii_lowercase());
    }
    Ok(sums)
}

/// Hashes a download as it is written.
struct Sha256Observer(Sha256);

impl Observer for Sha256Observer {
    fn bytes(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        self.0.update(chunk);
        Ok(())
    }

    fn restart(&mut self) -> anyhow::Result<()> {
        self.0 = Sha256::new();
        Ok(())
    }
}

fn get_small(client: &HttpClient, url: &str, what: &str) -> anyhow::Result<Vec<u8>> {
    match client.get_small(url)? {
        Fetched::Found(bytes) => Ok(bytes),
        Fetched::NotFound(status) => bail!("{url} answered {status}: {what}"),
    }
}

/// HashiCorp's key (fetched and checked against the pinned fingerprint), or the
/// key the user named.
fn hashicorp_keyring(
    sh: &Shell,
    client: &HttpClient,
    options: &InstallOptions,
) -> anyhow::Result<Keyring> {
    match &options.hashicorp_key {
        Some(file) => {
            eprintln!(
                "WARNING: Packer's release checksums are checked against {}, NOT HashiCorp's \
                 pinned release key {HASHICORP_KEY_FINGERPRINT}. Trust the installed Packer only \
                 as far as you trust that key.",
                replaced_anchor(file)
            );
            let armored =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            Keyring::from_armored(sh, &armored, &file.display().to_string(), None)
        }
        None => {
            let url = &options.hashicorp_key_url;
            let armored = get_small(client, url, "no HashiCorp release key there")?;
            let pinned: Fingerprint = HASHICORP_KEY_FINGERPRINT
                .parse()
                .map_err(|e: String| anyhow::anyhow!(e))?;
            Keyring::from_armored(sh, &armored, url, Some(&pinned))
        }
    }
}

/// What replaced HashiCorp's pinned key: said every run, kept in the install record.
fn replaced_anchor(file: &Path) -> String {
    format!(
        "the key in {} (--hashicorp-key / FLATCAR_HASHICORP_KEY)",
        file.display()
    )
}

/// Where a Packer release's files are: the archive for this platform and the
/// checksums that sign it.
struct ReleaseFiles {
    platform: String,
    archive: String,
    archive_url: String,
    sums_name: String,
    sums_url: String,
}

impl ReleaseFiles {
    fn new(releases: &str, version: &str, platform: String) -> ReleaseFiles {
        let base = format!("{}/packer/{version}", releases.trim_end_matches('/'));
        let archive = format!("packer_{version}_{platform}.zip");
        let sums_name = format!("packer_{version}_SHA256SUMS");
        ReleaseFiles {
            sums_url: format!("{base}/{sums_name}"),
            archive_url: format!("{base}/{archive}"),
            platform,
            archive,
            sums_name,
        }
    }
}

/// Downloads, verifies and unpacks Packer into a work directory next to its
/// destination, installs its plugins there for Packer >= 1.7, then renames both
/// into place. Returns the record to write.
pub fn install_packer(
    sh: &Shell,
    root: &Path,
    options: &InstallOptions,
    client: &HttpClient,
) -> anyhow::Result<Record> {
    let version = &options.packer_version;
    let platform = packer_platform(std::env::consts::OS, std::env::consts::ARCH)
        .map_err(|e| anyhow::anyhow!(e))?;
    let files = ReleaseFiles::new(&options.hashicorp_releases, version, platform);
    // Removed on every error; a killed run leaves it for `remove_leftovers`.
    let work = tempfile::Builder::new()
        .prefix(".tmp-packer-")
        .tempdir_in(root)
        .with_context(|| format!("creating a work directory in {}", root.display()))?;
    let work_dir = work.path();

    // The checksums and their signature first: nothing large is fetched for a
    // release that is not signed by the trusted key.
    let (sums, good) = signed_sums(sh, client, options, &files, work_dir)?;
    let expected = archive_sha256(&sums, &files, version)?;
    let zip = work_dir.join(&files.archive);
    let actual = download_archive(client, &files, &zip, expected)?;

    let packer = unpack_packer(sh, &zip, &files.archive, work_dir)?;
    let found = check_packer_version(sh, &packer, &files.archive, version)?;
    let plugins = work_dir.join("packer-plugins");
    if found.is_some_and(needs_plugins) {
        install_plugins(sh, &packer, &plugins)?;
    }
    move_into_place(root, &packer, &plugins)?;
    Ok(Record {
        component: Component::Packer,
        version: version.clone(),
        source: files.archive_url,
        sha256: Some(actual),
        signed_by: Some(good.primary_key.to_string()),
        trust_anchor: options.hashicorp_key.as_deref().map(replaced_anchor),
        requirements: Vec::new(),
        installed_at: now(),
    })
}

/// The release's SHA256SUMS, once its signature checks out against the trusted
/// HashiCorp key, and that signature.
fn signed_sums(
    sh: &Shell,
    client: &HttpClient,
    options: &InstallOptions,
    files: &ReleaseFiles,
    work_dir: &Path,
) -> anyhow::Result<(BTreeMap<String, String>, GoodSignature)> {
    let version = &options.packer_version;
    let ReleaseFiles {
        sums_name,
        sums_url,
        ..
    } = files;
    let keyring = hashicorp_keyring(sh, client, options)?;
    eprintln!("Checking {sums_url} and its signature");
    let sums = get_small(client, sums_url, &format!("is {version} a Packer release?"))?;
    let signature = get_small(
        client,
        &format!("{sums_url}.sig"),
        "the release's checksums are not signed",
    )?;
    let sums_path = work_dir.join(sums_name);
    let signature_path = work_dir.join(format!("{sums_name}.sig"));
    std::fs::write(&sums_path, &sums)
        .with_context(|| format!("writing {}", sums_path.display()))?;
    std::fs::write(&signature_path, &signature)
        .with_context(|| format!("writing {}", signature_path.display()))?;
    let good = keyring
        .verify_detached(&signature_path, &sums_path)
        .with_context(|| {
            format!(
                "the signature of {sums_url} does not check out against {}; nothing was downloaded or installed",
                keyring.certificate().describe()
            )
        })?;
    let sums = parse_sha256sums(&String::from_utf8_lossy(&sums))
        .map_err(|e| anyhow::anyhow!("{sums_url}: {e}"))?;
    Ok((sums, good))
}

/// The archive's SHA-256 as the signed checksums list it; else which platforms
/// the release does have.
fn archive_sha256<'s>(
    sums: &'s BTreeMap<String, String>,
    files: &ReleaseFiles,
    version: &str,
) -> anyhow::Result<&'s String> {
    let ReleaseFiles {
        platform,
        archive,
        sums_url,
        ..
    } = files;
    let Some(expected) = sums.get(archive) else {
        let platforms: Vec<String> = sums
            .keys()
            .filter_map(|name| {
                name.strip_prefix(&format!("packer_{version}_"))
                    .and_then(|rest| rest.strip_suffix(".zip"))
                    .map(str::to_owned)
            })
            .collect();
        bail!(
            "{sums_url} lists no {archive}: Packer {version} has no build for {platform} (it has: {})",
            platforms.join(", ")
        );
    };
    Ok(expected)
}

/// Downloads the archive to `zip`, hashing it on the way; deletes it unless its
/// SHA-256 is `expected`. Returns the SHA-256.
fn download_archive(
    client: &HttpClient,
    files: &ReleaseFiles,
    zip: &Path,
    expected: &str,
) -> anyhow::Result<String> {
    let ReleaseFiles {
        archive_url,
        sums_name,
        ..
    } = files;
    let mut observer = Sha256Observer(Sha256::new());
    match client.download(archive_url, zip, &mut observer)? {
        Fetched::Found(_) => {}
        Fetched::NotFound(status) => {
            bail!("{archive_url} answered {status}, although {sums_name} lists it")
        }
    }
    let actual = hex::encode(&observer.0.finalize());
    if actual != expected {
        fsx::remove_if_present(zip)?;
        bail!(
            "{archive_url}: its SHA-256 is {actual}, but the signed {sums_name} says {expected}; \
             the archive was deleted and nothing was installed"
        );
    }
    Ok(actual)
}

/// Unpacks the `packer` program from `zip` into the work directory and makes it
/// executable; refuses anything but a regular file.
fn unpack_packer(
    sh: &Shell,
    zip: &Path,
    archive: &str,
    work_dir: &Path,
) -> anyhow::Result<PathBuf> {
    let unzip = tools::find_program("unzip").context("unzip is not installed")?;
    let unpacked = work_dir.join("unpacked");
    let out = cmd!(sh, "{unzip} -q -o {zip} packer -d {unpacked}")
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("running {}", unzip.display()))?;
    if !out.status.success() {
        bail!(
            "unpacking `packer` from {archive} failed: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let packer = unpacked.join("packer");
    // A link would be followed by chmod and by the version check, and installed
    // pointing anywhere: only a regular file is a program we unpacked.
    let kind = std::fs::symlink_metadata(&packer)
        .with_context(|| format!("reading {}", packer.display()))?
        .file_type();
    if !kind.is_file() {
        bail!(
            "the `packer` entry of {archive} is not a regular file ({kind:?}); \
             refusing to install it, although the archive's checksum is signed"
        );
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&packer, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", packer.display()))?;
    }
    Ok(packer)
}

/// The version the unpacked `packer` says it is, which must be the one asked for.
fn check_packer_version(
    sh: &Shell,
    packer: &Path,
    archive: &str,
    version: &str,
) -> anyhow::Result<Option<Version>> {
    let said = cmd!(sh, "{packer} version")
        .env("CHECKPOINT_DISABLE", "1")
        .quiet()
        .ignore_status()
        .read()
        .unwrap_or_default();
    let found = tools::parse_version(&said);
    let asked = tools::parse_version(version);
    if found != asked {
        bail!(
            "the packer in {archive} says it is version {}, not {version}",
            found.map_or_else(|| format!("`{}`", said.trim()), |v| v.to_string())
        );
    }
    Ok(found)
}

/// Installs the project's pinned Packer plugins into `plugins` with `packer`.
fn install_plugins(sh: &Shell, packer: &Path, plugins: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(plugins).with_context(|| format!("creating {}", plugins.display()))?;
    for plugin in tools::PACKER_PLUGINS {
        let args = plugin_install_args(plugin)?;
        eprintln!("Installing the Packer plugin {plugin} {}", args[3]);
        let shown = args.join(" ");
        let out = cmd!(sh, "{packer} {args...}")
            .env("CHECKPOINT_DISABLE", "1")
            .env(layout::PACKER_PLUGIN_PATH, plugins)
            .quiet()
            .ignore_status()
            .output()
            .with_context(|| format!("running {} plugins install", packer.display()))?;
        if !out.status.success() {
            bail!(
                "`packer {shown}` failed (Packer fetches plugins from GitHub):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

/// Into place: forget the old install first, so that a kill from here on leaves
/// no record, then rename (same file system, atomic per file).
fn move_into_place(root: &Path, packer: &Path, plugins: &Path) -> anyhow::Result<()> {
    forget(root, Component::Packer)?;
    let bin = Component::Packer.bin_dir(root);
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    let installed_plugins = layout::packer_plugins_dir(root);
    if installed_plugins.exists() {
        std::fs::remove_dir_all(&installed_plugins)
            .with_context(|| format!("removing {}", installed_plugins.display()))?;
    }
    if plugins.is_dir() {
        std::fs::rename(plugins, &installed_plugins).with_context(|| {
            format!(
                "renaming {} to {}",
                plugins.display(),
                installed_plugins.display()
            )
        })?;
    }
    fsx::rename_durably(packer, &bin.join("packer"))
}

/// Whether a Packer of `version` from elsewhere (the system's package manager) runs
/// the JSON templates as they are: new enough, and from before the builder,
/// provisioner and post-processor they use moved out into plugins.
pub fn runs_the_templates(version: Version) -> bool {
    let minimum = tools::tool("packer").minimum;
    Some(version) >= minimum && !needs_plugins(version)
}

/// Packer 1.7 moved the qemu builder, the ansible provisioner and the vagrant
/// post-processor out into plugins.
fn needs_plugins(version: Version) -> bool {
    (version.major, version.minor) >= (1, 7)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every plugin the templates need is installed at an exact version, not "latest".
    #[test]
    fn finding_14_every_packer_plugin_is_pinned_to_a_version() {
        for plugin in tools::PACKER_PLUGINS {
            let args = plugin_install_args(plugin).unwrap();
            assert_eq!(args[..3], ["plugins", "install", plugin]);
            let version = args[3].strip_prefix('v').unwrap();
            assert_eq!(version.split('.').count(), 3, "{args:?}");
            assert!(
                version.split('.').all(|n| n.parse::<u32>().is_ok()),
                "{args:?}"
            );
        }
        assert_eq!(PACKER_PLUGIN_VERSIONS.len(), tools::PACKER_PLUGINS.len());
        assert!(plugin_install_args("github.com/hashicorp/unknown").is_err());
    }

    #[test]
    fn platforms_map_to_hashicorp_names() {
        assert_eq!(packer_platform("linux", "x86_64").unwrap(), "linux_amd64");
        assert_eq!(packer_platform("linux", "aarch64").unwrap(), "linux_arm64");
        assert_eq!(packer_platform("macos", "aarch64").unwrap(), "darwin_arm64");
        assert_eq!(packer_platform("freebsd", "x86").unwrap(), "freebsd_386");
    }

    #[test]
    fn an_unsupported_platform_is_named_with_what_to_do() {
        let err = packer_platform("linux", "riscv64").unwrap_err();
        assert!(err.contains("linux/riscv64"), "{err}");
        assert!(err.contains("package manager"), "{err}");
        assert!(err.contains("--no-install"), "{err}");
        let err = packer_platform("windows", "x86_64").unwrap_err();
        assert!(err.contains("windows/x86_64"), "{err}");
    }

    #[test]
    fn only_a_packer_with_the_builders_built_in_is_a_fallback() {
        let version = |text| tools::parse_version(text).unwrap();
        assert!(runs_the_templates(version("1.6.6")), "Debian 12's packer");
        assert!(
            !runs_the_templates(version("1.4.5")),
            "older than the minimum"
        );
        assert!(
            !runs_the_templates(version("1.9.4")),
            "needs plugins from the network"
        );
    }

    #[test]
    fn sha256sums_are_read_by_file_name() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let text =
            format!("{a}  packer_1.11.2_darwin_arm64.zip\n{b} *packer_1.11.2_linux_amd64.zip\n\n");
        let sums = parse_sha256sums(&text).unwrap();
        assert_eq!(sums["packer_1.11.2_darwin_arm64.zip"], a);
        assert_eq!(sums["packer_1.11.2_linux_amd64.zip"], "b".repeat(64));
        assert!(parse_sha256sums("xyz  f.zip\n")
            .unwrap_err()
            .contains("not a SHA-256"));
        assert!(parse_sha256sums(&format!("{a}\n"))
            .unwrap_err()
            .contains("line 1"));
    }
}
