#!/usr/bin/env bash
# Installs everything edgemm needs on a Debian machine, as root: system packages,
# a virtualenv at .venv, and edgemm with its converter, demo and test extras.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"

apt_packages=(python3 python3-venv python3-dev gcc portaudio19-dev espeak-ng
              pulseaudio pulseaudio-utils libasound2-plugins chromium prometheus)
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install.sh: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # tests/test_prometheus.py starts its own Prometheus; the package's service (on :9090) is not wanted
    if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[convert,demo,test]'
# ONNX -> TFLite: onnx2tf pins tensorflow 2.19, numpy 1.26, onnx 1.19 (conflicting with the set above), so it
# gets an environment of its own, installed against its own requirements; edgemm runs it as a command.
if [ ! -x .venv-onnx2tf/bin/onnx2tf ]; then
    python3 -m venv .venv-onnx2tf
    .venv-onnx2tf/bin/python -m pip install -q --upgrade pip
    .venv-onnx2tf/bin/python -m pip install -q onnx2tf==1.29.24
fi
echo "install.sh: ready ($(.venv/bin/edgemm --version))"
