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

use crate::bake::record::BakeRecord;
use crate::build::record::BuildRecord;
use crate::flatcar::release::{Channel, Version};
use crate::fsx::{write_atomically, write_atomically_with_mode};
use crate::toolchain::tools::{self, Purpose, TOOLS};
use crate::vm::accelerator::{self, Accelerator};
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

/// What needs a cluster, in order; each runs inside the VM through `vagrant ssh -c`,
/// `{bin}` replaced by where the image keeps kubeadm and kubectl. Everything about
/// the node itself is a node rule.
const CLUSTER_STEPS: &[(&str, &str)] = &[
    ("stop locksmithd", "sudo systemctl stop locksmithd.service || true"),
    ("restart containerd", "sudo systemctl restart containerd"),
    (
        "kubeadm init",
        "sudo {bin}/kubeadm init --config /etc/kubeadm.yml --ignore-preflight-errors=NumCPU,Mem",
    ),
    (
        "copy the admin kubeconfig for core",
        "mkdir -p $HOME/.kube && sudo cp /etc/kubernetes/admin.conf $HOME/.kube/config && sudo chown $(id -u):$(id -g) $HOME/.kube/config",
    ),
    ("kubectl cluster-info", "{bin}/kubectl cluster-info"),
    (
        "the node becomes Ready",
        // A single test node needs some pod network to become Ready: a bridge
        // conflist from the image's own CNI plugins, for this VM only.
        "sudo mkdir -p /etc/cni/net.d && printf '%s' '{\"cniVersion\":\"1.0.0\",\"name\":\"verify\",\"plugins\":[{\"type\":\"bridge\",\"bridge\":\"cni0\",\"isGateway\":true,\"ipMasq\":true,\"ipam\":{\"type\":\"host-local\",\"ranges\":[[{\"subnet\":\"10.244.0.0/16\"}]]}},{\"type\":\"portmap\",\"capabilities\":{\"portMappings\":true}}]}' | sudo tee /etc/cni/net.d/10-verify.conflist >/dev/null && {bin}/kubectl wait --for=condition=Ready node --all --timeout=300s",
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
    let made = made(&output_dir)?;
    let (channel, version) = (made.channel, made.version);
    let box_file = find_box(&output_dir)?;
    let accelerator = match (args.accelerator, made.accelerator) {
        (Some(requested), _) => requested,
        (None, Some(recorded)) => recorded,
        // A bake ran no VM, so none was recorded: probe as build-flatcar does.
        (None, None) => accelerator::pick(None)?,
    };

    probe_tools(sh)?;
    check_libvirtd(sh)?;

    let box_name = vagrant::box_name(channel.name(), &version.to_string());
    let work = output_dir.join("vagrant");
    let vagrantfile = write_vagrant_dir(sh, &work, &box_name, accelerator, &args.vm)?;

    let vagrant = Vagrant {
        program: tools::find_program("vagrant").context("vagrant is not on PATH")?,
        dir: work.clone(),
    };

    let (rows, failed) = run_steps(&vagrant, &made, &box_file, &output_dir, &work, &args.vm)?;
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
    made: &Made,
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

    let box_name = &vagrant::box_name(made.channel.name(), &made.version.to_string());
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
    let rules_run = run_rules(vagrant, made.made_by, output_dir, work, vm.goss.as_deref())?;
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
        let script = script.replace("{bin}", &made.bin_dir);
        let finished = vagrant.run(&["ssh", "-c", &script], None)?;
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

/// What verify takes from an output directory's build.json, written by
/// build-flatcar or by bake.
#[derive(Debug, PartialEq, Eq)]
struct Made {
    made_by: rules::MadeBy,
    channel: Channel,
    version: Version,
    /// The accelerator the build's VM ran with (a bake runs none).
    accelerator: Option<Accelerator>,
    /// Where kubeadm and kubectl are on the node.
    bin_dir: String,
}

/// build-flatcar installs the Kubernetes binaries here (the Ansible path's bin_dir).
const BUILD_BIN_DIR: &str = "/opt/bin";

/// Reads build.json, telling a bake's record (`made_by: bake`) from a build's.
/// The release is parsed as the command line parses it: anyone who can write an
/// output directory writes build.json, and these values go into the Vagrantfile
/// (Ruby) and the printed shell line.
fn made(output_dir: &Path) -> anyhow::Result<Made> {
    let path = output_dir.join(crate::build::record::FILE_NAME);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let by_bake = serde_json::from_str::<serde_json::Value>(&text)
        .is_ok_and(|v| v["made_by"] == crate::bake::record::MADE_BY);
    let (made_by, channel, version, accelerator, bin_dir) = if by_bake {
        let record = BakeRecord::read(output_dir)?;
        let bin_dir = record.kubernetes_bin_dir;
        (
            rules::MadeBy::Bake,
            record.channel,
            record.version,
            None,
            bin_dir,
        )
    } else {
        let record = BuildRecord::read(output_dir)?;
        let (channel, version) = (record.recipe.channel, record.recipe.version);
        let accelerator = Some(record.accelerator);
        (
            rules::MadeBy::Build,
            channel,
            version,
            accelerator,
            BUILD_BIN_DIR.to_owned(),
        )
    };
    let field = |name: &str, err: String| {
        anyhow::anyhow!(
            "{}: field `{name}`: {err}; this is not a build.json that `cargo xtask build-flatcar` or `bake` wrote",
            path.display()
        )
    };
    Ok(Made {
        made_by,
        channel: channel.parse().map_err(|e| field("channel", e))?,
        version: version.parse().map_err(|e| field("version", e))?,
        accelerator,
        bin_dir,
    })
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
    made_by: rules::MadeBy,
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
        made_by,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::record::Artifact;

    fn artifact(file: &str) -> Artifact {
        Artifact {
            file: file.into(),
            sha512: "ab".repeat(64),
        }
    }

    /// A bake's output directory: its record says bake, so the rules are the
    /// bake's and the cluster steps call the extension's /usr/bin binaries.
    #[test]
    fn a_bakes_record_selects_the_bake_rules_and_its_bin_dir() {
        let dir = tempfile::tempdir().unwrap();
        let record = BakeRecord {
            made_by: crate::bake::record::MADE_BY.into(),
            channel: "stable".into(),
            version: "4081.2.0".into(),
            arch: "amd64".into(),
            platform: "qemu".into(),
            kubernetes_version: "v1.36.2".into(),
            base_image: artifact("flatcar_production_qemu_image.img"),
            base_image_url: "http://127.0.0.1:1/x".into(),
            base_image_signed_by: None,
            os_release: "ID=flatcar\n".into(),
            sysext: artifact("kubernetes-v1.36.2-x86-64.raw"),
            sysext_inputs: Vec::new(),
            raw_disk: artifact("x.raw"),
            kubernetes_bin_dir: "/usr/bin".into(),
            outputs: vec![artifact("x.box")],
            started: "2026-01-01 00:00:00 UTC".into(),
            finished: "2026-01-01 00:00:01 UTC".into(),
        };
        std::fs::write(
            dir.path().join(crate::build::record::FILE_NAME),
            record.to_json(),
        )
        .unwrap();
        let made = made(dir.path()).unwrap();
        assert_eq!(made.made_by, rules::MadeBy::Bake);
        assert_eq!(made.bin_dir, "/usr/bin");
        assert_eq!(made.accelerator, None);
        assert_eq!(made.channel, Channel::Stable);
        assert_eq!(made.version.to_string(), "4081.2.0");
        let steps: Vec<String> = CLUSTER_STEPS
            .iter()
            .map(|(_, s)| s.replace("{bin}", &made.bin_dir))
            .collect();
        assert!(
            steps[2].starts_with("sudo /usr/bin/kubeadm init "),
            "{}",
            steps[2]
        );
        assert!(steps
            .iter()
            .all(|s| !s.contains("/opt/bin") && !s.contains("{bin}")));

        // A record that is neither a bake's nor a build's is refused, naming the file.
        std::fs::write(
            dir.path().join(crate::build::record::FILE_NAME),
            r#"{"made_by": "bake", "channel": "stable"}"#,
        )
        .unwrap();
        let err = format!("{:#}", super::made(dir.path()).unwrap_err());
        assert!(err.contains("build.json"), "{err}");
    }
}
