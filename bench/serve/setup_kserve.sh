#!/usr/bin/env bash
# KServe's model server in its own virtualenv for the serving benchmark (kserve pins its own web
# stack, so it is not a project dependency). torch and our packages come from the project's
# environment through a .pth file appended after kserve's own site-packages.
# Usage: bench/serve/setup_kserve.sh PROJECT_PYTHON  -> .bench/kserve-venv (exit 0 even if it fails)
set -uo pipefail
cd "$(dirname "$0")/../.."
VENV=.bench/kserve-venv
PROJECT_PY=${1:-.venv/bin/python}
if ! { [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c "import kserve" 2>/dev/null; }; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q kserve || { echo "kserve could not be installed" >&2; exit 0; }
fi
site=$("$PROJECT_PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
own=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
printf '%s\n%s\n%s\n' "$site" "$PWD/operator" "$PWD/trainer_image" > "$own/zz-kubeforge-project.pth"
