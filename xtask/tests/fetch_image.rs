//! `cargo xtask fetch-image` against a loopback release server that serves a
//! Flatcar-shaped tree made at test time: version.txt files, a few-MB image,
//! DIGESTS, and OpenPGP signatures by a key generated here with gpg (one good
//! signing subkey, one that expired after signing, one that had expired before
//! it signed, one revoked, and another key altogether). The real verifier runs;
//! nothing reaches beyond 127.0.0.1.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use xtask::testbed::release_tree::{self, Digests, Image, Release, Served, Signature};
use xtask::testbed::signer::{Signer, Signing};

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
    /// The test key as it was before its current signing subkey was added: the
    /// primary and one other subkey only (a cache made before a rotation holds this).
    key_before_rotation: Vec<u8>,
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

/// A few MB that do not compress away.
fn image_bytes() -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..IMAGE_SIZE)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// The test key, made ten days ago: a good signing subkey, one that expired after
/// it signed, one that had expired before it signed, and one revoked (in that
/// order). The revocation and the expiry are set by [`retire_subkeys`], after the
/// releases are signed.
struct Keys {
    signer: Signer,
    t0: u64,
    expired_after: String,
    expired_before: String,
    revoked: String,
}

fn make_keys() -> Keys {
    let t0 = now() - 10 * 86_400;
    let signer =
        Signer::created_at("Flatcar Test Signing <test@example.invalid>", Some(t0)).unwrap();
    let subkey = || signer.add_signing_subkey(Some(t0)).unwrap();
    let (expired_after, expired_before, revoked) = (subkey(), subkey(), subkey());
    Keys {
        signer,
        t0,
        expired_after,
        expired_before,
        revoked,
    }
}

/// Two subkeys expire a day after t0 + 2h (one signed before that, one after); the
/// fourth is revoked.
fn retire_subkeys(keys: &Keys) {
    let expiring = [keys.expired_after.as_str(), keys.expired_before.as_str()];
    keys.signer
        .expire_subkeys(Some(keys.t0 + 7200), "1d", &expiring)
        .unwrap();
    keys.signer.revoke_subkey(4).unwrap();
    let listing = keys.signer.listing().unwrap();
    let subkey_validity: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with("sub:"))
        .map(|l| l.split(':').nth(1).unwrap())
        .collect();
    assert_eq!(subkey_validity, ["u", "e", "e", "r"], "{listing}");
}

fn make_fixture() -> Fixture {
    let parent = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    remove_stale_fixtures(&parent);
    let base = parent.join(format!("fetch-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let root = base.join("www");
    let work = base.join("work");
    std::fs::create_dir_all(&work).unwrap();

    let keys = make_keys();
    let other = Signer::created_at("Other Signer <other@example.invalid>", Some(keys.t0)).unwrap();
    let image = image_bytes();
    let img = work.join(IMG);
    std::fs::write(&img, &image).unwrap();
    let bz2 = work.join(format!("{IMG}.bz2"));
    let out = Command::new("bzip2")
        .arg("-kc")
        .arg(&img)
        .output()
        .expect("running bzip2");
    assert!(out.status.success());
    std::fs::write(&bz2, &out.stdout).unwrap();

    let good = keys.signer.signing();
    write_releases(&root, &img, &bz2, good, other.signing());
    // Signed by the subkeys that are retired next, at times around their retirement.
    for (version, subkey, at) in [
        ("4081.2.5", &keys.expired_before, Some(keys.t0 + 5 * 86_400)),
        ("4081.2.6", &keys.revoked, None),
        ("4081.2.7", &keys.expired_after, Some(keys.t0 + 3600)),
    ] {
        let signing = Signing {
            subkey: Some(subkey),
            at,
            ..good
        };
        write_release(&root, version, vec![signed(IMG, &img, signing)]);
    }
    // A good subkey's signature over a SHA-1 digest, which can be forged.
    let sha1_signature = gpg_in(
        keys.signer.home(),
        &[
            "--armor",
            "--digest-algo",
            "SHA1",
            "--local-user",
            &format!("{}!", keys.signer.subkey()),
            "--detach-sign",
            "--output",
            "-",
            img.to_str().unwrap(),
        ],
    );
    let sha1_signature: &'static str = Box::leak(String::from_utf8(sha1_signature).unwrap().into());
    write_release(
        &root,
        "4081.2.16",
        vec![Image {
            signature: Signature::Text(sha1_signature),
            ..signed(IMG, &img, good)
        }],
    );
    let key_before_rotation = gpg_in(
        keys.signer.home(),
        &["--armor", "--export", &format!("{}!", keys.expired_after)],
    );
    retire_subkeys(&keys);

    let key = root.join("keys").join("test-key.asc");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    keys.signer.write_public_key(&key, true).unwrap();
    Fixture {
        root,
        key,
        image,
        primary: keys.signer.fingerprint().to_owned(),
        key_before_rotation,
    }
}

/// gpg's stdout, run in the GnuPG home `home`.
fn gpg_in(home: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--no-tty", "--yes"])
        .args(args)
        .output()
        .expect("running gpg");
    assert!(
        out.status.success(),
        "gpg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `name` with its `.sig` by `signing` and a DIGESTS: a release made the most usual way.
fn signed<'a>(name: &'a str, source: &'a Path, signing: Signing<'a>) -> Image<'a> {
    Image {
        signature: Signature::By(signing),
        ..Image::new(name, source)
    }
}

fn write_release(root: &Path, version: &str, images: Vec<Image>) {
    let release = Release {
        build_id: "2024-10-16-1733",
        images,
        ..Release::new("stable", "amd64", version)
    };
    release_tree::write(root, &release).unwrap();
}

/// Every release of the tree but those signed by retired subkeys.
fn write_releases<'a>(
    root: &Path,
    img: &'a Path,
    bz2: &'a Path,
    good: Signing<'a>,
    other: Signing<'a>,
) {
    let current = Release {
        build_id: "2024-10-16-1733",
        images: vec![signed(IMG, img, good), signed(UEFI_IMG, img, good)],
        current: true,
        ..Release::new("stable", "amd64", "4081.2.0")
    };
    release_tree::write(root, &current).unwrap();
    let bz2_name = format!("{IMG}.bz2");
    let faulty = |change: fn(&mut Image)| {
        let mut image = signed(IMG, img, good);
        change(&mut image);
        vec![image]
    };
    for (version, images) in [
        ("4080.1.0", vec![signed(IMG, img, good)]),
        ("4081.2.1", faulty(|i| i.served = Served::FlippedByte)),
        ("4081.2.2", faulty(|i| i.digests = Digests::WrongSha512)),
        ("4081.2.3", faulty(|i| i.digests = Digests::WithoutSha512)),
        ("4081.2.4", vec![signed(IMG, img, other)]),
        // Only the .bz2 (older releases).
        ("4081.2.8", vec![signed(&bz2_name, bz2, good)]),
        // No .sig; a clear-signed DIGESTS instead (by the key, then by another key).
        ("4081.2.9", vec![clearsigned(img, good)]),
        ("4081.2.10", vec![clearsigned(img, other)]),
        // A release directory without any image.
        ("4081.2.12", vec![]),
        ("4081.2.13", faulty(|i| i.served = Served::Missing)),
        // No signature of any kind.
        ("4081.2.14", faulty(|i| i.signature = Signature::Missing)),
        (
            "4081.2.15",
            faulty(|i| i.signature = Signature::Text("<html>Not Found</html>\n")),
        ),
    ] {
        write_release(root, version, images);
    }
    let moved = Release {
        version_txt: Some("<html><body>Moved</body></html>\n"),
        ..Release::new("stable", "amd64", "4081.2.11")
    };
    release_tree::write(root, &moved).unwrap();
}

fn clearsigned<'a>(source: &'a Path, signing: Signing<'a>) -> Image<'a> {
    Image {
        clearsigned_digests: Some(signing),
        ..Image::new(IMG, source)
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
    // Warnings still appear: this test trusts a key file instead of the pinned key.
    assert!(
        run.stderr
            .lines()
            .all(|l| l.starts_with("WARNING: the image's signature is checked against the key in")),
        "--quiet prints nothing but warnings on success: {}",
        run.stderr
    );
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

/// A cache made before the key gained its current signing subkey: the key is
/// fetched again (same fingerprint), once, and the run says so.
#[test]
fn finding_4_the_pinned_key_is_refreshed_when_a_signature_names_an_unknown_subkey() {
    let s = setup();
    let cached_key = s
        .cache()
        .join("keys")
        .join(format!("{}.asc", fixture().primary));
    std::fs::create_dir_all(cached_key.parent().unwrap()).unwrap();
    std::fs::write(&cached_key, &fixture().key_before_rotation).unwrap();
    let pinned = |cmd: &mut Command| {
        cmd.env_remove("FLATCAR_SIGNING_KEY")
            .env(
                "FLATCAR_SIGNING_KEY_URL",
                format!("{}/keys/test-key.asc", s.server.url()),
            )
            .env("FLATCAR_SIGNING_KEY_FINGERPRINT", &fixture().primary);
    };
    let mut cmd = s.fetch();
    pinned(&mut cmd);
    let run = Run::of(cmd.args(["stable", "4081.2.0"])).ok();
    assert!(
        run.stderr.contains("the key was refreshed"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read(&cached_key).unwrap(),
        std::fs::read(&fixture().key).unwrap()
    );
    assert_eq!(s.server.requests_for("/keys/test-key.asc").len(), 1);

    // A fresh cached key is used as it is: no second fetch.
    s.server.clear_requests();
    let mut cmd = s.fetch();
    pinned(&mut cmd);
    let run = Run::of(cmd.args(["stable", "4081.2.7"])).ok();
    assert!(!run.stderr.contains("refreshed"), "{}", run.stderr);
    assert_eq!(s.server.requests_for("/keys/test-key.asc"), []);
}

/// Every run that trusts a key other than Flatcar's pinned one says so, the
/// cache hit included.
#[test]
fn finding_7_a_replaced_trust_anchor_is_warned_about_every_run() {
    let s = setup();
    for _ in 0..2 {
        let run = Run::of(s.fetch().args(["stable", "4081.2.0"])).ok();
        assert!(
            run.stderr.contains(&format!(
                "WARNING: the image's signature is checked against the key in {}",
                fixture().key.display()
            )) && run
                .stderr
                .contains(&format!("NOT Flatcar's pinned image-signing key {PINNED}")),
            "{}",
            run.stderr
        );
    }
}

/// gpgv accepts SHA-1 signatures unless told not to.
#[test]
fn finding_14_a_sha1_signature_is_refused() {
    let s = setup();
    Run::of(s.fetch().args(["stable", "4081.2.16"]))
        .fails(1, &["digest algorithm refused as too weak", "deleted"]);
    assert_nothing_trusted(s.cache());
}

/// A `.part` planted as a link to someone's file: the download neither writes
/// through it nor moves it into place with a record.
#[test]
fn finding_3_a_planted_part_symlink_is_not_followed() {
    let s = setup();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let dir = s.cache().join("stable/4081.2.0/amd64");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join(format!("{IMG}.part"))).unwrap();
    Run::of(s.fetch().args(["stable", "4081.2.0"]))
        .fails(1, &[&format!("{IMG}.part is a symbolic link"), "Remove it"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_nothing_trusted(s.cache());
}

/// A `.lock` planted as a link to someone's file is neither followed nor truncated.
#[test]
fn finding_3_a_planted_lock_symlink_in_the_cache_is_not_followed() {
    let s = setup();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let dir = s.cache().join("stable/4081.2.0/amd64");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join(".lock")).unwrap();
    Run::of(s.fetch().args(["stable", "4081.2.0"])).fails(1, &[".lock is a symbolic link"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_nothing_trusted(s.cache());
}

/// A cache entry directory others can write to, or one that is a link out of
/// the cache, is refused before anything is downloaded into it.
#[test]
fn finding_3_a_cache_directory_writable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup();
    let version_dir = s.cache().join("stable/4081.2.0");
    std::fs::create_dir_all(&version_dir).unwrap();
    std::fs::set_permissions(&version_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    Run::of(s.fetch().args(["stable", "4081.2.0"])).fails(
        1,
        &[
            &format!("{} is writable by other users", version_dir.display()),
            "chmod go-w",
        ],
    );
    assert_eq!(s.server.requests_for(&image_url_path("4081.2.0")), []);

    let outside = tempfile::tempdir().unwrap();
    std::fs::remove_dir(&version_dir).unwrap();
    std::os::unix::fs::symlink(outside.path(), &version_dir).unwrap();
    Run::of(s.fetch().args(["stable", "4081.2.0"])).fails(1, &["is not a directory"]);
    assert_eq!(files_under(outside.path()), Vec::<PathBuf>::new());
    assert_nothing_trusted(s.cache());
}

/// A redirect is followed and the URL that served the bytes is recorded (stdout
/// and the cache record); a redirect loop ends after three hops. (An https to
/// http downgrade is refused too: see `net::download`'s unit test, as the test
/// bed serves http only.)
#[test]
fn finding_5_redirects_are_capped_and_the_final_url_is_recorded() {
    let s = setup();
    let path = image_url_path("4081.2.0");
    s.server
        .redirect(&path, 302, &format!("{path}?via=mirror"), 1);
    let run = Run::of(s.fetch().args(["stable", "4081.2.0", "--format", "json"])).ok();
    let final_url = format!("{}{path}?via=mirror", s.server.url());
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["final_url"], final_url.as_str(), "{}", run.stdout);
    let record = cached_image(s.cache(), "4081.2.0").with_file_name(format!("{IMG}.verified.json"));
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    assert_eq!(record["final_url"], final_url.as_str());
    // The cache hit says the same.
    let run = Run::of(s.fetch().args(["stable", "4081.2.0", "--format", "json"])).ok();
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["final_url"], final_url.as_str());

    let s = setup();
    s.server.redirect(&path, 301, &path, 10);
    Run::of(s.fetch().args(["stable", "4081.2.0"])).fails(1, &["redirected more than 3 times"]);
    assert_eq!(s.server.requests_for(&path).len(), 4);
    assert_nothing_trusted(s.cache());
}

/// An endless body without a Content-Length stops at the cap and leaves nothing.
#[test]
fn finding_6_an_endless_body_stops_at_the_size_cap_and_leaves_nothing() {
    let s = setup();
    let path = image_url_path("4081.2.0");
    s.server.endless_body(&path);
    let cap = 4 * MIB;
    Run::of(
        s.fetch()
            .args(["stable", "4081.2.0"])
            .env("FLATCAR_MAX_IMAGE_SIZE", cap.to_string()),
    )
    .fails(
        1,
        &[
            &format!("sent more than the {cap} bytes allowed (--max-image-size)"),
            "deleted",
        ],
    );
    assert_nothing_trusted(s.cache());
    assert_no_partial_download(s.cache());
}

/// A server that stops sending without closing ends at the stall timeout, and
/// retries end at the overall deadline.
#[test]
fn finding_6_a_stalled_download_ends_at_the_stall_timeout_and_the_deadline() {
    let s = setup();
    let path = image_url_path("4081.2.0");
    s.server.stall_after(&path, MIB);
    let started = std::time::Instant::now();
    Run::of(s.fetch().args([
        "stable",
        "4081.2.0",
        "--retries",
        "0",
        "--stall-timeout",
        "1",
    ]))
    .fails(1, &["no data for 1 s", "(--stall-timeout)"]);
    assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    assert_nothing_trusted(s.cache());

    let run = Run::of(
        s.fetch()
            .args(["stable", "4081.2.0", "--stall-timeout", "1"])
            .env("FLATCAR_RETRIES", "10")
            .env("FLATCAR_DOWNLOAD_DEADLINE", "1"),
    )
    .fails(1, &["the deadline of 1 s (--download-deadline) would pass"]);
    assert!(!run.stderr.contains("gave up after 11"), "{}", run.stderr);
    assert_nothing_trusted(s.cache());
}
