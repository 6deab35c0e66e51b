# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service of the kvm_migrate module: its argument spec and one phase."""

from ansible_collections.hvops.kvm.plugins.module_utils._argspec import HOST_ARGS
from ansible_collections.hvops.kvm.plugins.module_utils._migration import PHASES, ROLES, run_phase
from ansible_collections.hvops.kvm.plugins.module_utils._migration_settings import DEFAULTS
from ansible_collections.hvops.kvm.plugins.module_utils._storage_copy import STORAGE_MODES


def _option(kind, **more):
    return dict(type=kind, **more)


def _defaulted(kind, key):
    return dict(type=kind, default=DEFAULTS[key])


ARGUMENT_SPEC = dict(
    name=_option('str', required=True),
    phase=_option('str', required=True, choices=list(PHASES)),
    lock_timeout=_defaulted('int', 'lock_timeout'),
    runtime=_option('dict'),
    definition=_option('dict'),
    policy=_option('dict'),
    vnc_password=_option('str', no_log=True),
    migration_address=_defaulted('str', 'migration_address'),
    migration_ports=_defaulted('str', 'migration_ports'),
    allow_any_address=_defaulted('bool', 'allow_any_address'),
    tls=_defaulted('bool', 'tls'),
    tls_dir=_defaulted('path', 'tls_dir'),
    tls_peer=_option('str'),
    tls_hostname=_option('str'),
    qemu_binary=_option('str'),
    memory_margin_mb=_defaulted('int', 'memory_margin_mb'),
    uri=_option('str'),
    live=_defaulted('bool', 'live'),
    max_bandwidth_mib=_defaulted('int', 'max_bandwidth_mib'),
    downtime_limit_ms=_defaulted('int', 'downtime_limit_ms'),
    auto_converge=_defaulted('bool', 'auto_converge'),
    throttle_initial=_defaulted('int', 'throttle_initial'),
    throttle_increment=_defaulted('int', 'throttle_increment'),
    xbzrle=_defaulted('bool', 'xbzrle'),
    xbzrle_cache_mb=_defaulted('int', 'xbzrle_cache_mb'),
    multifd=_defaulted('bool', 'multifd'),
    multifd_channels=_defaulted('int', 'multifd_channels'),
    postcopy=_defaulted('bool', 'postcopy'),
    return_path=_defaulted('bool', 'return_path'),
    timeout=_defaulted('int', 'timeout'),
    stall_timeout=_defaulted('int', 'stall_timeout'),
    success=_option('bool'),
    target_confirmed_dead=_defaulted('bool', 'target_confirmed_dead'),
    role=_option('str', choices=list(ROLES)),
    peer_status=_option('dict'),
    local_status=_option('dict'),
    storage=_option('str', choices=list(STORAGE_MODES), default=DEFAULTS['storage']),
    storage_map=_option('dict'),
    storage_bandwidth_mib=_defaulted('int', 'storage_bandwidth_mib'),
    disks=_option('list', elements='dict'),
    nbd=_option('dict'),
    remove_source_disks=_defaulted('bool', 'remove_source_disks'),
    **HOST_ARGS
)
MODULE_OPTIONS = dict(
    supports_check_mode=True,
    required_if=[
        ('phase', 'accept', ['runtime']),
        ('phase', 'migrate', ['uri']),
        ('phase', 'finalize', ['success']),
        ('phase', 'confirm', ['success']),
        ('phase', 'recover', ['role', 'peer_status']),
    ],
)


def run(params, run_command, check_mode=False):
    """The result of one kvm_migrate phase on this node."""
    return run_phase(params, run_command, check_mode=check_mode)
