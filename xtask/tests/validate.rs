//! `cargo xtask validate` with the real packer, ansible-playbook and
//! ignition-validate: against the repository, and against broken copies of its
//! image definitions (one kind of breakage per test), asserting where each error is
//! reported and the exit status.

mod support;

use std::path::Path;

use support::{
    both, check, copy_of_repository, edit, path_without, position_of, report, snapshot, stderr,
    xtask, xtask_in,
};

fn validate(root: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["validate"];
    args.extend_from_slice(extra);
    xtask_in(root, &args, None)
}

#[test]
fn the_repository_validates_and_a_second_run_reuses_the_passes() {
    let run = |extra: &[&str]| {
        let mut command = xtask();
        command.args(["validate", "--format", "json"]).args(extra);
        command.output().unwrap()
    };
    let first = run(&["--no-cache"]);
    assert!(first.status.success(), "{}", both(&first));
    let first = report(&first);
    for (name, target) in [
        ("json", "images/capi"),
        ("layering", "qemu-flatcar"),
        ("layering", "ami-flatcar"),
        ("packer validate", "qemu-flatcar"),
        ("packer validate", "ami-flatcar"),
        ("syntax-check", "ansible/node.yml"),
        ("syntax-check", "ansible/sysprep.yml"),
        ("ignition-validate", "packer/files/flatcar/ignition.json"),
        ("yaml", "files"),
        ("node rules", "qemu-flatcar"),
    ] {
        let c = check(&first, name, target);
        assert_eq!(c["result"], "pass", "{c:#}");
        assert_eq!(c["cached"], false, "--no-cache runs everything: {c:#}");
    }

    let second = run(&[]);
    assert!(second.status.success(), "{}", both(&second));
    let second = report(&second);
    for c in second["checks"].as_array().unwrap() {
        assert_eq!(c["result"], "pass", "{c:#}");
        assert_eq!(
            c["cached"], true,
            "nothing changed since the last pass: {c:#}"
        );
    }
}

#[test]
fn the_report_has_a_stable_json_shape() {
    let repo = copy_of_repository();
    let out = validate(
        repo.path(),
        &["--format", "json", "--target", "qemu-flatcar"],
    );
    assert!(out.status.success(), "{}", both(&out));
    let r = report(&out);
    assert_eq!(r["command"], "validate");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["failed"], 0);
    assert_eq!(r["not_run"], 0);
    assert!(r["seconds"].is_f64());
    let names: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "json",
            "layering",
            "packer validate",
            "syntax-check",
            "syntax-check",
            "ignition-validate",
            "yaml",
            "node rules"
        ],
        "--target qemu-flatcar leaves out ami-flatcar, in a stable order"
    );
    for c in r["checks"].as_array().unwrap() {
        let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "cached", "check", "hint", "notes", "optional", "problems", "reason", "result",
                "seconds", "target"
            ]
        );
    }
}

#[test]
fn broken_json_is_reported_at_its_line_and_column_and_the_other_checks_still_run() {
    let repo = copy_of_repository();
    let file = "images/capi/packer/config/cni.json";
    let text = std::fs::read_to_string(repo.path().join(file)).unwrap();
    // A trailing comma after the last setting: the error is at the closing brace.
    let broken = text.trim_end().trim_end_matches('}').trim_end().to_owned() + ",\n}\n";
    std::fs::write(repo.path().join(file), &broken).unwrap();
    let brace_line = broken.lines().count();

    let out = validate(repo.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{file}:{brace_line}:1: trailing comma")),
        "{}",
        both(&out)
    );
    assert!(
        err.contains(&format!("{brace_line} | }}")),
        "the offending line is shown:\n{err}"
    );

    let out = validate(repo.path(), &["--format", "json"]);
    let r = report(&out);
    let json = check(&r, "json", "images/capi");
    assert_eq!(json["result"], "fail");
    assert_eq!(json["problems"][0]["file"], file);
    assert_eq!(json["problems"][0]["line"], brace_line);
    assert_eq!(json["problems"][0]["column"], 1);
    // The checks that do not read cni.json still ran and passed.
    assert_eq!(
        check(&r, "ignition-validate", "ignition.json")["result"],
        "pass"
    );
    assert_eq!(check(&r, "syntax-check", "node.yml")["result"], "pass");
}

#[test]
fn a_task_file_only_included_at_run_time_must_parse_too() {
    let repo = copy_of_repository();
    let file = "images/capi/ansible/roles/node/tasks/flatcar.yml";
    let path = repo.path().join(file);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("- name: [unclosed\n");
    std::fs::write(&path, &text).unwrap();
    let end = text.lines().count() + 1;
    let out = validate(repo.path(), &["--target", "qemu-flatcar"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{file}:{end}:1: YAML syntax error: while parsing a flow sequence"
        )),
        "{}",
        both(&out)
    );
}

#[test]
fn node_rules_outside_the_supported_subset_are_located() {
    let repo = copy_of_repository();
    let file = "images/capi/packer/goss/node.yaml";
    edit(
        repo.path(),
        file,
        "    running: true\n",
        "    running: true\n    sha256: abc\n",
    );
    edit(
        repo.path(),
        file,
        "    stdout: [\"{{ .Vars.cni_version }}\"]\n",
        "    stdout: [\"{{ .Vars.cni_versoin }}\"]\n",
    );
    let (key_line, key_column) = position_of(repo.path(), file, "sha256: abc");
    let (var_line, var_column) = position_of(repo.path(), file, "\"{{ .Vars.cni_versoin }}\"");
    let out = validate(repo.path(), &["--target", "qemu-flatcar"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{file}:{key_line}:{key_column}: `sha256` is not a supported attribute of `service`"
        )),
        "{}",
        both(&out)
    );
    assert!(
        err.contains(&format!(
            "{file}:{var_line}:{var_column}: `{{{{ .Vars.cni_versoin }}}}`: `cni_versoin` is not a variable the build supplies"
        )),
        "{}",
        both(&out)
    );
}

#[test]
fn a_missing_var_file_is_named() {
    let repo = copy_of_repository();
    std::fs::remove_file(repo.path().join("images/capi/packer/config/common.json")).unwrap();
    let out = validate(repo.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stderr(&out).contains(
            "images/capi/packer/config/common.json: missing var file: build target `qemu-flatcar` layers it, but it does not exist"
        ),
        "{}",
        both(&out)
    );
}

#[test]
fn an_undefined_variable_is_reported_with_its_file_and_line() {
    let repo = copy_of_repository();
    let file = "images/capi/packer/qemu/packer.json";
    edit(repo.path(), file, "{{user `memory`}}", "{{user `memroy`}}");
    let (line, column) = position_of(repo.path(), file, "{{user `memroy`}}");
    let out = validate(repo.path(), &["--target", "qemu-flatcar"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{file}:{line}:{column}: `{{{{user `memroy`}}}}`: no variable `memroy` is declared in packer/qemu/packer.json"
        )),
        "{}",
        both(&out)
    );
}

#[test]
fn a_var_file_setting_an_undeclared_variable_is_reported() {
    let repo = copy_of_repository();
    let file = "images/capi/packer/config/kubernetes.json";
    edit(
        repo.path(),
        file,
        "{\n",
        "{\n  \"kubernetes_versoin\": \"1.36.2\",\n",
    );
    let out = validate(repo.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let err = stderr(&out);
    for template in ["packer/qemu/packer.json", "packer/ami/packer.json"] {
        assert!(
            err.contains(&format!(
                "{file}:2:3: sets `kubernetes_versoin`, which {template} does not declare"
            )),
            "{}",
            both(&out)
        );
    }
}

#[test]
fn broken_yaml_is_located_by_the_syntax_check() {
    let repo = copy_of_repository();
    let file = "images/capi/ansible/roles/node/tasks/main.yml";
    let path = repo.path().join(file);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("- name: Broken\n  ansible.builtin.debug: {msg: [\n");
    std::fs::write(&path, &text).unwrap();
    let out = validate(repo.path(), &["--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let r = report(&out);
    let syntax = check(&r, "syntax-check", "node.yml");
    assert_eq!(syntax["result"], "fail", "{syntax:#}");
    assert_eq!(syntax["problems"][0]["file"], file, "{syntax:#}");
    assert!(syntax["problems"][0]["line"].as_u64().unwrap() >= 1);
    // sysprep.yml does not include the node role: it still passes.
    assert_eq!(check(&r, "syntax-check", "sysprep.yml")["result"], "pass");
}

#[test]
fn an_ignition_config_of_unknown_version_is_pinned_to_its_version() {
    let repo = copy_of_repository();
    let file = "images/capi/packer/files/flatcar/ignition.json";
    edit(repo.path(), file, "\"3.3.0\"", "\"9.9.9\"");
    let (line, column) = position_of(repo.path(), file, "\"9.9.9\"");
    let out = validate(repo.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{file}:{line}:{column}: Ignition config version \"9.9.9\" is not one this ignition-validate accepts"
        )),
        "{}",
        both(&out)
    );
}

#[test]
fn a_builder_type_that_is_not_installed_is_located_in_the_template() {
    let repo = copy_of_repository();
    let file = "images/capi/packer/qemu/packer.json";
    edit(
        repo.path(),
        file,
        "\"type\": \"qemu\"",
        "\"type\": \"qemu-nonexistent\"",
    );
    let (line, column) = position_of(repo.path(), file, "\"qemu-nonexistent\"");
    let out = validate(repo.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{file}:{line}:{column}: builder type `qemu-nonexistent` is not available to this Packer"
        )),
        "{}",
        both(&out)
    );
    // Packer's own words follow.
    assert!(err.contains("Unknown builder"), "{err}");
}

#[test]
fn a_missing_tool_makes_its_check_not_run_with_an_install_hint() {
    let repo = copy_of_repository();
    let path = path_without(&["ignition-validate"]);
    let out = xtask_in(
        repo.path(),
        &["validate", "--format", "json"],
        Some(path.path()),
    );
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    let r = report(&out);
    let ignition = check(&r, "ignition-validate", "ignition.json");
    assert_eq!(ignition["result"], "not-run");
    assert_eq!(ignition["reason"], "ignition-validate is not installed");
    assert_eq!(ignition["hint"], "sudo apt-get install ignition");
    assert_eq!(check(&r, "layering", "qemu-flatcar")["result"], "pass");

    let out = xtask_in(repo.path(), &["validate"], Some(path.path()));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("NOT RUN ignition-validate"), "{err}");
    assert!(
        err.contains("to install: sudo apt-get install ignition"),
        "{err}"
    );

    let out = xtask_in(
        repo.path(),
        &["validate", "--allow-missing"],
        Some(path.path()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert!(
        stderr(&out).contains("NOT RUN"),
        "still reported as not run, never as passed"
    );
    assert_eq!(
        support::stdout(&out),
        "",
        "the table is for people: stdout carries data only"
    );
}

#[test]
fn validate_modifies_nothing() {
    let repo = copy_of_repository();
    edit(
        repo.path(),
        "images/capi/packer/config/cni.json",
        "{\n",
        "{\n  \"x\": 1,\n",
    );
    let before = snapshot(repo.path());
    let out = validate(repo.path(), &["--no-cache"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(before == snapshot(repo.path()), "validate changed files");
}

#[test]
fn bad_usage_exits_2() {
    let repo = copy_of_repository();
    let out = validate(repo.path(), &["--target", "vmware-flatcar"]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    let empty = tempfile::tempdir().unwrap();
    let out = validate(empty.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(stderr(&out).contains("has no images/capi/packer"));
}
