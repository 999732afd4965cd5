//! `cargo xtask build-flatcar [CHANNEL] [VERSION]`: from a Flatcar release to a
//! provisioned node image and a libvirt box. Resolve and fetch the release (the
//! `flatcar` module), check the image definitions (`validate`), make a per-build
//! key and Ignition config, pick the accelerator, run `packer build` with the
//! target's var files, collect the outputs with a build record, then verify the box
//! (`verify-vagrant`). The output directory is either complete or absent.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;
use xshell::Shell;

use crate::build::record::{self, Artifact, BuildRecord};
use crate::build::{ignition, key};
use crate::checks::engine::CheckOptions;
use crate::commands::fetch_image::FetchImageArgs;
use crate::commands::{validate, verify_vagrant};
use crate::flatcar::release::{self, Version};
use crate::flatcar::{self, cache, Arch, Channel, SignaturePolicy, VersionRequest};
use crate::net::download::HttpClient;
use crate::output::Format;
use crate::packer::layering::{self, Layered};
use crate::packer::targets::{self, BuildInput, BuildTarget};
use crate::packer::template::{self, VarFile};
use crate::toolchain::install::{self, InstallOptions};
use crate::toolchain::tools::{self, Purpose, TOOLS};
use crate::vm::accelerator::{self, Accelerator};
use crate::vm::streaming;
use crate::{error::Exit, json_text, workspace};

/// Where a build's image comes from and where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// A qcow2 image and a libvirt box, built locally with qemu.
    Qemu,
    /// An AMI, built on EC2 from the channel's Flatcar AMI (AWS credentials from the environment).
    Ami,
}

impl Provider {
    fn target(self) -> &'static BuildTarget {
        let name = match self {
            Provider::Qemu => "qemu-flatcar",
            Provider::Ami => "ami-flatcar",
        };
        targets::target(name).expect("every provider has a build target")
    }
}

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    pub fetch: FetchImageArgs,
    /// What to build.
    #[arg(long, value_enum, default_value_t = Provider::Qemu)]
    pub provider: Provider,
    /// The QEMU accelerator [default: KVM when a test guest really runs under it, else hvf on macOS, else TCG].
    #[arg(long, value_enum, env = "FLATCAR_ACCELERATOR")]
    pub accelerator: Option<Accelerator>,
    /// Kubernetes version to install, e.g. 1.36.2 (overrides packer/config/kubernetes.json).
    #[arg(long, value_name = "VERSION")]
    pub kubernetes_version: Option<String>,
    /// A JSON var file layered after the var files, e.g. download URLs of a mirror for air-gapped sites.
    #[arg(long, value_name = "FILE", env = "FLATCAR_MIRROR_CONFIG")]
    pub mirror_config: Option<PathBuf>,
    /// Print the plan (versions, URLs, the packer command line, the generated var file) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace an existing output directory without asking.
    #[arg(long)]
    pub force: bool,
    /// Do not boot the box with vagrant afterwards.
    #[arg(long)]
    pub no_verify: bool,
    /// Passed to verify-vagrant: check the node's files only, skip kubeadm init.
    #[arg(long)]
    pub verify_no_cluster: bool,
    /// Passed to verify-vagrant: destroy the VM when verified.
    #[arg(long)]
    pub verify_destroy: bool,
    /// Do not install a missing packer or ansible into .local/ first.
    #[arg(long)]
    pub no_install: bool,
    #[command(flatten)]
    pub install: InstallOptions,
}

/// Everything decided before anything is changed: what `--dry-run` prints.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub channel: String,
    pub version: String,
    pub arch: String,
    pub provider: Provider,
    pub build_name: String,
    pub kubernetes_semver: String,
    pub containerd_version: String,
    pub cni_version: String,
    pub accelerator: Option<Accelerator>,
    /// Relative to the repository root.
    pub output_dir: String,
    /// Every download, by variable (or role in the release).
    pub urls: BTreeMap<String, String>,
    /// `packer` and its arguments, run in images/capi.
    pub packer_command: Vec<String>,
    /// The generated var file's content.
    pub generated_var_file: BTreeMap<String, String>,
}

/// The variables whose values are download locations: shown in the plan.
fn is_url_variable(name: &str) -> bool {
    name.ends_with("_url") || name.ends_with("_http_source")
}

/// `1.36.2` or `v1.36.2` → the var-file values for that Kubernetes release.
fn kubernetes_overrides(version: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let bare = version.strip_prefix('v').unwrap_or(version);
    let parts: Vec<&str> = bare.split('.').collect();
    if parts.len() != 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        bail!("--kubernetes-version {version}: expected MAJOR.MINOR.PATCH such as 1.36.2");
    }
    Ok(BTreeMap::from([
        ("kubernetes_version".to_owned(), bare.to_owned()),
        (
            "kubernetes_series".to_owned(),
            format!("v{}.{}", parts[0], parts[1]),
        ),
    ]))
}

/// The value of `name` after layering, with `{{user}}` references rendered.
fn rendered(
    values: &BTreeMap<String, Layered>,
    supplied: &BTreeMap<String, String>,
    name: &str,
) -> String {
    let raw = supplied
        .get(name)
        .cloned()
        .or_else(|| values.get(name).and_then(|l| l.value.clone()))
        .unwrap_or_default();
    layering::render(&raw, values, supplied).unwrap_or(raw)
}

/// A release, resolved: which version `current` is, and where it lives.
pub struct Resolved {
    pub channel: Channel,
    pub version: Version,
    pub arch: Arch,
    /// The release directory, with a trailing slash.
    pub url: String,
}

/// Builds the plan from what is resolved: pure, so it is unit-tested.
pub struct PlanInputs<'a> {
    pub release: &'a Resolved,
    pub provider: Provider,
    pub image_url: String,
    pub signature_url: Option<String>,
    pub values: &'a BTreeMap<String, Layered>,
    /// Build inputs and overrides, by variable.
    pub supplied: BTreeMap<String, String>,
    pub accelerator: Option<Accelerator>,
    pub output_dir: String,
    pub var_file_paths: Vec<PathBuf>,
}

pub fn make_plan(inputs: PlanInputs<'_>) -> Plan {
    let PlanInputs {
        release,
        provider,
        image_url,
        signature_url,
        values,
        supplied,
        ..
    } = &inputs;
    let target = provider.target();
    let mut urls: BTreeMap<String, String> = values
        .keys()
        .filter(|name| is_url_variable(name))
        .map(|name| (name.clone(), rendered(values, supplied, name)))
        .collect();
    if *provider == Provider::Qemu {
        urls.insert("flatcar_release".into(), release.url.clone());
        urls.insert("flatcar_image".into(), image_url.clone());
        if let Some(url) = signature_url {
            urls.insert("flatcar_signing_key".into(), url.clone());
        }
    }
    let later: Vec<&Path> = inputs.var_file_paths.iter().map(PathBuf::as_path).collect();
    let mut packer_command = vec!["packer".to_owned()];
    packer_command.extend(
        crate::packer::command::args("build", BUILD_OPTIONS, target, &later)
            .iter()
            .map(|a| a.to_string_lossy().into_owned()),
    );
    Plan {
        channel: release.channel.to_string(),
        version: release.version.to_string(),
        arch: release.arch.to_string(),
        provider: *provider,
        build_name: rendered(values, supplied, "build_name"),
        kubernetes_semver: rendered(values, supplied, "kubernetes_semver"),
        containerd_version: rendered(values, supplied, "containerd_version"),
        cni_version: rendered(values, supplied, "cni_version"),
        accelerator: inputs.accelerator,
        output_dir: inputs.output_dir.clone(),
        urls,
        packer_command,
        generated_var_file: supplied.clone(),
    }
}

/// `packer build` options: plain output for the prefixed log, and a failed build
/// stops and removes its VM instead of asking.
const BUILD_OPTIONS: &[&str] = &["-color=false", "-on-error=cleanup"];

fn render_plan(plan: &Plan) -> String {
    let mut out = format!(
        "Flatcar {} {} ({}), provider {:?}\nKubernetes {}, containerd {}, CNI {}\n",
        plan.channel,
        plan.version,
        plan.arch,
        plan.provider,
        plan.kubernetes_semver,
        plan.containerd_version,
        plan.cni_version
    );
    if let Some(accelerator) = plan.accelerator {
        out += &format!("Accelerator: {}\n", accelerator.packer_name());
    }
    out += &format!("Output: {}\n\nDownloads:\n", plan.output_dir);
    for (name, url) in &plan.urls {
        out += &format!("  {name}: {url}\n");
    }
    out += "\nPacker, run in images/capi:\n  ";
    out += &plan.packer_command.join(" \\\n    ");
    out += "\n\nGenerated var file:\n";
    out += &json_text::canonical(&serde_json::json!(plan.generated_var_file));
    out
}

pub fn run(sh: &Shell, args: &BuildArgs) -> anyhow::Result<()> {
    let capi = workspace::capi_dir();
    let target = args.provider.target();
    let build_started = record::now_utc();

    // Tools first: nothing is downloaded for a build that cannot run.
    if !args.no_install && !args.dry_run {
        install::install_missing(sh, Purpose::Build, &args.install, args.fetch.retries)?;
    }
    let needed: Vec<_> = TOOLS
        .iter()
        .filter(|t| t.purposes.contains(&Purpose::Build))
        .filter(|t| {
            args.provider == Provider::Qemu || matches!(t.program, "packer" | "ansible-playbook")
        })
        .collect();
    let probes = tools::probe_all(sh, &needed);
    let unusable: Vec<String> = probes
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
            "error: the build needs tools that are missing or unusable:\n{}",
            unusable.join("\n")
        );
        return Err(Exit(2).into());
    }

    // The same checks as `cargo xtask validate --target <target>`, then the site's var file.
    if !args.dry_run {
        validate::run(
            sh,
            &validate::ValidateArgs::for_target(target.name, CheckOptions::default()),
        )
        .context("the image definitions do not validate; fix them before building")?;
    }
    let mut supplied = match &args.kubernetes_version {
        Some(version) => kubernetes_overrides(version)?,
        None => BTreeMap::new(),
    };
    let (values, mirror) = layer_with_mirror(&capi, target, args.mirror_config.as_deref())?;

    let options = args.fetch.fetch_options()?;
    let release = resolve(&options)?;
    supplied.insert(
        BuildInput::FlatcarChannel.variable().into(),
        release.channel.to_string(),
    );
    supplied.insert(
        BuildInput::FlatcarVersion.variable().into(),
        release.version.to_string(),
    );
    let build_name = rendered(&values, &supplied, "build_name");
    let output_dir = capi.join("output").join(&build_name);
    let work = capi.join("output").join(".work").join(&build_name);
    let staging = work.join("output");
    supplied.insert(
        BuildInput::OutputDirectory.variable().into(),
        staging.display().to_string(),
    );

    let file_name = options.variant.image_file_name();
    let cached_image = cache::entry_dir(
        &options.cache_dir,
        release.channel,
        release.version,
        release.arch,
    )
    .join(file_name);
    let accelerator = match args.provider {
        Provider::Qemu => Some(pick_accelerator(args.accelerator, &work)?),
        Provider::Ami => None,
    };
    if let Some(accelerator) = accelerator {
        supplied.insert(
            BuildInput::Accelerator.variable().into(),
            accelerator.packer_name().into(),
        );
        supplied.insert(
            BuildInput::ImagePath.variable().into(),
            cached_image.display().to_string(),
        );
        supplied.insert(
            BuildInput::ImageChecksum.variable().into(),
            "sha512:<verified SHA-512>".into(),
        );
        supplied.insert(
            BuildInput::SshPrivateKeyFile.variable().into(),
            work.join("id_ed25519").display().to_string(),
        );
        supplied.insert(
            BuildInput::IgnitionConfigPath.variable().into(),
            work.join("ignition.json").display().to_string(),
        );
    }
    let generated_path = work.join("build-vars.json");
    let var_file_paths: Vec<PathBuf> = mirror
        .iter()
        .cloned()
        .chain([generated_path.clone()])
        .collect();
    let signature_url = match &options.signature {
        SignaturePolicy::PinnedFlatcarKey { key_url } => Some(key_url.clone()),
        _ => None,
    };
    let mut plan = make_plan(PlanInputs {
        release: &release,
        provider: args.provider,
        image_url: format!("{}{file_name}", release.url),
        signature_url,
        values: &values,
        supplied: supplied.clone(),
        accelerator,
        output_dir: output_dir
            .strip_prefix(workspace::project_root())
            .unwrap_or(&output_dir)
            .display()
            .to_string(),
        var_file_paths: var_file_paths.clone(),
    });

    if args.dry_run {
        match args.fetch.format {
            Format::Text => print!("{}", render_plan(&plan)),
            Format::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        }
        return Ok(());
    }

    confirm_replace(&output_dir, args.force)?;
    let image = match args.provider {
        Provider::Qemu => Some(flatcar::fetch_image(sh, &options)?),
        Provider::Ami => None,
    };

    // From here on, Ctrl-C lets packer stop its VM, then we remove what we made.
    streaming::catch_interrupts();
    let result = build_in(
        sh,
        &capi,
        &work,
        &staging,
        image.as_ref(),
        &mut supplied,
        &var_file_paths,
        &mut plan,
    );
    let built = match result {
        Ok(()) if !streaming::interrupted() => Ok(()),
        Ok(()) => Err(anyhow::anyhow!("interrupted")),
        Err(err) => Err(err),
    };
    if let Err(err) = built {
        let _ = std::fs::remove_dir_all(&work);
        remove_if_empty(work.parent());
        return Err(err.context(format!(
            "building {build_name}; nothing was left in {}",
            output_dir.display()
        )));
    }

    let record = BuildRecord {
        channel: plan.channel.clone(),
        version: plan.version.clone(),
        arch: plan.arch.clone(),
        provider: format!("{:?}", args.provider).to_lowercase(),
        kubernetes_semver: plan.kubernetes_semver.clone(),
        containerd_version: plan.containerd_version.clone(),
        cni_version: plan.cni_version.clone(),
        accelerator: accelerator.unwrap_or(Accelerator::Tcg),
        base_image: match &image {
            Some(image) => Artifact {
                file: image.path.display().to_string(),
                sha512: image.sha512.clone(),
            },
            None => Artifact {
                file: "(the channel's AMI)".into(),
                sha512: String::new(),
            },
        },
        outputs: digests_of(&staging)?,
        build_ssh_public_key: std::fs::read_to_string(work.join("id_ed25519.pub"))
            .unwrap_or_default()
            .trim()
            .to_owned(),
        tools: probes
            .iter()
            .filter_map(|p| Some((p.tool.to_owned(), p.version?.to_string())))
            .collect(),
        started: build_started,
        finished: record::now_utc(),
    };
    std::fs::write(staging.join(record::FILE_NAME), record.to_json())
        .with_context(|| format!("writing {}", staging.join(record::FILE_NAME).display()))?;
    install_output(&staging, &output_dir)?;
    std::fs::remove_dir_all(&work)
        .with_context(|| format!("removing the build's work directory {}", work.display()))?;
    remove_if_empty(work.parent());
    eprintln!("Built {build_name}: {}", output_dir.display());

    if args.provider == Provider::Qemu && !args.no_verify {
        verify_vagrant::run(
            sh,
            &verify_vagrant::VerifyArgs {
                output_dir: Some(output_dir),
                memory: 2048,
                cpus: 2,
                no_cluster: args.verify_no_cluster,
                destroy: args.verify_destroy,
                accelerator,
            },
        )?;
    } else {
        println!("{}", output_dir.display());
    }
    Ok(())
}

/// The target's var files layered with the site's var file: every variable the site
/// sets must be one the template declares (Packer would ignore it silently).
fn layer_with_mirror(
    capi: &Path,
    target: &BuildTarget,
    mirror: Option<&Path>,
) -> anyhow::Result<(BTreeMap<String, Layered>, Option<PathBuf>)> {
    let (mut stack, findings) = layering::load_stack(capi, target);
    let mirror = match mirror {
        Some(path) => {
            let path = path
                .canonicalize()
                .with_context(|| format!("--mirror-config {}", path.display()))?;
            let doc = template::load(capi, &path.display().to_string())
                .map_err(|f| anyhow::anyhow!("--mirror-config {f}"))?;
            let (vars, problems) = VarFile::from_document(doc);
            if let Some(problem) = problems.first() {
                bail!("{problem}");
            }
            stack.var_files.push(vars);
            Some(path)
        }
        None => None,
    };
    let (values, layering_findings) = layering::layer(target, &stack);
    let problems: Vec<String> = findings
        .iter()
        .chain(&layering_findings)
        .map(|f| f.to_string())
        .collect();
    if !problems.is_empty() {
        bail!(
            "the var files of {} do not layer cleanly:\n{}",
            target.name,
            problems.join("\n")
        );
    }
    Ok((values, mirror))
}

/// Every variable of `provider`'s target after layering its var files, rendered:
/// what a mirror for this build has to stand in for.
pub fn rendered_variables(provider: Provider) -> anyhow::Result<BTreeMap<String, String>> {
    let (values, _) = layer_with_mirror(&workspace::capi_dir(), provider.target(), None)?;
    let none = BTreeMap::new();
    Ok(values
        .keys()
        .map(|name| (name.clone(), rendered(&values, &none, name)))
        .collect())
}

/// Resolves the release without downloading the image (online: its version.txt;
/// offline: the newest cached release, or the one asked for).
fn resolve(options: &flatcar::FetchOptions) -> anyhow::Result<Resolved> {
    let client = HttpClient::new(options.retries, options.progress);
    if options.offline {
        let version = match options.version {
            VersionRequest::Exact(v) => v,
            VersionRequest::Current => {
                *cache::cached_versions(&options.cache_dir, options.channel, options.arch)
                    .first()
                    .with_context(|| {
                        format!(
                            "--offline: no {} release in the cache {}",
                            options.channel,
                            options.cache_dir.display()
                        )
                    })?
            }
        };
        return Ok(Resolved {
            channel: options.channel,
            arch: options.arch,
            version,
            url: options.server.release_dir_url(
                options.channel,
                options.arch,
                &version.to_string(),
            ),
        });
    }
    let release = release::resolve_release(
        &client,
        &options.server,
        options.channel,
        options.version,
        options.arch,
    )?;
    Ok(Resolved {
        channel: release.channel,
        version: release.version,
        arch: release.arch,
        url: release.url,
    })
}

fn pick_accelerator(requested: Option<Accelerator>, work: &Path) -> anyhow::Result<Accelerator> {
    let probe = match requested {
        Some(_) => accelerator::KvmProbe::NoDevice,
        None => {
            let qemu = tools::find_program("qemu-system-x86_64")
                .context("qemu-system-x86_64 is not on PATH")?;
            let dir = work.parent().unwrap_or(work);
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            accelerator::probe_kvm(&qemu, dir)?
        }
    };
    let (accelerator, warning) = accelerator::choose(requested, probe, cfg!(target_os = "macos"));
    if let Some(warning) = warning {
        eprintln!("warning: {warning}");
    }
    Ok(accelerator)
}

/// An existing output directory is replaced only with --force or a "yes" on a terminal.
fn confirm_replace(output_dir: &Path, force: bool) -> anyhow::Result<()> {
    if !output_dir.exists() || force {
        return Ok(());
    }
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        eprint!(
            "{} exists. Replace it when the build succeeds? [y/N] ",
            output_dir.display()
        );
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("reading the answer")?;
        if matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
    }
    bail!(
        "{} exists from an earlier build; pass --force to replace it (it is replaced only once the new build succeeds)",
        output_dir.display()
    )
}

/// Prepares the build's key and Ignition config, then runs packer.
#[allow(clippy::too_many_arguments)]
fn build_in(
    sh: &Shell,
    capi: &Path,
    work: &Path,
    staging: &Path,
    image: Option<&flatcar::VerifiedImage>,
    supplied: &mut BTreeMap<String, String>,
    var_file_paths: &[PathBuf],
    plan: &mut Plan,
) -> anyhow::Result<()> {
    if work.exists() {
        std::fs::remove_dir_all(work)
            .with_context(|| format!("removing the stale work directory {}", work.display()))?;
    }
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    if let Some(image) = image {
        let key = key::generate(
            sh,
            work,
            &format!("flatcar-capi-builder {}", plan.build_name),
        )?;
        let stored = capi.join("packer/files/flatcar/ignition.json");
        let text = std::fs::read_to_string(&stored)
            .with_context(|| format!("reading {}", stored.display()))?;
        let config = json_text::parse(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", stored.display(), e.message))?;
        let config = ignition::authorize_key(config, &key.public_key)?;
        std::fs::write(work.join("ignition.json"), json_text::canonical(&config))
            .with_context(|| format!("writing {}", work.join("ignition.json").display()))?;
        supplied.insert(
            BuildInput::ImagePath.variable().into(),
            image.path.display().to_string(),
        );
        supplied.insert(
            BuildInput::ImageChecksum.variable().into(),
            format!("sha512:{}", image.sha512),
        );
    }
    plan.generated_var_file = supplied.clone();
    let generated = var_file_paths
        .last()
        .expect("the generated var file is always last");
    std::fs::write(
        generated,
        json_text::canonical(&serde_json::json!(supplied)),
    )
    .with_context(|| format!("writing {}", generated.display()))?;

    let packer = tools::find_program("packer").context("packer is not on PATH")?;
    let args: Vec<OsString> = plan.packer_command[1..]
        .iter()
        .map(OsString::from)
        .collect();
    let env: Vec<(&str, OsString)> = crate::packer::command::ENV
        .iter()
        .map(|(k, v)| (*k, OsString::from(v)))
        .collect();
    eprintln!(
        "Running packer build in {} (log: {})",
        capi.display(),
        work.join("packer.log").display()
    );
    let finished = streaming::run(
        &packer,
        &args,
        capi,
        &env,
        Some("packer"),
        Some(&work.join("packer.log")),
    )?;
    if !finished.success {
        bail!(
            "packer build failed:\n{}",
            failure_summary(&finished.output)
        );
    }
    if !staging.is_dir() {
        bail!(
            "packer build succeeded but wrote nothing to {}",
            staging.display()
        );
    }
    std::fs::copy(work.join("packer.log"), staging.join("packer.log"))
        .context("keeping the packer log")?;
    Ok(())
}

/// The part of packer's output that says what failed: a failed Ansible task's name
/// and message when there is one, else packer's last lines.
fn failure_summary(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let failed = lines
        .iter()
        .rposition(|l| l.contains("fatal:") || l.contains("FAILED!"));
    match failed {
        Some(at) => {
            let task = lines[..at].iter().rev().find(|l| l.contains("TASK ["));
            let mut summary = String::new();
            if let Some(task) = task {
                summary += task.trim();
                summary.push('\n');
            }
            summary += &lines[at..lines.len().min(at + 15)].join("\n");
            summary
        }
        None => streaming::tail(output, 25),
    }
}

/// Removes the shared `.work` directory once no build uses it (fails harmlessly when one does).
fn remove_if_empty(dir: Option<&Path>) {
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Every file packer wrote, with its SHA-512, sorted by name.
fn digests_of(dir: &Path) -> anyhow::Result<Vec<Artifact>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    names
        .iter()
        .map(|path| {
            Ok(Artifact {
                file: path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                sha512: crate::flatcar::cache::sha512_file(path)?,
            })
        })
        .collect()
}

/// Moves the finished staging directory into place; an older output is replaced
/// only now, so a failed build never destroys a good one.
fn install_output(staging: &Path, output_dir: &Path) -> anyhow::Result<()> {
    if output_dir.exists() {
        let old = output_dir.with_extension("replaced");
        std::fs::rename(output_dir, &old)
            .with_context(|| format!("moving aside {}", output_dir.display()))?;
        std::fs::rename(staging, output_dir)
            .with_context(|| format!("installing {}", output_dir.display()))?;
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))
    } else {
        std::fs::rename(staging, output_dir)
            .with_context(|| format!("installing {}", output_dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_version_sets_version_and_series() {
        let o = kubernetes_overrides("v1.35.4").unwrap();
        assert_eq!(o["kubernetes_version"], "1.35.4");
        assert_eq!(o["kubernetes_series"], "v1.35");
        assert!(kubernetes_overrides("1.35")
            .unwrap_err()
            .to_string()
            .contains("MAJOR.MINOR.PATCH"));
    }

    #[test]
    fn failure_summary_names_the_failed_task() {
        let output = "TASK [setup : Download PyPy] ****\nok: [default]\nTASK [kubernetes : Install kubeadm] ***\n\
                      fatal: [default]: FAILED! => {\"msg\": \"checksum mismatch\"}\nPLAY RECAP\n";
        let summary = failure_summary(output);
        assert!(
            summary.starts_with("TASK [kubernetes : Install kubeadm]"),
            "{summary}"
        );
        assert!(summary.contains("checksum mismatch"));
    }

    #[test]
    fn url_variables_are_the_download_locations() {
        assert!(is_url_variable("cni_url"));
        assert!(is_url_variable("kubernetes_http_source"));
        assert!(!is_url_variable("kubernetes_source_type"));
    }
}
