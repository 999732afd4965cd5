#!/bin/sh
# Compatibility shim: the original image-builder command, handed over to
# `cargo xtask boxes` (run it from inside the repository, as upstream's from images/capi).
# Once the subcommand exists, the next line becomes: exec cargo xtask boxes "$@"
echo "boxes-flatcar.sh: not available yet: cargo xtask boxes is not implemented in this version" >&2; exit 1
