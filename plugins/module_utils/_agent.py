# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A client of the QEMU guest agent (qemu-ga), reached through socat.

The agent runs inside the guest: whatever it sends is untrusted. A session
therefore reads at most MAX_NOISE bytes while resynchronising and MAX_REPLY
bytes for one answer, gives every exchange a deadline, and the fact readers
below accept only answers of the expected shape, with every field checked
(types, lengths, addresses parsed).

The protocol (QEMU's qga/qapi-schema.json): newline-terminated JSON. Before
the first command the client resynchronises: it sends a 0xFF byte (the agent
drops whatever half-read input it had), then ``guest-sync-delimited`` with a
random id; the agent answers with a 0xFF byte followed by ``{"return": id}``.
Anything before that (a reply to an earlier client, garbage) is skipped.
``guest-shutdown`` answers nothing when it succeeds.

The channel is QEMU's chardev ``socket,server=on`` behind the virtio-serial
port ``org.qemu.guest_agent.0`` (ctrl/NAME.qga): it serves one client at a
time, so a session is always closed.
"""

import ipaddress
import json
import os
import random
import re
import select
import subprocess
import time

from ansible_collections.hvops.kvm.plugins.module_utils._errors import KvmError
from ansible_collections.hvops.kvm.plugins.module_utils._qmp import connect_socat, find_socat, reap_socat

DEFAULT_TIMEOUT = 3.0
DELIMITER = b'\xff'
MAX_NOISE = 64 * 1024
MAX_REPLY = 256 * 1024
# {"return": 2147483647} and a little room.
SYNC_REPLY = 256
READ_SIZE = 65536
# What facts accept from an agent.
MAX_INTERFACES = 64
MAX_ADDRESSES = 64
MAX_TEXT = 255
INTERFACE_NAME = re.compile(r'[^\s/]{1,64}')
MAC = re.compile(r'[0-9a-f]{2}(:[0-9a-f]{2}){5}')
OS_FIELDS = (('id', 'id'), ('name', 'name'), ('pretty-name', 'pretty_name'), ('version', 'version'),
             ('version-id', 'version_id'), ('kernel-release', 'kernel_release'), ('machine', 'machine'))


class AgentError(KvmError):
    """The agent did not answer, or answered something that is not an answer."""

    def __init__(self, msg, instance=None, kind='no-answer', **details):
        super().__init__(msg, instance=instance, **details)
        self.kind = kind


class AgentSession:
    """One resynchronised conversation with a guest's agent."""

    def __init__(self, socket_path, instance=None, timeout=DEFAULT_TIMEOUT, socat=None):
        self.socket_path = socket_path
        self.instance = instance
        self.timeout = timeout
        self.socat = socat
        self._proc = None
        self._buffer = b''
        self._eof = False

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc_info):
        self.close()
        return False

    def open(self):
        if not os.path.exists(self.socket_path):
            raise self._error('the guest agent channel %s does not exist (is the guest running with'
                              ' guest_agent: true?)' % self.socket_path)
        try:
            socat = find_socat(self.socat)
        except KvmError as err:
            raise AgentError(err.msg, instance=self.instance) from None
        self._proc = connect_socat(socat, self.socket_path, stderr=subprocess.DEVNULL)
        try:
            self._sync()
        except BaseException:
            self.close()
            raise
        return self

    def close(self):
        proc, self._proc = self._proc, None
        if proc is not None:
            reap_socat(proc)

    # -- exchanges ---------------------------------------------------------
    def execute(self, command, arguments=None, timeout=None):
        """Run an agent command; its ``return`` value."""
        self._send(command, arguments)
        reply = self._reply(time.monotonic() + (self.timeout if timeout is None else timeout), command)
        if 'error' in reply:
            error = reply['error'] if isinstance(reply['error'], dict) else {}
            raise AgentError('the guest agent refused %s: %s' % (command, _excerpt(str(error.get('desc')))),
                             instance=self.instance, kind='error')
        if 'return' not in reply:
            raise self._error('the guest agent answered %s with %s' % (command, _excerpt(json.dumps(reply))),
                              kind='bad-answer')
        return reply['return']

    def send_only(self, command, arguments=None):
        """Send a command that answers nothing when it succeeds (guest-shutdown)."""
        self._send(command, arguments)

    def _sync(self):
        token = random.randint(1, 2 ** 31 - 1)
        self._write(DELIMITER + _request('guest-sync-delimited', {'id': token}))
        deadline = time.monotonic() + self.timeout
        skipped = 0
        while True:
            index = self._buffer.find(DELIMITER)
            if index >= 0:
                skipped += index
                self._buffer = self._buffer[index + 1:]
                line = self._line(deadline, 'its answer to guest-sync-delimited', SYNC_REPLY, quiet=True)
                if line is None:
                    skipped += SYNC_REPLY
                else:
                    try:
                        message = json.loads(line.decode('utf-8'))
                    except ValueError:
                        message = None
                    if isinstance(message, dict) and message.get('return') == token:
                        return
                    skipped += len(line) + 1
            else:
                skipped += len(self._buffer)
                self._buffer = b''
                if skipped <= MAX_NOISE:
                    self._fill(deadline, 'an answer to guest-sync-delimited')
            if skipped > MAX_NOISE:
                raise self._error('the guest agent sent more than %d bytes that were not an answer to'
                                  ' guest-sync-delimited; it is not a working agent' % MAX_NOISE,
                                  kind='bad-answer')

    def _send(self, command, arguments):
        if self._proc is None:
            raise self._error('the guest agent session is closed')
        self._write(_request(command, arguments))

    def _write(self, data):
        try:
            while data:
                data = data[os.write(self._proc.stdin.fileno(), data):]
        except OSError:
            raise self._error('the guest agent channel %s closed' % self.socket_path)

    def _reply(self, deadline, command):
        line = self._line(deadline, 'its answer to %s' % command, MAX_REPLY)
        try:
            message = json.loads(line.decode('utf-8'))
        except ValueError:
            message = None
        if not isinstance(message, dict):
            raise self._error('the guest agent answered %s with something that is not a JSON object: %s'
                              % (command, _excerpt(line.decode('utf-8', 'replace'))), kind='bad-answer')
        return message

    def _line(self, deadline, waiting_for, limit, quiet=False):
        """The next newline-terminated line (without it); None with ``quiet``
        when it is longer than ``limit`` (the bytes are dropped)."""
        while b'\n' not in self._buffer:
            if len(self._buffer) > limit:
                if quiet:
                    self._buffer = b''
                    return None
                raise self._error('the guest agent sent more than %d bytes without ending %s'
                                  % (limit, waiting_for), kind='bad-answer')
            self._fill(deadline, waiting_for)
        line, self._buffer = self._buffer.split(b'\n', 1)
        return line

    def _fill(self, deadline, waiting_for):
        if self._eof:
            raise self._error('the guest agent channel %s closed while waiting for %s'
                              % (self.socket_path, waiting_for))
        remaining = deadline - time.monotonic()
        ready = select.select([self._proc.stdout], [], [], max(0.0, remaining))[0] if remaining > 0 else []
        if not ready:
            raise self._error('the guest agent did not send %s within %gs (is qemu-ga running in the'
                              ' guest?)' % (waiting_for, self.timeout))
        chunk = os.read(self._proc.stdout.fileno(), READ_SIZE)
        if not chunk:
            self._eof = True
        self._buffer += chunk

    def _error(self, msg, kind='no-answer'):
        return AgentError(msg, instance=self.instance, kind=kind, agent_socket=self.socket_path)


def _request(command, arguments):
    request = {'execute': command}
    if arguments:
        request['arguments'] = arguments
    return (json.dumps(request) + '\n').encode()


def _excerpt(text, limit=200):
    return text if len(text) <= limit else text[:limit] + '...'


# -- what the agent says, checked ---------------------------------------------
def _text(value, what):
    if not isinstance(value, str) or len(value) > MAX_TEXT or not value.isprintable():
        raise AgentError('the guest agent gave an invalid %s' % what, kind='bad-answer')
    return value


def parse_hostname(answer):
    if not isinstance(answer, dict):
        raise AgentError('the guest agent answered guest-get-host-name with no object', kind='bad-answer')
    return _text(answer.get('host-name'), 'host name')


def parse_osinfo(answer):
    if not isinstance(answer, dict):
        raise AgentError('the guest agent answered guest-get-osinfo with no object', kind='bad-answer')
    return dict((ours, _text(answer[theirs], 'OS %s' % ours) if answer.get(theirs) is not None else None)
                for theirs, ours in OS_FIELDS)


def parse_interfaces(answer):
    """[{name, hardware_address, addresses: [{address, prefix, family}]}] from
    guest-network-get-interfaces, every field checked."""
    if not isinstance(answer, list) or len(answer) > MAX_INTERFACES:
        raise AgentError('the guest agent answered guest-network-get-interfaces with no list of at most'
                         ' %d interfaces' % MAX_INTERFACES, kind='bad-answer')
    interfaces = []
    for item in answer:
        if not isinstance(item, dict) or not isinstance(item.get('name'), str) or \
                not INTERFACE_NAME.fullmatch(item['name']) or not item['name'].isprintable():
            raise AgentError('the guest agent gave an interface without a valid name', kind='bad-answer')
        mac = item.get('hardware-address')
        mac = mac.lower() if isinstance(mac, str) and MAC.fullmatch(mac.lower()) else None
        addresses = item.get('ip-addresses') or []
        if not isinstance(addresses, list) or len(addresses) > MAX_ADDRESSES:
            raise AgentError('the guest agent gave interface %s no list of at most %d addresses'
                             % (item['name'], MAX_ADDRESSES), kind='bad-answer')
        interfaces.append({'name': item['name'], 'hardware_address': mac,
                           'addresses': [_address(entry, item['name']) for entry in addresses]})
    return interfaces


def _address(entry, interface):
    try:
        family = {'ipv4': 4, 'ipv6': 6}[entry['ip-address-type']]
        address = ipaddress.ip_address(entry['ip-address'])
        prefix = entry['prefix']
        if address.version != family or isinstance(prefix, bool) or not isinstance(prefix, int) or \
                not 0 <= prefix <= address.max_prefixlen:
            raise ValueError(prefix)
    except (KeyError, TypeError, ValueError):
        raise AgentError('the guest agent gave interface %s an invalid address' % interface, kind='bad-answer')
    return {'address': str(address), 'prefix': prefix, 'family': 'ipv%d' % family}


def no_facts(status, error=None):
    """The agent facts of a guest whose agent said nothing, with why (status, error)."""
    return {'status': status, 'error': error, 'hostname': None, 'os': None, 'interfaces': []}


def agent_facts(socket_path, instance=None, timeout=DEFAULT_TIMEOUT, socat=None):
    """What a guest's agent says about it: {status, error, hostname, os,
    interfaces}. Never raises for what the agent does: status is ``ok``,
    ``no-answer`` or ``bad-answer`` (with ``error`` saying why)."""
    facts = no_facts('ok')
    try:
        with AgentSession(socket_path, instance=instance, timeout=timeout, socat=socat) as agent:
            facts['hostname'] = parse_hostname(agent.execute('guest-get-host-name'))
            facts['interfaces'] = parse_interfaces(agent.execute('guest-network-get-interfaces'))
            try:
                facts['os'] = parse_osinfo(agent.execute('guest-get-osinfo'))
            except AgentError as err:
                if err.kind != 'error':
                    raise
                # An agent without guest-get-osinfo (older than QEMU 2.10) still answers the rest.
    except AgentError as err:
        return no_facts('bad-answer' if err.kind == 'bad-answer' else 'no-answer', err.msg)
    return facts


def agent_shutdown(socket_path, instance=None, timeout=DEFAULT_TIMEOUT, socat=None):
    """Ask the agent to power the guest off; AgentError when it does not answer."""
    with AgentSession(socket_path, instance=instance, timeout=timeout, socat=socat) as agent:
        agent.send_only('guest-shutdown', {'mode': 'powerdown'})
