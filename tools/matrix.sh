#!/usr/bin/env bash
# The ansible-core lines meta/runtime.yml claims, besides the project .venv's
# (which `make sanity units integration` test):
#
#   tools/matrix.sh [--integration "LINE..."] LINE...
#
# For each LINE (e.g. 2.16): its venv build/venv-coreLINE from
# tests/requirements/core-LINE.txt (tools/setup.sh LINE), the line-dependent
# tests of `ansible-test sanity` from that venv (tools/sanity.sh --ansible-venv), and the unit
# tests under its ansible-core; for the lines given with --integration also the
# integration subset listed in tests/integration/matrix.txt, with that venv's
# ansible and ansible-playbook (tests/harness/ansible_run.py takes those of
# the Python running pytest). Stops at the first failure; the last lines say how
# long each part took.
#
# Integration tests use fixed network namespace names: one run on a machine at
# a time. This script takes no lock itself (a lock taken around it, as in
# `flock /tmp/hvops-integration.lock make matrix`, would wait for itself).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

integration=()
if [ "${1:-}" = --integration ]; then
    [ $# -ge 2 ] || { echo "matrix: --integration needs a list of lines" >&2; exit 2; }
    read -r -a integration <<< "$2"
    shift 2
fi
[ $# -gt 0 ] || { echo "usage: tools/matrix.sh [--integration \"LINE...\"] LINE..." >&2; exit 2; }
lines=("$@")
for line in "${integration[@]}"; do
    case " ${lines[*]} " in
        *" $line "*) ;;
        *) echo "matrix: --integration $line is not one of the lines: ${lines[*]}" >&2; exit 2 ;;
    esac
done

tools/setup.sh "${lines[@]}"

export ANSIBLE_COLLECTIONS_PATH=$top/build/collections
times=()
timed() {
    local what=$1 start
    shift
    echo "matrix: $what"
    start=$SECONDS
    "$@"
    times+=("$(printf '%-28s %4d s' "$what" $((SECONDS - start)))")
}

# The sanity tests whose verdict depends on the ansible-core line (documentation,
# argument specs, imports, the Pythons it supports); the style tests (pep8,
# pylint, shellcheck, yamllint, ...) run with the newest line in `make sanity`.
line_sanity=(--test action-plugin-docs --test ansible-doc --test compile --test import --test validate-modules)

subset=()
while read -r entry; do
    case "$entry" in "" | "#"*) continue ;; esac
    subset+=("$entry")
done < tests/integration/matrix.txt

for line in "${lines[@]}"; do
    venv=build/venv-core$line
    "$venv/bin/ansible" --version | head -n 1
    timed "ansible-core $line sanity" tools/sanity.sh --ansible-venv "$venv" "${line_sanity[@]}"
    timed "ansible-core $line units" "$venv/bin/python" -m pytest -q tests/unit
    case " ${integration[*]} " in
        *" $line "*)
            timed "ansible-core $line integration" "$venv/bin/python" -m pytest -q -n 2 --dist loadgroup \
                "${subset[@]}" ;;
    esac
done

echo "matrix: passed on ansible-core ${lines[*]}; times:"
printf '  %s\n' "${times[@]}"
