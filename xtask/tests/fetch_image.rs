//! `cargo xtask fetch-image` against a loopback release server that serves a
//! Flatcar-shaped tree made at test time: version.txt files, a few-MB image,
//! DIGESTS, and OpenPGP signatures by a key generated here with gpg (one good
//! signing subkey, one that expired after signing, one that had expired before
//! it signed, one revoked, and another key altogether). The real verifier runs;
//! nothing reaches beyond 127.0.0.1.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use support::{xtask, FileServer};

const IMG: &str = "flatcar_production_qemu_image.img";
const UEFI_IMG: &str = "flatcar_production_qemu_uefi_image.img";
const IMAGE_SIZE: usize = 3 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;
const PINNED: &str = "F88CFEDEFF29A5B4D9523864E25D9AED0593B34A";

/// The served tree and the keys, made once per test binary.
struct Fixture {
    /// The release server's document root: `<channel>/<arch>-usr/<version>/...`.
    root: PathBuf,
    /// The test signing key, armored (also served as `/keys/test-key.asc`).
    key: PathBuf,
    /// The pristine image bytes.
    image: Vec<u8>,
    /// The fingerprint of the test key's primary key.
    primary: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(make_fixture)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Runs gpg in `home`, optionally at a faked time, and returns its stdout.
fn gpg(home: &Path, at: Option<u64>, args: &[&str]) -> String {
    let mut cmd = Command::new("gpg");
    cmd.arg("--homedir")
        .arg(home)
        .args(["--batch", "--no-tty", "--passphrase", ""]);
    if let Some(at) = at {
        cmd.arg("--faked-system-time").arg(format!("{at}!"));
    }
    let out = cmd.args(args).output().expect("running gpg");
    assert!(
        out.status.success(),
        "gpg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Primary fingerprint first, then the subkeys' in listing order.
fn fingerprints(home: &Path, key: &str) -> Vec<String> {
    gpg(home, None, &["--with-colons", "--list-keys", key])
        .lines()
        .filter(|l| l.starts_with("fpr:"))
        .map(|l| l.split(':').nth(9).unwrap().to_owned())
        .collect()
}

fn sign(home: &Path, key: &str, at: Option<u64>, file: &Path, out: &Path, clearsign: bool) {
    let mode = if clearsign {
        "--clearsign"
    } else {
        "--detach-sign"
    };
    gpg(
        home,
        at,
        &[
            "--yes",
            "--local-user",
            &format!("{key}!"),
            mode,
            "--output",
            out.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    );
}

fn hash_with(tool: &str, file: &Path) -> String {
    let out = Command::new(tool).arg(file).output().unwrap();
    assert!(out.status.success(), "{tool} failed");
    String::from_utf8(out.stdout).unwrap()[..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// A DIGESTS file in the release server's shape, with the given sections.
fn digests_text(file: &Path, name: &str, sections: &[(&str, &str)]) -> String {
    sections
        .iter()
        .map(|(title, tool)| format!("# {title} HASH\n{}  {name}\n", hash_with(tool, file)))
        .collect()
}

const ALL_SECTIONS: &[(&str, &str)] = &[
    ("MD5", "md5sum"),
    ("SHA1", "sha1sum"),
    ("SHA512", "sha512sum"),
];

fn version_txt(version: &str) -> String {
    let mut parts = version.split('.');
    let (build, branch, patch) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    format!(
        "FLATCAR_BUILD={build}\nFLATCAR_BRANCH={branch}\nFLATCAR_PATCH={patch}\n\
         FLATCAR_VERSION={version}\nFLATCAR_VERSION_ID={version}\n\
         FLATCAR_BUILD_ID=\"2024-10-16-1733\"\nFLATCAR_SDK_VERSION=4081.1.0\n"
    )
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap();
}

/// Removes fixtures left by earlier test runs whose process is gone.
fn remove_stale_fixtures(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("fetch-image-") {
            let alive = Path::new("/proc").join(pid).exists();
            if !alive && Path::new("/proc/self").exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Stops the gpg-agent that signing started in a GnuPG home, even when the
/// fixture panics half-way.
struct AgentGuard<'a>(&'a Path);

impl Drop for AgentGuard<'_> {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.0)
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

fn make_fixture() -> Fixture {
    let parent = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    remove_stale_fixtures(&parent);
    let base = parent.join(format!("fetch-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let root = base.join("www");
    let work = base.join("work");
    std::fs::create_dir_all(&work).unwrap();
    // A short path: gpg-agent's socket lives in the home directory.
    let home = tempfile::Builder::new()
        .prefix("gpg")
        .tempdir_in("/tmp")
        .unwrap();
    let home = home.path();
    let agent = AgentGuard(home);

    // The keys: everything created ten days ago.
    let t0 = now() - 10 * 86_400;
    gpg(
        home,
        Some(t0),
        &[
            "--quick-gen-key",
            "Flatcar Test Signing <test@example.invalid>",
            "ed25519",
            "cert",
            "never",
        ],
    );
    let primary = fingerprints(home, "test@example.invalid")[0].clone();
    for _ in 0..4 {
        gpg(
            home,
            Some(t0),
            &["--quick-add-key", &primary, "ed25519", "sign", "never"],
        );
    }
    let fprs = fingerprints(home, &primary);
    assert_eq!(fprs.len(), 5);
    let (good, expired_after, expired_before, revoked) = (&fprs[1], &fprs[2], &fprs[3], &fprs[4]);
    gpg(
        home,
        Some(t0),
        &[
            "--quick-gen-key",
            "Other Signer <other@example.invalid>",
            "ed25519",
            "sign",
            "never",
        ],
    );
    let other = fingerprints(home, "other@example.invalid")[0].clone();

    // The image and its signatures.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let image: Vec<u8> = (0..IMAGE_SIZE)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let img = work.join(IMG);
    write(&img, &image);
    let sig = |name: &str| work.join(format!("{name}.sig"));
    sign(home, good, None, &img, &sig("good"), false);
    sign(home, &other, None, &img, &sig("other"), false);
    sign(
        home,
        expired_after,
        Some(t0 + 3600),
        &img,
        &sig("expired-after"),
        false,
    );
    sign(
        home,
        expired_before,
        Some(t0 + 5 * 86_400),
        &img,
        &sig("expired-before"),
        false,
    );
    sign(home, revoked, None, &img, &sig("revoked"), false);
    // Two subkeys expire a day after t0 + 2h: one signed before that, one after.
    gpg(
        home,
        Some(t0 + 7200),
        &[
            "--quick-set-expire",
            &primary,
            "1d",
            expired_after,
            expired_before,
        ],
    );
    // Revoke the fourth subkey (gpg 2.2 has no --quick command for that).
    let mut edit = Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args([
            "--batch",
            "--no-tty",
            "--command-fd",
            "0",
            "--edit-key",
            &primary,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    edit.stdin
        .take()
        .unwrap()
        .write_all(b"key 4\nrevkey\ny\n0\n\ny\nsave\n")
        .unwrap();
    assert!(edit.wait().unwrap().success());
    let listing = gpg(home, None, &["--with-colons", "--list-keys", &primary]);
    let subkey_validity: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with("sub:"))
        .map(|l| l.split(':').nth(1).unwrap())
        .collect();
    assert_eq!(subkey_validity, ["u", "e", "e", "r"], "{listing}");

    let key = root.join("keys").join("test-key.asc");
    write(&key, gpg(home, None, &["--armor", "--export", &primary]));

    let digests = work.join("good.DIGESTS");
    write(&digests, digests_text(&img, IMG, ALL_SECTIONS));
    sign(
        home,
        good,
        None,
        &digests,
        &work.join("good.DIGESTS.asc"),
        true,
    );
    sign(
        home,
        &other,
        None,
        &digests,
        &work.join("other.DIGESTS.asc"),
        true,
    );

    let bz2 = work.join(format!("{IMG}.bz2"));
    let out = Command::new("bzip2")
        .arg("-kc")
        .arg(&img)
        .output()
        .expect("running bzip2");
    assert!(out.status.success());
    write(&bz2, &out.stdout);
    sign(home, good, None, &bz2, &sig("bz2"), false);

    drop(agent);

    // The release tree.
    let channel = root.join("stable").join("amd64-usr");
    let release = |version: &str| {
        let dir = channel.join(version);
        write(&dir.join("version.txt"), version_txt(version));
        dir
    };
    // A complete release with a good signature, made the most usual way.
    let full = |version: &str, signature: &str| {
        let dir = release(version);
        copy(&img, &dir.join(IMG));
        copy(&sig(signature), &dir.join(format!("{IMG}.sig")));
        copy(&digests, &dir.join(format!("{IMG}.DIGESTS")));
        dir
    };
    write(
        &channel.join("current").join("version.txt"),
        version_txt("4081.2.0"),
    );
    let good_release = full("4081.2.0", "good");
    copy(&img, &good_release.join(UEFI_IMG));
    copy(&sig("good"), &good_release.join(format!("{UEFI_IMG}.sig")));
    write(
        &good_release.join(format!("{UEFI_IMG}.DIGESTS")),
        digests_text(&img, UEFI_IMG, ALL_SECTIONS),
    );
    full("4080.1.0", "good");
    // One flipped byte in the served image.
    let dir = full("4081.2.1", "good");
    let mut flipped = image.clone();
    flipped[IMAGE_SIZE / 2] ^= 0x01;
    write(&dir.join(IMG), &flipped);
    // A DIGESTS whose SHA-512 is wrong (the signature is fine).
    let dir = full("4081.2.2", "good");
    write(
        &dir.join(format!("{IMG}.DIGESTS")),
        digests_text(&img, IMG, ALL_SECTIONS)
            .replace(&hash_with("sha512sum", &img), &hash_with("sha512sum", &key)),
    );
    // A DIGESTS without a SHA512 section.
    let dir = full("4081.2.3", "good");
    write(
        &dir.join(format!("{IMG}.DIGESTS")),
        digests_text(&img, IMG, &ALL_SECTIONS[..2]),
    );
    full("4081.2.4", "other");
    full("4081.2.5", "expired-before");
    full("4081.2.6", "revoked");
    full("4081.2.7", "expired-after");
    // Only the .bz2 (older releases).
    let dir = release("4081.2.8");
    copy(&bz2, &dir.join(format!("{IMG}.bz2")));
    copy(&sig("bz2"), &dir.join(format!("{IMG}.bz2.sig")));
    write(
        &dir.join(format!("{IMG}.bz2.DIGESTS")),
        digests_text(&bz2, &format!("{IMG}.bz2"), ALL_SECTIONS),
    );
    // No .sig; a clear-signed DIGESTS instead (by the key, then by another key).
    for (version, asc) in [("4081.2.9", "good"), ("4081.2.10", "other")] {
        let dir = release(version);
        copy(&img, &dir.join(IMG));
        copy(&digests, &dir.join(format!("{IMG}.DIGESTS")));
        copy(
            &work.join(format!("{asc}.DIGESTS.asc")),
            &dir.join(format!("{IMG}.DIGESTS.asc")),
        );
    }
    // A version.txt that is not one.
    write(
        &channel.join("4081.2.11").join("version.txt"),
        "<html><body>Moved</body></html>\n",
    );
    // A release directory without any image.
    release("4081.2.12");
    // DIGESTS and signature, but the image itself is missing.
    let dir = full("4081.2.13", "good");
    std::fs::remove_file(dir.join(IMG)).unwrap();
    // A .sig that holds no signature at all.
    let dir = full("4081.2.15", "good");
    write(&dir.join(format!("{IMG}.sig")), "<html>Not Found</html>\n");
    // No signature of any kind.
    let dir = full("4081.2.14", "good");
    std::fs::remove_file(dir.join(format!("{IMG}.sig"))).unwrap();

    Fixture {
        root,
        key,
        image,
        primary,
    }
}

fn image_url_path(version: &str) -> String {
    format!("/stable/amd64-usr/{version}/{IMG}")
}

/// `cargo xtask fetch-image` set up for `server` and `cache`, through the
/// environment variables the options read (so those are tested too).
fn fetch(server: &FileServer, cache: &Path) -> Command {
    let mut cmd = xtask();
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("FLATCAR_") || name.to_ascii_lowercase().ends_with("_proxy") {
            cmd.env_remove(&*name);
        }
    }
    cmd.arg("fetch-image")
        .env(
            "FLATCAR_RELEASE_SERVER",
            format!("{}/{{channel}}", server.url()),
        )
        .env("FLATCAR_CACHE_DIR", cache)
        .env("FLATCAR_SIGNING_KEY", &fixture().key)
        .env("FLATCAR_ARCH", "amd64")
        .env("FLATCAR_RETRIES", "2");
    cmd
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(cmd: &mut Command) -> Run {
        let Output {
            status,
            stdout,
            stderr,
        } = cmd.output().expect("running xtask");
        Run {
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    fn ok(self) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "expected success\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Fails with exit status `code` and an error that mentions every one of `needles`.
    fn fails(self, code: i32, needles: &[&str]) -> Run {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "stderr lacks {needle:?}:\n{}",
                self.stderr
            );
        }
        self
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(files_under(&path));
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// No verification record and no image under its final name: a later run
/// trusts nothing it finds here.
fn assert_nothing_trusted(cache: &Path) {
    for file in files_under(cache) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".verified.json") && name != IMG && name != UEFI_IMG,
            "{} is left in the cache",
            file.display()
        );
    }
}

fn assert_no_partial_download(cache: &Path) {
    for file in files_under(cache) {
        assert!(
            !file.to_string_lossy().ends_with(".part"),
            "{} is left in the cache",
            file.display()
        );
    }
}

fn cached_image(cache: &Path, version: &str) -> PathBuf {
    cache.join("stable").join(version).join("amd64").join(IMG)
}

struct Setup {
    server: FileServer,
    cache: tempfile::TempDir,
}

fn setup() -> Setup {
    Setup {
        server: FileServer::start(&fixture().root),
        cache: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    fn fetch(&self) -> Command {
        fetch(&self.server, self.cache.path())
    }

    fn cache(&self) -> &Path {
        self.cache.path()
    }
}

#[test]
fn downloads_verifies_and_caches_the_current_release() {
    let s = setup();
    let run = Run::of(s.fetch().arg("stable")).ok();
    let image = cached_image(s.cache(), "4081.2.0");
    assert!(
        run.stdout.contains("channel: stable\nversion: 4081.2.0\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("image:   {}\n", image.display())),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("(primary {})", fixture().primary)),
        "{}",
        run.stdout
    );
    assert!(run
        .stderr
        .contains("The current stable release for amd64 is 4081.2.0."));
    assert!(run.stderr.contains("downloaded, verified and cached"));
    assert_eq!(std::fs::read(&image).unwrap(), fixture().image);
    let record =
        std::fs::read_to_string(image.with_file_name(format!("{IMG}.verified.json"))).unwrap();
    assert!(record.contains(&fixture().primary), "{record}");
    assert_no_partial_download(s.cache());
    let paths: Vec<String> = s.server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/stable/amd64-usr/current/version.txt".to_owned(),
            format!("{}.DIGESTS", image_url_path("4081.2.0")),
            format!("{}.sig", image_url_path("4081.2.0")),
            image_url_path("4081.2.0"),
        ]
    );
}

#[test]
fn a_cache_hit_downloads_nothing() {
    let s = setup();
    Run::of(s.fetch().args(["stable", "4081.2.0"])).ok();
    s.server.clear_requests();

    let run = Run::of(s.fetch().args(["stable", "4081.2.0", "--format", "json"])).ok();
    assert_eq!(
        s.server.requests(),
        [],
        "an exact cached version needs no request"
    );
    assert!(
        run.stdout.contains("\"from_cache\": true"),
        "{}",
        run.stdout
    );
    assert!(run
        .stderr
        .contains("verified image in the cache, nothing downloaded"));

    // `current` must still ask which release is current, and nothing more.
    let run = Run::of(s.fetch().arg("--quiet")).ok();
    assert_eq!(run.stderr, "", "--quiet prints nothing on success");
    let paths: Vec<String> = s.server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/stable/amd64-usr/current/version.txt"]);
}

#[test]
fn offline_uses_only_the_cache() {
    let s = setup();
    Run::of(s.fetch().args(["--offline", "stable", "4081.2.0"])).fails(
        1,
        &[
            "--offline",
            "4081.2.0",
            "is not in the cache",
            &s.cache().display().to_string(),
        ],
    );
    Run::of(s.fetch().args(["stable", "--offline"]))
        .fails(1, &["--offline: no stable release for amd64"]);
    assert_eq!(s.server.requests(), []);

    Run::of(s.fetch().args(["stable", "4080.1.0"])).ok();
    Run::of(s.fetch().args(["stable", "4081.2.0"])).ok();
    let port = s.server.port;
    drop(s.server);
    let cache = s.cache;
    let offline_server = format!("http://127.0.0.1:{port}/{{channel}}");
    // The server is gone: only the cache can answer.
    let run = Run::of(
        xtask()
            .arg("fetch-image")
            .env("FLATCAR_OFFLINE", "1")
            .args(["--cache-dir", cache.path().to_str().unwrap()])
            .args(["--release-server", &offline_server, "--arch", "amd64"])
            .arg("--signing-key")
            .arg(&fixture().key),
    )
    .ok();
    assert!(run.stdout.contains("version: 4081.2.0\n"), "{}", run.stdout);
    assert!(run
        .stderr
        .contains("the newest stable release in the cache"));
}

#[test]
fn unknown_and_discontinued_channels_are_usage_errors() {
    let cache = tempfile::tempdir().unwrap();
    let server = FileServer::start(&fixture().root);
    Run::of(fetch(&server, cache.path()).arg("stabel")).fails(
        2,
        &[
            "unknown channel `stabel`",
            "the live channels are alpha beta stable lts",
        ],
    );
    Run::of(fetch(&server, cache.path()).arg("edge")).fails(
        2,
        &["edge channel was discontinued", "alpha beta stable lts"],
    );
    Run::of(fetch(&server, cache.path()).args(["stable", "4081.2"])).fails(
        2,
        &[
            "`4081.2` is not a Flatcar release version",
            "MAJOR.MINOR.PATCH",
        ],
    );
    assert_eq!(server.requests(), []);
    assert_nothing_trusted(cache.path());
}

#[test]
fn a_nonexistent_version_is_named() {
    let s = setup();
    let url = format!("{}/stable/amd64-usr/9999.0.0/version.txt", s.server.url());
    Run::of(s.fetch().args(["stable", "9999.0.0"])).fails(
        1,
        &[
            "Flatcar stable 9999.0.0 for amd64 does not exist",
            &url,
            "404 Not Found",
        ],
    );
    assert_eq!(s.server.requests().len(), 1, "404 is never retried");
    assert_nothing_trusted(s.cache());
}

#[test]
fn a_malformed_version_txt_is_named() {
    let s = setup();
    let url = format!("{}/stable/amd64-usr/4081.2.11/version.txt", s.server.url());
    Run::of(s.fetch().args(["stable", "4081.2.11"])).fails(
        1,
        &[
            &format!("{url} is not a valid version.txt"),
            "line 1: expected KEY=VALUE",
        ],
    );
    assert_nothing_trusted(s.cache());
}

#[test]
fn a_missing_image_is_a_clear_404() {
    let s = setup();
    let url = format!("{}/stable/amd64-usr/4081.2.12/{IMG}", s.server.url());
    Run::of(s.fetch().args(["stable", "4081.2.12"])).fails(
        1,
        &[
            "has no flatcar_production_qemu_image.img",
            &format!("{url}.DIGESTS answered 404"),
            &format!("{url}.bz2.DIGESTS answered 404"),
        ],
    );
    assert_nothing_trusted(s.cache());

    let url = format!("{}{}", s.server.url(), image_url_path("4081.2.13"));
    Run::of(s.fetch().args(["stable", "4081.2.13"])).fails(
        1,
        &[&format!(
            "{url} answered 404 Not Found, though {url}.DIGESTS lists it"
        )],
    );
    assert_eq!(
        s.server.requests_for(&image_url_path("4081.2.13")).len(),
        1,
        "404 is never retried"
    );
    assert_nothing_trusted(s.cache());
    assert_no_partial_download(s.cache());
}

#[test]
fn digests_without_sha512_stop_before_the_download() {
    let s = setup();
    let url = format!("{}{}.DIGESTS", s.server.url(), image_url_path("4081.2.3"));
    Run::of(s.fetch().args(["stable", "4081.2.3"])).fails(
        1,
        &[
            &format!("{url} has no SHA512 entry for {IMG}"),
            "nothing was downloaded",
        ],
    );
    assert_eq!(s.server.requests_for(&image_url_path("4081.2.3")), []);
    assert_nothing_trusted(s.cache());
}

#[test]
fn a_flipped_byte_fails_both_checks_and_is_deleted() {
    let s = setup();
    let url = format!("{}{}", s.server.url(), image_url_path("4081.2.1"));
    Run::of(s.fetch().args(["stable", "4081.2.1"])).fails(
        1,
        &[
            &format!("{url} ({IMAGE_SIZE} bytes) failed verification and was deleted"),
            "SHA-512 mismatch",
            &format!("OpenPGP signature {url}.sig: BAD signature"),
        ],
    );
    assert_nothing_trusted(s.cache());
    assert_no_partial_download(s.cache());
}

#[test]
fn a_wrong_digest_fails_even_with_a_good_signature() {
    let s = setup();
    let run = Run::of(s.fetch().args(["stable", "4081.2.2"]))
        .fails(1, &["SHA-512 mismatch", "DIGESTS says"]);
    assert!(!run.stderr.contains("OpenPGP signature"), "{}", run.stderr);
    assert_nothing_trusted(s.cache());
    assert_no_partial_download(s.cache());
}

#[test]
fn a_signature_by_another_key_is_rejected() {
    let s = setup();
    let url = format!("{}{}.sig", s.server.url(), image_url_path("4081.2.4"));
    Run::of(s.fetch().args(["stable", "4081.2.4"])).fails(
        1,
        &[
            &url,
            &format!("which is not the trusted key {}", fixture().primary),
        ],
    );
    assert_nothing_trusted(s.cache());
    assert_no_partial_download(s.cache());
}

#[test]
fn a_signature_file_without_a_signature_is_rejected() {
    let s = setup();
    let url = format!("{}{}", s.server.url(), image_url_path("4081.2.15"));
    Run::of(s.fetch().args(["stable", "4081.2.15"])).fails(
        1,
        &[
            &format!("the OpenPGP signature {url}.sig does not verify {url}"),
            "holds no OpenPGP signature",
        ],
    );
    assert_nothing_trusted(s.cache());
    assert_no_partial_download(s.cache());
}

#[test]
fn expired_and_revoked_subkeys_are_rejected() {
    let s = setup();
    Run::of(s.fetch().args(["stable", "4081.2.5"])).fails(
        1,
        &[
            &format!("{}.sig", image_url_path("4081.2.5")),
            "had expired",
        ],
    );
    Run::of(s.fetch().args(["stable", "4081.2.6"])).fails(
        1,
        &[
            &format!("{}.sig", image_url_path("4081.2.6")),
            "has been revoked",
        ],
    );
    assert_nothing_trusted(s.cache());
    assert_no_partial_download(s.cache());
}

#[test]
fn a_subkey_that_expired_after_signing_still_vouches_for_old_releases() {
    let s = setup();
    Run::of(s.fetch().args(["stable", "4081.2.7"])).ok();
    assert_eq!(
        std::fs::read(cached_image(s.cache(), "4081.2.7")).unwrap(),
        fixture().image
    );
}

#[test]
fn a_truncated_body_fails_after_retries_and_trusts_nothing() {
    let s = setup();
    let path = image_url_path("4081.2.0");
    s.server.truncate_body(&path, MIB);
    let url = format!("{}{path}", s.server.url());
    Run::of(s.fetch().args(["stable", "4081.2.0"])).fails(
        1,
        &[
            &format!("downloading {url} failed"),
            &format!("after {MIB} of {IMAGE_SIZE} bytes"),
            "gave up after 3 attempts",
        ],
    );
    assert_eq!(s.server.requests_for(&path).len(), 3);
    assert_nothing_trusted(s.cache());
}

#[test]
fn a_dropped_connection_resumes_with_a_range_request() {
    let s = setup();
    let path = image_url_path("4081.2.0");
    s.server.drop_connection(&path, MIB, 1);
    Run::of(s.fetch().args(["stable", "4081.2.0"])).ok();
    let requests = s.server.requests_for(&path);
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[1].range.as_deref(), Some("bytes=1048576-"));
    assert_eq!(requests[1].status, 206);
    assert_eq!(
        std::fs::read(cached_image(s.cache(), "4081.2.0")).unwrap(),
        fixture().image
    );
}

#[test]
fn a_server_that_ignores_range_is_downloaded_from_the_start() {
    let s = setup();
    let path = image_url_path("4081.2.0");
    s.server.ignore_range(true);
    s.server.drop_connection(&path, MIB, 1);
    let run = Run::of(s.fetch().args(["stable", "4081.2.0"])).ok();
    assert!(
        run.stderr
            .contains("(it ignored the Range request); starting over"),
        "{}",
        run.stderr
    );
    let requests = s.server.requests_for(&path);
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[1].status, 200);
    assert_eq!(
        std::fs::read(cached_image(s.cache(), "4081.2.0")).unwrap(),
        fixture().image
    );
}

#[test]
fn an_interrupted_run_is_resumed_by_the_next_one() {
    let s = setup();
    let path = image_url_path("4081.2.0");
    s.server.drop_connection(&path, MIB, 1);
    Run::of(s.fetch().args(["stable", "4081.2.0", "--retries", "0"]))
        .fails(1, &["the connection broke after 1048576"]);
    assert_nothing_trusted(s.cache());
    s.server.clear_requests();

    let run = Run::of(s.fetch().args(["stable", "4081.2.0"])).ok();
    assert!(
        run.stderr.contains("resuming after 1.0 MiB"),
        "{}",
        run.stderr
    );
    let requests = s.server.requests_for(&path);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].range.as_deref(), Some("bytes=1048576-"));
    assert_eq!(
        std::fs::read(cached_image(s.cache(), "4081.2.0")).unwrap(),
        fixture().image
    );
}

#[test]
fn a_complete_partial_download_is_verified_without_downloading_again() {
    let s = setup();
    let dir = s.cache().join("stable/4081.2.0/amd64");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{IMG}.part")), &fixture().image).unwrap();
    Run::of(s.fetch().args(["stable", "4081.2.0"])).ok();
    let requests = s.server.requests_for(&image_url_path("4081.2.0"));
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].status, 416);
    assert_eq!(std::fs::read(dir.join(IMG)).unwrap(), fixture().image);
}

#[test]
fn a_bad_partial_download_is_caught_and_deleted() {
    let s = setup();
    let dir = s.cache().join("stable/4081.2.0/amd64");
    std::fs::create_dir_all(&dir).unwrap();
    let mut stale = fixture().image[..MIB as usize].to_vec();
    stale[100] ^= 0xff;
    std::fs::write(dir.join(format!("{IMG}.part")), &stale).unwrap();
    Run::of(s.fetch().args(["stable", "4081.2.0"]))
        .fails(1, &["SHA-512 mismatch", "BAD signature"]);
    assert_nothing_trusted(s.cache());
    assert_no_partial_download(s.cache());
    Run::of(s.fetch().args(["stable", "4081.2.0"])).ok();
}

#[test]
fn server_errors_are_retried_and_not_found_is_not() {
    let s = setup();
    let path = image_url_path("4081.2.0");
    s.server.fail_with_status(&path, 503, 2);
    let run = Run::of(s.fetch().args(["stable", "4081.2.0"])).ok();
    assert!(run.stderr.contains("503"), "{}", run.stderr);
    assert_eq!(s.server.requests_for(&path).len(), 3);

    let s = setup();
    s.server.fail_with_status(&path, 503, 10);
    Run::of(s.fetch().args(["stable", "4081.2.0", "--retries", "1"]))
        .fails(1, &["503", "gave up after 2 attempts"]);
    assert_nothing_trusted(s.cache());
}

#[test]
fn a_full_disk_is_reported_and_leaves_nothing() {
    let s = setup();
    // A file-size limit is the portable stand-in for a full disk: writes past
    // it fail with EFBIG (SIGXFSZ ignored, as a shell's trap '' leaves it).
    let cmd = s.fetch();
    let program = PathBuf::from(cmd.get_program());
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut limited = Command::new("sh");
    limited
        .args(["-c", "trap '' XFSZ; ulimit -f 1024; exec \"$0\" \"$@\""])
        .arg(program)
        .args(args)
        .args(["stable", "4081.2.0"]);
    for (name, value) in cmd.get_envs() {
        match value {
            Some(value) => limited.env(name, value),
            None => limited.env_remove(name),
        };
    }
    Run::of(&mut limited).fails(
        1,
        &[
            &format!(
                "writing {}.part (is the disk full?)",
                cached_image(s.cache(), "4081.2.0").display()
            ),
            "File too large",
        ],
    );
    assert_nothing_trusted(s.cache());
    assert_no_partial_download(s.cache());
}

#[test]
fn a_bz2_only_release_is_verified_then_decompressed() {
    let s = setup();
    let run = Run::of(s.fetch().args(["stable", "4081.2.8"])).ok();
    assert!(
        run.stdout.contains(&format!(
            "source:  {}{}.bz2",
            s.server.url(),
            image_url_path("4081.2.8")
        )),
        "{}",
        run.stdout
    );
    let image = cached_image(s.cache(), "4081.2.8");
    assert_eq!(std::fs::read(&image).unwrap(), fixture().image);
    assert!(!image.with_file_name(format!("{IMG}.bz2.part")).exists());
    // The record covers the decompressed file: a cache hit needs nothing.
    s.server.clear_requests();
    Run::of(s.fetch().args(["stable", "4081.2.8", "--verify-cache"])).ok();
    assert_eq!(s.server.requests(), []);
}

#[test]
fn a_clear_signed_digests_file_stands_in_for_a_missing_sig() {
    let s = setup();
    Run::of(s.fetch().args(["stable", "4081.2.9"])).ok();
    assert_eq!(
        std::fs::read(cached_image(s.cache(), "4081.2.9")).unwrap(),
        fixture().image
    );

    let url = format!(
        "{}{}.DIGESTS.asc",
        s.server.url(),
        image_url_path("4081.2.10")
    );
    Run::of(s.fetch().args(["stable", "4081.2.10"])).fails(
        1,
        &[
            &format!("the OpenPGP signature {url} does not verify"),
            "not the trusted key",
        ],
    );
    assert_eq!(s.server.requests_for(&image_url_path("4081.2.10")), []);
    assert!(files_under(s.cache())
        .iter()
        .all(|f| !f.to_string_lossy().contains("4081.2.10/amd64/flatcar")));
}

#[test]
fn the_pinned_key_must_have_the_pinned_fingerprint() {
    let s = setup();
    let key_url = format!("{}/keys/test-key.asc", s.server.url());
    Run::of(
        s.fetch()
            .env_remove("FLATCAR_SIGNING_KEY")
            .env("FLATCAR_SIGNING_KEY_URL", &key_url)
            .args(["stable", "4081.2.0"]),
    )
    .fails(
        1,
        &[
            &format!("{key_url} is key {}", fixture().primary),
            &format!("not the pinned key {PINNED}"),
        ],
    );
    assert_eq!(s.server.requests_for(&image_url_path("4081.2.0")), []);
    assert_nothing_trusted(s.cache());
    assert!(!s
        .cache()
        .join("keys")
        .join(format!("{PINNED}.asc"))
        .exists());
}

#[test]
fn skipping_the_signature_warns_and_is_not_trusted_later() {
    let s = setup();
    let url = format!("{}{}", s.server.url(), image_url_path("4081.2.14"));
    Run::of(s.fetch().args(["stable", "4081.2.14"])).fails(
        1,
        &[
            &format!("{url} has no signature"),
            "--insecure-skip-signature",
        ],
    );
    assert_nothing_trusted(s.cache());

    let run = Run::of(s.fetch().env_remove("FLATCAR_SIGNING_KEY").args([
        "stable",
        "4081.2.14",
        "--insecure-skip-signature",
    ]))
    .ok();
    assert!(
        run.stderr.contains("WARNING: --insecure-skip-signature"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("signed:  NOT CHECKED"),
        "{}",
        run.stdout
    );
    // Cached unsigned: a run that wants a signature does not take it.
    Run::of(s.fetch().args(["stable", "4081.2.14"])).fails(1, &["has no signature"]);
}

#[test]
fn verify_cache_rehashes_and_replaces_a_damaged_image() {
    let s = setup();
    Run::of(s.fetch().args(["stable", "4081.2.0"])).ok();
    let image = cached_image(s.cache(), "4081.2.0");
    let mut damaged = fixture().image.clone();
    damaged[7] ^= 0xff;
    std::fs::write(&image, &damaged).unwrap();
    s.server.clear_requests();

    // The cheap check looks at size and record only.
    Run::of(s.fetch().args(["stable", "4081.2.0"])).ok();
    assert_eq!(s.server.requests(), []);

    let run = Run::of(s.fetch().args(["stable", "4081.2.0", "--verify-cache"])).ok();
    assert!(
        run.stderr
            .contains("no longer has the SHA-512 it was verified with"),
        "{}",
        run.stderr
    );
    assert_eq!(s.server.requests_for(&image_url_path("4081.2.0")).len(), 1);
    assert_eq!(std::fs::read(&image).unwrap(), fixture().image);
}

#[test]
fn a_changed_signature_file_invalidates_the_cache_entry() {
    let s = setup();
    Run::of(s.fetch().args(["stable", "4081.2.0"])).ok();
    let sig = cached_image(s.cache(), "4081.2.0").with_file_name(format!("{IMG}.sig"));
    std::fs::write(&sig, b"not the signature that was verified").unwrap();
    s.server.clear_requests();
    let run = Run::of(s.fetch().args(["stable", "4081.2.0"])).ok();
    assert!(
        run.stderr.contains("changed since it was verified"),
        "{}",
        run.stderr
    );
    assert_eq!(s.server.requests_for(&image_url_path("4081.2.0")).len(), 1);
}

#[test]
fn the_uefi_variant_is_its_own_file() {
    let s = setup();
    let run = Run::of(s.fetch().args(["stable", "4081.2.0", "--variant", "uefi"])).ok();
    let image = s.cache().join("stable/4081.2.0/amd64").join(UEFI_IMG);
    assert!(
        run.stdout
            .contains(&format!("image:   {}", image.display())),
        "{}",
        run.stdout
    );
    assert_eq!(std::fs::read(&image).unwrap(), fixture().image);
}
