//! Running `packer build` for a plan: the work directory filled with what the plan
//! names, packer streamed into its log, and what failed said in a few lines.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use xshell::Shell;

use crate::build::plan::Plan;
use crate::build::timeline::Timeline;
use crate::build::{ignition, key};
use crate::flatcar::VerifiedImage;
use crate::rules::{self as node_rules, Stage};
use crate::toolchain::tools;
use crate::vm::streaming;
use crate::{json_text, workspace};

/// The node rules' inputs: the build's variables and, optionally, a goss to run them.
pub struct NodeRules<'a> {
    pub vars: BTreeMap<String, String>,
    pub goss: Option<&'a Path>,
}

/// Fills the work directory with what the plan names (the key and Ignition config
/// when a Flatcar image boots, the node rules, the generated var file), then runs
/// packer; returns where its time went.
pub fn run_packer(
    sh: &Shell,
    plan: &Plan,
    image: Option<&VerifiedImage>,
    rules: &NodeRules,
) -> anyhow::Result<Timeline> {
    let paths = &plan.paths;
    if image.is_some() {
        let public_key = write_first_boot_config(sh, plan)?;
        let mut vars = rules.vars.clone();
        let key_body = public_key.split_whitespace().nth(1).unwrap_or_default();
        vars.insert("build_ssh_public_key".into(), key_body.to_owned());
        let capi = workspace::capi_dir();
        node_rules::write_runner(
            &paths.node_rules,
            &capi,
            Stage::Build,
            node_rules::MadeBy::Build,
            &vars,
            rules.goss,
        )?;
    }
    std::fs::write(
        &paths.generated_var_file,
        json_text::canonical(&serde_json::json!(plan.generated_var_file)),
    )
    .with_context(|| format!("writing {}", paths.generated_var_file.display()))?;

    let packer = tools::find_program("packer").context("packer is not on PATH")?;
    let args: Vec<OsString> = plan.packer_command[1..]
        .iter()
        .map(OsString::from)
        .collect();
    let env: Vec<(&str, OsString)> = crate::packer::command::ENV
        .iter()
        .map(|(k, v)| (*k, OsString::from(v)))
        .collect();
    let capi = workspace::capi_dir();
    eprintln!(
        "Running packer build in {} (log: {})",
        capi.display(),
        paths.packer_log.display()
    );
    let started = Instant::now();
    let finished = streaming::run(
        &packer,
        &args,
        &capi,
        &env,
        Some("packer"),
        Some(&paths.packer_log),
    )?;
    let timeline = Timeline::read(&finished.output, &finished.arrivals, started.elapsed());
    if !finished.success {
        bail!(
            "packer build failed:\n{}",
            failure_summary(&finished.output)
        );
    }
    if !paths.staging.is_dir() {
        bail!(
            "packer build succeeded but wrote nothing to {}",
            paths.staging.display()
        );
    }
    std::fs::copy(&paths.packer_log, paths.staging.join("packer.log"))
        .context("keeping the packer log")?;
    // verify-vagrant checks the booted box against the same values.
    let rule_vars = paths.node_rules.join(node_rules::VARS_FILE);
    if rule_vars.is_file() {
        std::fs::copy(&rule_vars, paths.staging.join(node_rules::VARS_FILE))
            .context("keeping the node rules' values")?;
    }
    Ok(timeline)
}

/// The build's key pair and the repository's first-boot Ignition config with the
/// key authorized, where the plan says; returns the public key.
fn write_first_boot_config(sh: &Shell, plan: &Plan) -> anyhow::Result<String> {
    let paths = &plan.paths;
    let comment = format!("flatcar-capi-builder {}", plan.build_name);
    let key = key::generate(sh, &paths.work, &comment)?;
    let stored = workspace::capi_dir().join("packer/files/flatcar/ignition.json");
    let text = std::fs::read_to_string(&stored)
        .with_context(|| format!("reading {}", stored.display()))?;
    let config = json_text::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", stored.display(), e.message))?;
    let config = ignition::authorize_key(config, &key.public_key)?;
    std::fs::write(&paths.ignition_config, json_text::canonical(&config))
        .with_context(|| format!("writing {}", paths.ignition_config.display()))?;
    Ok(key.public_key)
}

/// The part of packer's output that says what failed: a failed Ansible task's name
/// and message when there is one, else packer's last lines.
pub fn failure_summary(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    // The node rules list what failed, with what was expected and found.
    if let Some(at) = lines
        .iter()
        .rposition(|l| l.contains("node rules that failed:"))
    {
        let summary = lines[..at]
            .iter()
            .rev()
            .find(|l| l.contains("node rules: "));
        let list = lines[at..]
            .iter()
            .take_while(|l| l.contains("node rules that failed:") || l.contains("[FAIL] "));
        return summary
            .into_iter()
            .chain(list)
            .map(|l| l.trim())
            .collect::<Vec<_>>()
            .join("\n");
    }
    let failed = lines
        .iter()
        .rposition(|l| l.contains("fatal:") || l.contains("FAILED!"));
    match failed {
        Some(at) => {
            let task = lines[..at].iter().rev().find(|l| l.contains("TASK ["));
            let mut summary = String::new();
            if let Some(task) = task {
                summary += task.trim();
                summary.push('\n');
            }
            summary += &lines[at..lines.len().min(at + 15)].join("\n");
            summary
        }
        None => streaming::tail(output, 25),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_summary_names_the_failed_task() {
        let output = "TASK [setup : Download PyPy] ****\nok: [default]\nTASK [kubernetes : Install kubeadm] ***\n\
                      fatal: [default]: FAILED! => {\"msg\": \"checksum mismatch\"}\nPLAY RECAP\n";
        let summary = failure_summary(output);
        assert!(
            summary.starts_with("TASK [kubernetes : Install kubeadm]"),
            "{summary}"
        );
        assert!(summary.contains("checksum mismatch"));
    }

    /// What packer prints (and Ansible's failure messages repeat) goes through the
    /// streaming runner into packer.log and onto stderr: never a mirror's password.
    #[test]
    fn finding_8_credentials_in_urls_stay_out_of_packer_log_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("packer.log");
        let args: Vec<OsString> = vec![
            "-c".into(),
            "echo 'fatal: GET https://alice:hunter2@mirror.example/kubeadm: 404'".into(),
        ];
        let finished = streaming::run(
            Path::new("/bin/sh"),
            &args,
            dir.path(),
            &[],
            None,
            Some(&log),
        )
        .unwrap();
        let logged = std::fs::read_to_string(&log).unwrap();
        for text in [
            &logged,
            &finished.output,
            &failure_summary(&finished.output),
        ] {
            assert!(
                !text.contains("hunter2") && !text.contains("alice"),
                "{text}"
            );
            assert!(
                text.contains("https://***@mirror.example/kubeadm"),
                "{text}"
            );
        }
    }
}
