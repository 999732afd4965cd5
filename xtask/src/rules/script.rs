//! Rules compiled, with the build's values, into one POSIX shell script: it needs
//! only what a Flatcar image has (sh, coreutils, grep, systemctl, sysctl, awk), so
//! it runs the same inside the build VM and on a booted box, in one SSH session.
//! It prints one line per rule — `[PASS]` or `[FAIL]`, the rule, what was expected
//! and what was found — then a summary with its run time, and exits 1 when any
//! rule failed. A rule the rules file limits to the other way of making images
//! (`meta: {only: ...}`) is not run: it prints `[SKIP]` with the file's reason.

use std::collections::BTreeMap;

use super::model::{Expected, MadeBy, Problem, Resource, Rule};

/// Helpers every compiled script starts with.
const PRELUDE: &str = r#"set -u
passed=0
failed=0
skipped=0
failures=
started=$(date +%s%N)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# report NAME EXPECTED FOUND OK: one line per rule; OK is 0 for a pass.
report() {
  if [ "$4" = 0 ]; then
    passed=$((passed + 1))
    printf '[PASS] %s | expected: %s | found: %s\n' "$1" "$2" "$3"
  else
    failed=$((failed + 1))
    failures="$failures
[FAIL] $1 | expected: $2 | found: $3"
    printf '[FAIL] %s | expected: %s | found: %s\n' "$1" "$2" "$3"
  fi
}

# skip RESOURCE ONLY BECAUSE: a resource the rules file limits to the other way.
skip() {
  skipped=$((skipped + 1))
  printf '[SKIP] %s | only: %s | because: %s\n' "$1" "$2" "$3"
}

# same EXPECTED FOUND: 0 when equal.
same() { [ "$1" = "$2" ]; }

# matches FILE PATTERN: goss patterns: text (contains), !text, /regex/, !/regex/.
matches() {
  case $2 in
  !/*/) ! grep -qE -- "$(printf '%s' "${2#!/}" | sed 's,/$,,')" "$1" ;;
  /*/) grep -qE -- "$(printf '%s' "${2#/}" | sed 's,/$,,')" "$1" ;;
  !*) ! grep -qF -- "${2#!}" "$1" ;;
  *) grep -qF -- "$2" "$1" ;;
  esac
}

# first_line FILE: what a rule shows as found (builtins only: no process to start).
first_line() {
  line=
  IFS= read -r line <"$1" || true
  printf '%.160s' "$line"
}

# output_line: a command's first line of stdout, else of stderr.
output_line() {
  line=$(first_line "$work/stdout")
  [ -n "$line" ] || line=$(first_line "$work/stderr")
  echo "$line"
}

# run SECONDS COMMAND: stdout and stderr into $work, the status into $status.
run() {
  timeout "$1" sh -c "$2" >"$work/stdout" 2>"$work/stderr" </dev/null
  status=$?
}

# unit_state enabled|active NAME: systemctl's word, or "missing".
unit_state() {
  state=$(systemctl "is-$1" "$2" 2>/dev/null)
  echo "${state:-missing}"
}
"#;

const EPILOGUE: &str = r#"ended=$(date +%s%N)
note=
[ "$skipped" = 0 ] || note="; $skipped skipped"
printf 'node rules: %d passed, %d failed in %d ms%s\n' "$passed" "$failed" $(((ended - started) / 1000000)) "$note"
if [ "$failed" -gt 0 ]; then
  printf 'node rules that failed:%s\n' "$failures"
  exit 1
fi
"#;

/// A string as one single-quoted shell word.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The script for `files` (name and rules) checking an image made `made_by`,
/// every text rendered with `vars`.
pub fn compile(
    files: &[(&str, &[Rule])],
    vars: &BTreeMap<String, String>,
    made_by: MadeBy,
) -> Result<String, Problem> {
    let names: Vec<&str> = files.iter().map(|(name, _)| *name).collect();
    let mut out = format!(
        "#!/bin/sh\n# Node rules from {}, compiled by `cargo xtask` with the build's values.\n# Generated: edit the rules files, not this script.\n# Commands are single-quoted on purpose: `run` hands them to their own sh -c.\n# shellcheck disable=SC2016\n",
        names.join(", ")
    );
    out += PRELUDE;
    // A command runs once for all its attributes: its output stays in $work until
    // the next command runs.
    let mut last_run = None;
    let mut last_skipped = None;
    for (_, rules) in files {
        for rule in *rules {
            if let Some(only) = rule.only.as_ref().filter(|_| !rule.applies_to(made_by)) {
                // One line per resource: its attributes share the reason.
                let resource = (rule.resource, &rule.subject);
                if last_skipped != Some(resource) {
                    out += &skip_line(rule, only, vars);
                }
                last_skipped = Some(resource);
                continue;
            }
            out.push('\n');
            let run = match &rule.exec {
                Some(exec) => Some((exec.render(vars)?, rule.timeout_secs)),
                None => None,
            };
            if let Some((exec, timeout)) = run.as_ref().filter(|r| last_run.as_ref() != Some(*r)) {
                out += &format!("run {timeout} {}\n", quote(exec));
            }
            if run.is_some() {
                last_run = run;
            }
            out += &compile_rule(rule, vars)?;
        }
    }
    out.push('\n');
    out += EPILOGUE;
    Ok(out)
}

fn skip_line(rule: &Rule, only: &super::model::Only, vars: &BTreeMap<String, String>) -> String {
    // A skipped rule may name variables the other way has no value for.
    let subject = rule
        .subject
        .render(vars)
        .unwrap_or_else(|_| rule.subject.raw.clone());
    format!(
        "\nskip {} {} {}\n",
        quote(&format!("{} {subject}", rule.resource.key())),
        quote(only.made_by.name()),
        quote(&only.because)
    )
}

/// The rule's name as reports show it: resource, subject, attribute.
pub fn rule_name(rule: &Rule, vars: &BTreeMap<String, String>) -> Result<String, Problem> {
    let subject = rule.subject.render(vars)?;
    Ok(match &rule.expected {
        Expected::Pattern(p) => format!(
            "{} {subject}: {} {}",
            rule.resource.key(),
            rule.attribute,
            p.render(vars)?
        ),
        _ => format!("{} {subject}: {}", rule.resource.key(), rule.attribute),
    })
}

fn compile_rule(rule: &Rule, vars: &BTreeMap<String, String>) -> Result<String, Problem> {
    let name = quote(&rule_name(rule, vars)?);
    let subject = rule.subject.render(vars)?;
    let s = quote(&subject);
    let text = |e: &Expected| match e {
        Expected::Text(t) | Expected::Pattern(t) => t.render(vars),
        Expected::Bool(b) => Ok(b.to_string()),
        Expected::Int(i) => Ok(i.to_string()),
    };
    let expected = text(&rule.expected)?;
    let e = quote(&expected);
    // Each arm sets `found` and calls report with a test whose status decides.
    let body = match (rule.resource, rule.attribute) {
        (Resource::Service, attribute) => {
            let (question, yes) = if attribute == "enabled" {
                ("enabled", "enabled|enabled-runtime|static|alias|indirect|generated")
            } else {
                ("active", "active|reloading")
            };
            format!(
                "found=$(unit_state {question} {s})\ncase $found in {yes}) is=true ;; *) is=false ;; esac\nsame {e} \"$is\"; report {name} {e} \"$is ($found)\" $?\n"
            )
        }
        // Read whole with cat: a shell's `read` takes /proc/sys one byte at a time,
        // and procfs answers the second byte of "10" with the end of the file.
        (Resource::KernelParam, _) => format!(
            "found=$(cat {} 2>/dev/null) || found='(no such parameter)'\nsame {e} \"$found\"; report {name} {e} \"$found\" $?\n",
            quote(&format!("/proc/sys/{}", subject.replace('.', "/")))
        ),
        // `compile` has run the command already.
        (Resource::Command, "exit-status") => format!(
            "same {e} \"$status\"; report {name} {e} \"$status: $(output_line)\" $?\n"
        ),
        (Resource::Command, stream) => format!(
            "matches \"$work/{stream}\" {e}; report {name} {} \"exit $status: $(first_line \"$work/{stream}\")\" $?\n",
            quote(&pattern_words(&expected))
        ),
        (Resource::File, "exists") => format!(
            "if [ -e {s} ] || [ -L {s} ]; then is=true; else is=false; fi\nsame {e} \"$is\"; report {name} {e} \"$is\" $?\n"
        ),
        (Resource::File, "filetype") => format!(
            "if [ -L {s} ]; then found='symlink'; elif [ -d {s} ]; then found='directory'; elif [ -f {s} ]; then found='file'; elif [ -e {s} ]; then found='other'; else found='missing'; fi\nsame {e} \"$found\"; report {name} {e} \"$found\" $?\n"
        ),
        (Resource::File, "contains") => format!(
            "if [ -f {s} ]; then matches {s} {e}; ok=$?; found=$([ $ok = 0 ] && echo as expected || echo otherwise); else ok=1; found=missing; fi\nreport {name} {} \"$found\" $ok\n",
            quote(&pattern_words(&expected))
        ),
        (Resource::File, attribute) => {
            let (format, expected) = match attribute {
                // goss writes modes with a leading zero; stat does not.
                "mode" => ("%a", expected.trim_start_matches('0').to_owned()),
                "owner" => ("%U", expected.clone()),
                _ => ("%G", expected.clone()),
            };
            format!(
                "found=$(stat -c {format} {s} 2>/dev/null) || found=missing\nsame {} \"$found\"; report {name} {e} \"$found\" $?\n",
                quote(&expected)
            )
        }
        (Resource::Mount, attribute) => {
            let lookup = format!(
                "found=$(awk -v m={s} '$2 == m {{ f = $3 \" \" $4 }} END {{ print f }}' /proc/mounts)\n"
            );
            match attribute {
                "exists" => format!(
                    "{lookup}if [ -n \"$found\" ]; then is=true; else is=false; fi\nsame {e} \"$is\"; report {name} {e} \"$is $found\" $?\n"
                ),
                "filesystem" => format!(
                    "{lookup}same {e} \"${{found%% *}}\"; report {name} {e} \"${{found:-not mounted}}\" $?\n"
                ),
                _ => format!(
                    "{lookup}case \",${{found#* }},\" in *,{}*) ok=0 ;; *) ok=1 ;; esac\nreport {name} {} \"${{found:-not mounted}}\" $ok\n",
                    quote(&format!("{expected},")),
                    quote(&format!("option {expected}"))
                ),
            }
        }
    };
    Ok(body)
}

/// A pattern as words for the report: `contains x`, `lacks x`, `matches /re/`.
fn pattern_words(pattern: &str) -> String {
    match pattern.strip_prefix('!') {
        Some(p) if p.starts_with('/') => format!("does not match {p}"),
        Some(p) => format!("lacks {p:?}"),
        None if pattern.starts_with('/') => format!("matches {pattern}"),
        None => format!("contains {pattern:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{model, report};

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn the_script_renders_values_and_names_each_rule() {
        let (rules, _) = model::parse(
            "kernel-param:\n  vm.overcommit_memory:\n    value: \"1\"\ncommand:\n  kubectl:\n    exec: kubectl version --client\n    stdout: [\"{{ .Vars.kubernetes_semver }}\"]\n",
        );
        let vars = BTreeMap::from([("kubernetes_semver".to_owned(), "v1.36.2".to_owned())]);
        let script = compile(&[("node.yaml", &rules)], &vars, MadeBy::Build).unwrap();
        assert!(script.contains("report 'kernel-param vm.overcommit_memory: value' '1'"));
        assert!(script.contains("run 10 'kubectl version --client'"));
        assert!(script.contains("report 'command kubectl: stdout v1.36.2' 'contains \"v1.36.2\"'"));
        assert!(!script.contains("{{"));
    }

    /// The compiled script, run for real by `sh` on this machine: what holds here
    /// passes, what does not fails with what was found.
    #[test]
    fn the_compiled_script_checks_this_machine() {
        let text = r#"
file:
  /etc/passwd:
    exists: true
    filetype: file
    owner: root
    mode: "0644"
    contains: ["root:", "!no-such-user-here:", "/^root:x?:0:/"]
  /no/such/file:
    exists: false
command:
  greeting:
    exec: "echo hello {{ .Vars.who }}; echo oops >&2"
    exit-status: 0
    stdout: ["hello world", "!bye", "/^hello w.rld$/"]
    stderr: ["oops"]
  it's false:
    exec: "false"
    exit-status: 0
  only where containerd-stress was added:
    exec: "containerd-stress --version"
    exit-status: 0
    stdout: ["{{ .Vars.containerd_version }}"]
    meta:
      only: build
      because: a bake adds no containerd release
kernel-param:
  kernel.ostype:
    value: Linux
mount:
  /proc:
    exists: true
    filesystem: proc
"#;
        let (rules, problems) = model::parse(text);
        assert_eq!(problems, []);
        let vars = BTreeMap::from([("who".to_owned(), "world".to_owned())]);
        let script = compile(&[("test.yaml", &rules)], &vars, MadeBy::Bake).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("check.sh");
        std::fs::write(&path, &script).unwrap();
        let lint = std::process::Command::new("shellcheck")
            .arg(&path)
            .output()
            .expect("shellcheck runs (apt install shellcheck)");
        assert!(
            lint.status.success(),
            "{}",
            String::from_utf8_lossy(&lint.stdout)
        );
        let ran = std::process::Command::new("sh")
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&ran.stdout);
        assert_eq!(ran.status.code(), Some(1), "{stdout}");
        let run = report::parse(&stdout);
        // The build-only command is not run (its variable has no value here).
        let checked = rules.len() - 2;
        assert_eq!(run.rules.len(), checked, "{stdout}");
        assert!(stdout.contains("\n[SKIP] command only where containerd-stress was added | only: build | because: a bake adds no containerd release\n"), "{stdout}");
        let failed: Vec<&str> = run
            .rules
            .iter()
            .filter(|r| !r.passed)
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(failed, ["command it's false: exit-status"], "{stdout}");
        let summary = run.summary.expect("a summary line");
        assert!(
            summary.starts_with(&format!("node rules: {} passed, 1 failed in ", checked - 1))
                && summary.ends_with(" ms; 1 skipped"),
            "{summary}"
        );
    }
}
