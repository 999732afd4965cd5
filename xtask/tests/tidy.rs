//! Tests that guard the repository itself: the README's command reference is the
//! real `--help`, the Rust code is formatted and clippy-clean, and no to-do marker is
//! left without an issue reference.

mod support;

use std::process::Command;

use support::{project_root, xtask};

const START: &str = "<!-- command-reference:start (generated from --help by `UPDATE_EXPECT=1 cargo test --test tidy`) -->";
const END: &str = "<!-- command-reference:end -->";

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

fn reference() -> String {
    let top = help(&[]);
    let mut text = format!("```text\n$ cargo xtask --help\n{top}```\n");
    for name in subcommands(&top) {
        text += &format!(
            "\n```text\n$ cargo xtask {name} --help\n{}```\n",
            help(&[&name])
        );
    }
    text
}

#[test]
fn readme_command_reference_matches_help() {
    let path = project_root().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (before, rest) = readme
        .split_once(START)
        .expect("README.md lacks the command-reference start marker");
    let (current, after) = rest
        .split_once(END)
        .expect("README.md lacks the command-reference end marker");
    let expected = format!("\n{}", reference());
    if current != expected {
        if std::env::var_os("UPDATE_EXPECT").is_some() {
            std::fs::write(&path, format!("{before}{START}{expected}{END}{after}")).unwrap();
        } else {
            panic!(
                "README.md's command reference differs from `cargo xtask --help`; \
                 run `UPDATE_EXPECT=1 cargo test --test tidy` to regenerate it.\n--- README\n{current}\n--- help\n{expected}"
            );
        }
    }
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
