"""The two-host lab (tools/lab.py): real sshd per namespace, real ansible over
SSH, a veth link between the hosts that can be cut and restored, and a
teardown that leaves nothing behind."""
import json
import os
import select
import subprocess
import sys
import time

import pytest

from tests.harness import VENV_BIN
from tests.harness.ansible_run import ansible_env, run_adhoc
from tests.harness.lab import LAB_TOOL, Lab, lab_tool, require_lab_prerequisites
from tests.harness.qemu_procs import wait_until

pytestmark = pytest.mark.lab

# ansible -a '{}' would be raw params, which ping refuses.
PING = {'data': 'pong'}

# Echo server for a lab host: listens on ADDRESS (port chosen by the kernel,
# printed), answers each connection with "echo:PEER_IP:DATA", and exits by
# itself after LIFETIME seconds.
ECHO_SERVER = r'''
import socket, sys, time
address, lifetime = sys.argv[1], float(sys.argv[2])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((address, 0))
server.listen(8)
server.settimeout(0.5)
print(server.getsockname()[1], flush=True)
deadline = time.monotonic() + lifetime
while time.monotonic() < deadline:
    try:
        conn, peer = server.accept()
    except socket.timeout:
        continue
    with conn:
        conn.settimeout(5)
        try:
            conn.sendall(b'echo:' + peer[0].encode() + b':' + conn.recv(1024))
        except OSError:
            pass
'''

# Client: connect to ADDRESS:PORT within TIMEOUT seconds, send a word, print the answer.
ECHO_CLIENT = r'''
import socket, sys
address, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with socket.create_connection((address, port), timeout=timeout) as conn:
    conn.settimeout(timeout)
    conn.sendall(b'hello')
    print(conn.recv(1024).decode())
'''


def adhoc(lab, module, args, host='all'):
    return run_adhoc(lab.inventory, module, args, host=host)


def host_results(result, lab):
    """{host name: module result} of an ad-hoc run on all lab hosts, which must have worked."""
    results = {host.name: result.result(host=host.name) for host in lab.hosts}
    assert result.rc == 0, 'ansible rc %d: %r\n%s' % (result.rc, results, result.stderr[-2000:])
    return results


@pytest.fixture
def echo_server(lab):
    """(address, port) of an echo server running in host B's namespace on B's link address."""
    server_host = lab.host('kvm-b')
    proc = lab.popen('kvm-b', [lab.python, '-c', ECHO_SERVER, server_host.address, '120'],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = select.select([proc.stdout], [], [], 10)[0]
        assert ready, 'echo server did not start'
        port = int(proc.stdout.readline())
        yield server_host.address, port
    finally:
        proc.kill()
        proc.wait(10)


def client_from_a(lab, server, timeout=2.0):
    address, port = server
    return lab.run('kvm-a', [lab.python, '-c', ECHO_CLIENT, address, str(port), str(timeout)],
                   timeout=timeout + 10)


def root_namespace_traces(lab):
    """Lines of the root namespace's links, addresses and routes that mention
    the lab's interfaces or subnet: there must be none, ever."""
    subnet_prefix = str(lab.subnet.network_address).rsplit('.', 1)[0] + '.'
    found = []
    for argv in (['ip', '-o', 'link', 'show'], ['ip', '-o', 'addr', 'show'], ['ip', 'route', 'show', 'table', 'all']):
        text = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        found += [line for line in text.splitlines() if lab.name + '-' in line or subnet_prefix in line]
    return found


def processes_mentioning(text):
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit() and int(entry) != os.getpid():
            argv = lab_tool._cmdline(int(entry))    # pylint: disable=protected-access
            if argv and text in ' '.join(argv):
                found.append((int(entry), argv))
    return found


def lab_pids(lab):
    """Processes inside the lab's namespaces."""
    return [pid for host in lab.hosts for pid in lab_tool._pids_in_netns(host.ns_path)]  # pylint: disable=protected-access


def test_inventory_describes_both_hosts(lab):
    proc = subprocess.run([os.path.join(VENV_BIN, 'ansible-inventory'), '-i', lab.inventory, '--list'],
                          capture_output=True, text=True, env=ansible_env(), timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert sorted(data['kvm_lab']['hosts']) == ['kvm-a', 'kvm-b']
    for host in lab.hosts:
        hostvars = data['_meta']['hostvars'][host.name]
        assert hostvars['ansible_host'] == host.address
        assert hostvars['ansible_user'] == 'root'
        assert hostvars['ansible_ssh_private_key_file'] == lab.client_key
        assert hostvars['kvm_run_dir'] == host.run_dir
        assert hostvars['kvm_migration_address'] == host.address
        assert 'StrictHostKeyChecking=no' in hostvars['ansible_ssh_common_args']
        assert 'UserKnownHostsFile=/dev/null' in hostvars['ansible_ssh_common_args']
        assert len(os.path.join(host.run_dir, 'sock', 'vm-with-a-long-name.qmp')) < 108
    assert lab.host('kvm-a').run_dir != lab.host('kvm-b').run_dir


def test_ansible_pings_both_hosts_over_ssh(lab):
    results = host_results(adhoc(lab, 'ansible.builtin.ping', PING), lab)
    for host in lab.hosts:
        assert results[host.name]['ping'] == 'pong'
    # Really over SSH, to each host's own sshd (its log shows the login).
    for host in lab.hosts:
        with open(host.log) as handle:
            assert 'Accepted publickey for root' in handle.read()


def test_each_host_sees_only_its_own_network(lab):
    script = 'ip -o addr show; echo --; ip -o link show; echo --; ip route show table all'
    results = host_results(adhoc(lab, 'ansible.builtin.shell', {'cmd': script}), lab)
    assert not root_namespace_traces(lab)
    root_addresses = subprocess.run(['ip', '-o', 'addr', 'show'], capture_output=True, text=True,
                                    check=True).stdout
    for host in lab.hosts:
        addr_text, link_text, route_text = results[host.name]['stdout'].split('--\n')
        addresses = {(line.split()[1], line.split()[3]) for line in addr_text.splitlines()}
        assert addresses == {('lo', '127.0.0.1/8'), ('lo', '::1/128'), (host.veth, host.cidr)}
        links = {line.split(':')[1].strip().split('@')[0] for line in link_text.splitlines()}
        assert links == {'lo', host.veth}
        assert 'default' not in route_text
        assert ('%s dev %s' % (lab.subnet, host.veth)) in route_text
        for line in root_addresses.splitlines():
            if line.split()[1] != 'lo':
                assert line.split()[3] not in addr_text, 'a root-namespace address is visible in the lab'


def test_host_a_reaches_host_b_over_the_link(lab, echo_server):
    address, port = echo_server
    result = adhoc(lab, 'ansible.builtin.command', {
        'argv': [lab.python, '-c', ECHO_CLIENT, address, str(port), '5']}, host='kvm-a')
    assert result.rc == 0, result
    # B answered, and saw the connection come from A's address on the link.
    assert result.result(host='kvm-a')['stdout'] == 'echo:%s:hello' % lab.host('kvm-a').address


def test_cut_link_stops_traffic_and_restore_link_brings_it_back(lab, echo_server):
    expected = 'echo:%s:hello\n' % lab.host('kvm-a').address
    assert client_from_a(lab, echo_server).stdout == expected

    lab.cut_link()
    try:
        assert lab.link_state('kvm-a') == 'down' and lab.link_state('kvm-b') == 'down'
        start = time.monotonic()
        cut = client_from_a(lab, echo_server, timeout=2.0)
        assert cut.returncode != 0 and cut.stdout == '', cut
        assert time.monotonic() - start < 10
        # Management goes over each namespace's loopback, not the link: Ansible
        # still reaches both nodes while the link is cut.
        results = host_results(adhoc(lab, 'ansible.builtin.ping', PING), lab)
        assert all(result['ping'] == 'pong' for result in results.values())
    finally:
        lab.restore_link()
    assert lab.link_state('kvm-a') == 'up' and lab.link_state('kvm-b') == 'up'
    assert client_from_a(lab, echo_server).stdout == expected

    # One end only: A's end stays up but loses carrier; nothing gets through.
    lab.cut_link(['kvm-b'])
    try:
        assert lab.link_state('kvm-a') == 'down'
        cut = client_from_a(lab, echo_server, timeout=1.0)
        assert cut.returncode != 0 and cut.stdout == '', cut
    finally:
        lab.restore_link()
    assert client_from_a(lab, echo_server).stdout == expected


def test_up_again_keeps_the_running_lab(lab):
    before = [lab.sshd_pid(host.name) for host in lab.hosts]
    with open(lab.inventory) as handle:
        inventory = handle.read()
    again = Lab()
    start = time.monotonic()
    again.up()
    assert time.monotonic() - start < 5
    assert [again.sshd_pid(host.name) for host in again.hosts] == before
    with open(again.inventory) as handle:
        assert handle.read() == inventory
    assert lab.healthy()


def test_down_leaves_nothing_and_up_cleans_up_after_a_crash():
    """On a lab of its own (so the session's lab stays up): made by the command
    line, broken as by a crash, repaired by up(), used, then taken down."""
    name, base = 'hvt', '/tmp/hvt-lab'
    cli = [sys.executable, LAB_TOOL, '--name', name]
    require_lab_prerequisites()
    Lab(name=name).down()
    try:
        made = subprocess.run(cli + ['up'], capture_output=True, text=True, timeout=60, check=False)
        assert made.returncode == 0, made.stderr
        lab = Lab(name=name)
        assert lab.base == base and lab.healthy()
        assert not root_namespace_traces(lab)

        # A "crash": host a's sshd dies; a stray process is left on host b.
        os.kill(lab.sshd_pid('a'), 9)
        stray = subprocess.Popen(lab.netns_argv('b', ['sleep', '300']), start_new_session=True)
        assert not lab.healthy()
        start = time.monotonic()
        lab.up()
        up_seconds = time.monotonic() - start
        assert lab.healthy() and up_seconds < 5
        assert stray.poll() is not None, 'up() left a process of the broken lab running'

        # Use it, so that there are ssh sessions, relays and ControlPersist masters to clean up.
        results = host_results(run_adhoc(lab.inventory, 'ansible.builtin.ping', PING, host='all'), lab)
        assert all(result['ping'] == 'pong' for result in results.values())
        stray = subprocess.Popen(lab.netns_argv('a', ['sleep', '300']), start_new_session=True)
        in_namespaces = wait_until(lambda: stray.pid in lab_pids(lab) and lab_pids(lab), 10)
        assert len(in_namespaces) >= 5     # 2 sshd listeners, their sessions, the relays, the stray
        sshds = [lab.sshd_pid(host.name) for host in lab.hosts]

        start = time.monotonic()
        lab.down()
        down_seconds = time.monotonic() - start
        stray.wait(5)
        assert down_seconds < 5

        assert not any(os.path.exists(host.ns_path) for host in lab.hosts)
        listed = subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True, check=True).stdout
        assert name + '-a' not in listed and name + '-b' not in listed
        assert not [pid for pid in in_namespaces + sshds if lab_tool._alive(pid)]  # pylint: disable=protected-access
        assert not processes_mentioning(base)
        assert not os.path.exists(base)
        assert not root_namespace_traces(lab)

        lab.down()      # nothing to do: fine
        status = subprocess.run(cli + ['status'], capture_output=True, text=True, timeout=60, check=False)
        assert status.returncode == 1 and status.stdout.startswith('lab %s: down' % name), status
        gone = subprocess.run(cli + ['down'], capture_output=True, text=True, timeout=60, check=False)
        assert gone.returncode == 0, gone.stderr
    finally:
        Lab(name=name).down()
    print('hvt lab: up (repairing a crash) %.2fs, down %.2fs' % (up_seconds, down_seconds))
