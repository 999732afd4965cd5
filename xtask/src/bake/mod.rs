//! Baking Kubernetes into each platform's own Flatcar image without a VM and
//! without root: fetch the platform's verified release image, turn it into a raw
//! disk, write the extension (and its link, and optionally its sysupdate
//! transfer) into the ext4 ROOT partition with debugfs, and install the output
//! directory only once it is complete.

mod outputs;
pub mod plan;
pub mod record;
mod shared;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::artifacts;
use crate::build::output_dir::{digests_of, install_output};
use crate::build::record::{Artifact, SignedBy, FILE_NAME};
use crate::disk_image::DiskImage;
use crate::flatcar::platform::{Output, Platform, ReleaseImage, SourceFormat};
use crate::flatcar::{self, FetchOptions, Release};
use crate::net::download::{Fetched, HttpClient};
use crate::node_files::NodeFiles;
use crate::sysext::extension_release;
use crate::vm::streaming;
use record::{BakeRecord, MADE_BY};

/// Everything a bake needs besides the resolved release.
#[derive(Clone, Debug)]
pub struct BakeOptions {
    /// How images and the inputs are fetched (and cached); `image` is set per platform.
    pub fetch: FetchOptions,
    /// `v1.36.2`: the build variables' `kubernetes_semver`.
    pub kubernetes_version: String,
    /// The build's Packer variables, rendered (site var file and Kubernetes
    /// version included): the node rules of the baked image get them.
    pub build_vars: BTreeMap<String, String>,
    /// The downloads the extension and the CNI plugins come from (`plan::bake_inputs`).
    pub inputs: Vec<artifacts::Artifact>,
    /// The node's files, rendered from the roles with `build_vars`.
    pub node: NodeFiles,
    pub sysupdate: bool,
    /// images/capi/output: one directory per platform below it.
    pub output_root: PathBuf,
    /// Every time written into ROOT (SOURCE_DATE_EPOCH).
    pub time: u64,
}

/// Which file of `release` holds each platform's image (the file itself or its
/// `.bz2`, known by which has a DIGESTS). Only DIGESTS files are read, so every
/// missing platform is named before any image is downloaded.
pub fn find_published(
    client: &HttpClient,
    release: &Release,
    platforms: &[Platform],
) -> anyhow::Result<Vec<(Platform, String)>> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for platform in platforms {
        let mut hit = None;
        for file in platform.published_files() {
            let url = release.file_url(&format!("{file}.DIGESTS"));
            if let Fetched::Found(_) = client.get_small(&url)? {
                hit = Some(file);
                break;
            }
        }
        match hit {
            Some(file) => found.push((*platform, file)),
            None => missing.push(format!(
                "{platform}: {} (nor {}.bz2)",
                release.file_url(platform.image_file_name()),
                platform.image_file_name()
            )),
        }
    }
    if !missing.is_empty() {
        bail!(
            "Flatcar {} {} ({}) lacks the image of {} platform(s), so nothing was downloaded:\n  {}",
            release.channel,
            release.version,
            release.arch,
            missing.len(),
            missing.join("\n  ")
        );
    }
    Ok(found)
}

/// Refuses an output directory that exists, unless `--force` and it is a bake's.
pub fn check_output_dir(dir: &Path, force: bool) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if let Err(err) = BakeRecord::read(dir) {
        bail!(
            "{} exists but is not a bake's output ({err:#}); it is not replaced, even with --force",
            dir.display()
        );
    }
    if !force {
        bail!(
            "{} exists from an earlier bake; pass --force to replace it (only once the new bake succeeds)",
            dir.display()
        );
    }
    Ok(())
}

/// Bakes every platform in parallel from one shared extension; each output
/// directory appears only when its platform is complete. Ctrl-C is caught for
/// the whole bake, so every staging and work directory is removed on the way
/// out. Fails with every platform's error.
pub fn bake_all(
    sh: &Shell,
    opts: &BakeOptions,
    release: &Release,
    platforms: &[Platform],
) -> anyhow::Result<Vec<BakeRecord>> {
    let _interrupts = streaming::catch_interrupts();
    std::fs::create_dir_all(&opts.output_root)
        .with_context(|| format!("creating {}", opts.output_root.display()))?;
    let shared = shared::prepare(sh, opts, release.arch)?;
    let results: Vec<anyhow::Result<BakeRecord>> = std::thread::scope(|scope| {
        let workers: Vec<_> = platforms
            .iter()
            .map(|platform| {
                let sh = sh.clone();
                let shared = &shared;
                scope.spawn(move || {
                    bake_one(&sh, opts, release, *platform, shared)
                        .with_context(|| format!("baking {platform}"))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a bake worker panicked"))
            .collect()
    });
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(record) => records.push(record),
            Err(err) => errors.push(format!("{err:#}")),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(records)
}

/// An error once Ctrl-C was pressed: the caller's directories go as it unwinds.
fn stop_if_interrupted() -> anyhow::Result<()> {
    if streaming::interrupted() {
        bail!("interrupted; nothing was left in the output directory");
    }
    Ok(())
}

/// A hidden directory below `parent` (on the outputs' file system, so large disks
/// never cross file systems), removed when dropped.
fn hidden_dir(parent: &Path, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .with_context(|| format!("making a directory in {}", parent.display()))
}

fn bake_one(
    sh: &Shell,
    opts: &BakeOptions,
    release: &Release,
    platform: Platform,
    shared: &shared::Shared,
) -> anyhow::Result<BakeRecord> {
    let started = crate::utc::now();
    let name = plan::output_dir_name(
        release.channel.name(),
        &release.version.to_string(),
        &opts.kubernetes_version,
        platform,
    );
    let fetch = FetchOptions {
        image: ReleaseImage::Platform(platform),
        ..opts.fetch.clone()
    };
    let image = flatcar::fetch_image(sh, &fetch, release)?;
    stop_if_interrupted()?;
    let staging = hidden_dir(&opts.output_root, &format!(".{name}.staging-"))?;
    let work = hidden_dir(&opts.output_root, &format!(".{name}.work-"))?;
    let (raw, os_release) = bake_raw(sh, platform, &image.path, work.path(), shared, release)?;
    stop_if_interrupted()?;
    // The raw disk is hashed while the outputs are written: both only read it.
    let dirs = (staging.path(), work.path());
    let (sha512, written) = std::thread::scope(|scope| {
        let hashing = scope.spawn(|| flatcar::cache::sha512_file(&raw));
        let written = outputs::write(sh, platform, &raw, dirs, &name, release.arch, opts.time);
        (
            hashing.join().expect("the hashing thread panicked"),
            written,
        )
    });
    written?;
    let raw_disk = Artifact {
        file: format!("{name}.raw"),
        sha512: sha512?,
    };
    drop(work);
    stop_if_interrupted()?;
    let rules_vars = crate::node_files::rules_vars(&opts.build_vars);
    crate::fsx::write_atomically(
        &staging.path().join(crate::rules::VARS_FILE),
        (serde_json::to_string_pretty(&rules_vars)? + "\n").as_bytes(),
    )?;
    let record = BakeRecord {
        made_by: MADE_BY.into(),
        channel: release.channel.name().into(),
        version: release.version.to_string(),
        arch: release.arch.name().into(),
        platform: platform.name().into(),
        kubernetes_version: opts.kubernetes_version.clone(),
        base_image: Artifact {
            file: file_name(&image.path),
            sha512: image.sha512.clone(),
        },
        base_image_url: image.final_url.clone(),
        base_image_signed_by: SignedBy::of(&image, &fetch.signature),
        os_release,
        sysext: Artifact {
            file: file_name(&shared.sysext.path),
            sha512: shared.sysext.sha512.clone(),
        },
        sysext_inputs: shared.inputs.clone(),
        raw_disk,
        kubernetes_bin_dir: opts.node.kubernetes_bin_dir.clone(),
        outputs: digests_of(staging.path())?,
        started,
        finished: crate::utc::now(),
    };
    crate::fsx::write_atomically(&staging.path().join(FILE_NAME), record.to_json().as_bytes())?;
    stop_if_interrupted()?;
    let staged = staging.keep();
    install_output(&staged, &opts.output_root.join(&name)).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&staged);
    })?;
    Ok(record)
}

/// The platform's image as a raw disk in `work`, checked against the extension
/// and with the shared edits written into ROOT; returns it and its os-release.
fn bake_raw(
    sh: &Shell,
    platform: Platform,
    image: &Path,
    work: &Path,
    shared: &shared::Shared,
    release: &Release,
) -> anyhow::Result<(PathBuf, String)> {
    let raw = work.join("disk.raw");
    let unpacked = work.join("unpacked");
    std::fs::create_dir_all(&unpacked)?;
    to_raw(sh, image, platform.source_format(), &raw, &unpacked)?;
    if platform.output() == Output::FixedVhd {
        outputs::grow_to_whole_mib(&raw)?;
    }
    let disk = DiskImage::open(&raw)?;
    let os_release = disk.os_release(sh)?;
    extension_release::check_compatible(
        &shared.sysext.extension_release,
        &os_release,
        release.arch,
    )
    .with_context(|| {
        format!(
            "{} cannot be merged on {}",
            file_name(&shared.sysext.path),
            image.display()
        )
    })?;
    stop_if_interrupted()?;
    disk.root()?.apply(sh, &shared.edits, shared.time)?;
    Ok((raw, os_release))
}

/// The platform's image as a raw disk at `raw`.
fn to_raw(
    sh: &Shell,
    source: &Path,
    format: SourceFormat,
    raw: &Path,
    work: &Path,
) -> anyhow::Result<()> {
    let converted = match format {
        SourceFormat::Raw => cmd!(sh, "cp --sparse=always {source} {raw}").quiet().run(),
        SourceFormat::Qcow2 => cmd!(sh, "qemu-img convert -f qcow2 -O raw {source} {raw}")
            .quiet()
            .run(),
        SourceFormat::Vhd => cmd!(sh, "qemu-img convert -f vpc -O raw {source} {raw}")
            .quiet()
            .run(),
        SourceFormat::Ova => {
            cmd!(sh, "tar -xf {source} -C {work}").quiet().run()?;
            let vmdk = std::fs::read_dir(work)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "vmdk"))
                .with_context(|| format!("{} holds no .vmdk", source.display()))?;
            cmd!(sh, "qemu-img convert -f vmdk -O raw {vmdk} {raw}")
                .quiet()
                .run()
        }
    };
    converted.with_context(|| format!("converting {} to a raw disk", source.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}
