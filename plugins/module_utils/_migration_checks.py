# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a migration target must offer, and why a host cannot take a guest. Pure."""

from ansible_collections.hvops.kvm.plugins.module_utils import _qemu
from ansible_collections.hvops.kvm.plugins.module_utils._cmdline import vnc_has_password


def requirements_of(runtime):
    """What a target must offer to take the guest of this runtime."""
    spec = runtime['spec']
    return {
        'memory_mb': spec['memory'],
        'vcpus': spec['vcpus'],
        'machine': spec['machine'],
        'accel': runtime['accel'],
        'qemu_version': list(runtime['qemu_version']) if runtime.get('qemu_version') else None,
        'files': [d['path'] for d in spec['disks']] + [spec[k] for k in ('kernel', 'initrd') if spec.get(k)],
        'bridges': sorted(set(n['bridge'] for n in spec['nics'] if n['type'] == 'bridge')),
        'vnc_password': vnc_has_password(runtime['argv']),
    }


def target_problems(req, facts):
    """Why this host cannot take the guest, as sentences (empty: it can).
    ``facts``: available_mb, margin_mb, qemu (query_binary), kvm (usable,
    reason), bridges (set), file_problems (list)."""
    problems = []
    need = req['memory_mb'] + facts['margin_mb']
    if facts['available_mb'] < need:
        problems.append('not enough memory: the guest needs %d MiB plus a margin of %d MiB, and %d MiB'
                        ' are available (MemAvailable)' % (req['memory_mb'], facts['margin_mb'],
                                                           facts['available_mb']))
    qemu = facts['qemu']
    have = tuple(qemu['version'] or ())
    if req['qemu_version'] and have and have < tuple(req['qemu_version']):
        problems.append('QEMU here (%s) is older than on the source (%s)'
                        % (_qemu.version_string(have), _qemu.version_string(req['qemu_version'])))
    if req['machine'] not in qemu['machines']:
        problems.append('QEMU here (%s) does not know the machine type %s'
                        % (_qemu.version_string(have or None), req['machine']))
    if req['accel'] == 'kvm' and not facts['kvm'][0]:
        problems.append('the guest runs with KVM and KVM is not usable here (%s)' % facts['kvm'][1])
    for bridge in req['bridges']:
        if bridge not in facts['bridges']:
            problems.append('bridge %s does not exist here' % bridge)
    return problems + list(facts['file_problems'])
