#!/usr/bin/env bash
# ansible-test sanity on the collection, offline and without docker.
#
# ansible-test wants to run from inside an ansible_collections/NAMESPACE/NAME
# tree, so the checkout's files (tracked and new, not ignored) are hard-linked
# into build/sanity/ansible_collections/hvops/kvm afresh on every run; nothing
# there is edited by hand. Extra arguments go to ansible-test, e.g.
#   tools/sanity.sh --test pylint        tools/sanity.sh --python 3.8
# except a first --ansible-venv DIR: the ansible-core (so the ansible-test) to run,
# the project's .venv unless given, e.g. the matrix's (tools/setup.sh 2.16 makes it):
#   tools/sanity.sh --ansible-venv build/venv-core2.16 --test validate-modules
#
# How it runs, and why:
# * The tree gets a git repository of its own (no commits needed). ansible-test
#   lists content with `git ls-files` from the nearest .git upwards; without one
#   it would find the checkout's, where build/ is ignored, and skip everything.
# * The controller is that venv's Python, as it is (no --venv, no
#   --requirements): it already has ansible-core and its pinned dependencies.
#   --venv would build a second controller venv under tests/output/.tmp, which
#   this script wipes, so every run would download it again; --requirements
#   would pip-install ansible-test's own pins into the venv and break its pins.
#   Every sanity test that needs packages (pylint, yamllint, import, ...) still
#   gets its own venv under ~/.ansible/test/venv, named by a hash of what it
#   installs (so each ansible-test version has its own), made once and reused;
#   pip is bootstrapped there by tools/get_pip_standin.py (see tools/setup.sh).
# * Multi-version tests (compile, import) run on every Python that ansible-test
#   supports and that is really installed, modules on those tests/config.yml
#   allows. pyenv's shims for versions that are installed but not selected only
#   print "command not found", so the shims are taken off PATH and the working
#   interpreters are linked into build/sanity/bin instead. Versions not found
#   are skipped by ansible-test with a warning.
# * One run at a time per user: ansible-test does not lock the venvs it makes
#   under ~/.ansible/test/venv (two runs creating the same one break each
#   other), and runs from the same checkout share build/sanity. A second run
#   waits for the first (flock on ~/.ansible/test/hvops-sanity.lock).
# * pip's "WARNING: Location 'file:///opt/...' is ignored" lines, which this
#   machine's pip configuration causes for every package, are filtered out;
#   all other output, errors included, and ansible-test's exit status are kept.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
venv=$top/.venv
if [ "${1:-}" = --ansible-venv ]; then
    [ $# -ge 2 ] || { echo "sanity: --ansible-venv needs a directory" >&2; exit 2; }
    case "$2" in
        /*) venv=$2 ;;
        *) venv=$top/$2 ;;
    esac
    shift 2
fi
python=$venv/bin/python
[ -x "$python" ] || { echo "sanity: no $python; run tools/setup.sh first" >&2; exit 1; }

# Findings are fixed, not ignored: ignore files stay absent or empty.
for ignore in "$top"/tests/sanity/ignore-*.txt; do
    if [ -s "$ignore" ]; then
        echo "sanity: ${ignore#"$top"/} is not empty; fix the findings instead of ignoring them" >&2
        exit 1
    fi
done

mkdir -p "$HOME/.ansible/test"
exec 9> "$HOME/.ansible/test/hvops-sanity.lock"
if ! flock -n 9; then
    echo "sanity: waiting for another sanity run to finish (lock $HOME/.ansible/test/hvops-sanity.lock)"
    flock 9
fi

sanity=$top/build/sanity
tree=$sanity/ansible_collections/hvops/kvm
rm -rf "$tree"
mkdir -p "$tree"
cd "$top"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' path; do
    [ -e "$path" ] || continue
    mkdir -p "$tree/$(dirname "$path")"
    ln "$path" "$tree/$path" 2>/dev/null || cp -p "$path" "$tree/$path"
done
git -C "$tree" init -q

# Interpreters for the multi-version tests.
bin=$sanity/bin
rm -rf "$bin"
mkdir -p "$bin"
pyenv_root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
path=
IFS=: read -r -a entries <<< "$PATH"
for entry in "${entries[@]}"; do
    case "$entry" in
        "" | "$pyenv_root/shims" | */.pyenv/shims) ;;
        *) path=${path:+$path:}$entry ;;
    esac
done
versions=$("$python" -c 'from ansible_test._util.target.common.constants import REMOTE_ONLY_PYTHON_VERSIONS as r, CONTROLLER_PYTHON_VERSIONS as c; print(*(r + c))')
found=()
for version in $versions; do
    for candidate in $(PATH=$path type -aP "python$version") "$pyenv_root"/versions/*/bin/"python$version"; do
        # ansible-test makes a venv (without pip) from it, then runs ensurepip in that venv.
        if [ -x "$candidate" ] && "$candidate" -c 'import ensurepip, venv' >/dev/null 2>&1; then
            ln -s "$candidate" "$bin/python$version"
            found+=("$version")
            break
        fi
    done
done
echo "sanity: Pythons found: ${found[*]:-none}"

cd "$tree"
unset ANSIBLE_COLLECTIONS_PATH ANSIBLE_COLLECTIONS_PATHS
export PATH=$bin:$path
quiet() { grep --line-buffered -v "^WARNING: Location 'file:///opt/.*' is ignored" || true; }
# stdout and stderr filtered apart; the status is ansible-test's (pipefail).
echo "sanity: $("$venv/bin/ansible-test" --version) from ${venv#"$top"/}"
{ "$venv/bin/ansible-test" sanity --color no "$@" 2>&1 1>&3 3>&- 9>&- | quiet >&2; } 3>&1 | quiet
