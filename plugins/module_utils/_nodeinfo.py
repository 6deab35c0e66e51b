# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a node has and what it runs: memory, CPU, hypervisor, instances and
the free space of its storage.

Facts feed placement decisions, so they are read, never guessed, and reading
them touches nothing: /proc, the files under run_dir, the QEMU binary's answers
to ``-version`` and ``-machine help``, and one short QMP session per instance
whose QEMU is alive (identified through _identity, as everywhere else).

Cost, for many guests: everything but QMP is a handful of small file reads per
instance. QMP is needed only to tell running from paused, incoming and
migrating (no /proc field says whether the vCPUs are stopped); those sessions
are held only for instances whose QEMU lives, only when the ``instances``
subset is asked for, and run side by side, so the wait is that of the slowest
monitor, not the sum of all. Memory facts alone never open a monitor; storage
facts add a stat and a statvfs per directory (_node_storage).

Problems a node has are returned as plain sentences (like Ganeti's verify),
so a play can show or assert them.
"""

import os
import re

from concurrent.futures import ThreadPoolExecutor

from ansible_collections.hvops.kvm.plugins.module_utils import _identity, _qemu
from ansible_collections.hvops.kvm.plugins.module_utils._agent import DEFAULT_TIMEOUT as AGENT_TIMEOUT, agent_facts, no_facts
from ansible_collections.hvops.kvm.plugins.module_utils._errors import (
    KvmError, MissingBinaryError, ProcessError, ValidationError)
from ansible_collections.hvops.kvm.plugins.module_utils._instance import Instance
from ansible_collections.hvops.kvm.plugins.module_utils._layout import NAME_PATTERN, NodeLayout
from ansible_collections.hvops.kvm.plugins.module_utils._node_storage import (
    check_paths, disk_directories, storage_facts)
from ansible_collections.hvops.kvm.plugins.module_utils._observe import observe
from ansible_collections.hvops.kvm.plugins.module_utils._proc import (
    PROC, available_kib, flock_held, held_locks, meminfo, read_text, resident_kib, system_uptime)
from ansible_collections.hvops.kvm.plugins.module_utils._qmp import DEFAULT_TIMEOUT, find_socat
from ansible_collections.hvops.kvm.plugins.module_utils._qemu_user import DEFAULT_RUN_AS, lookup, user_of_uid
from ansible_collections.hvops.kvm.plugins.module_utils._policy import load_policy
from ansible_collections.hvops.kvm.plugins.module_utils._runtime import load_definition

SUBSETS = ('agent', 'cpu', 'hypervisor', 'instances', 'memory', 'storage')
VIRT_FLAGS = ('svm', 'vmx')
# At most this many QMP sessions at once (each is one socat process).
MAX_PARALLEL_MONITORS = 8
# Seconds to wait for the monitor of an instance another run works on (it may
# hold the monitor for a whole migration); its state is then reported unknown.
BUSY_MONITOR_WAIT = 2.0


# -- gather_subset ---------------------------------------------------------------
def resolve_subsets(requested):
    """The sorted subsets to gather for a gather_subset list, as Ansible's setup
    reads it: ``all`` or names add, ``!name`` (or ``!all``) removes, and a list of
    removals alone starts from everything."""
    include, exclude = set(), set()
    for item in requested or ['all']:
        word = str(item).strip()
        negate = word.startswith('!')
        word = word[1:].strip() if negate else word
        if word == 'all':
            names = set(SUBSETS)
        elif word in SUBSETS:
            names = {word}
        else:
            raise ValidationError('unknown gather_subset %r: choose from all, %s (prefix one with'
                                  ' ! to leave it out)' % (item, ', '.join(SUBSETS)))
        (exclude if negate else include).update(names)
    if not include:
        include = set(SUBSETS)
    subsets = include - exclude
    if 'instances' in exclude:
        subsets.discard('agent')
    elif 'agent' in subsets:
        # What the agents say is part of each instance's facts.
        subsets.add('instances')
    return sorted(subsets)


# -- memory ----------------------------------------------------------------------
def memory_facts(info, guests):
    """Memory facts in MiB. ``guests`` lists (memory_mb, resident_kib) of each
    instance whose QEMU lives.

    ``allocatable_mb`` is what placement should look at: free memory less what
    running guests were promised but have not touched yet (a guest with 4 GiB
    that uses 1 GiB today may take the other 3 tomorrow).
    """
    total = info.get('MemTotal', 0)
    free = min(total, available_kib(info))
    used = total - free
    resident = sum(res for _mb, res in guests)
    committed = sum(mb for mb, _res in guests)
    outstanding = sum(max(0, mb * 1024 - res) for mb, res in guests)
    return {
        'total_mb': total // 1024,
        'free_mb': free // 1024,
        'used_mb': used // 1024,
        'host_used_mb': max(0, used - resident) // 1024,
        'committed_mb': committed,
        'guest_resident_mb': resident // 1024,
        'allocatable_mb': max(0, free - outstanding) // 1024,
        'swap_total_mb': info.get('SwapTotal', 0) // 1024,
        'swap_free_mb': info.get('SwapFree', 0) // 1024,
    }


# -- /proc/cpuinfo -----------------------------------------------------------------
def _stanzas(text):
    stanza = {}
    for line in (text or '').splitlines():
        if not line.strip():
            if stanza:
                yield stanza
            stanza = {}
            continue
        key, sep, value = line.partition(':')
        if sep:
            stanza[key.strip()] = value.strip()
    if stanza:
        yield stanza


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_cpuinfo(text):
    """CPU facts from /proc/cpuinfo (x86 in full; other architectures in part)."""
    processors = [s for s in _stanzas(text) if 'processor' in s]
    first = processors[0] if processors else {}
    flags = set((first.get('flags') or first.get('Features') or '').split())
    sockets = set(s['physical id'] for s in processors if 'physical id' in s)
    cores = set((s.get('physical id'), s['core id']) for s in processors if 'core id' in s)
    model = first.get('model name') or first.get('cpu model') or first.get('Processor') \
        or first.get('cpu') or None
    virt = [flag for flag in VIRT_FLAGS if flag in flags]
    return {
        'count': len(processors),
        'model': model,
        'vendor': first.get('vendor_id'),
        'sockets': len(sockets) or None,
        'cores': len(cores) or None,
        'threads_per_core': (len(processors) // len(cores)) if cores else None,
        'virtualization_flags': virt,
        'virtualization': virt[0] if virt else None,
        # The "hypervisor" flag: this node is itself a virtual machine, so KVM
        # works only with nested virtualisation.
        'virtualized': 'hypervisor' in flags,
    }


# -- hypervisor --------------------------------------------------------------------
def natural_key(text):
    """Sort key putting pc-i440fx-2.9 before pc-i440fx-2.10."""
    return [(0, int(part), '') if part.isdigit() else (1, 0, part) for part in re.split(r'(\d+)', text)]


def hypervisor_facts(run, qemu_binary=None, cpu=None, kvm_device=_qemu.KVM_DEVICE):
    """(facts, problems) about /dev/kvm, the QEMU binary and socat."""
    problems = []
    usable, reason = _qemu.kvm_usable(kvm_device)
    present = os.path.exists(kvm_device)
    if not present:
        hint = 'load the kvm_intel or kvm_amd module and enable VT-x/AMD-V in the firmware'
        if cpu is not None and not cpu['virtualization_flags']:
            hint = 'the CPU shows no vmx or svm flag: enable VT-x/AMD-V in the firmware%s' % (
                ' (or nested virtualisation on the host of this virtual machine)' if cpu['virtualized'] else '')
        problems.append('%s does not exist, so guests run with TCG emulation, which is much slower: %s'
                        % (kvm_device, hint))
    elif not usable:
        problems.append('KVM is not usable (%s), so guests run with TCG emulation, which is much slower:'
                        ' run as root or as a member of the group owning %s' % (reason, kvm_device))
    qemu = None
    try:
        info = _qemu.query_binary(run, _qemu.find_qemu(qemu_binary))
    except (MissingBinaryError, ProcessError) as err:
        problems.append(str(err))
    else:
        machines = info['machines']
        qemu = {
            'path': info['path'],
            'version': _qemu.version_string(info['version']) if info['version'] else None,
            'version_info': list(info['version']) if info['version'] else None,
            'default_machine': info['default_machine'],
            'machines': sorted(machines, key=natural_key),
            'machine_aliases': dict((name, target) for name, target in machines.items() if target),
        }
        if info['version'] is None:
            problems.append('could not read the version of %s from its -version output' % info['path'])
        if not machines:
            problems.append('%s lists no machine types' % info['path'])
    try:
        socat = find_socat()
    except MissingBinaryError:
        socat = None
        problems.append('socat not found: install the socat package (the QMP monitor and the serial'
                        ' consoles are reached through it)')
    facts = {
        'kvm': {'device': kvm_device, 'present': present, 'usable': usable, 'reason': reason},
        'accel': 'kvm' if usable else 'tcg',
        'qemu': qemu,
        'socat': {'present': socat is not None, 'path': socat},
    }
    return facts, problems


# -- instances ---------------------------------------------------------------------
def instance_names(layout):
    """Every instance with a definition, a runtime file or a pidfile, sorted."""
    names = set(layout.defined_names())
    try:
        entries = os.listdir(layout.subdir('pid'))
    except FileNotFoundError:
        entries = []
    for entry in entries:
        stem, ext = os.path.splitext(entry)
        if ext == '.pid' and NAME_PATTERN.fullmatch(stem):
            names.add(stem)
    return sorted(names)


def _spec_value(spec, key):
    value = (spec or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def instance_facts(layout, name, run, uptime, held, monitor_timeout=DEFAULT_TIMEOUT, socat=None):
    """(record, instance) for one instance from its files and its process;
    no monitor is opened. ``instance`` is None when the name is unusable."""
    record = {
        'name': name, 'state': None, 'run_state': None, 'pid': None,
        'memory_mb': None, 'vcpus': None, 'uptime_s': None, 'resident_mb': None,
        'defined': False, 'accel': None, 'machine': None, 'qemu_version': None,
        'busy': False, 'pending_restart': False, 'sockets': None, 'error': None,
        'user': None, 'sandboxed': None,
        'autostart': None, 'autostart_order': None, 'autostart_delay': None, 'restart_policy': None,
    }
    try:
        paths = layout.paths(name)
    except KvmError as err:
        record.update(state='unknown', error=err.msg)
        return record, None
    record['sockets'] = {'qmp': paths.qmp, 'monitor': paths.monitor, 'serial': paths.serial}
    record['busy'] = flock_held(paths.lock, held)
    if record['busy']:
        monitor_timeout = min(monitor_timeout, BUSY_MONITOR_WAIT)
    instance = Instance(layout, name, run, monitor_timeout=monitor_timeout, socat=socat)
    try:
        definition = load_definition(paths)
        pid = instance.pid()
        runtime = instance.runtime() if pid else None
    except (KvmError, ValueError, OSError) as err:
        record.update(state='unknown', error=getattr(err, 'msg', None) or str(err))
        return record, instance
    record['defined'] = definition is not None
    if definition is not None:
        try:
            record.update(load_policy(paths, name))
        except KvmError as err:
            record['error'] = err.msg
    spec = (runtime or {}).get('spec') if pid else definition
    record['_spec'] = spec
    record['_agent'] = bool((spec or {}).get('guest_agent'))
    record['memory_mb'] = _spec_value(spec, 'memory')
    record['vcpus'] = _spec_value(spec, 'vcpus')
    record['machine'] = (spec or {}).get('machine')
    if pid is None:
        record['state'] = instance.dead_state()
        return record, instance
    record['pid'] = pid
    record['accel'] = runtime.get('accel') if runtime else None
    version = runtime.get('qemu_version') if runtime else None
    record['qemu_version'] = _qemu.version_string(version) if version else None
    record['pending_restart'] = bool(runtime and definition is not None and
                                     runtime.get('spec') != definition)
    status = _identity.process_status(pid)
    if status is not None:
        record['user'] = user_of_uid(status['uid']) if status['uid'] is not None else None
        # Seccomp mode 2: a filter is installed (QEMU's -sandbox).
        record['sandboxed'] = status['seccomp'] == 2
    started = _identity.start_time(pid)
    if started is not None and uptime is not None:
        record['uptime_s'] = max(0, int(uptime - started))
    record['_resident_kib'] = resident_kib(pid)
    record['resident_mb'] = record['_resident_kib'] // 1024
    return record, instance


def query_state(record, instance):
    """The state of one live instance, by the one observation (_observe); update record."""
    try:
        seen = observe(instance)
    except (KvmError, KeyError, TypeError) as err:
        seen = {'present': True, 'state': 'unknown', 'error': getattr(err, 'msg', None) or str(err)}
    if not seen['present']:
        # It exited while we looked.
        record.update(pid=None, uptime_s=None, resident_mb=None, _resident_kib=0, state=seen['state'])
    elif seen['state'] == 'unknown':
        record.update(state='unknown', error='the QMP monitor did not answer: %s' % seen['error'])
    else:
        record.update(state=seen['state'], run_state=seen['run_state'])
    return record


def side_by_side(ask, pairs):
    """ask(record, instance) for each pair, at most MAX_PARALLEL_MONITORS at once."""
    if len(pairs) == 1:
        ask(*pairs[0])
    elif pairs:
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_MONITORS, len(pairs))) as pool:
            list(pool.map(lambda pair: ask(*pair), pairs))


def query_agent(record, instance, timeout):
    """The guest agent's facts of one instance (_agent.agent_facts), in record."""
    if not record.pop('_agent', False):
        record['agent'] = no_facts('off')
    elif record['state'] != 'running':
        record['agent'] = no_facts('down', 'the guest is %s: only a running guest\'s agent can answer'
                                   % record['state'])
    else:
        record['agent'] = agent_facts(instance.paths.agent, instance=record['name'], timeout=timeout,
                                      socat=instance.socat)
    return record


def scan_instances(layout, run, query=True, monitor_timeout=DEFAULT_TIMEOUT, socat=None, agent_timeout=None):
    """(records, problems) for every instance under run_dir.

    Without ``query`` no monitor is opened: the records of live instances then
    have no state (enough for memory facts, which need only pid and spec).
    """
    try:
        names = instance_names(layout)
    except OSError as err:
        return [], ['cannot read %s: %s' % (layout.run_dir, err.strerror)]
    try:
        uptime = system_uptime()
    except (OSError, ValueError, IndexError):
        uptime = None
    held = held_locks()
    observed = [instance_facts(layout, name, run, uptime, held, monitor_timeout, socat) for name in names]
    live = [(record, instance) for record, instance in observed
            if record['pid'] is not None and instance is not None]
    if query:
        side_by_side(query_state, live)
    if query and agent_timeout is not None:
        side_by_side(lambda record, instance: query_agent(record, instance, agent_timeout),
                     [(record, instance) for record, instance in observed if instance is not None])
    records = [record for record, _instance in observed]
    problems = []
    for record in records:
        if record['state'] == 'crashed':
            problems.append('instance %s crashed: its QEMU died without being stopped (or was running'
                            ' when the node went down); hvops.kvm.kvm_instance state=started starts it'
                            ' again (playbooks/heal.yml for guests with restart_policy on-crash),'
                            ' state=stopped records it as stopped' % record['name'])
        if record['pid'] is not None and record['user'] == 'root':
            problems.append('instance %s runs as root: a guest that escapes QEMU owns the node (restart it'
                            ' with run_as set to an unprivileged user, as by default)' % record['name'])
        if record['pid'] is not None and record['sandboxed'] is False:
            problems.append('instance %s runs without a seccomp sandbox (restart it with this'
                            ' collection)' % record['name'])
        if record['state'] == 'unknown' and not (record['busy'] and record['pid']):
            # A live instance another run works on is not a problem of the node.
            problems.append('instance %s: %s' % (record['name'], record['error']))
    return records, problems


def run_dir_problems(layout, qemu_user=None):
    """What is wrong with run_dir itself (the rules of NodeLayout.verify). A
    missing run_dir is fine: it is made on first use."""
    try:
        layout.verify(qemu_user)
    except KvmError as err:
        return [err.msg]
    return []


def public(record):
    return dict((key, value) for key, value in record.items() if not key.startswith('_'))


def gather(run, run_dir=None, gather_subset=None, qemu_binary=None, monitor_timeout=DEFAULT_TIMEOUT,
           run_as=DEFAULT_RUN_AS, state_dir=None, agent_timeout=AGENT_TIMEOUT, storage_paths=None):
    """The kvm_node facts. ``run(argv) -> (rc, stdout, stderr)`` runs QEMU's
    -version and -machine help; nothing else is run and nothing is written."""
    subsets = resolve_subsets(gather_subset)
    storage_paths = check_paths(storage_paths)
    layout = NodeLayout(run_dir, state_dir)
    facts = {'run_dir': layout.run_dir, 'state_dir': layout.state_dir, 'gather_subset': subsets}
    problems = []
    cpu = None
    if 'cpu' in subsets or 'hypervisor' in subsets:
        cpu = parse_cpuinfo(read_text(os.path.join(PROC, 'cpuinfo')))
        if 'cpu' in subsets:
            facts['cpu'] = cpu
    if 'hypervisor' in subsets:
        facts['hypervisor'], found = hypervisor_facts(run, qemu_binary, cpu)
        problems += found
    if 'instances' in subsets or 'memory' in subsets or 'storage' in subsets:
        untrusted = run_dir_problems(layout, lookup(run_as))
        problems += untrusted
        # Nothing in a run_dir another user controls is read, let alone its sockets.
        records, found = ([], []) if untrusted else scan_instances(
            layout, run, query='instances' in subsets, monitor_timeout=monitor_timeout,
            agent_timeout=agent_timeout if 'agent' in subsets else None)
        if 'instances' in subsets:
            facts['instances'] = dict((record['name'], public(record)) for record in records)
            problems += found
        if 'memory' in subsets:
            guests = [(record['memory_mb'] or 0, record['_resident_kib'])
                      for record in records if record['pid'] is not None]
            memory = memory_facts(meminfo(), guests)
            if memory['committed_mb'] > memory['total_mb']:
                problems.append('the guests running here were given %d MiB in all, more than the'
                                ' %d MiB this node has' % (memory['committed_mb'], memory['total_mb']))
            facts['memory'] = memory
        if 'storage' in subsets:
            facts['storage'] = storage_facts(
                storage_paths + disk_directories(record.get('_spec') for record in records))
    facts['problems'] = problems
    return facts
