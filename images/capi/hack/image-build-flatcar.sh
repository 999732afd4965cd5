#!/bin/sh
# Compatibility shim: the original image-builder command, handed over to
# `cargo xtask build-flatcar` (run it from inside the repository, as upstream's from images/capi).
exec cargo xtask build-flatcar "$@"
