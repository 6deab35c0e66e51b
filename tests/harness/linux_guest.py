"""Build the hvops.kvm Linux test guest: Debian's cloud kernel and an initramfs
(busybox, qemu-ga, dropbear and the kernel modules they need), all taken from
Debian packages fetched with ``apt-get download`` and never installed here.

    from tests.harness.linux_guest import build_linux_guest
    guest = build_linux_guest('normal')   # LinuxGuest(kernel=..., initrd=...)

    python -m tests.harness.linux_guest [VARIANT] [--out DIR]

The packages are kept in <repo>/build/linux-guest/debs and reused while there.
Kernel and initrd go to <repo>/build/linux-guest/ unless told otherwise, named
after the variant and a hash of the packages, tests/linux_guest/ and this
builder, so a second build with the same inputs returns at once.
See tests/linux_guest/README.md.
"""
import argparse
import collections
import fcntl
import glob
import gzip
import hashlib
import io
import json
import lzma
import os
import random
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile

from tests.harness import REPO

SOURCE_DIR = os.path.join(REPO, 'tests', 'linux_guest')
INIT = os.path.join(SOURCE_DIR, 'init')
ROOTFS = os.path.join(SOURCE_DIR, 'rootfs')
DEFAULT_OUT = os.path.join(REPO, 'build', 'linux-guest')
DEB_CACHE = os.path.join(DEFAULT_OUT, 'debs')

VARIANTS = ('normal', 'agent-silent', 'agent-flood', 'disk-writer')
# The kernel command line the guest is made for; add hvops.ip=ADDR/PREFIX for
# an address on eth0 without a seed.
KERNEL_APPEND = 'console=ttyS0,115200 quiet'
MIN_MEMORY_MIB = 96

KERNEL_META = 'linux-image-cloud-amd64'
# The programs' packages, and those of every shared library the programs (and
# those libraries) list as NEEDED: found with readelf -d / ldd on the
# extracted binaries and dpkg -S SONAME on a Debian 12 host (libtomcrypt1,
# libtommath1 and libgmp10 by their Debian names, as they are not installed
# here). build_linux_guest checks the closure and names any soname missing.
PROGRAM_PACKAGES = ('busybox-static', 'qemu-guest-agent', 'dropbear-bin')
LIBRARY_PACKAGES = ('libc6', 'libglib2.0-0', 'libpcre2-8-0', 'libudev1', 'libnuma1', 'liburing2',
                    'libtomcrypt1', 'libtommath1', 'libgmp10', 'zlib1g', 'libcrypt1')
PROGRAMS = ('usr/sbin/qemu-ga', 'usr/sbin/dropbear', 'usr/bin/dropbearkey')
LIBRARY_DIRS = ('lib/x86_64-linux-gnu', 'usr/lib/x86_64-linux-gnu')
# Loaded by /init in dependency order (the rest of what the guest needs, the
# 8250 serial port, ACPI, devtmpfs, ext4-free tmpfs root, is built in).
MODULES = ('virtio_pci', 'virtio_console', 'virtio_net', 'virtio_blk', 'isofs', 'button', 'evdev')

LinuxGuest = collections.namedtuple('LinuxGuest', 'kernel initrd')


class LinuxGuestBuildError(RuntimeError):
    """The guest could not be built (bad variant, a package or tool missing)."""


def _run(argv, cwd=None):
    """stdout of argv (a list, no shell); LinuxGuestBuildError when it fails."""
    try:
        done = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    except OSError as error:
        raise LinuxGuestBuildError('cannot run %s: %s' % (argv[0], error)) from error
    if done.returncode != 0:
        message = done.stderr.decode(errors='replace').strip()
        raise LinuxGuestBuildError('%s failed (exit %d): %s' % (' '.join(argv), done.returncode, message))
    return done.stdout.decode(errors='replace')


# ------------------------------------------------------------ packages

def kernel_package():
    """The versioned linux-image-*-cloud-amd64 package the meta package depends on."""
    for line in _run(['apt-cache', 'depends', KERNEL_META]).splitlines():
        field, _sep, name = line.strip().partition(': ')
        if field == 'Depends' and name.startswith('linux-image-') and name.endswith('-cloud-amd64'):
            return name
    raise LinuxGuestBuildError('apt-cache names no linux-image-*-cloud-amd64 for %s' % KERNEL_META)


def cached_deb(cache, package):
    """The newest cached .deb of package (by file name), or None."""
    found = sorted(glob.glob(os.path.join(cache, glob.escape(package) + '_*.deb')))
    return found[-1] if found else None


def fetch_debs(cache=DEB_CACHE):
    """{package: deb path} for the kernel, programs and libraries: the cached
    .debs, and apt-get download for those not cached yet."""
    os.makedirs(cache, exist_ok=True)
    kernel = sorted(glob.glob(os.path.join(cache, 'linux-image-[0-9]*-cloud-amd64_*.deb')))
    names = [os.path.basename(kernel[-1]).split('_')[0]] if kernel else [kernel_package()]
    names += list(PROGRAM_PACKAGES + LIBRARY_PACKAGES)
    missing = [name for name in names if cached_deb(cache, name) is None]
    if missing:
        if shutil.which('apt-get') is None:
            raise LinuxGuestBuildError('apt-get not found; it fetches the guest packages %s' % ' '.join(missing))
        _run(['apt-get', 'download', '-q'] + missing, cwd=cache)
    debs = {}
    for name in names:
        debs[name] = cached_deb(cache, name)
        if debs[name] is None:
            raise LinuxGuestBuildError('apt-get download left no %s_*.deb in %s' % (name, cache))
    return debs


# ------------------------------------------------------------ ELF and modules

def _elf_sections(data):
    """[(name, type, offset, size, link)] of an ELF64 little-endian file."""
    if data[:4] != b'\x7fELF' or data[4] != 2 or data[5] != 1:
        raise LinuxGuestBuildError('not a 64-bit little-endian ELF file')
    shoff, = struct.unpack_from('<Q', data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from('<HHH', data, 0x3a)
    headers = [struct.unpack_from('<IIQQQQII', data, shoff + index * shentsize) for index in range(shnum)]
    names_at = headers[shstrndx][4]
    sections = []
    for name, kind, _flags, _addr, offset, size, link, _info in headers:
        end = data.index(b'\0', names_at + name)
        sections.append((data[names_at + name:end].decode(), kind, offset, size, link))
    return sections


def elf_needed(path):
    """(NEEDED sonames, PT_INTERP or None) of an ELF binary or library."""
    with open(path, 'rb') as handle:
        data = handle.read()
    sections = _elf_sections(data)
    needed, interp = [], None
    for name, kind, offset, size, link in sections:
        if name == '.interp':
            interp = data[offset:offset + size].rstrip(b'\0').decode()
        if kind == 6:      # SHT_DYNAMIC
            strtab = sections[link][2]
            for entry in range(offset, offset + size, 16):
                tag, value = struct.unpack_from('<qQ', data, entry)
                if tag == 0:
                    break
                if tag == 1:     # DT_NEEDED
                    needed.append(data[strtab + value:data.index(b'\0', strtab + value)].decode())
    return needed, interp


def module_data(path):
    """A module's bytes, .ko.xz decompressed (busybox insmod reads plain .ko)."""
    with open(path, 'rb') as handle:
        data = handle.read()
    return lzma.decompress(data) if path.endswith('.xz') else data


def module_depends(data):
    """The depends= list of a module's .modinfo section."""
    for name, _kind, offset, size, _link in _elf_sections(data):
        if name == '.modinfo':
            for field in data[offset:offset + size].split(b'\0'):
                if field.startswith(b'depends='):
                    return [dep for dep in field[8:].decode().split(',') if dep]
    return []


def resolve_modules(moddir, wanted=MODULES):
    """[(relative path, bytes)] of the wanted modules and their dependencies,
    dependencies first; built-in ones are left out. The Debian package ships
    no modules.dep (depmod makes it on install), so the dependencies are read
    from each module's .modinfo."""
    builtin = set()
    with open(os.path.join(moddir, 'modules.builtin')) as handle:
        for line in handle:
            builtin.add(os.path.basename(line.strip()).split('.')[0].replace('-', '_'))
    index = {}
    for top, _dirs, files in os.walk(os.path.join(moddir, 'kernel')):
        for name in files:
            if name.endswith(('.ko', '.ko.xz')):
                index[name.split('.')[0].replace('-', '_')] = os.path.join(top, name)
    order, seen = [], set()

    def visit(name, chain):
        if name in seen or name in builtin:
            return
        if name not in index:
            raise LinuxGuestBuildError('kernel module %s (for %s) is neither built in nor in %s'
                                       % (name, ' <- '.join(chain), moddir))
        data = module_data(index[name])
        for dep in module_depends(data):
            visit(dep, chain + [dep])
        seen.add(name)
        rel = os.path.relpath(index[name], os.path.dirname(moddir))
        order.append((rel[:-3] if rel.endswith('.xz') else rel, data))
    for name in wanted:
        visit(name, [name])
    return order


# ------------------------------------------------------------ the initramfs

class Cpio:
    """A newc ("070701") cpio archive built in memory, entries in order added."""

    def __init__(self):
        self._out = io.BytesIO()
        self._ino = 0
        self.names = set()

    def _entry(self, name, mode, data=b'', rdev=(0, 0)):
        self._ino += 1
        encoded = name.encode() + b'\0'
        header = '070701' + ''.join('%08x' % field for field in (
            self._ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data),
            0, 0, rdev[0], rdev[1], len(encoded), 0))
        self._out.write(header.encode() + encoded)
        self._out.write(b'\0' * (-(110 + len(encoded)) % 4))
        self._out.write(data)
        self._out.write(b'\0' * (-len(data) % 4))
        self.names.add(name)

    def directory(self, name, mode=0o755):
        """Add a directory and, first, any parents not added yet."""
        parts = name.strip('/').split('/')
        for depth in range(1, len(parts) + 1):
            path = '/'.join(parts[:depth])
            if path not in self.names:
                self._entry(path, stat.S_IFDIR | (mode if depth == len(parts) else 0o755))

    def file(self, name, data, mode=0o644):
        name = name.strip('/')
        if '/' in name:
            self.directory(os.path.dirname(name))
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name, target):
        name = name.strip('/')
        if '/' in name:
            self.directory(os.path.dirname(name))
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name, major, minor, mode=0o600):
        self._entry(name.strip('/'), stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self):
        """The archive's bytes, with its trailer."""
        self._entry('TRAILER!!!', 0)
        return self._out.getvalue()


def _inside(root, path):
    """path (absolute in the guest) resolved through symlinks inside root."""
    for _hop in range(20):
        real = os.path.join(root, path.lstrip('/'))
        if not os.path.islink(real):
            return real
        target = os.readlink(real)
        path = target if target.startswith('/') else os.path.join(os.path.dirname(path), target)
    raise LinuxGuestBuildError('symlink loop at %s' % path)


def _find_library(root, soname):
    for libdir in LIBRARY_DIRS:
        if os.path.exists(_inside(root, '/%s/%s' % (libdir, soname))):
            return '/%s/%s' % (libdir, soname)
    return None


def _dpkg_owner(soname):
    try:
        return _run(['dpkg', '-S', soname]).split(':')[0]
    except LinuxGuestBuildError:
        return None


def add_programs(cpio, root):
    """Add PROGRAMS, their interpreter and the closure of their NEEDED libraries."""
    queue = ['/' + program for program in PROGRAMS]
    done = set()
    while queue:
        path = queue.pop(0)
        if path in done:
            continue
        done.add(path)
        link = os.path.join(root, path.lstrip('/'))
        if os.path.islink(link):
            target = os.readlink(link)
            cpio.symlink(path, target)
            queue.append(target if target.startswith('/') else os.path.join(os.path.dirname(path), target))
            continue
        real = _inside(root, path)
        with open(real, 'rb') as handle:
            cpio.file(path, handle.read(), 0o755)
        needed, interp = elf_needed(real)
        if interp:
            queue.append(interp)
        for soname in needed:
            found = _find_library(root, soname)
            if found is None:
                owner = _dpkg_owner(soname)
                raise LinuxGuestBuildError('%s needs %s, which no package in LIBRARY_PACKAGES has%s'
                                           % (path, soname, ' (dpkg -S: %s)' % owner if owner else ''))
            queue.append(found)


def assemble(root, variant):
    """The gzipped initramfs for variant from the extracted packages in root."""
    cpio = Cpio()
    for name in ('dev', 'proc', 'sys', 'run', 'tmp', 'root', 'mnt/seed', 'etc', 'lib64',
                 'bin', 'sbin', 'usr/bin', 'usr/sbin'):
        cpio.directory(name, 0o1777 if name == 'tmp' else 0o700 if name == 'root' else 0o755)
    cpio.chardev('dev/console', 5, 1)
    cpio.chardev('dev/null', 1, 3, 0o666)
    busybox = os.path.join(root, 'bin', 'busybox')
    with open(busybox, 'rb') as handle:
        cpio.file('bin/busybox', handle.read(), 0o755)
    with open(INIT) as handle:
        lines = handle.read().splitlines(True)
    lines = ['VARIANT=%s\n' % variant if line.startswith('VARIANT=') else line for line in lines]
    cpio.file('init', ''.join(lines).encode(), 0o755)
    for top, _dirs, files in sorted(os.walk(ROOTFS)):
        for name in sorted(files):
            source = os.path.join(top, name)
            mode = 0o755 if os.access(source, os.X_OK) else 0o644
            if name == 'shadow':
                mode = 0o600
            with open(source, 'rb') as handle:
                cpio.file(os.path.relpath(source, ROOTFS), handle.read(), mode)
    add_programs(cpio, root)
    moddirs = glob.glob(os.path.join(root, 'lib', 'modules', '*'))
    if len(moddirs) != 1:
        raise LinuxGuestBuildError('expected one kernel in the packages, found %s' % moddirs)
    order = resolve_modules(moddirs[0])
    for rel, data in order:
        cpio.file('lib/modules/' + rel, data)
    cpio.file('lib/modules/load-order', ''.join(rel + '\n' for rel, _data in order).encode())
    # Applet links last, so the files above (e.g. /sbin/shutdown) win.
    for applet in _run([busybox, '--list-full']).split():
        if applet.strip('/') not in cpio.names:
            cpio.symlink(applet, '/bin/busybox')
    raw = cpio.finish()
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode='wb', mtime=0) as packed:
        packed.write(raw)
    return out.getvalue()


# ------------------------------------------------------------ the build

def inputs_digest(variant, debs):
    """Hash of what the initramfs is made from: packages, sources, variant."""
    digest = hashlib.sha256()
    for name in sorted(debs):
        digest.update(os.path.basename(debs[name]).encode() + b'\0')
    sources = [INIT, os.path.abspath(__file__.replace('.pyc', '.py'))]
    for top, _dirs, files in os.walk(ROOTFS):
        sources += [os.path.join(top, name) for name in files]
    for source in sorted(sources):
        with open(source, 'rb') as handle:
            digest.update(os.path.relpath(source, REPO).encode() + b'\0' + handle.read() + b'\0')
    digest.update(('%s\0%s\0%s' % (variant, ' '.join(MODULES), ' '.join(PROGRAMS))).encode())
    return digest.hexdigest()[:12]


def _write(path, data):
    """Write data to path (mode 0644) through a temporary file renamed into place."""
    handle, partial = tempfile.mkstemp(prefix='.partial-', dir=os.path.dirname(path))
    try:
        with os.fdopen(handle, 'wb') as out:
            out.write(data)
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def build_linux_guest(variant='normal', out_dir=None, deb_cache=DEB_CACHE):
    """LinuxGuest(kernel, initrd): absolute paths, built (and packages fetched) if needed.
    One build at a time on the machine (tests run in two streams): the others
    wait, then find it built."""
    if variant not in VARIANTS:
        raise LinuxGuestBuildError('unknown Linux guest variant %r; choose one of %s' % (variant, ', '.join(VARIANTS)))
    out_dir = os.path.abspath(out_dir or DEFAULT_OUT)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, '.build.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(variant, out_dir, deb_cache)


def _build(variant, out_dir, deb_cache):
    debs = fetch_debs(deb_cache)
    kernel_name = [name for name in debs if name.startswith('linux-image-')][0]
    kernel_version = os.path.basename(debs[kernel_name]).split('_')[1].replace('%3a', '-')
    kernel = os.path.join(out_dir, 'vmlinuz-%s-%s' % (kernel_name[len('linux-image-'):], kernel_version))
    initrd = os.path.join(out_dir, 'initrd-%s-%s.cpio.gz' % (variant, inputs_digest(variant, debs)))
    if os.path.isfile(kernel) and os.path.isfile(initrd):
        return LinuxGuest(kernel, initrd)
    if shutil.which('dpkg-deb') is None:
        raise LinuxGuestBuildError('dpkg-deb not found; it unpacks the guest packages')
    scratch = tempfile.mkdtemp(prefix='.scratch-', dir=out_dir)
    try:
        for name in sorted(debs):
            _run(['dpkg-deb', '-x', debs[name], scratch])
        if not os.path.isfile(kernel):
            vmlinuz = glob.glob(os.path.join(scratch, 'boot', 'vmlinuz-*'))
            if len(vmlinuz) != 1:
                raise LinuxGuestBuildError('expected one boot/vmlinuz-* in %s, found %s' % (kernel_name, vmlinuz))
            with open(vmlinuz[0], 'rb') as handle:
                _write(kernel, handle.read())
        _write(initrd, assemble(scratch, variant))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return LinuxGuest(kernel, initrd)


# ------------------------------------------------------------ using it

def qemu_args(guest, append_extra='', agent_socket=None):
    """QEMU arguments booting guest (a LinuxGuest): -kernel, -initrd, -append
    KERNEL_APPEND (plus append_extra), and with agent_socket a virtio-serial
    port org.qemu.guest_agent.0 on a unix socket QEMU listens on there."""
    args = ['-kernel', guest.kernel, '-initrd', guest.initrd,
            '-append', ('%s %s' % (KERNEL_APPEND, append_extra)).strip()]
    if agent_socket:
        args += ['-chardev', 'socket,path=%s,server=on,wait=off,id=qga0' % agent_socket,
                 '-device', 'virtio-serial', '-device', 'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0']
    return args


def seed_iso(path, meta_data, user_data=None, network_config=None):
    """Write a NoCloud seed (ISO 9660, volume label cidata, Joliet and Rock
    Ridge) at path with xorriso, from the files' texts; return path (mode 0644).
    Attach it read-only: -drive file=PATH,format=raw,if=virtio,readonly=on."""
    xorriso = shutil.which('xorriso')
    if xorriso is None:
        raise LinuxGuestBuildError('xorriso not found on PATH; it makes the cloud-init seed (apt-get install xorriso)')
    files = tempfile.mkdtemp(prefix='.seed-', dir=os.path.dirname(os.path.abspath(path)))
    try:
        for name, text in (('meta-data', meta_data), ('user-data', user_data), ('network-config', network_config)):
            if text is not None:
                with open(os.path.join(files, name), 'w') as handle:
                    handle.write(text)
        _run([xorriso, '-as', 'mkisofs', '-quiet', '-V', 'cidata', '-J', '-r', '-o', path, files])
    finally:
        shutil.rmtree(files, ignore_errors=True)
    os.chmod(path, 0o644)
    return path


class GuestAgentClient:
    """qemu-ga's protocol on the host end of the agent's unix socket: each
    command after a guest-sync-delimited, whose reply follows a 0xFF byte."""

    def __init__(self, path, timeout=10.0):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(path)
        self._pending = b''

    def _send(self, command, arguments=None):
        request = {'execute': command}
        if arguments is not None:
            request['arguments'] = arguments
        self._sock.sendall(json.dumps(request).encode() + b'\n')

    def _line(self):
        while b'\n' not in self._pending:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise EOFError('guest agent socket closed')
            self._pending += chunk
        line, self._pending = self._pending.split(b'\n', 1)
        return line

    def sync(self, sync_id=None):
        """guest-sync-delimited: drop what came before the 0xFF; the id echoed."""
        sync_id = random.randint(1, 2 ** 31) if sync_id is None else sync_id
        self._pending = b''
        self._send('guest-sync-delimited', {'id': sync_id})
        while True:
            while b'\xff' not in self._pending:
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise EOFError('guest agent socket closed')
                self._pending += chunk
            self._pending = self._pending.split(b'\xff', 1)[1]
            reply = json.loads(self._line())
            if reply.get('return') == sync_id:
                return sync_id

    def execute(self, command, arguments=None, reply=True):
        """The command's 'return' (RuntimeError on 'error'); reply=False for
        those that answer nothing on success (guest-shutdown)."""
        self.sync()
        self._send(command, arguments)
        if not reply:
            return None
        answer = json.loads(self._line())
        if 'error' in answer:
            raise RuntimeError('guest agent %s failed: %s' % (command, answer['error']))
        return answer['return']

    def close(self):
        self._sock.close()


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m tests.harness.linux_guest',
                                     description='Build the hvops.kvm Linux test guest; print kernel and initrd paths.')
    parser.add_argument('variant', nargs='?', default='normal', choices=VARIANTS)
    parser.add_argument('--out', default=None, help='output directory (default: %s)' % DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        guest = build_linux_guest(args.variant, out_dir=args.out)
    except LinuxGuestBuildError as error:
        print('tests.harness.linux_guest: error: %s' % error, file=sys.stderr)
        return 1
    print(guest.kernel)
    print(guest.initrd)
    return 0


if __name__ == '__main__':
    sys.exit(main())
