#!/usr/bin/env bash
# The bundled swe task set: three small pure-Python packages from PyPI (sdists, pinned: each sdist
# ships its pytest suite), mined into swe-tasks/ (not committed) with `warmstart tasks mine-bugs`.
#
#   scripts/mine-swe-tasks.sh [DEST]        (default DEST: swe-tasks)
#
# The suites run in the sandbox as `nobody` with DEST/venv: a virtual environment of the system's
# /usr/bin/python3 (a Python under /root is unreadable there) holding pytest only (the three packages
# have no dependencies). Takes a few minutes on 2 cores; writes DEST/<package>-<version>/ per package
# (docs/swe.md, "Task sets"), each whole or not at all.
set -euo pipefail

cd "$(dirname "$0")/.."
DEST="${1:-swe-tasks}"
HOST_PYTHON="${HOST_PYTHON:-.venv/bin/python}"  # the project's environment: its pip and warmstart
PYTEST_PIN="pytest==8.3.4"
PACKAGES=("toolz==1.0.0" "inflection==0.5.1" "more-itertools==10.5.0")
MAX_TASKS="${MAX_TASKS:-25}"

mkdir -p "$DEST/sdists" "$DEST/src"
chmod 755 "$DEST"
if [ ! -x "$DEST/venv/bin/python" ]; then
    /usr/bin/python3 -m venv --without-pip "$DEST/venv"
fi
"$HOST_PYTHON" -m pip --python "$DEST/venv/bin/python" install --quiet "$PYTEST_PIN"
"$HOST_PYTHON" -m pip download --quiet --no-deps --no-binary :all: -d "$DEST/sdists" "${PACKAGES[@]}"

for spec in "${PACKAGES[@]}"; do
    name="${spec%%==*}"
    version="${spec##*==}"
    archive="$DEST/sdists/${name}-${version}.tar.gz"
    [ -f "$archive" ] || archive="$DEST/sdists/${name//-/_}-${version}.tar.gz"  # newer sdists: normalized names
    tree="$DEST/src/$(basename "$archive" .tar.gz)"
    rm -rf "$tree"
    tar -xzf "$archive" -C "$DEST/src"
    "$HOST_PYTHON" -m warmstart.cli tasks mine-bugs "$tree" --name "$name-$version" --out "$DEST/$name-$version" \
        --python "$DEST/venv/bin/python" --max-tasks "$MAX_TASKS" --max-mutations 120 --force
done
"$HOST_PYTHON" - "$DEST" <<'PY'
import json, pathlib, sys
sets = [json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).glob("*/manifest.json"))]
for s in sets:
    print(f"{s['name']}: {s['tasks']} tasks, {s['mutations_tried']} mutations tried (acceptance {s['acceptance']:.0%}), {s['seconds']} s")
print(f"{sum(s['tasks'] for s in sets)} tasks from {len(sets)} packages")
PY
