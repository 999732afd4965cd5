//! Booting a Flatcar (or Flatcar-shaped) disk image the way build-flatcar boots
//! Flatcar: QEMU with the Ignition config in fw_cfg (`opt/org.flatcar-linux/config`)
//! or, for an image published for another platform, on the drive that platform's
//! first boot reads (a `config-2` drive for OpenStack and KubeVirt, a `cidata` drive
//! for Proxmox VE, ISO 9660 made without root by genisoimage), user-mode networking with the guest's SSH forwarded to a free 127.0.0.1 port, and
//! the time from starting QEMU to the first successful SSH login (boot-to-SSH).
//! QEMU is stopped on every way out: shutdown, error, drop, and the xtask's death.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::flatcar::platform::ConfigChannel;
use crate::vm::accelerator::Accelerator;
use crate::vm::streaming;

/// The fw_cfg entry Flatcar reads its first-boot Ignition config from.
pub const IGNITION_FW_CFG_NAME: &str = "opt/org.flatcar-linux/config";

/// How to boot.
#[derive(Clone, Debug)]
pub struct BootOptions {
    /// The disk QEMU boots and writes to. Boot an overlay ([`create_overlay`]) to
    /// keep a cached image untouched.
    pub disk: PathBuf,
    /// The Ignition config handed to the first boot, if any.
    pub ignition: Option<PathBuf>,
    /// How it is handed over: the channel of the platform the disk was published
    /// for (QEMU's fw_cfg unless set).
    pub channel: ConfigChannel,
    /// The SSH key that logs in as `user`.
    pub private_key: PathBuf,
    pub user: String,
    pub accelerator: Accelerator,
    pub cpus: u32,
    pub memory_mib: u32,
    /// Where the serial console (kernel and boot messages) and QEMU's own errors go:
    /// `console.log` and `qemu.log` in this directory.
    pub log_dir: PathBuf,
    /// How long to wait for SSH before giving up.
    pub ssh_timeout: Duration,
}

impl BootOptions {
    /// build-flatcar's VM: TCG, 2 vCPUs, 1 GiB, user `core`, SSH within 5 minutes.
    pub fn like_build(disk: &Path, private_key: &Path, log_dir: &Path) -> BootOptions {
        BootOptions {
            disk: disk.to_owned(),
            ignition: None,
            channel: ConfigChannel::FwCfg,
            private_key: private_key.to_owned(),
            user: "core".to_owned(),
            accelerator: Accelerator::Tcg,
            cpus: 2,
            memory_mib: 1024,
            log_dir: log_dir.to_owned(),
            ssh_timeout: Duration::from_secs(300),
        }
    }
}

/// How the Ignition config reaches the guest: fw_cfg, or a drive image holding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigDelivery {
    None,
    FwCfg(PathBuf),
    Drive(PathBuf),
}

/// Prepares what hands `options.ignition` to the first boot: the drive image (in
/// the log directory) for the drive channels.
pub fn deliver_config(sh: &Shell, options: &BootOptions) -> anyhow::Result<ConfigDelivery> {
    let Some(config) = &options.ignition else {
        return Ok(ConfigDelivery::None);
    };
    if options.channel == ConfigChannel::FwCfg {
        return Ok(ConfigDelivery::FwCfg(config.clone()));
    }
    let drive = options.log_dir.join("config-drive.iso");
    write_config_drive(sh, options.channel, config, &drive)?;
    Ok(ConfigDelivery::Drive(drive))
}

/// The volume label and the file a platform's first boot reads from its drive.
pub fn config_drive_layout(channel: ConfigChannel) -> anyhow::Result<(&'static str, &'static str)> {
    match channel {
        ConfigChannel::ConfigDrive => Ok(("config-2", "openstack/latest/user_data")),
        ConfigChannel::CloudInitDrive => Ok(("cidata", "user-data")),
        other => bail!("the test bed cannot hand an Ignition config over through {other:?}"),
    }
}

/// Writes an ISO 9660 image labelled for `channel` holding `config` where that
/// channel's reader looks (a `cidata` drive also gets the `meta-data` cloud-init
/// expects beside it).
pub fn write_config_drive(
    sh: &Shell,
    channel: ConfigChannel,
    config: &Path,
    drive: &Path,
) -> anyhow::Result<()> {
    let (label, path) = config_drive_layout(channel)?;
    let staging = tempfile::tempdir().context("creating a temporary directory")?;
    let target = staging.path().join(path);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::copy(config, &target)
        .with_context(|| format!("copying {} to {}", config.display(), target.display()))?;
    if channel == ConfigChannel::CloudInitDrive {
        std::fs::write(staging.path().join("meta-data"), "instance-id: rehearsal\n")
            .context("writing meta-data")?;
    }
    let tree = staging.path();
    cmd!(
        sh,
        "genisoimage -quiet -input-charset utf-8 -volid {label} -joliet -rock -output {drive} {tree}"
    )
    .quiet()
    .run()
    .with_context(|| format!("making the {label} drive {}", drive.display()))
}

/// The QEMU command line (without the program) for `options`, an SSH port and the
/// config's delivery.
pub fn qemu_args(options: &BootOptions, ssh_port: u16, config: &ConfigDelivery) -> Vec<String> {
    // Nothing but the forwarded SSH port: the guest reaches no network (QEMU's `restrict=on`).
    let restrict = ",restrict=on";
    let mut args = vec![
        "-machine".to_owned(),
        format!("pc,accel={}", options.accelerator.packer_name()),
        "-smp".to_owned(),
        options.cpus.to_string(),
        "-m".to_owned(),
        options.memory_mib.to_string(),
        "-nodefaults".to_owned(),
        "-display".to_owned(),
        "none".to_owned(),
        "-serial".to_owned(),
        format!("file:{}", options.log_dir.join("console.log").display()),
        "-drive".to_owned(),
        format!("file={},if=virtio,format=qcow2", options.disk.display()),
        "-netdev".to_owned(),
        format!("user,id=net0{restrict},hostfwd=tcp:127.0.0.1:{ssh_port}-:22"),
        "-device".to_owned(),
        "virtio-net-pci,netdev=net0".to_owned(),
    ];
    match config {
        ConfigDelivery::None => {}
        ConfigDelivery::FwCfg(ignition) => {
            args.push("-fw_cfg".to_owned());
            args.push(format!(
                "name={IGNITION_FW_CFG_NAME},file={}",
                ignition.display()
            ));
        }
        ConfigDelivery::Drive(drive) => {
            args.push("-drive".to_owned());
            args.push(format!(
                "file={},if=virtio,format=raw,readonly=on",
                drive.display()
            ));
        }
    }
    args
}

/// The `ssh` options for logging in to a guest on 127.0.0.1:`port`: key only, no
/// host-key memory (every boot has new host keys), bounded waits.
pub fn ssh_args(port: u16, private_key: &Path, user: &str) -> Vec<String> {
    [
        "-i",
        &private_key.display().to_string(),
        "-p",
        &port.to_string(),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "ServerAliveInterval=5",
        "-o",
        "ServerAliveCountMax=6",
        &format!("{user}@127.0.0.1"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Makes `overlay`, a qcow2 that reads through to `base` and takes every write.
pub fn create_overlay(sh: &Shell, base: &Path, overlay: &Path) -> anyhow::Result<()> {
    cmd!(
        sh,
        "qemu-img create -q -f qcow2 -F qcow2 -b {base} {overlay}"
    )
    .quiet()
    .run()
    .with_context(|| format!("creating an overlay of {}", base.display()))
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_loopback_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr().context("finding a free port")?.port())
}

/// A guest that booted and answers SSH. Dropping it kills QEMU.
pub struct RunningGuest {
    qemu: Option<duct::Handle>,
    ssh_port: u16,
    private_key: PathBuf,
    user: String,
    log_dir: PathBuf,
    /// From starting QEMU to the first successful SSH login.
    pub boot_to_ssh: Duration,
}

/// Boots `options.disk` and waits until `ssh <user>@127.0.0.1 true` succeeds.
pub fn boot(sh: &Shell, options: &BootOptions) -> anyhow::Result<RunningGuest> {
    std::fs::create_dir_all(&options.log_dir)
        .with_context(|| format!("creating {}", options.log_dir.display()))?;
    let ssh_port = free_loopback_port()?;
    let config = deliver_config(sh, options)?;
    let qemu_log = options.log_dir.join("qemu.log");
    let started = Instant::now();
    let handle = duct::cmd("qemu-system-x86_64", qemu_args(options, ssh_port, &config))
        .stdin_null()
        .stdout_path(&qemu_log)
        .stderr_to_stdout()
        .unchecked()
        .before_spawn(|command| {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; it runs in the child before exec.
            // QEMU gets SIGTERM if the xtask dies without dropping the guest.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
            Ok(())
        })
        .start()
        .context("starting qemu-system-x86_64")?;
    let mut guest = RunningGuest {
        qemu: Some(handle),
        ssh_port,
        private_key: options.private_key.clone(),
        user: options.user.clone(),
        log_dir: options.log_dir.clone(),
        boot_to_ssh: Duration::ZERO,
    };
    loop {
        if guest.ssh_succeeds(sh) {
            guest.boot_to_ssh = started.elapsed();
            return Ok(guest);
        }
        if let Some(status) = guest.qemu_exit()? {
            bail!(
                "QEMU exited ({status}) before SSH answered.\n{}",
                guest.diagnostics()
            );
        }
        if streaming::interrupted() {
            bail!("interrupted while waiting for the guest's SSH");
        }
        if started.elapsed() > options.ssh_timeout {
            bail!(
                "no SSH login as {} on 127.0.0.1:{ssh_port} within {} s.\n{}",
                options.user,
                options.ssh_timeout.as_secs(),
                guest.diagnostics()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

impl RunningGuest {
    /// The serial console's output so far.
    pub fn console_log(&self) -> PathBuf {
        self.log_dir.join("console.log")
    }

    fn ssh_succeeds(&self, sh: &Shell) -> bool {
        let args = ssh_args(self.ssh_port, &self.private_key, &self.user);
        cmd!(sh, "ssh {args...} true")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_ok()
    }

    /// Runs `command` in the guest's login shell; its exit status and output.
    pub fn ssh(&self, sh: &Shell, command: &str) -> anyhow::Result<(bool, String)> {
        self.ssh_as(sh, &self.private_key, command)
    }

    /// Like [`Self::ssh`], logging in with another key (to check which keys work).
    pub fn ssh_as(
        &self,
        sh: &Shell,
        private_key: &Path,
        command: &str,
    ) -> anyhow::Result<(bool, String)> {
        let args = ssh_args(self.ssh_port, private_key, &self.user);
        let output = cmd!(sh, "ssh {args...} {command}")
            .quiet()
            .ignore_status()
            .output()
            .with_context(|| format!("running ssh {command:?}"))?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Ok((output.status.success(), text))
    }

    /// Like [`Self::ssh`], failing unless the command succeeds; its stdout.
    pub fn ssh_ok(&self, sh: &Shell, command: &str) -> anyhow::Result<String> {
        match self.ssh(sh, command)? {
            (true, output) => Ok(output),
            (false, output) => bail!("`{command}` failed in the guest:\n{output}"),
        }
    }

    fn qemu_exit(&self) -> anyhow::Result<Option<String>> {
        let Some(qemu) = &self.qemu else {
            return Ok(Some("already stopped".to_owned()));
        };
        Ok(qemu
            .try_wait()
            .context("checking on QEMU")?
            .map(|output| output.status.to_string()))
    }

    /// The last console lines and QEMU's own messages, for error reports.
    fn diagnostics(&self) -> String {
        let read = |name: &str| {
            std::fs::read_to_string(self.log_dir.join(name))
                .map(|text| streaming::tail(&text, 25))
                .unwrap_or_default()
        };
        format!(
            "Last serial console lines ({}):\n{}\nQEMU said:\n{}",
            self.console_log().display(),
            read("console.log"),
            read("qemu.log")
        )
    }

    /// Powers the guest off cleanly (so that its disk is consistent for the next
    /// boot), killing QEMU if it has not stopped within `timeout`.
    pub fn shutdown(mut self, sh: &Shell, timeout: Duration) -> anyhow::Result<()> {
        // The connection drops as the guest goes down: the exit status says nothing.
        let _ = self.ssh(sh, "sudo systemctl poweroff");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.qemu_exit()?.is_some() {
                self.qemu = None;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.kill();
        bail!(
            "the guest did not power off within {} s; QEMU was killed",
            timeout.as_secs()
        )
    }

    fn kill(&mut self) {
        if let Some(qemu) = self.qemu.take() {
            // kill() also waits, so no zombie is left.
            let _ = qemu.kill();
        }
    }
}

impl Drop for RunningGuest {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flatcar::platform::Platform;

    #[test]
    fn qemu_command_line_matches_the_build() {
        let options = BootOptions::like_build(
            Path::new("/c/overlay.qcow2"),
            Path::new("/k/id"),
            Path::new("/logs"),
        );
        let fw_cfg = ConfigDelivery::FwCfg(PathBuf::from("/c/config.ign"));
        expect_test::expect![[r#"
            -machine pc,accel=tcg -smp 2 -m 1024 -nodefaults -display none -serial file:/logs/console.log -drive file=/c/overlay.qcow2,if=virtio,format=qcow2 -netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22 -device virtio-net-pci,netdev=net0 -fw_cfg name=opt/org.flatcar-linux/config,file=/c/config.ign"#]]
        .assert_eq(&qemu_args(&options, 2222, &fw_cfg).join(" "));
        assert!(!qemu_args(&options, 2222, &ConfigDelivery::None)
            .join(" ")
            .contains("fw_cfg"));
        let drive = ConfigDelivery::Drive(PathBuf::from("/logs/config-drive.iso"));
        assert!(qemu_args(&options, 2222, &drive)
            .join(" ")
            .ends_with(" -drive file=/logs/config-drive.iso,if=virtio,format=raw,readonly=on"));
    }

    #[test]
    fn each_platform_gets_its_drive() {
        let sh = Shell::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.ign");
        std::fs::write(&config, "{\"ignition\":{\"version\":\"3.3.0\"}}").unwrap();
        let mut options =
            BootOptions::like_build(Path::new("/c/disk.qcow2"), Path::new("/k/id"), dir.path());
        options.ignition = Some(config.clone());
        assert_eq!(
            deliver_config(&sh, &options).unwrap(),
            ConfigDelivery::FwCfg(config.clone())
        );
        for (platform, label, path) in [
            (
                Platform::Openstack,
                "config-2",
                "/openstack/latest/user_data",
            ),
            (
                Platform::Kubevirt,
                "config-2",
                "/openstack/latest/user_data",
            ),
            (Platform::Proxmoxve, "cidata", "/user-data"),
        ] {
            options.channel = platform.config_channel();
            let ConfigDelivery::Drive(drive) = deliver_config(&sh, &options).unwrap() else {
                panic!("{platform} gets no drive");
            };
            let info = cmd!(sh, "isoinfo -d -i {drive}").read().unwrap();
            assert!(info.contains(&format!("Volume id: {label}")), "{info}");
            let listing = cmd!(sh, "isoinfo -R -f -i {drive}").read().unwrap();
            assert!(listing.lines().any(|l| l == path), "{listing}");
            let read = cmd!(sh, "isoinfo -R -x {path} -i {drive}").read().unwrap();
            assert_eq!(read, "{\"ignition\":{\"version\":\"3.3.0\"}}");
        }
        options.channel = Platform::Hetzner.config_channel();
        assert!(deliver_config(&sh, &options).is_err());
    }

    #[test]
    fn ssh_logs_in_with_the_key_only() {
        let args = ssh_args(2222, Path::new("/k/id"), "core").join(" ");
        assert!(args.starts_with("-i /k/id -p 2222 -o IdentitiesOnly=yes -o BatchMode=yes"));
        assert!(args.ends_with(" core@127.0.0.1"));
    }
}
