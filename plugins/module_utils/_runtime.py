# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The two stored files of an instance.

- The definition (in state_dir, it outlives a reboot): the spec the user
  asked for, stored once so later calls may name only the instance.
- The runtime (in run_dir, it lives as long as the QEMU): the exact argv and
  spec the running QEMU was started with. Restart and migration start QEMU
  again from it, so a guest keeps its exact command line (MACs, machine type,
  accelerator) across both.

Both are JSON, written atomically with mode 0600.
"""

import os
import time

from ansible_collections.hvops.kvm.plugins.module_utils._errors import StateError
from ansible_collections.hvops.kvm.plugins.module_utils._files import read_json, remove_quietly, write_json

RUNTIME_FORMAT = 1
# Spec keys added after 0.2, with the value a spec written without them means:
# both loaders fill them in, so a definition or runtime from before compares
# equal to today's spec of the same guest (no change, no restart).
ADDED_SPEC_KEYS = {'guest_agent': False, 'cloud_init': None}


def upgraded(spec):
    """A stored spec with the keys added since it was written; a non-dict as it is."""
    return dict(ADDED_SPEC_KEYS, **spec) if isinstance(spec, dict) else spec


def make_runtime(argv, spec, accel, qemu_version=None):
    return {
        'format': RUNTIME_FORMAT,
        'argv': list(argv),
        'spec': spec,
        'accel': accel,
        'qemu_version': qemu_version,
        'started_at': time.time(),
    }


def save_runtime(paths, runtime):
    write_json(paths.runtime, runtime)


def load_runtime(paths, name=None):
    """The runtime of an instance, or None when it has none."""
    runtime = read_json(paths.runtime, 'runtime file')
    if runtime is None:
        return None
    if not runtime_shape_ok(runtime):
        raise StateError('runtime file %s is not in a format this collection understands'
                         % paths.runtime, instance=name)
    runtime['spec'] = upgraded(runtime['spec'])
    return runtime


def runtime_shape_ok(runtime):
    """Whether a runtime has the fields every reader relies on, of the right types."""
    argv = runtime.get('argv')
    return runtime.get('format') == RUNTIME_FORMAT and isinstance(argv, list) and bool(argv) and \
        all(isinstance(word, str) for word in argv) and isinstance(runtime.get('spec'), dict) and \
        runtime.get('accel') in ('kvm', 'tcg')


def is_incoming(runtime):
    """Whether a runtime is that of a migration target (started with -incoming)."""
    return bool(runtime) and '-incoming' in runtime.get('argv', [])


def save_definition(paths, spec):
    write_json(paths.definition, spec)
    remove_quietly(paths.legacy_definition)


def load_definition(paths):
    """The stored definition, or None; one that collection 0.1 left in
    run_dir/conf counts until it is taken over."""
    definition = read_json(paths.definition, 'definition')
    if definition is None and not os.path.lexists(paths.definition):
        definition = read_json(paths.legacy_definition, 'definition')
    return upgraded(definition)


def has_definition(paths):
    return os.path.exists(paths.definition) or os.path.exists(paths.legacy_definition)


def has_vnc_password(paths):
    return os.path.exists(paths.vnc_password) or os.path.exists(paths.legacy_vnc_password)


def undefine(paths):
    """Remove what the node keeps of an instance beyond its QEMU: definition,
    VNC password, policy, last state and QEMU's log. Return what was removed."""
    return remove_quietly(paths.definition, paths.vnc_password, paths.policy, paths.last,
                          paths.legacy_definition, paths.legacy_vnc_password, paths.log)
