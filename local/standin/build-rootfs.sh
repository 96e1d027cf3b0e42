#!/bin/sh
# The root file system of lambda-chat's STAND-IN for public.ecr.aws/lambda/python:3.13, built offline from the
# Debian and PyPI registries alone (for machines that cannot pull AWS's image; README: sam local).
# It is not AWS's image: Debian 13's Python 3.13 instead of Amazon Linux 2023's, and the open-source Runtime
# Interface Client (awslambdaric) as the runtime. SAM CLI adds its own emulator (/var/rapid) on top.
#
#   build-rootfs.sh ROOTFS_DIR PIP PIP_PLATFORM      e.g. build-rootfs.sh /tmp/rootfs .venv/bin/pip manylinux2014_x86_64
set -eu
rootfs=$1
pip=$2
platform=$3
here=$(cd "$(dirname "$0")" && pwd)

debootstrap --variant=minbase --include=python3.13,ca-certificates trixie "$rootfs" http://deb.debian.org/debian
"$pip" install --quiet --disable-pip-version-check --no-compile --only-binary=:all: \
  --platform "$platform" --implementation cp --python-version 3.13 \
  --target "$rootfs/var/runtime" -r "$here/runtime-requirements.txt"
install -m 755 "$here/bootstrap" "$rootfs/var/runtime/bootstrap"
mkdir -p "$rootfs/var/task" "$rootfs/opt"
# What a runtime never reads: downloaded packages, package lists, documentation.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
