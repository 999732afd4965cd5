//! The node rules: what a finished image must be, as data a user reads and extends
//! (`images/capi/packer/goss/*.yaml`, in goss's vocabulary). `yaml` reads YAML with
//! positions, `model` turns a rules file into checks (and says file:line:column for
//! what it does not support), `script` compiles them with the build's values into
//! one POSIX shell script that runs inside the image, and `report` reads that
//! script's output back.

pub mod model;
pub mod report;
pub mod script;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::fsx::write_atomically;

pub use model::MadeBy;

/// Where a run of the rules happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Inside the build VM, after sysprep, before shutdown.
    Build,
    /// On a machine booted from the image (verify-vagrant).
    Booted,
}

/// A rules file, relative to images/capi, and whether it holds on a booted machine
/// too. A first boot rightly makes a machine-id and SSH host keys and consumes the
/// first-boot flag, so those rules describe the image only.
pub struct RulesFile {
    pub path: &'static str,
    pub on_booted_machines: bool,
}

pub const FILES: &[RulesFile] = &[
    RulesFile {
        path: "packer/goss/node.yaml",
        on_booted_machines: true,
    },
    RulesFile {
        path: "packer/goss/image.yaml",
        on_booted_machines: false,
    },
];

/// Variables build-flatcar supplies besides its Packer template's variables. A
/// bake has none of them: a rule that names one holds for `only: build`.
pub const BUILD_VARIABLES: &[&str] = &[
    // The per-build SSH public key, which must not stay in the image.
    "build_ssh_public_key",
];

/// The goss `--vars` file the runner directory and a build's output hold.
pub const VARS_FILE: &str = "node-rules-vars.json";

/// The script the image runs, in the runner directory.
pub const SCRIPT: &str = "check.sh";

/// The rules files that apply at `stage`.
pub fn files(stage: Stage) -> impl Iterator<Item = &'static RulesFile> {
    FILES
        .iter()
        .filter(move |f| stage == Stage::Build || f.on_booted_machines)
}

/// The rules of every file that applies at `stage`; a file's problems as
/// `file:line:column: message` lines.
pub fn load(capi: &Path, stage: Stage) -> anyhow::Result<Vec<(&'static str, Vec<model::Rule>)>> {
    let mut loaded = Vec::new();
    let mut problems = Vec::new();
    for file in files(stage) {
        let path = capi.join(file.path);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let (rules, found) = model::parse(&text);
        problems.extend(found.into_iter().map(|p| {
            format!(
                "images/capi/{}:{}:{}: {}",
                file.path, p.at.line, p.at.column, p.message
            )
        }));
        loaded.push((file.path, rules));
    }
    if !problems.is_empty() {
        bail!("the node rules do not load:\n{}", problems.join("\n"));
    }
    Ok(loaded)
}

/// Writes the directory the image runs the rules from: `check.sh` and the vars
/// file, plus the goss binary and the rules files when `goss` is given (then
/// `check.sh` runs goss on them). The directory is called `node-rules`, which is
/// what the Packer template uploads and runs. `made_by` says how the image was
/// made: rules limited to the other way are skipped with their reason.
pub fn write_runner(
    dir: &Path,
    capi: &Path,
    stage: Stage,
    made_by: MadeBy,
    vars: &BTreeMap<String, String>,
    goss: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let loaded = load(capi, stage)?;
    let limited = loaded
        .iter()
        .flat_map(|(_, rules)| rules)
        .filter(|r| !r.applies_to(made_by))
        .count();
    if goss.is_some() && limited > 0 {
        bail!(
            "--goss runs the rules files whole, but {limited} of their checks hold only for images made another way than `{}` (meta: only): run without --goss",
            made_by.name()
        );
    }
    let vars_json = crate::json_text::canonical(&serde_json::json!(vars));
    write_atomically(&dir.join(VARS_FILE), vars_json.as_bytes())?;
    let script = match goss {
        None => {
            let files: Vec<(&str, &[model::Rule])> =
                loaded.iter().map(|(f, r)| (*f, r.as_slice())).collect();
            script::compile(&files, vars, made_by)
                .map_err(|p| anyhow::anyhow!("the node rules: line {}: {}", p.at.line, p.message))?
        }
        Some(goss) => {
            std::fs::copy(goss, dir.join("goss"))
                .with_context(|| format!("copying {} (--goss)", goss.display()))?;
            let mut script =
                "#!/bin/sh\n# Runs the node rules with goss.\nhere=$(dirname \"$0\")\nstatus=0\n"
                    .to_owned();
            for (file, _) in &loaded {
                let name = Path::new(file).file_name().expect("rules files have names");
                std::fs::copy(capi.join(file), dir.join(name))
                    .with_context(|| format!("copying images/capi/{file}"))?;
                script += &format!(
                    "\"$here/goss\" --gossfile \"$here/{}\" --vars \"$here/{VARS_FILE}\" validate --no-color --format documentation || status=1\n",
                    name.to_string_lossy()
                );
            }
            script + "exit $status\n"
        }
    };
    let path = dir.join(SCRIPT);
    write_atomically(&path, script.as_bytes())?;
    Ok(path)
}

/// A remote shell command that runs `script` as root: the script travels inside the
/// command as base64, so no quoting layer (vagrant's, ssh's, the login shell's)
/// can change it, and it needs no upload.
pub fn remote_command(script: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::new();
    for chunk in script.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                encoded.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                encoded.push('=');
            }
        }
    }
    format!("echo {encoded} | base64 -d | sudo sh")
}

/// Every problem of the rules files under `capi`, by file: syntax, unsupported
/// keys, templates, variables that are not in `known` (nor in
/// `BUILD_VARIABLES`), and `BUILD_VARIABLES` in a rule that a bake runs too. A
/// missing file is a problem too.
pub fn problems(
    capi: &Path,
    known: &std::collections::BTreeSet<String>,
) -> Vec<(&'static str, model::Problem)> {
    let known: std::collections::BTreeSet<String> = known
        .iter()
        .cloned()
        .chain(BUILD_VARIABLES.iter().map(|v| v.to_string()))
        .collect();
    let mut found = Vec::new();
    for file in FILES {
        let text = match std::fs::read_to_string(capi.join(file.path)) {
            Ok(text) => text,
            Err(e) => {
                let at = crate::json_text::Position { line: 1, column: 1 };
                found.push((
                    file.path,
                    model::Problem {
                        message: format!("cannot read the rules file: {e}"),
                        at,
                    },
                ));
                continue;
            }
        };
        let (rules, problems) = model::parse(&text);
        found.extend(problems.into_iter().map(|p| (file.path, p)));
        found.extend(
            model::check_variables(&rules, &known)
                .into_iter()
                .map(|p| (file.path, p)),
        );
        found.extend(
            build_only_variables(&rules)
                .into_iter()
                .map(|p| (file.path, p)),
        );
    }
    found
}

/// A rule that a bake runs but that names a variable only build-flatcar has.
fn build_only_variables(rules: &[model::Rule]) -> Vec<model::Problem> {
    let mut problems: Vec<model::Problem> = Vec::new();
    for rule in rules.iter().filter(|r| r.applies_to(MadeBy::Bake)) {
        for text in rule.texts() {
            for name in text.references().unwrap_or_default() {
                let p = model::Problem {
                    message: format!(
                        "`{name}` exists only on build-flatcar, but a bake runs this rule too: add `meta: {{only: build, because: ...}}`"
                    ),
                    at: text.at,
                };
                if BUILD_VARIABLES.contains(&name.as_str()) && !problems.contains(&p) {
                    problems.push(p);
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_commands_carry_the_script_as_base64() {
        assert_eq!(remote_command("a"), "echo YQ== | base64 -d | sudo sh");
        assert_eq!(remote_command("ab"), "echo YWI= | base64 -d | sudo sh");
        assert_eq!(
            remote_command("abc\n"),
            "echo YWJjCg== | base64 -d | sudo sh"
        );
    }
    #[test]
    fn build_only_variables_need_only_build() {
        let text = "command:\n  key gone:\n    exec: \"! grep -r '{{ .Vars.build_ssh_public_key }}' /etc\"\n    exit-status: 0\n\
                    \x20 key gone on builds:\n    exec: \"! grep -r '{{ .Vars.build_ssh_public_key }}' /etc\"\n    exit-status: 0\n    meta: {only: build, because: bakes make no key}\n";
        let (rules, problems) = model::parse(text);
        assert_eq!(problems, []);
        let found = build_only_variables(&rules);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].at.line, 3);
        assert!(found[0]
            .message
            .contains("`build_ssh_public_key` exists only on build-flatcar"));
    }

    use crate::packer::targets;
    use crate::packer::template::{self, Template};

    /// The repository's own rules: supported, and every variable is the build's.
    #[test]
    fn the_repository_rules_load_and_compile() {
        let capi = crate::workspace::capi_dir();
        let target = targets::target("qemu-flatcar").unwrap();
        let doc = template::load(&capi, target.template).unwrap();
        let known = Template::from_document(doc)
            .0
            .variables
            .into_keys()
            .collect();
        assert_eq!(problems(&capi, &known), []);
        let loaded = load(&capi, Stage::Build).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(load(&capi, Stage::Booted).unwrap().len(), 1);
        let vars: BTreeMap<String, String> = known
            .iter()
            .chain(
                BUILD_VARIABLES
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .iter(),
            )
            .map(|k| (k.clone(), format!("<{k}>")))
            .collect();
        let files: Vec<(&str, &[model::Rule])> =
            loaded.iter().map(|(f, r)| (*f, r.as_slice())).collect();
        let script = script::compile(&files, &vars, MadeBy::Build).unwrap();
        for name in [
            "kernel-param vm.overcommit_memory: value",
            "service containerd: running",
        ] {
            assert!(script.contains(name), "{name}");
        }
    }
}
