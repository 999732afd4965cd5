//! Tests that guard the repository itself: the README's quick start is two real
//! commands and CI runs its test command, every `cargo xtask` command the README names
//! exists, the Rust code is formatted and clippy-clean, and no to-do marker is left
//! without an issue reference.

mod support;

use std::process::Command;

use support::{project_root, xtask};

fn help(args: &[&str]) -> String {
    let out = xtask().args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands listed by the top-level help, in order.
fn subcommands(top: &str) -> Vec<String> {
    top.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

fn readme() -> String {
    std::fs::read_to_string(project_root().join("README.md")).unwrap()
}

/// The commands of the README's quick start: the lines of its first code block.
fn quick_start(readme: &str) -> Vec<String> {
    let section = readme
        .split_once("## Quick start")
        .expect("README.md has no Quick start section")
        .1;
    let block = section
        .split_once("```sh\n")
        .expect("the Quick start has no ```sh block")
        .1
        .split_once("```")
        .expect("the Quick start's code block is not closed")
        .0;
    block
        .lines()
        .map(|l| l.split('#').next().unwrap().trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_quick_start_is_one_build_and_one_test_command_and_ci_runs_the_test_command() {
    let readme = readme();
    let commands = quick_start(&readme);
    assert_eq!(
        commands.len(),
        2,
        "the Quick start should be exactly two commands: {commands:?}"
    );
    assert_eq!(commands[0], "cargo xtask build-flatcar");
    let test = &commands[1];
    let ci = std::fs::read_to_string(project_root().join(".ci/run")).unwrap();
    let ci_commands: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("cargo "))
        .collect();
    assert_eq!(
        ci_commands,
        [format!("{test} --yes")],
        ".ci/run must run the README's test command with --yes, and no other cargo command"
    );
    for forbidden in ["apt-get", "dnf ", "pacman ", "brew "] {
        assert!(
            !ci.contains(forbidden),
            ".ci/run installs packages itself ({forbidden}); the tool table is the one list"
        );
    }
}

#[test]
fn every_xtask_command_the_readme_names_exists() {
    let real = subcommands(&help(&[]));
    let readme = readme();
    let mut named = Vec::new();
    for (at, _) in readme.match_indices("cargo xtask ") {
        let rest = &readme[at + "cargo xtask ".len()..];
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '-')
            .collect();
        if !word.is_empty() && !word.starts_with('-') {
            named.push(word);
        }
    }
    assert!(named.len() > 2, "the README names no commands? {named:?}");
    let unknown: Vec<&String> = named.iter().filter(|n| !real.contains(n)).collect();
    assert!(
        unknown.is_empty(),
        "README.md names `cargo xtask` commands that do not exist: {unknown:?} (real: {real:?})"
    );
}

#[test]
fn the_readme_stays_short() {
    let lines = readme().lines().count();
    assert!(
        lines <= 120,
        "README.md has {lines} lines: keep it to what the project is, the two commands, \
         the build paths and where to go next; the command reference is `--help`"
    );
}

#[test]
fn every_subcommand_has_an_example() {
    let top = help(&[]);
    for name in subcommands(&top) {
        assert!(
            top.contains(&format!("  cargo xtask {name}")),
            "the top-level help has no example for `{name}`"
        );
        assert!(
            help(&[&name]).contains("Example: `cargo xtask "),
            "`{name} --help` has no example"
        );
    }
}

/// Runs cargo at the root without this test's package variables, which would make it
/// rebuild ring and everything above it (see `nested_cargo`).
fn cargo(args: &[&str]) -> std::process::Output {
    let sh = xshell::Shell::new().unwrap();
    Command::from(xtask::nested_cargo::command(&sh).args(args))
        .current_dir(project_root())
        .output()
        .unwrap()
}

#[test]
fn rust_code_is_formatted() {
    let out = cargo(&["fmt", "--all", "--check"]);
    assert!(
        out.status.success(),
        "cargo fmt --check:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn clippy_is_clean() {
    // A target dir of its own (the one running this test may be locked by cargo),
    // shared with `cargo xtask lint` so the two do not each build everything.
    let target = project_root().join("target").join("clippy");
    let out = cargo(&[
        "clippy",
        "--quiet",
        "--all-targets",
        "--target-dir",
        target.to_str().unwrap(),
        "--",
        "-D",
        "warnings",
    ]);
    assert!(
        out.status.success(),
        "cargo clippy:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn no_todo_without_an_issue_reference() {
    let mut bad = Vec::new();
    let root = project_root();
    for dir in ["xtask", "images", "hack", ".ci"] {
        let files = walkdir::WalkDir::new(root.join(dir))
            .into_iter()
            .filter_entry(|e| e.file_name() != "output")
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file());
        for entry in files {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for (n, line) in text.lines().enumerate() {
                if let Some(at) = line.find(concat!("TO", "DO")) {
                    if !line[at..].contains("#") {
                        bad.push(format!(
                            "{}:{}: {}",
                            entry.path().display(),
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "TODOs need an issue reference like `(#12)`:\n{}",
        bad.join("\n")
    );
}
