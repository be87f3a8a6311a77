#!/usr/bin/env bash
# Install floors hold: a scratch virtual environment with every requirement at its floor (">=X" installed as
# "==X", pins as pinned, all at once), then the fast tests (all but the browser test). On demand, not in CI:
# a few minutes and about 1 GB of downloads besides torch. Writes bench/results/check_floors.txt
# (what was installed and pytest's summary).
#   bash bench/check_floors.sh                      # the whole fast suite
#   bash bench/check_floors.sh tests/test_data.py   # pytest arguments replace the default selection
# FLOORS_VENV=path chooses the scratch environment (default: a fresh temporary folder, deleted at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${FLOORS_VENV:-$(mktemp -d)/venv}
[ -n "${FLOORS_VENV:-}" ] || trap 'rm -rf "$(dirname "$venv")"' EXIT
rm -rf "$venv"
python3 -m venv "$venv"
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
pins=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e 's/>=/==/' requirements.txt requirements-test.txt | grep -v '^$')
# torch first, alone: the CPU wheel on this machine's disk, so that nothing pulls a CUDA build
python -m pip install -q "$(grep '^torch==' <<<"$pins")"
# shellcheck disable=SC2086  # one argument per pin
python -m pip install -q $pins
python -m pip check
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1
[ "$#" -gt 0 ] || set -- --ignore=tests/test_browser.py
log=bench/results/check_floors.txt
{
  echo "# bash bench/check_floors.sh $*   ($(date -u +%Y-%m-%dT%H:%MZ), Python $(python -c 'import platform; print(platform.python_version())'), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- recsys tests app.py requirements*.txt || echo ' + uncommitted changes'))"
  echo "## requested"
  echo "$pins"
  echo "## installed"
  python -m pip freeze
} >"$log"
set +e
python -m pytest -q -p no:cacheprovider "$@" | tee /dev/stderr | tail -n 1 | sed 's/^/## pytest: /' >>"$log"
status=${PIPESTATUS[0]}
set -e
echo "wrote $log (pytest exit status $status)"
exit "$status"
