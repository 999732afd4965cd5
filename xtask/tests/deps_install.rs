//! `cargo xtask deps --install` and the install step of `validate`, against a
//! loopback server that serves a Packer-shaped release (a zip holding a small
//! `packer`, its SHA256SUMS and a detached signature by a key generated here), with
//! a PATH that lacks the tools and a toolchain directory of the test's own
//! (FLATCAR_TOOLCHAIN_DIR). Every fault is a test: a wrong checksum, a signature by
//! another key, no network, pip failing, a leftover of an interrupted install.
//!
//! The tests that install ansible-core from the real package index are ignored by
//! default (`cargo test --test deps_install -- --ignored` runs them): the default
//! suite sends traffic to loopback only.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use xtask::testbed::signer::{with_suffix, Form, Signer};

use support::{both, copy_of_repository, path_without, report, stderr, stdout, xtask, FileServer};

/// The version the stand-in answers with: below 1.7, so no plugins are installed
/// (that step needs GitHub).
const VERSION: &str = "1.6.6";

/// HashiCorp's name for this machine's platform.
fn platform() -> String {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("{os}_{arch}")
}

fn archive_name() -> String {
    format!("packer_{VERSION}_{}.zip", platform())
}

const STAND_IN: &str = "#!/bin/sh\n\
# A Packer-shaped stand-in: it answers `version` the way Packer 1.6.6 does.\n\
case \"$1\" in\n\
  version) echo \"Packer v1.6.6\" ;;\n\
  *) echo \"stand-in packer cannot $1\" >&2; exit 1 ;;\n\
esac\n";

// --- a zip file, written by hand (stored entries, no compression) -------------

fn crc32(bytes: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (n, entry) in table.iter_mut().enumerate() {
        let mut c = n as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *entry = c;
    }
    !bytes.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// A zip archive of `(name, content, unix mode)` entries, as `unzip` reads them.
fn zip(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, content, mode) in entries {
        let offset = out.len() as u32;
        let crc = crc32(content);
        let size = content.len() as u32;
        let common = |buf: &mut Vec<u8>| {
            buf.extend(20u16.to_le_bytes()); // version needed: 2.0
            buf.extend(0u16.to_le_bytes()); // flags
            buf.extend(0u16.to_le_bytes()); // method: stored
            buf.extend(0u16.to_le_bytes()); // time
            buf.extend(0x21u16.to_le_bytes()); // date: 1980-01-01
            buf.extend(crc.to_le_bytes());
            buf.extend(size.to_le_bytes());
            buf.extend(size.to_le_bytes());
            buf.extend((name.len() as u16).to_le_bytes());
            buf.extend(0u16.to_le_bytes()); // extra field length
        };
        out.extend(0x0403_4b50u32.to_le_bytes());
        common(&mut out);
        out.extend(name.as_bytes());
        out.extend(*content);

        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend((3u16 << 8 | 20).to_le_bytes()); // made by: Unix, 2.0
        common(&mut central);
        central.extend(0u16.to_le_bytes()); // comment length
        central.extend(0u16.to_le_bytes()); // disk
        central.extend(0u16.to_le_bytes()); // internal attributes
        central.extend(((0o100000 | mode) << 16).to_le_bytes());
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let central_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]); // disk numbers
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(central_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, bytes).unwrap();
    let out = Command::new("sha256sum").arg(&file).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

// --- the release tree and the runs ------------------------------------------

/// One test's world: a served release tree, the trusted key's file, a toolchain
/// directory, and a PATH without the tools the test wants missing.
struct Setup {
    dir: tempfile::TempDir,
    /// The release key.
    signer: Signer,
    /// Another key, for the wrong-key case.
    other: Signer,
    server: FileServer,
    key_file: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("www")).unwrap();
        let signer = Signer::new("Packer Test Releases <releases@example.invalid>").unwrap();
        let other = Signer::new("Someone Else <other@example.invalid>").unwrap();
        let key_file = dir.path().join("release-key.asc");
        signer.write_public_key(&key_file, true).unwrap();
        let server = FileServer::start(&dir.path().join("www"));
        Setup {
            dir,
            signer,
            other,
            server,
            key_file,
        }
    }

    fn release_dir(&self) -> PathBuf {
        self.dir.path().join("www/packer").join(VERSION)
    }

    fn sums_path(&self) -> PathBuf {
        self.release_dir()
            .join(format!("packer_{VERSION}_SHA256SUMS"))
    }

    /// Serves a release whose archive holds `packer` with `script` as its content,
    /// its SHA256SUMS (listing `listed_sha256` for it, the real one by default) and
    /// the SHA256SUMS signed by `key`.
    fn publish(&self, script: &str, listed_sha256: Option<&str>, key: &Signer) {
        self.publish_entry(script, 0o755, listed_sha256, key);
    }

    /// As `publish`, with the `packer` entry's Unix mode (0o120777: a symlink to
    /// the path `script`).
    fn publish_entry(&self, script: &str, mode: u32, listed_sha256: Option<&str>, key: &Signer) {
        let dir = self.release_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let archive = zip(&[
            ("packer", script.as_bytes(), mode),
            ("LICENSE.txt", b"test release\n", 0o644),
        ]);
        std::fs::write(dir.join(archive_name()), &archive).unwrap();
        let real = sha256_hex(&archive);
        let sums = format!(
            "{}  packer_{VERSION}_darwin_arm64.zip\n{}  {}\n",
            "0".repeat(64),
            listed_sha256.unwrap_or(&real),
            archive_name()
        );
        std::fs::write(self.sums_path(), sums).unwrap();
        let sums = self.sums_path();
        key.sign(Form::Detached, &sums, &with_suffix(&sums, ".sig"))
            .unwrap();
    }

    fn toolchain(&self) -> PathBuf {
        self.dir.path().join("toolchain")
    }

    /// `cargo xtask <args>` with this setup's toolchain directory and PATH `path`
    /// (the whole PATH when `None`), the loopback release server and the test key.
    fn xtask(&self, args: &[&str], path: Option<&Path>) -> Command {
        let mut command = xtask();
        command
            .args(args)
            .env("FLATCAR_TOOLCHAIN_DIR", self.toolchain())
            .env("FLATCAR_HASHICORP_RELEASES", self.server.url())
            .env("FLATCAR_HASHICORP_KEY", &self.key_file)
            .env("FLATCAR_PACKER_VERSION", VERSION)
            .env("FLATCAR_RETRIES", "0")
            .env_remove("FLATCAR_HASHICORP_KEY_URL")
            .env_remove("FLATCAR_PYPI_INDEX");
        if let Some(path) = path {
            command.env("PATH", path);
        }
        command
    }

    fn run(&self, args: &[&str], path: Option<&Path>) -> Output {
        self.xtask(args, path).output().unwrap()
    }

    fn requests_for(&self, suffix: &str) -> usize {
        self.server.requests_for(suffix).len()
    }

    /// The `deps --json` entry of `tool`.
    fn deps_entry(&self, purpose: &str, tool: &str, path: Option<&Path>) -> Value {
        let out = self.run(&["deps", "--format", "json", "--for", purpose], path);
        let r = report(&out);
        r["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tool"] == tool)
            .unwrap_or_else(|| panic!("no {tool} in {r:#}"))
            .clone()
    }

    /// Nothing of an install is left in the toolchain directory: no program, no
    /// record, no work directory.
    fn assert_nothing_installed(&self) {
        let root = self.toolchain();
        assert!(!root.join("bin/packer").exists(), "packer was installed");
        assert!(!root.join("venv").exists(), "a venv was left behind");
        assert!(
            !root.join("installed").exists()
                || std::fs::read_dir(root.join("installed"))
                    .unwrap()
                    .next()
                    .is_none(),
            "an install record was written"
        );
        if root.exists() {
            for entry in std::fs::read_dir(&root).unwrap() {
                let name = entry.unwrap().file_name();
                assert!(
                    !name.to_string_lossy().starts_with(".tmp-"),
                    "a work directory was left: {name:?}"
                );
            }
        }
    }
}

fn status(entry: &Value) -> &Value {
    &entry["status"]
}

#[test]
fn packer_installs_from_a_signed_release_and_every_command_prefers_it() {
    let s = Setup::new();
    s.publish(STAND_IN, None, &s.signer);
    let no_packer = path_without(&["packer"]);

    let out = s.run(
        &["deps", "--install", "--for", "validate"],
        Some(no_packer.path()),
    );
    assert!(out.status.success(), "{}", both(&out));
    let installed = s.toolchain().join("bin/packer");
    assert_eq!(std::fs::read_to_string(&installed).unwrap(), STAND_IN);
    let record: Value = serde_json::from_slice(
        &std::fs::read(s.toolchain().join("installed/packer.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["version"], VERSION);
    assert_eq!(record["signed_by"], s.signer.fingerprint());
    assert!(record["source"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/packer/{VERSION}/{}", archive_name())));
    assert!(
        !s.toolchain().join("packer-plugins").exists(),
        "Packer < 1.7 needs no plugins"
    );
    assert_eq!(s.requests_for(&archive_name()), 1);
    assert_eq!(s.requests_for("_SHA256SUMS"), 1);
    assert_eq!(s.requests_for("_SHA256SUMS.sig"), 1);

    // Chosen over the packer on PATH, and shown as project-local.
    let entry = s.deps_entry("validate", "packer", None);
    assert_eq!(status(&entry), "ok", "{entry:#}");
    assert_eq!(entry["version"], VERSION);
    assert_eq!(entry["project_local"], true, "{entry:#}");
    assert_eq!(entry["path"], installed.to_str().unwrap());
    let table = s.run(&["deps", "--for", "validate"], None);
    let text = String::from_utf8_lossy(&table.stdout);
    let row = text.lines().find(|l| l.starts_with("packer ")).unwrap();
    assert!(row.contains("project-local"), "{text}");

    // Installed and usable: a second run fetches nothing.
    s.server.clear_requests();
    let again = s.run(
        &["deps", "--install", "--for", "validate"],
        Some(no_packer.path()),
    );
    assert!(again.status.success(), "{}", both(&again));
    assert!(s.server.requests().is_empty(), "{:?}", s.server.requests());
}

#[test]
fn a_checksum_mismatch_deletes_the_archive_and_installs_nothing() {
    let s = Setup::new();
    s.publish(STAND_IN, Some(&"ab".repeat(32)), &s.signer);
    let no_packer = path_without(&["packer"]);
    let out = s.run(
        &["deps", "--install", "--for", "validate"],
        Some(no_packer.path()),
    );
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let err = stderr(&out);
    assert!(err.contains(&"ab".repeat(32)), "{err}");
    assert!(
        err.contains("the archive was deleted and nothing was installed"),
        "{err}"
    );
    assert_eq!(s.requests_for(&archive_name()), 1);
    s.assert_nothing_installed();
    let entry = s.deps_entry("validate", "packer", Some(no_packer.path()));
    assert_eq!(status(&entry), "missing", "{entry:#}");
}

/// A signed zip whose `packer` entry is a symlink: once it was followed (its
/// target made executable, run for the version check) and installed as a link.
#[test]
fn finding_13_a_symlink_packer_entry_in_the_signed_zip_is_refused() {
    let s = Setup::new();
    let victim = s.dir.path().join("victim.sh");
    std::fs::write(&victim, STAND_IN).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    s.publish_entry(victim.to_str().unwrap(), 0o120777, None, &s.signer);
    let no_packer = path_without(&["packer"]);
    let out = s.run(
        &["deps", "--install", "--for", "validate"],
        Some(no_packer.path()),
    );
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let err = stderr(&out);
    assert!(err.contains("not a regular file"), "{err}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&victim).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o644,
        "the symlink's target was made executable"
    );
    s.assert_nothing_installed();
}

#[test]
fn a_signature_by_another_key_stops_before_the_archive_is_fetched() {
    let s = Setup::new();
    s.publish(STAND_IN, None, &s.other);
    let no_packer = path_without(&["packer"]);
    let out = s.run(
        &["deps", "--install", "--for", "validate"],
        Some(no_packer.path()),
    );
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let err = stderr(&out);
    assert!(err.contains("not the trusted key"), "{err}");
    assert!(err.contains("nothing was downloaded or installed"), "{err}");
    assert_eq!(s.requests_for(&archive_name()), 0, "{err}");
    s.assert_nothing_installed();
}

#[test]
fn checksums_changed_after_signing_are_rejected() {
    let s = Setup::new();
    s.publish(STAND_IN, None, &s.signer);
    // Another archive, and SHA256SUMS edited to match it: the signature no longer does.
    let evil = zip(&[("packer", b"#!/bin/sh\necho Packer v1.6.6\n", 0o755)]);
    std::fs::write(s.release_dir().join(archive_name()), &evil).unwrap();
    let sums = std::fs::read_to_string(s.sums_path()).unwrap();
    let line = sums.lines().last().unwrap();
    std::fs::write(s.sums_path(), sums.replace(&line[..64], &sha256_hex(&evil))).unwrap();
    let no_packer = path_without(&["packer"]);
    let out = s.run(
        &["deps", "--install", "--for", "validate"],
        Some(no_packer.path()),
    );
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(stderr(&out).contains("BAD signature"), "{}", stderr(&out));
    assert_eq!(s.requests_for(&archive_name()), 0);
    s.assert_nothing_installed();
}

#[test]
fn the_key_from_the_key_url_must_be_hashicorps_pinned_key() {
    let s = Setup::new();
    s.publish(STAND_IN, None, &s.signer);
    std::fs::copy(&s.key_file, s.dir.path().join("www/pgp-key.txt")).unwrap();
    let no_packer = path_without(&["packer"]);
    let out = s
        .xtask(
            &["deps", "--install", "--for", "validate"],
            Some(no_packer.path()),
        )
        .env_remove("FLATCAR_HASHICORP_KEY")
        .env(
            "FLATCAR_HASHICORP_KEY_URL",
            format!("{}/pgp-key.txt", s.server.url()),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let err = stderr(&out);
    assert!(
        err.contains("not the pinned key C874011F0AB405110D02105534365D9472D7468F"),
        "{err}"
    );
    assert_eq!(s.requests_for("/pgp-key.txt"), 1);
    assert_eq!(s.requests_for(&archive_name()), 0);
    s.assert_nothing_installed();
}

#[test]
fn no_network_is_a_clear_message_naming_the_url() {
    let s = Setup::new();
    // A loopback port that nothing listens on: connections are refused.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let no_packer = path_without(&["packer"]);
    let out = s
        .xtask(
            &["deps", "--install", "--for", "validate"],
            Some(no_packer.path()),
        )
        .env(
            "FLATCAR_HASHICORP_RELEASES",
            format!("http://127.0.0.1:{closed}"),
        )
        .output()
        .unwrap();
    // Refused is final: no retry, and the system's Packer is offered where the
    // package manager has one (exit 2: it needs consent), else Packer failed (exit 1).
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "http://127.0.0.1:{closed}/packer/{VERSION}/packer_{VERSION}_SHA256SUMS"
        )),
        "{err}"
    );
    assert!(!err.contains("retrying"), "{err}");
    match out.status.code() {
        Some(2) => assert!(err.contains("falling back to the system's Packer"), "{err}"),
        Some(1) => assert!(stdout(&out).contains("FAILED"), "{}", both(&out)),
        _ => panic!("{}", both(&out)),
    }
    s.assert_nothing_installed();
}

#[test]
fn a_pip_failure_shows_pips_output_and_leaves_no_venv() {
    let s = Setup::new();
    // An index that serves nothing: pip finds none of the pinned packages.
    let index = tempfile::tempdir().unwrap();
    let pypi = FileServer::start(index.path());
    let no_ansible = path_without(&["ansible-playbook", "ansible-lint", "yamllint"]);
    let out = s
        .xtask(
            &["deps", "--install", "--for", "validate"],
            Some(no_ansible.path()),
        )
        .env("FLATCAR_PYPI_INDEX", format!("{}/simple", pypi.url()))
        // Only the index given here: no wheel directory or extra index of this machine.
        .env_remove("PIP_FIND_LINKS")
        .env_remove("PIP_INDEX_URL")
        .env_remove("PIP_EXTRA_INDEX_URL")
        .env("PIP_NO_CACHE_DIR", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let err = stderr(&out);
    assert!(
        err.contains("pip | ")
            && err.contains("No matching distribution found for ansible-compat=="),
        "pip's own words are shown: {err}"
    );
    assert!(err.contains("pip could not install"), "{err}");
    assert!(
        !pypi.requests_for("/simple/ansible-compat/").is_empty(),
        "pip asked the given index: {:?}",
        pypi.requests()
    );
    s.assert_nothing_installed();
    let entry = s.deps_entry("validate", "ansible-playbook", Some(no_ansible.path()));
    assert_eq!(status(&entry), "missing", "{entry:#}");
}

#[test]
fn an_interrupted_install_is_never_taken_for_a_finished_one() {
    let s = Setup::new();
    s.publish(STAND_IN, None, &s.signer);
    // What a killed run leaves: a work directory, a packer renamed into place
    // before the record was written, a venv that pip never finished.
    let root = s.toolchain();
    let leftover = root.join(".tmp-packer-4242");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join(archive_name()), b"half a download").unwrap();
    let executable = |path: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, STAND_IN).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    executable(&root.join("bin/packer"));
    executable(&root.join("venv/bin/ansible-playbook"));

    let neither = path_without(&["packer", "ansible-playbook"]);
    for tool in ["packer", "ansible-playbook"] {
        let entry = s.deps_entry("validate", tool, Some(neither.path()));
        assert_eq!(status(&entry), "missing", "{entry:#}");
        assert_eq!(entry["path"], Value::Null);
    }

    let no_packer = path_without(&["packer"]);
    let out = s.run(
        &["deps", "--install", "--for", "validate"],
        Some(no_packer.path()),
    );
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        stderr(&out).contains("left by an interrupted install"),
        "{}",
        stderr(&out)
    );
    assert!(!leftover.exists(), "the next run starts clean");
    assert!(root.join("installed/packer.json").exists());
    let entry = s.deps_entry("validate", "packer", Some(no_packer.path()));
    assert_eq!(status(&entry), "ok", "{entry:#}");
    assert_eq!(entry["project_local"], true);
}

#[test]
fn tools_from_the_package_manager_get_one_command_and_exit_2() {
    let s = Setup::new();
    let missing = path_without(&["shellcheck", "ignition-validate"]);
    // Nothing here may be fetched: every URL points at a closed loopback port.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let out = s
        .xtask(&["deps", "--install"], Some(missing.path()))
        .env(
            "FLATCAR_HASHICORP_RELEASES",
            format!("http://127.0.0.1:{closed}"),
        )
        .env("FLATCAR_PYPI_INDEX", format!("http://127.0.0.1:{closed}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    let err = stderr(&out);
    let debian = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .any(|l| l == "ID=debian");
    if debian {
        let line = err
            .lines()
            .find(|l| l.trim_start().starts_with("sudo apt-get install"))
            .unwrap_or_else(|| panic!("no apt-get line: {err}"));
        let packages: Vec<&str> = line.split_whitespace().skip(3).collect();
        assert!(packages.contains(&"ignition"), "{line}");
        assert!(packages.contains(&"shellcheck"), "{line}");
        assert_eq!(
            err.lines()
                .filter(|l| l.contains("apt-get install"))
                .count(),
            1,
            "one command for everything: {err}"
        );
    }
    assert!(
        err.contains("shellcheck") && err.contains("ignition-validate"),
        "{err}"
    );
    s.assert_nothing_installed();
}

/// A zip whose `packer` hands over to the real packer of this machine, so that
/// `validate` runs real Packer checks with a packer it installed from loopback.
fn publish_real_packer(s: &Setup) {
    let real = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("packer"))
        .find(|p| p.is_file())
        .expect("packer is installed (CI installs Debian's 1.6.6)");
    let script = format!("#!/bin/sh\nexec {} \"$@\"\n", real.display());
    s.publish(&script, None, &s.signer);
}

fn validate_report(s: &Setup, repo: &Path, extra: &[&str], path: &Path) -> (Output, Value) {
    let mut args = vec![
        "validate",
        "--format",
        "json",
        "--no-cache",
        "--target",
        "qemu-flatcar",
    ];
    args.extend_from_slice(extra);
    let out = s
        .xtask(&args, Some(path))
        .arg("--root")
        .arg(repo)
        .output()
        .unwrap();
    let r = report(&out);
    (out, r)
}

fn result_of<'a>(r: &'a Value, check: &str) -> &'a Value {
    &r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("no {check} in {r:#}"))["result"]
}

#[test]
fn validate_installs_a_missing_packer_and_passes() {
    let s = Setup::new();
    publish_real_packer(&s);
    let repo = copy_of_repository();
    let no_packer = path_without(&["packer"]);

    let (out, r) = validate_report(&s, repo.path(), &["--no-install"], no_packer.path());
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert_eq!(result_of(&r, "packer validate"), "not-run");
    assert!(
        s.server.requests().is_empty(),
        "--no-install fetches nothing"
    );

    let (out, r) = validate_report(&s, repo.path(), &[], no_packer.path());
    assert!(out.status.success(), "{}", both(&out));
    assert_eq!(result_of(&r, "packer validate"), "pass", "{r:#}");
    assert_eq!(result_of(&r, "syntax-check"), "pass", "{r:#}");
    assert_eq!(r["not_run"], 0, "{r:#}");
    assert_eq!(s.requests_for(&archive_name()), 1);
    assert!(s.toolchain().join("installed/packer.json").exists());
}

// --- the real package index: run by hand with --ignored ----------------------

#[test]
#[ignore = "installs ansible-core, ansible-lint and yamllint from PyPI"]
fn ansible_installs_into_a_venv_from_the_package_index() {
    let s = Setup::new();
    let no_ansible = path_without(&["ansible-playbook", "ansible-lint", "yamllint"]);
    let out = s.run(
        &["deps", "--install", "--for", "validate"],
        Some(no_ansible.path()),
    );
    assert!(out.status.success(), "{}", both(&out));
    let record: Value = serde_json::from_slice(
        &std::fs::read(s.toolchain().join("installed/python-venv.json")).unwrap(),
    )
    .unwrap();
    assert!(
        record["version"].as_str().unwrap().starts_with("2.18."),
        "{record:#}"
    );
    let playbook = s.deps_entry("validate", "ansible-playbook", Some(no_ansible.path()));
    assert_eq!(status(&playbook), "ok", "{playbook:#}");
    assert_eq!(playbook["project_local"], true);
    assert!(playbook["version"].as_str().unwrap().starts_with("2.18."));
    for tool in ["ansible-lint", "yamllint"] {
        let entry = s.deps_entry("lint", tool, Some(no_ansible.path()));
        assert_eq!(status(&entry), "ok", "{entry:#}");
        assert_eq!(entry["project_local"], true, "{entry:#}");
    }
}

#[test]
#[ignore = "installs ansible-core, ansible-lint and yamllint from PyPI"]
fn validate_sets_up_packer_and_ansible_when_neither_is_on_path_and_passes() {
    let s = Setup::new();
    publish_real_packer(&s);
    let repo = copy_of_repository();
    let neither = path_without(&["packer", "ansible-playbook", "ansible-lint", "yamllint"]);
    let (out, r) = validate_report(&s, repo.path(), &[], neither.path());
    assert!(out.status.success(), "{}", both(&out));
    assert_eq!(r["not_run"], 0, "{r:#}");
    assert_eq!(r["failed"], 0, "{r:#}");
    assert_eq!(result_of(&r, "packer validate"), "pass");
    assert_eq!(result_of(&r, "syntax-check"), "pass");
    assert!(s.toolchain().join("installed/packer.json").exists());
    assert!(s.toolchain().join("installed/python-venv.json").exists());
}

#[test]
fn an_unresolvable_release_server_fails_fast_and_the_other_components_still_run() {
    let s = Setup::new();
    let missing = path_without(&["packer"]);
    let started = std::time::Instant::now();
    // `.invalid` never resolves (RFC 6761); nothing is sent anywhere.
    let out = s
        .xtask(
            &["deps", "--install", "--for", "validate", "--format", "json"],
            Some(missing.path()),
        )
        .env(
            "FLATCAR_HASHICORP_RELEASES",
            "http://releases.example.invalid",
        )
        .env("FLATCAR_RETRIES", "4")
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    // No retry is announced; the bound is loose for a loaded machine (probing the
    // tools takes a few seconds there), where four retries would add 7.5 s of sleep.
    assert!(elapsed.as_secs() < 20, "took {elapsed:?}: {}", both(&out));
    let r = report(&out);
    let rows = r["install"]["rows"].as_array().unwrap();
    let row = |name: &str| {
        rows.iter()
            .find(|row| row["component"] == name)
            .unwrap_or_else(|| panic!("no {name} row in {r:#}"))
    };
    assert_eq!(row("system packages")["result"], "already-there", "{r:#}");
    assert_eq!(row("python-venv")["result"], "already-there", "{r:#}");
    let packer = row("packer");
    let err = stderr(&out);
    match packer["result"].as_str() {
        Some("not-run") => {
            assert_eq!(out.status.code(), Some(2), "{}", both(&out));
            assert!(err.contains("releases.example.invalid"), "{err}");
            assert!(err.contains("falling back to the system's Packer"), "{err}");
        }
        Some("failed") => {
            assert_eq!(out.status.code(), Some(1), "{}", both(&out));
            assert!(
                packer["detail"]
                    .as_str()
                    .unwrap()
                    .contains("releases.example.invalid"),
                "{r:#}"
            );
        }
        _ => panic!("{r:#}"),
    }
    assert!(!err.contains("retrying"), "{err}");
    s.assert_nothing_installed();
}

/// A key named with FLATCAR_HASHICORP_KEY replaces the pinned one: every install
/// says so on stderr, and the install record keeps it.
#[test]
fn finding_7_a_replaced_hashicorp_key_is_warned_about_and_recorded() {
    let s = Setup::new();
    s.publish(STAND_IN, None, &s.signer);
    let no_packer = path_without(&["packer"]);
    let out = s.run(
        &["deps", "--install", "--for", "validate"],
        Some(no_packer.path()),
    );
    assert!(out.status.success(), "{}", both(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "WARNING: Packer's release checksums are checked against the key in {}",
            s.key_file.display()
        )) && stderr.contains(
            "NOT HashiCorp's pinned release key C874011F0AB405110D02105534365D9472D7468F"
        ),
        "{stderr}"
    );
    let record: Value = serde_json::from_slice(
        &std::fs::read(s.toolchain().join("installed/packer.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["trust_anchor"],
        format!(
            "the key in {} (--hashicorp-key / FLATCAR_HASHICORP_KEY)",
            s.key_file.display()
        )
        .as_str(),
        "{record:#}"
    );
    // Already installed: the next run still says it.
    let again = s.run(
        &["deps", "--install", "--for", "validate"],
        Some(no_packer.path()),
    );
    assert!(
        String::from_utf8_lossy(&again.stderr)
            .contains("WARNING: the installed packer was verified against the key in"),
        "{}",
        both(&again)
    );
}
