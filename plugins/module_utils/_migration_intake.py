# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a target takes from a source: its runtime and definition, checked as
untrusted input. Their spec passes every rule of a kvm_instance task again;
nothing host-side is believed (the argv never runs, the QEMU binary is the
target's own ``binary``, else found here). Pure."""

from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._runtime import RUNTIME_FORMAT, runtime_shape_ok
from ansible_collections.hvops.kvm.plugins.module_utils._spec import SPEC_DEFAULTS, normalize_spec, qemu_binary


def checked_runtime(name, given, binary=None):
    """The source's runtime, checked, with its spec normalised again.

    Nothing host-side of it is taken: the argv is never run (the target
    builds its own from the spec), the spec's extra_args pass the same
    rules as at kvm_instance time, and the QEMU binary is this node's.
    """
    if not isinstance(given, dict) or not runtime_shape_ok(given):
        raise ValidationError('runtime must be the runtime returned by the prepare phase'
                              ' (format %d, with argv, spec and accel)' % RUNTIME_FORMAT,
                              instance=name)
    source_spec = given['spec']
    if source_spec.get('name') != name:
        raise ValidationError('runtime is that of instance %r, not %s'
                              % (source_spec.get('name'), name), instance=name)
    if not source_spec.get('machine'):
        raise ValidationError('runtime has no machine type', instance=name)
    spec = target_spec(name, source_spec, binary)
    version = given.get('qemu_version')
    if version is not None and (not isinstance(version, list) or not 2 <= len(version) <= 3 or
                                not all(isinstance(part, int) and not isinstance(part, bool)
                                        for part in version)):
        raise ValidationError('runtime qemu_version must be a list of 2 or 3 numbers, got %r' % (version,),
                              instance=name)
    started_at = given.get('started_at')
    if started_at is not None and (isinstance(started_at, bool) or not isinstance(started_at, (int, float))):
        raise ValidationError('runtime started_at must be a number, got %r' % (started_at,),
                              instance=name)
    runtime = {'format': RUNTIME_FORMAT, 'argv': list(given['argv']), 'spec': spec,
               'accel': given['accel'], 'qemu_version': list(version) if version else None,
               'started_at': started_at}
    return runtime, spec


def target_spec(name, source_spec, binary=None):
    """A spec from the source checked here by every rule of a kvm_instance
    task (a QEMU binary of a name kvm_instance refuses betrays a tampered
    runtime), then given this node's QEMU binary: the source's never runs."""
    spec = normalize_spec(name, dict((k, v) for k, v in source_spec.items() if k in SPEC_DEFAULTS))
    spec['qemu_binary'] = qemu_binary(binary, name)
    return spec


def checked_definition(name, given, binary=None):
    if given is None:
        return None
    if not isinstance(given, dict):
        raise ValidationError('definition must be a dictionary (the prepare phase\'s definition)',
                              instance=name)
    return target_spec(name, given, binary)
