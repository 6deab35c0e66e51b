#!/usr/bin/env bash
# ansible-test sanity on the collection. ansible-test wants to run from inside
# an ansible_collections/NAMESPACE/NAME tree, so the checkout's files (tracked
# and new, not ignored) are hard-linked into build/sanity/ansible_collections/hvops/kvm
# afresh on every run; nothing there is edited by hand.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
tree=$top/build/sanity/ansible_collections/hvops/kvm
rm -rf "$tree"
mkdir -p "$tree"
cd "$top"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' path; do
    [ -e "$path" ] || continue
    mkdir -p "$tree/$(dirname "$path")"
    ln "$path" "$tree/$path" 2>/dev/null || cp -p "$path" "$tree/$path"
done
cd "$tree"
python=$(readlink -f "$top/.venv/bin/python")
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
exec "$top/.venv/bin/ansible-test" sanity --venv --python "$version" --color no "$@"
