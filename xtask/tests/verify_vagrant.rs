//! `cargo xtask verify-vagrant` up to its first vagrant command, with a stand-in
//! `vagrant` on PATH and libvirt's built-in test driver answering for libvirtd (no VM,
//! no network): what it accepts from an output directory, what it writes into the
//! Vagrantfile (evaluated by the real Ruby), and how Ctrl-C ends it.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::xtask;

/// A build.json as `build-flatcar` writes it, with `channel` and `version` as given.
fn build_json(channel: &str, version: &str) -> String {
    serde_json::json!({
        "channel": channel,
        "version": version,
        "arch": "amd64",
        "provider": "qemu",
        "kubernetes_semver": "v1.36.2",
        "containerd_version": "2.1.4",
        "cni_version": "1.8.0",
        "accelerator": "tcg",
        "base_image": {"file": "flatcar_production_qemu_image.img", "sha512": "ab"},
        "outputs": [],
        "build_ssh_public_key": "ssh-ed25519 AAAAC3Nza build",
        "tools": {},
        "started": "2026-11-24 06:49:05 UTC",
        "finished": "2026-11-24 07:09:05 UTC"
    })
    .to_string()
}

/// An output directory `name` under `dir` holding `record` and a (dummy) box.
fn output_dir(dir: &Path, name: &str, record: &str) -> PathBuf {
    let output = dir.join(name);
    std::fs::create_dir_all(&output).unwrap();
    std::fs::write(output.join("build.json"), record).unwrap();
    std::fs::write(output.join("flatcar.box"), "not a real box").unwrap();
    output
}

/// A `vagrant` that reports its version and its libvirt plugin and, for `box add`, fails at once or (with
/// `hang`) writes its pid to `$FAKE_VAGRANT_READY`, ignores SIGINT and waits 30 s,
/// like a vagrant slow to stop.
fn fake_vagrant(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("vagrant");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         case \"$1\" in\n\
         --version) echo 'Vagrant 2.3.4' ;;\n\
         plugin) echo 'vagrant-libvirt (0.11.2, system)' ;;\n\
         box) [ \"$FAKE_VAGRANT_MODE\" = hang ] || exit 1\n\
         \x20    trap '' INT; echo $$ > \"$FAKE_VAGRANT_READY.tmp\"; mv \"$FAKE_VAGRANT_READY.tmp\" \"$FAKE_VAGRANT_READY\"\n\
         \x20    exec sleep 30 ;;\n\
         *) exit 0 ;;\n\
         esac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn verify(dir: &Path, output: &Path, mode: &str) -> Command {
    let path = std::env::join_paths(
        std::iter::once(fake_vagrant(dir))
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let mut command = xtask();
    command
        .arg("verify-vagrant")
        .arg("--output-dir")
        .arg(output)
        .env("PATH", path)
        .env("LIBVIRT_DEFAULT_URI", "test:///default")
        .env("VAGRANT_HOME", dir.join("vagrant.d"))
        .env("FAKE_VAGRANT_MODE", mode)
        .env("FAKE_VAGRANT_READY", dir.join("ready"));
    command
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn finding_12_a_crafted_build_json_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let injected = "stable#{system('touch /tmp/finding-12')}";
    for (field, record) in [
        ("channel", build_json(injected, "4081.2.0")),
        ("version", build_json("stable", "4081.2.0#{`id`}")),
    ] {
        let output = output_dir(dir.path(), field, &record);
        let out = verify(dir.path(), &output, "fail").output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("build.json") && err.contains(&format!("field `{field}`")),
            "{err}"
        );
        assert!(
            !output.join("vagrant").exists(),
            "nothing may be written for a refused build.json"
        );
    }
}

/// Ruby that stands in for Vagrant: it prints every value the Vagrantfile sets.
const RECORDER: &str = r#"
class Recorder
  def method_missing(name, *args)
    args.each { |a| puts(a.is_a?(Hash) ? a.values.join : a.to_s) }
    yield Recorder.new if block_given?
    self
  end

  def respond_to_missing?(*)
    true
  end
end
Vagrant = Recorder.new
load ARGV[0]
"#;

#[test]
fn finding_12_paths_are_written_as_inert_ruby_strings() {
    let dir = tempfile::tempdir().unwrap();
    // An output directory whose name is Ruby code in a double-quoted string.
    let name = r#"out#{system('touch pwned')}'\"#;
    let output = output_dir(dir.path(), name, &build_json("stable", "4081.2.0"));
    let out = verify(dir.path(), &output, "fail").output().unwrap();
    assert!(
        stderr(&out).contains("`vagrant box add` failed"),
        "{}",
        stderr(&out)
    );
    let vagrantfile = output.join("vagrant/Vagrantfile");
    let evaluated = Command::new("ruby")
        .args(["-e", RECORDER])
        .arg(&vagrantfile)
        .current_dir(dir.path())
        .output()
        .expect("running ruby (vagrant's own interpreter)");
    let printed = String::from_utf8_lossy(&evaluated.stdout);
    assert!(
        evaluated.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&evaluated.stderr)
    );
    assert!(
        !dir.path().join("pwned").exists(),
        "the Vagrantfile ran code from a path"
    );
    let work = output.join("vagrant");
    let fw_cfg = format!(
        "name=opt/org.flatcar-linux/config,file={}",
        work.join("ignition.json").display()
    );
    assert!(printed.lines().any(|l| l == fw_cfg), "{printed}");
    assert!(
        printed
            .lines()
            .any(|l| Path::new(l).parent() == Some(work.as_path())),
        "the key path does not read back unchanged: {printed}"
    );
    assert!(printed.lines().any(|l| l == "flatcar-stable-4081.2.0"));
}

fn send(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest.trim_start());
    !state.is_empty() && !state.starts_with('Z')
}

#[test]
fn finding_11_a_second_ctrl_c_ends_a_streamed_command_and_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let output = output_dir(dir.path(), "out", &build_json("stable", "4081.2.0"));
    let mut child = verify(dir.path(), &output, "hang")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = dir.path().join("ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let vagrant_pid = std::fs::read_to_string(&ready).expect("vagrant box add never started");
    let vagrant_pid = vagrant_pid.trim();

    // The first Ctrl-C is passed on (and ignored by this vagrant); the second ends it.
    send(&child, "-INT");
    std::thread::sleep(Duration::from_millis(500));
    send(&child, "-INT");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let vagrant_survived = alive(vagrant_pid);
    if status.is_none() || vagrant_survived {
        // Leave nothing running, then fail.
        let _ = child.kill();
        let _ = Command::new("kill").args(["-KILL", vagrant_pid]).status();
    }
    let out = child.wait_with_output().unwrap();
    let status = status.expect("two Ctrl-Cs did not end verify-vagrant within 10 s");
    assert_eq!(status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("interrupted again"),
        "{}",
        stderr(&out)
    );
    assert!(!vagrant_survived, "the streamed vagrant survived");
}
