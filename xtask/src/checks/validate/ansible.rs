//! The playbooks' syntax check: `ansible-playbook --syntax-check` with the
//! inventory, environment and extra vars the build's Packer provisioner would give.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::checks::engine::{Check, Outcome, Problem};
use crate::checks::source_tree::CAPI;
use crate::checks::tool_output::{capture, relative_output, tidy_output};
use crate::packer::layering::{self, Layered};
use crate::packer::targets::{self, BuildTarget};
use crate::packer::template::{AnsibleProvisioner, Template};

/// What `ansible-playbook --syntax-check` of one playbook gets: the inventory,
/// environment and extra vars the build's Packer provisioner would give it.
#[derive(Debug, PartialEq, Eq)]
struct AnsibleRun {
    /// Which target's provisioner it comes from.
    target: Option<&'static str>,
    inventory: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    notes: Vec<String>,
}

/// The playbook's run as the first target whose provisioner runs it would make it,
/// else as the first target's first ansible provisioner would.
fn ansible_run(
    playbook: &str,
    capi: &Path,
    templates: &[(&'static BuildTarget, Template)],
) -> AnsibleRun {
    let Some((target, template, provisioner)) = provisioner_for(playbook, templates) else {
        return AnsibleRun {
            target: None,
            inventory: "default ansible_host=127.0.0.1\n".into(),
            args: Vec::new(),
            env: Vec::new(),
            notes: vec![
                "no build target runs this playbook: checked without the build's extra vars".into(),
            ],
        };
    };
    let (stack, _) = layering::load_stack(capi, target);
    let (values, _) = layering::layer(target, &stack);
    let mut notes = Vec::new();
    let render = |text: &str, notes: &mut Vec<String>| {
        layering::render(text, &values, &BTreeMap::new()).unwrap_or_else(|why| {
            notes.push(format!("passed `{text}` as it is: {why}"));
            text.to_owned()
        })
    };
    let AnsibleProvisioner {
        extra_arguments,
        env_vars,
        user,
        host_alias,
        groups,
        ..
    } = provisioner;
    let user = user.as_deref().map(|u| render(u, &mut notes));
    let inventory = inventory(host_alias, user.as_deref(), groups);
    let args = playbook_args(template, extra_arguments, &values, &mut notes);
    let env = env_vars
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), render(v, &mut notes)))
        .collect();
    AnsibleRun {
        target: Some(target.name),
        inventory,
        args,
        env,
        notes,
    }
}

/// The target, its template and the ansible provisioner that runs `playbook`:
/// the first that names it, else the first target's first ansible provisioner.
fn provisioner_for<'t>(
    playbook: &str,
    templates: &'t [(&'static BuildTarget, Template)],
) -> Option<(&'static BuildTarget, &'t Template, &'t AnsibleProvisioner)> {
    let normal = |p: &str| p.trim_start_matches("./").to_owned();
    templates
        .iter()
        .find_map(|(t, template)| {
            let p = template
                .ansible
                .iter()
                .find(|p| normal(&p.playbook_file) == playbook)?;
            Some((*t, template, p))
        })
        .or_else(|| {
            let (t, template) = templates.first()?;
            Some((*t, template, template.ansible.first()?))
        })
}

/// The one-host inventory Packer's ansible provisioner writes.
fn inventory(host_alias: &str, user: Option<&str>, groups: &[String]) -> String {
    let mut inventory = format!("{host_alias} ansible_host=127.0.0.1 ansible_port=22");
    if let Some(user) = user {
        inventory += &format!(" ansible_user={user}");
    }
    inventory.push('\n');
    for group in groups {
        inventory += &format!("[{group}]\n{host_alias}\n");
    }
    inventory
}

/// The arguments before the playbook: what Packer's ansible provisioner adds, then
/// the template's own extra arguments rendered with the layered `values`.
fn playbook_args(
    template: &Template,
    extra_arguments: &[String],
    values: &BTreeMap<String, Layered>,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let builder = template.first_builder();
    // What Packer's ansible provisioner adds before the template's own arguments.
    let mut args = vec![
        "--extra-vars".to_owned(),
        format!(
            "packer_build_name={} packer_builder_type={} packer_http_addr=",
            builder.map_or("", |b| b.name.as_str()),
            builder.map_or("", |b| b.type_name.as_str())
        ),
    ];
    for argument in extra_arguments {
        match layering::render(argument, values, &BTreeMap::new()) {
            Ok(rendered) => args.push(rendered),
            // Extra vars that cannot be worked out (a broken var file) are left out:
            // the roles' defaults stand in, so the syntax is still checked.
            Err(why) if matches!(args.last().map(String::as_str), Some("--extra-vars" | "-e")) => {
                args.pop();
                notes.push(format!("left out the extra vars `{argument}`: {why}"));
            }
            Err(why) => {
                notes.push(format!("passed `{argument}` as it is: {why}"));
                args.push(argument.clone());
            }
        }
    }
    args
}

pub fn syntax_check(
    root: &Path,
    playbook: &Path,
    templates: &[(&'static BuildTarget, Template)],
) -> Check {
    let capi = root.join(CAPI);
    let in_capi = playbook
        .strip_prefix(CAPI)
        .expect("playbooks are under images/capi")
        .to_string_lossy()
        .into_owned();
    let run = ansible_run(&in_capi, &capi, templates);
    let mut inputs = vec![PathBuf::from(CAPI).join("ansible")];
    if let Some(target) = run.target.and_then(targets::target) {
        inputs.extend(target.stack().map(|f| Path::new(CAPI).join(f)));
    }
    inputs.push(PathBuf::from(CAPI).join("ansible.cfg"));
    let label = match run.target {
        Some(t) => format!("{} ({t})", playbook.display()),
        None => playbook.display().to_string(),
    };
    let salt = vec![
        run.inventory.clone(),
        run.args.join("\0"),
        format!("{:?}", run.env),
    ];
    let root_dir = root.to_path_buf();
    Check::new("syntax-check", label, move |sh, tools| {
        let scratch = sh
            .create_temp_dir()
            .context("creating a temporary directory")?;
        let inventory = scratch.path().join("inventory");
        std::fs::write(&inventory, &run.inventory)
            .with_context(|| format!("writing {}", inventory.display()))?;
        let _dir = sh.push_dir(&capi);
        let mut cmd = sh
            .cmd(tools.path("ansible-playbook"))
            .arg("--syntax-check")
            .arg("-i")
            .arg(&inventory)
            .args(&run.args)
            .arg(&in_capi)
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_LOCAL_TEMP", scratch.path());
        for (key, value) in &run.env {
            cmd = cmd.env(key, value);
        }
        let ran = capture(cmd)?;
        let output = tidy_output(&relative_output(&ran.output, &root_dir));
        if ran.success {
            return Ok(Outcome::Pass {
                notes: run.notes.clone(),
            });
        }
        Ok(Outcome::Fail {
            problems: vec![ansible_problem(&output, &format!("{CAPI}/{in_capi}"))],
            notes: run.notes.clone(),
        })
    })
    .needs(&["ansible-playbook"])
    .cached(root, inputs, salt)
    .slow()
}

/// Ansible's error as a located problem: it names the file, line and column in
/// "The error appears to be in '<file>': line L, column C".
fn ansible_problem(output: &str, playbook: &str) -> Problem {
    let lines: Vec<&str> = output.lines().collect();
    let yaml_error = lines
        .iter()
        .position(|l| l.trim() == "Syntax Error while loading YAML.")
        .and_then(|i| lines[i + 1..].iter().find(|l| !l.trim().is_empty()))
        .map(|l| format!("YAML syntax error: {}", l.trim()));
    let message = yaml_error
        .or_else(|| {
            lines
                .iter()
                .find(|l| l.starts_with("ERROR!"))
                .map(|l| l.trim_start_matches("ERROR!").trim().to_owned())
        })
        .unwrap_or_else(|| "ansible-playbook --syntax-check failed".to_owned());
    let flat = output.replace('\n', " ");
    let located = flat.split("appears to be in '").nth(1).and_then(|rest| {
        let (file, rest) = rest.split_once("': line ")?;
        let (line, rest) = rest.split_once(", column ")?;
        let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
        Some((file.to_owned(), line.parse().ok()?, column.parse().ok()))
    });
    let problem = match located {
        // `<string>`: text that is not a file, such as an extra var.
        Some((file, line, column)) if !file.starts_with('<') => {
            Problem::new(message).in_file(file).at(line, column)
        }
        _ => Problem::new(message).in_file(playbook),
    };
    problem.with_detail(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansible_errors_are_located() {
        let output = "ERROR! We were unable to read either as JSON nor YAML\n\
                      Syntax Error while loading YAML.\n  did not find expected node content\n\n\
                      The error appears to be in 'images/capi/ansible/roles/r/tasks/main.yml': line 5, column 1, but may\n\
                      be elsewhere in the file depending on the exact syntax problem.\n";
        let p = ansible_problem(output, "images/capi/ansible/node.yml");
        assert_eq!(
            p.file.as_deref(),
            Some("images/capi/ansible/roles/r/tasks/main.yml")
        );
        assert_eq!((p.line, p.column), (Some(5), Some(1)));
        assert_eq!(
            p.message,
            "YAML syntax error: did not find expected node content"
        );
    }
}
