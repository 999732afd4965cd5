//! `cargo xtask bench`: every speed figure the project promises, measured on this
//! machine side by side with its baseline in one run (alternating, after a warm-up),
//! reported as min/median/max and a ratio. Not a test: it never fails on a target.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use xshell::{cmd, Shell};

use crate::flatcar::release::Variant;
use crate::measure::{
    self, absolute_row, ratio_row, side_by_side, stats, timed, timed_with_rss, Row, Stats,
};
use crate::output::Format;
use crate::testbed::release_tree::{self, Digests, Image, Release, Signature};
use crate::testbed::server::FileServer;
use crate::testbed::signer::Signer;
use crate::{nested_cargo, workspace};

mod bake;
mod build;

/// The benchmarks, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bench {
    /// Full `validate` vs the same checks run one after another (`--jobs 1`).
    ValidateParallel,
    /// Second `validate` with nothing changed vs a first (uncached) one.
    ValidateCached,
    /// `pre-commit` with one staged JSON file (uncached).
    PreCommitOneJson,
    /// Download + SHA-512 + signature check of a 1 GiB image from loopback vs
    /// `curl && sha512sum && gpgv`; also peak memory and a verified cache hit.
    FetchVerify,
    /// `mirror` of one channel (a 256 MiB signed image, seven 32 MiB artifacts) from
    /// loopback vs fetching the same files with curl and checking them with sha256sum,
    /// sha512sum and gpgv.
    Mirror,
    /// Warm `cargo xtask --help` and `target/debug/xtask --help`.
    Startup,
    /// Boot-to-SSH of the rehearsal guest booted like Flatcar vs the old flow's fixed 180 s `boot_wait`.
    BootToSsh,
    /// `bake --platform qemu` with warm caches against a small signed loopback
    /// release (target < 30 s), and two bakes of the same inputs compared byte for byte.
    Bake,
    /// A clean build of the xtask crate (only with --slow).
    ColdBuild,
    /// build-flatcar on the rehearsal guest with warm caches vs the baseline
    /// revision's, a second build with the same Kubernetes version (time and
    /// downloads), the xtask's own overhead (only with --slow; root; about 30 min).
    Build,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The benchmarks to run (default: all but cold-build).
    #[arg(value_enum)]
    names: Vec<Bench>,
    /// Measured iterations of the fast benchmarks (slow ones use fewer and say so).
    #[arg(long, default_value_t = 5)]
    iterations: usize,
    /// Also run cold-build and build (minutes).
    #[arg(long)]
    slow: bool,
    /// The git revision whose build-flatcar the build benchmark compares with.
    #[arg(long, value_name = "REV", default_value = build::BASELINE_REVISION)]
    baseline_revision: String,
    /// How to report: a table on stderr for people, or JSON on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// The xtask binary the benchmarks run: a copy of this one, taken before any row
/// runs, because a cargo started meanwhile may rebuild and replace
/// target/debug/xtask. `run` owns the directory it sits in.
static OWN_BINARY: OnceLock<PathBuf> = OnceLock::new();

fn xtask() -> anyhow::Result<Command> {
    Ok(Command::new(own_binary_path()?))
}

fn own_binary_path() -> anyhow::Result<&'static Path> {
    Ok(OWN_BINARY
        .get()
        .context("the xtask binary is copied before the benchmarks run")?)
}

/// Copies the running binary into `dir` for [`xtask`].
fn copy_own_binary(dir: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let copy = dir.join("xtask");
    std::fs::copy(&exe, &copy)
        .with_context(|| format!("copying {} to {}", exe.display(), copy.display()))?;
    OWN_BINARY
        .set(copy)
        .map_err(|_| anyhow::anyhow!("the benchmarks run once per process"))
}

pub fn run(sh: &Shell, args: &BenchArgs) -> anyhow::Result<()> {
    let mut names = args.names.clone();
    if names.is_empty() {
        names = vec![
            Bench::ValidateParallel,
            Bench::ValidateCached,
            Bench::PreCommitOneJson,
            Bench::FetchVerify,
            Bench::Mirror,
            Bench::Startup,
            Bench::BootToSsh,
            Bench::Bake,
        ];
        if args.slow {
            names.extend([Bench::ColdBuild, Bench::Build]);
        }
    }
    let n = args.iterations.max(1);
    let own_binary = tempfile::tempdir().context("creating a directory for the xtask binary")?;
    copy_own_binary(own_binary.path())?;
    let mut rows = Vec::new();
    for name in names {
        eprintln!("bench: {name:?} ...");
        rows.extend(match name {
            Bench::ValidateParallel => validate_parallel(n)?,
            Bench::ValidateCached => validate_cached(n)?,
            Bench::PreCommitOneJson => pre_commit_one_json(sh, n)?,
            Bench::FetchVerify => fetch_verify()?,
            Bench::Mirror => mirror_one_channel()?,
            Bench::Startup => startup(sh, n)?,
            Bench::BootToSsh => boot_to_ssh()?,
            Bench::Bake => bake::rows(sh, own_binary_path()?, n.min(3))?,
            Bench::ColdBuild => cold_build(sh)?,
            Bench::Build => build::rows(sh, own_binary_path()?, &args.baseline_revision)?,
        });
    }
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        eprint!("{}", measure::render(&rows));
        eprintln!("Machine: {}; {}", measure::machine(), crate::utc::now());
    }
    Ok(())
}

fn validate_parallel(n: usize) -> anyhow::Result<Vec<Row>> {
    let (ours, base) = side_by_side(
        n,
        || timed(xtask()?.args(["validate", "--no-cache"])),
        || timed(xtask()?.args(["validate", "--no-cache", "--jobs", "1"])),
    )?;
    Ok(vec![ratio_row(
        "validate-parallel",
        n,
        &ours,
        &base,
        "(same checks, --jobs 1)",
        0.6,
    )])
}

fn validate_cached(n: usize) -> anyhow::Result<Vec<Row>> {
    // The uncached run also refreshes the cache, so the next cached run is a hit.
    let (ours, base) = side_by_side(
        n,
        || timed(xtask()?.arg("validate")),
        || timed(xtask()?.args(["validate", "--no-cache"])),
    )?;
    Ok(vec![ratio_row(
        "validate-cached",
        n,
        &ours,
        &base,
        "(first run, --no-cache)",
        0.1,
    )])
}

fn pre_commit_one_json(sh: &Shell, n: usize) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir().context("making a temporary repository")?;
    let repo = dir.path();
    let capi = workspace::capi_dir();
    let copy = repo.join("images");
    std::fs::create_dir_all(&copy)?;
    cmd!(sh, "cp -a {capi} {copy}/").quiet().run()?;
    let _dir = sh.push_dir(repo);
    cmd!(sh, "git init -q").quiet().run()?;
    cmd!(sh, "git add -A").quiet().run()?;
    cmd!(
        sh,
        "git -c user.email=bench@localhost -c user.name=bench commit -q -m base"
    )
    .quiet()
    .run()?;
    // One real change to one var file, staged.
    let file = "images/capi/packer/config/cni.json";
    let mut vars: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo.join(file))?)?;
    vars["cni_version"] = "v0.0.1".into();
    std::fs::write(repo.join(file), crate::json_text::canonical(&vars))?;
    cmd!(sh, "git add {file}").quiet().run()?;
    let mut samples = Vec::new();
    timed(
        xtask()?
            .args(["pre-commit", "--no-cache", "--root"])
            .arg(repo),
    )?;
    for _ in 0..n {
        samples.push(timed(
            xtask()?
                .args(["pre-commit", "--no-cache", "--root"])
                .arg(repo),
        )?);
    }
    Ok(vec![absolute_row(
        "pre-commit-one-json",
        n,
        &samples,
        Duration::from_secs(1),
        "uncached",
    )])
}

fn startup(sh: &Shell, n: usize) -> anyhow::Result<Vec<Row>> {
    let root = workspace::project_root();
    let cargo_xtask_help = || {
        let mut command = Command::from(nested_cargo::command(sh).args(["xtask", "--help"]));
        command.current_dir(&root);
        command
    };
    let mut via_cargo = Vec::new();
    let mut direct = Vec::new();
    timed(&mut cargo_xtask_help())?;
    for _ in 0..n {
        via_cargo.push(timed(&mut cargo_xtask_help())?);
        direct.push(timed(xtask()?.arg("--help"))?);
    }
    Ok(vec![
        absolute_row(
            "startup: cargo xtask --help",
            n,
            &via_cargo,
            Duration::from_millis(150),
            "warm",
        ),
        absolute_row(
            "startup: xtask --help",
            n,
            &direct,
            Duration::from_millis(20),
            "warm",
        ),
    ])
}

/// The files fetch-verify serves and trusts: a signed 1 GiB release under `base`.
struct SignedRelease {
    version: &'static str,
    image_name: &'static str,
    /// The image's detached signature.
    sig: PathBuf,
    /// The public key, armored (for fetch-image) and as a keyring (for gpgv).
    key: PathBuf,
    keyring: PathBuf,
}

fn signed_release(base: &Path) -> anyhow::Result<SignedRelease> {
    let version = "4081.2.0";
    let image_name = Variant::Bios.image_file_name();
    let source = base.join("source.img");
    write_test_image(&source)?;
    let signer = Signer::new("Bench <bench@localhost>")?;
    let release = Release {
        images: vec![Image {
            digests: Digests::Sha512Only,
            signature: Signature::By(signer.signing()),
            ..Image::new(image_name, &source)
        }],
        ..Release::new("stable", "amd64", version)
    };
    let dir = release_tree::write(&base.join("www"), &release)?;
    std::fs::remove_file(&source).with_context(|| format!("removing {}", source.display()))?;
    let (key, keyring) = (base.join("key.asc"), base.join("keyring.gpg"));
    signer.write_public_key(&key, true)?;
    signer.write_public_key(&keyring, false)?;
    Ok(SignedRelease {
        version,
        image_name,
        sig: dir.join(format!("{image_name}.sig")),
        key,
        keyring,
    })
}

fn fetch_verify() -> anyhow::Result<Vec<Row>> {
    let base = tempfile::tempdir_in(workspace::project_root().join("target"))
        .context("making a bench directory")?;
    let base = base.path();
    let SignedRelease {
        version,
        image_name,
        sig,
        key,
        keyring,
    } = signed_release(base)?;
    let server = FileServer::start(&base.join("www"))?;
    let url = format!("{}/stable/amd64-usr/{version}/{image_name}", server.url());
    let cache = base.join("cache");
    let fetch = || -> anyhow::Result<Command> {
        let mut c = xtask()?;
        c.args([
            "fetch-image",
            "stable",
            version,
            "--quiet",
            "--release-server",
        ])
        .arg(format!("{}/{{channel}}", server.url()))
        .arg("--signing-key")
        .arg(&key)
        .arg("--cache-dir")
        .arg(&cache);
        Ok(c)
    };
    let copy = base.join("curl.img");
    let iterations = 3;
    let mut peak_kib = 0;
    let (ours, baseline) = side_by_side(
        iterations,
        || {
            let _ = std::fs::remove_dir_all(&cache);
            let (took, rss) = timed_with_rss(&mut fetch()?)?;
            peak_kib = peak_kib.max(rss);
            Ok(took)
        },
        || curl_sha512sum_gpgv(&url, &copy, &keyring, &sig),
    )?;
    let mut hits = Vec::new();
    for _ in 0..5 {
        hits.push(timed(&mut fetch()?)?);
    }
    let mut verify = ratio_row(
        "fetch-verify (1 GiB)",
        iterations,
        &ours,
        &baseline,
        "(curl + sha512sum + gpgv)",
        1.25,
    );
    verify.note = "slow: 3 runs".into();
    let rss = peak_memory_row(peak_kib, iterations);
    Ok(vec![
        verify,
        rss,
        absolute_row(
            "fetch-verify cache hit",
            5,
            &hits,
            Duration::from_millis(50),
            "whole process",
        ),
    ])
}

/// The loopback release and artifacts the `mirror` bench fetches, both ways.
struct MirrorSite {
    server: FileServer,
    version: &'static str,
    /// The armored key for `mirror`, and the keyring for gpgv.
    key: PathBuf,
    keyring: PathBuf,
    /// Every file's URL, the image first.
    urls: Vec<String>,
    /// The image's detached signature.
    signature_url: String,
    /// The var file that points the artifacts at the server, as upstream.
    upstream_file: PathBuf,
}

/// Fills `base` with a signed 256 MiB image and seven 32 MiB artifacts with their
/// checksum files, and serves it.
fn mirror_site(base: &Path) -> anyhow::Result<MirrorSite> {
    use crate::artifacts::{artifact_list, checksum::Algorithm, variables_at, Pypy};
    let (version, image_name, signer) = (
        "4081.2.0",
        Variant::Bios.image_file_name(),
        Signer::new("Bench <bench@localhost>")?,
    );
    let source = base.join("source.img");
    patterned_file(&source, 256, 0)?;
    let release = Release {
        images: vec![Image {
            digests: Digests::Sha512Only,
            signature: Signature::By(signer.signing()),
            ..Image::new(image_name, &source)
        }],
        ..Release::new("stable", "amd64", version)
    };
    release_tree::write(&base.join("www"), &release)?;
    let key = base.join("key.asc");
    let keyring = base.join("keyring.gpg");
    signer.write_public_key(&key, true)?;
    signer.write_public_key(&keyring, false)?;
    let server = FileServer::start(&base.join("www"))?;
    let vars = crate::build::plan::rendered_variables(
        crate::build::plan::Provider::Qemu,
        None,
        &Default::default(),
    )?;
    let pypy_body = patterned_file(&base.join("pypy.src"), 32, 7)?;
    let mut hasher = Algorithm::Sha256.hasher();
    hasher.update(&pypy_body);
    let pypy = Pypy {
        version: "7.3.11".into(),
        python_version: "3.9".into(),
        platform: "linux64".into(),
        sha256: hasher.finish(),
    };
    let release_url = format!("{}/stable/amd64-usr/{version}/", server.url());
    let mut urls = vec![format!("{release_url}{image_name}")];
    for (i, a) in artifact_list(&vars, &pypy)?.iter().enumerate() {
        let seed = if a.name == "pypy" { 7 } else { i as u8 + 1 };
        let body = patterned_file(&base.join("www").join(&a.served_path), 32, seed)?;
        let mut h = Algorithm::Sha256.hasher();
        h.update(&body);
        if let Some(sums) = a.checksum_served_path()? {
            std::fs::write(
                base.join("www").join(sums),
                format!("{}  {}\n", h.finish(), a.file_name()),
            )?;
        }
        urls.push(format!("{}/{}", server.url(), a.served_path));
    }
    let mut upstream: BTreeMap<String, String> = variables_at(&vars, &server.url())?;
    upstream.insert(
        "ansible_extra_vars".into(),
        format!(
            "pypy_python_version=3.9 pypy_version=7.3.11 pypy_sha256={}",
            pypy.sha256
        ),
    );
    let upstream_file = base.join("upstream.json");
    std::fs::write(&upstream_file, serde_json::to_string(&upstream)?)?;
    Ok(MirrorSite {
        server,
        version,
        key,
        keyring,
        urls,
        signature_url: format!("{release_url}{image_name}.sig"),
        upstream_file,
    })
}

/// Writes `mib` MiB of a pattern that differs per MiB and per `seed` (so nothing
/// compresses or deduplicates) to `path`, and returns the bytes.
fn patterned_file(path: &Path, mib: usize, seed: u8) -> anyhow::Result<Vec<u8>> {
    let block: Vec<u8> = (0..1usize << 20)
        .map(|i| (i * 31 % 251) as u8 ^ seed)
        .collect();
    let mut all = Vec::with_capacity(mib << 20);
    for i in 0..mib as u32 {
        all.extend_from_slice(&i.to_le_bytes());
        all.extend_from_slice(&block[4..]);
    }
    std::fs::create_dir_all(path.parent().context("a parent")?)?;
    std::fs::write(path, &all).with_context(|| format!("writing {}", path.display()))?;
    Ok(all)
}

/// `mirror` for one channel vs curl + sha256sum (+ sha512sum and gpgv for the image)
/// of the same files, from a loopback server.
fn mirror_one_channel() -> anyhow::Result<Vec<Row>> {
    let base = tempfile::tempdir_in(workspace::project_root().join("target"))
        .context("making a bench directory")?;
    let base = base.path();
    let site = mirror_site(base)?;
    let (cache, out, copies) = (base.join("cache"), base.join("mirror"), base.join("curl"));
    let iterations = 3;
    let (ours, baseline) = side_by_side(
        iterations,
        || {
            let _ = std::fs::remove_dir_all(&cache);
            let _ = std::fs::remove_dir_all(&out);
            let mut c = xtask()?;
            c.arg("mirror")
                .arg(&out)
                .args([
                    "stable",
                    site.version,
                    "--quiet",
                    "--arch",
                    "amd64",
                    "--release-server",
                ])
                .arg(format!("{}/{{channel}}", site.server.url()))
                .arg("--signing-key")
                .arg(&site.key)
                .arg("--cache-dir")
                .arg(&cache)
                .arg("--mirror-config")
                .arg(&site.upstream_file);
            timed(&mut c)
        },
        || curl_mirror_baseline(&site, &copies),
    )?;
    let mut row = ratio_row(
        "mirror one channel (480 MiB)",
        iterations,
        &ours,
        &baseline,
        "(curl --parallel + sha256sum + sha512sum + gpgv)",
        1.3,
    );
    row.note = "slow: 3 runs".into();
    Ok(vec![row])
}

/// The same files fetched with curl into `copies` and checked with sha512sum (the
/// image), sha256sum (the artifacts) and gpgv (the image's signature).
fn curl_mirror_baseline(site: &MirrorSite, copies: &Path) -> anyhow::Result<Duration> {
    let _ = std::fs::remove_dir_all(copies);
    std::fs::create_dir_all(copies)?;
    let started = Instant::now();
    let mut curl = Command::new("curl");
    curl.args(["-sf", "--parallel", "--parallel-max", "4"])
        .current_dir(copies);
    let mut names = Vec::new();
    for (i, url) in site.urls.iter().chain([&site.signature_url]).enumerate() {
        let name = format!("f{i}");
        curl.arg("-o").arg(&name).arg(url);
        names.push(name);
    }
    timed(&mut curl)?;
    timed(Command::new("sha512sum").arg(copies.join("f0")))?;
    timed(
        Command::new("sha256sum")
            .args(&names[1..names.len() - 1])
            .current_dir(copies),
    )?;
    timed(
        Command::new("gpgv")
            .arg("--keyring")
            .arg(&site.keyring)
            .arg(copies.join(names.last().context("a sig")?))
            .arg(copies.join("f0")),
    )?;
    Ok(started.elapsed())
}

/// The baseline: download with curl, hash with sha512sum, check with gpgv.
fn curl_sha512sum_gpgv(
    url: &str,
    copy: &Path,
    keyring: &Path,
    sig: &Path,
) -> anyhow::Result<Duration> {
    let _ = std::fs::remove_file(copy);
    let started = Instant::now();
    timed(Command::new("curl").args(["-sf", "-o"]).arg(copy).arg(url))?;
    timed(Command::new("sha512sum").arg(copy))?;
    timed(
        Command::new("gpgv")
            .arg("--keyring")
            .arg(keyring)
            .arg(sig)
            .arg(copy),
    )?;
    Ok(started.elapsed())
}

fn peak_memory_row(peak_kib: u64, iterations: usize) -> Row {
    let peak_mib = peak_kib as f64 / 1024.0;
    Row {
        name: "fetch-verify peak memory".into(),
        unit: "MiB",
        ours: Stats {
            min: peak_mib,
            median: peak_mib,
            max: peak_mib,
        },
        baseline: None,
        baseline_is: "-".into(),
        ratio: None,
        target: "< 64 MiB".into(),
        met: peak_kib < 64 * 1024,
        iterations,
        note: "peak RSS of fetch-image".into(),
    }
}

/// 1 GiB that does not compress away: each MiB numbered, the rest a pattern.
fn write_test_image(path: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    const GIB: usize = 1 << 30;
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let mut block = vec![0u8; 1 << 20];
    for (i, b) in block.iter_mut().enumerate() {
        *b = (i * 31 % 251) as u8;
    }
    for i in 0..(GIB >> 20) as u32 {
        block[..4].copy_from_slice(&i.to_le_bytes());
        out.write_all(&block)?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}

fn boot_to_ssh() -> anyhow::Result<Vec<Row>> {
    let out = xtask()?
        .args(["rehearse-guest", "--format", "json"])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("`cargo xtask rehearse-guest` failed; its report is above");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading the rehearse-guest report")?;
    let boots: Vec<Duration> = report["boots"]
        .as_array()
        .context("the report has no boots")?
        .iter()
        .filter_map(|b| b["boot_to_ssh_seconds"].as_f64())
        .map(Duration::from_secs_f64)
        .collect();
    let old_flow = Duration::from_secs(180);
    let o = stats(&boots);
    Ok(vec![Row {
        name: "boot-to-ssh".into(),
        unit: "s",
        ours: o,
        baseline: Some(stats(&[old_flow])),
        baseline_is: "(constant: the old flow's boot_wait)".into(),
        ratio: Some(o.median / old_flow.as_secs_f64()),
        target: "reported".into(),
        met: true,
        iterations: boots.len(),
        note: "slow: the rehearse-guest boots, TCG".into(),
    }])
}

fn cold_build(sh: &Shell) -> anyhow::Result<Vec<Row>> {
    let target = tempfile::tempdir().context("making a clean target directory")?;
    let target_path = target.path();
    let root = workspace::project_root();
    let _dir = sh.push_dir(&root);
    let tree = nested_cargo::command(sh)
        .args(["tree", "-p", "xtask", "-e", "normal", "--prefix", "none"])
        .quiet()
        .read()?;
    let mut crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    crates.sort();
    crates.dedup();
    let started = Instant::now();
    nested_cargo::command(sh)
        .args(["build", "-q", "-p", "xtask", "--target-dir"])
        .arg(target_path)
        .quiet()
        .run()?;
    let took = started.elapsed();
    Ok(vec![Row {
        name: "cold-build".into(),
        unit: "s",
        ours: stats(&[took]),
        baseline: None,
        baseline_is: "-".into(),
        ratio: None,
        target: "reported".into(),
        met: true,
        iterations: 1,
        note: format!("{} crates", crates.len()),
    }])
}
