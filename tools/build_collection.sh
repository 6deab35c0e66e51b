#!/usr/bin/env bash
# Build the Galaxy artifact of hvops.kvm into build/dist, check what went into
# it, install it into a throwaway collections path and check that
# `ansible-galaxy collection list hvops.kvm` finds it there, at galaxy.yml's
# version, and that `ansible-galaxy collection verify` finds it intact.
#
# Needs the project venv (tools/setup.sh); works offline. Prints the artifact's
# path on its last line. MAX_KIB (default 2048) caps the artifact's size: the
# collection is a few hundred KiB of text, so anything bigger means build_ignore
# let something in (a venv, a guest image, build output).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bin=$top/.venv/bin
[ -x "$bin/ansible-galaxy" ] || { echo "build: no $bin/ansible-galaxy; run tools/setup.sh first" >&2; exit 1; }

dist=$top/build/dist
rm -rf "$dist"
mkdir -p "$dist"
"$bin/ansible-galaxy" collection build --force --output-path "$dist" "$top"

read -r namespace name version readme < <("$bin/python" -c '
import yaml
g = yaml.safe_load(open("galaxy.yml"))
print(g["namespace"], g["name"], g["version"], g["readme"])')
artifact=$dist/$namespace-$name-$version.tar.gz
[ -f "$artifact" ] || { echo "build: $artifact was not built" >&2; exit 1; }

# What is in the tarball: nothing of the development environment, everything a
# collection needs.
"$bin/python" - "$artifact" "$readme" "${MAX_KIB:-2048}" <<'EOF'
import fnmatch
import os
import sys
import tarfile

artifact, readme, max_kib = sys.argv[1], sys.argv[2], int(sys.argv[3])
with tarfile.open(artifact) as tar:
    names = [member.name.rstrip('/') for member in tar.getmembers()]

forbidden = ['.venv', 'build', '.git', '.ci', 'tools', 'tests/output', '.pytest_cache',
             '.ansible', '.cache', 'Makefile', 'requirements-dev.txt', 'pytest.ini',
             '.ansible-lint', '.yamllint', '.gitignore']
problems = []
for name in names:
    parts = name.split('/')
    if name in forbidden or any('/'.join(parts[:i]) in forbidden for i in range(1, len(parts))):
        problems.append('%s: development file in the artifact (add it to build_ignore)' % name)
    elif '__pycache__' in parts or fnmatch.fnmatch(name, '*.py[co]') or fnmatch.fnmatch(name, '*.tar.gz'):
        problems.append('%s: generated file in the artifact' % name)
for required in ('MANIFEST.json', 'FILES.json', 'meta/runtime.yml', 'plugins', readme,
                 'changelogs/changelog.yaml'):
    if required not in names:
        problems.append('%s: missing from the artifact' % required)
size = os.path.getsize(artifact)
if size > max_kib * 1024:
    problems.append('%s is %d KiB, more than %d KiB' % (artifact, size // 1024, max_kib))
print('build: %s: %d entries, %.1f KiB' % (os.path.basename(artifact), len(names), size / 1024.0))
for problem in problems:
    print('build: ERROR: %s' % problem, file=sys.stderr)
sys.exit(1 if problems else 0)
EOF

# Install it where nothing else is, and look it up there the way a user would.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export ANSIBLE_COLLECTIONS_PATH=$tmp ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false
"$bin/ansible-galaxy" collection install --offline --no-deps -p "$tmp" "$artifact" >/dev/null
"$bin/ansible-galaxy" collection list "$namespace.$name" --format json > "$tmp/list.json"
"$bin/python" - "$tmp/list.json" "$tmp/ansible_collections" "$namespace.$name" "$version" <<'EOF'
import json
import sys

listing, where, fqcn, version = sys.argv[1:]
found = json.load(open(listing))
got = found.get(where, {}).get(fqcn, {}).get('version')
if got != version:
    sys.exit('build: ERROR: ansible-galaxy collection list %s found %r, not version %s in %s' % (fqcn, found, version, where))
print('build: ansible-galaxy collection list finds %s %s in %s' % (fqcn, version, where))
EOF
"$bin/ansible-galaxy" collection verify --offline "$namespace.$name"
echo "$artifact"
