"""What the tests need of this machine: programs, /dev/kvm and the QEMU user;
files and directories that user can reach."""
import os
import shutil
import tempfile

import pytest

# The user the collection's QEMU runs as by default (tools/setup.sh creates it).
QEMU_USER = 'hvops-qemu'


def require_binary(name):
    """Return the path of program name; without it skip the test, or fail it under CI=true."""
    path = shutil.which(name)
    if path is None:
        message = '%s is not installed (not found on PATH)' % name
        if os.environ.get('CI') == 'true':
            pytest.fail('CI=true and a prerequisite is missing: ' + message, pytrace=False)
        pytest.skip(message)
    return path


def require_kvm():
    """Skip (fail under CI=true) unless /dev/kvm can be opened read-write."""
    if not os.access('/dev/kvm', os.R_OK | os.W_OK):
        message = '/dev/kvm is missing or not usable'
        if os.environ.get('CI') == 'true':
            pytest.fail('CI=true and a prerequisite is missing: ' + message, pytrace=False)
        pytest.skip(message)


def qemu_user_ids():
    """(uid, gid) of QEMU_USER; a missing user fails the test (setup makes it)."""
    import pwd  # pylint: disable=import-outside-toplevel
    try:
        entry = pwd.getpwnam(QEMU_USER)
    except KeyError:
        pytest.fail('the system user %s is missing: run tools/setup.sh' % QEMU_USER, pytrace=False)
    return entry.pw_uid, entry.pw_gid


def give_to_qemu(path):
    """Make a disk image the QEMU user's (mode 0600), as an operator would:
    QEMU opens it again as that user when a migration hands it over."""
    uid, gid = qemu_user_ids()
    os.chown(path, uid, gid)
    os.chmod(path, 0o600)
    return path


def reachable_dir(prefix):
    """A new directory under /tmp that others may pass through (mode 0711),
    for what the QEMU user must reach: run_dirs and disk images. Its path is
    short, as unix socket paths under it must stay under 108 bytes."""
    path = tempfile.mkdtemp(prefix=prefix, dir='/tmp')
    os.chmod(path, 0o711)
    return path
