//! Installing the project-local toolchain (`deps --install`, and `validate` and
//! `build-flatcar` when a tool is missing): Packer from HashiCorp's release server,
//! verified against the release's SHA256SUMS and that file's OpenPGP signature by
//! HashiCorp's pinned key; ansible-core, ansible-lint and yamllint into a Python
//! virtual environment with pip. Tools only the system's package manager provides
//! are never installed here: the caller gets them back to name in one command line.
//!
//! Where things go is `toolchain`'s layout. Downloads and signature checks are the
//! same code that fetches Flatcar images (`flatcar::download`, `flatcar::openpgp`).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

use crate::net::download::{Fetched, HttpClient, Observer, ProgressStyle};
use crate::net::openpgp::{Fingerprint, Keyring};
use crate::toolchain::layout::{self, Component, Record};
use crate::toolchain::tools::{self, PackageManager, Probe, Purpose, Tool, Version, TOOLS};
use crate::vm::streaming;
use crate::{fsx, hex};

/// The Packer installed by default. 1.11 loads plugins only from PACKER_PLUGIN_PATH
/// (or the user's plugin directory), so the project's plugins stay in `.local/`.
pub const DEFAULT_PACKER_VERSION: &str = "1.11.2";
pub const DEFAULT_HASHICORP_RELEASES: &str = "https://releases.hashicorp.com";
/// HashiCorp's published release key ("HashiCorp Security (HashiCorp Package
/// Signing) <security+packaging@hashicorp.com>").
pub const HASHICORP_KEY_URL: &str = "https://www.hashicorp.com/.well-known/pgp-key.txt";
/// Its primary key fingerprint, as HashiCorp publishes it on
/// https://www.hashicorp.com/security (key ID 72D7468F, in use since the 2021
/// rotation, HCSEC-2021-12).
pub const HASHICORP_KEY_FINGERPRINT: &str = "C874011F0AB405110D02105534365D9472D7468F";
/// The ansible-core series pip installs: 2.18 runs on Python 3.11-3.13 (Debian 12's
/// python3 is 3.11) and manages targets with Python >= 3.8 (the PyPy 3.10 the setup
/// role bootstraps on Flatcar).
pub const ANSIBLE_CORE_SERIES: &str = "2.18";
/// How often `validate` retries a transient network failure while installing.
pub const DEFAULT_RETRIES: u32 = 4;

/// Where the toolchain comes from: every URL a mirror can replace.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Installing tools into .local/")]
pub struct InstallOptions {
    /// The Packer version to install.
    #[arg(
        long,
        value_name = "VERSION",
        env = "FLATCAR_PACKER_VERSION",
        default_value = DEFAULT_PACKER_VERSION,
        value_parser = parse_release_version
    )]
    pub packer_version: String,
    /// HashiCorp's release server, or a mirror with its `packer/<version>/` layout.
    #[arg(
        long,
        value_name = "URL",
        env = "FLATCAR_HASHICORP_RELEASES",
        default_value = DEFAULT_HASHICORP_RELEASES
    )]
    pub hashicorp_releases: String,
    /// Where to fetch HashiCorp's release key from; its fingerprint must be the pinned one.
    #[arg(
        long,
        value_name = "URL",
        env = "FLATCAR_HASHICORP_KEY_URL",
        default_value = HASHICORP_KEY_URL
    )]
    pub hashicorp_key_url: String,
    /// Trust the armored public key in FILE instead of HashiCorp's pinned key (a re-signing mirror).
    #[arg(long, value_name = "FILE", env = "FLATCAR_HASHICORP_KEY")]
    pub hashicorp_key: Option<PathBuf>,
    /// Python package index for pip (its --index-url) [default: pip's own configuration, PyPI].
    #[arg(long, value_name = "URL", env = "FLATCAR_PYPI_INDEX")]
    pub pypi_index: Option<String>,
}

impl Default for InstallOptions {
    fn default() -> InstallOptions {
        InstallOptions {
            packer_version: DEFAULT_PACKER_VERSION.to_owned(),
            hashicorp_releases: DEFAULT_HASHICORP_RELEASES.to_owned(),
            hashicorp_key_url: HASHICORP_KEY_URL.to_owned(),
            hashicorp_key: None,
            pypi_index: None,
        }
    }
}

/// `MAJOR.MINOR.PATCH`, digits only: the form of HashiCorp's release directories.
fn parse_release_version(text: &str) -> Result<String, String> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        Ok(text.to_owned())
    } else {
        Err(format!("`{text}` is not a release version like 1.11.2"))
    }
}

/// What pip is asked for.
pub fn python_requirements() -> Vec<String> {
    vec![
        format!("ansible-core=={ANSIBLE_CORE_SERIES}.*"),
        "ansible-lint".to_owned(),
        "yamllint".to_owned(),
    ]
}

impl Component {
    /// The tools installing this component needs first.
    fn prerequisites(self) -> &'static [&'static str] {
        match self {
            Component::Packer => &["unzip", "gpg", "gpgv"],
            Component::PythonVenv => &["python3"],
        }
    }
}

/// HashiCorp's name for a platform, `<os>_<arch>`, from Rust's names for the host
/// (`std::env::consts::OS` and `ARCH`).
pub fn packer_platform(os: &str, arch: &str) -> Result<String, String> {
    let hashicorp_os = match os {
        "linux" => Some("linux"),
        "macos" => Some("darwin"),
        "freebsd" => Some("freebsd"),
        "openbsd" => Some("openbsd"),
        "netbsd" => Some("netbsd"),
        "solaris" | "illumos" => Some("solaris"),
        _ => None,
    };
    let hashicorp_arch = match arch {
        "x86_64" => Some("amd64"),
        "aarch64" => Some("arm64"),
        "x86" => Some("386"),
        "arm" => Some("arm"),
        _ => None,
    };
    match (hashicorp_os, hashicorp_arch) {
        (Some(os), Some(arch)) => Ok(format!("{os}_{arch}")),
        _ => Err(format!(
            "cannot install Packer on {os}/{arch}: HashiCorp's release archives that this \
             installer knows are for Linux, macOS, FreeBSD, OpenBSD, NetBSD and Solaris on \
             x86_64, aarch64, x86 and arm. Install packer with your system's package manager \
             instead, or run with --no-install"
        )),
    }
}

/// The `<hex>  <file>` lines of a SHA256SUMS file, by file name.
pub fn parse_sha256sums(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut sums = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(hex), Some(name), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(format!(
                "line {}: expected `<sha256>  <file>`, found `{line}`",
                index + 1
            ));
        };
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("line {}: `{hex}` is not a SHA-256", index + 1));
        }
        // `sha256sum` marks binary mode with `*` before the name.
        let name = name.trim_start_matches('*');
        sums.insert(name.to_owned(), hex.to_ascii_lowercase());
    }
    Ok(sums)
}

/// What to do for the tools of one purpose.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Components to install, each once.
    pub install: Vec<Component>,
    /// Components that cannot be installed because these tools are missing.
    pub blocked: Vec<(Component, Vec<&'static str>)>,
    /// Tools only the system's package manager provides (some are prerequisites of
    /// a blocked component), in the order of `TOOLS`.
    pub from_package_manager: Vec<&'static str>,
}

/// The requested versions an installed component must match to be kept.
pub struct Wanted<'a> {
    pub packer_version: &'a str,
    pub ansible_core_series: &'a str,
}

impl Wanted<'_> {
    /// Whether the installed component of `record` is the version asked for.
    fn accepts(&self, record: &Record) -> bool {
        match record.component {
            Component::Packer => record.version == self.packer_version,
            Component::PythonVenv => record
                .version
                .starts_with(&format!("{}.", self.ansible_core_series)),
        }
    }
}

/// Decides what to install, given the tools wanted, how they probed (wanted tools
/// and every component's prerequisites), the toolchain directory and the records
/// of what is installed there. A usable tool from PATH is kept; a project-local one
/// is replaced when its version is not the one asked for.
pub fn plan(
    wanted: &[&'static Tool],
    probes: &BTreeMap<&str, Probe>,
    toolchain_dir: &Path,
    records: &BTreeMap<Component, Record>,
    versions: &Wanted<'_>,
) -> Plan {
    let mut components = BTreeSet::new();
    let mut from_package_manager = BTreeSet::new();
    for tool in wanted {
        let Some(probe) = probes.get(tool.program) else {
            continue;
        };
        match tool.component() {
            Some(component) => {
                let local = probe
                    .path
                    .as_ref()
                    .is_some_and(|p| p.starts_with(toolchain_dir));
                let outdated = local
                    && records
                        .get(&component)
                        .is_some_and(|r| !versions.accepts(r));
                if !probe.usable() || outdated {
                    components.insert(component);
                }
            }
            None if !probe.usable() && !tool.optional => {
                from_package_manager.insert(tool.program);
            }
            None => {}
        }
    }
    let mut plan = Plan::default();
    for component in components {
        let missing: Vec<&'static str> = component
            .prerequisites()
            .iter()
            .copied()
            .filter(|p| !probes.get(p).is_some_and(Probe::usable))
            .collect();
        if missing.is_empty() {
            plan.install.push(component);
        } else {
            from_package_manager.extend(missing.iter().copied());
            plan.blocked.push((component, missing));
        }
    }
    plan.from_package_manager = TOOLS
        .iter()
        .map(|t| t.program)
        .filter(|p| from_package_manager.contains(p))
        .collect();
    plan
}

/// The one line that installs `programs` with the package manager, or a sentence
/// naming them when this system's package manager is unknown.
pub fn package_manager_line(manager: Option<PackageManager>, programs: &[&'static str]) -> String {
    let tools: Vec<&Tool> = programs.iter().map(|p| tools::tool(p)).collect();
    let unpackaged: Vec<&str> = tools
        .iter()
        .filter(|t| manager.and_then(|m| t.package(m)).is_none())
        .map(|t| t.program)
        .collect();
    let command = manager.and_then(|m| tools::package_command(m, &tools));
    match (command, unpackaged.is_empty()) {
        (Some(command), true) => command,
        (Some(command), false) => {
            format!("{command}; and install {} by hand", unpackaged.join(", "))
        }
        (None, _) => format!(
            "install {} with your system's package manager",
            unpackaged.join(", ")
        ),
    }
}

/// What an install run did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub installed: Vec<Record>,
    pub blocked: Vec<(Component, Vec<&'static str>)>,
    /// Tools left to the system's package manager.
    pub from_package_manager: Vec<&'static str>,
}

/// Installs the components that the tools of `purpose` (all tools: `None`) need
/// and that are missing, too old, or a project-local install of another version.
/// Returns what it installed and what only the package manager can provide.
pub fn run(
    sh: &Shell,
    purpose: Option<Purpose>,
    options: &InstallOptions,
    retries: u32,
) -> anyhow::Result<Outcome> {
    let wanted: Vec<&'static Tool> = TOOLS
        .iter()
        .filter(|t| purpose.is_none_or(|p| t.purposes.contains(&p)))
        .collect();
    let mut probes: BTreeMap<&str, Probe> = tools::probe_all(sh, &wanted)
        .into_iter()
        .map(|p| (p.tool, p))
        .collect();
    let root = layout::dir();
    let records: BTreeMap<Component, Record> = Component::ALL
        .into_iter()
        .filter_map(|c| Some((c, c.record(&root)?)))
        .collect();
    let versions = Wanted {
        packer_version: &options.packer_version,
        ansible_core_series: ANSIBLE_CORE_SERIES,
    };
    let mut plan = plan(&wanted, &probes, &root, &records, &versions);
    if !plan.install.is_empty() || !plan.blocked.is_empty() {
        // Something is to be installed: now its prerequisites matter.
        let prerequisites: Vec<&'static Tool> = Component::ALL
            .iter()
            .flat_map(|c| c.prerequisites())
            .filter(|p| !probes.contains_key(*p))
            .map(|p| tools::tool(p))
            .collect();
        probes.extend(
            tools::probe_all(sh, &prerequisites)
                .into_iter()
                .map(|p| (p.tool, p)),
        );
        plan = self::plan(&wanted, &probes, &root, &records, &versions);
    }
    let mut outcome = Outcome {
        installed: Vec::new(),
        blocked: plan.blocked.clone(),
        from_package_manager: plan.from_package_manager.clone(),
    };
    if plan.install.is_empty() {
        return Ok(outcome);
    }

    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let _lock = fsx::lock_dir(&root)?;
    remove_leftovers(&root)?;
    let client = HttpClient::new(retries, ProgressStyle::for_stderr(false));
    for component in &plan.install {
        let what = match component {
            Component::Packer => format!("Packer {}", options.packer_version),
            Component::PythonVenv => python_requirements().join(" "),
        };
        eprintln!("Installing {what} into {}", root.display());
        let record = match component {
            Component::Packer => install_packer(sh, &root, options, &client)
                .with_context(|| format!("installing Packer {}", options.packer_version))?,
            Component::PythonVenv => {
                install_python_venv(sh, &root, options).with_context(|| {
                    format!("installing ansible-core {ANSIBLE_CORE_SERIES} in a Python venv")
                })?
            }
        };
        write_record(&root, &record)?;
        let what = match component {
            Component::Packer => format!("Packer {}", record.version),
            Component::PythonVenv => {
                format!("ansible-core {}, ansible-lint and yamllint", record.version)
            }
        };
        eprintln!(
            "Installed {what} into {}",
            component.bin_dir(&root).display()
        );
        outcome.installed.push(record);
    }
    layout::put_first_on_path();
    Ok(outcome)
}

/// For `validate` and `build-flatcar`: installs what `purpose` needs from the
/// toolchain. Tools from the package manager are left to the caller's own report.
pub fn install_missing(
    sh: &Shell,
    purpose: Purpose,
    options: &InstallOptions,
    retries: u32,
) -> anyhow::Result<()> {
    // The common case costs no probe (a cached `validate` takes milliseconds): every
    // installable tool is found, and a project-local one is the version asked for.
    // A tool that is found but too old is left to the caller's report.
    let root = layout::dir();
    let versions = Wanted {
        packer_version: &options.packer_version,
        ansible_core_series: ANSIBLE_CORE_SERIES,
    };
    let all_found = TOOLS
        .iter()
        .filter(|t| t.purposes.contains(&purpose))
        .filter_map(|t| Some((t, t.component()?)))
        .all(
            |(tool, component)| match tools::find_program(tool.program) {
                None => false,
                Some(path) => {
                    !path.starts_with(&root)
                        || component
                            .record(&root)
                            .is_some_and(|r| versions.accepts(&r))
                }
            },
        );
    if all_found {
        return Ok(());
    }
    let outcome = run(sh, Some(purpose), options, retries)
        .context("setting up the project-local tools failed (--no-install skips this step)")?;
    let manager = tools::detect_package_manager();
    for (component, missing) in &outcome.blocked {
        eprintln!(
            "warning: {} cannot be installed into {} without {}: {}",
            component.name(),
            layout::dir().display(),
            missing.join(", "),
            package_manager_line(manager, missing)
        );
    }
    Ok(())
}

/// Removes the work directories of installs that were interrupted.
fn remove_leftovers(root: &Path) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(root).with_context(|| format!("listing {}", root.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", root.display()))?;
        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            eprintln!(
                "Removing {}, left by an interrupted install",
                entry.path().display()
            );
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Makes the component's record the last thing an install writes.
fn write_record(root: &Path, record: &Record) -> anyhow::Result<()> {
    let path = record.component.record_path(root);
    let mut json = serde_json::to_vec_pretty(record).context("encoding the install record")?;
    json.push(b'\n');
    fsx::write_atomically(&path, &json)
}

/// Forgets a component before its files change, so that an install killed half-way
/// leaves a component without a record, which nothing uses.
fn forget(root: &Path, component: Component) -> anyhow::Result<()> {
    fsx::remove_if_present(&component.record_path(root))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Hashes a download as it is written.
struct Sha256Observer(Sha256);

impl Observer for Sha256Observer {
    fn bytes(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        self.0.update(chunk);
        Ok(())
    }

    fn restart(&mut self) -> anyhow::Result<()> {
        self.0 = Sha256::new();
        Ok(())
    }
}

fn get_small(client: &HttpClient, url: &str, what: &str) -> anyhow::Result<Vec<u8>> {
    match client.get_small(url)? {
        Fetched::Found(bytes) => Ok(bytes),
        Fetched::NotFound(status) => bail!("{url} answered {status}: {what}"),
    }
}

/// HashiCorp's key (fetched and checked against the pinned fingerprint), or the
/// key the user named.
fn hashicorp_keyring(
    sh: &Shell,
    client: &HttpClient,
    options: &InstallOptions,
) -> anyhow::Result<Keyring> {
    match &options.hashicorp_key {
        Some(file) => {
            let armored =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            Keyring::from_armored(sh, &armored, &file.display().to_string(), None)
        }
        None => {
            let url = &options.hashicorp_key_url;
            let armored = get_small(client, url, "no HashiCorp release key there")?;
            let pinned: Fingerprint = HASHICORP_KEY_FINGERPRINT
                .parse()
                .map_err(|e: String| anyhow::anyhow!(e))?;
            Keyring::from_armored(sh, &armored, url, Some(&pinned))
        }
    }
}

/// Downloads, verifies and unpacks Packer into a work directory next to its
/// destination, installs its plugins there for Packer >= 1.7, then renames both
/// into place. Returns the record to write.
fn install_packer(
    sh: &Shell,
    root: &Path,
    options: &InstallOptions,
    client: &HttpClient,
) -> anyhow::Result<Record> {
    let version = &options.packer_version;
    let platform = packer_platform(std::env::consts::OS, std::env::consts::ARCH)
        .map_err(|e| anyhow::anyhow!(e))?;
    let base = format!(
        "{}/packer/{version}",
        options.hashicorp_releases.trim_end_matches('/')
    );
    let archive = format!("packer_{version}_{platform}.zip");
    let sums_name = format!("packer_{version}_SHA256SUMS");
    let sums_url = format!("{base}/{sums_name}");
    let archive_url = format!("{base}/{archive}");
    // Removed on every error; a killed run leaves it for `remove_leftovers`.
    let work = tempfile::Builder::new()
        .prefix(".tmp-packer-")
        .tempdir_in(root)
        .with_context(|| format!("creating a work directory in {}", root.display()))?;
    let work_dir = work.path();

    // The checksums and their signature first: nothing large is fetched for a
    // release that is not signed by the trusted key.
    let keyring = hashicorp_keyring(sh, client, options)?;
    eprintln!("Checking {sums_url} and its signature");
    let sums = get_small(
        client,
        &sums_url,
        &format!("is {version} a Packer release?"),
    )?;
    let signature = get_small(
        client,
        &format!("{sums_url}.sig"),
        "the release's checksums are not signed",
    )?;
    let sums_path = work_dir.join(&sums_name);
    let signature_path = work_dir.join(format!("{sums_name}.sig"));
    std::fs::write(&sums_path, &sums)
        .with_context(|| format!("writing {}", sums_path.display()))?;
    std::fs::write(&signature_path, &signature)
        .with_context(|| format!("writing {}", signature_path.display()))?;
    let good = keyring
        .verify_detached(&signature_path, &sums_path)
        .with_context(|| {
            format!(
                "the signature of {sums_url} does not check out against {}; nothing was downloaded or installed",
                keyring.certificate().describe()
            )
        })?;
    let sums = parse_sha256sums(&String::from_utf8_lossy(&sums))
        .map_err(|e| anyhow::anyhow!("{sums_url}: {e}"))?;
    let Some(expected) = sums.get(&archive) else {
        let platforms: Vec<String> = sums
            .keys()
            .filter_map(|name| {
                name.strip_prefix(&format!("packer_{version}_"))
                    .and_then(|rest| rest.strip_suffix(".zip"))
                    .map(str::to_owned)
            })
            .collect();
        bail!(
            "{sums_url} lists no {archive}: Packer {version} has no build for {platform} (it has: {})",
            platforms.join(", ")
        );
    };

    let zip = work_dir.join(&archive);
    let mut observer = Sha256Observer(Sha256::new());
    match client.download(&archive_url, &zip, &mut observer)? {
        Fetched::Found(_) => {}
        Fetched::NotFound(status) => {
            bail!("{archive_url} answered {status}, although {sums_name} lists it")
        }
    }
    let actual = hex::encode(&observer.0.finalize());
    if &actual != expected {
        fsx::remove_if_present(&zip)?;
        bail!(
            "{archive_url}: its SHA-256 is {actual}, but the signed {sums_name} says {expected}; \
             the archive was deleted and nothing was installed"
        );
    }

    let unzip = tools::find_program("unzip").context("unzip is not installed")?;
    let unpacked = work_dir.join("unpacked");
    let out = cmd!(sh, "{unzip} -q -o {zip} packer -d {unpacked}")
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("running {}", unzip.display()))?;
    if !out.status.success() {
        bail!(
            "unpacking `packer` from {archive} failed: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let packer = unpacked.join("packer");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&packer, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", packer.display()))?;
    }
    let said = cmd!(sh, "{packer} version")
        .env("CHECKPOINT_DISABLE", "1")
        .quiet()
        .ignore_status()
        .read()
        .unwrap_or_default();
    let found = tools::parse_version(&said);
    let asked = tools::parse_version(version);
    if found != asked {
        bail!(
            "the packer in {archive} says it is version {}, not {version}",
            found.map_or_else(|| format!("`{}`", said.trim()), |v| v.to_string())
        );
    }

    let plugins = work_dir.join("packer-plugins");
    if found.is_some_and(needs_plugins) {
        std::fs::create_dir_all(&plugins)
            .with_context(|| format!("creating {}", plugins.display()))?;
        for plugin in tools::PACKER_PLUGINS {
            eprintln!("Installing the Packer plugin {plugin}");
            let out = cmd!(sh, "{packer} plugins install {plugin}")
                .env("CHECKPOINT_DISABLE", "1")
                .env(layout::PACKER_PLUGIN_PATH, &plugins)
                .quiet()
                .ignore_status()
                .output()
                .with_context(|| format!("running {} plugins install", packer.display()))?;
            if !out.status.success() {
                bail!(
                    "`packer plugins install {plugin}` failed (Packer fetches plugins from GitHub):\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    // Into place: forget the old install first, so that a kill from here on leaves
    // no record, then rename (same file system, atomic per file).
    forget(root, Component::Packer)?;
    let bin = Component::Packer.bin_dir(root);
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    let installed_plugins = layout::packer_plugins_dir(root);
    if installed_plugins.exists() {
        std::fs::remove_dir_all(&installed_plugins)
            .with_context(|| format!("removing {}", installed_plugins.display()))?;
    }
    if plugins.is_dir() {
        std::fs::rename(&plugins, &installed_plugins).with_context(|| {
            format!(
                "renaming {} to {}",
                plugins.display(),
                installed_plugins.display()
            )
        })?;
    }
    fsx::rename_durably(&packer, &bin.join("packer"))?;
    Ok(Record {
        component: Component::Packer,
        version: version.clone(),
        source: archive_url,
        sha256: Some(actual),
        signed_by: Some(good.primary_key.to_string()),
        requirements: Vec::new(),
        installed_at: now(),
    })
}

/// Packer 1.7 moved the qemu builder, the ansible provisioner and the vagrant
/// post-processor out into plugins.
fn needs_plugins(version: Version) -> bool {
    (version.major, version.minor) >= (1, 7)
}

/// Creates the virtual environment in place (a venv's scripts name its absolute
/// path, so it cannot be built elsewhere and renamed) and has pip install the
/// requirements. Whatever fails, the half-made venv is removed.
fn install_python_venv(
    sh: &Shell,
    root: &Path,
    options: &InstallOptions,
) -> anyhow::Result<Record> {
    let python3 = tools::find_on_path("python3").context("python3 is not installed")?;
    let venv = layout::venv_dir(root);
    forget(root, Component::PythonVenv)?;
    if venv.exists() {
        std::fs::remove_dir_all(&venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    let result = fill_venv(sh, &python3, &venv, options);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&venv);
    }
    let version = result?;
    Ok(Record {
        component: Component::PythonVenv,
        version: version.to_string(),
        source: options
            .pypi_index
            .clone()
            .unwrap_or_else(|| "pip's configured index (PyPI by default)".to_owned()),
        sha256: None,
        signed_by: None,
        requirements: python_requirements(),
        installed_at: now(),
    })
}

/// Returns the ansible-core version that ended up in the venv.
fn fill_venv(
    sh: &Shell,
    python3: &Path,
    venv: &Path,
    options: &InstallOptions,
) -> anyhow::Result<Version> {
    eprintln!(
        "Creating a Python virtual environment in {}",
        venv.display()
    );
    let out = cmd!(sh, "{python3} -m venv {venv}")
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("running {} -m venv", python3.display()))?;
    if !out.status.success() {
        bail!(
            "`{} -m venv {}` failed: {}{}",
            python3.display(),
            venv.display(),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let requirements = python_requirements();
    let mut args: Vec<OsString> = ["-m", "pip", "install", "--disable-pip-version-check"]
        .into_iter()
        .map(OsString::from)
        .collect();
    args.push("--no-input".into());
    if let Some(index) = &options.pypi_index {
        args.push("--index-url".into());
        args.push(index.into());
    }
    args.extend(requirements.iter().map(OsString::from));
    eprintln!(
        "Installing {} with pip from {}",
        requirements.join(" "),
        options
            .pypi_index
            .as_deref()
            .unwrap_or("pip's configured index")
    );
    let python = venv.join("bin").join("python");
    let venv_parent = venv.parent().unwrap_or(venv);
    let finished = streaming::run(&python, &args, venv_parent, &[], Some("pip"), None)?;
    if !finished.success {
        bail!(
            "pip could not install {}; its output:\n{}",
            requirements.join(" "),
            streaming::tail(&finished.output, 20)
        );
    }
    let bin = venv.join("bin");
    for program in Component::PythonVenv.programs() {
        if !fsx::is_executable(&bin.join(program)) {
            bail!("pip finished, but {} has no {program}", bin.display());
        }
    }
    let playbook = bin.join("ansible-playbook");
    let said = cmd!(sh, "{playbook} --version")
        .quiet()
        .ignore_status()
        .read()
        .unwrap_or_default();
    let version = tools::parse_version(&said)
        .with_context(|| format!("`{} --version` printed no version", playbook.display()))?;
    if !version
        .to_string()
        .starts_with(&format!("{ANSIBLE_CORE_SERIES}."))
    {
        bail!("pip installed ansible-core {version}, not {ANSIBLE_CORE_SERIES}.*");
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toolchain::tools::Status;

    #[test]
    fn platforms_map_to_hashicorp_names() {
        assert_eq!(packer_platform("linux", "x86_64").unwrap(), "linux_amd64");
        assert_eq!(packer_platform("linux", "aarch64").unwrap(), "linux_arm64");
        assert_eq!(packer_platform("macos", "aarch64").unwrap(), "darwin_arm64");
        assert_eq!(packer_platform("freebsd", "x86").unwrap(), "freebsd_386");
    }

    #[test]
    fn an_unsupported_platform_is_named_with_what_to_do() {
        let err = packer_platform("linux", "riscv64").unwrap_err();
        assert!(err.contains("linux/riscv64"), "{err}");
        assert!(err.contains("package manager"), "{err}");
        assert!(err.contains("--no-install"), "{err}");
        let err = packer_platform("windows", "x86_64").unwrap_err();
        assert!(err.contains("windows/x86_64"), "{err}");
    }

    #[test]
    fn release_versions_are_three_numbers() {
        assert_eq!(parse_release_version("1.11.2").unwrap(), "1.11.2");
        assert!(parse_release_version("1.11").is_err());
        assert!(parse_release_version("v1.11.2").is_err());
        assert!(parse_release_version("1.11.2/../x").is_err());
    }

    #[test]
    fn sha256sums_are_read_by_file_name() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let text =
            format!("{a}  packer_1.11.2_darwin_arm64.zip\n{b} *packer_1.11.2_linux_amd64.zip\n\n");
        let sums = parse_sha256sums(&text).unwrap();
        assert_eq!(sums["packer_1.11.2_darwin_arm64.zip"], a);
        assert_eq!(sums["packer_1.11.2_linux_amd64.zip"], "b".repeat(64));
        assert!(parse_sha256sums("xyz  f.zip\n")
            .unwrap_err()
            .contains("not a SHA-256"));
        assert!(parse_sha256sums(&format!("{a}\n"))
            .unwrap_err()
            .contains("line 1"));
    }

    fn probe(program: &'static str, status: Status, path: Option<&str>) -> (&'static str, Probe) {
        (
            program,
            Probe {
                tool: program,
                path: path.map(PathBuf::from),
                version: None,
                minimum: None,
                optional: tools::tool(program).optional,
                status,
                hint: None,
            },
        )
    }

    fn record(component: Component, version: &str) -> Record {
        Record {
            component,
            version: version.into(),
            source: String::new(),
            sha256: None,
            signed_by: None,
            requirements: Vec::new(),
            installed_at: 0,
        }
    }

    const WANTED: Wanted<'static> = Wanted {
        packer_version: "1.11.2",
        ansible_core_series: "2.18",
    };

    fn validate_tools() -> Vec<&'static Tool> {
        TOOLS
            .iter()
            .filter(|t| t.purposes.contains(&Purpose::Validate))
            .collect()
    }

    fn ready() -> BTreeMap<&'static str, Probe> {
        TOOLS
            .iter()
            .map(|t| probe(t.program, Status::Ok, Some("/usr/bin/x")))
            .collect()
    }

    #[test]
    fn nothing_to_do_when_every_tool_is_usable() {
        let plan = plan(
            &validate_tools(),
            &ready(),
            Path::new("/r/.local"),
            &BTreeMap::new(),
            &WANTED,
        );
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn missing_installable_tools_become_components_and_the_rest_one_package_list() {
        let mut probes = ready();
        probes.extend([
            probe("packer", Status::Missing, None),
            probe(
                "ansible-playbook",
                Status::TooOld,
                Some("/usr/bin/ansible-playbook"),
            ),
            probe("ignition-validate", Status::Missing, None),
        ]);
        let all: Vec<&Tool> = TOOLS.iter().collect();
        let plan = plan(
            &all,
            &probes,
            Path::new("/r/.local"),
            &BTreeMap::new(),
            &WANTED,
        );
        assert_eq!(
            plan.install,
            [Component::Packer, Component::PythonVenv],
            "each component once, although three tools come from the venv"
        );
        assert_eq!(plan.from_package_manager, ["ignition-validate"]);
        assert!(plan.blocked.is_empty());
    }

    #[test]
    fn a_missing_prerequisite_blocks_its_component_and_joins_the_package_list() {
        let mut probes = ready();
        probes.extend([
            probe("packer", Status::Missing, None),
            probe("unzip", Status::Missing, None),
            probe("shellcheck", Status::Missing, None),
        ]);
        let all: Vec<&Tool> = TOOLS.iter().collect();
        let plan = plan(
            &all,
            &probes,
            Path::new("/r/.local"),
            &BTreeMap::new(),
            &WANTED,
        );
        assert!(plan.install.is_empty());
        assert_eq!(plan.blocked, [(Component::Packer, vec!["unzip"])]);
        assert_eq!(plan.from_package_manager, ["shellcheck", "unzip"]);
    }

    #[test]
    fn a_project_local_install_of_another_version_is_replaced_a_path_one_is_kept() {
        let mut probes = ready();
        probes.extend([probe("packer", Status::Ok, Some("/r/.local/bin/packer"))]);
        let records = BTreeMap::from([
            (Component::Packer, record(Component::Packer, "1.10.0")),
            (
                Component::PythonVenv,
                record(Component::PythonVenv, "2.18.3"),
            ),
        ]);
        let tools = validate_tools();
        let local = plan(&tools, &probes, Path::new("/r/.local"), &records, &WANTED);
        assert_eq!(local.install, [Component::Packer]);

        probes.extend([probe("packer", Status::Ok, Some("/usr/bin/packer"))]);
        let on_path = plan(&tools, &probes, Path::new("/r/.local"), &records, &WANTED);
        assert!(on_path.install.is_empty(), "{on_path:?}");
    }

    #[test]
    fn one_package_manager_line_for_everything_missing() {
        assert_eq!(
            package_manager_line(
                Some(PackageManager::Apt),
                &["ignition-validate", "shellcheck", "vagrant", "virsh"]
            ),
            "sudo apt-get install ignition shellcheck vagrant vagrant-libvirt libvirt-clients libvirt-daemon-system"
        );
        assert_eq!(
            package_manager_line(Some(PackageManager::Dnf), &["gpg", "gpgv"]),
            "sudo dnf install gnupg2",
            "a package that provides two tools is named once"
        );
        assert_eq!(
            package_manager_line(
                Some(PackageManager::Pacman),
                &["shellcheck", "ignition-validate"]
            ),
            "sudo pacman -S shellcheck; and install ignition-validate by hand"
        );
        assert_eq!(
            package_manager_line(None, &["shellcheck"]),
            "install shellcheck with your system's package manager"
        );
    }
}
