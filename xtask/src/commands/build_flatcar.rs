//! `cargo xtask build-flatcar [CHANNEL] [VERSION]`: from a Flatcar release to a
//! provisioned node image and a libvirt box. Resolve the release once, check the
//! image definitions (`validate`), make the plan (`build::plan`), fetch the verified
//! image, make a per-build key and Ignition config, run `packer build` with the
//! target's var files, collect the outputs with a build record, then verify the box
//! (`verify-vagrant`). The output directory is either complete or absent. stdout
//! carries data only: the plan (`--dry-run`), the `export ...` line, or JSON.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;
use xshell::Shell;

use crate::build::plan::{self, KubernetesVersion, Plan, PlanInputs, Provider};
use crate::build::record::{self, Artifact, BuildRecord, Finished, SignedBy};
use crate::build::{ignition, key};
use crate::checks::engine::CheckOptions;
use crate::commands::fetch_image::FetchImageArgs;
use crate::commands::validate;
use crate::commands::verify_vagrant::{self, VerifyArgs, VerifyOptions};
use crate::flatcar::{self, FetchOptions, SignaturePolicy, VerifiedImage};
use crate::install::{self, InstallOptions};
use crate::output::Format;
use crate::packer::targets::BuildTarget;
use crate::rules::{self as node_rules, Stage};
use crate::toolchain::tools::{self, Probe, Purpose, TOOLS};
use crate::vm::accelerator::{self, Accelerator};
use crate::vm::streaming;
use crate::{error::Exit, json_text, workspace};

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
        Provider::Qemu => Some(pick_accelerator(args.accelerator)?),
        Provider::Ami => None,
    };
    let inputs = PlanInputs {
        provider: args.provider,
        release,
        variant: options.variant,
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
    };
    Ok(Planned {
        plan: plan::plan(&inputs, None),
        inputs,
        options,
        probes,
    })
}

/// Carries out `planned`: fetches the release it resolved, runs packer in a work
/// directory and installs the outputs with their record. Does not verify the box.
pub fn build(sh: &Shell, args: &BuildArgs, planned: Planned) -> anyhow::Result<Built> {
    let started = crate::utc::now();
    confirm_replace(&planned.plan.paths.output, args.force)?;
    let image = match args.provider {
        Provider::Qemu => Some(flatcar::fetch_image(
            sh,
            &planned.options,
            &planned.inputs.release,
        )?),
        Provider::Ami => None,
    };
    let plan = plan::plan(&planned.inputs, image.as_ref().map(|i| i.sha512.as_str()));
    let paths = &plan.paths;

    // The work directory holds the build's private key: it goes on every way out
    // of here (an error, a panic, success), never only on the happy path.
    let work = WorkDir::create(&paths.work)?;
    // While packer runs, Ctrl-C lets it stop its VM, then we remove what we made.
    let interrupts = streaming::catch_interrupts();
    let rules = NodeRules {
        vars: plan::variables(&planned.inputs, &plan),
        goss: args.verify.goss.as_deref(),
    };
    let packed = run_packer(sh, &plan, image.as_ref(), &rules).and_then(|()| {
        match streaming::interrupted() {
            true => Err(anyhow::anyhow!("interrupted")),
            false => Ok(()),
        }
    });
    drop(interrupts);
    let result = packed.and_then(|()| {
        let record = record_build(&plan, &planned, image, started)?;
        install_output(&paths.staging, &paths.output)?;
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

/// Writes `build.json` into the staging directory: the plan, the verified base
/// image, the digest of every output, the tools.
fn record_build(
    plan: &Plan,
    planned: &Planned,
    image: Option<VerifiedImage>,
    started: String,
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
            outputs: digests_of(&paths.staging)?,
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
        },
    );
    let record_path = paths.staging.join(record::FILE_NAME);
    std::fs::write(&record_path, record.to_json())
        .with_context(|| format!("writing {}", record_path.display()))?;
    Ok(record)
}

/// Who vouched for `image`, for the record: a replaced trust anchor is said there too.
fn signed_by(image: &VerifiedImage, policy: &SignaturePolicy) -> Option<SignedBy> {
    let signature = image.signature.as_ref()?;
    let anchor = policy.replaced_anchor();
    Some(SignedBy {
        primary_key: signature.primary_key.clone(),
        signing_key: signature.signing_key.clone(),
        pinned_flatcar_key: anchor.is_none()
            && signature.primary_key == flatcar::fetch::FLATCAR_SIGNING_KEY_FINGERPRINT,
        trust_anchor: anchor,
    })
}

/// A build's work directory (its key, Ignition config, var file, staging output):
/// made fresh, and removed when the value is dropped, whatever ends the build.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create(path: &Path) -> anyhow::Result<WorkDir> {
        if path.exists() {
            std::fs::remove_dir_all(path)
                .with_context(|| format!("removing the stale work directory {}", path.display()))?;
        }
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir {
            path: path.to_path_buf(),
        })
    }

    /// Removes it now, saying so when that fails (the key would be left behind).
    fn remove(self) -> anyhow::Result<()> {
        let removed = std::fs::remove_dir_all(&self.path);
        if removed.is_ok() {
            remove_if_empty(self.path.parent());
        }
        removed.with_context(|| {
            format!(
                "removing the build's work directory {} (it holds the build's private key: remove it)",
                self.path.display()
            )
        })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.path.exists() {
            let _ = std::fs::remove_dir_all(&self.path);
            remove_if_empty(self.path.parent());
        }
    }
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
    Ok(probes)
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

/// The accelerator asked for, or the one a probe finds; the probe's disk lives in
/// a temporary directory, so nothing is left behind (a dry run writes nothing).
fn pick_accelerator(requested: Option<Accelerator>) -> anyhow::Result<Accelerator> {
    let probe = match requested {
        Some(_) => accelerator::KvmProbe::NoDevice,
        None => {
            let qemu = tools::find_program("qemu-system-x86_64")
                .context("qemu-system-x86_64 is not on PATH")?;
            let dir = tempfile::tempdir().context("making a directory for the KVM probe")?;
            accelerator::probe_kvm(&qemu, dir.path())?
        }
    };
    let (accelerator, warning) = accelerator::choose(requested, probe, cfg!(target_os = "macos"));
    if let Some(warning) = warning {
        eprintln!("warning: {warning}");
    }
    Ok(accelerator)
}

/// An existing output directory is replaced only with --force or a "yes" on a
/// terminal, and only when it is one of ours (its build.json reads) whose verify
/// VM is gone: removing a running VM's directory would orphan the VM.
fn confirm_replace(output_dir: &Path, force: bool) -> anyhow::Result<()> {
    if !output_dir.exists() {
        return Ok(());
    }
    if let Err(err) = BuildRecord::read(output_dir) {
        bail!(
            "{} exists but is not the output of a build of this tool ({err:#}); \
             it is not replaced, even with --force: move or remove it yourself",
            output_dir.display()
        );
    }
    let ids = verify_vm_ids(output_dir);
    if !ids.is_empty() {
        bail!(
            "{} has a verify VM that may still run ({}); it is not replaced, even with --force: \
             run `vagrant destroy --force` in {} (or `cargo xtask boxes --cleanup`) first",
            output_dir.display(),
            ids.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            output_dir.join("vagrant").display()
        );
    }
    if force {
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

/// The node rules' inputs: the build's variables and, optionally, a goss to run them.
struct NodeRules<'a> {
    vars: BTreeMap<String, String>,
    goss: Option<&'a Path>,
}

/// Fills the work directory with what the plan names (the key and Ignition config
/// when a Flatcar image boots, the node rules, the generated var file), then runs
/// packer.
fn run_packer(
    sh: &Shell,
    plan: &Plan,
    image: Option<&VerifiedImage>,
    rules: &NodeRules,
) -> anyhow::Result<()> {
    let paths = &plan.paths;
    if image.is_some() {
        let public_key = write_first_boot_config(sh, plan)?;
        let mut vars = rules.vars.clone();
        let key_body = public_key.split_whitespace().nth(1).unwrap_or_default();
        vars.insert("build_ssh_public_key".into(), key_body.to_owned());
        let capi = workspace::capi_dir();
        node_rules::write_runner(&paths.node_rules, &capi, Stage::Build, &vars, rules.goss)?;
    }
    std::fs::write(
        &paths.generated_var_file,
        json_text::canonical(&serde_json::json!(plan.generated_var_file)),
    )
    .with_context(|| format!("writing {}", paths.generated_var_file.display()))?;

    let packer = tools::find_program("packer").context("packer is not on PATH")?;
    let args: Vec<OsString> = plan.packer_command[1..]
        .iter()
        .map(OsString::from)
        .collect();
    let env: Vec<(&str, OsString)> = crate::packer::command::ENV
        .iter()
        .map(|(k, v)| (*k, OsString::from(v)))
        .collect();
    let capi = workspace::capi_dir();
    eprintln!(
        "Running packer build in {} (log: {})",
        capi.display(),
        paths.packer_log.display()
    );
    let finished = streaming::run(
        &packer,
        &args,
        &capi,
        &env,
        Some("packer"),
        Some(&paths.packer_log),
    )?;
    if !finished.success {
        bail!(
            "packer build failed:\n{}",
            failure_summary(&finished.output)
        );
    }
    if !paths.staging.is_dir() {
        bail!(
            "packer build succeeded but wrote nothing to {}",
            paths.staging.display()
        );
    }
    std::fs::copy(&paths.packer_log, paths.staging.join("packer.log"))
        .context("keeping the packer log")?;
    // verify-vagrant checks the booted box against the same values.
    let rule_vars = paths.node_rules.join(node_rules::VARS_FILE);
    if rule_vars.is_file() {
        std::fs::copy(&rule_vars, paths.staging.join(node_rules::VARS_FILE))
            .context("keeping the node rules' values")?;
    }
    Ok(())
}

/// The build's key pair and the repository's first-boot Ignition config with the
/// key authorized, where the plan says; returns the public key.
fn write_first_boot_config(sh: &Shell, plan: &Plan) -> anyhow::Result<String> {
    let paths = &plan.paths;
    let comment = format!("flatcar-capi-builder {}", plan.build_name);
    let key = key::generate(sh, &paths.work, &comment)?;
    let stored = workspace::capi_dir().join("packer/files/flatcar/ignition.json");
    let text = std::fs::read_to_string(&stored)
        .with_context(|| format!("reading {}", stored.display()))?;
    let config = json_text::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", stored.display(), e.message))?;
    let config = ignition::authorize_key(config, &key.public_key)?;
    std::fs::write(&paths.ignition_config, json_text::canonical(&config))
        .with_context(|| format!("writing {}", paths.ignition_config.display()))?;
    Ok(key.public_key)
}

/// The part of packer's output that says what failed: a failed Ansible task's name
/// and message when there is one, else packer's last lines.
fn failure_summary(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    // The node rules list what failed, with what was expected and found.
    if let Some(at) = lines
        .iter()
        .rposition(|l| l.contains("node rules that failed:"))
    {
        let summary = lines[..at]
            .iter()
            .rev()
            .find(|l| l.contains("node rules: "));
        let list = lines[at..]
            .iter()
            .take_while(|l| l.contains("node rules that failed:") || l.contains("[FAIL] "));
        return summary
            .into_iter()
            .chain(list)
            .map(|l| l.trim())
            .collect::<Vec<_>>()
            .join("\n");
    }
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
/// only now, so a failed build never destroys a good one. The older output is
/// moved aside under a fresh name of its own, so no leftover of another build
/// (another patch version, an interrupted run) stands in the way.
fn install_output(staging: &Path, output_dir: &Path) -> anyhow::Result<()> {
    if !output_dir.exists() {
        return std::fs::rename(staging, output_dir)
            .with_context(|| format!("installing {}", output_dir.display()));
    }
    let parent = output_dir.parent().unwrap_or(Path::new("."));
    let name = output_dir.file_name().unwrap_or_default().to_string_lossy();
    let aside = tempfile::Builder::new()
        .prefix(&format!(".{name}.replaced-"))
        .tempdir_in(parent)
        .with_context(|| format!("making a directory to move {} aside", output_dir.display()))?;
    let old = aside.path().join("old");
    std::fs::rename(output_dir, &old)
        .with_context(|| format!("moving aside {}", output_dir.display()))?;
    if let Err(err) = std::fs::rename(staging, output_dir) {
        // Put the old output back: a failed install must not lose it.
        let _ = std::fs::rename(&old, output_dir);
        return Err(err).with_context(|| format!("installing {}", output_dir.display()));
    }
    let old_path = aside.path().to_path_buf();
    aside
        .close()
        .with_context(|| format!("removing the replaced output {}", old_path.display()))
}

/// Whether the verify VM of an existing output may still exist: vagrant keeps a
/// machine's id under `vagrant/.vagrant/machines/<name>/<provider>/id` until it is
/// destroyed.
fn verify_vm_ids(output_dir: &Path) -> Vec<PathBuf> {
    let machines = output_dir.join("vagrant/.vagrant/machines");
    let mut ids = Vec::new();
    for machine in std::fs::read_dir(machines).into_iter().flatten().flatten() {
        for provider in std::fs::read_dir(machine.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let id = provider.path().join("id");
            if id.is_file() {
                ids.push(id);
            }
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// An error after packer (a failed digest, record write or install) and a panic
    /// both leave no key behind.
    #[test]
    fn finding_8_the_build_key_is_removed_on_every_exit_path() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join(".work/flatcar-stable-1.2.3-kube-v1.36.2");
        let key = work.join(key::PRIVATE_KEY_FILE);

        let failed = (|| -> anyhow::Result<()> {
            let _work = WorkDir::create(&work)?;
            std::fs::write(&key, "private")?;
            // What an error in record_build does: staging is missing here.
            digests_of(&work.join("output"))?;
            Ok(())
        })();
        assert!(failed.is_err());
        assert!(!key.exists() && !work.exists(), "the key outlived an error");
        assert!(!dir.path().join(".work").exists(), "the empty .work stays");

        let panicked = std::panic::catch_unwind(|| {
            let _work = WorkDir::create(&work).unwrap();
            std::fs::write(&key, "private").unwrap();
            panic!("a bug half-way through a build");
        });
        assert!(panicked.is_err());
        assert!(!key.exists(), "the key outlived a panic");

        let done = WorkDir::create(&work).unwrap();
        std::fs::write(&key, "private").unwrap();
        done.remove().unwrap();
        assert!(!work.exists());
    }

    /// What packer prints (and Ansible's failure messages repeat) goes through the
    /// streaming runner into packer.log and onto stderr: never a mirror's password.
    #[test]
    fn finding_8_credentials_in_urls_stay_out_of_packer_log_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("packer.log");
        let args: Vec<OsString> = vec![
            "-c".into(),
            "echo 'fatal: GET https://alice:hunter2@mirror.example/kubeadm: 404'".into(),
        ];
        let finished = streaming::run(
            Path::new("/bin/sh"),
            &args,
            dir.path(),
            &[],
            None,
            Some(&log),
        )
        .unwrap();
        let logged = std::fs::read_to_string(&log).unwrap();
        for text in [
            &logged,
            &finished.output,
            &failure_summary(&finished.output),
        ] {
            assert!(
                !text.contains("hunter2") && !text.contains("alice"),
                "{text}"
            );
            assert!(
                text.contains("https://***@mirror.example/kubeadm"),
                "{text}"
            );
        }
    }

    /// build.json says which key vouched for the base image, and when it is not
    /// Flatcar's pinned key, what replaced it.
    #[test]
    fn finding_7_the_build_record_names_a_replaced_trust_anchor() {
        let image = |primary: &str| VerifiedImage {
            channel: flatcar::Channel::Stable,
            version: "4081.2.0".parse().unwrap(),
            arch: flatcar::Arch::Amd64,
            variant: flatcar::Variant::Bios,
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

    /// `…-v1.36.2` and `…-v1.36.3` once shared `…-v1.36.replaced`: a leftover of one
    /// made the other's install fail after a complete build.
    #[test]
    fn finding_9_a_leftover_move_aside_does_not_block_the_install() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("flatcar-stable-1.2.3-kube-v1.36.2");
        std::fs::create_dir_all(&output).unwrap();
        std::fs::write(output.join("old.qcow2"), "old").unwrap();
        for leftover in [
            "flatcar-stable-1.2.3-kube-v1.36.replaced",
            "flatcar-stable-1.2.3-kube-v1.36.2.replaced",
        ] {
            let leftover = dir.path().join(leftover);
            std::fs::create_dir_all(&leftover).unwrap();
            std::fs::write(leftover.join("other"), "another build's").unwrap();
        }
        let staging = dir.path().join("staging");
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::write(staging.join("new.qcow2"), "new").unwrap();

        install_output(&staging, &output).unwrap();
        assert_eq!(
            std::fs::read_to_string(output.join("new.qcow2")).unwrap(),
            "new"
        );
        assert!(!output.join("old.qcow2").exists());
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "flatcar-stable-1.2.3-kube-v1.36.2",
                "flatcar-stable-1.2.3-kube-v1.36.2.replaced",
                "flatcar-stable-1.2.3-kube-v1.36.replaced"
            ],
            "another build's leftovers are not ours to remove, and nothing of ours is left"
        );
    }
}
