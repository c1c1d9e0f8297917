#!/usr/bin/env bash
# Builds the offline function base image: Debian minbase + python3 from the Debian mirror, then
# `docker import`. Used where no registry can be reached (no `docker pull python:...-slim`).
# Usage: scripts/build-base-image.sh [TAG]    (default localfaas/python-base:bookworm)
# Env:   LOCALFAAS_DEBIAN_MIRROR (default: the mirror apt already uses), LOCALFAAS_DEBIAN_SUITE.
set -euo pipefail

tag=${1:-localfaas/python-base:bookworm}
suite=${LOCALFAAS_DEBIAN_SUITE:-bookworm}

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag: present"
    exit 0
fi

# The mirror apt is configured with is the one this machine can reach.
apt_mirror() {
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hsE '^deb ' /etc/apt/sources.list 2>/dev/null \
            | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}
mirror=${LOCALFAAS_DEBIAN_MIRROR:-$(apt_mirror)}

if ! command -v debootstrap >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing debootstrap (apt-get)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    else
        echo "error: debootstrap is missing; install it as root: apt-get install debootstrap" >&2
        exit 1
    fi
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: building the offline base image needs root (debootstrap); run as root" >&2
    exit 1
fi

rootfs=$(mktemp -d /tmp/localfaas-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

echo "building base image $tag: debootstrap $suite from $mirror (about a minute)"
start=$(date +%s)
if ! debootstrap --variant=minbase --include=python3 "$suite" "$rootfs" "$mirror" \
        >"$rootfs.log" 2>&1; then
    echo "error: debootstrap failed; last lines of $rootfs.log:" >&2
    tail -n 20 "$rootfs.log" >&2
    exit 1
fi
rm -f "$rootfs.log"

# Drop what a function never needs: package caches, docs, man pages, non-C locales.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/var/log/* "$rootfs"/tmp/*
find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' \
    -exec rm -rf {} + 2>/dev/null || true

python_version=$(chroot "$rootfs" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PYTHONUNBUFFERED=1' \
    --change "LABEL org.localfaas.python-version=$python_version" \
    --change 'CMD ["python3"]' \
    - "$tag" >/dev/null
echo "base image $tag: built in $(( $(date +%s) - start ))s (python $python_version)"
