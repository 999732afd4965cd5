//! `cargo xtask fetch-image`: resolve a Flatcar release, download its QEMU image
//! into the cache and verify it (OpenPGP signature + SHA-512), or find it there
//! already verified. The work is in the `flatcar` library module.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::builder::BoolishValueParser;
use xshell::Shell;

use crate::flatcar::platform::ReleaseImage;
use crate::flatcar::{
    self, Arch, Channel, FetchOptions, ReleaseServer, SignaturePolicy, Variant, VerifiedImage,
    VersionRequest,
};
use crate::net::download::{Limits, ProgressStyle};
use crate::output::Format;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
The image is verified before it enters the cache: its OpenPGP signature against the
pinned Flatcar image-signing key (F88CFEDEFF29A5B4D9523864E25D9AED0593B34A) and its
SHA-512 from the release's DIGESTS file, both computed while downloading. A cached
image is used without downloading anything.

Prints the resolved release and the image's path on stdout (--format json for
machines); progress and notes go to stderr.")]
pub struct FetchImageArgs {
    /// Release channel: alpha, beta, stable or lts.
    #[arg(env = "FLATCAR_CHANNEL", default_value = "stable")]
    pub channel: Channel,
    /// Release version MAJOR.MINOR.PATCH, or `current` for the channel's current release.
    #[arg(env = "FLATCAR_VERSION", default_value = "current")]
    pub version: VersionRequest,
    /// CPU architecture [default: the host's].
    #[arg(long, value_enum, env = "FLATCAR_ARCH")]
    pub arch: Option<Arch>,
    /// Firmware the image boots with [default: bios on amd64, uefi on arm64].
    #[arg(long, value_enum, env = "FLATCAR_VARIANT")]
    pub variant: Option<Variant>,
    /// Release server URL; `{channel}` is replaced by the channel (a mirror: http://mirror.example/flatcar/{channel}).
    #[arg(
        long,
        value_name = "URL",
        env = "FLATCAR_RELEASE_SERVER",
        default_value = flatcar::DEFAULT_RELEASE_SERVER
    )]
    pub release_server: ReleaseServer,
    /// Trust the armored public key in FILE instead of the pinned Flatcar key (custom builds).
    #[arg(long, value_name = "FILE", env = "FLATCAR_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
    /// Where to fetch the pinned Flatcar key from (a mirror); its fingerprint is checked.
    #[arg(
        long,
        value_name = "URL",
        env = "FLATCAR_SIGNING_KEY_URL",
        default_value = flatcar::FLATCAR_SIGNING_KEY_URL
    )]
    pub signing_key_url: String,
    /// Pin another primary key, fetched from --signing-key-url (a custom Flatcar build's published key); every run warns.
    #[arg(
        long,
        value_name = "FINGERPRINT",
        env = "FLATCAR_SIGNING_KEY_FINGERPRINT",
        default_value = flatcar::fetch::FLATCAR_SIGNING_KEY_FINGERPRINT,
        conflicts_with = "signing_key"
    )]
    pub signing_key_fingerprint: crate::net::openpgp::Fingerprint,
    /// Cache directory [default: $XDG_CACHE_HOME/flatcar-capi-builder or ~/.cache/flatcar-capi-builder].
    #[arg(long, value_name = "DIR", env = "FLATCAR_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Use only the cache; fail if the release is not there.
    #[arg(long, env = "FLATCAR_OFFLINE", value_parser = BoolishValueParser::new())]
    pub offline: bool,
    /// Re-hash a cached image instead of trusting its size and verification record.
    #[arg(long, env = "FLATCAR_VERIFY_CACHE", value_parser = BoolishValueParser::new())]
    pub verify_cache: bool,
    /// Do not check the OpenPGP signature (SHA-512 is still checked). Prints a warning.
    #[arg(
        long,
        env = "FLATCAR_INSECURE_SKIP_SIGNATURE",
        value_parser = BoolishValueParser::new(),
        conflicts_with = "signing_key"
    )]
    pub insecure_skip_signature: bool,
    /// How often to retry a transient network failure (connection reset, 5xx).
    #[arg(long, value_name = "N", env = "FLATCAR_RETRIES", default_value_t = 4)]
    pub retries: u32,
    /// The most bytes the image download may have (an endless stream is stopped and deleted).
    #[arg(long, value_name = "BYTES", env = "FLATCAR_MAX_IMAGE_SIZE", default_value_t = Limits::default().max_size)]
    pub max_image_size: u64,
    /// Seconds without a byte after which a download attempt is given up (and retried).
    #[arg(long, value_name = "SECONDS", env = "FLATCAR_STALL_TIMEOUT", default_value_t = Limits::default().stall_timeout.as_secs())]
    pub stall_timeout: u64,
    /// Seconds the whole download may take, retries included.
    #[arg(long, value_name = "SECONDS", env = "FLATCAR_DOWNLOAD_DEADLINE", default_value_t = Limits::default().deadline.as_secs())]
    pub download_deadline: u64,
    /// No progress or notes on stderr (errors and warnings still appear).
    #[arg(long, short, env = "FLATCAR_QUIET", value_parser = BoolishValueParser::new())]
    pub quiet: bool,
    /// Output format on stdout.
    #[arg(
        long,
        value_enum,
        env = "FLATCAR_OUTPUT_FORMAT",
        default_value = "text"
    )]
    pub format: Format,
}

impl FetchImageArgs {
    /// The library's options for these arguments (`build-flatcar` takes the same).
    pub fn fetch_options(&self) -> anyhow::Result<FetchOptions> {
        let arch = match self.arch {
            Some(arch) => arch,
            None => Arch::host().context(
                "Flatcar is built for amd64 and arm64 only and this machine is neither; pass --arch",
            )?,
        };
        let signature = match (&self.signing_key, self.insecure_skip_signature) {
            (_, true) => SignaturePolicy::InsecureSkip,
            (Some(file), false) => SignaturePolicy::KeyFile(file.clone()),
            (None, false) => SignaturePolicy::PinnedFlatcarKey {
                key_url: self.signing_key_url.clone(),
                fingerprint: self.signing_key_fingerprint.clone(),
            },
        };
        let cache_dir = match &self.cache_dir {
            Some(dir) => dir.clone(),
            None => flatcar::default_cache_dir()?,
        };
        Ok(FetchOptions {
            channel: self.channel,
            version: self.version,
            arch,
            image: ReleaseImage::Qemu(Variant::for_arch(arch, self.variant)?),
            server: self.release_server.clone(),
            signature,
            cache_dir,
            offline: self.offline,
            verify_cache: self.verify_cache,
            retries: self.retries,
            limits: Limits {
                max_size: self.max_image_size,
                stall_timeout: Duration::from_secs(self.stall_timeout.max(1)),
                deadline: Duration::from_secs(self.download_deadline.max(1)),
            },
            progress: ProgressStyle::for_stderr(self.quiet),
        })
    }
}

pub fn run(sh: &Shell, args: &FetchImageArgs) -> anyhow::Result<()> {
    let options = args.fetch_options()?;
    let release = flatcar::resolve(&options)?;
    let image = flatcar::fetch_image(sh, &options, &release)?;
    if !args.quiet {
        eprintln!(
            "Flatcar {} {} ({}, {}): {}",
            image.channel,
            image.version,
            image.arch,
            image.image,
            if image.from_cache {
                "verified image in the cache, nothing downloaded"
            } else {
                "downloaded, verified and cached"
            }
        );
    }
    match args.format {
        Format::Text => print!("{}", render_text(&image)),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&render_json(&image)).context("encoding the result")?
        ),
    }
    Ok(())
}

fn render_text(image: &VerifiedImage) -> String {
    let signed = match &image.signature {
        Some(s) => format!(
            "key {} (primary {}), signed {}",
            s.signing_key,
            s.primary_key,
            crate::utc::format(s.signed_at)
        ),
        None => "NOT CHECKED (--insecure-skip-signature)".to_owned(),
    };
    format!(
        "channel: {}\nversion: {}\narch:    {}\n{}\nimage:   {}\nsize:    {}\nsha512:  {}\nsigned:  {}\nsource:  {}\n",
        image.channel,
        image.version,
        image.arch,
        match image.image {
            ReleaseImage::Qemu(variant) => format!("variant: {variant}"),
            ReleaseImage::Platform(platform) => format!("platform: {platform}"),
        },
        image.path.display(),
        image.size,
        image.sha512,
        signed,
        image.source_url
    )
}

fn render_json(image: &VerifiedImage) -> serde_json::Value {
    serde_json::json!({
        "channel": image.channel.name(),
        "version": image.version.to_string(),
        "arch": image.arch.name(),
        "variant": match image.image {
            ReleaseImage::Qemu(variant) => Some(variant.name()),
            ReleaseImage::Platform(_) => None,
        },
        "platform": match image.image {
            ReleaseImage::Qemu(_) => None,
            ReleaseImage::Platform(platform) => Some(platform.name()),
        },
        "path": image.path,
        "size": image.size,
        "sha512": image.sha512,
        "source_url": image.source_url,
        "final_url": image.final_url,
        "from_cache": image.from_cache,
        "signature": image.signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VerifiedImage {
        VerifiedImage {
            channel: Channel::Stable,
            version: "4081.2.0".parse().unwrap(),
            arch: Arch::Amd64,
            image: ReleaseImage::Qemu(Variant::Bios),
            path: PathBuf::from("/c/stable/4081.2.0/amd64/flatcar_production_qemu_image.img"),
            size: 42,
            sha512: "ab".repeat(64),
            source_url: "http://m/stable/amd64-usr/4081.2.0/flatcar_production_qemu_image.img"
                .into(),
            final_url: "https://m2/flatcar_production_qemu_image.img".into(),
            signature: None,
            from_cache: true,
        }
    }

    #[test]
    fn text_output_names_release_and_path() {
        let text = render_text(&sample());
        assert!(text.starts_with("channel: stable\nversion: 4081.2.0\narch:    amd64\nvariant: bios\nimage:   /c/stable/4081.2.0/amd64/flatcar_production_qemu_image.img\n"), "{text}");
        assert!(text.contains("signed:  NOT CHECKED"), "{text}");
    }

    #[test]
    fn json_output_has_a_stable_shape() {
        let json = render_json(&sample());
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "arch",
                "channel",
                "final_url",
                "from_cache",
                "path",
                "platform",
                "sha512",
                "signature",
                "size",
                "source_url",
                "variant",
                "version"
            ]
        );
    }
}
