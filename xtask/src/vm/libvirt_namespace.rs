//! A libvirtd of our own inside a network + mount + PID namespace: its networks,
//! bridges, dnsmasq and firewall rules exist only there, and its state lives on tmpfs,
//! so booting a box with vagrant-libvirt leaves nothing on the host. Needs root.
//! Dropping the value ends every process in the namespace; so does the xtask's death.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The namespaces' first process, the init of their PID namespace: it reaps the
/// orphans libvirtd leaves (its daemonized qemu capability probes), which libvirtd
/// otherwise waits for until a timeout, minutes in all. Perl is essential on Debian.
const HOLDER: [&str; 3] = ["perl", "-e", "while (1) { sleep 1 if wait == -1 }"];

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
    /// The pid (as the xtask sees it) of the namespaces' first process, the init of
    /// their PID namespace, that `nsenter` targets.
    holder: u32,
    netns: String,
    /// A private tmpfs inside the mount namespace: pid files and the libvirt config copy.
    state: PathBuf,
}

impl LibvirtNamespace {
    /// Creates the namespaces and starts virtlogd and libvirtd in them. `state` is an
    /// empty directory; inside the namespace a private tmpfs covers it (pid files, the
    /// libvirt config copy), so the host never sees what is written there.
    ///
    /// Every process in the namespace dies with the calling thread, even on SIGKILL:
    /// `unshare` gets SIGKILL when it does, `--kill-child` passes that on to the
    /// holder, and the holder is the init of a PID namespace, so the kernel kills
    /// every process in it.
    pub fn start(state: &Path) -> anyhow::Result<LibvirtNamespace> {
        let mut unshare = spawn_unshare()?;
        let holder = wait_for_holder(unshare.id()).and_then(|holder| {
            let netns = netns_of(holder).context("reading the new network namespace")?;
            ensure_foreign(&netns).context("`unshare --net` did not create a network namespace")?;
            Ok((holder, netns))
        });
        let (holder, netns) = match holder {
            Ok(found) => found,
            Err(err) => {
                let _ = unshare.kill();
                let _ = unshare.wait();
                return Err(err);
            }
        };
        let namespace = LibvirtNamespace {
            unshare,
            holder,
            netns,
            state: state.to_path_buf(),
        };
        namespace
            .set_up()
            .context("setting up libvirtd in its namespace")?;
        Ok(namespace)
    }

    fn set_up(&self) -> anyhow::Result<()> {
        self.run("ip", &["link", "set", "lo", "up"])?;
        let state = self
            .state
            .to_str()
            .with_context(|| format!("{} is not valid UTF-8", self.state.display()))?;
        for dir in STATE_DIRS.into_iter().chain([state]) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
            self.run("mount", &["-t", "tmpfs", "-o", "mode=0700", "tmpfs", dir])?;
        }
        // A private /etc/libvirt: qemu runs as root here, so the box image and the
        // Ignition config need no ownership changes.
        let etc = self.state.join("etc-libvirt");
        self.run(
            "cp",
            &[
                OsStr::new("-a"),
                OsStr::new("/etc/libvirt"),
                etc.as_os_str(),
            ],
        )?;
        // The xtask itself is outside the mount namespace; it reaches the tmpfs
        // through the holder's view of the file system.
        let qemu_conf = self.inside(&etc.join("qemu.conf"));
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

    /// `path` as the processes inside the mount namespace see it.
    fn inside(&self, path: &Path) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.holder))
            .join(path.strip_prefix("/").unwrap_or(path))
    }

    /// `program args...` run inside the namespaces, as an argument vector for
    /// `Command` or duct: `nsenter --target <pid> --net --mount --pid -- program args...`.
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
            "--pid".into(),
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

impl LibvirtNamespace {
    /// Stops everything in the namespace: domains first, so qemu can stop cleanly,
    /// then every process. Refuses, doing nothing, unless the namespace is provably
    /// not the xtask's own (which would be the host's).
    fn tear_down(&mut self) -> anyhow::Result<()> {
        ensure_foreign(&self.netns).context("not tearing down the libvirt namespace")?;
        // A pid can be reused: enter the holder only while it is still in the namespace.
        if netns_of(self.holder).as_deref() == Some(self.netns.as_str()) {
            if let Ok(out) = self.output("virsh", &["-c", "qemu:///system", "list", "--name"]) {
                for domain in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = self.output("virsh", &["-c", "qemu:///system", "destroy", domain]);
                }
            }
        }
        // The others may clean up; unshare ignores SIGTERM, and so does the holder as
        // the namespace's init.
        let (holder, unshare) = (self.holder, self.unshare.id());
        signal_and_wait(&self.netns, libc::SIGTERM, |pid| {
            pid != holder && pid != unshare
        });
        // Killing unshare kills the holder (--kill-child), and the kernel then kills
        // whatever is left in the PID namespace; anything else in the network
        // namespace goes last.
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        signal_and_wait(&self.netns, libc::SIGKILL, |_| true);
        Ok(())
    }
}

impl Drop for LibvirtNamespace {
    fn drop(&mut self) {
        if let Err(err) = self.tear_down() {
            eprintln!("warning: {err:#}");
            // Our own child, whatever namespace it is in.
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
    }
}

/// `unshare` making the namespaces, set to be killed when the calling thread ends.
fn spawn_unshare() -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    let mut command = Command::new("unshare");
    command
        .args([
            "--net",
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--mount-proc",
            "--fork",
            "--kill-child",
        ])
        .args(HOLDER)
        .stdin(Stdio::null());
    // SAFETY: prctl and getppid are async-signal-safe; this runs in the child before exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The xtask may have died before the prctl took effect.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other(
                    "the xtask ended while starting unshare",
                ));
            }
            Ok(())
        });
    }
    command
        .spawn()
        .context("starting `unshare` (needs root and util-linux)")
}

/// Fails unless `netns` is readably different from the xtask's own network namespace.
fn ensure_foreign(netns: &str) -> anyhow::Result<()> {
    match netns_of(std::process::id()) {
        Some(own) if own != netns => Ok(()),
        Some(_) => bail!("{netns} is the xtask's own network namespace (the host's)"),
        None => bail!("cannot read the xtask's own network namespace to tell it from {netns}"),
    }
}

/// Sends `signal` to every process in `netns` that `wanted` selects, then waits up
/// to 5 s for them to end.
fn signal_and_wait(netns: &str, signal: libc::c_int, wanted: impl Fn(u32) -> bool) {
    let members = || -> Vec<u32> {
        processes_in(netns)
            .into_iter()
            .filter(|&pid| wanted(pid))
            .collect()
    };
    for pid in members() {
        // SAFETY: kill(2) on a process inside a namespace we made (never our own).
        unsafe { libc::kill(pid as libc::pid_t, signal) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !members().is_empty() {
        std::thread::sleep(Duration::from_millis(100));
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

/// unshare's forked child, once it runs the holder (after mounting /proc for the PID
/// namespace), waiting briefly for it.
fn wait_for_holder(unshare: u32) -> anyhow::Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .unwrap_or_default();
        let holder = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = holder {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == HOLDER[0] {
                return Ok(pid);
            }
        }
        if Instant::now() > deadline {
            bail!("`unshare` did not start its namespace holder");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_1_teardown_refuses_the_host_namespace() {
        // A namespace value that names the xtask's own network namespace, as one made
        // by an `unshare --net` that did nothing would.
        let own = netns_of(std::process::id()).unwrap();
        let mut bystander = Command::new("sleep").arg("60").spawn().unwrap();
        let holder = Command::new("sleep").arg("60").spawn().unwrap();
        let mut namespace = LibvirtNamespace {
            holder: holder.id(),
            unshare: holder,
            netns: own.clone(),
            state: PathBuf::from("/nonexistent"),
        };
        let refused = namespace.tear_down().unwrap_err();
        assert!(
            format!("{refused:#}").contains("own network namespace"),
            "{refused:#}"
        );
        drop(namespace);
        let survived = bystander.try_wait().unwrap().is_none();
        let _ = bystander.kill();
        let _ = bystander.wait();
        assert!(
            survived,
            "the teardown signalled a process of the host namespace"
        );
    }
}
