//! `cargo xtask mirror DIR [CHANNEL] [VERSION]`: everything a build needs, written
//! into a tree any static web server can serve, for sites without the internet.
//! Flatcar's release files come through the verified image fetch; every artifact
//! through the verified artifact fetch; both from (and into) the cache. The tree
//! keeps each upstream host and path below one base URL (`artifacts::layout`), and
//! `mirror-config.json` plus a `--release-server` template point a build at it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use xshell::Shell;

use crate::artifacts::{self, PypyDefaults};
use crate::build::plan::{self, KubernetesVersion, Provider};
use crate::commands::fetch_image::FetchImageArgs;
use crate::flatcar::release::{Channel, VersionRequest};
use crate::flatcar::{self, cache as image_cache, FetchOptions};
use crate::net::download::{HttpClient, ProgressStyle};
use crate::{fsx, json_text, workspace};

/// Below the mirror's root, where the Flatcar release tree starts.
pub const RELEASE_DIR: &str = "flatcar";
/// The var file that points a build's downloads at the mirror.
pub const CONFIG_FILE: &str = "mirror-config.json";
/// Flatcar's signing key as the mirror serves it.
const SIGNING_KEY_FILE: &str = "flatcar/image-signing-key.asc";

#[derive(clap::Args, Debug)]
pub struct MirrorArgs {
    /// The directory to write the mirror into (created if missing; files are replaced atomically).
    pub dir: PathBuf,
    #[command(flatten)]
    pub fetch: FetchImageArgs,
    /// More channels whose current release goes into the mirror too (repeat, or a comma list).
    #[arg(long = "channel", value_name = "CHANNEL", value_delimiter = ',')]
    pub more_channels: Vec<Channel>,
    /// Kubernetes version to mirror, e.g. 1.36.2 (overrides packer/config/kubernetes.json).
    #[arg(long, value_name = "VERSION")]
    pub kubernetes_version: Option<KubernetesVersion>,
    /// A var file layered after the var files, as for build-flatcar: where to download from (e.g. another mirror).
    #[arg(long, value_name = "FILE", env = "FLATCAR_MIRROR_CONFIG")]
    pub mirror_config: Option<PathBuf>,
    /// The URL the mirror will be served at: mirror-config.json and the printed options point there.
    #[arg(long, value_name = "URL", default_value = "http://localhost:8000")]
    pub base_url: String,
}

pub fn run(sh: &Shell, args: &MirrorArgs) -> anyhow::Result<()> {
    let options = args.fetch.fetch_options()?;
    if options.offline {
        bail!("--offline: a mirror is made from the network (or a warm cache without it: drop --offline, cached files are not downloaded again)");
    }
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut channels = vec![(options.channel, options.version)];
    for channel in &args.more_channels {
        if !channels.iter().any(|(c, _)| c == channel) {
            channels.push((*channel, VersionRequest::Current));
        }
    }
    for (channel, version) in channels {
        let options = FetchOptions {
            channel,
            version,
            ..options.clone()
        };
        mirror_release(sh, &options, dir)?;
    }
    let vars = mirror_artifacts(args, &options, dir)?;
    write_config(args, dir, &vars)
}

/// The release `options` names, fetched and verified into the cache, then copied
/// into the release tree under `dir` (and named `current` when it was asked for so).
fn mirror_release(sh: &Shell, options: &FetchOptions, dir: &Path) -> anyhow::Result<()> {
    let release = flatcar::resolve(options)?;
    let image = flatcar::fetch_image(sh, options, &release)?;
    let entry = image.path.parent().context("the image has a directory")?;
    let arch_dir = dir
        .join(RELEASE_DIR)
        .join(release.channel.name())
        .join(format!("{}-usr", release.arch.name()));
    let target = arch_dir.join(release.version.to_string());
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    for file in release_files(entry)? {
        copy_atomically(&entry.join(&file), &target.join(&file))?;
    }
    if options.version == VersionRequest::Current {
        let current = arch_dir.join("current");
        std::fs::create_dir_all(&current)
            .with_context(|| format!("creating {}", current.display()))?;
        fsx::write_atomically(&current.join("version.txt"), &release.version_txt)?;
    }
    if let Some(key) = &image.signature {
        let key_file = image_cache::key_path(&options.cache_dir, &key.primary_key);
        if key_file.is_file() {
            copy_atomically(&key_file, &dir.join(SIGNING_KEY_FILE))?;
        }
    }
    eprintln!(
        "Mirrored Flatcar {} {} ({}) into {}",
        release.channel,
        release.version,
        release.arch,
        target.display()
    );
    Ok(())
}

/// The files of a verified cache entry a release server serves: the image, its
/// DIGESTS, its signature and version.txt (not the lock, records or partial files).
fn release_files(entry: &Path) -> anyhow::Result<Vec<String>> {
    let mut files = Vec::new();
    for item in std::fs::read_dir(entry).with_context(|| format!("reading {}", entry.display()))? {
        let item = item.with_context(|| format!("reading {}", entry.display()))?;
        let name = item.file_name().to_string_lossy().into_owned();
        let skip =
            name.starts_with('.') || name.ends_with(".part") || name.ends_with(".verified.json");
        if !skip && item.file_type()?.is_file() {
            files.push(name);
        }
    }
    files.sort();
    Ok(files)
}

/// Every artifact of the build these arguments describe, fetched and verified into
/// the cache, then copied with its checksum file to its path in the mirror.
/// Returns the build's rendered variables.
fn mirror_artifacts(
    args: &MirrorArgs,
    options: &FetchOptions,
    dir: &Path,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut supplied = args
        .kubernetes_version
        .map(KubernetesVersion::overrides)
        .unwrap_or_default();
    supplied.insert("goarch".to_owned(), options.arch.name().to_owned());
    let vars = plan::rendered_variables(Provider::Qemu, args.mirror_config.as_deref(), &supplied)?;
    let defaults = PypyDefaults::load(&workspace::capi_dir())?;
    let pypy = artifacts::pypy(
        &defaults,
        options.arch.name(),
        vars.get("ansible_extra_vars").map_or("", String::as_str),
    )?;
    let list = artifacts::artifact_list(&vars, &pypy)?;
    let progress = match options.progress {
        ProgressStyle::Bar => ProgressStyle::Lines,
        other => other,
    };
    let client = HttpClient::with_limits(options.retries, progress, options.limits);
    let cached = artifacts::fetch_all(&client, &options.cache_dir, &list, false)?;
    for (served, file) in artifacts::served_files(&cached)? {
        copy_atomically(&file, &dir.join(served))?;
    }
    let downloaded = cached.iter().filter(|c| c.downloaded).count();
    eprintln!(
        "Mirrored {} artifacts ({downloaded} downloaded, {} from the cache) into {}",
        cached.len(),
        cached.len() - downloaded,
        dir.display()
    );
    Ok(vars)
}

/// `mirror-config.json` for a mirror served at the base URL, and how to build from it.
fn write_config(
    args: &MirrorArgs,
    dir: &Path,
    vars: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let base = args.base_url.trim_end_matches('/');
    let config = artifacts::variables_at(vars, base)?;
    let path = dir.join(CONFIG_FILE);
    fsx::write_atomically(
        &path,
        json_text::canonical(&serde_json::json!(config)).as_bytes(),
    )?;
    let release_server = format!("{base}/{RELEASE_DIR}/{{channel}}");
    let key = dir.join(SIGNING_KEY_FILE);
    let key_option = match key.is_file() {
        true => format!(" --signing-key-url {base}/{SIGNING_KEY_FILE}"),
        false => String::new(),
    };
    eprintln!(
        "Serve {} at {base} with any static web server (e.g. `python3 -m http.server --directory {} 8000`), then build with:",
        dir.display(),
        dir.display()
    );
    println!(
        "cargo xtask build-flatcar --release-server '{release_server}'{key_option} --mirror-config {}",
        path.display()
    );
    Ok(())
}

/// Copies `from` to `to` through a temporary file and a rename: an interrupted
/// mirror never leaves a half-written file under a served name.
fn copy_atomically(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut source =
        std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut file = fsx::AtomicFile::create(to)?.with_mode(0o644);
    std::io::copy(&mut source, &mut file)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    file.commit()
}
