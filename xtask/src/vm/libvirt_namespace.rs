//! A libvirtd of our own inside a network + mount namespace: its networks, bridges,
//! dnsmasq and firewall rules exist only there, and its state lives on tmpfs, so
//! booting a box with vagrant-libvirt leaves nothing on the host. Needs root.
//! Dropping the value ends every process in the namespace.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Directories libvirt keeps state in; each gets a private tmpfs.
const STATE_DIRS: [&str; 4] = [
    "/run/libvirt",
    "/var/lib/libvirt",
    "/var/log/libvirt",
    "/var/cache/libvirt",
];

pub struct LibvirtNamespace {
    /// `unshare`, whose forked child holds the namespaces open.
    unshare: Child,
    /// The pid of the process inside the namespaces that `nsenter` targets.
    holder: u32,
    netns: String,
    /// Pid files and the private copy of /etc/libvirt.
    state: PathBuf,
}

impl LibvirtNamespace {
    /// Creates the namespaces and starts virtlogd and libvirtd in them. `state` is an
    /// empty directory the namespace may use (pid files, the libvirt config copy).
    pub fn start(state: &Path) -> anyhow::Result<LibvirtNamespace> {
        let unshare = Command::new("unshare")
            .args([
                "--net",
                "--mount",
                "--propagation",
                "private",
                "--fork",
                "--kill-child",
                "sleep",
                "infinity",
            ])
            .stdin(Stdio::null())
            .spawn()
            .context("starting `unshare` (needs root and util-linux)")?;
        let mut namespace = LibvirtNamespace {
            holder: 0,
            netns: String::new(),
            state: state.to_path_buf(),
            unshare,
        };
        namespace.holder = wait_for_child(namespace.unshare.id())?;
        namespace.netns =
            netns_of(namespace.holder).context("reading the new network namespace")?;
        if Some(&namespace.netns) == netns_of(std::process::id()).as_ref() {
            bail!("`unshare --net` did not create a network namespace");
        }
        namespace
            .set_up()
            .context("setting up libvirtd in its namespace")?;
        Ok(namespace)
    }

    fn set_up(&self) -> anyhow::Result<()> {
        self.run("ip", &["link", "set", "lo", "up"])?;
        for dir in STATE_DIRS {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
            self.run("mount", &["-t", "tmpfs", "tmpfs", dir])?;
        }
        // A private /etc/libvirt: qemu runs as root here, so the box image and the
        // Ignition config need no ownership changes.
        let etc = self.state.join("etc-libvirt");
        copy_tree(Path::new("/etc/libvirt"), &etc)?;
        let qemu_conf = etc.join("qemu.conf");
        let mut conf = std::fs::read_to_string(&qemu_conf).unwrap_or_default();
        conf.push_str("\nuser = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\nsecurity_driver = \"none\"\n");
        std::fs::write(&qemu_conf, conf)
            .with_context(|| format!("writing {}", qemu_conf.display()))?;
        self.run(
            "mount",
            &[
                OsStr::new("--bind"),
                etc.as_os_str(),
                OsStr::new("/etc/libvirt"),
            ],
        )?;

        let virtlogd_pid = self.state.join("virtlogd.pid");
        let libvirtd_pid = self.state.join("libvirtd.pid");
        self.run(
            "virtlogd",
            &[OsStr::new("-d"), OsStr::new("-p"), virtlogd_pid.as_os_str()],
        )?;
        self.run(
            "libvirtd",
            &[OsStr::new("-d"), OsStr::new("-p"), libvirtd_pid.as_os_str()],
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self
            .output("virsh", &["-c", "qemu:///system", "version"])?
            .status
            .success()
        {
            if Instant::now() > deadline {
                bail!("libvirtd in the namespace did not answer within 30 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "Started libvirtd in a private network namespace (pid {}).",
            self.holder
        );
        Ok(())
    }

    /// `program args...` run inside the namespaces, as an argument vector for
    /// `Command` or duct: `nsenter --target <pid> --net --mount -- program args...`.
    pub fn wrap<S: AsRef<OsStr>>(
        &self,
        program: impl AsRef<OsStr>,
        args: &[S],
    ) -> (PathBuf, Vec<OsString>) {
        let mut argv: Vec<OsString> = vec![
            "--target".into(),
            self.holder.to_string().into(),
            "--net".into(),
            "--mount".into(),
            "--".into(),
            program.as_ref().to_owned(),
        ];
        argv.extend(args.iter().map(|a| a.as_ref().to_owned()));
        // duct resolves a bare relative path against the working directory: name the real file.
        (
            crate::toolchain::tools::find_program("nsenter")
                .unwrap_or_else(|| PathBuf::from("/usr/bin/nsenter")),
            argv,
        )
    }

    fn output<S: AsRef<OsStr>>(
        &self,
        program: &str,
        args: &[S],
    ) -> anyhow::Result<std::process::Output> {
        let (nsenter, argv) = self.wrap(program, args);
        Command::new(nsenter)
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program} in the namespace"))
    }

    fn run<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> anyhow::Result<()> {
        let out = self.output(program, args)?;
        if !out.status.success() {
            bail!(
                "{program} failed in the namespace: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for LibvirtNamespace {
    fn drop(&mut self) {
        // Domains first, so qemu can stop cleanly, then everything else inside.
        if let Ok(out) = self.output("virsh", &["-c", "qemu:///system", "list", "--name"]) {
            for domain in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.output("virsh", &["-c", "qemu:///system", "destroy", domain]);
            }
        }
        for signal in [libc::SIGTERM, libc::SIGKILL] {
            let members = processes_in(&self.netns);
            if members.is_empty() {
                break;
            }
            for pid in &members {
                // SAFETY: kill(2) on processes inside our own namespace.
                unsafe { libc::kill(*pid as libc::pid_t, signal) };
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && !processes_in(&self.netns).is_empty() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// The network namespace of `pid`, as `net:[inode]`.
fn netns_of(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|s| s.starts_with("net:["))
}

/// Every process whose network namespace is `netns` (never pid 1 nor ourselves).
fn processes_in(netns: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != 1 && pid != std::process::id())
        .filter(|&pid| netns_of(pid).as_deref() == Some(netns))
        .collect()
}

/// The first child of `parent` (unshare's forked holder), waiting briefly for it.
fn wait_for_child(parent: u32) -> anyhow::Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
        {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            bail!("`unshare` did not start its namespace holder");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.with_context(|| format!("reading {}", from.display()))?;
        let target = to.join(
            entry
                .path()
                .strip_prefix(from)
                .expect("walkdir stays below its root"),
        );
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target)
                .with_context(|| format!("creating {}", target.display()))?;
        } else if entry.file_type().is_file() {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        } else if entry.file_type().is_symlink() {
            let link = std::fs::read_link(entry.path())?;
            std::os::unix::fs::symlink(link, &target)
                .with_context(|| format!("linking {}", target.display()))?;
        }
    }
    Ok(())
}
