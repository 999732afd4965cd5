//! The node rules check: the rules files against the variables of the targets
//! that run them.

use std::path::{Path, PathBuf};

use anyhow::anyhow;

use super::shown;
use crate::checks::engine::{Check, Outcome, Problem};
use crate::checks::source_tree::CAPI;
use crate::packer::targets::BuildTarget;
use crate::packer::template::{self, Template};
use crate::rules;

/// The node rules: they parse, use only the supported goss subset, and name only
/// variables every target that runs them supplies.
pub fn rules_check(root: &Path, targets: Vec<&'static BuildTarget>, inputs: Vec<PathBuf>) -> Check {
    let capi = root.join(CAPI);
    let label = targets
        .iter()
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(", ");
    Check::new("node rules", label, move |_, _| {
        let mut problems = Vec::new();
        for target in &targets {
            let doc = template::load(&capi, target.template).map_err(|f| anyhow!("{f}"))?;
            let known = Template::from_document(doc)
                .0
                .variables
                .into_keys()
                .collect();
            for (file, p) in rules::problems(&capi, &known) {
                let problem = Problem::new(p.message)
                    .in_file(shown(file))
                    .at(p.at.line, Some(p.at.column));
                if !problems.contains(&problem) {
                    problems.push(problem);
                }
            }
        }
        Ok(Outcome::from_problems(problems, Vec::new()))
    })
    .cached(root, inputs, Vec::new())
}
