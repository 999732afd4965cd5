//! Which release: channels, architectures, image variants, release versions, the
//! release server's URL layout, and each release's `version.txt`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context};

use crate::net::download::{Fetched, HttpClient};

/// The public release server; `{channel}` is replaced by the channel's name.
pub const DEFAULT_RELEASE_SERVER: &str = "https://{channel}.release.flatcar-linux.net";

/// A live Flatcar release channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    Alpha,
    Beta,
    Stable,
    Lts,
}

impl Channel {
    pub const ALL: [Channel; 4] = [Channel::Alpha, Channel::Beta, Channel::Stable, Channel::Lts];

    pub fn name(self) -> &'static str {
        match self {
            Channel::Alpha => "alpha",
            Channel::Beta => "beta",
            Channel::Stable => "stable",
            Channel::Lts => "lts",
        }
    }

    fn live_names() -> String {
        Channel::ALL.map(Channel::name).join(" ")
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Channel {
    type Err = String;

    fn from_str(s: &str) -> Result<Channel, String> {
        let wanted = s.trim().to_ascii_lowercase();
        if let Some(channel) = Channel::ALL.into_iter().find(|c| c.name() == wanted) {
            return Ok(channel);
        }
        Err(if wanted == "edge" {
            format!(
                "the edge channel was discontinued and has no releases; the live channels are {}",
                Channel::live_names()
            )
        } else {
            format!(
                "unknown channel `{s}`; the live channels are {}",
                Channel::live_names()
            )
        })
    }
}

/// A CPU architecture Flatcar is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The architecture of the machine this runs on, if Flatcar is built for it.
    pub fn host() -> Option<Arch> {
        Arch::from_rust_arch(std::env::consts::ARCH)
    }

    fn from_rust_arch(arch: &str) -> Option<Arch> {
        match arch {
            "x86_64" => Some(Arch::Amd64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the QEMU image boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Variant {
    /// Legacy BIOS (amd64 only).
    Bios,
    /// UEFI firmware (the only choice on arm64).
    Uefi,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Bios => "bios",
            Variant::Uefi => "uefi",
        }
    }

    /// The variant to use on `arch` when the user asked for `requested` (or nothing).
    pub fn for_arch(arch: Arch, requested: Option<Variant>) -> anyhow::Result<Variant> {
        match (arch, requested) {
            (Arch::Arm64, Some(Variant::Bios)) => {
                bail!("arm64 Flatcar images boot with UEFI only; drop --variant bios or use --variant uefi")
            }
            (Arch::Arm64, _) => Ok(Variant::Uefi),
            (Arch::Amd64, requested) => Ok(requested.unwrap_or(Variant::Bios)),
        }
    }

    /// The uncompressed QEMU disk image's file name in a release directory.
    pub fn image_file_name(self) -> &'static str {
        match self {
            Variant::Bios => "flatcar_production_qemu_image.img",
            Variant::Uefi => "flatcar_production_qemu_uefi_image.img",
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A release version, `MAJOR.MINOR.PATCH` (e.g. 4081.2.0). Ordered numerically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Version, String> {
        let malformed = || {
            format!("`{s}` is not a Flatcar release version: expected MAJOR.MINOR.PATCH such as 4081.2.0")
        };
        let parts: Vec<&str> = s.split('.').collect();
        let [major, minor, patch] = parts.as_slice() else {
            return Err(malformed());
        };
        let number = |part: &str| -> Result<u32, String> {
            // Digits only: no signs, no blanks, no leading zeros ("01" is not a release).
            let canonical = !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_digit())
                && (part == "0" || !part.starts_with('0'));
            if !canonical {
                return Err(malformed());
            }
            part.parse().map_err(|_| malformed())
        };
        Ok(Version {
            major: number(major)?,
            minor: number(minor)?,
            patch: number(patch)?,
        })
    }
}

/// What the user asked for: the channel's current release or one version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionRequest {
    Current,
    Exact(Version),
}

impl FromStr for VersionRequest {
    type Err = String;

    fn from_str(s: &str) -> Result<VersionRequest, String> {
        if s.trim() == "current" {
            Ok(VersionRequest::Current)
        } else {
            s.trim()
                .parse()
                .map(VersionRequest::Exact)
                .map_err(|e| format!("{e} (or `current`)"))
        }
    }
}

impl fmt::Display for VersionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionRequest::Current => f.write_str("current"),
            VersionRequest::Exact(v) => v.fmt(f),
        }
    }
}

/// Where releases come from: a URL template with `{channel}`, such as the public
/// `https://{channel}.release.flatcar-linux.net` or a mirror
/// `http://mirror.example/flatcar/{channel}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseServer {
    template: String,
}

impl Default for ReleaseServer {
    fn default() -> ReleaseServer {
        ReleaseServer {
            template: DEFAULT_RELEASE_SERVER.to_owned(),
        }
    }
}

impl FromStr for ReleaseServer {
    type Err = String;

    fn from_str(s: &str) -> Result<ReleaseServer, String> {
        let template = s.trim().trim_end_matches('/');
        if !(template.starts_with("https://") || template.starts_with("http://")) {
            return Err(format!(
                "release server `{s}` is not an http:// or https:// URL"
            ));
        }
        if !template.contains("{channel}") {
            return Err(format!(
                "release server `{s}` has no `{{channel}}` placeholder; \
                 write where the channel's name goes, e.g. http://mirror.example/flatcar/{{channel}}"
            ));
        }
        Ok(ReleaseServer {
            template: template.to_owned(),
        })
    }
}

impl fmt::Display for ReleaseServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.template)
    }
}

impl ReleaseServer {
    /// The directory of one release (or of `current`), with a trailing slash.
    pub fn release_dir_url(&self, channel: Channel, arch: Arch, version: &str) -> String {
        format!(
            "{}/{}-usr/{}/",
            self.template.replace("{channel}", channel.name()),
            arch.name(),
            version
        )
    }
}

/// The facts a release's `version.txt` states. Every `KEY=VALUE` line is kept in
/// `fields`; the ones the build needs have their own fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: Version,
    pub build_id: Option<String>,
    pub sdk_version: Option<String>,
    pub fields: BTreeMap<String, String>,
}

/// Parses a release's `version.txt`: shell-style `KEY=VALUE` lines, values
/// optionally quoted, `#` comments and blank lines ignored.
pub fn parse_version_txt(text: &str) -> anyhow::Result<VersionInfo> {
    let mut fields = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!("line {}: expected KEY=VALUE, found `{line}`", number + 1);
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            bail!("line {}: `{key}` is not a variable name", number + 1);
        }
        fields.insert(key.to_owned(), unquote(value.trim()).to_owned());
    }
    let version = fields
        .get("FLATCAR_VERSION")
        .context("no FLATCAR_VERSION line")?;
    let version: Version = version
        .parse()
        .map_err(|e: String| anyhow::anyhow!("FLATCAR_VERSION: {e}"))?;
    Ok(VersionInfo {
        version,
        build_id: fields.get("FLATCAR_BUILD_ID").cloned(),
        sdk_version: fields.get("FLATCAR_SDK_VERSION").cloned(),
        fields,
    })
}

fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

/// A release that exists on the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    pub channel: Channel,
    pub arch: Arch,
    pub version: Version,
    /// The release directory, with a trailing slash.
    pub url: String,
    pub info: VersionInfo,
    /// The `version.txt` as served, for the cache.
    pub version_txt: Vec<u8>,
}

impl Release {
    /// The URL of a file in the release directory.
    pub fn file_url(&self, file_name: &str) -> String {
        format!("{}{file_name}", self.url)
    }

    /// The release whose `version.txt` (as a verified cache entry keeps it) is
    /// `text`, served by `server`.
    pub fn from_version_txt(
        server: &ReleaseServer,
        channel: Channel,
        arch: Arch,
        text: Vec<u8>,
    ) -> anyhow::Result<Release> {
        let info = std::str::from_utf8(&text)
            .map_err(|_| anyhow::anyhow!("not UTF-8 text"))
            .and_then(parse_version_txt)?;
        Ok(Release {
            channel,
            arch,
            version: info.version,
            url: server.release_dir_url(channel, arch, &info.version.to_string()),
            info,
            version_txt: text,
        })
    }
}

/// Finds a release: reads the channel's `current/version.txt` for
/// [`VersionRequest::Current`], or checks that the requested version's
/// `version.txt` exists and names that version.
pub fn resolve_release(
    client: &HttpClient,
    server: &ReleaseServer,
    channel: Channel,
    request: VersionRequest,
    arch: Arch,
) -> anyhow::Result<Release> {
    let dir = match request {
        VersionRequest::Current => "current".to_owned(),
        VersionRequest::Exact(v) => v.to_string(),
    };
    let url = format!("{}version.txt", server.release_dir_url(channel, arch, &dir));
    let text = match client.get_small(&url)? {
        Fetched::Found(bytes) => bytes,
        Fetched::NotFound(status) => match request {
            VersionRequest::Current => bail!(
                "{url} answered {status}: the release server has no current {channel} release for {arch}; \
                 check --release-server"
            ),
            VersionRequest::Exact(v) => bail!(
                "Flatcar {channel} {v} for {arch} does not exist: {url} answered {status}. \
                 The channel's releases are listed at https://www.flatcar.org/releases"
            ),
        },
    };
    let release = Release::from_version_txt(server, channel, arch, text)
        .with_context(|| format!("{url} is not a valid version.txt"))?;
    if let VersionRequest::Exact(wanted) = request {
        if release.version != wanted {
            bail!(
                "{url} says FLATCAR_VERSION={}, not {wanted}: the release server is inconsistent",
                release.version
            );
        }
    }
    Ok(release)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_parse_and_edge_is_discontinued() {
        assert_eq!("stable".parse(), Ok(Channel::Stable));
        assert_eq!("LTS".parse(), Ok(Channel::Lts));
        assert_eq!(" alpha ".parse(), Ok(Channel::Alpha));
        assert_eq!("beta".parse(), Ok(Channel::Beta));
        let edge = "edge".parse::<Channel>().unwrap_err();
        assert!(edge.contains("discontinued"), "{edge}");
        assert!(edge.contains("alpha beta stable lts"), "{edge}");
        let unknown = "stabel".parse::<Channel>().unwrap_err();
        assert_eq!(
            unknown,
            "unknown channel `stabel`; the live channels are alpha beta stable lts"
        );
    }

    #[test]
    fn versions_must_be_major_minor_patch() {
        assert_eq!(
            "4081.2.0".parse(),
            Ok(Version {
                major: 4081,
                minor: 2,
                patch: 0
            })
        );
        for bad in [
            "",
            "4081",
            "4081.2",
            "4081.2.0.1",
            "4081.2.x",
            "v4081.2.0",
            "4081.02.0",
            "-1.2.3",
            "4081..0",
            " 4081.2.0",
            "99999999999.0.0",
        ] {
            let err = bad.parse::<Version>().unwrap_err();
            assert!(err.contains("MAJOR.MINOR.PATCH"), "{bad}: {err}");
        }
        assert!("4081.10.0".parse::<Version>().unwrap() > "4081.9.5".parse().unwrap());
    }

    #[test]
    fn current_is_an_alias() {
        assert_eq!("current".parse(), Ok(VersionRequest::Current));
        assert_eq!(
            "3975.2.1".parse::<VersionRequest>().unwrap().to_string(),
            "3975.2.1"
        );
        assert!("latest"
            .parse::<VersionRequest>()
            .unwrap_err()
            .contains("or `current`"));
    }

    #[test]
    fn arm64_boots_uefi_only() {
        assert_eq!(Variant::for_arch(Arch::Amd64, None).unwrap(), Variant::Bios);
        assert_eq!(
            Variant::for_arch(Arch::Amd64, Some(Variant::Uefi)).unwrap(),
            Variant::Uefi
        );
        assert_eq!(Variant::for_arch(Arch::Arm64, None).unwrap(), Variant::Uefi);
        assert!(Variant::for_arch(Arch::Arm64, Some(Variant::Bios)).is_err());
        assert_eq!(Arch::from_rust_arch("x86_64"), Some(Arch::Amd64));
        assert_eq!(Arch::from_rust_arch("aarch64"), Some(Arch::Arm64));
        assert_eq!(Arch::from_rust_arch("riscv64"), None);
        assert_eq!(
            Variant::Uefi.image_file_name(),
            "flatcar_production_qemu_uefi_image.img"
        );
    }

    #[test]
    fn release_server_templates() {
        let public = ReleaseServer::default();
        assert_eq!(
            public.release_dir_url(Channel::Stable, Arch::Amd64, "4081.2.0"),
            "https://stable.release.flatcar-linux.net/amd64-usr/4081.2.0/"
        );
        let mirror: ReleaseServer = "http://127.0.0.1:8080/{channel}/".parse().unwrap();
        assert_eq!(
            mirror.release_dir_url(Channel::Lts, Arch::Arm64, "current"),
            "http://127.0.0.1:8080/lts/arm64-usr/current/"
        );
        assert!("http://mirror.example/flatcar"
            .parse::<ReleaseServer>()
            .unwrap_err()
            .contains("{channel}"));
        assert!("ftp://{channel}.example".parse::<ReleaseServer>().is_err());
    }

    const VERSION_TXT: &str = "\
FLATCAR_BUILD=4081
FLATCAR_BRANCH=2
FLATCAR_PATCH=0
FLATCAR_VERSION=4081.2.0
FLATCAR_VERSION_ID=4081.2.0
FLATCAR_BUILD_ID=\"2024-10-16-1733\"
FLATCAR_SDK_VERSION=4081.1.0
";

    #[test]
    fn parses_a_real_shaped_version_txt() {
        let info = parse_version_txt(VERSION_TXT).unwrap();
        assert_eq!(info.version.to_string(), "4081.2.0");
        assert_eq!(info.build_id.as_deref(), Some("2024-10-16-1733"));
        assert_eq!(info.sdk_version.as_deref(), Some("4081.1.0"));
        assert_eq!(info.fields["FLATCAR_BRANCH"], "2");
        assert_eq!(info.fields.len(), 7);
    }

    #[test]
    fn version_txt_tolerates_comments_quotes_and_crlf() {
        let text = "# generated\r\n\r\nFLATCAR_VERSION='3975.2.1'\r\nFLATCAR_BUILD_ID=\r\n";
        let info = parse_version_txt(text).unwrap();
        assert_eq!(info.version.to_string(), "3975.2.1");
        assert_eq!(info.build_id.as_deref(), Some(""));
    }

    #[test]
    fn malformed_version_txt_is_explained() {
        let err = |text: &str| format!("{:#}", parse_version_txt(text).unwrap_err());
        assert_eq!(err("FLATCAR_BUILD=4081\n"), "no FLATCAR_VERSION line");
        assert_eq!(
            err("FLATCAR_VERSION=4081.2.0\n<html>\n"),
            "line 2: expected KEY=VALUE, found `<html>`"
        );
        assert!(err("FLATCAR_VERSION=4081.2\n").starts_with("FLATCAR_VERSION: `4081.2` is not"));
        assert_eq!(
            err("FOO BAR=1\n"),
            "line 1: `FOO BAR` is not a variable name"
        );
    }
}
