//! images/capi with the real tools, beyond what `cargo xtask validate` and `lint`
//! check (their own tests run them on the repository): `packer validate` without a
//! network, every build input required, the build name, the Ignition config with a
//! build key, ansible-lint actually run, the compatibility shims, and the playbooks
//! run for real (twice, for idempotence) against a Flatcar-shaped root in a chroot,
//! with every download served from a loopback mirror.

mod support;

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::SystemTime;

use serde_json::Value;
use xtask::build::ignition;
use xtask::packer::{command, targets};
use xtask::toolchain::tools;

use support::{both, check, copy_of_repository, project_root, report, xtask, FileServer};

fn capi_dir() -> PathBuf {
    xtask::workspace::capi_dir()
}

/// Runs `command`, naming the package to install when its program is missing.
fn run(command: &mut Command) -> Output {
    let program = command.get_program().to_string_lossy().into_owned();
    match command.output() {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let hint = tools::TOOLS
                .iter()
                .find(|t| t.program == program)
                .map(|t| t.install_hint(tools::detect_package_manager()))
                .unwrap_or_else(|| "install it and put it on PATH".to_owned());
            panic!("`{program}` is not installed: {hint}")
        }
        Err(e) => panic!("running {program}: {e}"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Panics with the command's output unless it succeeded.
fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
}

fn qemu_flatcar() -> &'static targets::BuildTarget {
    targets::target("qemu-flatcar").expect("the qemu-flatcar target")
}

/// The values of the variables the build supplies, for a throwaway build: a fresh
/// SSH key, a dummy disk image, the stored Ignition config.
struct BuildInputs {
    _dir: tempfile::TempDir,
    args: Vec<String>,
}

fn build_inputs() -> BuildInputs {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    assert_success(
        "ssh-keygen",
        &run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "images-test", "-f"])
            .arg(&key)),
    );
    let image = dir.path().join("flatcar_production_qemu_image.img");
    fs::write(&image, b"not a disk image").unwrap();
    let digest = xtask::flatcar::cache::sha512_file(&image).unwrap();
    let ignition = capi_dir().join("packer/files/flatcar/ignition.json");
    // The file provisioner checks that the node rules directory exists.
    let node_rules = dir.path().join("node-rules");
    fs::create_dir(&node_rules).unwrap();
    let args = vec![
        format!("-var=node_rules_dir={}", node_rules.display()),
        format!("-var=flatcar_image_path={}", image.display()),
        format!("-var=flatcar_image_checksum=sha512:{digest}"),
        format!("-var=ignition_config_path={}", ignition.display()),
        format!("-var=ssh_private_key_file={}", key.display()),
        "-var=accelerator=tcg".to_owned(),
    ];
    BuildInputs { _dir: dir, args }
}

/// `packer <subcommand>` of qemu-flatcar with its var files, then `extra`, then the
/// template: the target table's command line.
fn packer(subcommand: &str, extra: &[String]) -> Command {
    let mut args = command::args(subcommand, &[], qemu_flatcar(), &[]);
    let template = args.pop().expect("the template comes last");
    args.extend(extra.iter().map(Into::into));
    args.push(template);
    let mut packer = Command::new("packer");
    packer
        .args(args)
        .envs(command::ENV.iter().copied())
        .current_dir(capi_dir());
    packer
}

/// Evaluates `expressions` (`{{user `x`}}` ...) with `packer console` against the
/// qemu-flatcar stack plus `extra`, the way a build would resolve them.
fn packer_resolve(extra: &[String], expressions: &[&str]) -> Vec<String> {
    let mut child = packer("console", extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting packer console");
    // packer console answers the last line only: one line, tab-separated.
    let line = format!("{}\n", expressions.join("\t"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(line.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_success("packer console", &output);
    let values: Vec<String> = text(&output.stdout)
        .trim_end_matches('\n')
        .split('\t')
        .map(str::to_owned)
        .collect();
    assert_eq!(values.len(), expressions.len(), "{values:?}");
    values
}

#[test]
fn validate_passes_ami_flatcar_offline() {
    // In a network namespace of its own: validating must not need AWS.
    let repo = copy_of_repository();
    let output = run(Command::new("unshare")
        .args(["--net", "--map-root-user"])
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "validate",
            "--target",
            "ami-flatcar",
            "--no-install",
            "--no-cache",
        ])
        .args(["--format", "json", "--root"])
        .arg(repo.path()));
    assert!(output.status.success(), "{}", both(&output));
    let packer = check(&report(&output), "packer validate", "ami-flatcar").clone();
    assert_eq!(packer["result"], "pass", "{packer:#}");
}

#[test]
fn packer_requires_every_build_input() {
    let inputs = build_inputs();
    for (i, input) in inputs.args.iter().enumerate() {
        let name = input.trim_start_matches("-var=").split('=').next().unwrap();
        let mut without = inputs.args.clone();
        without.remove(i);
        let output = run(&mut packer("validate", &without));
        let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
        assert!(
            !output.status.success() && said.contains(name),
            "packer validate passed or did not name `{name}` when it was missing:\n{said}"
        );
    }
}

#[test]
fn the_build_name_says_channel_version_and_kubernetes() {
    let inputs = build_inputs();
    let mut extra = inputs.args.clone();
    extra.push("-var=flatcar_channel=beta".to_owned());
    extra.push("-var=flatcar_version=4459.1.0".to_owned());
    let values = packer_resolve(
        &extra,
        &[
            "{{user `build_name`}}",
            "{{user `kubernetes_semver`}}",
            "{{user `output_directory`}}",
        ],
    );
    let kubernetes = &values[1];
    assert!(kubernetes.starts_with("v1.36."), "{kubernetes}");
    assert_eq!(
        values[0],
        format!("flatcar-beta-4459.1.0-kube-{kubernetes}")
    );
    assert_eq!(values[2], format!("output/{}", values[0]));
}

#[test]
fn the_ignition_config_masks_updates_and_validates_with_a_build_key() {
    // As stored, `cargo xtask validate` checks it; here, what the build makes of it.
    let stored = capi_dir().join("packer/files/flatcar/ignition.json");
    let config: Value = serde_json::from_str(&fs::read_to_string(&stored).unwrap()).unwrap();
    let config = ignition::authorize_key(
        config,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM6kK1w2zJmJ5hVbq2h3y7Q0b8G0dXzYc9Ff8o9y9a1b build",
    )
    .unwrap();
    let units = config["systemd"]["units"].as_array().unwrap();
    for unit in ["update-engine.service", "locksmithd.service"] {
        assert!(
            units.iter().any(|u| u["name"] == unit && u["mask"] == true),
            "{unit} is not masked"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let with_key = dir.path().join("ignition.json");
    fs::write(&with_key, serde_json::to_string(&config).unwrap()).unwrap();
    assert_success(
        "ignition-validate (with a build key)",
        &run(Command::new("ignition-validate").arg(&with_key)),
    );
}

#[test]
fn ansible_lint_runs_and_is_clean() {
    // `lint` reports an ansible-lint it cannot find as not run; here it must run.
    let repo = copy_of_repository();
    let output = run(xtask()
        .args(["lint", "--format", "json", "--root"])
        .arg(repo.path()));
    let lint = check(&report(&output), "ansible-lint", "images/capi/ansible").clone();
    assert_eq!(lint["result"], "pass", "{lint:#}\n{}", both(&output));
}

#[test]
fn compatibility_shims_hand_over_to_cargo_xtask() {
    // A `cargo` that only records how it was called: what is tested is the shims'
    // hand-over (arguments kept, exec'd), not cargo.
    let bin = tempfile::tempdir().unwrap();
    let record = bin.path().join("args");
    fs::write(
        bin.path().join("cargo"),
        format!(
            "#!/bin/sh\nprintf '%s|' \"$@\" > {}\nexit 7\n",
            record.display()
        ),
    )
    .unwrap();
    fs::set_permissions(bin.path().join("cargo"), fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    for (script, command) in [
        ("image-build-flatcar.sh", "xtask|build-flatcar|"),
        ("boxes-flatcar.sh", "xtask|boxes|"),
    ] {
        let script_path = capi_dir().join("hack").join(script);
        let mode = fs::metadata(&script_path).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{script} is not executable");
        let output = run(Command::new(&script_path)
            .args(["stable", "two words"])
            .env("PATH", &path));
        assert_eq!(
            output.status.code(),
            Some(7),
            "{script} did not pass on cargo's status"
        );
        let args = fs::read_to_string(&record).unwrap();
        assert_eq!(args, format!("{command}stable|two words|"), "{script}");
    }
}

// --- The playbooks, run for real against a Flatcar-shaped root -------------------

/// A stand-in executable: records its arguments under /var/lib/standin (which the
/// sysprep role leaves alone) and prints its name.
fn write_stand_in(path: &Path, name: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(
        path,
        format!(
            "#!/bin/sh\nmkdir -p /var/lib/standin\necho \"$*\" >> /var/lib/standin/{name}.args\necho '{name} stand-in'\n"
        ),
    )
    .unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn sha256(path: &Path) -> String {
    let sh = xshell::Shell::new().unwrap();
    xtask::testbed::release_tree::file_digest(&sh, "sha256", path).unwrap()
}

/// `tar <flags> <archive> -C <dir> <members...>`
fn tar(flags: &str, archive: &Path, dir: &Path, members: &[&str]) {
    fs::create_dir_all(archive.parent().unwrap()).unwrap();
    let output = run(Command::new("tar")
        .arg(flags)
        .arg(archive)
        .arg("-C")
        .arg(dir)
        .args(members));
    assert_success("tar", &output);
}

/// The root tree: what a Flatcar machine has after its first boot with the build's
/// Ignition config, minus /usr (mounted at run time) and the virtual file systems.
fn build_flatcar_root(root: &Path) {
    for dir in [
        "usr",
        "run",
        "tmp",
        "dev",
        "proc",
        "src",
        "opt",
        "root",
        "var/lib",
        "var/cache",
        "boot/flatcar",
    ] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    // Flatcar's merged /usr layout.
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        symlink(target, root.join(link)).unwrap();
    }
    write(
        &root.join("etc/os-release"),
        "NAME=\"Flatcar Container Linux by Kinvolk\"\nID=flatcar\nID_LIKE=coreos\nVERSION=4459.2.0\n\
         VERSION_ID=4459.2.0\nPRETTY_NAME=\"Flatcar Container Linux by Kinvolk 4459.2.0\"\n",
    );
    write(
        &root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\ncore:x:500:500:Flatcar Admin:/home/core:/bin/bash\n",
    );
    write(&root.join("etc/group"), "root:x:0:\ncore:x:500:\n");
    write(&root.join("etc/hosts"), "127.0.0.1 localhost\n");
    // What the build's first boot left behind.
    write(
        &root.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    );
    write(&root.join("etc/.ignition-result.json"), "{}\n");
    write(&root.join("etc/ssh/ssh_host_ed25519_key"), "private\n");
    write(&root.join("etc/ssh/ssh_host_ed25519_key.pub"), "public\n");
    fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
    for unit in ["update-engine.service", "locksmithd.service"] {
        symlink("/dev/null", root.join("etc/systemd/system").join(unit)).unwrap();
    }
    write(
        &root.join("home/core/.ssh/authorized_keys.d/ignition"),
        "ssh-ed25519 AAAA build\n",
    );
    write(
        &root.join("home/core/.ssh/authorized_keys"),
        "ssh-ed25519 AAAA build\n",
    );
    write(&root.join("home/core/.bash_history"), "sudo -i\n");
    write(
        &root.join("var/log/journal/0123/system.journal"),
        "journal\n",
    );
}

/// What Flatcar ships in /usr and the host does not: containerd, ctr, the runc shim
/// and containerd's unit. It becomes the top layer of the root's read-only /usr.
fn build_flatcar_usr_layer(layer: &Path) {
    // What the image says it is: the first provisioning step compares these with
    // the release and channel the build asked for.
    write(
        &layer.join("lib/os-release"),
        "NAME=\"Flatcar Container Linux by Kinvolk\"\nID=flatcar\nVERSION=4459.2.0\nVERSION_ID=4459.2.0\n",
    );
    write(&layer.join("share/flatcar/update.conf"), "GROUP=stable\n");
    for name in ["containerd", "containerd-shim-runc-v2", "ctr"] {
        write_stand_in(&layer.join("bin").join(name), &format!("flatcar-{name}"));
    }
    write(
        &layer.join("lib/systemd/system/containerd.service"),
        "[Unit]\nDescription=containerd container runtime\n\n[Service]\n\
         Environment=CONTAINERD_CONFIG=/usr/share/containerd/config.toml\n\
         ExecStart=/usr/bin/containerd --config ${CONTAINERD_CONFIG}\n\n\
         [Install]\nWantedBy=multi-user.target\n",
    );
}

/// Versions the mirror serves, as the stack resolves them.
struct Versions {
    kubernetes_semver: String,
    cni_version: String,
    crictl_version: String,
    containerd_version: String,
    goarch: String,
}

/// The test's PyPy: an archive shaped like PyPy's whose interpreter hands over to the
/// host's Python (the only one the root has, through /usr).
const PYPY_VERSION: &str = "7.3.17";
const PYPY_PYTHON_VERSION: &str = "3.10";

/// Fills `mirror` with the file tree of every download, checksum files included, in
/// the formats the real servers use. Returns the SHA-256 of the PyPy archive.
fn build_mirror(mirror: &Path, work: &Path, v: &Versions) -> String {
    let arch = &v.goarch;
    let release = mirror.join(format!("release/{}/bin/linux/{arch}", v.kubernetes_semver));
    for name in ["kubeadm", "kubelet", "kubectl"] {
        let binary = release.join(name);
        write_stand_in(&binary, name);
        // dl.k8s.io serves the bare hex digest.
        write(&release.join(format!("{name}.sha256")), &sha256(&binary));
    }

    let cni = work.join("cni");
    for name in ["bridge", "host-local", "loopback", "portmap"] {
        write_stand_in(&cni.join(name), name);
    }
    let cni_name = format!("cni-plugins-linux-{arch}-{}.tgz", v.cni_version);
    let cni_archive = mirror.join("cni").join(&cni_name);
    tar("-czf", &cni_archive, &cni, &["."]);
    // The CNI release serves `<hex>  <file name>`.
    write(
        &mirror.join(format!("cni/{cni_name}.sha256")),
        &format!("{}  {cni_name}\n", sha256(&cni_archive)),
    );

    let crictl = work.join("crictl");
    write_stand_in(&crictl.join("crictl"), "crictl");
    let crictl_archive = mirror.join(format!(
        "crictl/crictl-{}-linux-{arch}.tar.gz",
        v.crictl_version
    ));
    tar("-czf", &crictl_archive, &crictl, &["crictl"]);
    write(
        &PathBuf::from(format!("{}.sha256", crictl_archive.display())),
        &sha256(&crictl_archive),
    );

    let containerd = work.join("containerd");
    for name in [
        "containerd",
        "containerd-shim-runc-v2",
        "containerd-stress",
        "ctr",
    ] {
        write_stand_in(
            &containerd.join("bin").join(name),
            &format!("release-{name}"),
        );
    }
    let containerd_name = format!("containerd-{}-linux-{arch}.tar.gz", v.containerd_version);
    let containerd_archive = mirror.join("containerd").join(&containerd_name);
    tar("-czf", &containerd_archive, &containerd, &["bin"]);
    write(
        &mirror.join(format!("containerd/{containerd_name}.sha256sum")),
        &format!("{}  {containerd_name}\n", sha256(&containerd_archive)),
    );

    let pypy_dir = format!("pypy{PYPY_PYTHON_VERSION}-v{PYPY_VERSION}-linux64");
    let pypy = work.join("pypy");
    write(
        &pypy.join(&pypy_dir).join("bin/pypy3"),
        "#!/bin/sh\nexec /usr/bin/python3 \"$@\"\n",
    );
    fs::set_permissions(
        pypy.join(&pypy_dir).join("bin/pypy3"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let pypy_archive = mirror.join(format!("pypy/{pypy_dir}.tar.bz2"));
    tar("-cjf", &pypy_archive, &pypy, &[&pypy_dir]);
    sha256(&pypy_archive)
}

/// A Flatcar-shaped root with its /usr layer, and a loopback mirror serving every
/// download the roles make.
struct FlatcarRoot {
    dir: tempfile::TempDir,
    inputs: BuildInputs,
    server: FileServer,
    versions: Versions,
    /// SHA-256 of the mirror's PyPy archive.
    pypy_sha256: String,
}

/// A socket path other than the default: every consumer must follow the variable.
const TEST_SOCKET: &str = "/run/test-containerd/containerd.sock";

impl FlatcarRoot {
    fn new() -> FlatcarRoot {
        let dir = tempfile::tempdir().unwrap();
        build_flatcar_root(&dir.path().join("root"));
        build_flatcar_usr_layer(&dir.path().join("usr-layer"));
        let inputs = build_inputs();
        let defaults = packer_resolve(
            &inputs.args,
            &[
                "{{user `kubernetes_semver`}}",
                "{{user `cni_version`}}",
                "{{user `crictl_version`}}",
                "{{user `containerd_version`}}",
                "{{user `goarch`}}",
            ],
        );
        let versions = Versions {
            kubernetes_semver: defaults[0].clone(),
            cni_version: defaults[1].clone(),
            crictl_version: defaults[2].clone(),
            containerd_version: defaults[3].clone(),
            goarch: defaults[4].clone(),
        };
        let mirror = dir.path().join("mirror");
        let pypy_sha256 = build_mirror(&mirror, &dir.path().join("work"), &versions);
        let server = FileServer::start(&mirror);
        FlatcarRoot {
            dir,
            inputs,
            server,
            versions,
            pypy_sha256,
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn mirror(&self) -> PathBuf {
        self.dir.path().join("mirror")
    }

    /// The three `--extra-vars` strings a build passes: the URLs and the socket go in
    /// as Packer variables and come out of ansible-args.json, exactly as in a build.
    /// The test's own values go in the slot left for the user (ansible_extra_vars);
    /// ansible_become=false because the test is root in its namespace already.
    fn extra_vars(&self, pypy_sha256: &str) -> Vec<String> {
        let url = self.server.url();
        let v = &self.versions;
        let arch = &v.goarch;
        let mut packer_vars = self.inputs.args.clone();
        packer_vars.extend([
            format!("-var=kubernetes_http_source={url}/release"),
            format!("-var=cni_url={url}/cni/cni-plugins-linux-{arch}-{}.tgz", v.cni_version),
            format!("-var=crictl_url={url}/crictl/crictl-{}-linux-{arch}.tar.gz", v.crictl_version),
            format!(
                "-var=containerd_url={url}/containerd/containerd-{}-linux-{arch}.tar.gz",
                v.containerd_version
            ),
            format!("-var=pypy_http_source={url}/pypy"),
            "-var=flatcar_version=4459.2.0".to_owned(),
            format!("-var=containerd_cri_socket={TEST_SOCKET}"),
            format!(
                "-var=ansible_extra_vars=pypy_version={PYPY_VERSION} pypy_python_version={PYPY_PYTHON_VERSION} \
                 pypy_sha256={pypy_sha256} ansible_become=false"
            ),
        ]);
        packer_resolve(
            &packer_vars,
            &[
                "{{user `ansible_common_vars`}}",
                "{{user `ansible_os_vars`}}",
                "{{user `ansible_extra_vars`}}",
            ],
        )
    }

    /// Runs `playbook` chrooted into the root inside a mount and PID namespace of its
    /// own (see fixtures/images/in-flatcar-root.sh).
    fn run(&self, playbook: &str, extra_vars: &[String]) -> Output {
        let script = project_root().join("xtask/tests/fixtures/images/in-flatcar-root.sh");
        let mut command = Command::new("unshare");
        // --map-root-user: the same namespace works for root and for an unprivileged user.
        command
            .args(["--mount", "--pid", "--fork", "--map-root-user", "sh"])
            .arg(&script)
            .arg(self.root())
            .arg(self.dir.path().join("usr-layer"))
            .arg(capi_dir().join("ansible"))
            .args([
                "env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root",
                "LANG=C.UTF-8",
                "ANSIBLE_NOCOLOR=1",
                "ANSIBLE_RETRY_FILES_ENABLED=0",
                "ANSIBLE_LOCAL_TEMP=/tmp/ansible-local",
                "ANSIBLE_REMOTE_TEMP=/tmp/ansible-remote",
                "ansible-playbook",
                "-i",
                "localhost,",
                "--connection",
                "local",
            ])
            .arg(format!("/src/{playbook}"));
        for vars in extra_vars {
            command.arg("--extra-vars").arg(vars);
        }
        run(&mut command)
    }

    /// Runs `playbook`, which must succeed; returns its output.
    fn provision(&self, playbook: &str, extra_vars: &[String]) -> String {
        let output = self.run(playbook, extra_vars);
        assert_success(
            &format!("ansible-playbook {playbook} in the Flatcar-shaped root"),
            &output,
        );
        text(&output.stdout)
    }
}

/// The `changed=` count of the play recap.
fn changed_count(play_output: &str) -> u32 {
    play_output
        .lines()
        .skip_while(|l| !l.starts_with("PLAY RECAP"))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("changed="))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no PLAY RECAP in:\n{play_output}"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Existence and modification time of host paths the roles would write on a real node.
fn host_state() -> Vec<(&'static str, Option<SystemTime>)> {
    [
        "/etc/kubeadm.yml",
        "/etc/crictl.yaml",
        "/etc/containerd/config.toml",
        "/etc/systemd/system/kubelet.service",
        "/opt/bin/kubeadm",
        "/opt/bin/python",
        "/etc/machine-id",
    ]
    .into_iter()
    .map(|p| (p, fs::symlink_metadata(p).and_then(|m| m.modified()).ok()))
    .collect()
}

#[test]
fn playbooks_provision_a_flatcar_shaped_root() {
    let host_before = host_state();
    let fixture = FlatcarRoot::new();
    let root = fixture.root();
    let versions = &fixture.versions;
    let socket = TEST_SOCKET;
    let pypy_sha256 = fixture.pypy_sha256.clone();
    let extra_vars = fixture.extra_vars(&pypy_sha256);

    let first = fixture.provision("node.yml", &extra_vars);
    assert!(
        changed_count(&first) > 0,
        "the first run changed nothing:\n{first}"
    );
    // Every download came from the mirror, each with its checksum file.
    let requests = fixture.server.requests();
    assert!(requests.iter().all(|r| r.status == 200), "{requests:#?}");
    for checksum_file in [
        "kubeadm.sha256",
        "kubelet.sha256",
        "kubectl.sha256",
        ".tgz.sha256",
        ".tar.gz.sha256",
        ".tar.gz.sha256sum",
    ] {
        assert!(
            !fixture.server.requests_for(checksum_file).is_empty(),
            "nothing fetched *{checksum_file}: {requests:#?}"
        );
    }
    let second = fixture.provision("node.yml", &extra_vars);
    assert_eq!(
        changed_count(&second),
        0,
        "node.yml is not idempotent:\n{second}"
    );

    // PyPy bootstrapped under /opt, /opt/bin/python pointing at it.
    assert_eq!(
        fs::read_link(root.join("opt/bin/python")).unwrap(),
        Path::new("/opt/pypy/bin/pypy3")
    );
    assert!(read(&root.join("opt/pypy/.installed-from")).contains(&pypy_sha256));
    assert!(
        read(&root.join("etc/systemd/system.conf.d/10-opt-bin-path.conf"))
            .contains("PATH=/opt/bin:")
    );
    assert!(read(&root.join("etc/profile.d/opt-bin-path.sh")).contains("/opt/bin"));

    // Binaries in /opt/bin and /opt/cni/bin; of containerd only what Flatcar lacks.
    for name in [
        "kubeadm",
        "kubelet",
        "kubectl",
        "crictl",
        "containerd-stress",
    ] {
        let path = root.join("opt/bin").join(name);
        let mode = fs::metadata(&path)
            .unwrap_or_else(|_| panic!("/opt/bin/{name} is missing"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "/opt/bin/{name}");
    }
    for name in ["containerd", "ctr", "containerd-shim-runc-v2"] {
        assert!(
            !root.join("opt/bin").join(name).exists(),
            "/opt/bin/{name} was unpacked although Flatcar ships it"
        );
    }
    for name in ["bridge", "host-local", "loopback", "portmap"] {
        assert!(
            root.join("opt/cni/bin").join(name).is_file(),
            "/opt/cni/bin/{name}"
        );
    }

    // Every consumer of the socket uses the variable's value.
    let crictl = read(&root.join("etc/crictl.yaml"));
    assert!(
        crictl.contains(&format!("runtime-endpoint: unix://{socket}")),
        "{crictl}"
    );
    let config = read(&root.join("etc/containerd/config.toml"));
    assert!(
        config.contains(&format!("address = \"{socket}\"")),
        "{config}"
    );
    let dropin = read(&root.join("etc/systemd/system/containerd.service.d/10-capi-config.conf"));
    assert!(
        dropin.contains("ExecStart=/usr/bin/containerd --config /etc/containerd/config.toml"),
        "{dropin}"
    );
    let ctr = read(&root.join("var/lib/standin/flatcar-ctr.args"));
    assert!(
        ctr.contains(&format!("--address {socket} version")),
        "{ctr}"
    );
    let pull = read(&root.join("var/lib/standin/kubeadm.args"));
    assert!(
        pull.contains(&format!(
            "config images pull --cri-socket unix://{socket} --kubernetes-version {}",
            versions.kubernetes_semver
        )),
        "{pull}"
    );

    // The kubelet unit, its kubeadm drop-in, enabled units, boot-time kernel settings.
    let kubelet = read(&root.join("etc/systemd/system/kubelet.service"));
    assert!(kubelet.contains("ExecStart=/opt/bin/kubelet"), "{kubelet}");
    let kubeadm_dropin = read(&root.join("etc/systemd/system/kubelet.service.d/10-kubeadm.conf"));
    assert!(kubeadm_dropin.contains("ExecStart=/opt/bin/kubelet $KUBELET_KUBECONFIG_ARGS"));
    for unit in ["kubelet.service", "containerd.service"] {
        let wants = root
            .join("etc/systemd/system/multi-user.target.wants")
            .join(unit);
        assert!(
            fs::symlink_metadata(&wants).is_ok(),
            "{unit} is not enabled"
        );
    }
    assert!(read(&root.join("etc/modules-load.d/kubernetes.conf")).contains("br_netfilter"));
    assert!(read(&root.join("etc/sysctl.d/90-kubernetes.conf")).contains("net.ipv4.ip_forward = 1"));

    let sysprep = fixture.provision("sysprep.yml", &extra_vars);
    assert!(
        changed_count(&sysprep) > 0,
        "sysprep changed nothing:\n{sysprep}"
    );
    let again = fixture.provision("sysprep.yml", &extra_vars);
    assert_eq!(
        changed_count(&again),
        0,
        "sysprep.yml is not idempotent:\n{again}"
    );

    // Kept: /etc/kubeadm.yml, with the socket and the Kubernetes version.
    let kubeadm = read(&root.join("etc/kubeadm.yml"));
    assert!(
        kubeadm.contains(&format!("criSocket: unix://{socket}")),
        "{kubeadm}"
    );
    assert!(
        kubeadm.contains(&format!(
            "kubernetesVersion: {}",
            versions.kubernetes_semver
        )),
        "{kubeadm}"
    );
    assert!(root.join("opt/bin/kubeadm").is_file());
    // Gone: the build machine's identity, keys, logs, history, downloads, masks.
    for gone in [
        "etc/machine-id",
        "etc/.ignition-result.json",
        "etc/ssh/ssh_host_ed25519_key",
        "etc/ssh/ssh_host_ed25519_key.pub",
        "home/core/.ssh/authorized_keys",
        "home/core/.ssh/authorized_keys.d",
        "home/core/.bash_history",
        "var/log/journal/0123/system.journal",
        "var/cache/capi-image-downloads",
        "etc/systemd/system/update-engine.service",
        "etc/systemd/system/locksmithd.service",
    ] {
        assert!(
            fs::symlink_metadata(root.join(gone)).is_err(),
            "/{gone} is still in the image"
        );
    }
    // Re-armed: the next boot is a first boot, so Ignition runs again.
    assert!(root.join("boot/flatcar/first_boot").is_file());

    assert_eq!(host_state(), host_before, "the playbooks changed the host");
}

#[test]
fn downloads_that_do_not_match_their_checksums_stop_the_build() {
    let fixture = FlatcarRoot::new();
    let root = fixture.root();

    // PyPy: the raw bootstrap checks the archive against pypy_sha256.
    let output = fixture.run("node.yml", &fixture.extra_vars(&"0".repeat(64)));
    assert!(
        !output.status.success(),
        "a PyPy archive with another checksum was accepted:\n{}",
        text(&output.stdout)
    );
    assert!(
        fs::symlink_metadata(root.join("opt/bin/python")).is_err(),
        "an unverified PyPy was installed"
    );

    // kubeadm: the download script checks it against the checksum file next to it.
    let v = &fixture.versions;
    let kubeadm = fixture.mirror().join(format!(
        "release/{}/bin/linux/{}/kubeadm",
        v.kubernetes_semver, v.goarch
    ));
    write(&kubeadm, "#!/bin/sh\necho tampered\n");
    let output = fixture.run("node.yml", &fixture.extra_vars(&fixture.pypy_sha256));
    let stdout = text(&output.stdout);
    assert!(
        !output.status.success(),
        "a tampered kubeadm was accepted:\n{stdout}"
    );
    assert!(stdout.contains("did not match"), "{stdout}");
    assert!(
        !root.join("opt/bin/kubeadm").exists(),
        "an unverified kubeadm was installed"
    );
}

/// A mirror that serves 4459.2.0's signed image as another release or channel
/// passes every signature check: the image's own os-release and update.conf
/// stop the first provisioning step, before Python or anything else is installed.
#[test]
fn finding_2_an_image_of_another_release_or_channel_stops_the_first_provisioning_step() {
    let fixture = FlatcarRoot::new();
    for (asked, named) in [
        ("flatcar_version=4459.2.1", "Flatcar stable 4459.2.1"),
        ("flatcar_channel=beta", "Flatcar beta 4459.2.0"),
    ] {
        let mut extra_vars = fixture.extra_vars(&fixture.pypy_sha256);
        extra_vars.push(asked.to_owned());
        let output = fixture.run("node.yml", &extra_vars);
        let stdout = text(&output.stdout);
        assert!(
            !output.status.success(),
            "an image of another release was provisioned:\n{stdout}"
        );
        assert!(
            stdout.contains("The booted image is Flatcar stable 4459.2.0")
                && stdout.contains(&format!("the build asked for {named}")),
            "{stdout}"
        );
        assert!(
            !stdout.contains("TASK [setup : Bootstrap PyPy"),
            "provisioning went on:\n{stdout}"
        );
        assert!(fs::symlink_metadata(fixture.root().join("opt/bin/python")).is_err());
    }
}
