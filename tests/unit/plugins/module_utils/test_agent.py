"""The guest agent client against a fake agent on a unix socket (socat is the
real one), and the checks of what an agent answers."""
import json
import os
import socket
import tempfile
import threading
import time

import pytest

from ansible_collections.hvops.kvm.plugins.module_utils import _agent
from ansible_collections.hvops.kvm.plugins.module_utils._agent import (
    AgentError, AgentSession, agent_facts, agent_shutdown, parse_interfaces, parse_osinfo)

INTERFACES = [
    {'name': 'lo', 'hardware-address': '00:00:00:00:00:00',
     'ip-addresses': [{'ip-address-type': 'ipv4', 'ip-address': '127.0.0.1', 'prefix': 8}]},
    {'name': 'eth0', 'hardware-address': '52:54:00:AB:CD:EF',
     'ip-addresses': [{'ip-address-type': 'ipv4', 'ip-address': '10.77.0.5', 'prefix': 24},
                      {'ip-address-type': 'ipv6', 'ip-address': 'fe80::5054:ff:feab:cdef', 'prefix': 64}]},
]
ANSWERS = {
    'guest-get-host-name': {'host-name': 'web1'},
    'guest-network-get-interfaces': INTERFACES,
    'guest-get-osinfo': {'id': 'debian', 'name': 'Debian GNU/Linux', 'pretty-name': 'Debian 12',
                         'version-id': '12', 'kernel-release': '6.1.0', 'machine': 'x86_64'},
}


class FakeAgent:
    """One client at a time, like QEMU's chardev; ``mode`` says how it behaves."""

    def __init__(self, path, mode='normal', answers=None):
        self.path, self.mode = path, mode
        self.answers = dict(ANSWERS, **(answers or {}))
        self.received = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        self.server.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _peer = self.server.accept()
            except socket.timeout:
                continue
            with conn:
                self.talk(conn)

    def talk(self, conn):
        conn.settimeout(0.2)
        if self.mode == 'flood':
            junk = os.urandom(4096).replace(b'\n', b'x') + b'\xff{"return": 1' + b'9' * 300
            while not self.stop.is_set():
                try:
                    conn.sendall(junk)
                except OSError:
                    return
            return
        if self.mode == 'stale':
            # A reply meant for an earlier client, then garbage, before ours.
            conn.sendall(b'{"return": {}}\n\xff{"return": 12}\nnoise')
        buffer = b''
        while not self.stop.is_set():
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk.replace(b'\xff', b'')
            while b'\n' in buffer:
                line, buffer = buffer.split(b'\n', 1)
                request = json.loads(line)
                self.received.append(request['execute'])
                if self.mode == 'silent':
                    continue
                try:
                    conn.sendall(self.reply(request))
                except OSError:
                    return

    def reply(self, request):
        command = request['execute']
        if command == 'guest-sync-delimited':
            return b'\xff' + json.dumps({'return': request['arguments']['id']}).encode() + b'\n'
        if command == 'guest-shutdown':
            return b''
        if self.mode == 'huge':
            return b'{"return": "' + b'a' * (_agent.MAX_REPLY + 10)
        if command not in self.answers:
            return json.dumps({'error': {'class': 'CommandNotFound', 'desc': 'no %s' % command}}).encode() + b'\n'
        return json.dumps({'return': self.answers[command]}).encode() + b'\n'

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.server.close()


@pytest.fixture
def agent_at():
    made = []
    directory = tempfile.mkdtemp(prefix='hvops-agent-')

    def start(mode='normal', answers=None):
        made.append(FakeAgent(os.path.join(directory, 'g.qga'), mode, answers))
        return made[-1]

    yield start
    for agent in made:
        agent.close()
    for entry in os.listdir(directory):
        os.unlink(os.path.join(directory, entry))
    os.rmdir(directory)


def test_facts_of_a_working_agent(agent_at):
    agent = agent_at()
    facts = agent_facts(agent.path, timeout=2)
    assert facts['status'] == 'ok' and facts['error'] is None
    assert facts['hostname'] == 'web1'
    assert facts['os']['id'] == 'debian' and facts['os']['pretty_name'] == 'Debian 12'
    assert facts['os']['version'] is None
    eth0 = facts['interfaces'][1]
    assert eth0 == {'name': 'eth0', 'hardware_address': '52:54:00:ab:cd:ef', 'addresses': [
        {'address': '10.77.0.5', 'prefix': 24, 'family': 'ipv4'},
        {'address': 'fe80::5054:ff:feab:cdef', 'prefix': 64, 'family': 'ipv6'}]}
    assert agent.received[0] == 'guest-sync-delimited'


def test_a_stale_reply_before_the_sync_is_skipped(agent_at):
    agent = agent_at('stale')
    assert agent_facts(agent.path, timeout=2)['hostname'] == 'web1'


def test_an_agent_without_osinfo_still_gives_the_rest(agent_at):
    agent = agent_at()
    del agent.answers['guest-get-osinfo']
    facts = agent_facts(agent.path, timeout=2)
    assert facts['status'] == 'ok' and facts['os'] is None and facts['hostname'] == 'web1'


def test_a_silent_agent_is_no_answer_within_the_timeout(agent_at):
    agent = agent_at('silent')
    began = time.monotonic()
    facts = agent_facts(agent.path, timeout=0.5)
    assert time.monotonic() - began < 2.5
    assert facts['status'] == 'no-answer'
    assert 'did not send' in facts['error'] and facts['hostname'] is None


def test_a_flooding_agent_is_a_bad_answer_quickly(agent_at):
    agent = agent_at('flood')
    began = time.monotonic()
    facts = agent_facts(agent.path, timeout=5)
    assert time.monotonic() - began < 3
    assert facts['status'] == 'bad-answer'
    assert 'not an answer' in facts['error']


def test_a_reply_without_end_is_refused_at_the_limit(agent_at):
    agent = agent_at('huge')
    facts = agent_facts(agent.path, timeout=5)
    assert facts['status'] == 'bad-answer'
    assert 'more than %d bytes' % _agent.MAX_REPLY in facts['error']


def test_no_channel_is_no_answer():
    facts = agent_facts('/nonexistent/g.qga', timeout=1)
    assert facts['status'] == 'no-answer' and 'does not exist' in facts['error']


def test_shutdown_is_sent_after_a_sync(agent_at):
    agent = agent_at()
    agent_shutdown(agent.path, timeout=2)
    deadline = time.monotonic() + 2
    while 'guest-shutdown' not in agent.received and time.monotonic() < deadline:
        time.sleep(0.02)
    assert agent.received == ['guest-sync-delimited', 'guest-shutdown']


def test_shutdown_to_a_silent_agent_raises(agent_at):
    agent = agent_at('silent')
    with pytest.raises(AgentError) as err:
        agent_shutdown(agent.path, timeout=0.3)
    assert err.value.kind == 'no-answer'
    assert 'guest-shutdown' not in agent.received


def test_an_error_reply_is_an_error(agent_at):
    agent = agent_at()
    with AgentSession(agent.path, timeout=2) as session:
        with pytest.raises(AgentError) as err:
            session.execute('guest-no-such-command')
    assert err.value.kind == 'error' and 'refused' in err.value.msg


@pytest.mark.parametrize('answer', [
    None, {}, [{'name': 'eth0/../x'}], [{'name': 'a' * 65}], [{'name': 'eth\n0'}],
    [{'name': 'eth0', 'ip-addresses': [{'ip-address-type': 'ipv4', 'ip-address': '10.0.0.300', 'prefix': 24}]}],
    [{'name': 'eth0', 'ip-addresses': [{'ip-address-type': 'ipv4', 'ip-address': '::1', 'prefix': 24}]}],
    [{'name': 'eth0', 'ip-addresses': [{'ip-address-type': 'ipv4', 'ip-address': '10.0.0.1', 'prefix': 33}]}],
    [{'name': 'eth0', 'ip-addresses': [{'ip-address-type': 'ipv4', 'ip-address': '10.0.0.1', 'prefix': True}]}],
    [{'name': 'eth0', 'ip-addresses': [{'ip-address-type': 'ipx', 'ip-address': '10.0.0.1', 'prefix': 8}]}],
    [{'name': 'eth0', 'ip-addresses': 'lots'}],
    [{'name': 'eth%d' % n} for n in range(_agent.MAX_INTERFACES + 1)],
])
def test_interfaces_of_a_lying_agent_are_refused(answer):
    with pytest.raises(AgentError) as err:
        parse_interfaces(answer)
    assert err.value.kind == 'bad-answer'


def test_a_bad_mac_is_dropped_not_believed():
    [eth0] = parse_interfaces([{'name': 'eth0', 'hardware-address': 'zz:<script>'}])
    assert eth0['hardware_address'] is None and eth0['addresses'] == []


@pytest.mark.parametrize('answer', [[], {'id': 'x' * 300}, {'name': 'a\x1bb'}, {'id': 7}])
def test_osinfo_of_a_lying_agent_is_refused(answer):
    with pytest.raises(AgentError):
        parse_osinfo(answer)
