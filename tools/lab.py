#!/usr/bin/env python
"""The two-host test lab: two network namespaces joined by a veth pair, each
with its own address, its own sshd and its own run_dir, and an Ansible
inventory (inventory.json in the lab directory) that reaches both over SSH.

    python3 tools/lab.py up        # build it (or check it is up), print a summary
    python3 tools/lab.py status    # exit 0 when up and healthy, 1 otherwise
    python3 tools/lab.py down      # remove every trace of it

Design:

* Hosts ``kvm-a`` and ``kvm-b`` are the namespaces ``hvk-a`` and ``hvk-b``.
  The veth pair ``hvk-a0`` <-> ``hvk-b0`` is created directly inside them
  (never in the root namespace) and carries 198.51.100.1/24 and .2/24
  (TEST-NET-2, RFC 5737: documentation only, never routed). Each namespace has
  its loopback and that one link: no other address, no default route, no way
  out. IPv6 address generation is off on the veth, so it has no link-local
  address either.
* Each namespace runs ``sshd -D -e -f <lab>/<x>/sshd_config`` listening on its
  own 127.0.0.1:22 only. The controller (root namespace) reaches it through
  an SSH ProxyCommand, ``ip netns exec hvk-a socat STDIO TCP:127.0.0.1:22``:
  nothing is added to the root namespace (no address, no route, no interface)
  and the management path does not use the veth link, so Ansible keeps
  reaching both nodes while a test has cut the link between them.
* The namespaces share the filesystem: both nodes see the same QEMU binaries
  and disk images (like shared storage); each gets its own run_dir.
* Everything lives under one short directory (default /tmp/hvk-lab), so unix
  socket paths under the run_dirs stay well below the 108-byte limit.
* ``down`` kills the lab's sshd listeners (identified by pidfile, command line
  and network namespace), then every process still inside the lab namespaces
  (sshd sessions, the ProxyCommand relays, anything a test started on a lab
  host), then the controller's ssh multiplexing masters for the lab (their
  ControlPath lies in the lab directory); deletes the namespaces, which
  deletes the veth pair; and removes the lab directory.
* ``up`` and ``down`` are serialised per lab name with an abstract unix socket
  lock (no file to leave behind); the pytest session holds it for the whole
  session, so a second session waits instead of tearing the lab down under
  the first.

Python 3 standard library only; every command runs from an argv list.
"""

import argparse
import contextlib
import errno
import ipaddress
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

DEFAULT_NAME = 'hvk'
DEFAULT_BASE = '/tmp/hvk-lab'
DEFAULT_SUBNET = '198.51.100.0/24'
DEFAULT_SSH_PORT = 22
HOST_KEYS = ('a', 'b')
SSHD = '/usr/sbin/sshd'
SFTP_SERVER = '/usr/lib/openssh/sftp-server'
PRIVSEP_DIR = '/run/sshd'
NETNS_DIR = '/run/netns'
STATE_FILE = 'lab.json'


class LabError(Exception):
    """The lab could not be built, checked or removed."""


def _which(name, fallback=None):
    path = shutil.which(name)
    if path is None and fallback and os.access(fallback, os.X_OK):
        path = fallback
    return path


def missing_prerequisites(python='/usr/bin/python3'):
    """Why this machine cannot run the lab: a list of messages, empty when it can."""
    problems = []
    for name, fallback in (('ip', '/usr/sbin/ip'), ('ssh', '/usr/bin/ssh'),
                           ('ssh-keygen', '/usr/bin/ssh-keygen'), ('socat', '/usr/bin/socat')):
        if _which(name, fallback) is None:
            problems.append('%s is not installed (not on PATH)' % name)
    if not os.access(SSHD, os.X_OK):
        problems.append('%s is missing (install openssh-server)' % SSHD)
    if python and not os.access(python, os.X_OK):
        problems.append('the hosts\' Python %s is missing' % python)
    if os.geteuid() != 0:
        problems.append('the lab needs root (network namespaces, sshd), running as uid %d' % os.geteuid())
    else:
        caps = _effective_caps()
        for bit, cap in ((12, 'CAP_NET_ADMIN'), (21, 'CAP_SYS_ADMIN')):
            if caps is not None and not caps & (1 << bit):
                problems.append('the lab needs %s to make network namespaces' % cap)
    return problems


def _effective_caps():
    try:
        with open('/proc/self/status') as handle:
            for line in handle:
                if line.startswith('CapEff:'):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return None


# Processes ------------------------------------------------------------------

def _cmdline(pid):
    """argv of a live, non-zombie process as a list of str, or None."""
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            raw = handle.read()
        with open('/proc/%d/stat' % pid) as handle:
            if handle.read().rsplit(')', 1)[1].split()[0] in ('Z', 'X'):
                return None
    except (OSError, IndexError):
        return None
    return [word.decode('utf-8', 'replace') for word in raw.split(b'\0') if word]


def _all_pids():
    return [int(entry) for entry in os.listdir('/proc') if entry.isdigit()]


def _alive(pid):
    return _cmdline(pid) is not None


def _netns_id(path):
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


def _pids_in_netns(ns_path):
    """Live processes whose network namespace is the one bound at ns_path."""
    target = _netns_id(ns_path)
    if target is None:
        return []
    own = os.getpid()
    return [pid for pid in _all_pids()
            if pid != own and _netns_id('/proc/%d/ns/net' % pid) == target and _alive(pid)]


def _terminate(pids, children=None, grace=3.0):
    """SIGTERM pids, SIGKILL whatever is left after grace seconds, wait until
    all are gone. children maps pid -> Popen for processes this one started
    (they are reaped so they do not linger as zombies)."""
    children = children or {}
    pids = [pid for pid in set(pids) if _alive(pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 10.0)
        while True:
            for pid in pids:
                if pid in children:
                    children[pid].poll()
            pids = [pid for pid in pids if _alive(pid)]
            if not pids or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        if not pids:
            return
    raise LabError('processes %s did not exit after SIGKILL' % sorted(pids))


# Locking --------------------------------------------------------------------

class _Lock:
    """An exclusive, re-entrant (within this process) lock named by an
    abstract unix socket: released by the kernel when its holder exits, and
    no file to leave behind."""

    held = {}

    def __init__(self, name):
        self.name = name
        self.address = '\0hvops.kvm-lab:' + name

    def holder(self):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.address)
            creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize('3i'))
            return struct.unpack('3i', creds)[0]
        except OSError:
            return None
        finally:
            probe.close()

    @contextlib.contextmanager
    def __call__(self, timeout):
        entry = self.held.get(self.name)
        if entry is not None:
            entry[1] += 1
            try:
                yield
            finally:
                entry[1] -= 1
            return
        deadline = time.monotonic() + timeout
        told = False
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(self.address)
                sock.listen(8)
                break
            except OSError as exc:
                sock.close()
                if exc.errno != errno.EADDRINUSE:
                    raise
            holder = self.holder()
            if time.monotonic() >= deadline:
                raise LabError('lab %r is in use by process %s (a test session or another lab.py); waited %ds'
                               % (self.name, holder, timeout))
            if not told and timeout >= 2:
                sys.stderr.write('lab: waiting for lab %r, in use by process %s\n' % (self.name, holder))
                told = True
            time.sleep(0.2)
        entry = self.held[self.name] = [sock, 1]
        try:
            yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self.held[self.name]
                sock.close()


# The lab --------------------------------------------------------------------

class LabHost:
    """One lab host: a network namespace with an sshd and a run_dir."""

    def __init__(self, lab, key, address, prefixlen, peer_key):
        self.key = key                                  # 'a' or 'b'
        self.name = 'kvm-' + key                        # Ansible inventory name
        self.namespace = '%s-%s' % (lab.name, key)      # ip netns name
        self.veth = '%s-%s0' % (lab.name, key)          # this end of the link
        self.peer_veth = '%s-%s0' % (lab.name, peer_key)
        self.address = address                          # on the veth: QEMU migration listener
        self.prefixlen = prefixlen
        self.ssh_host = '127.0.0.1'                     # sshd listens here, inside the namespace
        self.ssh_port = lab.ssh_port
        self.dir = os.path.join(lab.base, key)
        self.run_dir = os.path.join(self.dir, 'run')
        self.state_dir = self.run_dir + '-state'
        self.sshd_config = os.path.join(self.dir, 'sshd_config')
        self.host_key = os.path.join(self.dir, 'ssh_host_ed25519_key')
        self.pidfile = os.path.join(self.dir, 'sshd.pid')
        self.log = os.path.join(self.dir, 'sshd.log')
        self.remote_tmp = os.path.join(self.dir, 'tmp')
        self.ns_path = os.path.join(NETNS_DIR, self.namespace)

    @property
    def cidr(self):
        return '%s/%d' % (self.address, self.prefixlen)

    def as_dict(self):
        return {'name': self.name, 'namespace': self.namespace, 'address': self.address, 'cidr': self.cidr,
                'veth': self.veth, 'run_dir': self.run_dir, 'ssh_host': self.ssh_host, 'ssh_port': self.ssh_port,
                'sshd_config': self.sshd_config, 'pidfile': self.pidfile, 'log': self.log}

    def __repr__(self):
        return 'LabHost(%s, ns=%s, %s)' % (self.name, self.namespace, self.cidr)


class Lab:
    """The two-host lab. Construction touches nothing; up() builds it (or
    leaves an already healthy lab alone), down() removes it.

    Attributes: name, base, subnet, ssh_port, python, hosts (two LabHost),
    inventory (path of the JSON inventory), client_key (private key path),
    control_path_dir (Ansible's ssh ControlPath directory for the lab).
    """

    def __init__(self, name=DEFAULT_NAME, base=None, subnet=None, ssh_port=DEFAULT_SSH_PORT, python=None,
                 lock_timeout=600.0):
        if not name or len(name) > 8 or not name.replace('-', '').isalnum():
            raise LabError('lab name %r: 1-8 letters, digits or dashes (it prefixes interface names)' % (name,))
        self.name = name
        self.base = os.path.abspath(base or ('/tmp/%s-lab' % name))
        saved = self._saved_state()
        self.subnet = ipaddress.ip_network(subnet or saved.get('subnet') or DEFAULT_SUBNET)
        if self.subnet.version != 4 or self.subnet.num_addresses < 4:
            raise LabError('subnet %s: need an IPv4 network with room for two hosts' % self.subnet)
        self.ssh_port = int(ssh_port)
        if python is None:
            python = '/usr/bin/python3' if os.access('/usr/bin/python3', os.X_OK) else sys.executable
        self.python = python
        self.lock_timeout = lock_timeout
        self.ip = _which('ip', '/usr/sbin/ip') or '/usr/sbin/ip'
        self.socat = _which('socat', '/usr/bin/socat') or '/usr/bin/socat'
        self.ssh_keygen = _which('ssh-keygen', '/usr/bin/ssh-keygen') or '/usr/bin/ssh-keygen'
        first, second = list(self.subnet.hosts())[:2]
        self.hosts = [LabHost(self, 'a', str(first), self.subnet.prefixlen, 'b'),
                      LabHost(self, 'b', str(second), self.subnet.prefixlen, 'a')]
        self.inventory = os.path.join(self.base, 'inventory.json')
        self.client_key = os.path.join(self.base, 'id_ed25519')
        self.control_path_dir = os.path.join(self.base, 'cp')
        self.state_file = os.path.join(self.base, STATE_FILE)
        self._lock = _Lock(name)
        self._children = {}

    # -- lookup and helpers --------------------------------------------------

    def host(self, which):
        """A LabHost by inventory name ('kvm-a'), key ('a') or namespace ('hvk-a')."""
        for host in self.hosts:
            if which in (host.name, host.key, host.namespace):
                return host
        raise KeyError(which)

    def locked(self, timeout=None):
        """Context manager holding the lab's lock (re-entrant in this process)."""
        return self._lock(self.lock_timeout if timeout is None else timeout)

    def _saved_state(self):
        try:
            with open(os.path.join(self.base, STATE_FILE)) as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return {}

    def _run(self, argv, check=True, input_text=None, timeout=30):
        proc = subprocess.run(argv, input=input_text, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if check and proc.returncode != 0:
            message = (proc.stderr or proc.stdout).strip()
            raise LabError('%s failed (rc %d): %s' % (' '.join(argv), proc.returncode, message))
        return proc

    def _ip_batch(self, commands, namespace=None):
        argv = [self.ip] + (['-n', namespace] if namespace else []) + ['-batch', '-']
        self._run(argv, input_text=''.join(line + '\n' for line in commands))

    def netns_argv(self, which, argv):
        """argv that runs argv inside a host's namespace."""
        return [self.ip, 'netns', 'exec', self.host(which).namespace] + list(argv)

    def run(self, which, argv, timeout=30, **kwargs):
        """subprocess.run(argv) inside a host's namespace (text, captured output)."""
        kwargs.setdefault('capture_output', True)
        kwargs.setdefault('text', True)
        return subprocess.run(self.netns_argv(which, argv), timeout=timeout, check=False, **kwargs)

    def popen(self, which, argv, **kwargs):
        """subprocess.Popen(argv) inside a host's namespace."""
        return subprocess.Popen(self.netns_argv(which, argv), **kwargs)

    def ssh_argv(self, which, command=()):
        """A plain ssh command line that logs in to a host the way Ansible does."""
        host = self.host(which)
        return (['ssh', '-F', '/dev/null', '-i', self.client_key, '-l', 'root'] + self._ssh_options(host)
                + [host.address] + list(command))

    def _proxy_command(self, host):
        return '%s netns exec %s %s STDIO TCP:%s:%d' % (
            self.ip, host.namespace, self.socat, host.ssh_host, host.ssh_port)

    def _ssh_options(self, host):
        return ['-o', 'ProxyCommand=' + self._proxy_command(host), '-o', 'UserKnownHostsFile=/dev/null',
                '-o', 'StrictHostKeyChecking=no', '-o', 'IdentitiesOnly=yes', '-o', 'LogLevel=ERROR']

    # -- state -----------------------------------------------------------------

    def _sshd_argv(self, host):
        return [SSHD, '-D', '-e', '-f', host.sshd_config]

    def _is_our_sshd(self, pid, host):
        """pid runs this node's sshd: its command line names the lab's sshd
        binary and this node's config (sshd rewrites the listener's title to
        'sshd: /usr/sbin/sshd -D -e -f CONFIG [listener] ...', so the words
        are matched in order, not the whole argv), and it lives in the node's
        namespace (when that namespace still exists)."""
        argv = _cmdline(pid)
        if not argv:
            return False
        text = ' '.join(argv)
        if ' '.join(self._sshd_argv(host)) not in text or not (argv[0] == SSHD or text.startswith('sshd:')):
            return False
        ns = _netns_id(host.ns_path)
        return ns is None or _netns_id('/proc/%d/ns/net' % pid) == ns

    def _is_our_ssh_client(self, pid):
        argv = _cmdline(pid)
        if not argv or not (os.path.basename(argv[0]) == 'ssh' or argv[0].startswith('ssh:')):
            return False
        marker = self.control_path_dir + '/'
        return any(word.replace('"', '').replace('ControlPath=', '', 1).startswith(marker) for word in argv[1:])

    def _pidfile_pid(self, host):
        try:
            with open(host.pidfile) as handle:
                return int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def sshd_pid(self, which):
        """pid of a host's running sshd listener (checked), or None."""
        host = self.host(which)
        pid = self._pidfile_pid(host)
        return pid if pid and self._is_our_sshd(pid, host) else None

    def _addresses(self, host):
        proc = self._run([self.ip, '-n', host.namespace, '-o', 'addr', 'show'], check=False)
        if proc.returncode != 0:
            return None
        found = []
        for line in proc.stdout.splitlines():
            words = line.split()
            if len(words) >= 4 and words[2] in ('inet', 'inet6'):
                found.append((words[1], words[3]))
        return found

    def link_state(self, which):
        """'up' when this end of the veth is administratively up with carrier,
        'down' when it is down (or has no carrier), None when it is missing."""
        host = self.host(which)
        proc = self._run([self.ip, '-n', host.namespace, '-o', 'link', 'show', 'dev', host.veth], check=False)
        if proc.returncode != 0:
            return None
        flags = proc.stdout.split('<', 1)[-1].split('>', 1)[0].split(',')
        return 'up' if 'UP' in flags and 'LOWER_UP' in flags else 'down'

    def status(self):
        """What is there, per host, and whether the lab is healthy."""
        hosts = {}
        healthy = os.path.exists(self.inventory) and os.path.exists(self.client_key)
        for host in self.hosts:
            present = os.path.exists(host.ns_path)
            addresses = self._addresses(host) if present else None
            pid = self.sshd_pid(host.key)
            link = self.link_state(host.key) if present else None
            ok = bool(present and pid and addresses is not None and (host.veth, host.cidr) in addresses)
            healthy = healthy and ok
            hosts[host.name] = {'namespace': host.namespace, 'namespace_exists': present, 'sshd_pid': pid,
                                'address': host.cidr, 'addresses': addresses, 'link': link,
                                'run_dir': host.run_dir, 'ok': ok}
        exists = os.path.exists(self.base) or any(h['namespace_exists'] or h['sshd_pid'] for h in hosts.values())
        return {'name': self.name, 'base': self.base, 'inventory': self.inventory, 'healthy': healthy,
                'exists': exists, 'hosts': hosts}

    def healthy(self):
        return self.status()['healthy']

    # -- up ----------------------------------------------------------------------

    def up(self):
        """Build the lab. An already healthy lab is kept (its link restored if a
        test left it cut); anything else found under this lab's names --
        leftovers of a crashed run -- is removed first. Returns self."""
        with self.locked():
            if self.healthy():
                self.restore_link()
                self._write_inventory()
                return self
            self._teardown()
            try:
                self._build()
            except BaseException:
                self._teardown()
                raise
        return self

    def _check_subnet(self):
        """The lab's addresses exist only inside its namespaces, but a subnet the
        root namespace also uses would confuse anyone reading addresses: refuse."""
        proc = self._run([self.ip, '-o', '-4', 'addr', 'show'], check=False)
        for line in proc.stdout.splitlines():
            words = line.split()
            if len(words) >= 4 and words[2] == 'inet':
                net = ipaddress.ip_interface(words[3]).network
                if net.overlaps(self.subnet) and not net.is_loopback:
                    raise LabError('lab subnet %s overlaps %s on %s in the root namespace; choose another '
                                   '(--subnet)' % (self.subnet, words[3], words[1]))

    def _build(self):
        self._check_subnet()
        if not os.path.isdir(PRIVSEP_DIR):
            # sshd refuses to start without its privilege separation directory,
            # which Debian's ssh.service makes at boot; without that service
            # running it has to be made here.
            os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
        os.makedirs(self.base, mode=0o755)
        os.makedirs(self.control_path_dir, mode=0o700)
        for host in self.hosts:
            os.makedirs(host.dir, mode=0o755)
            os.makedirs(host.remote_tmp, mode=0o700)

        keygens = [subprocess.Popen([self.ssh_keygen, '-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', path],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                   for path, comment in [(self.client_key, 'hvops.kvm lab client')]
                   + [(host.host_key, 'hvops.kvm lab %s' % host.name) for host in self.hosts]]
        for proc in keygens:
            out = proc.communicate(timeout=30)[0]
            if proc.returncode != 0:
                raise LabError('ssh-keygen failed: %s' % out.decode('utf-8', 'replace'))

        # The veth pair is created with each end directly in its namespace:
        # nothing of the lab ever appears in the root namespace.
        first, second = self.hosts
        self._ip_batch(['netns add %s' % first.namespace, 'netns add %s' % second.namespace,
                        'link add %s netns %s type veth peer name %s netns %s'
                        % (first.veth, first.namespace, second.veth, second.namespace)])
        for host in self.hosts:
            self._ip_batch(['link set dev lo up',
                            'link set dev %s addrgenmode none' % host.veth,
                            'addr add %s dev %s' % (host.cidr, host.veth),
                            'link set dev %s up' % host.veth], namespace=host.namespace)
            self._write_sshd_config(host)
        for host in self.hosts:
            self._start_sshd(host)
        for host in self.hosts:
            self._wait_sshd(host)
        self._wait_link(True)
        self._write_inventory()
        with open(self.state_file, 'w') as handle:
            json.dump({'name': self.name, 'base': self.base, 'subnet': str(self.subnet), 'ssh_port': self.ssh_port,
                       'python': self.python, 'inventory': self.inventory,
                       'hosts': [host.as_dict() for host in self.hosts]}, handle, indent=1)
            handle.write('\n')

    def _write_sshd_config(self, host):
        lines = [
            '# hvops.kvm test lab: sshd of %s in network namespace %s (written by tools/lab.py)'
            % (host.name, host.namespace),
            'ListenAddress %s:%d' % (host.ssh_host, host.ssh_port),
            'HostKey %s' % host.host_key,
            'PidFile %s' % host.pidfile,
            'AuthorizedKeysFile %s.pub' % self.client_key,
            'AllowUsers root',
            'PermitRootLogin prohibit-password',
            'PubkeyAuthentication yes',
            'PasswordAuthentication no',
            'KbdInteractiveAuthentication no',
            'UsePAM no',
            # The key lives under /tmp, which is world-writable: StrictModes
            # would refuse it.
            'StrictModes no',
            'UseDNS no',
            'PrintMotd no',
            'PrintLastLog no',
            'X11Forwarding no',
            'AllowAgentForwarding no',
            'AllowTcpForwarding no',
            'PermitTunnel no',
            'MaxStartups 30:30:60',
            'LogLevel INFO',
            'Subsystem sftp %s' % SFTP_SERVER,
        ]
        with open(host.sshd_config, 'w') as handle:
            handle.write('\n'.join(lines) + '\n')

    def _start_sshd(self, host):
        with open(host.log, 'ab') as log:
            proc = subprocess.Popen(self.netns_argv(host.key, self._sshd_argv(host)), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, start_new_session=True)
        # `ip netns exec` execs sshd in place: this pid is the listener's.
        self._children[proc.pid] = proc

    def _wait_sshd(self, host, timeout=10.0):
        """sshd writes its pidfile once its listening socket is bound."""
        deadline = time.monotonic() + timeout
        while True:
            pid = self._pidfile_pid(host)
            if pid and self._is_our_sshd(pid, host):
                return pid
            exited = [proc for proc in self._children.values() if proc.poll() is not None]
            if exited or time.monotonic() >= deadline:
                try:
                    with open(host.log) as handle:
                        log = handle.read()
                except OSError:
                    log = ''
                raise LabError('sshd of %s did not start%s: %s' % (
                    host.name, ' (it exited)' if exited else ' within %ds' % timeout, log.strip() or 'no output'))
            time.sleep(0.01)

    # -- the link ------------------------------------------------------------------

    def _wait_link(self, up, timeout=5.0):
        deadline = time.monotonic() + timeout
        want = 'up' if up else 'down'
        while True:
            states = [self.link_state(host.key) for host in self.hosts]
            if all(state == want for state in states):
                return
            if time.monotonic() >= deadline:
                raise LabError('the lab link did not go %s within %ss: %s' % (want, timeout, states))
            time.sleep(0.02)

    def _set_link(self, hosts, state):
        for host in [self.host(which) for which in (hosts or [h.key for h in self.hosts])]:
            self._run([self.ip, '-n', host.namespace, 'link', 'set', 'dev', host.veth, state])

    def cut_link(self, hosts=None):
        """Cut the link between the hosts: set the veth down inside the given
        hosts' namespaces (both ends by default; e.g. ['kvm-b'] for one).
        Packets between the hosts stop at once; sockets stay open, as when a
        cable is pulled. SSH management (over loopback) is unaffected."""
        self._set_link(hosts, 'down')

    def restore_link(self, hosts=None):
        """Bring the veth back up (both ends by default) and wait for carrier;
        the kernel re-adds the subnet route by itself."""
        self._set_link(hosts, 'up')
        if hosts is None:
            self._wait_link(True)

    # -- inventory -------------------------------------------------------------------

    def inventory_data(self):
        """The inventory as a dict, what inventory.json holds (Ansible reads a
        .json inventory with its yaml plugin). SSH goes through ``ip netns exec
        NAMESPACE socat`` to the sshd on the namespace's own 127.0.0.1;
        kvm_migration_address is the host's address on the link between the
        hosts."""
        hosts = {}
        for host in self.hosts:
            options = self._ssh_options(host)
            common = ' '.join('"%s"' % word if ' ' in word else word
                              for word in ['-F', '/dev/null'] + options)
            hosts[host.name] = {
                'ansible_host': host.address,
                'ansible_port': host.ssh_port,
                'ansible_ssh_common_args': common,
                'ansible_remote_tmp': host.remote_tmp,
                'kvm_run_dir': host.run_dir,
                'kvm_state_dir': host.state_dir,
                'kvm_migration_address': host.address,
                'kvm_lab_namespace': host.namespace,
            }
        return {'all': {'children': {'kvm_lab': {
            'hosts': hosts,
            'vars': {
                'ansible_connection': 'ssh',
                'ansible_user': 'root',
                'ansible_ssh_private_key_file': self.client_key,
                'ansible_python_interpreter': self.python,
                'ansible_pipelining': True,
                'ansible_control_path_dir': self.control_path_dir,
            }}}}}

    def _write_inventory(self):
        tmp = self.inventory + '.tmp'
        with open(tmp, 'w') as handle:
            json.dump(self.inventory_data(), handle, indent=2)
            handle.write('\n')
        os.replace(tmp, self.inventory)

    # -- down ---------------------------------------------------------------------------

    def down(self):
        """Remove the lab: its processes, namespaces (and so the veth pair) and
        directory. Fine when there is nothing to remove."""
        with self.locked():
            self._teardown()

    def _teardown(self):
        # 1. The sshd listeners: by pidfile, confirmed by command line and
        #    namespace; and, for a crashed run whose lab directory is gone, by
        #    the exact command line naming this lab's config.
        listeners = set()
        for host in self.hosts:
            pid = self._pidfile_pid(host)
            if pid and self._is_our_sshd(pid, host):
                listeners.add(pid)
            for pid in _all_pids():
                if self._is_our_sshd(pid, host):
                    listeners.add(pid)
        _terminate(listeners, self._children)
        # 2. Everything else inside the lab's namespaces: sshd sessions, the
        #    ProxyCommand relays, and whatever a test started on a lab host.
        for host in self.hosts:
            _terminate(_pids_in_netns(host.ns_path), self._children)
        # 3. The controller's ssh clients for this lab, above all Ansible's
        #    ControlPersist masters: their ControlPath lies in the lab
        #    directory (a master retitles itself 'ssh: CONTROLPATH [mux]').
        _terminate([pid for pid in _all_pids() if pid != os.getpid() and self._is_our_ssh_client(pid)])
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]
        # 4. The namespaces; deleting one deletes its end of the veth pair and
        #    so the pair.
        for host in self.hosts:
            if os.path.lexists(host.ns_path):
                self._run([self.ip, 'netns', 'delete', host.namespace])
        # 5. The files.
        if os.path.lexists(self.base):
            shutil.rmtree(self.base)


# Command line -------------------------------------------------------------------------

def _print_summary(lab, status, elapsed=None):
    state = 'up' if status['healthy'] else ('BROKEN' if status['exists'] else 'down')
    print('lab %s: %s%s' % (lab.name, state, '' if elapsed is None else ' (%.2fs)' % elapsed))
    if not status['exists']:
        return
    for host in lab.hosts:
        info = status['hosts'][host.name]
        print('  %-6s ns %-7s %-18s sshd pid %-7s link %-5s run_dir %s'
              % (host.name, host.namespace if info['namespace_exists'] else '(none)', host.cidr,
                 info['sshd_pid'] or '-', info['link'] or '-', host.run_dir))
    print('  inventory %s' % lab.inventory)
    if status['healthy']:
        print('  try: ansible -i %s all -m ansible.builtin.ping' % lab.inventory)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='lab.py', description='The hvops.kvm two-host test lab.')
    parser.add_argument('command', choices=('up', 'down', 'status'))
    parser.add_argument('--name', default=DEFAULT_NAME, help='namespace/interface prefix (default %(default)s)')
    parser.add_argument('--base', help='lab directory (default /tmp/NAME-lab)')
    parser.add_argument('--subnet', help='IPv4 subnet of the link between the hosts (default %s)' % DEFAULT_SUBNET)
    parser.add_argument('--json', action='store_true', help='status as JSON')
    parser.add_argument('--wait', type=float, default=30.0,
                        help='seconds to wait for a lab in use by someone else (default %(default)s)')
    args = parser.parse_args(argv)
    try:
        lab = Lab(name=args.name, base=args.base, subnet=args.subnet, lock_timeout=args.wait)
        if args.command in ('up', 'down'):
            problems = missing_prerequisites(lab.python)
            if problems:
                raise LabError('; '.join(problems))
        start = time.monotonic()
        if args.command == 'up':
            lab.up()
        elif args.command == 'down':
            lab.down()
        elapsed = time.monotonic() - start
        status = lab.status()
        if args.json:
            print(json.dumps(status, indent=1))
        elif args.command == 'down':
            print('lab %s: down (%.2fs)' % (lab.name, elapsed) if not status['exists'] else
                  'lab %s: NOT fully removed' % lab.name)
        else:
            _print_summary(lab, status, elapsed if args.command == 'up' else None)
    except LabError as exc:
        sys.stderr.write('lab: %s\n' % exc)
        return 1
    if args.command == 'down':
        return 0 if not status['exists'] else 1
    return 0 if status['healthy'] else 1


if __name__ == '__main__':
    sys.exit(main())
