# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How a guest lives with its node, kept in state_dir so that it outlives a reboot.

policy (state_dir/guests/NAME.policy)
    autostart        start it when the node boots (_node_service)
    autostart_order  lower starts first (and stops last at shutdown)
    autostart_delay  seconds to wait after starting it before the next guest
    restart_policy   never, or on-crash: a guest whose QEMU died without being
                     stopped is started again (at boot, and by playbooks/heal.yml)
last (state_dir/guests/NAME.last)
    The last state the collection gave the guest on this node: running
    (started, resumed, arrived by a migration) or stopped (by a task, or by the
    node's shutdown), with when, by what and the node's boot id. A guest whose
    last state is running but whose runtime file is gone from run_dir was
    running when the node went down without stopping it (a reboot or a crash
    emptied the tmpfs): it crashed with its node. (One whose guest powered
    itself off leaves its runtime file: it is stopped, not crashed.)

Both are moved with the guest by a migration (the definition's phases) and
removed with its definition.
"""

import os
import time

from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._files import read_json, write_json

RESTART_POLICIES = ('never', 'on-crash')
POLICY_DEFAULTS = {'autostart': False, 'autostart_order': 0, 'autostart_delay': 0, 'restart_policy': 'never'}
MAX_ORDER = 9999
MAX_DELAY = 3600
LAST_STATES = ('running', 'stopped')
BOOT_ID = '/proc/sys/kernel/random/boot_id'


def _whole(value, key, high, name):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise ValidationError('%s must be a whole number from 0 to %d, got %r' % (key, high, value),
                              instance=name)
    return value


def checked_policy(given, name=None):
    """A whole policy from ``given`` (a dict of some of its keys, over the
    defaults); anything else is refused, as from a task or another node."""
    if not isinstance(given, dict):
        raise ValidationError('policy must be a dictionary, got %r' % (given,), instance=name)
    unknown = sorted(set(given) - set(POLICY_DEFAULTS))
    if unknown:
        raise ValidationError('policy has unknown keys: %s' % ', '.join(str(key) for key in unknown),
                              instance=name)
    policy = dict(POLICY_DEFAULTS)
    policy.update((key, value) for key, value in given.items() if value is not None)
    if not isinstance(policy['autostart'], bool):
        raise ValidationError('autostart must be true or false, got %r' % (policy['autostart'],), instance=name)
    _whole(policy['autostart_order'], 'autostart_order', MAX_ORDER, name)
    _whole(policy['autostart_delay'], 'autostart_delay', MAX_DELAY, name)
    if policy['restart_policy'] not in RESTART_POLICIES:
        raise ValidationError('restart_policy must be one of %s, got %r'
                              % (', '.join(RESTART_POLICIES), policy['restart_policy']), instance=name)
    return policy


def stored_policy(paths, name=None):
    """The policy stored here, checked, or None when there is none."""
    stored = read_json(paths.policy, 'policy file')
    return None if stored is None else checked_policy(stored, name)


def load_policy(paths, name=None):
    """The policy in force: the stored one, else the defaults."""
    return stored_policy(paths, name) or dict(POLICY_DEFAULTS)


def save_policy(paths, policy):
    write_json(paths.policy, policy)


def boot_id():
    """This boot of the node (the kernel's random boot id), or None."""
    try:
        with open(BOOT_ID) as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def mark(paths, state, by):
    """Record the state the collection just gave the guest (``by``: what did)."""
    write_json(paths.last, {'state': state, 'by': by, 'at': time.time(), 'boot_id': boot_id()})


def load_last(paths):
    """The last state record, or None when there is none or it makes no sense."""
    last = read_json(paths.last, 'last state file')
    if last is None or last.get('state') not in LAST_STATES:
        return None
    return last


def went_down_running(last, runtime_present):
    """Whether the node went down under the guest (a crash, a power cut, a
    reboot that did not stop it): the collection last left it running, and
    its runtime file, which lives as long as run_dir's tmpfs, is gone."""
    return bool(last) and last.get('state') == 'running' and not runtime_present


def policy_files(paths):
    return [path for path in (paths.policy, paths.last) if os.path.lexists(path)]
