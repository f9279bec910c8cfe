#!/bin/sh
# Debian's bubblewrap, which the sandbox and its tests need; as root, or through sudo otherwise.
command -v bwrap >/dev/null && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
$SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq bubblewrap >/dev/null
