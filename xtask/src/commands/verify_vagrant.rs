//! `cargo xtask verify-vagrant`: boots a build's libvirt box with vagrant and checks
//! it is a working Kubernetes node: the node rules (images/capi/packer/goss/) with
//! the build's values, in one SSH session, then what needs a cluster: `kubeadm
//! init`, `kubectl cluster-info` and a Ready node. Ends with the exports a user
//! needs to go on with `vagrant ssh`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::build::record::BuildRecord;
use crate::flatcar::release::{Channel, Version};
use crate::fsx::{write_atomically, write_atomically_with_mode};
use crate::toolchain::tools::{self, Purpose, TOOLS};
use crate::vm::accelerator::Accelerator;
use crate::vm::vagrant::{self, VagrantfileSpec};
use crate::{build::ignition, build::key, error::Exit, rules, table, vm::streaming, workspace};

#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    /// A build's output directory (default: the newest under images/capi/output).
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    #[command(flatten)]
    pub vm: VerifyOptions,
    /// The accelerator the box's VM runs with (default: as the build recorded).
    #[arg(long, value_enum)]
    pub accelerator: Option<Accelerator>,
}

/// How the box is booted and checked; `build-flatcar` takes the same options for
/// the verification it runs.
#[derive(clap::Args, Debug, Clone)]
pub struct VerifyOptions {
    /// Memory for the VM, in MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory: u32,
    /// Virtual CPUs for the VM.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Check the node rules only; report kubeadm init and the cluster checks as
    /// not run (for images whose Kubernetes binaries cannot start a cluster here).
    #[arg(long)]
    pub no_cluster: bool,
    /// Run the node rules with this goss binary instead of the compiled script.
    #[arg(long, value_name = "PATH")]
    pub goss: Option<PathBuf>,
    /// Destroy the VM when done (it is always destroyed when a step fails).
    #[arg(long)]
    pub destroy: bool,
}

/// What needs a cluster, in order; each runs inside the VM through `vagrant ssh -c`.
/// Everything about the node itself is a node rule.
const CLUSTER_STEPS: &[(&str, &str)] = &[
    ("stop locksmithd", "sudo systemctl stop locksmithd.service || true"),
    ("restart containerd", "sudo systemctl restart containerd"),
    (
        "kubeadm init",
        "sudo /opt/bin/kubeadm init --config /etc/kubeadm.yml --ignore-preflight-errors=NumCPU,Mem",
    ),
    (
        "copy the admin kubeconfig for core",
        "mkdir -p $HOME/.kube && sudo cp /etc/kubernetes/admin.conf $HOME/.kube/config && sudo chown $(id -u):$(id -g) $HOME/.kube/config",
    ),
    ("kubectl cluster-info", "/opt/bin/kubectl cluster-info"),
    (
        "the node becomes Ready",
        // A single test node needs some pod network to become Ready: a bridge
        // conflist from the image's own CNI plugins, for this VM only.
        "sudo mkdir -p /etc/cni/net.d && printf '%s' '{\"cniVersion\":\"1.0.0\",\"name\":\"verify\",\"plugins\":[{\"type\":\"bridge\",\"bridge\":\"cni0\",\"isGateway\":true,\"ipMasq\":true,\"ipam\":{\"type\":\"host-local\",\"ranges\":[[{\"subnet\":\"10.244.0.0/16\"}]]}},{\"type\":\"portmap\",\"capabilities\":{\"portMappings\":true}}]}' | sudo tee /etc/cni/net.d/10-verify.conflist >/dev/null && /opt/bin/kubectl wait --for=condition=Ready node --all --timeout=300s",
    ),
];

pub fn run(sh: &Shell, args: &VerifyArgs) -> anyhow::Result<()> {
    if let Some(exports) = verify(sh, args)? {
        println!("{exports}");
        eprintln!("The VM is running: run the exports above, then `vagrant ssh`.");
    }
    Ok(())
}

/// Verifies the box; returns the `export ...` line that leads to the running VM
/// (`None` once the VM is destroyed).
pub fn verify(sh: &Shell, args: &VerifyArgs) -> anyhow::Result<Option<String>> {
    let output_dir = match &args.output_dir {
        Some(dir) => dir.clone(),
        None => newest_output_dir()?,
    };
    let record = BuildRecord::read(&output_dir)?;
    let (channel, version) = release_of(&record, &output_dir)?;
    let box_file = find_box(&output_dir)?;
    let accelerator = args.accelerator.unwrap_or(record.accelerator);

    probe_tools(sh)?;
    check_libvirtd(sh)?;

    let box_name = vagrant::box_name(channel.name(), &version.to_string());
    let work = output_dir.join("vagrant");
    let vagrantfile = write_vagrant_dir(sh, &work, &box_name, accelerator, &args.vm)?;

    let vagrant = Vagrant {
        program: tools::find_program("vagrant").context("vagrant is not on PATH")?,
        dir: work.clone(),
    };

    let (rows, failed) = run_steps(&vagrant, &box_name, &box_file, &output_dir, &work, &args.vm)?;
    eprint!("{}", table::render(&["step", "result", "time"], &rows));

    if let Some((name, output)) = failed {
        vagrant.destroy();
        eprintln!(
            "error: verify step `{name}` failed:\n{}",
            streaming::tail(&output, 40)
        );
        return Err(Exit(1).into());
    }
    if args.vm.destroy {
        vagrant.destroy();
        return Ok(None);
    }
    Ok(Some(format!(
        "export FLATCAR_CHANNEL={channel} FLATCAR_VERSION={version} VAGRANT_VAGRANTFILE={}",
        vagrantfile.display()
    )))
}

/// The tools verify needs, probed; an error naming the first one that is unusable.
fn probe_tools(sh: &Shell) -> anyhow::Result<()> {
    let needed: Vec<_> = TOOLS
        .iter()
        .filter(|t| t.purposes.contains(&Purpose::Verify))
        .collect();
    let probes = tools::probe_all(sh, &needed);
    if let Some(missing) = probes.iter().find(|p| !p.usable()) {
        bail!(
            "{} is not usable ({:?}); install it: {}",
            missing.tool,
            missing.status,
            missing
                .hint
                .as_deref()
                .unwrap_or("see `cargo xtask deps --for verify`")
        );
    }
    Ok(())
}

/// The verify directory's key pair, Ignition config and Vagrantfile for the box
/// `box_name`; returns the Vagrantfile's path.
fn write_vagrant_dir(
    sh: &Shell,
    work: &Path,
    box_name: &str,
    accelerator: Accelerator,
    vm: &VerifyOptions,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let key = key::generate(sh, work, "flatcar-capi-builder verify")?;
    // libvirt's qemu runs as another user: the config (public data only) must be readable.
    let config = ignition::authorize_key(
        serde_json::json!({"ignition": {"version": "3.3.0"}}),
        &key.public_key,
    )?;
    let ignition_path = work.join("ignition.json");
    write_atomically_with_mode(
        &ignition_path,
        serde_json::to_string_pretty(&config)?.as_bytes(),
        0o644,
    )?;
    set_mode(work, 0o755)?;
    let vagrantfile = work.join("Vagrantfile");
    let spec = VagrantfileSpec {
        box_name,
        private_key: &key.private_key,
        ignition_config: &ignition_path,
        accelerator,
        memory_mib: vm.memory,
        cpus: vm.cpus,
    };
    write_atomically(&vagrantfile, vagrant::render_vagrantfile(&spec).as_bytes())?;
    Ok(vagrantfile)
}

/// A step that failed, with its output.
type FailedStep = (&'static str, String);

/// Adds the box, boots it, runs the node rules and then the cluster steps, stopping
/// at the first failure; returns the table's rows and the failed step with its output.
fn run_steps(
    vagrant: &Vagrant,
    box_name: &str,
    box_file: &Path,
    output_dir: &Path,
    work: &Path,
    vm: &VerifyOptions,
) -> anyhow::Result<(Vec<Vec<String>>, Option<FailedStep>)> {
    let mut rows = Vec::new();
    let mut record_step = |name: &str, result: &str, started: Instant| {
        eprintln!("verify: {name}: {result}");
        rows.push(vec![
            name.to_owned(),
            result.to_owned(),
            format!("{:.1}s", started.elapsed().as_secs_f64()),
        ]);
    };

    let started = Instant::now();
    let box_file_arg = box_file.display().to_string();
    let added = vagrant.run(
        &["box", "add", "--force", "--name", box_name, &box_file_arg],
        Some("vagrant"),
    )?;
    if !added.success {
        bail!(
            "`vagrant box add` failed for {}:\n{}",
            box_file.display(),
            streaming::tail(&added.output, 20)
        );
    }
    record_step("vagrant box add", "pass", started);

    let started = Instant::now();
    let up = vagrant.run(&["up", "--provider", "libvirt"], Some("vagrant"))?;
    if !up.success || streaming::interrupted() {
        vagrant.destroy();
        bail!("`vagrant up` failed:\n{}", streaming::tail(&up.output, 30));
    }
    record_step("vagrant up", "pass", started);

    let started = Instant::now();
    let rules_run = run_rules(vagrant, output_dir, work, vm.goss.as_deref())?;
    let mut failed = None;
    if rules_run.success && !streaming::interrupted() {
        record_step("node rules", &rules_run.result, started);
    } else {
        record_step("node rules", &rules_run.result, started);
        failed = Some(("node rules", rules_run.output));
    }
    for (name, script) in CLUSTER_STEPS {
        if failed.is_some() {
            break;
        }
        let started = Instant::now();
        if vm.no_cluster {
            record_step(name, "not run (--no-cluster)", started);
            continue;
        }
        let finished = vagrant.run(&["ssh", "-c", script], None)?;
        if finished.success && !streaming::interrupted() {
            record_step(name, "pass", started);
        } else {
            record_step(name, "FAIL", started);
            failed = Some((name, finished.output));
        }
    }
    Ok((rows, failed))
}

/// vagrant, run in the directory that holds the verify Vagrantfile.
struct Vagrant {
    program: PathBuf,
    dir: PathBuf,
}

impl Vagrant {
    fn run(&self, args: &[&str], prefix: Option<&str>) -> anyhow::Result<streaming::Finished> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        streaming::run(&self.program, &args, &self.dir, &[], prefix, None)
    }

    fn destroy(&self) {
        match self.run(&["destroy", "--force"], Some("vagrant")) {
            Ok(f) if f.success => {}
            _ => eprintln!(
                "warning: `vagrant destroy --force` failed; remove the VM with `cargo xtask boxes --cleanup`"
            ),
        }
    }
}

/// The release a build.json names, parsed as the command line parses it: anyone who
/// can write an output directory writes build.json, and these values go into the
/// Vagrantfile (Ruby) and the printed shell line.
fn release_of(record: &BuildRecord, output_dir: &Path) -> anyhow::Result<(Channel, Version)> {
    let path = output_dir.join(crate::build::record::FILE_NAME);
    let field = |name: &str, err: String| {
        anyhow::anyhow!(
            "{}: field `{name}`: {err}; this is not a build.json that `cargo xtask build-flatcar` wrote",
            path.display()
        )
    };
    let channel = record
        .recipe
        .channel
        .parse()
        .map_err(|e| field("channel", e))?;
    let version = record
        .recipe
        .version
        .parse()
        .map_err(|e| field("version", e))?;
    Ok((channel, version))
}

/// libvirtd must answer on the system connection vagrant-libvirt uses.
fn check_libvirtd(sh: &Shell) -> anyhow::Result<()> {
    let uri = vagrant::libvirt_uri();
    let answer = cmd!(sh, "virsh -c {uri} version")
        .quiet()
        .ignore_status()
        .output()?;
    if !answer.status.success() {
        bail!(
            "libvirtd does not answer on {uri}: {}\nStart it with `sudo systemctl start libvirtd` \
             (or `sudo libvirtd -d` where systemd is not running).",
            String::from_utf8_lossy(&answer.stderr).trim()
        );
    }
    Ok(())
}

/// The most recently finished build under images/capi/output.
fn newest_output_dir() -> anyhow::Result<PathBuf> {
    let root = workspace::output_dir();
    let entries = std::fs::read_dir(&root).with_context(|| {
        format!(
            "reading {} (build an image first: `cargo xtask build-flatcar`)",
            root.display()
        )
    })?;
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join(crate::build::record::FILE_NAME).is_file())
        .max_by_key(|p| {
            p.join(crate::build::record::FILE_NAME)
                .metadata()
                .and_then(|m| m.modified())
                .ok()
        })
        .with_context(|| {
            format!(
                "no finished build under {}: run `cargo xtask build-flatcar` first",
                root.display()
            )
        })
}

/// The one `.box` file in a build's output directory.
fn find_box(output_dir: &Path) -> anyhow::Result<PathBuf> {
    let entries = std::fs::read_dir(output_dir)
        .with_context(|| format!("reading {}", output_dir.display()))?;
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "box"))
        .with_context(|| format!("no .box file in {}", output_dir.display()))
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// How the node rules went on the box.
struct RulesRun {
    success: bool,
    /// For the step table: `pass (N rules)`, `FAIL (N of M rules)`.
    result: String,
    output: String,
}

/// Runs the node rules that hold on a booted machine with the values the build
/// recorded: the compiled script through one `vagrant ssh`, or, with `goss`, the
/// rules files uploaded with goss. Each rule's line is shown as `verify: [PASS] ...`.
fn run_rules(
    vagrant: &Vagrant,
    output_dir: &Path,
    work: &Path,
    goss: Option<&Path>,
) -> anyhow::Result<RulesRun> {
    let vars_path = output_dir.join(rules::VARS_FILE);
    let text = std::fs::read_to_string(&vars_path).with_context(|| {
        format!(
            "reading {} (the build's values for the node rules; builds before the node rules lack it: rebuild)",
            vars_path.display()
        )
    })?;
    let vars: BTreeMap<String, String> =
        serde_json::from_str(&text).with_context(|| format!("reading {}", vars_path.display()))?;
    let dir = work.join("node-rules");
    let script = rules::write_runner(
        &dir,
        &workspace::capi_dir(),
        rules::Stage::Booted,
        // The boxes verify-vagrant boots are build-flatcar's.
        rules::MadeBy::Build,
        &vars,
        goss,
    )?;
    let finished = match goss {
        None => {
            let text = std::fs::read_to_string(&script)
                .with_context(|| format!("reading {}", script.display()))?;
            vagrant.run(&["ssh", "-c", &rules::remote_command(&text)], None)?
        }
        Some(_) => {
            let dir_arg = dir.display().to_string();
            let uploaded =
                vagrant.run(&["upload", &dir_arg, "/tmp/node-rules"], Some("vagrant"))?;
            if !uploaded.success {
                bail!(
                    "`vagrant upload` of the node rules failed:\n{}",
                    streaming::tail(&uploaded.output, 20)
                );
            }
            let run = "sudo sh /tmp/node-rules/check.sh; status=$?; sudo rm -rf /tmp/node-rules; exit $status";
            vagrant.run(&["ssh", "-c", run], None)?
        }
    };
    let run = rules::report::parse(&finished.output);
    for rule in &run.rules {
        let status = if rule.passed { "PASS" } else { "FAIL" };
        eprintln!(
            "verify: [{status}] {} | expected: {} | found: {}",
            rule.name, rule.expected, rule.found
        );
    }
    if let Some(summary) = &run.summary {
        eprintln!("verify: {summary}");
    }
    let failed = run.rules.iter().filter(|r| !r.passed).count();
    let result = match (finished.success, goss) {
        (true, None) => format!("pass ({} rules)", run.rules.len()),
        (true, Some(_)) => "pass (goss)".to_owned(),
        (false, None) => format!("FAIL ({failed} of {} rules)", run.rules.len()),
        (false, Some(_)) => "FAIL (goss)".to_owned(),
    };
    Ok(RulesRun {
        success: finished.success,
        result,
        output: finished.output,
    })
}
