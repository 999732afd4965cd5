//! `cargo xtask verify-vagrant`: boots a build's libvirt box with vagrant and checks
//! it is a working Kubernetes node: the files the roles install are in place, then
//! `kubeadm init`, `kubectl cluster-info` and a Ready node. Ends with the exports a
//! user needs to go on with `vagrant ssh`.

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
use crate::{build::ignition, build::key, error::Exit, table, vm::streaming, workspace};

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
    /// Check the node's files only; report kubeadm init and the cluster checks as
    /// not run (for images whose Kubernetes binaries cannot start a cluster here).
    #[arg(long)]
    pub no_cluster: bool,
    /// Destroy the VM when done (it is always destroyed when a step fails).
    #[arg(long)]
    pub destroy: bool,
}

/// One check run inside the VM through `vagrant ssh -c`.
struct Step {
    name: &'static str,
    script: String,
    cluster: bool,
}

/// The checks, in order. `build_key` is the build's public key, which sysprep must
/// have removed.
fn steps(build_key: &str) -> Vec<Step> {
    let key_body = build_key.split_whitespace().nth(1).unwrap_or(build_key);
    let file_checks = [
        ("log in over SSH as core", "true".to_owned()),
        (
            "node binaries are in /opt/bin",
            "for b in kubeadm kubelet kubectl crictl; do test -x /opt/bin/$b || { echo \"missing /opt/bin/$b\"; exit 1; }; done".to_owned(),
        ),
        ("CNI plugins are in /opt/cni/bin", "ls /opt/cni/bin | grep -qx bridge".to_owned()),
        (
            "crictl talks to containerd's socket",
            "sock=$(sed -n 's/^runtime-endpoint: *unix:\\/\\///p' /etc/crictl.yaml); \
             echo \"crictl: $sock\"; test -n \"$sock\" && sudo grep -rqF \"$sock\" /etc/containerd/ /etc/systemd/system/ && sudo test -S \"$sock\""
                .to_owned(),
        ),
        ("kubelet and containerd are enabled", "systemctl is-enabled kubelet containerd".to_owned()),
        (
            // The build masks them only while it runs; each machine's own Ignition decides.
            "the build's update masks are not baked in",
            "test \"$(systemctl is-enabled update-engine.service 2>&1)\" != masked".to_owned(),
        ),
        (
            "sysprep removed the build key",
            format!("! sudo grep -rqF '{key_body}' /home/core/.ssh /root/.ssh 2>/dev/null"),
        ),
        ("a fresh machine-id was made on first boot", "test -s /etc/machine-id".to_owned()),
        ("/etc/kubeadm.yml is kept", "test -s /etc/kubeadm.yml".to_owned()),
    ];
    let cluster = [
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
    file_checks
        .into_iter()
        .map(|(name, script)| Step {
            name,
            script,
            cluster: false,
        })
        .chain(cluster.into_iter().map(|(name, script)| Step {
            name,
            script: script.to_owned(),
            cluster: true,
        }))
        .collect()
}

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
    check_libvirtd(sh)?;

    let box_name = vagrant::box_name(channel.name(), &version.to_string());
    let work = output_dir.join("vagrant");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let key = key::generate(sh, &work, "flatcar-capi-builder verify")?;
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
    set_mode(&work, 0o755)?;
    let vagrantfile = work.join("Vagrantfile");
    let spec = VagrantfileSpec {
        box_name: &box_name,
        private_key: &key.private_key,
        ignition_config: &ignition_path,
        accelerator,
        memory_mib: args.vm.memory,
        cpus: args.vm.cpus,
    };
    write_atomically(&vagrantfile, vagrant::render_vagrantfile(&spec).as_bytes())?;

    let vagrant = Vagrant {
        program: tools::find_program("vagrant").context("vagrant is not on PATH")?,
        dir: work.clone(),
    };

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
        &["box", "add", "--force", "--name", &box_name, &box_file_arg],
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

    let mut failed = None;
    for step in steps(&record.build_ssh_public_key) {
        let started = Instant::now();
        if step.cluster && args.vm.no_cluster {
            record_step(step.name, "not run (--no-cluster)", started);
            continue;
        }
        let finished = vagrant.run(&["ssh", "-c", &step.script], None)?;
        if finished.success && !streaming::interrupted() {
            record_step(step.name, "pass", started);
        } else {
            record_step(step.name, "FAIL", started);
            failed = Some((step.name, finished.output));
            break;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_key_check_looks_for_the_key_body() {
        let steps = steps("ssh-ed25519 AAAAC3Nza build@host");
        let check = steps
            .iter()
            .find(|s| s.name == "sysprep removed the build key")
            .unwrap();
        assert!(check.script.contains("'AAAAC3Nza'"));
        assert!(steps.iter().filter(|s| s.cluster).count() >= 4);
        assert_eq!(steps.first().unwrap().name, "log in over SSH as core");
    }
}
