//! The build's benchmarks, on the rehearsal's Flatcar-shaped guest and loopback
//! mirror under TCG: `build-flatcar` with warm caches side by side with the same
//! build by a baseline revision's xtask (built from a git worktree of it); a second
//! build with the same Kubernetes version (its time, and the artifacts it fetched
//! from the mirror again); and the xtask's own share of a build (all but packer).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::build::plan::{self, Provider};
use crate::build::record::BuildRecord;
use crate::measure::{ratio_row, stats, Row};
use crate::testbed::{self, downloads, guest, mirror, server::FileServer};
use crate::{nested_cargo, workspace};

/// The revision the build is compared with when no other is given: the last one
/// before the build's speed work.
pub const BASELINE_REVISION: &str = "93ac109";

/// One build-flatcar run: its wall time, its record, and the files it (packer's
/// VM included) fetched from the mirror that were not Flatcar's release files.
struct Run {
    took: Duration,
    record: BuildRecord,
    artifact_downloads: usize,
}

/// An xtask binary and the checkout it builds from (its CARGO_MANIFEST_DIR).
struct Xtask {
    binary: PathBuf,
    checkout: PathBuf,
    /// The site var file its builds take: the baseline's VM fetches from the mirror
    /// itself (10.0.2.2), ours fetches on the host (127.0.0.1) and serves the VM.
    mirror_config: PathBuf,
}

/// The rows: warm build vs the baseline, the second build, the xtask's overhead.
/// `ours` is the binary under test; `revision` the baseline's git revision.
pub fn rows(sh: &Shell, ours: &Path, revision: &str) -> anyhow::Result<Vec<Row>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the build benchmarks need root, as `cargo xtask rehearse` does (they build and boot its guest)");
    }
    let dir = testbed::cache_dir().join("bench-build");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (guest, _) = guest::build_or_reuse(sh, false)?;
    let downloads = downloads::Downloads::from_vars(&plan::rendered_variables(
        Provider::Qemu,
        None,
        &Default::default(),
    )?)?;
    // Only QEMU's image: the build boots nothing else.
    let mirror = mirror::build(
        sh,
        &dir.join("mirror"),
        &guest,
        "stable",
        &[crate::flatcar::platform::Platform::Qemu],
        &downloads,
    )?;
    let server = FileServer::start(&mirror.root)?;
    let write_config = |name: &str, base: &str| -> anyhow::Result<PathBuf> {
        let config = dir.join(name);
        let text = serde_json::to_string_pretty(&mirror.mirror_config(base)?)?;
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        Ok(config)
    };
    let baseline = Xtask {
        binary: baseline_binary(sh, revision, &dir)?,
        checkout: baseline_checkout(revision),
        mirror_config: write_config("mirror-config-guest.json", &server.url_for_guest())?,
    };
    let ours = Xtask {
        binary: ours.to_owned(),
        checkout: workspace::project_root(),
        mirror_config: write_config("mirror-config.json", &server.url())?,
    };
    let site = Site {
        mirror: &mirror,
        server: &server,
        dir: &dir,
    };
    // Warm caches: each binary's cache holds the verified image before it builds.
    site.fetch(&ours, "ours")?;
    site.fetch(&baseline, "baseline")?;
    // One build each: a build takes minutes under TCG.
    let first = vec![site.build(&ours, "ours")?];
    let base = vec![site.build(&baseline, "baseline")?];
    let second = vec![site.build(&ours, "ours")?];
    Ok(vec![
        warm_row(&first, &base, revision),
        second_row(&first, &second),
        overhead_row(&first),
    ])
}

/// The mirror a bench build reads and where it keeps its caches.
struct Site<'a> {
    mirror: &'a mirror::Mirror,
    server: &'a FileServer,
    dir: &'a Path,
}

impl Site<'_> {
    /// `xtask` with `args`, pointed at the mirror, its cache under `cache`.
    fn command(&self, xtask: &Xtask, args: &[&str], cache: &str) -> Command {
        let mut command = Command::new(&xtask.binary);
        command
            .args(args)
            .args(["stable", testbed::FLATCAR_VERSION, "--release-server"])
            .arg(self.mirror.release_server(&self.server.url()))
            .arg("--signing-key")
            .arg(&self.mirror.signing_key)
            .arg("--cache-dir")
            .arg(self.dir.join(format!("cache-{cache}")))
            .env("CARGO_MANIFEST_DIR", xtask.checkout.join("xtask"));
        command
    }

    fn fetch(&self, xtask: &Xtask, cache: &str) -> anyhow::Result<()> {
        let status = self
            .command(xtask, &["fetch-image"], cache)
            .stdout(Stdio::null())
            .status()
            .context("starting fetch-image")?;
        if !status.success() {
            bail!("fetch-image with {} failed", xtask.binary.display());
        }
        Ok(())
    }

    /// One build; its output directory is removed once its record is read.
    fn build(&self, xtask: &Xtask, cache: &str) -> anyhow::Result<Run> {
        let mut command = self.command(xtask, &["build-flatcar"], cache);
        command
            .arg("--mirror-config")
            .arg(&xtask.mirror_config)
            .args([
                "--accelerator",
                "tcg",
                "--force",
                "--no-verify",
                "--no-install",
            ])
            .stderr(Stdio::inherit());
        self.server.clear_requests();
        let started = Instant::now();
        let out = command.output().context("starting build-flatcar")?;
        let took = started.elapsed();
        if !out.status.success() {
            bail!(
                "build-flatcar with {} failed; its output is above",
                xtask.binary.display()
            );
        }
        let output_dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let record = BuildRecord::read(&output_dir)?;
        std::fs::remove_dir_all(&output_dir)
            .with_context(|| format!("removing {}", output_dir.display()))?;
        let release_files = format!("/{}/", mirror::RELEASE_DIR);
        let artifact_downloads = self
            .server
            .requests()
            .iter()
            .filter(|r| matches!(r.status, 200 | 206) && !r.path.starts_with(&release_files))
            .count();
        Ok(Run {
            took,
            record,
            artifact_downloads,
        })
    }
}

fn warm_row(ours: &[Run], base: &[Run], revision: &str) -> Row {
    let times = |runs: &[Run]| runs.iter().map(|r| r.took).collect::<Vec<_>>();
    let mut row = ratio_row(
        "build-flatcar, warm caches",
        ours.len(),
        &times(ours),
        &times(base),
        &format!("(revision {revision})"),
        0.5,
    );
    row.note = "slow: rehearsal guest under TCG".into();
    row
}

fn second_row(first: &[Run], second: &[Run]) -> Row {
    let times = |runs: &[Run]| runs.iter().map(|r| r.took).collect::<Vec<_>>();
    let mut row = ratio_row(
        "second build, same Kubernetes",
        second.len(),
        &times(second),
        &times(first),
        "(the first build)",
        0.9,
    );
    let downloads = |runs: &[Run]| runs.iter().map(|r| r.artifact_downloads).max().unwrap_or(0);
    row.met = row.met && downloads(second) == 0;
    row.note = format!(
        "{} artifact downloads from the mirror (first build: {}); same channel: the rehearsal guest is a stable image",
        downloads(second),
        downloads(first)
    );
    row
}

/// The xtask's own time in a build (the whole run but packer), against 3 s, with
/// its share of the whole build as the ratio.
fn overhead_row(runs: &[Run]) -> Row {
    let own: Vec<Duration> = runs
        .iter()
        .map(|r| {
            let packer = r.record.packer_seconds.unwrap_or_default();
            r.took.saturating_sub(Duration::from_secs_f64(packer))
        })
        .collect();
    let whole: Vec<Duration> = runs.iter().map(|r| r.took).collect();
    let (o, w) = (stats(&own), stats(&whole));
    Row {
        name: "xtask overhead in a build".into(),
        unit: "s",
        ours: o,
        baseline: Some(w),
        baseline_is: "(the whole build)".into(),
        ratio: Some(o.median / w.median),
        target: "< 3 s".into(),
        met: o.median < 3.0,
        iterations: runs.len(),
        note: "warm caches, --accelerator given".into(),
    }
}

/// Where the baseline revision is checked out: a git worktree under target/.
fn baseline_checkout(revision: &str) -> PathBuf {
    workspace::project_root()
        .join("target/bench")
        .join(format!("baseline-{revision}"))
}

/// The baseline revision's xtask, built from a git worktree of it with this
/// checkout's target directory (its dependencies are already built there) and
/// copied into `dir`, since the next build of this checkout replaces it.
fn baseline_binary(sh: &Shell, revision: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let root = workspace::project_root();
    let checkout = baseline_checkout(revision);
    let _in_root = sh.push_dir(&root);
    if !checkout.join("xtask/Cargo.toml").is_file() {
        cmd!(sh, "git worktree add --detach {checkout} {revision}")
            .quiet()
            .run()
            .with_context(|| format!("checking out {revision} for the baseline"))?;
    }
    let target = root.join("target");
    let manifest = checkout.join("Cargo.toml");
    eprintln!("bench: building the baseline xtask of {revision} ...");
    nested_cargo::command(sh)
        .args(["build", "-q", "-p", "xtask", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .run()
        .with_context(|| format!("building the xtask of {revision}"))?;
    let copy = dir.join("baseline-xtask");
    std::fs::copy(target.join("debug/xtask"), &copy)
        .with_context(|| format!("copying the baseline xtask to {}", copy.display()))?;
    Ok(copy)
}
