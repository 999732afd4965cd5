//! `cargo xtask bake`: Kubernetes as a system extension baked into each
//! platform's own Flatcar image, without a VM and without root.

use std::path::PathBuf;

use anyhow::Context;
use xshell::Shell;

use crate::artifacts::{self, PypyDefaults};
use crate::bake::{self, plan, BakeOptions};
use crate::build::plan::{rendered_variables, supplied_values, KubernetesVersion, Provider};
use crate::commands::fetch_image::FetchImageArgs;
use crate::flatcar::platform::Platform;
use crate::flatcar::{self, Release};
use crate::net::download::HttpClient;
use crate::node_files::{self, NodeFiles, Target};
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
    /// A JSON var file layered after the var files, e.g. download URLs of a mirror for air-gapped sites.
    #[arg(long, value_name = "FILE", env = "FLATCAR_MIRROR_CONFIG")]
    pub mirror_config: Option<PathBuf>,
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

/// A bake decided: what `bake::bake_all` takes, and the plan `--dry-run` prints.
pub struct Decided {
    pub options: BakeOptions,
    pub release: Release,
    pub platforms: Vec<Platform>,
    pub plan: plan::BakePlan,
}

pub fn run(sh: &Shell, args: &BakeArgs) -> anyhow::Result<()> {
    let decided = decide(args)?;
    if args.dry_run {
        match args.fetch.format {
            Format::Text => print!("{}", plan::render_text(&decided.plan)),
            Format::Json => println!("{}", serde_json::to_string_pretty(&decided.plan)?),
        }
        return Ok(());
    }
    require_tools(sh)?;
    let output_root = &decided.options.output_root;
    for platform in &decided.plan.platforms {
        bake::check_output_dir(&output_root.join(&platform.output_dir), args.force)?;
    }
    let records = bake::bake_all(sh, &decided.options, &decided.release, &decided.platforms)?;
    match args.fetch.format {
        Format::Text => {
            for platform in &decided.plan.platforms {
                println!("{}", output_root.join(&platform.output_dir).display());
            }
        }
        Format::Json => println!("{}", serde_json::to_string_pretty(&records)?),
    }
    Ok(())
}

/// Resolves the release, layers the var files (with the site's) into the build's
/// variables, renders the node's files, lists the downloads and finds each
/// platform's image in the release: everything before the first large download.
pub fn decide(args: &BakeArgs) -> anyhow::Result<Decided> {
    let platforms = plan::parse_platforms(&args.platform)?;
    let fetch = args.fetch.fetch_options()?;
    let release = flatcar::resolve(&fetch)?;
    let supplied = supplied_values(&release, args.kubernetes_version);
    let build_vars = rendered_variables(Provider::Qemu, args.mirror_config.as_deref(), &supplied)?;
    let get = |name: &str| build_vars.get(name).cloned().unwrap_or_default();
    let kubernetes_version = get("kubernetes_semver");
    let capi = workspace::capi_dir();
    let pypy = artifacts::pypy(
        &PypyDefaults::load(&capi)?,
        &get("goarch"),
        &get("ansible_extra_vars"),
    )?;
    let inputs = plan::bake_inputs(artifacts::artifact_list(&build_vars, &pypy)?);
    let node = node_files::render(&node_files::read(&capi)?, &build_vars)?;
    let client = HttpClient::with_limits(fetch.retries, fetch.progress, fetch.limits);
    let published = bake::find_published(&client, &release, &platforms)?;
    let the_plan = plan::plan(&plan::BakeInputs {
        channel: release.channel.name().into(),
        version: release.version.to_string(),
        arch: release.arch,
        release_url: release.url.clone(),
        platforms: published,
        kubernetes_version: kubernetes_version.clone(),
        inputs: inputs.clone(),
        node_root_files: root_paths(&node),
        cni_bin_dir: node.cni_bin_dir.clone(),
        sysupdate: args.sysupdate,
    });
    let options = BakeOptions {
        fetch,
        kubernetes_version,
        build_vars,
        inputs,
        node,
        sysupdate: args.sysupdate,
        output_root: workspace::output_dir(),
        time: source_date_epoch()?,
    };
    Ok(Decided {
        options,
        release,
        platforms,
        plan: the_plan,
    })
}

/// The paths of the node's files and unit links that go onto ROOT.
fn root_paths(node: &NodeFiles) -> Vec<String> {
    let files = node.files.iter().filter(|f| f.target == Target::Root);
    files
        .map(|f| f.path.clone())
        .chain(node.enabled_units.iter().map(|u| u.path.clone()))
        .collect()
}

/// The tools a bake runs, probed before anything is downloaded; exit 2 when
/// one is unusable.
fn require_tools(sh: &Shell) -> anyhow::Result<()> {
    let needed: Vec<_> = TOOLS
        .iter()
        .filter(|t| t.purposes.contains(&Purpose::Bake))
        .collect();
    tools::require(sh, &needed, "the bake")?;
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
