# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tap devices of bridged NICs, made by the library instead of a script.

Before QEMU starts, each bridged NIC gets a persistent tap (``ip tuntap add``)
that joins its bridge; QEMU opens it by name (``ifname=``, ``script=no``),
so it never runs a helper program and its sandbox can deny spawning. A tap
outlives its QEMU and is removed when the instance's files are cleaned up.

Tap names: ``hk`` + 8 hex digits of the run_dir and instance name + ``n`` + the
NIC's index (at most 15 characters), so that the taps of one instance are
found again from its name alone and two run_dirs on one node never clash.
"""

import hashlib
import os
import re

from ansible_collections.hvops.kvm.plugins.module_utils._errors import ProcessError

SYS_NET = '/sys/class/net'


def tap_prefix(run_dir, name):
    digest = hashlib.sha1(('%s\0%s' % (run_dir, name)).encode('utf-8')).hexdigest()[:8]
    return 'hk%sn' % digest


def tap_name(run_dir, name, index):
    return '%s%d' % (tap_prefix(run_dir, name), index)


def host_side_mac(mac):
    """The tap end must not carry the guest's MAC, or the bridge learns it on
    the wrong port; fe: as first octet keeps it out of the way (as libvirt does)."""
    return 'fe' + mac[2:]


def existing_taps(run_dir, name):
    """Names of this instance's taps that exist now."""
    pattern = re.compile(re.escape(tap_prefix(run_dir, name)) + r'\d{1,3}')
    try:
        return sorted(entry for entry in os.listdir(SYS_NET) if pattern.fullmatch(entry))
    except FileNotFoundError:
        return []


def _ip(run, argv, what):
    rc, out, err = run(['ip'] + argv)
    if rc != 0:
        raise ProcessError('%s failed: %s' % (what, (err or out or 'exit code %d' % rc).strip()))


def create_taps(run, run_dir, name, nics):
    """{index: tap name} for the bridged NICs, each created and on its bridge."""
    made = {}
    try:
        for index, nic in enumerate(nics):
            if nic['type'] != 'bridge':
                continue
            tap = tap_name(run_dir, name, index)
            _ip(run, ['tuntap', 'add', 'dev', tap, 'mode', 'tap', 'vnet_hdr'], 'creating tap %s' % tap)
            made[index] = tap
            _ip(run, ['link', 'set', 'dev', tap, 'address', host_side_mac(nic['mac'])],
                'setting the address of tap %s' % tap)
            _ip(run, ['link', 'set', 'dev', tap, 'master', nic['bridge']],
                'adding tap %s to bridge %s' % (tap, nic['bridge']))
            _ip(run, ['link', 'set', 'dev', tap, 'up'], 'bringing tap %s up' % tap)
    except ProcessError:
        remove_taps(run, list(made.values()))
        raise
    return made


def remove_taps(run, taps):
    """Delete the given taps; return those that were removed."""
    removed = []
    for tap in taps:
        rc, _out, _err = run(['ip', 'link', 'del', 'dev', tap])
        if rc == 0:
            removed.append(tap)
    return removed
