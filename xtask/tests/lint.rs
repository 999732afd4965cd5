//! `cargo xtask lint` with the real shellcheck, yamllint, ansible-lint, rustfmt and
//! clippy: against the repository, and against broken copies of its image
//! definitions. Only `--fix` may change a file, and only a JSON file that is not
//! canonical.

mod support;

use std::os::unix::fs::PermissionsExt;
use support::{
    both, check, copy_of_repository, edit, path_without, report, snapshot, stderr, stdout, xtask,
    xtask_in,
};

#[test]
fn the_repository_is_lint_clean() {
    let out = xtask().args(["lint", "--format", "json"]).output().unwrap();
    let r = report(&out);
    for (name, target) in [
        ("shellcheck", "scripts"),
        ("yamllint", "files"),
        ("json-format", "files"),
        ("rustfmt", "cargo fmt"),
        ("clippy", "cargo clippy"),
    ] {
        assert_eq!(check(&r, name, target)["result"], "pass", "{r:#}");
    }
    assert_ne!(
        check(&r, "ansible-lint", "images/capi/ansible")["result"],
        "fail",
        "{r:#}"
    );
    assert!(out.status.success(), "{}", both(&out));
    // Every script of the repository is checked, not only those under images/capi.
    let scripts = check(&r, "shellcheck", "scripts")["target"]
        .as_str()
        .unwrap();
    let count: usize = scripts.split(' ').next().unwrap().parse().unwrap();
    assert!(
        count >= 4,
        "hack/pre-commit, .ci/run and the shims: {scripts}"
    );
}

#[test]
fn broken_yaml_is_reported_at_its_line_and_column() {
    let repo = copy_of_repository();
    let file = "images/capi/ansible/roles/node/tasks/main.yml";
    let path = repo.path().join(file);
    let mut text = std::fs::read_to_string(&path).unwrap();
    let line = text.lines().count() + 2;
    text.push_str("- name: Broken\n  ansible.builtin.debug: {msg: [\n");
    std::fs::write(&path, &text).unwrap();
    let out = xtask_in(repo.path(), &["lint"], None);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{file}:{}:", line + 1)) && err.contains("syntax error"),
        "yamllint names the file, line and column:\n{}",
        both(&out)
    );
}

#[test]
fn a_shellcheck_warning_is_located() {
    let repo = copy_of_repository();
    let script = repo.path().join("images/capi/hack/greet");
    std::fs::write(&script, "#!/bin/sh\n# Greets.\necho hello $1\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = xtask_in(repo.path(), &["lint"], None);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stderr(&out)
            .contains("images/capi/hack/greet:3:12: note: Double quote to prevent globbing"),
        "a script found by its shebang, checked, located:\n{}",
        both(&out)
    );
}

#[test]
fn json_formatting_is_reported_and_fix_rewrites_only_that_file() {
    let repo = copy_of_repository();
    let file = "images/capi/packer/config/common.json";
    let path = repo.path().join(file);
    let canonical = std::fs::read(&path).unwrap();
    // Keys out of order and a four-space indent.
    let value: serde_json::Value = serde_json::from_slice(&canonical).unwrap();
    let object = value.as_object().unwrap();
    let lines: Vec<String> = object
        .iter()
        .rev()
        .map(|(k, v)| format!("    {}: {}", serde_json::json!(k), v))
        .collect();
    std::fs::write(&path, format!("{{\n{}\n}}\n", lines.join(",\n"))).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();

    let out = xtask_in(repo.path(), &["lint"], None);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stderr(&out).contains(&format!("{file}:2: not canonically formatted")),
        "{}",
        both(&out)
    );

    let before = snapshot(repo.path());
    let out = xtask_in(repo.path(), &["lint", "--fix"], None);
    assert!(out.status.success(), "{}", both(&out));
    assert!(stderr(&out).contains(&format!("rewrote {file} in canonical form")));
    let after = snapshot(repo.path());
    let changed: Vec<_> = before
        .keys()
        .chain(after.keys())
        .filter(|f| before.get(*f) != after.get(*f))
        .collect();
    assert_eq!(
        changed,
        vec![std::path::Path::new(file), std::path::Path::new(file)],
        "only the one file changed"
    );
    assert_eq!(std::fs::read(&path).unwrap(), canonical);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the rewrite keeps the file's mode");
}

#[test]
fn lint_without_fix_modifies_nothing() {
    let repo = copy_of_repository();
    edit(
        repo.path(),
        "images/capi/packer/config/cni.json",
        "{\n",
        "{\n    \"zz\": \"1\",\n",
    );
    let before = snapshot(repo.path());
    let out = xtask_in(repo.path(), &["lint", "--no-cache"], None);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(before == snapshot(repo.path()), "lint changed files");
}

#[test]
fn missing_linters_are_not_run_and_only_a_required_one_fails_the_run() {
    let repo = copy_of_repository();

    let path = path_without(&["ansible-lint"]);
    let out = xtask_in(
        repo.path(),
        &["lint", "--format", "json"],
        Some(path.path()),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "ansible-lint is optional: {}",
        both(&out)
    );
    let r = report(&out);
    let ansible_lint = check(&r, "ansible-lint", "ansible");
    assert_eq!(ansible_lint["result"], "not-run");
    assert_eq!(ansible_lint["optional"], true);

    let path = path_without(&["yamllint"]);
    let out = xtask_in(repo.path(), &["lint"], Some(path.path()));
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        stderr(&out).contains("to install: sudo apt-get install yamllint"),
        "{}",
        both(&out)
    );
    assert!(stderr(&out).contains("NOT RUN"), "{}", both(&out));
    assert_eq!(stdout(&out), "", "the table is for people: on stderr");
}
