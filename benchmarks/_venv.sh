# Sourced by the make_*_env.sh scripts: create the venv $VENV with $PYTHON if it is missing, bring
# pip up to date and install the CPU torch wheel first (any other spec pulls a multi-GB CUDA build).
# The scripts then install their own packages and print their versions with print_versions.
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"

print_versions() {  # print_versions DIST ...: each distribution's installed version, or "-"
    "$VENV/bin/python" - "$@" <<'PY'
import importlib.metadata as md
import sys
for name in sys.argv[1:]:
    try:
        print(f"{name:>22} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name:>22} -")
PY
}
