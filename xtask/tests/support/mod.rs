//! What the integration tests share, on top of the library's test bed
//! (`xtask::testbed`): the real xtask binary, the loopback file server with a
//! test's error handling, copies of the repository's image definitions to break, a
//! PATH without some tools, a snapshot of a tree to prove nothing changed, and the
//! readers of a run's output.

#![allow(dead_code)] // each test binary uses its own subset of these helpers

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use serde_json::Value;

pub use xtask::workspace::project_root;

/// The xtask binary cargo built for this test run.
pub fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

/// The test bed's file server, started the way a test wants it: a failure to start
/// is the test's failure.
pub struct FileServer {
    pub port: u16,
    server: xtask::testbed::server::FileServer,
}

impl FileServer {
    pub fn start(root: &Path) -> FileServer {
        let server = xtask::testbed::server::FileServer::start(root)
            .unwrap_or_else(|e| panic!("starting a file server for {}: {e:#}", root.display()));
        FileServer {
            port: server.port(),
            server,
        }
    }
}

impl std::ops::Deref for FileServer {
    type Target = xtask::testbed::server::FileServer;

    fn deref(&self) -> &Self::Target {
        &self.server
    }
}

/// A temporary repository holding a copy of images/capi and the linters' configs.
pub fn copy_of_repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let source = project_root();
    copy_dir(&source.join("images/capi"), &dir.path().join("images/capi"));
    for config in [".yamllint", ".ansible-lint"] {
        if source.join(config).exists() {
            std::fs::copy(source.join(config), dir.path().join(config)).unwrap();
        }
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "output" {
            continue;
        }
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// Replaces the first `from` in `root/file` with `to`; the text must be there.
pub fn edit(root: &Path, file: &str, from: &str, to: &str) {
    let path = root.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} does not contain {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

/// The 1-based line and column of the first `needle` in `root/file`.
pub fn position_of(root: &Path, file: &str, needle: &str) -> (usize, usize) {
    let text = std::fs::read_to_string(root.join(file)).unwrap();
    for (n, line) in text.lines().enumerate() {
        if let Some(at) = line.find(needle) {
            return (n + 1, line[..at].chars().count() + 1);
        }
    }
    panic!("{needle:?} is not in {file}");
}

/// Runs `cargo xtask <args> --root <root>`, with `path` as PATH when given (and then
/// no project-local toolchain either, so that a tool left out of `path` is missing).
pub fn xtask_in(root: &Path, args: &[&str], path: Option<&Path>) -> Output {
    let mut command = xtask();
    command.args(args).arg("--root").arg(root);
    if let Some(path) = path {
        command
            .env("PATH", path)
            .env("FLATCAR_TOOLCHAIN_DIR", root.join(".no-toolchain"));
    }
    command.output().unwrap()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Both streams, for assertion messages.
pub fn both(output: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        stdout(output),
        stderr(output)
    )
}

/// The `--format json` report.
pub fn report(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", both(output)))
}

/// The report's entry for `check` on `target` (a substring of the target).
pub fn check<'a>(report: &'a Value, check: &str, target: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check && c["target"].as_str().unwrap().contains(target))
        .unwrap_or_else(|| panic!("no {check} check for {target} in {report:#}"))
}

/// A directory to use as PATH: links to every program of the usual PATH
/// directories except `missing`.
pub fn path_without(missing: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var_os("PATH").unwrap();
    for source in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&source) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if missing.iter().any(|m| name == *m) {
                continue;
            }
            let link = dir.path().join(&name);
            if !link.exists() {
                let _ = symlink(entry.path(), link);
            }
        }
    }
    dir
}

/// Every file under `root` with its content and modification time.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let meta = e.metadata().unwrap();
            (
                e.path().strip_prefix(root).unwrap().to_path_buf(),
                (std::fs::read(e.path()).unwrap(), meta.modified().unwrap()),
            )
        })
        .collect()
}
