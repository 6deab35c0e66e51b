# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Migration options: defaults, ports, URIs, and the capabilities and
parameters set on QEMU for every run. Pure: nothing here touches a process."""

import re

from ansible_collections.hvops.kvm.plugins.module_utils import _values
from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._locking import DEFAULT_TIMEOUT as DEFAULT_LOCK_TIMEOUT
from ansible_collections.hvops.kvm.plugins.module_utils._migration_checks import MEMORY_MARGIN_MB
from ansible_collections.hvops.kvm.plugins.module_utils._migration_tls import DEFAULT_TLS_DIR
from ansible_collections.hvops.kvm.plugins.module_utils._qmp import DEFAULT_TIMEOUT as DEFAULT_MONITOR_TIMEOUT
from ansible_collections.hvops.kvm.plugins.module_utils._qemu_user import DEFAULT_RUN_AS
from ansible_collections.hvops.kvm.plugins.module_utils._storage_copy import STORAGE_MODES

MIB = 1024 * 1024
# max-bandwidth meaning "as fast as the link goes" (QEMU's default is 128 MiB/s).
UNLIMITED_BANDWIDTH = 2 ** 63 - 1
MAX_DOWNTIME_MS = 2000000
MAX_MULTIFD_CHANNELS = 255
URI_PATTERN = re.compile(r'tcp:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})')

# Option defaults, shared with the module's argument spec.
DEFAULTS = {
    'run_dir': None,
    'state_dir': None,
    'run_as': DEFAULT_RUN_AS,
    'monitor_timeout': DEFAULT_MONITOR_TIMEOUT,
    'lock_timeout': DEFAULT_LOCK_TIMEOUT,
    'runtime': None,
    'definition': None,
    'policy': None,
    'vnc_password': None,
    'migration_address': '127.0.0.1',
    'migration_ports': '49152-49215',
    'allow_any_address': False,
    'tls': False,
    'tls_dir': DEFAULT_TLS_DIR,
    'tls_peer': None,
    'tls_hostname': None,
    'qemu_binary': None,
    'memory_margin_mb': MEMORY_MARGIN_MB,
    'uri': None,
    'live': True,
    'max_bandwidth_mib': 0,
    'downtime_limit_ms': 300,
    'auto_converge': False,
    'throttle_initial': 20,
    'throttle_increment': 10,
    'xbzrle': False,
    'xbzrle_cache_mb': 64,
    'multifd': False,
    'multifd_channels': 2,
    'postcopy': False,
    'return_path': True,
    'timeout': 600,
    'stall_timeout': 30,
    'success': None,
    'target_confirmed_dead': False,
    'role': None,
    'peer_status': None,
    'local_status': None,
    'storage': 'shared',
    'storage_map': None,
    'storage_bandwidth_mib': 0,
    'disks': None,
    'nbd': None,
    'remove_source_disks': False,
}

# Capabilities set on every run, on or off: QEMU keeps what the last run set.
# Besides those the options control, these change what a migration is and
# stay off. pause-before-switchover is on when disks are copied: the source
# then stops the guest and waits before the switch-over, while the mirror
# jobs finish (_storage_copy).
CAPABILITIES_OFF = ('compress', 'block', 'x-colo', 'release-ram',
                    'background-snapshot', 'zero-copy-send', 'postcopy-preempt',
                    'x-ignore-shared', 'rdma-pin-all')


def parse_port_range(value):
    """(low, high) from '49152-49215', '49152' or an int."""
    text = str(value).strip()
    match = re.fullmatch(r'(\d{1,5})(?:\s*-\s*(\d{1,5}))?', text)
    if not match:
        raise ValidationError('migration_ports must be a port or a range like 49152-49215, got %r' % value)
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if not 1 <= low <= high <= 65535:
        raise ValidationError('migration_ports %r: give ports from 1 to 65535, the lower first' % value)
    return low, high


def listen_address(value, allow_unspecified=False):
    """The normalised IP address to listen on; a host name is refused (QEMU
    would bind whatever it resolves to), and so is an address that means all
    of them (0.0.0.0, ::) unless ``allow_unspecified``."""
    address = _values.ip_address(value, 'migration_address')
    if address in ('0.0.0.0', '::') and not allow_unspecified:
        raise ValidationError('migration_address %s listens on every address of this node; give the'
                              ' address of the migration network (or set allow_any_address: true)'
                              % address)
    return address


def tcp_uri(host, port):
    if ':' in host:
        host = '[%s]' % host
    return 'tcp:%s:%d' % (host, port)


def parse_uri(uri):
    """(host, port) of a tcp: migration URI. Other transports are refused: an
    exec: URI would make QEMU run a shell command."""
    match = URI_PATTERN.fullmatch(str(uri or '').strip())
    port = int(match.group(2)) if match else 0
    if not match or not 1 <= port <= 65535:
        raise ValidationError('uri must be tcp:HOST:PORT (as accept returns it), got %r' % (uri,))
    return match.group(1).strip('[]'), port


def check_options(params):
    """Refuse out-of-range tuning before anything is touched."""
    def whole(key, low, high=None):
        value = params[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low or \
                (high is not None and value > high):
            raise ValidationError('%s must be a whole number from %d%s, got %r'
                                  % (key, low, ' to %d' % high if high is not None else '', value))
    whole('max_bandwidth_mib', 0)
    whole('downtime_limit_ms', 0, MAX_DOWNTIME_MS)
    whole('xbzrle_cache_mb', 1)
    whole('multifd_channels', 1, MAX_MULTIFD_CHANNELS)
    whole('timeout', 0)
    whole('stall_timeout', 1)
    whole('memory_margin_mb', 0)
    whole('lock_timeout', 0, _values.MAX_SECONDS)
    if params['tls']:
        _values.safe_path(params['tls_dir'], 'tls_dir')
    whole('throttle_initial', 1, 99)
    whole('throttle_increment', 1, 99)
    whole('storage_bandwidth_mib', 0)
    if params['storage'] not in STORAGE_MODES:
        raise ValidationError('storage must be one of %s, got %r' % (', '.join(STORAGE_MODES), params['storage']))
    if params['storage'] == 'copy' and params['postcopy']:
        raise ValidationError('storage: copy and postcopy do not go together: the disks are finished while'
                              ' the guest is stopped before the switch-over, and postcopy switches over early')


def capabilities(params, available):
    """[{capability, state}] for migrate-set-capabilities. Both ends get the
    same list (multifd and postcopy-ram must match; the rest is harmless on a
    target). One this QEMU does not know is left out when off, refused when on."""
    wanted = [
        ('events', True),
        ('return-path', bool(params['return_path'])),
        ('auto-converge', bool(params['auto_converge'])),
        ('xbzrle', bool(params['xbzrle'])),
        ('multifd', bool(params['multifd'])),
        ('postcopy-ram', bool(params['postcopy'])),
        ('pause-before-switchover', params.get('storage') == 'copy'),
    ] + [(name, False) for name in CAPABILITIES_OFF]
    known = set(available)
    missing = [name for name, state in wanted if state and name not in known]
    if missing:
        raise ValidationError('this QEMU does not support the migration capabilit%s %s'
                              % ('y' if len(missing) == 1 else 'ies', ', '.join(missing)))
    return [{'capability': name, 'state': state} for name, state in wanted if name in known]


def parameters(params):
    """Arguments of migrate-set-parameters, all set on every run."""
    bandwidth = params['max_bandwidth_mib']
    return {
        'max-bandwidth': bandwidth * MIB if bandwidth else UNLIMITED_BANDWIDTH,
        'downtime-limit': params['downtime_limit_ms'],
        'xbzrle-cache-size': params['xbzrle_cache_mb'] * MIB,
        'multifd-channels': params['multifd_channels'],
        'cpu-throttle-initial': params['throttle_initial'],
        'cpu-throttle-increment': params['throttle_increment'],
    }
