//! Which QEMU accelerator a build uses. `/dev/kvm` existing proves little: under
//! broken nested virtualization KVM guests hang early in boot. So KVM is chosen only
//! when a tiny guest really runs under it, quickly; otherwise `hvf` on macOS, else
//! TCG with a warning.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

/// A QEMU accelerator, as Packer's qemu builder and vagrant-libvirt name them.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Accelerator {
    Kvm,
    Hvf,
    Tcg,
}

impl Accelerator {
    /// The value of Packer's `accelerator` option.
    pub fn packer_name(self) -> &'static str {
        match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Hvf => "hvf",
            Accelerator::Tcg => "tcg",
        }
    }

    /// The value of vagrant-libvirt's `libvirt.driver` for a box built with this.
    pub fn libvirt_driver(self) -> &'static str {
        match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Hvf | Accelerator::Tcg => "qemu",
        }
    }
}

/// What the KVM probe saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvmProbe {
    /// No `/dev/kvm`: nothing was run.
    NoDevice,
    /// The probe guest ran to its end and exited with this status, after this long.
    Exited {
        status: Option<i32>,
        elapsed: Duration,
    },
    /// The probe guest did not finish before the deadline and was killed.
    TimedOut,
}

/// The boot sector the probe boots: `mov al, 0x31; out 0xf4, al; hlt; jmp $-1`.
/// Writing 0x31 to QEMU's `isa-debug-exit` device ends QEMU with status
/// `(0x31 << 1) | 1` = 99, so that status proves the guest executed code.
const PROBE_CODE: [u8; 7] = [0xB0, 0x31, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD];
const PROBE_EXIT_STATUS: i32 = 99;

/// A working KVM runs firmware plus the probe in a few tenths of a second. Measured
/// on a host whose KVM guests hang in early boot: 3.1 s for what TCG does in 0.1 s.
/// A KVM slower than this is not one to build with.
const PROBE_DEADLINE: Duration = Duration::from_millis(1500);

/// The probe's disk: `PROBE_CODE`, padded, with the boot signature.
fn probe_disk() -> [u8; 512] {
    let mut disk = [0u8; 512];
    disk[..PROBE_CODE.len()].copy_from_slice(&PROBE_CODE);
    disk[510] = 0x55;
    disk[511] = 0xAA;
    disk
}

/// The decision, given what was probed. `requested` is the user's `--accelerator`.
/// Returns the accelerator and, when it is TCG by necessity, a warning.
pub fn choose(
    requested: Option<Accelerator>,
    probe: KvmProbe,
    macos: bool,
) -> (Accelerator, Option<String>) {
    if let Some(accelerator) = requested {
        return (accelerator, None);
    }
    let why = match probe {
        KvmProbe::Exited {
            status: Some(PROBE_EXIT_STATUS),
            elapsed,
        } if elapsed <= PROBE_DEADLINE => return (Accelerator::Kvm, None),
        _ if macos => return (Accelerator::Hvf, None),
        KvmProbe::NoDevice => "/dev/kvm does not exist".to_owned(),
        KvmProbe::Exited {
            status: Some(PROBE_EXIT_STATUS),
            elapsed,
        } => format!(
            "a KVM test guest took {:.1} s to run a few instructions (nested virtualization?)",
            elapsed.as_secs_f64()
        ),
        KvmProbe::Exited { status, .. } => {
            format!("a KVM test guest failed (exit status {status:?})")
        }
        KvmProbe::TimedOut => {
            "a KVM test guest did not finish (KVM guests hang on this host)".to_owned()
        }
    };
    let warning = format!(
        "using TCG software emulation because {why}; the build will be several times slower. \
         Pass --accelerator kvm to force KVM."
    );
    (Accelerator::Tcg, Some(warning))
}

/// The accelerator asked for, or the one a probe finds (warning on stderr when
/// it falls back to TCG); the probe's disk lives in a temporary directory, so
/// nothing is left behind.
pub fn pick(requested: Option<Accelerator>) -> anyhow::Result<Accelerator> {
    let probe = match requested {
        Some(_) => KvmProbe::NoDevice,
        None => {
            let qemu = crate::toolchain::tools::find_program("qemu-system-x86_64")
                .context("qemu-system-x86_64 is not on PATH")?;
            let dir = tempfile::tempdir().context("making a directory for the KVM probe")?;
            probe_kvm(&qemu, dir.path())?
        }
    };
    let (accelerator, warning) = choose(requested, probe, cfg!(target_os = "macos"));
    if let Some(warning) = warning {
        eprintln!("warning: {warning}");
    }
    Ok(accelerator)
}

/// Boots the probe guest under KVM with `qemu` and reports what happened.
/// `work_dir` receives the 512-byte probe disk.
pub fn probe_kvm(qemu: &Path, work_dir: &Path) -> anyhow::Result<KvmProbe> {
    if !Path::new("/dev/kvm").exists() {
        return Ok(KvmProbe::NoDevice);
    }
    let disk = work_dir.join("kvm-probe.img");
    std::fs::write(&disk, probe_disk()).with_context(|| format!("writing {}", disk.display()))?;
    let drive = format!("file={},format=raw,if=ide", disk.display());
    let started = Instant::now();
    let handle = duct::cmd!(
        qemu,
        "-accel",
        "kvm",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-m",
        "16",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-drive",
        drive
    )
    .stdin_null()
    .stdout_null()
    .stderr_null()
    .unchecked()
    .start()
    .with_context(|| format!("starting {}", qemu.display()))?;
    // A guest still running at the deadline is not worth waiting for: the build
    // would wait the same way.
    let limit = PROBE_DEADLINE;
    let outcome = loop {
        if let Some(output) = handle.try_wait().context("waiting for the KVM probe")? {
            break KvmProbe::Exited {
                status: output.status.code(),
                elapsed: started.elapsed(),
            };
        }
        if started.elapsed() > limit {
            handle.kill().context("stopping the KVM probe")?;
            break KvmProbe::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_file(&disk);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(status: i32, millis: u64) -> KvmProbe {
        KvmProbe::Exited {
            status: Some(status),
            elapsed: Duration::from_millis(millis),
        }
    }

    #[test]
    fn kvm_only_when_the_probe_guest_ran_quickly() {
        assert_eq!(
            choose(None, exited(99, 200), false),
            (Accelerator::Kvm, None)
        );
        let (accel, warning) = choose(None, exited(99, 3100), false);
        assert_eq!(accel, Accelerator::Tcg);
        assert!(warning.unwrap().contains("took 3.1 s"));
        let (accel, warning) = choose(None, KvmProbe::TimedOut, false);
        assert_eq!(accel, Accelerator::Tcg);
        assert!(warning.unwrap().contains("did not finish"));
        let (_, warning) = choose(None, exited(1, 100), false);
        assert!(warning.unwrap().contains("exit status Some(1)"));
        let (_, warning) = choose(None, KvmProbe::NoDevice, false);
        assert!(warning.unwrap().contains("/dev/kvm does not exist"));
    }

    #[test]
    fn macos_falls_back_to_hvf_and_requests_win() {
        assert_eq!(
            choose(None, KvmProbe::NoDevice, true),
            (Accelerator::Hvf, None)
        );
        assert_eq!(
            choose(Some(Accelerator::Tcg), exited(99, 10), false),
            (Accelerator::Tcg, None)
        );
        assert_eq!(
            choose(Some(Accelerator::Kvm), KvmProbe::TimedOut, false),
            (Accelerator::Kvm, None)
        );
    }

    #[test]
    fn probe_disk_is_a_boot_sector() {
        let disk = probe_disk();
        assert_eq!(&disk[..7], &PROBE_CODE);
        assert_eq!(&disk[510..], &[0x55, 0xAA]);
    }

    #[test]
    fn drivers_follow_the_accelerator() {
        assert_eq!(Accelerator::Kvm.libvirt_driver(), "kvm");
        assert_eq!(Accelerator::Tcg.libvirt_driver(), "qemu");
        assert_eq!(Accelerator::Tcg.packer_name(), "tcg");
    }
}
