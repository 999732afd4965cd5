//! The Flatcar-shaped rehearsal guest, for real: `cargo xtask rehearse-guest` builds
//! (or reuses) it, boots it twice and checks it; then this test boots the image on its
//! own and runs the repository's setup role on it (the raw PyPy bootstrap from a
//! loopback server, fact gathering) and the other Ansible modules a build uses, with
//! the PyPy the guest build made. Slow (a VM under TCG; the first run builds the guest
//! as root with debootstrap): run with `--ignored`, as CI does.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The checks `rehearse-guest` must report, all passed.
const CHECKS: &[&str] = &[
    "os-release says Flatcar",
    "/usr is read-only, even for root",
    "no Python on PATH",
    "the Ignition key logs in as core",
    "core has passwordless sudo and no password",
    "update-engine.service is masked and not running",
    "locksmithd.service is masked and not running",
    "the first-boot flag is removed",
    "no unit failed during boot",
    "containerd runs, socket at /run/containerd/containerd.sock",
    "a second boot does not apply Ignition again",
    "no unit failed during boot",
    "update-engine.service stays masked after a reboot",
    "locksmithd.service stays masked after a reboot",
];

#[test]
#[ignore = "boots a VM; run with --ignored or in CI"]
fn rehearsal_guest_behaves_like_flatcar_and_runs_ansible_with_its_pypy() {
    let report = rehearse_guest();
    let work = tempfile::tempdir().unwrap();
    ansible_runs_on_the_guest(&report, work.path());
}

/// Runs `cargo xtask rehearse-guest --format json` and checks its report.
fn rehearse_guest() -> Value {
    let output = support::xtask()
        .args(["rehearse-guest", "--format", "json"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "rehearse-guest failed:\n{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["passed"], true, "{report:#}");
    let seen: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["passed"], true, "{c}");
            c["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(seen, CHECKS);
    for boot in report["boots"].as_array().unwrap() {
        let seconds = boot["boot_to_ssh_seconds"].as_f64().unwrap();
        assert!(seconds < 60.0, "boot-to-SSH took {seconds} s: {boot}");
    }
    let image_bytes = report["image_bytes"].as_u64().unwrap();
    assert!(
        image_bytes < 1 << 30,
        "the guest image is {image_bytes} bytes"
    );
    eprintln!(
        "rehearse-guest: {} MB image, boot-to-SSH {} s",
        image_bytes / 1_000_000,
        report["boots"][0]["boot_to_ssh_seconds"]
    );
    report
}

/// A QEMU process, killed when dropped.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

fn sha256(path: &Path) -> String {
    run(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The SSH command line for the guest.
fn ssh(port: u16, key: &Path) -> Command {
    let mut command = Command::new("ssh");
    command
        .args(["-i", key.to_str().unwrap(), "-p", &port.to_string()])
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5"])
        .arg("core@127.0.0.1");
    command
}

/// Boots the reported image on an overlay, on a network that reaches the host's
/// loopback as 10.0.2.2 (as a Packer build's does), and runs Ansible against it.
fn ansible_runs_on_the_guest(report: &Value, work: &Path) {
    let image = PathBuf::from(report["image"].as_str().unwrap());
    let python_archive = PathBuf::from(report["python_archive"].as_str().unwrap());

    // What the guest downloads: the PyPy archive, and a payload for get_url/unarchive.
    let served = work.join("served");
    std::fs::create_dir_all(served.join("payload")).unwrap();
    let archive_name = python_archive
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    std::fs::copy(&python_archive, served.join(&archive_name)).unwrap();
    std::fs::write(
        served.join("payload/hello.txt"),
        "hello from the loopback server\n",
    )
    .unwrap();
    run(Command::new("tar")
        .args(["-czf", "payload.tar.gz", "payload"])
        .current_dir(&served));
    let payload_sha = sha256(&served.join("payload.tar.gz"));
    std::fs::write(
        served.join("payload.tar.gz.sha256"),
        format!("{payload_sha}  payload.tar.gz\n"),
    )
    .unwrap();
    let server = support::FileServer::start(&served);
    let server_port = server.url().rsplit(':').next().unwrap().to_owned();
    let guest_url = format!("http://10.0.2.2:{server_port}");

    let key = work.join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key));
    let public_key = std::fs::read_to_string(work.join("id_ed25519.pub")).unwrap();
    let ignition = work.join("config.ign");
    std::fs::write(
        &ignition,
        serde_json::json!({
            "ignition": {"version": "3.3.0"},
            "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": [public_key.trim()]}]},
            "systemd": {"units": [
                {"name": "update-engine.service", "mask": true},
                {"name": "locksmithd.service", "mask": true}
            ]}
        })
        .to_string(),
    )
    .unwrap();
    let overlay = work.join("overlay.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&image)
        .arg(&overlay));

    let ssh_port = free_port();
    let started = Instant::now();
    let _qemu = Qemu(
        Command::new("qemu-system-x86_64")
            .args(["-machine", "pc,accel=tcg", "-smp", "2", "-m", "1024"])
            .args(["-nodefaults", "-display", "none"])
            .arg("-serial")
            .arg(format!("file:{}", work.join("console.log").display()))
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=qcow2", overlay.display()))
            .arg("-netdev")
            .arg(format!("user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"))
            .args(["-device", "virtio-net-pci,netdev=net0"])
            .arg("-fw_cfg")
            .arg(format!(
                "name=opt/org.flatcar-linux/config,file={}",
                ignition.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    while !ssh(ssh_port, &key)
        .arg("true")
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "no SSH within 180 s; console:\n{}",
            std::fs::read_to_string(work.join("console.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "guest answered SSH after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Seen without Ansible first: what the setup role relies on.
    let os = run(ssh(ssh_port, &key).arg(". /etc/os-release && echo $ID $VERSION"));
    assert_eq!(os.trim(), "flatcar 9999.0.0");
    assert!(
        !ssh(ssh_port, &key)
            .arg("command -v python3")
            .status()
            .unwrap()
            .success(),
        "the guest has a python3"
    );

    let playbook = work.join("playbook.yml");
    std::fs::write(&playbook, PLAYBOOK).unwrap();
    std::fs::write(
        work.join("greeting.j2"),
        "{{ greeting }} on {{ ansible_facts['distribution'] }}\n",
    )
    .unwrap();
    let (python_version, pypy_version) = (
        report["python_version"].as_str().unwrap(),
        report["pypy_version"].as_str().unwrap(),
    );
    let roles = support::project_root().join("images/capi/ansible/roles");
    let output = run(Command::new("ansible-playbook")
        .arg("-i")
        .arg("127.0.0.1,")
        .arg(&playbook)
        .args(["-e", &format!("ansible_port={ssh_port}")])
        .args(["-e", "ansible_user=core"])
        .args(["-e", &format!("ansible_ssh_private_key_file={}", key.display())])
        .args(["-e", "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes'"])
        .args(["-e", &format!("pypy_http_source={guest_url}")])
        .args(["-e", &format!("pypy_python_version={python_version} pypy_version={pypy_version}")])
        .args(["-e", &format!("pypy_sha256={}", sha256(&python_archive))])
        .args(["-e", &format!("mirror={guest_url}")])
        // The release the guest is: the setup role's first step checks it.
        .args(["-e", &format!("flatcar_version={}", xtask::testbed::FLATCAR_VERSION)])
        .args(["-e", "flatcar_channel=stable"])
        .args(["-e", &format!("template_dir={}", work.display())])
        .env("ANSIBLE_ROLES_PATH", roles)
        .env("ANSIBLE_HOST_KEY_CHECKING", "False")
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "False"));
    eprintln!("{output}");
    assert!(output.contains("failed=0"), "{output}");

    // What the modules did, seen over SSH.
    let seen = run(ssh(ssh_port, &key).arg(
        "cat /etc/rehearsal/copied.txt /etc/rehearsal/greeting.txt /opt/rehearsal/payload/hello.txt; \
         readlink -f /opt/bin/python; /opt/bin/python -c 'import platform; print(platform.python_implementation())'",
    ));
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        [
            "copied by ansible.builtin.copy",
            "hello on Flatcar",
            "hello from the loopback server",
            &format!("/opt/pypy/bin/pypy{python_version}"),
            "PyPy",
        ],
        "{seen}"
    );
    let fetched: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert!(fetched.contains(&format!("/{archive_name}")), "{fetched:?}");
    assert!(
        fetched.contains(&"/payload.tar.gz".to_owned()),
        "{fetched:?}"
    );
}

/// The setup role (raw PyPy bootstrap, facts), then one task per module a build uses.
const PLAYBOOK: &str = r#"---
- name: Run the setup role and the modules a build uses on the rehearsal guest
  hosts: all
  become: true
  gather_facts: false
  roles:
    - setup
  tasks:
    # The roles gather no facts (one module run less under emulation); a build
    # that adds its own role may, and must then see Flatcar and PyPy.
    - name: Gather the facts with the bootstrapped PyPy
      ansible.builtin.setup:
    - name: Check that the facts name Flatcar and PyPy
      ansible.builtin.assert:
        that:
          - ansible_facts['distribution'] == 'Flatcar'
          - ansible_facts['os_family'] == 'Flatcar'
          - ansible_facts['distribution_version'] == '9999.0.0'
          - ansible_facts['python']['type'] == 'PyPy'
          - ansible_facts['default_ipv4']['interface'] == 'eth0'
        fail_msg: "{{ ansible_facts['distribution'] }} / {{ ansible_facts['os_family'] }} / {{ ansible_facts['python'] }}"
    - name: Make a directory
      ansible.builtin.file:
        path: /etc/rehearsal
        state: directory
        mode: "0755"
    - name: Copy content
      ansible.builtin.copy:
        content: "copied by ansible.builtin.copy\n"
        dest: /etc/rehearsal/copied.txt
        mode: "0644"
    - name: Render a template
      ansible.builtin.template:
        src: "{{ template_dir }}/greeting.j2"
        dest: /etc/rehearsal/greeting.txt
        mode: "0644"
      vars:
        greeting: hello
    - name: Make the download directory under /opt
      ansible.builtin.file:
        path: /opt/rehearsal
        state: directory
        mode: "0755"
    - name: Download a file checked against a checksum file
      ansible.builtin.get_url:
        url: "{{ mirror }}/payload.tar.gz"
        checksum: "sha256:{{ mirror }}/payload.tar.gz.sha256"
        dest: /opt/rehearsal/payload.tar.gz
        mode: "0644"
    - name: Unpack it
      ansible.builtin.unarchive:
        src: /opt/rehearsal/payload.tar.gz
        dest: /opt/rehearsal
        remote_src: true
    - name: Restart a unit with systemd
      ansible.builtin.systemd:
        name: containerd.service
        state: restarted
        daemon_reload: true
    - name: Read the masks the Ignition config set
      ansible.builtin.stat:
        path: /etc/systemd/system/update-engine.service
      register: mask
    - name: Check the mask is a link to /dev/null
      ansible.builtin.assert:
        that:
          - mask.stat.islnk
          - mask.stat.lnk_target == '/dev/null'
"#;
