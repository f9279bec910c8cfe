#!/bin/sh
# Debian's packages the tests need: bubblewrap and mount (the sandbox) and Chromium (report.html is checked in a real
# browser); as root, or through sudo otherwise. Skips what is installed already.
missing=""
command -v bwrap >/dev/null || missing="$missing bubblewrap"
[ -x /usr/bin/mount ] || missing="$missing mount"  # the sandbox's set-up remounts its tmpfs (bubblewrap.py)
command -v chromium >/dev/null || missing="$missing chromium"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
$SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
