//! The checks Packer's side of a target gets: its var-file stack layers cleanly,
//! and `packer validate` accepts it with stand-ins for what only a build knows.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, Context};
use sha2::{Digest, Sha512};
use xshell::{Shell, TempDir};

use super::finding_to_problem;
use super::shown;
use crate::build::key;
use crate::checks::engine::{Check, Outcome, Problem};
use crate::checks::source_tree::CAPI;
use crate::checks::tool_output::{capture, relative_output, tidy_output};
use crate::packer::command;
use crate::packer::layering;
use crate::packer::targets::{BuildInput, BuildTarget};
use crate::packer::template::{self, Template};

pub fn layering_check(
    capi: &Path,
    target: &'static BuildTarget,
    stack: &[PathBuf],
    root: &Path,
) -> Check {
    let capi = capi.to_path_buf();
    Check::new("layering", target.name, move |_, _| {
        let (stack, mut findings) = layering::load_stack(&capi, target);
        findings.extend(layering::layer(target, &stack).1);
        let problems = findings.into_iter().map(finding_to_problem).collect();
        Ok(Outcome::from_problems(problems, Vec::new()))
    })
    .cached(root, stack.to_vec(), Vec::new())
}

/// Values for the variables only a build knows, good enough for `packer validate`:
/// a real (throwaway) SSH key, because the builder checks that it parses.
pub struct Placeholders {
    dir: TempDir,
    image: PathBuf,
    image_digest: String,
    private_key: PathBuf,
    ignition: PathBuf,
}

impl Placeholders {
    fn make(sh: &Shell) -> anyhow::Result<Placeholders> {
        let dir = sh
            .create_temp_dir()
            .context("creating a temporary directory")?;
        let image = dir.path().join("flatcar_production_qemu_image.img");
        std::fs::write(&image, b"").with_context(|| format!("writing {}", image.display()))?;
        let ignition = dir.path().join("ignition.json");
        std::fs::write(&ignition, b"{}\n")
            .with_context(|| format!("writing {}", ignition.display()))?;
        let key = key::generate(sh, dir.path(), "cargo-xtask-validate")?;
        // Packer's file provisioner checks that what it uploads exists.
        let node_rules = dir.path().join("node-rules");
        std::fs::create_dir(&node_rules)
            .with_context(|| format!("creating {}", node_rules.display()))?;
        let image_digest = crate::hex::encode(&Sha512::digest(b""));
        Ok(Placeholders {
            dir,
            image,
            image_digest,
            private_key: key.private_key,
            ignition,
        })
    }

    /// The stand-in for `input`; `None` keeps the var files' value (the release
    /// channel and version: `stable`, `current`).
    fn value(&self, input: BuildInput) -> Option<String> {
        let path = |p: &Path| p.display().to_string();
        match input {
            BuildInput::ImagePath => Some(path(&self.image)),
            BuildInput::ImageChecksum => Some(format!("sha512:{}", self.image_digest)),
            BuildInput::SshPrivateKeyFile => Some(path(&self.private_key)),
            BuildInput::IgnitionConfigPath => Some(path(&self.ignition)),
            BuildInput::Accelerator => Some("tcg".to_owned()),
            BuildInput::FlatcarChannel | BuildInput::FlatcarVersion => None,
            BuildInput::OutputDirectory => Some(path(&self.dir.path().join("output"))),
            BuildInput::NodeRulesDir => Some(path(&self.dir.path().join("node-rules"))),
        }
    }
}

pub fn packer_check(
    root: &Path,
    target: &'static BuildTarget,
    placeholders: Arc<OnceLock<Result<Placeholders, String>>>,
) -> Check {
    let capi = root.join(CAPI);
    let body_capi = capi.clone();
    // The argument vector's shape (the placeholder file's name aside) is part of
    // what decides the result.
    let shape: Vec<String> = command::args("validate", &[], target, &[Path::new("<generated>")])
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    Check::new("packer validate", target.name, move |sh, tools| {
        let placeholders = placeholders
            .get_or_init(|| Placeholders::make(sh).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("making placeholder build inputs: {e}"))?;
        let values: Vec<(BuildInput, String)> = target
            .build_inputs
            .iter()
            .filter_map(|&input| Some((input, placeholders.value(input)?)))
            .collect();
        let var_file = placeholders
            .dir
            .path()
            .join(format!("{}.json", target.name));
        std::fs::write(&var_file, command::generated_var_file(&values))
            .with_context(|| format!("writing {}", var_file.display()))?;
        let args = command::args("validate", &[], target, &[&var_file]);
        let _dir = sh.push_dir(&body_capi);
        let ran = capture(
            sh.cmd(tools.path("packer"))
                .args(&args)
                .envs(command::ENV.iter().copied()),
        )?;
        let output = relative_output(&ran.output, &body_capi).replace(
            &placeholders.dir.path().display().to_string(),
            "<placeholders>",
        );
        let output = tidy_output(&output);
        if ran.success {
            let notes = output
                .lines()
                .filter(|l| l.to_lowercase().contains("warning"))
                .map(str::to_owned)
                .collect();
            return Ok(Outcome::Pass { notes });
        }
        let template = template::load(&body_capi, target.template)
            .ok()
            .map(|doc| Template::from_document(doc).0);
        let mut problems: Vec<Problem> = template
            .as_ref()
            .map(|t| command::locate_errors(&output, t))
            .unwrap_or_default()
            .into_iter()
            .map(finding_to_problem)
            .collect();
        if problems.is_empty() {
            problems.push(Problem::new("packer validate failed").in_file(shown(target.template)));
        }
        problems[0].detail = Some(output);
        Ok(Outcome::Fail {
            problems,
            notes: Vec::new(),
        })
    })
    .needs(&["packer", "ssh-keygen"])
    .cached(
        root,
        vec![
            PathBuf::from(CAPI).join("packer"),
            PathBuf::from(CAPI).join("ansible"),
        ],
        shape,
    )
}
