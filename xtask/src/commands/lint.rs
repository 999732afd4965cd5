//! `cargo xtask lint`: keeps the repository tidy. shellcheck on every shell script,
//! yamllint on the YAML, ansible-lint on the playbooks when it is installed,
//! canonical formatting of the JSON under images/capi (`--fix` rewrites it), and
//! rustfmt and clippy on the xtask. `plan` is also what `pre-commit` runs, on the
//! staged files.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use xshell::Shell;

use crate::checks::engine::{self as checks, Check, CheckOptions, Outcome, Problem};
use crate::checks::source_tree::{Scope, SourceTree, CAPI};
use crate::checks::tool_output::{capture, parse_located_lines, relative_output};
use crate::json_text;
use crate::{error::Exit, fsx, nested_cargo, toolchain::tools, workspace};

#[derive(clap::Args, Debug)]
pub struct LintArgs {
    /// Rewrite JSON files under images/capi that are not canonically formatted (in
    /// place, nothing else is touched); the other linters only report.
    #[arg(long)]
    fix: bool,
    #[command(flatten)]
    options: CheckOptions,
}

pub fn run(sh: &Shell, args: &LintArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let root = args.options.root()?;
    if !root.is_dir() {
        eprintln!("error: {} is not a directory", root.display());
        return Err(Exit(2).into());
    }
    let tree = SourceTree::discover(&root)?;
    let settings = Settings {
        fix: args.fix,
        report_parse_errors: true,
    };
    let checks = plan(&tree, &Scope::All, settings);
    let results = checks::run(sh, checks, &args.options);
    crate::checks::report::report("lint", &root, &results, &args.options, started)
}

/// How the lint checks behave.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Rewrite non-canonical JSON instead of reporting it.
    pub fix: bool,
    /// Report JSON that does not parse. Off when validate's `json` check runs too,
    /// so a syntax error is reported once.
    pub report_parse_errors: bool,
}

/// The lint checks that concern the files in `scope`. With every file in scope the
/// whole-repository linters run too (ansible-lint, `cargo fmt`, clippy); with a
/// set of files (pre-commit) only the per-file ones do.
pub fn plan(tree: &SourceTree, scope: &Scope, settings: Settings) -> Vec<Check> {
    let root = tree.root.clone();
    let mut checks = Vec::new();

    let scripts = scope.filter(tree.shell_scripts());
    if !scripts.is_empty() {
        checks.push(shellcheck(&root, scripts));
    }
    let yaml = scope.filter(tree.yaml_files());
    if !yaml.is_empty() {
        checks.push(yamllint(&root, yaml));
    }
    if matches!(scope, Scope::All) && !tree.playbooks().is_empty() {
        checks.push(ansible_lint(&root));
    }
    let json = scope.filter(tree.capi_json());
    if !json.is_empty() {
        checks.push(json_format(&root, json, settings));
    }
    let has_cargo = root.join("Cargo.toml").is_file();
    match scope {
        Scope::All if has_cargo => {
            checks.push(cargo_fmt(&root));
            checks.push(clippy(&root));
        }
        Scope::All => {}
        Scope::Only(_) => {
            let rust = scope.filter(tree.rust_files());
            if !rust.is_empty() {
                checks.push(rustfmt_files(&root, rust));
            }
        }
    }
    checks
}

/// "3 files", or the file's path when there is one.
fn files_label(files: &[PathBuf], what: &str) -> String {
    match files {
        [one] => one.display().to_string(),
        many => format!("{} {what}", many.len()),
    }
}

/// The first of `names` that exists under `root`.
fn config_file(root: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| root.join(n)).find(|p| p.is_file())
}

fn shellcheck(root: &Path, scripts: Vec<PathBuf>) -> Check {
    let label = files_label(&scripts, "scripts");
    let dir = root.to_path_buf();
    let files = scripts.clone();
    let mut inputs = scripts;
    inputs.push(PathBuf::from(".shellcheckrc"));
    Check::new("shellcheck", label, move |sh, tools| {
        let _dir = sh.push_dir(&dir);
        let ran = capture(
            sh.cmd(tools.path("shellcheck"))
                .args(["--format=gcc", "--external-sources"])
                .args(&files),
        )?;
        located_outcome(
            ran.success,
            &relative_output(&ran.output, &dir),
            "shellcheck",
        )
    })
    .needs(&["shellcheck"])
    .cached(root, inputs, Vec::new())
}

/// A linter's `path:line:column: message` output as an outcome; output lines not
/// in that form are kept as the detail of a problem when nothing else explains
/// the failure.
fn located_outcome(success: bool, output: &str, tool: &str) -> anyhow::Result<Outcome> {
    let (problems, other) = parse_located_lines(output);
    if success && problems.is_empty() {
        return Ok(Outcome::Pass { notes: Vec::new() });
    }
    if problems.is_empty() {
        return Ok(Outcome::Fail {
            problems: vec![Problem::new(format!("{tool} failed")).with_detail(other.join("\n"))],
            notes: Vec::new(),
        });
    }
    // Warnings that do not fail the tool are still worth reading, but pass.
    if success {
        return Ok(Outcome::Pass {
            notes: problems.iter().map(render_problem).collect(),
        });
    }
    Ok(Outcome::Fail {
        problems,
        notes: Vec::new(),
    })
}

fn render_problem(p: &Problem) -> String {
    let mut at = p.file.clone().unwrap_or_default();
    if let Some(line) = p.line {
        at += &format!(":{line}");
    }
    if let Some(column) = p.column {
        at += &format!(":{column}");
    }
    format!("{at}: {}", p.message)
}

fn yamllint(root: &Path, files: Vec<PathBuf>) -> Check {
    let label = files_label(&files, "files");
    let config = config_file(root, &[".yamllint", ".yamllint.yaml", ".yamllint.yml"]);
    let dir = root.to_path_buf();
    let lint_files = files.clone();
    let mut inputs = files;
    if let Some(config) = &config {
        inputs.push(config.strip_prefix(root).unwrap_or(config).to_path_buf());
    }
    Check::new("yamllint", label, move |sh, tools| {
        let _dir = sh.push_dir(&dir);
        let mut cmd = sh
            .cmd(tools.path("yamllint"))
            .args(["--format", "parsable"]);
        if let Some(config) = &config {
            cmd = cmd.arg("--config-file").arg(config);
        }
        let ran = capture(cmd.args(&lint_files))?;
        located_outcome(ran.success, &relative_output(&ran.output, &dir), "yamllint")
    })
    .needs(&["yamllint"])
    .cached(root, inputs, Vec::new())
}

fn ansible_lint(root: &Path) -> Check {
    let dir = root.to_path_buf();
    let config = config_file(root, &[".ansible-lint", ".config/ansible-lint.yml"]);
    let ansible = PathBuf::from(CAPI).join("ansible");
    let mut inputs = vec![ansible.clone()];
    if let Some(config) = &config {
        inputs.push(config.strip_prefix(root).unwrap_or(config).to_path_buf());
    }
    Check::new(
        "ansible-lint",
        ansible.display().to_string(),
        move |sh, tools| {
            let _dir = sh.push_dir(&dir);
            let mut cmd = sh.cmd(tools.path("ansible-lint")).args([
                "--format",
                "pep8",
                "--nocolor",
                "--offline",
            ]);
            if let Some(config) = &config {
                cmd = cmd.arg("-c").arg(config);
            }
            let ran = capture(cmd.arg(&ansible))?;
            // ansible-lint's summary ("Passed with production profile ...") is not a
            // problem; the located lines are.
            located_outcome(
                ran.success,
                &relative_output(&ran.output, &dir),
                "ansible-lint",
            )
        },
    )
    .needs(&["ansible-lint"])
    .cached(root, inputs, Vec::new())
    .slow()
}

fn json_format(root: &Path, files: Vec<PathBuf>, settings: Settings) -> Check {
    let label = files_label(&files, "files");
    let dir = root.to_path_buf();
    let check_files = files.clone();
    let check = Check::new("json-format", label, move |_, _| {
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        for file in &check_files {
            let path = dir.join(file);
            let shown = file.display().to_string();
            let bytes = std::fs::read(&path).with_context(|| format!("reading {shown}"))?;
            let Ok(text) = String::from_utf8(bytes) else {
                if settings.report_parse_errors {
                    problems.push(Problem::new("not UTF-8 text, so not JSON").in_file(&shown));
                }
                continue;
            };
            let value = match json_text::parse(&text) {
                Ok(value) => value,
                Err(err) if settings.report_parse_errors => {
                    problems.push(
                        Problem::new(format!("not valid JSON: {}", err.message))
                            .in_file(&shown)
                            .at(err.position.line, Some(err.position.column))
                            .with_detail(err.excerpt),
                    );
                    continue;
                }
                Err(_) => continue,
            };
            let canonical = json_text::canonical(&value);
            let Some(line) = json_text::first_difference(&text, &canonical) else {
                continue;
            };
            if settings.fix {
                fsx::write_atomically(&path, canonical.as_bytes())?;
                notes.push(format!("rewrote {shown} in canonical form"));
            } else {
                let found = text.split_inclusive('\n').nth(line - 1).unwrap_or("");
                let expected = canonical.split_inclusive('\n').nth(line - 1).unwrap_or("");
                problems.push(
                    Problem::new(
                        "not canonically formatted (2-space indent, keys sorted, trailing newline); `cargo xtask lint --fix` rewrites it",
                    )
                    .in_file(&shown)
                    .at(line, None)
                    .with_detail(format!(
                        "found:    {}\nexpected: {}",
                        visible(found),
                        visible(expected)
                    )),
                );
            }
        }
        Ok(Outcome::from_problems(problems, notes))
    });
    if settings.fix {
        // It writes files: a remembered pass would be about content that is gone.
        check
    } else {
        check.cached(root, files, vec![settings.report_parse_errors.to_string()])
    }
}

/// A line as a person should see it in a diff: its end made visible.
fn visible(line: &str) -> String {
    match line.strip_suffix('\n') {
        Some(body) => body.to_owned(),
        None if line.is_empty() => "(end of file)".to_owned(),
        None => format!("{line}(no newline at end of file)"),
    }
}

/// Whether `cargo <subcommand>` works (with the cargo that runs us, so the same
/// toolchain formats and lints, else the one on PATH); otherwise why not and the fix.
fn cargo_component(sh: &Shell, subcommand: &str, component: &str) -> Result<(), Outcome> {
    let ran = nested_cargo::command(sh)
        .args([subcommand, "--version"])
        .quiet()
        .ignore_status()
        .output();
    match ran {
        Ok(out) if out.status.success() => Ok(()),
        Ok(_) => Err(Outcome::NotRun {
            reason: format!("`cargo {subcommand}` is not installed"),
            hint: Some(format!("rustup component add {component}")),
        }),
        Err(_) => Err(Outcome::NotRun {
            reason: "cargo is not installed".into(),
            hint: Some("install Rust with rustup: https://rustup.rs".into()),
        }),
    }
}

/// rustfmt's `--check` output: "Diff in <file> at line N:" (or "<file>:N:") with
/// the diff below.
fn rustfmt_problems(output: &str) -> Vec<Problem> {
    let mut problems: Vec<Problem> = Vec::new();
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("Diff in ") {
            let rest = rest.trim_end_matches(':');
            let (file, line_no) = match rest.split_once(" at line ") {
                Some((file, n)) => (file, n.parse().ok()),
                None => match rest.rsplit_once(':') {
                    Some((file, n)) => (file, n.parse().ok()),
                    None => (rest, None),
                },
            };
            let problem =
                Problem::new("not formatted as rustfmt would; `cargo fmt` fixes it").in_file(file);
            problems.push(match line_no {
                Some(n) => problem.at(n, None),
                None => problem,
            });
        } else if let Some(last) = problems.last_mut() {
            let detail = last.detail.get_or_insert_with(String::new);
            if !detail.is_empty() {
                detail.push('\n');
            }
            detail.push_str(line);
        }
    }
    problems
}

fn cargo_fmt(root: &Path) -> Check {
    let dir = root.to_path_buf();
    Check::new("rustfmt", "cargo fmt --all --check", move |sh, _| {
        if let Err(not_run) = cargo_component(sh, "fmt", "rustfmt") {
            return Ok(not_run);
        }
        let _dir = sh.push_dir(&dir);
        let ran = capture(
            nested_cargo::command(sh)
                .args(["fmt", "--all", "--check", "--manifest-path"])
                .arg(dir.join("Cargo.toml")),
        )?;
        let output = relative_output(&ran.output, &dir);
        if ran.success {
            return Ok(Outcome::Pass { notes: Vec::new() });
        }
        let mut problems = rustfmt_problems(&output);
        if problems.is_empty() {
            problems.push(Problem::new("cargo fmt --check failed").with_detail(output));
        }
        Ok(Outcome::Fail {
            problems,
            notes: Vec::new(),
        })
    })
}

fn clippy(root: &Path) -> Check {
    let dir = root.to_path_buf();
    Check::new(
        "clippy",
        "cargo clippy --all-targets -D warnings",
        move |sh, _| {
            if let Err(not_run) = cargo_component(sh, "clippy", "clippy") {
                return Ok(not_run);
            }
            // A target directory of its own: the cargo that runs this xtask may hold
            // the lock on the usual one.
            let target_dir = workspace::project_root().join("target").join("clippy");
            let _dir = sh.push_dir(&dir);
            let ran = capture(
                nested_cargo::command(sh)
                    .args([
                        "clippy",
                        "--quiet",
                        "--all-targets",
                        "--message-format=short",
                    ])
                    .arg("--manifest-path")
                    .arg(dir.join("Cargo.toml"))
                    .arg("--target-dir")
                    .arg(&target_dir)
                    .args(["--", "-D", "warnings"]),
            )?;
            let output = relative_output(&ran.output, &dir);
            if ran.success {
                return Ok(Outcome::Pass { notes: Vec::new() });
            }
            let (mut problems, other) = parse_located_lines(&output);
            if problems.is_empty() {
                problems.push(Problem::new("cargo clippy failed").with_detail(other.join("\n")));
            }
            Ok(Outcome::Fail {
                problems,
                notes: Vec::new(),
            })
        },
    )
    .slow()
}

/// The edition of the crate that holds `file`: the nearest Cargo.toml's
/// `edition`, else 2015 (rustfmt's default, and cargo's).
fn edition_of(root: &Path, file: &Path) -> String {
    let mut dir = root.join(file);
    while dir.pop() && dir.starts_with(root) {
        if let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) {
            return manifest
                .lines()
                .filter_map(|l| l.trim().strip_prefix("edition"))
                .filter_map(|rest| rest.trim().strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_owned())
                .next()
                .unwrap_or_else(|| "2015".to_owned());
        }
    }
    "2015".to_owned()
}

fn rustfmt_files(root: &Path, files: Vec<PathBuf>) -> Check {
    let label = files_label(&files, "files");
    let dir = root.to_path_buf();
    Check::new("rustfmt", label, move |sh, _| {
        let Some(rustfmt) = tools::find_program("rustfmt") else {
            return Ok(Outcome::NotRun {
                reason: "rustfmt is not installed".into(),
                hint: Some("rustup component add rustfmt".into()),
            });
        };
        let _dir = sh.push_dir(&dir);
        let mut by_edition: std::collections::BTreeMap<String, Vec<&PathBuf>> = Default::default();
        for file in &files {
            by_edition
                .entry(edition_of(&dir, file))
                .or_default()
                .push(file);
        }
        let mut problems = Vec::new();
        for (edition, files) in by_edition {
            let ran = capture(
                sh.cmd(&rustfmt)
                    .args(["--check", "--edition", &edition])
                    .args(files),
            )?;
            if !ran.success {
                let output = relative_output(&ran.output, &dir);
                let found = rustfmt_problems(&output);
                if found.is_empty() {
                    problems.push(Problem::new("rustfmt --check failed").with_detail(output));
                }
                problems.extend(found);
            }
        }
        Ok(Outcome::from_problems(problems, Vec::new()))
    })
    // Not cached: rustfmt follows `mod` items into files beyond the staged ones.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustfmt_diffs_become_located_problems() {
        let output = "Diff in xtask/src/lint.rs at line 12:\n-    a\n+    b\nDiff in xtask/src/main.rs:3:\n-x\n+y\n";
        let problems = rustfmt_problems(output);
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].file.as_deref(), Some("xtask/src/lint.rs"));
        assert_eq!(problems[0].line, Some(12));
        assert_eq!(problems[0].detail.as_deref(), Some("-    a\n+    b"));
        assert_eq!(problems[1].line, Some(3));
    }

    #[test]
    fn visible_shows_the_end_of_a_line() {
        assert_eq!(visible("  \"a\": 1\n"), "  \"a\": 1");
        assert_eq!(visible("}"), "}(no newline at end of file)");
        assert_eq!(visible(""), "(end of file)");
    }
}
