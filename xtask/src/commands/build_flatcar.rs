//! `cargo xtask build-flatcar [CHANNEL] [VERSION]`: from a Flatcar release to a
//! provisioned node image and a libvirt box. Resolve the release once, check the
//! image definitions (`validate`), make the plan (`build::plan`), fetch the verified
//! image, make a per-build key and Ignition config, run `packer build` with the
//! target's var files, collect the outputs with a build record, then verify the box
//! (`verify-vagrant`). The output directory is either complete or absent. stdout
//! carries data only: the plan (`--dry-run`), the `export ...` line, or JSON.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use xshell::Shell;

use crate::artifacts::{self, PypyDefaults};
use crate::build::plan::{self, Delivery, KubernetesVersion, Plan, PlanInputs, Provider};
use crate::build::record::{self, Artifact, BuildRecord, Finished, SignedBy};
use crate::build::timeline::Timeline;
use crate::build::{output_dir, packer_run, work_dir};
use crate::checks::engine::CheckOptions;
use crate::commands::fetch_image::FetchImageArgs;
use crate::commands::validate;
use crate::commands::verify_vagrant::{self, VerifyArgs, VerifyOptions};
use crate::flatcar::{self, FetchOptions, SignaturePolicy, VerifiedImage};
use crate::install::{self, InstallOptions};
use crate::net::download::{HttpClient, ProgressStyle};
use crate::net::file_server::{FileServer, Files};
use crate::output::Format;
use crate::packer::targets::BuildTarget;
use crate::toolchain::tools::{self, Probe, Purpose, TOOLS};
use crate::vm::accelerator::{self, Accelerator};
use crate::vm::streaming;
use crate::{error::Exit, workspace};

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
    pub kubernetes_version: Option<KubernetesVersion>,
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
    /// Do not install a missing packer or ansible into .local/ first.
    #[arg(long)]
    pub no_install: bool,
    #[command(flatten)]
    pub install: InstallOptions,
    #[command(
        flatten,
        next_help_heading = "Verifying the box (the options of verify-vagrant)"
    )]
    pub verify: VerifyOptions,
}

/// A build decided: its plan, and what carrying it out needs.
pub struct Planned {
    pub plan: Plan,
    inputs: PlanInputs,
    options: FetchOptions,
    probes: Vec<Probe>,
}

/// A finished build, installed in its output directory.
#[derive(Debug, Serialize)]
pub struct Built {
    pub output_dir: PathBuf,
    pub record: BuildRecord,
}

pub fn run(sh: &Shell, args: &BuildArgs) -> anyhow::Result<()> {
    let planned = plan(sh, args)?;
    let format = args.fetch.format;
    if args.dry_run {
        match format {
            Format::Text => print!("{}", plan::render_text(&planned.plan)),
            Format::Json => println!("{}", serde_json::to_string_pretty(&planned.plan)?),
        }
        return Ok(());
    }
    let built = build(sh, args, planned)?;
    let exports = if args.provider == Provider::Qemu && !args.no_verify {
        let verify = VerifyArgs {
            output_dir: Some(built.output_dir.clone()),
            vm: args.verify.clone(),
            accelerator: None,
        };
        verify_vagrant::verify(sh, &verify)?
    } else {
        None
    };
    match format {
        Format::Text => match &exports {
            Some(exports) => println!("{exports}"),
            None => println!("{}", built.output_dir.display()),
        },
        Format::Json => {
            let json = serde_json::json!({"built": built, "exports": exports});
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
    }
    if exports.is_some() {
        eprintln!("The VM is running: run the exports, then `vagrant ssh`.");
    }
    Ok(())
}

/// Decides the build: tools, the checks of `validate` (not for a dry run), the
/// layered var files, the release (resolved here, once), the accelerator. A dry
/// run stops here, having written nothing.
pub fn plan(sh: &Shell, args: &BuildArgs) -> anyhow::Result<Planned> {
    let target = args.provider.target();
    // Tools first: nothing is downloaded for a build that cannot run.
    if !args.no_install && !args.dry_run {
        install::install_missing(sh, Purpose::Build, &args.install, args.fetch.retries)?;
    }
    let probes = probe_tools(sh, args.provider)?;
    if !args.dry_run {
        validate_definitions(sh, target)?;
    }
    let (values, mirror_config) = plan::layer_with_mirror(
        &workspace::capi_dir(),
        target,
        args.mirror_config.as_deref(),
    )?;
    let options = args.fetch.fetch_options()?;
    let release = flatcar::resolve(&options)?;
    let accelerator = match args.provider {
        Provider::Qemu => Some(accelerator::pick(args.accelerator)?),
        Provider::Ami => None,
    };
    let inputs = PlanInputs {
        provider: args.provider,
        release,
        image: options.image,
        signing_key_url: match &options.signature {
            SignaturePolicy::PinnedFlatcarKey { key_url, .. } => Some(key_url.clone()),
            _ => None,
        },
        values,
        mirror_config,
        kubernetes: args.kubernetes_version,
        accelerator,
        root: workspace::project_root(),
        cache_dir: options.cache_dir.clone(),
        pypy: PypyDefaults::load(&workspace::capi_dir())?,
    };
    Ok(Planned {
        plan: plan::plan(&inputs, None, None)?,
        inputs,
        options,
        probes,
    })
}

/// Carries out `planned`: fetches the release it resolved, runs packer in a work
/// directory and installs the outputs with their record. Does not verify the box.
pub fn build(sh: &Shell, args: &BuildArgs, planned: Planned) -> anyhow::Result<Built> {
    let started = (crate::utc::now(), Instant::now());
    output_dir::confirm_replace(&planned.plan.paths.output, args.force)?;
    let image = match args.provider {
        Provider::Qemu => Some(flatcar::fetch_image(
            sh,
            &planned.options,
            &planned.inputs.release,
        )?),
        Provider::Ami => None,
    };
    // Every artifact is verified before packer starts, and served to the VM
    // for as long as packer runs.
    let server = match planned.plan.artifact_delivery {
        Delivery::Host => Some(serve_artifacts(&planned)?),
        Delivery::Guest => None,
    };
    let plan = plan::plan(
        &planned.inputs,
        image.as_ref().map(|i| i.sha512.as_str()),
        server.as_ref().map(FileServer::url_for_guest).as_deref(),
    )?;
    let paths = &plan.paths;

    // The work directory holds the build's private key: it goes on every way out
    // of here (an error, a panic, success), never only on the happy path.
    let work = work_dir::WorkDir::create(&paths.work)?;
    // While packer runs, Ctrl-C lets it stop its VM, then we remove what we made.
    let interrupts = streaming::catch_interrupts();
    let rules = packer_run::NodeRules {
        vars: plan::variables(&planned.inputs, &plan),
        goss: args.verify.goss.as_deref(),
    };
    let packer_started = Instant::now();
    let packed = packer_run::run_packer(sh, &plan, image.as_ref(), &rules).and_then(|timeline| {
        match streaming::interrupted() {
            true => Err(anyhow::anyhow!("interrupted")),
            false => Ok((packer_started.elapsed().as_secs_f64(), timeline)),
        }
    });
    drop(interrupts);
    if let Some(server) = server {
        eprintln!(
            "The build's artifact server answered {} requests from the VM.",
            server.requests().len()
        );
    }
    let result = packed.and_then(|packer| {
        let record = record_build(&plan, &planned, image, started, packer)?;
        output_dir::install_output(&paths.staging, &paths.output)?;
        Ok(record)
    });
    let record = match result {
        Ok(record) => record,
        Err(err) => {
            drop(work);
            return Err(err.context(format!(
                "building {}; nothing was left in {}",
                plan.build_name,
                paths.output.display()
            )));
        }
    };
    work.remove()?;
    eprintln!("Built {}: {}", plan.build_name, paths.output.display());
    Ok(Built {
        output_dir: paths.output.clone(),
        record,
    })
}

/// Fetches the plan's artifacts into the cache (or finds them there, verified) and
/// serves exactly those files, and their checksum files, on 127.0.0.1.
fn serve_artifacts(planned: &Planned) -> anyhow::Result<FileServer> {
    let options = &planned.options;
    // Parallel downloads share stderr: a line each now and then, not bars.
    let progress = match options.progress {
        ProgressStyle::Bar => ProgressStyle::Lines,
        other => other,
    };
    let client = HttpClient::with_limits(options.retries, progress, options.limits);
    let cached = artifacts::fetch_all(
        &client,
        &options.cache_dir,
        &planned.plan.artifacts,
        options.offline,
    )?;
    let downloaded = cached.iter().filter(|c| c.downloaded).count();
    if options.progress != ProgressStyle::Quiet {
        eprintln!(
            "Artifacts verified: {} ({downloaded} downloaded, {} from the cache {})",
            cached.len(),
            cached.len() - downloaded,
            options.cache_dir.display()
        );
    }
    FileServer::start(Files::Map(artifacts::served_files(&cached)?))
}

/// Writes `build.json` into the staging directory: the plan, the verified base
/// image, the digest of every output, the tools.
fn record_build(
    plan: &Plan,
    planned: &Planned,
    image: Option<VerifiedImage>,
    (started, started_at): (String, Instant),
    (packer_seconds, timeline): (f64, Timeline),
) -> anyhow::Result<BuildRecord> {
    let paths = &plan.paths;
    let public_key = paths.ssh_private_key.with_extension("pub");
    let record = BuildRecord::new(
        plan,
        Finished {
            base_image_signed_by: image
                .as_ref()
                .and_then(|image| signed_by(image, &planned.options.signature)),
            base_image_url: image.as_ref().map(|image| image.final_url.clone()),
            base_image: image.map(|image| Artifact {
                file: image.path.display().to_string(),
                sha512: image.sha512,
            }),
            outputs: output_dir::digests_of(&paths.staging)?,
            build_ssh_public_key: std::fs::read_to_string(public_key)
                .unwrap_or_default()
                .trim()
                .to_owned(),
            tools: planned
                .probes
                .iter()
                .filter_map(|p| Some((p.tool.to_owned(), p.version?.to_string())))
                .collect(),
            started,
            started_at,
            packer_seconds,
            timeline,
        },
    );
    let record_path = paths.staging.join(record::FILE_NAME);
    std::fs::write(&record_path, record.to_json())
        .with_context(|| format!("writing {}", record_path.display()))?;
    Ok(record)
}

/// Who vouched for `image`, for the record: a replaced trust anchor is said there too.
fn signed_by(image: &VerifiedImage, policy: &SignaturePolicy) -> Option<SignedBy> {
    SignedBy::of(image, policy)
}

/// The tools a build of `provider` needs, probed; exit 2 when one is unusable.
fn probe_tools(sh: &Shell, provider: Provider) -> anyhow::Result<Vec<Probe>> {
    let needed: Vec<_> = TOOLS
        .iter()
        .filter(|t| t.purposes.contains(&Purpose::Build))
        .filter(|t| {
            provider == Provider::Qemu || matches!(t.program, "packer" | "ansible-playbook")
        })
        .collect();
    tools::require(sh, &needed, "the build")
}

/// The same checks as `cargo xtask validate --target <target>`.
fn validate_definitions(sh: &Shell, target: &BuildTarget) -> anyhow::Result<()> {
    const ADVICE: &str = "the image definitions do not validate; fix them before building";
    let checks = validate::ValidateArgs::for_target(target.name, CheckOptions::default());
    match validate::run(sh, &checks) {
        Ok(()) => Ok(()),
        Err(err) => match err.downcast_ref::<Exit>() {
            // validate printed its report; what is left to say is what it means here.
            Some(Exit(code)) => {
                eprintln!("error: {ADVICE}");
                Err(Exit(*code).into())
            }
            None => Err(err.context(ADVICE)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    /// build.json says which key vouched for the base image, and when it is not
    /// Flatcar's pinned key, what replaced it.
    #[test]
    fn finding_7_the_build_record_names_a_replaced_trust_anchor() {
        let image = |primary: &str| VerifiedImage {
            channel: flatcar::Channel::Stable,
            version: "4081.2.0".parse().unwrap(),
            arch: flatcar::Arch::Amd64,
            image: flatcar::platform::ReleaseImage::Qemu(flatcar::Variant::Bios),
            path: PathBuf::from("/cache/img"),
            size: 1,
            sha512: "ab".into(),
            source_url: "http://mirror.example/img".into(),
            final_url: "http://mirror.example/img".into(),
            signature: Some(flatcar::fetch::SignatureRecord {
                primary_key: primary.into(),
                signing_key: "SUBKEY".into(),
                signed_at: 0,
                file: PathBuf::from("/cache/img.sig"),
            }),
            from_cache: false,
        };
        let pinned = flatcar::fetch::FLATCAR_SIGNING_KEY_FINGERPRINT;
        let flatcar_key = SignaturePolicy::PinnedFlatcarKey {
            key_url: "https://www.flatcar.org/key.asc".into(),
            fingerprint: pinned.parse().unwrap(),
        };
        let signed = signed_by(&image(pinned), &flatcar_key).unwrap();
        assert!(signed.pinned_flatcar_key && signed.trust_anchor.is_none());

        let key_file = SignaturePolicy::KeyFile(PathBuf::from("/home/me/custom.asc"));
        let signed = signed_by(
            &image("0123456789ABCDEF0123456789ABCDEF01234567"),
            &key_file,
        )
        .unwrap();
        assert!(!signed.pinned_flatcar_key);
        assert!(signed.trust_anchor.unwrap().contains("/home/me/custom.asc"));

        let other_pin = SignaturePolicy::PinnedFlatcarKey {
            key_url: "https://builds.example/key.asc".into(),
            fingerprint: "0123456789ABCDEF0123456789ABCDEF01234567".parse().unwrap(),
        };
        let anchor = signed_by(
            &image("0123456789ABCDEF0123456789ABCDEF01234567"),
            &other_pin,
        )
        .unwrap()
        .trust_anchor
        .unwrap();
        assert!(anchor.contains("--signing-key-fingerprint"), "{anchor}");
    }
}
