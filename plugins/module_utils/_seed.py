# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cloud-init NoCloud seeds: the ``cloud_init`` option, normalised into three
documents, and the ISO9660 image labelled ``cidata`` that carries them.

The spec keeps the documents themselves (``user_data``, ``meta_data`` and
``network_config``, as text), so the stored definition says exactly what the
guest is given, a rerun with the same input changes nothing, and a migration
target builds the same seed from the definition it receives. The image is
derived: it is made in run_dir/seed/ each time QEMU starts (about 0.1 s
with xorriso), readable by the QEMU user, and removed with the instance's
other runtime files.

Shortcuts (hostname, ssh_authorized_keys, users, password_hash) are merged
into a user-data given as a dictionary (or into an empty one) and rendered
as ``#cloud-config`` YAML; a user-data given as text is used as it is.
"""

import hashlib
import json
import os
import re
import shutil
import tempfile

from ansible_collections.hvops.kvm.plugins.module_utils._errors import (
    MissingBinaryError, ProcessError, StateError, ValidationError)
from ansible_collections.hvops.kvm.plugins.module_utils._files import remove_quietly

KEYS = ('hostname', 'ssh_authorized_keys', 'users', 'password_hash', 'password_user',
        'user_data', 'meta_data', 'network_config')
DOCUMENTS = ('user_data', 'meta_data', 'network_config')
FILE_NAMES = {'user_data': 'user-data', 'meta_data': 'meta-data', 'network_config': 'network-config'}
MAX_DOCUMENT = 64 * 1024
MAX_DEPTH = 16
LABEL = 'cidata'
HOSTNAME = re.compile(r'(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?'
                      r'(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*')
USER = re.compile(r'[a-z_][a-z0-9_-]{0,31}')
SSH_KEY = re.compile(r'(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) '
                     r'[A-Za-z0-9+/]+={0,3}( [^\n\r]*)?')
# The programs that make ISO9660 images, in the order they are looked for.
TOOLS = (('xorriso', ['-as', 'mkisofs']), ('genisoimage', []), ('mkisofs', []))
TOOL_DIRS = ('/usr/bin', '/usr/local/bin', '/bin')
# YAML scalars written without quotes: only what no YAML reader takes for
# anything but this string.
# Anything that starts like a number (0x1f, 1e3, 12:30) is quoted too.
PLAIN = re.compile(r'[A-Za-z_/][A-Za-z0-9 _./@+=~%,()-]*')
NOT_PLAIN = re.compile(r'(?i)(y|n|yes|no|true|false|on|off|null)')


def normalize(value, name):
    """The spec's ``cloud_init`` (None, or the three documents as text) from
    the option. Pure; refuses what cloud-init could not read."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError('cloud_init must be a dictionary', instance=name)
    unknown = set(value) - set(KEYS)
    if unknown:
        raise ValidationError('cloud_init has unknown keys: %s' % ', '.join(sorted(unknown)), instance=name)
    given = dict((key, item) for key, item in value.items() if item is not None)
    user_data = given.get('user_data', {})
    shortcuts = [key for key in ('hostname', 'ssh_authorized_keys', 'users', 'password_hash') if key in given]
    if isinstance(user_data, str):
        if shortcuts:
            raise ValidationError('cloud_init: %s cannot be merged into a user_data given as text; give'
                                  ' user_data as a dictionary' % ', '.join(shortcuts), instance=name)
        user_text = user_data
    elif isinstance(user_data, dict):
        user_text = '#cloud-config\n' + to_yaml(_merge_shortcuts(dict(user_data), given, name), name)
    else:
        raise ValidationError('cloud_init user_data must be text or a dictionary', instance=name)
    network = given.get('network_config')
    if isinstance(network, dict):
        network = to_yaml(network, name)
    elif network is not None and not isinstance(network, str):
        raise ValidationError('cloud_init network_config must be text or a dictionary', instance=name)
    meta = given.get('meta_data', {})
    if isinstance(meta, dict):
        meta = dict(meta)
        hostname = given.get('hostname') or name
        meta.setdefault('local-hostname', hostname)
        # A new instance-id whenever the data changes: cloud-init then applies it again.
        digest = hashlib.sha256((user_text + '\0' + (network or '')).encode('utf-8')).hexdigest()[:12]
        meta.setdefault('instance-id', '%s-%s' % (name, digest))
        meta = to_yaml(meta, name)
    elif not isinstance(meta, str):
        raise ValidationError('cloud_init meta_data must be text or a dictionary', instance=name)
    documents = {'user_data': user_text, 'meta_data': meta, 'network_config': network}
    for key, text in documents.items():
        if text is not None and (len(text.encode('utf-8')) > MAX_DOCUMENT or '\0' in text):
            raise ValidationError('cloud_init %s must be text of at most %d bytes without NUL characters'
                                  % (key, MAX_DOCUMENT), instance=name)
    return documents


def _merge_shortcuts(user_data, given, name):
    if 'hostname' in given:
        hostname = given['hostname']
        if not isinstance(hostname, str) or not HOSTNAME.fullmatch(hostname):
            raise ValidationError('cloud_init hostname %r is not a valid host name' % (hostname,), instance=name)
        user_data['hostname'] = hostname
    if 'ssh_authorized_keys' in given:
        keys = given['ssh_authorized_keys']
        if not isinstance(keys, list) or not all(isinstance(key, str) and SSH_KEY.fullmatch(key.strip())
                                                 for key in keys):
            raise ValidationError('cloud_init ssh_authorized_keys must be a list of OpenSSH public keys'
                                  ' (TYPE BASE64 [COMMENT], one line each)', instance=name)
        user_data['ssh_authorized_keys'] = list(user_data.get('ssh_authorized_keys') or []) + \
            [key.strip() for key in keys]
    users = list(user_data.get('users') or [])
    if 'users' in given:
        if not isinstance(given['users'], list):
            raise ValidationError('cloud_init users must be a list', instance=name)
        users += given['users']
    if 'password_hash' in given:
        password = given['password_hash']
        if not isinstance(password, str) or not re.fullmatch(r'\$[0-9a-z]+\$[!-~]+', password):
            raise ValidationError('cloud_init password_hash must be a crypt(3) hash such as $6$...'
                                  ' (never a clear-text password)', instance=name)
        user = given.get('password_user') or 'root'
        if not isinstance(user, str) or not USER.fullmatch(user):
            raise ValidationError('cloud_init password_user %r is not a valid user name' % (user,), instance=name)
        if not users:
            users = ['default']
        users.append({'name': user, 'hashed_passwd': password, 'lock_passwd': False})
    elif 'password_user' in given:
        raise ValidationError('cloud_init password_user needs password_hash', instance=name)
    if users:
        user_data['users'] = users
    return user_data


# -- a small YAML writer (block style; what the node's Python has) ------------
def to_yaml(value, name):
    lines = []
    _emit(value, 0, lines, name, 0)
    return '\n'.join(lines) + '\n'


def _scalar(value, name):
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        if PLAIN.fullmatch(value) and not NOT_PLAIN.fullmatch(value) and not value.endswith(' '):
            return value
        return json.dumps(value, ensure_ascii=False)
    raise ValidationError('cloud_init holds a %s, which YAML cannot carry here' % type(value).__name__,
                          instance=name)


def _emit(value, indent, lines, name, depth):
    if depth > MAX_DEPTH:
        raise ValidationError('cloud_init is nested more than %d levels deep' % MAX_DEPTH, instance=name)
    pad = ' ' * indent
    if isinstance(value, dict):
        if not value:
            lines.append(pad + '{}')
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError('cloud_init keys must be text, got %r' % (key,), instance=name)
            _entry(pad + _scalar(key, name) + ':', item, indent + 2, lines, name, depth)
    elif isinstance(value, list):
        if not value:
            lines.append(pad + '[]')
        for item in value:
            _entry(pad + '-', item, indent + 2, lines, name, depth)
    else:
        lines.append(pad + _scalar(value, name))


def _entry(head, item, indent, lines, name, depth):
    if isinstance(item, (dict, list)) and item:
        if head.endswith('-') and isinstance(item, dict):
            # "- key: value" with the mapping's other keys under it.
            nested = []
            _emit(item, indent, nested, name, depth + 1)
            lines.append(head + ' ' + nested[0].lstrip())
            lines.extend(nested[1:])
        else:
            lines.append(head)
            _emit(item, indent, lines, name, depth + 1)
    else:
        lines.append(head + ' ' + (_scalar(item, name) if not isinstance(item, (dict, list))
                                   else ('{}' if isinstance(item, dict) else '[]')))


# -- the image -----------------------------------------------------------------
def find_tool():
    """argv prefix of the first ISO9660 maker found (xorriso, genisoimage, mkisofs)."""
    search = os.pathsep.join([os.environ.get('PATH', os.defpath)] + list(TOOL_DIRS))
    for program, prefix in TOOLS:
        found = shutil.which(program, path=search)
        if found:
            return [os.path.abspath(found)] + prefix
    raise MissingBinaryError('no program to make the cloud-init seed image: install xorriso (or'
                             ' genisoimage); the hvops.kvm.kvm_node role does')


def build(run, documents, seed_path, work_dir, qemu_user=None, instance=None):
    """Write the seed image for documents to seed_path, readable by the QEMU
    user only (and root). ``work_dir`` is a private directory for the files
    the image is made from. Nothing is left behind on failure."""
    tool = find_tool()
    try:
        _build(run, tool, documents, seed_path, work_dir, qemu_user, instance)
    except OSError as err:
        raise StateError('could not make the cloud-init seed image %s: %s' % (seed_path, err.strerror or err),
                         instance=instance)


def _build(run, tool, documents, seed_path, work_dir, qemu_user, instance):
    source = tempfile.mkdtemp(prefix='.seed-', dir=work_dir)
    image = None
    try:
        fd, image = tempfile.mkstemp(prefix='.' + os.path.basename(seed_path) + '.', dir=os.path.dirname(seed_path))
        os.close(fd)
        for key in DOCUMENTS:
            if documents.get(key) is not None:
                with open(os.path.join(source, FILE_NAMES[key]), 'w', encoding='utf-8') as handle:
                    handle.write(documents[key])
        rc, _out, err = run(tool + ['-quiet', '-o', image, '-V', LABEL, '-J', '-r', source])
        if rc != 0:
            raise ProcessError('could not make the cloud-init seed image: %s' % (err or '').strip()[-500:],
                               instance=instance, rc=rc)
        if qemu_user is not None and not qemu_user.is_root:
            os.chown(image, 0, qemu_user.gid)
            os.chmod(image, 0o640)
        else:
            os.chmod(image, 0o600)
        os.rename(image, seed_path)
    except BaseException:
        if image is not None:
            remove_quietly(image)
        raise
    finally:
        shutil.rmtree(source, ignore_errors=True)


def summary(documents):
    """What results show of a seed: never its text (a user-data can hold secrets)."""
    if documents is None:
        return None
    digest = hashlib.sha256(json.dumps(documents, sort_keys=True).encode('utf-8')).hexdigest()
    return {'sha256': digest, 'documents': sorted(FILE_NAMES[key] for key in DOCUMENTS
                                                  if documents.get(key) is not None)}
