# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The two stored files of an instance.

- The definition: the spec the user asked for, stored once so later calls may
  name only the instance.
- The runtime: the exact argv and spec the running QEMU was started with.
  Restart and migration start QEMU again from it, so a guest keeps its exact
  command line (MACs, machine type, accelerator) across both.

Both are JSON, written atomically with mode 0600.
"""

import time

from ansible_collections.hvops.kvm.plugins.module_utils._errors import StateError
from ansible_collections.hvops.kvm.plugins.module_utils._files import read_json, write_json

RUNTIME_FORMAT = 1


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


def load_definition(paths):
    return read_json(paths.definition, 'definition')
