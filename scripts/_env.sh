# Sourced by scripts/*: shared setup. Expects the cwd to be the repo root.

# ensure_venv EXTRAS: create .venv if missing and install the package
# editable, with the given extras ("" for none), so every script runs against
# the current source tree without a manual setup step.
ensure_venv() {
    local extras="${1:-}" spec="."
    if [[ -n "$extras" ]]; then
        spec=".[$extras]"
    fi
    if [[ ! -x .venv/bin/python ]]; then
        python3 -m venv .venv
    fi
    .venv/bin/pip install -q --disable-pip-version-check -e "$spec"
}
