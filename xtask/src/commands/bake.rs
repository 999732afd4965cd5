//! `cargo xtask bake`: Kubernetes as a system extension baked into each
//! platform's own Flatcar image, without a VM and without root.

use std::path::PathBuf;

use anyhow::Context;
use xshell::Shell;

use crate::bake::{self, plan, BakeOptions};
use crate::build::plan::{rendered_variables, KubernetesVersion, Provider};
use crate::commands::fetch_image::FetchImageArgs;
use crate::error::Exit;
use crate::flatcar;
use crate::net::download::HttpClient;
use crate::output::Format;
use crate::toolchain::tools::{self, Purpose, TOOLS};
use crate::workspace;

#[derive(clap::Args, Debug)]
pub struct BakeArgs {
    #[command(flatten)]
    pub fetch: FetchImageArgs,
    /// Platforms to bake, comma separated: qemu, openstack, proxmoxve, kubevirt, metal, hetzner, vmware, azure.
    #[arg(long, value_name = "LIST", default_value = "qemu")]
    pub platform: String,
    /// Kubernetes version of the extension, e.g. 1.36.2 [default: packer/config/kubernetes.json's].
    #[arg(long, value_name = "VERSION")]
    pub kubernetes_version: Option<KubernetesVersion>,
    /// The Kubernetes system extension image to bake in (squashfs with extension-release.kubernetes).
    #[arg(long, value_name = "FILE")]
    pub sysext: PathBuf,
    /// Also write a systemd-sysupdate transfer for patch updates within the minor version.
    #[arg(long)]
    pub sysupdate: bool,
    /// Print the plan (every URL, the files written into ROOT, the outputs) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace existing output directories of earlier bakes.
    #[arg(long)]
    pub force: bool,
}

pub fn run(sh: &Shell, args: &BakeArgs) -> anyhow::Result<()> {
    let platforms = plan::parse_platforms(&args.platform)?;
    let kubernetes_version = match args.kubernetes_version {
        Some(v) => format!("v{}.{}.{}", v.major, v.minor, v.patch),
        None => rendered_variables(Provider::Qemu, None, &Default::default())?
            .get("kubernetes_semver")
            .cloned()
            .context("packer/config/kubernetes.json sets no kubernetes_semver; pass --kubernetes-version")?,
    };
    let fetch = args.fetch.fetch_options()?;
    let release = flatcar::resolve(&fetch)?;
    let client = HttpClient::with_limits(fetch.retries, fetch.progress, fetch.limits);
    let published = bake::find_published(&client, &release, &platforms)?;
    let the_plan = plan::plan(&plan::BakeInputs {
        channel: release.channel.name().into(),
        version: release.version.to_string(),
        arch: release.arch,
        release_url: release.url.clone(),
        platforms: published,
        kubernetes_version: kubernetes_version.clone(),
        sysext_source: args.sysext.display().to_string(),
        sysupdate: args.sysupdate,
    });
    if args.dry_run {
        match args.fetch.format {
            Format::Text => print!("{}", plan::render_text(&the_plan)),
            Format::Json => println!("{}", serde_json::to_string_pretty(&the_plan)?),
        }
        return Ok(());
    }
    require_tools(sh)?;
    let output_root = workspace::output_dir();
    for platform in &the_plan.platforms {
        bake::check_output_dir(&output_root.join(&platform.output_dir), args.force)?;
    }
    let options = BakeOptions {
        fetch,
        kubernetes_version,
        sysext: args.sysext.clone(),
        sysupdate: args.sysupdate,
        output_root: output_root.clone(),
        time: source_date_epoch()?,
    };
    let records = bake::bake_all(sh, &options, &release, &platforms)?;
    match args.fetch.format {
        Format::Text => {
            for record in &records {
                let dir = plan::output_dir_name(
                    &record.channel,
                    &record.version,
                    &record.kubernetes_version,
                    record.platform.parse().map_err(anyhow::Error::msg)?,
                );
                println!("{}", output_root.join(dir).display());
            }
        }
        Format::Json => println!("{}", serde_json::to_string_pretty(&records)?),
    }
    Ok(())
}

/// The tools a bake runs, probed before anything is downloaded; exit 2 when
/// one is unusable.
fn require_tools(sh: &Shell) -> anyhow::Result<()> {
    let needed: Vec<_> = TOOLS
        .iter()
        .filter(|t| t.purposes.contains(&Purpose::Bake))
        .collect();
    let unusable: Vec<String> = tools::probe_all(sh, &needed)
        .iter()
        .filter(|p| !p.optional && !p.usable())
        .map(|p| {
            format!(
                "  {}: {:?}; install: {}",
                p.tool,
                p.status,
                p.hint.as_deref().unwrap_or("-")
            )
        })
        .collect();
    if !unusable.is_empty() {
        eprintln!(
            "error: the bake needs tools that are missing or unusable:\n{}",
            unusable.join("\n")
        );
        return Err(Exit(2).into());
    }
    Ok(())
}

/// Every time written into the images: SOURCE_DATE_EPOCH when set, else the
/// epoch, so a bake never depends on the clock.
fn source_date_epoch() -> anyhow::Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={text:?} is not a number of seconds")),
        Err(_) => Ok(0),
    }
}
