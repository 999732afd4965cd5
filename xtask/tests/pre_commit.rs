//! `cargo xtask pre-commit` in a throwaway git repository holding a copy of the
//! image definitions: it checks what is staged, not what is in the working tree.

mod support;

use std::path::Path;
use std::process::Command;

use support::{both, copy_of_repository, report, stderr, xtask_in};

fn git(repo: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_INDEX_FILE")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", both(&out));
}

/// A git repository with the copy committed.
fn repository() -> tempfile::TempDir {
    let repo = copy_of_repository();
    git(repo.path(), &["init", "--quiet"]);
    git(repo.path(), &["add", "--all"]);
    git(repo.path(), &["commit", "--quiet", "--message", "initial"]);
    repo
}

const CNI: &str = "images/capi/packer/config/cni.json";

fn break_json(repo: &Path) -> String {
    let path = repo.join(CNI);
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replacen("{\n", "{\n  \"oops\": ,\n", 1)).unwrap();
    good
}

fn pre_commit(repo: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["pre-commit"];
    args.extend_from_slice(extra);
    xtask_in(repo, &args, None)
}

#[test]
fn a_broken_staged_file_fails_even_when_the_working_tree_is_fine() {
    let repo = repository();
    let good = break_json(repo.path());
    git(repo.path(), &["add", CNI]);
    std::fs::write(repo.path().join(CNI), good).unwrap();

    let out = pre_commit(repo.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stderr(&out).contains(&format!("{CNI}:2:11: expected value")),
        "{}",
        both(&out)
    );
}

#[test]
fn a_fine_staged_file_passes_even_when_the_working_tree_is_broken() {
    let repo = repository();
    let path = repo.path().join(CNI);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("v1.9.1", "v1.9.2")).unwrap();
    git(repo.path(), &["add", CNI]);
    break_json(repo.path());

    let out = pre_commit(repo.path(), &["--format", "json"]);
    assert!(out.status.success(), "{}", both(&out));
    let r = report(&out);
    let ran: Vec<String> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["check"].as_str().unwrap(),
                c["target"].as_str().unwrap()
            )
        })
        .collect();
    // The checks that concern cni.json, and nothing else: both targets layer it.
    assert_eq!(
        ran,
        [
            format!("json {CNI}"),
            "layering qemu-flatcar".to_owned(),
            "packer validate qemu-flatcar".to_owned(),
            "layering ami-flatcar".to_owned(),
            "packer validate ami-flatcar".to_owned(),
            format!("json-format {CNI}"),
        ]
    );
}

#[test]
fn staged_yaml_runs_the_yaml_parse_yamllint_and_the_syntax_check_only() {
    let repo = repository();
    let file = "images/capi/ansible/roles/node/tasks/main.yml";
    let path = repo.path().join(file);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("- name: Broken\n  ansible.builtin.debug: {msg: [\n");
    std::fs::write(&path, text).unwrap();
    git(repo.path(), &["add", file]);

    let out = pre_commit(repo.path(), &["--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let r = report(&out);
    let names: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["syntax-check", "syntax-check", "yaml", "yamllint"]);
    for c in r["checks"].as_array().unwrap() {
        if c["target"].as_str().unwrap().contains("sysprep") {
            continue;
        }
        assert_eq!(c["result"], "fail", "{c:#}");
        assert_eq!(c["problems"][0]["file"], file, "{c:#}");
    }
}

#[test]
fn nothing_staged_is_nothing_to_check() {
    let repo = repository();
    break_json(repo.path());
    let out = pre_commit(repo.path(), &[]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(stderr(&out).contains("nothing staged"));
}
