#!/usr/bin/env bash
# Make a Docker engine answer on this machine and build the local base image the CPU flavour uses.
# Idempotent: every step is skipped when its result is already there. Needs root and Debian's mirror.
set -euo pipefail

BASE_TAG="${BASE_TAG:-local/debian:bookworm}"
SUITE="${SUITE:-bookworm}"

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if ((${#need[@]})); then
    echo "docker-setup: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    echo "docker-setup: starting dockerd (log: /var/log/dockerd.log)"
    nohup dockerd >/var/log/dockerd.log 2>&1 &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { echo "docker-setup: dockerd did not answer in 60 s" >&2; tail -20 /var/log/dockerd.log >&2; exit 1; }
fi

if ! docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    echo "docker-setup: building $BASE_TAG with debootstrap"
    root="$(mktemp -d)"
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase "$SUITE" "$root" >/dev/null
    tar -C "$root" -c . | docker import - "$BASE_TAG" >/dev/null
fi
echo "docker-setup: engine $(docker version --format '{{.Server.Version}}'), base $BASE_TAG ready"
