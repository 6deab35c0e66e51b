"""The hvops.kvm.guests inventory plugin over the two-host lab, through real
``ansible-inventory`` runs: both sources (the fact cache filled by a real
``ansible -m hvops.kvm.kvm_node_facts`` run, and ``gather``), a guest that
migrated to the other node, and a node that cannot be reached.

Two guests run for the whole module: inv-a on kvm-a is the Linux test guest
(tests/linux_guest) with a guest agent, a NIC on a bridge inside kvm-a's
namespace and a cloud-init seed giving it an address, a host name and the
lab's SSH key, so the inventory gives it an ``ansible_host`` and ``ansible -m
raw`` reaches its dropbear through the inventory; inv-b on kvm-b is the
boot-sector test guest (tests/guest), with no agent and so no address. The
migration test moves inv-a to kvm-b with playbooks/migrate.yml (TLS, as the
role defaults). Every QEMU of the lab's run_dirs is killed at the
end, and the guests' files removed.
"""
import json
import os
import shutil
import subprocess

import pytest

from tests.harness import REPO, VENV_BIN
from tests.harness.ansible_run import ansible_env, run_adhoc, run_playbook
from tests.harness.guest import build_image
from tests.harness.linux_guest import build_linux_guest
from tests.harness.lab import clear_guests, inventory_with_tls
from tests.harness.qemu_procs import SerialRecorder, qemu_processes_under
from tests.harness.system import give_to_qemu, require_binary
from tests.harness.tls_pki import Pki

pytestmark = pytest.mark.lab

GUESTS = {'inv-a': 'kvm-a', 'inv-b': 'kvm-b'}
MEMORY = {'inv-a': 128, 'inv-b': 32}
# inv-a's network: a bridge in each lab namespace (kvm-b's for after the migration).
BRIDGE = 'hvkbr0'
BRIDGE_ADDRESS = {'kvm-a': '10.77.7.1/24', 'kvm-b': '10.77.8.1/24'}
MAC = '52:54:00:4a:07:0a'
ADDRESS = '10.77.7.10'
HOSTNAME = 'inv-a-guest'
MIGRATE_BOOK = os.path.join(REPO, 'playbooks', 'migrate.yml')


@pytest.fixture(scope='module')
def lab_guests(lab):
    """{guest: node}, each guest started on its node; and the nodes' inventory (with TLS)."""
    for program in ('qemu-system-x86_64', 'socat', 'nasm', 'xorriso'):
        require_binary(program)
    pki = Pki()
    inventory = inventory_with_tls(lab, pki)
    shared = os.path.join(lab.base, 'shared-inv-%d' % os.getpid())
    os.makedirs(shared, exist_ok=True)
    image = build_image('normal')
    with open(lab.client_key + '.pub') as handle:
        key = handle.read().strip()
    console = None
    try:
        for node, address in BRIDGE_ADDRESS.items():
            lab.run(node, [lab.ip, 'link', 'del', BRIDGE])     # one an interrupted run left
            for argv in (['link', 'add', BRIDGE, 'type', 'bridge'], ['addr', 'add', address, 'dev', BRIDGE],
                         ['link', 'set', BRIDGE, 'up']):
                done = lab.run(node, [lab.ip] + argv)
                assert done.returncode == 0, done.stderr
        kernel, initrd = build_linux_guest('normal')
        host = lab.host('kvm-a')
        console = SerialRecorder(os.path.join(host.run_dir, 'ctrl', 'inv-a.serial'))
        started = run_adhoc(inventory, 'hvops.kvm.kvm_instance', {
            'name': 'inv-a', 'run_dir': host.run_dir, 'state_dir': host.state_dir, 'memory': MEMORY['inv-a'],
            'accel': 'tcg', 'machine': 'pc', 'state': 'started', 'kernel': kernel, 'initrd': initrd,
            'root': '/dev/ram0', 'guest_agent': True, 'nics': [{'type': 'bridge', 'bridge': BRIDGE, 'mac': MAC}],
            'cloud_init': {'hostname': HOSTNAME, 'ssh_authorized_keys': [key], 'network_config': {
                'version': 2, 'ethernets': {'nic0': {'match': {'macaddress': MAC}, 'set-name': 'eth0',
                                                     'addresses': [ADDRESS + '/24']}}}}}, host='kvm-a')
        assert started.rc == 0, started.result(host='kvm-a')
        disk = os.path.join(shared, 'inv-b.img')
        shutil.copyfile(image, disk)
        give_to_qemu(disk)
        host = lab.host('kvm-b')
        started = run_adhoc(inventory, 'hvops.kvm.kvm_instance', {
            'name': 'inv-b', 'run_dir': host.run_dir, 'state_dir': host.state_dir, 'memory': MEMORY['inv-b'],
            'accel': 'tcg', 'machine': 'pc', 'state': 'started',
            'disks': [{'path': disk, 'interface': 'ide'}]}, host='kvm-b')
        assert started.rc == 0, started.result(host='kvm-b')
        lines = console.wait_for('hvops-linux-guest ready')
        assert 'sshd: started' in lines and 'cloud-init: address=eth0 %s/24' % ADDRESS in lines, lines
        yield {'guests': dict(GUESTS), 'inventory': inventory, 'dir': shared}
    finally:
        clear_guests(lab, GUESTS)
        if console is not None:
            console.stop()
        for node in BRIDGE_ADDRESS:
            # The taps the killed QEMUs leave, and the bridges.
            links = lab.run(node, [lab.ip, '-o', 'link', 'show', 'type', 'tun']).stdout
            for tap in [line.split(':')[1].strip().split('@')[0] for line in links.splitlines() if ':' in line]:
                lab.run(node, [lab.ip, 'link', 'del', tap])
            lab.run(node, [lab.ip, 'link', 'del', BRIDGE])
        shutil.rmtree(shared, ignore_errors=True)
        pki.destroy()


def write_config(directory, name, **options):
    path = os.path.join(directory, name)
    config = {'plugin': 'hvops.kvm.guests', 'nodes': 'kvm_lab'}
    config.update(options)
    with open(path, 'w') as handle:
        json.dump(config, handle)    # JSON is YAML
    return path


def inventory_list(sources, env=None):
    """ansible-inventory -i SOURCE... --list: (data, stderr)."""
    argv = [os.path.join(VENV_BIN, 'ansible-inventory')]
    for source in sources:
        argv += ['-i', source]
    proc = subprocess.run(argv + ['--list'], capture_output=True, text=True, env=ansible_env(env), timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return plain(json.loads(proc.stdout)), proc.stderr


def plain(value):
    """The --list output with the strings the plugin made untrusted (ansible-core 2.19 prints
    them as {"__ansible_unsafe": ...} in its legacy profile) as plain strings."""
    if isinstance(value, dict):
        if list(value) == ['__ansible_unsafe']:
            return value['__ansible_unsafe']
        return dict((key, plain(item)) for key, item in value.items())
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def members(data, group):
    return sorted(data.get(group, {}).get('hosts', []))


def assert_listed(data, placement, lab):
    """Every guest of placement ({guest: node}) under its node, running, with its variables."""
    hostvars = data['_meta']['hostvars']
    for node in ('kvm-a', 'kvm-b'):
        expected = sorted(g for g, n in placement.items() if n == node)
        assert members(data, 'kvm_node_' + node.replace('-', '_')) == expected, data
    assert members(data, 'kvm_state_running') == sorted(placement)
    assert sorted(data['kvm_guests']['hosts']) == sorted(placement)
    for guest, node in placement.items():
        variables = hostvars[guest]
        host = lab.host(node)
        assert variables['kvm_guest_node'] == node
        assert variables['kvm_guest_state'] == 'running'
        assert variables['kvm_guest_memory_mb'] == MEMORY[guest] and variables['kvm_guest_vcpus'] == 1
        assert variables['kvm_guest_run_dir'] == host.run_dir
        assert variables['kvm_guest_state_dir'] == host.state_dir
        assert variables['kvm_guest_accel'] == 'tcg' and variables['kvm_guest_user'] == 'hvops-qemu'
        pids = [pid for pid, argv in qemu_processes_under(host.run_dir)
                if argv[argv.index('-pidfile') + 1].endswith('/%s.pid' % guest)]
        assert variables['kvm_guest_pid'] == pids[0]
        assert variables['kvm_guest_also_on'] == []
        if guest == 'inv-a':
            # The agent's address of the guest, and what else the agent said.
            assert variables['ansible_host'] == ADDRESS, variables
            assert variables['kvm_guest_agent_status'] == 'ok' and variables['kvm_guest_hostname'] == HOSTNAME
            assert ADDRESS in variables['kvm_guest_addresses'] and '127.0.0.1' not in variables['kvm_guest_addresses']
            assert variables['kvm_guest_os']['id'] == 'hvops-test'
            assert [k for k in variables if k.startswith('ansible_')] == ['ansible_host']
        else:
            # No agent: no address, and no ansible_host invented.
            assert variables['kvm_guest_agent_status'] == 'off'
            assert 'ansible_host' not in variables and variables['kvm_guest_addresses'] == []
            assert not [k for k in variables if k.startswith('ansible_')]


def gather_config(lab_guests, name='gather.guests.yml', **options):
    options.setdefault('nodes_inventory', [lab_guests['inventory']])
    return write_config(lab_guests['dir'], name, source='gather', **options)


def test_facts_source_reads_the_fact_cache(lab, lab_guests, tmp_path):
    cache = {'ANSIBLE_CACHE_PLUGIN': 'ansible.builtin.jsonfile',
             'ANSIBLE_CACHE_PLUGIN_CONNECTION': str(tmp_path / 'facts')}
    gathered = run_adhoc(lab_guests['inventory'], 'hvops.kvm.kvm_node_facts', {
        'gather_subset': ['instances', 'agent'], 'run_dir': '{{ kvm_run_dir }}', 'state_dir': '{{ kvm_state_dir }}'},
        host='kvm_lab', env=cache)
    assert gathered.rc == 0, gathered
    cached = dict((name[-len('kvm-a'):], name) for name in os.listdir(str(tmp_path / 'facts')))
    assert sorted(cached) == ['kvm-a', 'kvm-b'], cached     # ansible-core 2.19 adds a prefix
    config = write_config(lab_guests['dir'], 'facts.guests.yml')
    data, stderr = inventory_list([lab_guests['inventory'], config], env=cache)
    assert_listed(data, lab_guests['guests'], lab)
    assert members(data, 'kvm_lab') == ['kvm-a', 'kvm-b']      # the nodes stay as they were
    assert 'WARNING' not in stderr, stderr

    # Without cached facts for a node: a warning naming it, the other node's guest listed.
    os.unlink(str(tmp_path / 'facts' / cached['kvm-b']))
    data, stderr = inventory_list([lab_guests['inventory'], config], env=cache)
    assert sorted(data['kvm_guests']['hosts']) == ['inv-a']
    assert 'node kvm-b: its guests are left out: no kvm_node facts' in ' '.join(stderr.split()), stderr


def test_gather_source_reads_the_nodes(lab, lab_guests):
    data, stderr = inventory_list([gather_config(lab_guests)])
    print('\ninv-a as listed: %s' % json.dumps(data['_meta']['hostvars']['inv-a'], sort_keys=True))
    assert_listed(data, lab_guests['guests'], lab)
    assert 'WARNING' not in stderr, stderr
    assert 'kvm-a' not in data['_meta']['hostvars']     # the nodes are not hosts of this source


def test_states_filters_and_constructed_options(lab, lab_guests):
    config = gather_config(lab_guests, 'filtered.guests.yml', states=['running'], group_by_state=False,
                           filters=["kvm_guest_node == 'kvm-b'"], compose={'guest_mib': 'kvm_guest_memory_mb * 1'},
                           keyed_groups=[{'key': 'kvm_guest_accel', 'prefix': 'accel'}])
    data, _stderr = inventory_list([config])
    assert sorted(data['kvm_guests']['hosts']) == ['inv-b']
    assert members(data, 'accel_tcg') == ['inv-b']
    assert 'kvm_state_running' not in data
    # (ansible-core before 2.19 templates compose to text unless jinja2_native is on.)
    assert int(data['_meta']['hostvars']['inv-b']['guest_mib']) == 32


def test_ansible_reaches_a_guest_through_the_inventory(lab, lab_guests):
    """ansible -m raw to inv-a at the address its agent gave, over SSH to its
    dropbear (the key came from its cloud-init seed), through a ProxyCommand
    into its node's namespace that the configuration composes from the node."""
    namespaces = dict((host.name, host.namespace) for host in lab.hosts)
    proxy = "'-o ProxyCommand=\"%s netns exec ' ~ %s[kvm_guest_node] ~ ' %s STDIO TCP:%%h:%%p\"'" % (
        lab.ip, json.dumps(namespaces), lab.socat)
    config = gather_config(lab_guests, 'reach.guests.yml', compose={
        'ansible_ssh_common_args': proxy + " ~ ' -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'",
        'ansible_user': "'root'", 'ansible_ssh_private_key_file': json.dumps(lab.client_key).replace('"', "'")})
    proc = subprocess.run([os.path.join(VENV_BIN, 'ansible'), '-i', config, 'kvm_node_kvm_a', '-m', 'raw',
                           '-a', 'hostname; cat /proc/sys/kernel/osrelease'],
                          capture_output=True, text=True, env=ansible_env(), timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hosts = json.loads(proc.stdout)['plays'][0]['tasks'][0]['hosts']    # the json callback (ansible_env)
    assert sorted(hosts) == ['inv-a'] and hosts['inv-a']['rc'] == 0, hosts
    said = hosts['inv-a']['stdout_lines']
    assert len(said) == 2 and said[0] == HOSTNAME and said[1].endswith('-cloud-amd64'), said
    print('\nansible -m raw through the inventory: %s' % hosts['inv-a']['stdout_lines'])


def test_an_unreachable_node_warns_and_the_other_is_listed(lab, lab_guests):
    with open(lab_guests['inventory']) as handle:
        inventory = json.load(handle)
    hosts = inventory['all']['children']['kvm_lab']['hosts']
    # kvm-b's ProxyCommand goes into a namespace that does not exist.
    hosts['kvm-b']['ansible_ssh_common_args'] = hosts['kvm-b']['ansible_ssh_common_args'].replace(
        lab.host('kvm-b').namespace, 'hvk-nowhere')
    # ...and no ssh master of an earlier run is reused for it.
    hosts['kvm-b']['ansible_control_path_dir'] = os.path.join(lab_guests['dir'], 'cp-broken')
    broken = os.path.join(lab_guests['dir'], 'broken-inventory.json')
    with open(broken, 'w') as handle:
        json.dump(inventory, handle)
    data, stderr = inventory_list([gather_config(lab_guests, 'broken.guests.yml', nodes_inventory=[broken],
                                                 timeout=20)])
    assert sorted(data['kvm_guests']['hosts']) == ['inv-a']
    assert 'node kvm-b: its guests are left out: unreachable' in ' '.join(stderr.split()), stderr
    assert 'kvm-a' not in stderr

    # strict_nodes: the run fails and names the node.
    config = gather_config(lab_guests, 'strict.guests.yml', nodes_inventory=[broken], timeout=20, strict_nodes=True)
    proc = subprocess.run([os.path.join(VENV_BIN, 'ansible-inventory'), '-i', config, '--list'],
                          capture_output=True, text=True, env=ansible_env({'ANSIBLE_INVENTORY_UNPARSED_FAILED': '1'}),
                          timeout=300, check=False)
    assert proc.returncode != 0 and 'node kvm-b' in proc.stderr, proc.stderr


def test_a_migrated_guest_shows_under_its_new_node(lab, lab_guests):
    """Last in the module: inv-a moves to kvm-b and stays there."""
    play = run_playbook(lab_guests['inventory'], MIGRATE_BOOK,
                        extra_vars={'instance': 'inv-a', 'source': 'kvm-a', 'target': 'kvm-b'})
    assert play.rc == 0, play
    lab_guests['guests']['inv-a'] = 'kvm-b'
    data, stderr = inventory_list([gather_config(lab_guests)])
    assert_listed(data, {'inv-a': 'kvm-b', 'inv-b': 'kvm-b'}, lab)
    assert members(data, 'kvm_node_kvm_a') == []
    assert 'more than one node' not in stderr, stderr
