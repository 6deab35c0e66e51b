"""The integration tests' shared fixtures; the helpers they use are in the
harness (tests/harness/).

* guest_image: factory fixture, guest_image(variant='normal', dirty_mib=64)
  -> absolute path of a fresh copy of the test guest's raw image (tests/guest/).
* node: a fresh simulated node (harness.nodes.LocalNode) with its own run_dir.
* raw_qemu: factory fixture, raw_qemu(image, accel='tcg', memory=32, ...)
  -> a started harness.raw_qemu.RawQemu: QEMU run directly, its serial read
  line by line (RawQemu.serial, a SerialLog) and QMP spoken over a plain unix
  socket (RawQemu.qmp, a QmpClient). Every QEMU it started is killed at teardown.
* kvm_usable: skips (fails under CI=true) unless /dev/kvm can be used.
* lab: the two-host lab of tools/lab.py for the whole session (harness.lab).
* lab_guest: the test guest's disk where both lab hosts see it.
* machine_state_dir_untouched (autouse): a test that leaves files in this
  machine's own state_dir (/var/lib/hvops-kvm: a module given a run_dir but
  no state_dir) fails.

``make integration`` runs the suite in two streams (pytest-xdist, ``-n 2``;
whole files to a stream, pytest_xdist_make_scheduler). Every simulated node
has its own directories and every listener takes the first free port of its
range, so tests run side by side;
those sharing something of the whole machine run in one stream, one after
the other (SHARED): the lab (its namespaces, addresses and lock for the whole
session), and the kvm_node role and the guests unit (apt, system users,
systemd-nspawn).
"""
import os
import shutil
import tempfile

import pytest

from tests.harness.guest import DEFAULT_DIRTY_MIB, build_image
from tests.harness.lab import clear_guests, lab_session
from tests.harness.nodes import LocalNode
from tests.harness.raw_qemu import RawQemu
from tests.harness.system import give_to_qemu, reachable_dir, require_binary, require_kvm

from ansible_collections.hvops.kvm.plugins.module_utils._layout import DEFAULT_STATE_DIR


# Test files sharing something of the whole machine, by the stream they share:
# every file with a test on the lab, and the kvm_node role's and the unit's.
SHARED = dict([(name, 'lab') for name in (
    'test_inventory.py', 'test_lab.py', 'test_migrate_role.py', 'test_migration_faults.py',
    'test_migration_tls.py', 'test_storage_migration.py')] + [(name, 'node') for name in (
        'test_guests_unit.py', 'test_kvm_node_role.py')])


def stream_of(nodeid):
    """The unit of work of a test for pytest-xdist: its SHARED stream, else its file."""
    path = nodeid.split('::', 1)[0]
    return SHARED.get(os.path.basename(path), path)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Whole files to each stream, a SHARED stream's files all to one. (Not
    pytest-xdist's loadgroup: on pytest 9 it no longer groups anything.)"""
    from xdist.scheduler import LoadScopeScheduling

    class Streams(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return stream_of(nodeid)
    return Streams(config, log)


def pytest_collection_modifyitems(items):
    """A test on the lab outside the files SHARED says are on it would wait
    for the lab's lock held by the other stream, then fail: say so now."""
    for item in items:
        uses_lab = item.get_closest_marker('lab') or 'lab' in getattr(item, 'fixturenames', ())
        if uses_lab and stream_of(item.nodeid) != 'lab':
            raise pytest.UsageError('%s uses the lab: add its file to SHARED in %s' % (item.nodeid, __file__))


@pytest.fixture(autouse=True)
def machine_state_dir_untouched():
    """Simulated nodes each have a state_dir of their own: none may write the
    machine's default one."""
    guests = os.path.join(DEFAULT_STATE_DIR, 'guests')

    def files():
        if not os.path.isdir(guests):
            return {}
        return dict((name, os.lstat(os.path.join(guests, name)).st_mtime_ns) for name in os.listdir(guests))
    before = files()
    yield
    written = sorted(name for name, mtime in files().items() if before.get(name) != mtime)
    assert not written, 'the test wrote %s in %s (give its modules a state_dir)' % (', '.join(written), guests)


@pytest.fixture
def guest_image():
    """guest_image(variant='normal', dirty_mib=64) -> path of a private copy of the
    test guest's image (built once, cached under build/guest/), so QEMUs of tests
    running at the same time never contend for one file's locks. The copy is the
    QEMU user's, in a directory it can reach."""
    require_binary('nasm')
    copies = []
    directory = reachable_dir('hk-img-')

    def make(variant='normal', dirty_mib=DEFAULT_DIRTY_MIB):
        built = build_image(variant, dirty_mib=dirty_mib)
        copy = os.path.join(directory, '%d-%s' % (len(copies), os.path.basename(built)))
        shutil.copyfile(built, copy)
        copies.append(give_to_qemu(copy))
        return copy
    yield make
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def raw_qemu(tmp_path):
    """raw_qemu(image, accel='tcg', memory=32, machine='pc', drive_if='ide', extra_args=())
    -> a started RawQemu. All are killed, and their sockets removed, at teardown."""
    started = []
    dirs = []

    def boot(image, **options):
        workdir = str(tmp_path / ('q%d' % len(started)))
        if len(workdir) > 80:      # unix socket paths must stay under 108 bytes
            workdir = tempfile.mkdtemp(prefix='hq-', dir='/tmp')
            dirs.append(workdir)
        else:
            os.mkdir(workdir)
        qemu = RawQemu(workdir, image, **options)
        started.append(qemu)
        return qemu.start()

    yield boot
    for qemu in started:
        qemu.stop()
    for workdir in dirs:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def node():
    """A fresh simulated node (harness.nodes.LocalNode): its own run_dir and a local
    inventory; every QEMU under it is killed at teardown."""
    for program in ('qemu-system-x86_64', 'socat'):
        require_binary(program)
    one = LocalNode()
    yield one
    one.destroy()


@pytest.fixture
def kvm_usable():
    """Skip (fail under CI=true) unless /dev/kvm can be used."""
    require_kvm()
    return True


@pytest.fixture(scope='session')
def lab():
    """The two-host lab, up for the whole session (see harness.lab.lab_session)."""
    with lab_session() as the_lab:
        yield the_lab


@pytest.fixture
def lab_guest(lab, guest_image):
    """The test guest's disk in a directory under the lab's base, which both
    namespaces see (shared storage); every QEMU of the lab's run_dirs is killed
    at the end, and the files of instance vm1 removed."""
    shared = os.path.join(lab.base, 'shared-%d' % os.getpid())
    os.makedirs(shared, exist_ok=True)
    disk = os.path.join(shared, 'vm1.img')
    shutil.copyfile(guest_image('normal'), disk)
    give_to_qemu(disk)
    yield disk
    clear_guests(lab, ['vm1'])
    shutil.rmtree(shared, ignore_errors=True)
