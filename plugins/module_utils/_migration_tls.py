# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""TLS for the migration stream: mutual x509 certificates, and the one peer a
target lets in.

Each node keeps its credentials in ``tls_dir`` (the hvops.kvm.kvm_node role
makes them): ``ca-cert.pem``, and its own certificate and key twice, as
``server-cert.pem``/``server-key.pem`` (what a target presents) and
``client-cert.pem``/``client-key.pem`` (what a source presents). QEMU loads
them when the ``tls-creds-x509`` object is added, as the QEMU user (it has
dropped root by then), so that user must be able to read the keys, and nobody
else may.

The target verifies the source's certificate (``verify-peer``) and lets in
only the distinguished name given as ``tls_peer`` (an ``authz-simple``
object; QEMU compares the DN as text, e.g. ``CN=kvm1``); the source checks the
target's certificate against ``tls_hostname``. A client that is not the
source fails the TLS handshake or the authorisation, and the target goes on
listening for the real one.
"""

import os
import re
import stat

from ansible_collections.hvops.kvm.plugins.module_utils._errors import MonitorError, ValidationError

DEFAULT_TLS_DIR = '/etc/hvops-kvm/tls'
CREDS_IDS = {'server': 'hvops-tls-in', 'client': 'hvops-tls-out'}
AUTHZ_ID = 'hvops-tls-authz'
# A distinguished name as gnutls prints it: ATTR=value, comma-separated.
DN_PATTERN = re.compile(r'[A-Za-z][A-Za-z0-9.]*=[^,=\s\\"]+(,[A-Za-z][A-Za-z0-9.]*=[^,=\s\\"]+)*')
HOSTNAME_PATTERN = re.compile(r'[A-Za-z0-9][A-Za-z0-9.:-]{0,252}')


def credential_files(tls_dir, endpoint):
    return [os.path.join(tls_dir, name) for name in
            ('ca-cert.pem', '%s-cert.pem' % endpoint, '%s-key.pem' % endpoint)]


def credential_problems(tls_dir, endpoint, qemu_user):
    """Why QEMU could not load this node's credentials for endpoint (server
    or client), as sentences (empty: it can)."""
    problems = []
    for path in credential_files(tls_dir, endpoint):
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            problems.append('%s is missing (the hvops.kvm.kvm_node role makes the TLS credentials)' % path)
            continue
        if not stat.S_ISREG(info.st_mode):
            problems.append('%s is not a regular file' % path)
            continue
        if path.endswith('-key.pem') and info.st_mode & 0o007:
            problems.append('the private key %s is readable by others (mode %04o): make it 0600'
                            % (path, stat.S_IMODE(info.st_mode)))
        if qemu_user is not None and not qemu_user.can_open(path, write=False):
            problems.append('the QEMU user %s cannot read %s (QEMU loads it after dropping root)'
                            % (qemu_user.name, path))
    return problems


def check_peer(value):
    if not isinstance(value, str) or not DN_PATTERN.fullmatch(value):
        raise ValidationError('tls_peer must be the distinguished name of the source node\'s certificate as'
                              ' QEMU prints it (e.g. CN=kvm1), got %r' % (value,))
    return value


def check_hostname(value):
    if not isinstance(value, str) or not HOSTNAME_PATTERN.fullmatch(value):
        raise ValidationError('tls_hostname must be a host name or an IP address, got %r' % (value,))
    return value


def objects(endpoint, tls_dir, peer=None):
    """object-add arguments: the credentials, and on the target its authorisation."""
    found = [{'qom-type': 'tls-creds-x509', 'id': CREDS_IDS[endpoint], 'dir': tls_dir,
              'endpoint': endpoint, 'verify-peer': True}]
    if peer is not None:
        found.append({'qom-type': 'authz-simple', 'id': AUTHZ_ID, 'identity': peer})
    return found


def parameters(endpoint=None, hostname=None, peer=None):
    """The TLS part of migrate-set-parameters, set on every run: empty
    strings turn TLS off (QEMU keeps what an earlier run set)."""
    return {
        'tls-creds': CREDS_IDS[endpoint] if endpoint else '',
        'tls-hostname': hostname or '',
        'tls-authz': AUTHZ_ID if peer else '',
    }


def load(qmp, wanted):
    """Add the objects, replacing ones of the same id an earlier run left."""
    for obj in wanted:
        try:
            qmp.execute('object-del', {'id': obj['id']})
        except MonitorError:
            pass
        qmp.execute('object-add', obj)


def plan(params, endpoint, user, name=None, hostname=None):
    """(objects to load, TLS parameters) for one end of a migration (``endpoint``
    server on the target, client on the source) from a phase's options (tls,
    tls_dir, tls_peer, tls_hostname); with tls off no objects and parameters
    that turn TLS off. ``user`` (a QemuUser) must be able to read the
    credentials: they are checked here, before anything is started."""
    if not params['tls']:
        return [], parameters()
    tls_dir = params['tls_dir']
    problems = credential_problems(tls_dir, endpoint, user)
    if problems:
        raise ValidationError('TLS is asked for, and QEMU cannot use the credentials in %s: %s'
                              % (tls_dir, '; '.join(problems)), instance=name)
    if endpoint == 'server':
        peer = check_peer(params['tls_peer'])
        return (objects('server', tls_dir, peer),
                parameters('server', peer=peer))
    hostname = check_hostname(params['tls_hostname'] or hostname)
    return objects('client', tls_dir), parameters('client', hostname=hostname)
