# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What this node offers a guest: memory, CPUs, bridges, the accelerator and
the CPU models of its QEMU. Checked before a definition is stored or a QEMU
started, so that a spec this node cannot run changes nothing."""

import os

from ansible_collections.hvops.kvm.plugins.module_utils import _qemu
from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._proc import meminfo

SYS_NET = '/sys/class/net'


def bridge_exists(name):
    return os.path.isdir(os.path.join(SYS_NET, name, 'bridge'))


def mem_total_mb():
    """MemTotal of this node in MiB, or None when /proc/meminfo says nothing."""
    try:
        total = meminfo().get('MemTotal')
    except OSError:
        return None
    return None if total is None else total // 1024


def host_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resource_problems(spec, cpu_models=None, memory_mb=None, cpus=None):
    """Why this node cannot run the spec, as sentences (empty: it can).
    ``cpu_models`` is the QEMU binary's list (None: not checked)."""
    problems = []
    memory_mb = mem_total_mb() if memory_mb is None else memory_mb
    if memory_mb is not None and spec['memory'] > memory_mb:
        problems.append('memory %d MiB is more than this node has (%d MiB)' % (spec['memory'], memory_mb))
    cpus = host_cpus() if cpus is None else cpus
    if spec['vcpus'] > cpus:
        problems.append('vcpus %d is more than the %d CPUs of this node' % (spec['vcpus'], cpus))
    if spec['cpu_model'] and cpu_models is not None:
        model = spec['cpu_model'].split(',')[0]
        if model not in cpu_models:
            problems.append('cpu_model %s is not known to this QEMU (see qemu-system-x86_64 -cpu help)' % model)
    for index, nic in enumerate(spec['nics']):
        if nic['type'] == 'bridge' and not bridge_exists(nic['bridge']):
            problems.append('nic %d: bridge %s does not exist on this node' % (index, nic['bridge']))
    if spec['accel'] == 'kvm':
        usable, reason = _qemu.kvm_usable()
        if not usable:
            problems.append('accel kvm requested but KVM is not usable (%s)' % reason)
    return problems


def check_resources(spec, cpu_models=None):
    problems = resource_problems(spec, cpu_models)
    if problems:
        raise ValidationError('this node cannot run the guest: %s' % '; '.join(problems), instance=spec['name'])
