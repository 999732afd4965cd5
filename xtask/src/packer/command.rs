//! Packer command lines: the argument vector for a target (its var files in order,
//! then the build's generated var file, then the template), the generated var file
//! itself, and where in the template Packer's error messages point.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use super::targets::{BuildInput, BuildTarget};
use super::template::{Finding, Template};

/// The environment Packer runs with: no call home to check for a newer version (the
/// machine may have no internet, and the answer changes nothing).
pub const ENV: &[(&str, &str)] = &[("CHECKPOINT_DISABLE", "1")];

/// The arguments after `packer`: `subcommand`, `options`, a `-var-file=` for each of
/// the target's var files in order, then one for each of `later_var_files` (a
/// site's mirror config, then the build's generated var file, so they win), then
/// the template. Paths are relative to images/capi, which is where Packer runs.
pub fn args(
    subcommand: &str,
    options: &[&str],
    target: &BuildTarget,
    later_var_files: &[&Path],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![subcommand.into()];
    args.extend(options.iter().map(OsString::from));
    for var_file in target.var_files {
        args.push(format!("-var-file={var_file}").into());
    }
    for var_file in later_var_files {
        let mut arg = OsString::from("-var-file=");
        arg.push(var_file);
        args.push(arg);
    }
    args.push(target.template.into());
    args
}

/// The generated var file: each build input's variable with its value, as canonical
/// JSON.
pub fn generated_var_file(values: &[(BuildInput, String)]) -> String {
    let map: BTreeMap<&str, &str> = values
        .iter()
        .map(|(input, value)| (input.variable(), value.as_str()))
        .collect();
    crate::json_text::canonical(&serde_json::json!(map))
}

/// The findings in Packer's error output that can be pinned to a place: an unknown
/// builder, provisioner or post-processor type (a plugin that is not installed), a
/// required variable without a value, a var file Packer could not read. Lines that
/// name nothing known are left for the caller to show as they are.
pub fn locate_errors(output: &str, template: &Template) -> Vec<Finding> {
    let path = template.doc.path.as_str();
    let mut findings = Vec::new();
    for line in output.lines() {
        let lower = line.to_lowercase();
        if lower.contains("unknown") || lower.contains("not installed") {
            for plugin in &template.plugins {
                let quoted = [
                    format!("'{}'", plugin.type_name),
                    format!("\"{}\"", plugin.type_name),
                    format!("{} {}", plugin.kind.word(), plugin.type_name),
                ];
                if lower.contains(plugin.kind.word()) && quoted.iter().any(|q| line.contains(q)) {
                    let hint = plugin_source(&plugin.type_name)
                        .map(|source| {
                            format!(
                                " (Packer >= 1.7 keeps it in a plugin: `packer plugins install {source}`)"
                            )
                        })
                        .unwrap_or_default();
                    findings.push(Finding::at(
                        path,
                        plugin.position,
                        format!(
                            "{} type `{}` is not available to this Packer{hint}: {}",
                            plugin.kind.word(),
                            plugin.type_name,
                            line.trim()
                        ),
                    ));
                }
            }
        }
        if let Some(name) = line.split("required variable not set: ").nth(1) {
            let name = name.trim();
            findings.push(Finding::at(
                path,
                template.variables.get(name).and_then(|v| v.position),
                format!("Packer: required variable not set: {name}"),
            ));
        }
        if let Some(rest) = line.split("Error reading variables in '").nth(1) {
            if let Some((file, why)) = rest.split_once("': ") {
                findings.push(Finding::at(file, None, format!("Packer: {why}")));
            }
        }
    }
    findings.dedup();
    findings
}

/// The HashiCorp plugin that provides a builder, provisioner or post-processor type
/// the templates may use, for Packer >= 1.7 where they are not built in.
fn plugin_source(type_name: &str) -> Option<&'static str> {
    Some(match type_name {
        "qemu" => "github.com/hashicorp/qemu",
        "ansible" | "ansible-local" => "github.com/hashicorp/ansible",
        "vagrant" | "vagrant-cloud" => "github.com/hashicorp/vagrant",
        "amazon-ebs"
        | "amazon-ebssurrogate"
        | "amazon-ebsvolume"
        | "amazon-instance"
        | "amazon-chroot"
        | "amazon-import" => "github.com/hashicorp/amazon",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_text::{self, Position};
    use crate::packer::targets::TARGETS;
    use crate::packer::template::Document;

    #[test]
    fn argv_layers_var_files_in_order_then_the_generated_one() {
        let target = &TARGETS[0];
        let args = args(
            "validate",
            &["-syntax-only"],
            target,
            &[
                Path::new("/site/mirror.json"),
                Path::new("/tmp/x/build.json"),
            ],
        );
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        expect_test::expect![[r#"
            validate -syntax-only -var-file=packer/config/kubernetes.json -var-file=packer/config/cni.json -var-file=packer/config/containerd.json -var-file=packer/config/ansible-args.json -var-file=packer/config/common.json -var-file=packer/qemu/qemu-flatcar.json -var-file=/site/mirror.json -var-file=/tmp/x/build.json packer/qemu/packer.json"#]]
        .assert_eq(&args.join(" "));
    }

    #[test]
    fn generated_var_file_is_canonical_json() {
        let text = generated_var_file(&[
            (BuildInput::SshPrivateKeyFile, "/k/id_ed25519".into()),
            (BuildInput::Accelerator, "tcg".into()),
        ]);
        expect_test::expect![[r#"
            {
              "accelerator": "tcg",
              "ssh_private_key_file": "/k/id_ed25519"
            }
        "#]]
        .assert_eq(&text);
    }

    fn template(text: &str) -> Template {
        Template::from_document(Document {
            path: "packer/qemu/packer.json".into(),
            value: json_text::parse(text).unwrap(),
            scan: json_text::scan(text),
        })
        .0
    }

    #[test]
    fn locates_unknown_plugins_and_unset_variables() {
        let t = template(
            "{\n  \"builders\": [\n    {\"type\": \"vmware-nope\"}\n  ],\n  \"variables\": {\"v\": null}\n}",
        );
        // Packer 1.6.6's words.
        let output = "Error: Failed to initialize build \"vmware-nope\"\n\n\
                      error initializing builder 'vmware-nope': Unknown builder\nvmware-nope\n";
        let found = locate_errors(output, &t);
        assert_eq!(found.len(), 1);
        assert!(
            !found[0].message.contains("plugins install"),
            "not a known plugin"
        );
        assert_eq!(
            found[0].position,
            Some(Position {
                line: 3,
                column: 14
            })
        );
        assert!(found[0]
            .message
            .starts_with("builder type `vmware-nope` is not available"));

        let amazon = template("{\"builders\": [{\"type\": \"amazon-ebs\"}]}");
        let found = locate_errors(
            "error initializing builder 'amazon-ebs': Unknown builder amazon-ebs",
            &amazon,
        );
        assert!(found[0]
            .message
            .contains("`packer plugins install github.com/hashicorp/amazon`"));

        let found = locate_errors("1 error occurred:\n\t* required variable not set: v\n", &t);
        assert_eq!(
            found[0].position,
            Some(Position {
                line: 5,
                column: 17
            })
        );
    }
}
