#!/usr/bin/env bash
# Re-resolve the CPU stack and rewrite constraints.txt: a fresh virtual environment gets the CPU
# torch build and the package with its test extra at the newest versions setup.cfg allows, then
# `pip freeze` (the project itself left out, local version labels such as +cpu dropped, so one
# file serves CPU and CUDA builds of torch) becomes the new constraints.txt. Run the test suite
# against it before committing:  bash tools/refresh_constraints.sh && python -m pytest -q
set -euo pipefail
cd "$(dirname "$0")/.."
torch_version="${TORCH_VERSION:-2.13.0}"
venv="$(mktemp -d)/venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "torch==$torch_version"
"$venv/bin/pip" install -q -e '.[test]'
{
  echo "# Exact versions of the resolved CPU stack that CI and the README's test command install"
  echo "# (pip install -e '.[test]' -c constraints.txt). Refresh: bash tools/refresh_constraints.sh"
  "$venv/bin/pip" freeze --all --exclude-editable | grep -v '^pip==' | sed -E 's/\+[A-Za-z0-9.]+$//' | LC_ALL=C sort -f
} > constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages) from $venv"
