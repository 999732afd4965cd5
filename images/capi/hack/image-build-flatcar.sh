#!/bin/sh
# Compatibility shim: the original image-builder command, handed over to
# `cargo xtask build-flatcar` (run it from inside the repository, as upstream's from images/capi).
# Once the subcommand exists, the next line becomes: exec cargo xtask build-flatcar "$@"
echo "image-build-flatcar.sh: not available yet: cargo xtask build-flatcar is not implemented in this version" >&2; exit 1
