//! The build targets: the one place that says which template and which ordered stack
//! of var files make a build, and which variables the build itself supplies. Paths
//! are relative to images/capi, where Packer runs.

/// A variable whose value exists only at build time; the build writes it into a
/// generated var file that comes after the target's var files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildInput {
    /// The verified Flatcar disk image the builder boots.
    ImagePath,
    /// Its digest, as `sha512:<hex>`.
    ImageChecksum,
    /// The private half of the per-build SSH key.
    SshPrivateKeyFile,
    /// The first-boot Ignition config that authorizes that key.
    IgnitionConfigPath,
    /// `kvm` or `tcg`, chosen by probing.
    Accelerator,
    /// The release channel, resolved (`stable`, `beta` ...).
    FlatcarChannel,
    /// The release, resolved from `current` to a version such as `4081.2.0`.
    FlatcarVersion,
    /// Where Packer writes the image, its manifest and the box.
    OutputDirectory,
    /// The `node-rules` directory the image runs the node rules from (see `rules`).
    NodeRulesDir,
}

impl BuildInput {
    /// The template variable that carries it.
    pub fn variable(self) -> &'static str {
        match self {
            BuildInput::ImagePath => "flatcar_image_path",
            BuildInput::ImageChecksum => "flatcar_image_checksum",
            BuildInput::SshPrivateKeyFile => "ssh_private_key_file",
            BuildInput::IgnitionConfigPath => "ignition_config_path",
            BuildInput::Accelerator => "accelerator",
            BuildInput::FlatcarChannel => "flatcar_channel",
            BuildInput::FlatcarVersion => "flatcar_version",
            BuildInput::OutputDirectory => "output_directory",
            BuildInput::NodeRulesDir => "node_rules_dir",
        }
    }
}

/// A template plus the var files layered onto it, in order (later files win).
#[derive(Debug)]
pub struct BuildTarget {
    /// What `--target` calls it.
    pub name: &'static str,
    pub template: &'static str,
    pub var_files: &'static [&'static str],
    /// What the build supplies after the var files.
    pub build_inputs: &'static [BuildInput],
}

/// Every build target, in the order reports list them.
pub const TARGETS: &[BuildTarget] = &[
    BuildTarget {
        name: "qemu-flatcar",
        template: "packer/qemu/packer.json",
        var_files: &[
            "packer/config/kubernetes.json",
            "packer/config/cni.json",
            "packer/config/containerd.json",
            "packer/config/ansible-args.json",
            "packer/config/common.json",
            "packer/qemu/qemu-flatcar.json",
        ],
        build_inputs: &[
            BuildInput::ImagePath,
            BuildInput::ImageChecksum,
            BuildInput::SshPrivateKeyFile,
            BuildInput::IgnitionConfigPath,
            BuildInput::Accelerator,
            BuildInput::FlatcarChannel,
            BuildInput::FlatcarVersion,
            BuildInput::OutputDirectory,
            BuildInput::NodeRulesDir,
        ],
    },
    BuildTarget {
        name: "ami-flatcar",
        template: "packer/ami/packer.json",
        var_files: &[
            "packer/config/kubernetes.json",
            "packer/config/cni.json",
            "packer/config/containerd.json",
            "packer/config/ansible-args.json",
            "packer/config/common.json",
            "packer/ami/flatcar.json",
        ],
        // On EC2 the Ignition config is used as stored (user data) and Packer makes
        // its own temporary key pair: only the release and the output are per build.
        build_inputs: &[
            BuildInput::FlatcarChannel,
            BuildInput::FlatcarVersion,
            BuildInput::OutputDirectory,
        ],
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static BuildTarget> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Every target's name, for `--target`'s possible values.
pub fn names() -> Vec<&'static str> {
    TARGETS.iter().map(|t| t.name).collect()
}

impl BuildTarget {
    /// The template and the var files: every file whose content decides the build.
    pub fn stack(&self) -> impl Iterator<Item = &'static str> + '_ {
        std::iter::once(self.template).chain(self.var_files.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_stacks_end_with_the_provider_file() {
        let mut names = names();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), TARGETS.len());
        for t in TARGETS {
            assert!(t.template.ends_with("/packer.json"), "{}", t.name);
            assert_eq!(t.var_files[0], "packer/config/kubernetes.json");
            let provider_dir = t.template.trim_end_matches("packer.json");
            assert!(
                t.var_files.last().unwrap().starts_with(provider_dir),
                "{}: the provider's own var file comes last",
                t.name
            );
        }
    }
}
