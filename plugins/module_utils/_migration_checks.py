# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a migration target must offer, and why a node cannot take a guest. Pure.

One rule for both who ask: the ``accept`` phase on the target itself (from
what it reads there) and the evacuation plan on the controller (from the
target's facts). Each says what it knows in an ``offer``; what it does not
know is not checked.
"""

from ansible_collections.hvops.kvm.plugins.module_utils import _qemu
from ansible_collections.hvops.kvm.plugins.module_utils._cmdline import vnc_has_password
from ansible_collections.hvops.kvm.plugins.module_utils._states import DOWN

# MiB a target must have beyond the guest's memory (QEMU's own overhead).
MEMORY_MARGIN_MB = 128


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


def target_problems(name, req, offer):
    """Why a target cannot take guest ``name`` needing ``req``, as sentences
    (empty: it can). ``offer`` says what the target has; a key left out or
    None is not checked:

    copy
        the state (and ``pid``) of an instance of that name there, a dict
    memory_mb, memory_word
        the MiB the target can give (``available``, or ``left`` once a plan's
        other guests are counted); it needs the guest's memory plus
        ``margin_mb``
    qemu
        ``version`` (numbers) and ``machines`` of the target's QEMU
    kvm
        ``usable`` and ``reason``, asked only of a guest that runs with KVM
    missing_bridges, file_problems
        bridges the target lacks; sentences about the guest's files there
    """
    problems = []
    copy = offer.get('copy')
    if copy and copy.get('state') not in DOWN:
        problems.append('an instance named %s is %s there%s' % (
            name, copy.get('state'), ' (pid %s)' % copy['pid'] if copy.get('pid') else ''))
    if offer.get('memory_mb') is not None:
        need = req['memory_mb'] + offer.get('margin_mb', MEMORY_MARGIN_MB)
        if need > offer['memory_mb']:
            problems.append('not enough memory (needs %d MiB, %d MiB %s)'
                            % (need, offer['memory_mb'], offer.get('memory_word', 'available')))
    qemu = offer.get('qemu')
    if qemu is not None:
        have = tuple(qemu.get('version') or ())
        if req.get('machine') and req['machine'] not in (qemu.get('machines') or ()):
            problems.append('QEMU %s does not know the machine type %s'
                            % (_qemu.version_string(have), req['machine']))
        want = tuple(req.get('qemu_version') or ())
        if have and want and have < want:
            problems.append('QEMU %s is older than the source\'s %s'
                            % (_qemu.version_string(have), _qemu.version_string(want)))
    kvm = offer.get('kvm')
    if req.get('accel') == 'kvm' and kvm is not None and not kvm.get('usable'):
        problems.append('KVM is not usable%s' % (' (%s)' % kvm['reason'] if kvm.get('reason') else ''))
    for bridge in sorted(set(req.get('bridges') or ()) & set(offer.get('missing_bridges') or ())):
        problems.append('no bridge %s' % bridge)
    return problems + list(offer.get('file_problems') or ())
