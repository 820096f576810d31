#!/usr/bin/env bash
# Build the images that run Nephelios itself on a Swarm, without any registry:
#
#   nephelios/runtime:local    python3, git, the docker CLI, redis-server and sh, copied from this
#                              Debian host with the shared libraries they link (ldd), and
#                              `docker import`-ed as one layer. Seconds, not debootstrap's
#                              minutes; the host's Debian packages pin what goes in.
#   nephelios/nephelios:local  deploy/Dockerfile on top: Nephelios from this checkout and its
#                              dependencies (pip install --target, from the configured index).
#
# Needs, on the host: python3 (3.11, Debian's), git, docker, redis-server.
# Usage: deploy/build-image.sh [--force]   (--force rebuilds the runtime image too)
# NEPHELIOS_IMAGE, when set, is the tag of the Nephelios image (the stack file reads it too),
# so that checkouts built side by side do not replace each other's image.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNTIME_IMAGE=nephelios/runtime:local
IMAGE=${NEPHELIOS_IMAGE:-nephelios/nephelios:local}
PY=/usr/bin/python3.11
say() { printf '%-10s %s\n' "$1:" "$2"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Copy a file (following the symlink chain so the links exist too) into the rootfs.
copy() {
    local path=$1
    while [[ -L $path ]]; do
        mkdir -p "$root$(dirname "$path")"
        cp -a "$path" "$root$path"
        local target
        target=$(readlink "$path")
        [[ $target == /* ]] || target=$(dirname "$path")/$target
        path=$target
    done
    mkdir -p "$root$(dirname "$path")"
    cp -a "$path" "$root$path"
}

# Every shared library an ELF file links, by absolute path.
libraries() { ldd "$1" 2>/dev/null | grep -o '/[^ ]*' || true; }

build_runtime() {
    root=$work/rootfs
    mkdir -p "$root"/{tmp,root,etc,data,usr/bin,usr/lib,usr/lib64} "$root/var/run"
    chmod 1777 "$root/tmp"
    # Debian's merged /usr: /bin and /lib are links into /usr.
    ln -s usr/bin "$root/bin"
    ln -s usr/lib "$root/lib"
    ln -s usr/lib64 "$root/lib64"
    cp -a /usr/lib/python3.11 "$root/usr/lib/"
    rm -rf "$root/usr/lib/python3.11/test" "$root/usr/lib/python3.11/__pycache__"
    cp -a /usr/lib/git-core "$root/usr/lib/"
    mkdir -p "$root/usr/share/git-core"
    cp -a /usr/share/git-core/templates "$root/usr/share/git-core/" 2>/dev/null || true
    # dash as /bin/sh: git runs upload-pack through a shell for local repositories.
    local binaries=("$PY" /usr/bin/git /usr/bin/docker /usr/bin/redis-server /usr/bin/dash)
    local file lib
    for file in "${binaries[@]}"; do copy "$file"; done
    ln -sf python3.11 "$root/usr/bin/python3"
    ln -sf dash "$root/usr/bin/sh"
    ln -sf /usr/lib/git-core/git-upload-pack "$root/usr/bin/git-upload-pack"
    # Libraries of the binaries, of git's helpers and of Python's extension modules.
    { for file in "${binaries[@]}" /usr/lib/git-core/* /usr/lib/python3.11/lib-dynload/*.so; do
        [[ -f $file ]] && libraries "$(readlink -f "$file")"
      done
      # glibc's compatibility stubs, which wheels' compiled modules still link.
      ls /usr/lib/x86_64-linux-gnu/lib{pthread,dl,rt,util,m,resolv}.so.* 2>/dev/null
    } | sort -u | while read -r lib; do copy "$lib"; done
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
        >"$root/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"
    tar --numeric-owner --owner=0 --group=0 -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/bin HOME=/root LANG=C.UTF-8' \
        - "$RUNTIME_IMAGE" >/dev/null
    say runtime "$RUNTIME_IMAGE imported ($(du -sh "$root" | cut -f1))"
}

if [[ ${1:-} == --force ]] || ! docker image inspect "$RUNTIME_IMAGE" >/dev/null 2>&1; then
    build_runtime
else
    say runtime "$RUNTIME_IMAGE already exists"
fi

# The Nephelios layer: dependencies for the image's Python, then this checkout's source.
context=$work/context
mkdir -p "$context/app"
# Installed by the image's own interpreter (Debian's python3 with Debian's pip), so that
# environment markers such as `python_full_version < "3.11.3"` are judged for it. --target
# leaves the system's packages alone.
mapfile -t deps < <("$PY" -c '
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
"$PY" -m pip install --quiet --disable-pip-version-check --no-compile --break-system-packages --root-user-action=ignore \
    --target "$context/lib" "${deps[@]}" 2> >(grep -v '^WARNING: Location' >&2)
cp -a pipeline webhooks templates "$context/app/"
find "$context/app" -name __pycache__ -prune -exec rm -rf {} +
# The classic builder: this Dockerfile needs nothing of BuildKit, which needs the buildx plugin.
DOCKER_BUILDKIT=0 docker build --quiet -f deploy/Dockerfile -t "$IMAGE" "$context" >/dev/null \
    2> >(grep -v -e DEPRECATED -e 'legacy builder' -e BuildKit -e '^ *environment-variable' >&2)
say image "$IMAGE built"
