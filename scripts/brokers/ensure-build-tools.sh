#!/usr/bin/env bash
# Make sure the C/C++ toolchain that rdkafka's bundled librdkafka build needs
# (gcc, g++, make; its configure script also uses python3, which the image has)
# is installed. Debian's librdkafka-dev is too old for the crate, so we build
# the bundled copy instead. Idempotent: exits at once when everything is there.
set -euo pipefail

missing=()
for tool in gcc g++ make; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "ensure-build-tools: gcc g++ make already present"
    exit 0
fi

# Map tool names to Debian packages (g++ comes from package g++, etc.).
pkgs=()
for tool in "${missing[@]}"; do
    case "$tool" in
        gcc) pkgs+=(gcc) ;;
        g++) pkgs+=(g++) ;;
        make) pkgs+=(make) ;;
    esac
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "ensure-build-tools: need root or sudo to install ${pkgs[*]}" >&2; exit 1; }
    SUDO="sudo"
fi

# apt-cache/apt-get need a fresh package list on a new machine.
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
echo "ensure-build-tools: installed ${pkgs[*]}"
