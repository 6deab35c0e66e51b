#!/usr/bin/env bash
# One-command set-up for development and tests: Debian packages, the pinned
# virtual environment, the collection link Ansible loads hvops.kvm from, and
# ansible-test's offline pip bootstrap. A second run only checks and exits.
#
#   tools/setup.sh [LINE...]
#
# Each LINE (an ansible-core line `make matrix` tests, e.g. 2.16) also gets
# build/venv-coreLINE, from tests/requirements/core-LINE.txt, rebuilt only when
# that file changes; its ansible-test gets the pip bootstrap stand-in too.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

debs=(qemu-system-x86 qemu-utils socat iproute2 nasm openssh-server openssh-client python3-venv shellcheck python3-apt systemd-container xorriso)
missing=()
for pkg in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: need root to install ${missing[*]} (or install them yourself)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# This machine's pip configuration adds index and find-links locations under
# file:///opt/ that hold only some packages; pip warns "WARNING: Location
# 'file:///opt/...' is ignored: ..." for every other package it looks up.
# quiet_pip drops exactly those lines from pip's stderr; everything else,
# errors included, still shows, and pip's exit status is kept (pipefail).
quiet_pip() {
    { "$@" 2>&1 1>&3 3>&- | { grep -v "^WARNING: Location 'file:///opt/.*' is ignored" || true; } >&2; } 3>&1
}

# The user guests' QEMU runs as (run_as, default hvops-qemu), as the
# hvops.kvm.kvm_node role creates it on a real node: the tests start QEMU as it.
qemu_user=hvops-qemu
if ! getent passwd "$qemu_user" >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: need root to create the system user $qemu_user (or create it yourself)" >&2
        exit 1
    fi
    echo "setup: creating the system user $qemu_user"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "hvops.kvm QEMU guests" "$qemu_user"
fi

# A virtual environment from a requirements file, rebuilt only when the file
# changes (a half-made one has no stamp, so it is made again).
python=${PYTHON:-python3}
make_venv() {
    local venv=$1 requirements=$2 stamp want
    stamp=$venv/.requirements.sha256
    want=$(sha256sum "$requirements" | cut -d' ' -f1)
    if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        # A link (a git worktree sharing another checkout's venv) is not ours
        # to clear: that checkout may be on other requirements.
        if [ -L "$venv" ]; then
            echo "setup: $venv links to $(readlink -f "$venv"), which was not made from this $requirements;" \
                "update it where it lives, or remove the link" >&2
            exit 1
        fi
        echo "setup: creating $venv from $requirements"
        rm -f "$stamp"
        "$python" -m venv --clear "$venv"
        quiet_pip "$venv/bin/python" -m pip install -q --upgrade pip
        quiet_pip "$venv/bin/python" -m pip install -q -r "$requirements"
        echo "$want" > "$stamp"
    fi
}

lines=()
for line in "$@"; do
    [ -f "tests/requirements/core-$line.txt" ] || {
        echo "setup: no tests/requirements/core-$line.txt for ansible-core $line" >&2
        exit 2
    }
    lines+=("$line")
done

make_venv .venv requirements-dev.txt
for line in "${lines[@]}"; do
    make_venv "build/venv-core$line" "tests/requirements/core-$line.txt"
done

# hvops.kvm as Ansible sees it: a link to this checkout, never a copy.
mkdir -p build/collections/ansible_collections/hvops
link=build/collections/ansible_collections/hvops/kvm
if [ "$(readlink "$link" 2>/dev/null)" != "$top" ]; then
    rm -rf "$link"
    ln -s "$top" "$link"
fi

# ansible-test downloads get-pip from a host these machines cannot reach; its
# cache gets a stand-in that bootstraps pip from the interpreter's ensurepip,
# under the names each ansible-test installed here looks for.
.venv/bin/python tools/get_pip_standin.py --install
for line in "${lines[@]}"; do
    "build/venv-core$line/bin/python" tools/get_pip_standin.py --install
done
