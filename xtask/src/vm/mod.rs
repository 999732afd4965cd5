//! Running virtual machines and the long commands that drive them: picking the
//! accelerator, a private libvirtd in its own namespaces, vagrant's names and
//! listings, and the streaming runner for packer and vagrant.

pub mod accelerator;
pub mod libvirt_namespace;
pub mod streaming;
pub mod vagrant;
