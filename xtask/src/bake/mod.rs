//! Baking Kubernetes into each platform's own Flatcar image without a VM and
//! without root: fetch the platform's verified release image, turn it into a raw
//! disk, write the extension (and its link, and optionally its sysupdate
//! transfer) into the ext4 ROOT partition with debugfs, and install the output
//! directory only once it is complete.

pub mod plan;
pub mod record;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::build::output_dir::{digests_of, install_output};
use crate::build::record::{Artifact, SignedBy, FILE_NAME};
use crate::disk_image::ext4::{Edit, Entry, Meta};
use crate::disk_image::DiskImage;
use crate::flatcar::platform::{Platform, ReleaseImage, SourceFormat};
use crate::flatcar::{self, FetchOptions, Release};
use crate::net::download::{Fetched, HttpClient};
use crate::sysext::extension_release;
use record::{BakeRecord, MADE_BY};

/// Everything a bake needs besides the resolved release.
#[derive(Clone, Debug)]
pub struct BakeOptions {
    /// How images are fetched; `image` is set per platform.
    pub fetch: FetchOptions,
    pub kubernetes_version: String,
    /// The extension image to bake in.
    pub sysext: PathBuf,
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

/// Bakes every platform in parallel; each output directory appears only when its
/// platform is complete. Fails with every platform's error.
pub fn bake_all(
    sh: &Shell,
    opts: &BakeOptions,
    release: &Release,
    platforms: &[Platform],
) -> anyhow::Result<Vec<BakeRecord>> {
    let extension_release = crate::sysext::read_extension_release(sh, &opts.sysext)?;
    let sysext = Artifact {
        file: file_name(&opts.sysext),
        sha512: flatcar::cache::sha512_file(&opts.sysext)?,
    };
    let results: Vec<anyhow::Result<BakeRecord>> = std::thread::scope(|scope| {
        let workers: Vec<_> = platforms
            .iter()
            .map(|platform| {
                let sh = sh.clone();
                let (extension_release, sysext) = (&extension_release, &sysext);
                scope.spawn(move || {
                    bake_one(&sh, opts, release, *platform, extension_release, sysext)
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

fn bake_one(
    sh: &Shell,
    opts: &BakeOptions,
    release: &Release,
    platform: Platform,
    extension_release: &str,
    sysext: &Artifact,
) -> anyhow::Result<BakeRecord> {
    let started = crate::utc::now();
    let name = plan::output_dir_name(
        release.channel.name(),
        &release.version.to_string(),
        &opts.kubernetes_version,
        platform,
    );
    let output_dir = opts.output_root.join(&name);
    let fetch = FetchOptions {
        image: ReleaseImage::Platform(platform),
        ..opts.fetch.clone()
    };
    let image = flatcar::fetch_image(sh, &fetch, release)?;
    std::fs::create_dir_all(&opts.output_root)
        .with_context(|| format!("creating {}", opts.output_root.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.staging-"))
        .tempdir_in(&opts.output_root)
        .with_context(|| {
            format!(
                "making a staging directory in {}",
                opts.output_root.display()
            )
        })?;
    let raw = staging.path().join(format!("{name}.raw"));
    let work = tempfile::tempdir().context("making a work directory")?;
    to_raw(sh, &image.path, platform.source_format(), &raw, work.path())?;

    let disk = DiskImage::open(&raw)?;
    let os_release = disk.os_release(sh)?;
    extension_release::check_compatible(extension_release, &os_release, release.arch)
        .with_context(|| {
            format!(
                "{} cannot be merged on {}",
                sysext.file,
                image.path.display()
            )
        })?;
    let edits = root_edits(opts, release, work.path())?;
    disk.root()?.apply(sh, &edits, opts.time)?;

    let outputs = digests_of(staging.path())?;
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
        sysext: sysext.clone(),
        outputs,
        started,
        finished: crate::utc::now(),
    };
    crate::fsx::write_atomically(&staging.path().join(FILE_NAME), record.to_json().as_bytes())?;
    let staged = staging.keep();
    install_output(&staged, &output_dir).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&staged);
    })?;
    Ok(record)
}

/// What the bake writes into ROOT: the extension, the link systemd-sysext
/// merges, and the sysupdate transfer when asked for.
fn root_edits(opts: &BakeOptions, release: &Release, work: &Path) -> anyhow::Result<Vec<Edit>> {
    let sysext_path = plan::sysext_path(&opts.kubernetes_version, release.arch);
    let mut edits = vec![
        Edit {
            path: sysext_path.clone(),
            entry: Entry::File(opts.sysext.clone()),
            meta: Meta::root(0o644, opts.time),
        },
        Edit {
            path: plan::EXTENSION_LINK.into(),
            entry: Entry::Symlink(sysext_path),
            meta: Meta::root(0o777, opts.time),
        },
    ];
    if opts.sysupdate {
        let (path, text) = plan::sysupdate_conf(&opts.kubernetes_version);
        let source = work.join("sysupdate.conf");
        std::fs::write(&source, text).with_context(|| format!("writing {}", source.display()))?;
        edits.push(Edit {
            path,
            entry: Entry::File(source),
            meta: Meta::root(0o644, opts.time),
        });
    }
    Ok(edits)
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
