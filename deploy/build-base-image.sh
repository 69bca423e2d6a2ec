#!/usr/bin/env bash
# Builds a local stand-in for the official python:3.11-slim image from Debian
# packages, for hosts that cannot pull from a container registry:
#
#   sudo deploy/build-base-image.sh [TAG]      # default TAG: localhost/asgi-deploy-base:bookworm
#   buildah bud --isolation chroot -f deploy/Dockerfile \
#     --build-arg BASE_IMAGE=localhost/asgi-deploy-base:bookworm -t asgi-deploy:test .
#
# Needs root, debootstrap and buildah. Environment:
#   SUITE      Debian suite (default bookworm, whose python3 is 3.11)
#   MIRROR     Debian mirror URL (default: the first one this host's apt uses)
#   CA_BUNDLE  extra PEM bundle to trust inside the image, e.g. a proxy's CA
#              (default: $SSL_CERT_FILE when it is set)
set -euo pipefail

TAG=${1:-localhost/asgi-deploy-base:bookworm}
SUITE=${SUITE:-bookworm}
CA_BUNDLE=${CA_BUNDLE:-${SSL_CERT_FILE:-}}

host_mirror() {
    # deb822 sources (URIs: ...) first, then one-line sources (deb URL suite ...).
    local file
    for file in /etc/apt/sources.list.d/*.sources; do
        [[ -f $file ]] || continue
        awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }' "$file"
    done | awk 'NR == 1'
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $file ]] || continue
        awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "$file"
    done | awk 'NR == 1'
}

MIRROR=${MIRROR:-$(host_mirror | awk 'NR == 1')}  # awk, not head: no SIGPIPE under pipefail
if [[ -z $MIRROR ]]; then
    echo "build-base-image: set MIRROR to a Debian mirror URL" >&2
    exit 2
fi
for tool in debootstrap buildah tar; do
    command -v "$tool" >/dev/null || { echo "build-base-image: $tool is not installed" >&2; exit 2; }
done

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
rootfs=$workdir/rootfs

echo "build-base-image: debootstrap $SUITE from $MIRROR" >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$rootfs" "$MIRROR" >"$workdir/debootstrap.log" 2>&1 || {
    tail -n 30 "$workdir/debootstrap.log" >&2
    exit 1
}
# Like the official slim images: no package lists, caches or docs.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* "$rootfs"/var/log/*.log
ln -sf python3 "$rootfs/usr/bin/python"

extra_env=""
if [[ -n $CA_BUNDLE && -f $CA_BUNDLE ]]; then
    cp "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
    # pip (certifi) and uv (webpki roots) ignore the system store unless told.
    extra_env='ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt'
fi

tar -C "$rootfs" -cf "$workdir/rootfs.tar" .
cat >"$workdir/Containerfile" <<CONTAINERFILE
FROM scratch
ADD rootfs.tar /
ENV LANG=C.UTF-8
$extra_env
CMD ["python3"]
CONTAINERFILE
buildah bud --isolation chroot --quiet -t "$TAG" -f "$workdir/Containerfile" "$workdir" >/dev/null
echo "build-base-image: built $TAG" >&2
