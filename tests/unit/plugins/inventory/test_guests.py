"""The pure logic of the hvops.kvm.guests inventory plugin: what it keeps of a
node's facts, which node a guest seen twice is listed on, which address
becomes ansible_host, and the hosts, groups and variables it makes (on a real
InventoryData, from hand-made facts)."""
import ipaddress

import pytest

from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

try:
    from ansible.template import trust_as_template as trusted
except ImportError:     # before ansible-core 2.19 every string is a template
    def trusted(text):
        return text

from ansible_collections.hvops.kvm.plugins.inventory import guests
from ansible_collections.hvops.kvm.plugins.inventory.guests import (
    choose_address, clean_agent, clean_instance, clean_node_facts, flat_addresses, resolve_conflicts)


def agent(*interfaces, status='ok'):
    return {'status': status, 'error': None, 'hostname': 'web1',
            'os': {'id': 'debian', 'name': 'Debian GNU/Linux', 'pretty_name': 'Debian 12', 'version': '12',
                   'version_id': '12', 'kernel_release': '6.1.0', 'machine': 'x86_64'},
            'interfaces': [{'name': name, 'hardware_address': '52:54:00:12:34:56',
                            'addresses': [{'address': a, 'prefix': p, 'family': 'ipv6' if ':' in a else 'ipv4'}
                                          for a, p in addresses]}
                           for name, addresses in interfaces]}


def instance(name, state='running', **extra):
    entry = {'name': name, 'state': state, 'pid': 4242, 'memory_mb': 1024, 'vcpus': 2, 'uptime_s': 60,
             'machine': 'pc-i440fx-7.2', 'accel': 'kvm', 'defined': True, 'user': 'hvops-qemu', 'autostart': False}
    entry.update(extra)
    return entry


def node_facts(*entries):
    return {'run_dir': '/run/hvops-kvm', 'state_dir': '/var/lib/hvops-kvm',
            'instances': dict((entry['name'], entry) for entry in entries)}


# -- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['../etc', '.hidden', '', 'a' * 64, 'a b', 'x\n', 'ünï'])
def test_a_name_outside_the_rule_is_left_out(name):
    guest, why = clean_instance(name, instance(name))
    assert guest is None and why


def test_a_non_string_name_and_bad_entries_are_left_out_with_reasons():
    node, problems = clean_node_facts({'run_dir': '/r', 'instances': {
        7: instance('x'), 'ok': instance('ok'), 'list': ['x'], 'odd': instance('odd', state='rm -rf'),
        'other': instance('else'), 'nostate': {'name': 'nostate'}}})
    assert sorted(node['instances']) == ['ok']
    assert len(problems) == 5
    assert any('unknown state' in p and 'odd' in p for p in problems)
    assert any('another instance' in p for p in problems)


@pytest.mark.parametrize('facts', [None, [], 'x', {'run_dir': '/r'}, {'instances': []},
                                   {'instances': dict(('g%d' % i, {}) for i in range(guests.MAX_INSTANCES + 1))}])
def test_facts_that_are_not_node_facts_are_refused(facts):
    with pytest.raises(ValueError):
        clean_node_facts(facts)


def test_fields_of_the_wrong_type_or_size_become_null():
    guest, _why = clean_instance('vm', instance('vm', pid=True, memory_mb='1024', vcpus=-1, uptime_s=2 ** 60,
                                                machine='x' * 65, accel=['kvm'], user='evil\x1b[31m', defined='yes'))
    assert guest['pid'] is None and guest['memory_mb'] is None and guest['vcpus'] is None
    assert guest['uptime_s'] is None and guest['machine'] is None and guest['accel'] is None
    assert guest['user'] is None and guest['defined'] is None
    assert guest['agent'] is None    # no agent key: instances gathered without the agent


def test_node_paths_must_be_absolute_plain_strings():
    node, _problems = clean_node_facts({'run_dir': 'relative', 'state_dir': '/ok\0no', 'instances': {}})
    assert node['run_dir'] is None and node['state_dir'] is None


def test_the_agent_facts_are_checked_field_by_field():
    raw = agent(('eth0', [('10.0.0.5', 24), ('not-an-ip', 24), ('10.0.0.6', 99), ('fe80::1', 64)]))
    raw['interfaces'][0]['addresses'].append({'address': '10.0.0.7', 'prefix': 8, 'family': 'ipv6'})
    raw['interfaces'].append('junk')
    raw['interfaces'].append({'name': None})
    raw['os']['id'] = {'nested': 1}
    raw['os']['extra'] = 'dropped'
    raw['hostname'] = 'h' * 300
    cleaned = clean_agent(raw)
    assert cleaned['hostname'] is None
    assert cleaned['os']['id'] is None and 'extra' not in cleaned['os']
    assert cleaned['os']['pretty_name'] == 'Debian 12'
    assert len(cleaned['interfaces']) == 1
    assert cleaned['interfaces'][0]['addresses'] == [
        {'address': '10.0.0.5', 'prefix': 24, 'family': 'ipv4'},
        {'address': '10.0.0.6', 'prefix': None, 'family': 'ipv4'},
        {'address': 'fe80::1', 'prefix': 64, 'family': 'ipv6'}]
    assert clean_agent({'status': 'hacked'}) is None and clean_agent('ok') is None
    assert clean_agent({'status': 'off'})['interfaces'] == []
    assert clean_agent({'status': 'down', 'error': 'the guest is stopped'})['status'] == 'down'


def test_sizes_are_bounded():
    many = agent(*[('eth%d' % i, [('10.0.%d.%d' % (i, j), 24) for j in range(1, 100)]) for i in range(100)])
    cleaned = clean_agent(many)
    assert len(cleaned['interfaces']) == guests.MAX_INTERFACES
    assert all(len(i['addresses']) == guests.MAX_ADDRESSES for i in cleaned['interfaces'])


# -- a guest on several nodes -------------------------------------------------------------------------
def nodes_with(**placements):
    """nodes_with(a={'vm': 'running'}, b={'vm': 'stopped'})"""
    return dict((node, clean_node_facts(node_facts(*[instance(n, s) for n, s in found.items()]))[0])
                for node, found in placements.items())


@pytest.mark.parametrize('a, b, winner', [
    ('stopped', 'running', 'b'),      # a stale definition beside the running guest
    ('migrating', 'incoming', 'a'),   # mid-migration: the source runs it
    ('migrated', 'running', 'b'),     # just moved: the target runs it
    ('paused', 'stopped', 'a'),
    ('crashed', 'stopped', 'a'),
    ('shutdown', 'crashed', 'a'),
    ('stopped', 'stopped', 'a'),      # same rank: the first node name
    ('running', 'running', 'a'),
])
def test_the_node_where_the_guest_lives_wins(a, b, winner):
    for order in (('a', 'b'), ('b', 'a')):
        nodes = nodes_with(**{order[0]: {'vm': a if order[0] == 'a' else b},
                              order[1]: {'vm': a if order[1] == 'a' else b}})
        node, guest, others = resolve_conflicts(nodes)['vm']
        assert node == winner and others == [{'a': 'b', 'b': 'a'}[winner]]
        assert guest['state'] == (a if winner == 'a' else b)


def test_a_guest_on_one_node_has_no_others():
    resolved = resolve_conflicts(nodes_with(a={'vm1': 'running'}, b={'vm2': 'stopped'}))
    assert resolved == {'vm1': ('a', resolved['vm1'][1], []), 'vm2': ('b', resolved['vm2'][1], [])}


# -- addresses --------------------------------------------------------------------------------------
def cleaned_agent(*interfaces):
    return clean_agent(agent(*interfaces))


def networks(*cidrs):
    return [ipaddress.ip_network(c) for c in cidrs]


def test_loopback_and_link_local_are_never_chosen():
    found = cleaned_agent(('lo', [('127.0.0.1', 8), ('::1', 128)]), ('eth0', [('fe80::5054:ff:fe12:3456', 64),
                                                                              ('169.254.3.3', 16)]))
    assert choose_address(found) is None
    assert flat_addresses(found) == ['fe80::5054:ff:fe12:3456', '169.254.3.3']


def test_no_agent_no_address():
    assert choose_address(None) is None
    assert choose_address(clean_agent({'status': 'no-answer', 'error': 'timed out'})) is None
    assert flat_addresses(None) == []


def test_ipv4_before_ipv6_by_default_then_the_agents_order():
    found = cleaned_agent(('eth0', [('2001:db8::5', 64), ('192.0.2.7', 24), ('192.0.2.8', 24)]))
    assert choose_address(found) == '192.0.2.7'
    assert choose_address(found, family='ipv6') == '2001:db8::5'
    assert choose_address(cleaned_agent(('eth0', [('2001:db8::5', 64)])), family='ipv4') is None


def test_networks_restrict_and_order():
    found = cleaned_agent(('eth0', [('192.0.2.7', 24)]), ('eth1', [('10.1.2.3', 8), ('172.16.0.4', 12)]))
    assert choose_address(found, networks=networks('172.16.0.0/12', '10.0.0.0/8')) == '172.16.0.4'
    assert choose_address(found, networks=networks('10.0.0.0/8')) == '10.1.2.3'
    assert choose_address(found, networks=networks('198.51.100.0/24')) is None


def test_interface_patterns_restrict_and_order():
    found = cleaned_agent(('eth0', [('192.0.2.7', 24)]), ('ens3', [('10.1.2.3', 8)]), ('docker0', [('172.17.0.1', 16)]))
    assert choose_address(found, interfaces=['ens*', 'eth0']) == '10.1.2.3'
    assert choose_address(found, interfaces=['eth*']) == '192.0.2.7'
    assert choose_address(found, interfaces=['wl*']) is None


# -- the plugin on an inventory -------------------------------------------------------------------------
class Plugin(guests.InventoryModule):
    """The plugin with options set directly and the nodes' facts given."""

    def __init__(self, raw, **options):
        super().__init__()
        self.inventory = InventoryData()
        self._load_name = self.NAME
        self.templar = Templar(loader=DataLoader())
        self._raw = raw
        self._options = dict((name, spec.get('default')) for name, spec in self._defaults().items())
        self._options.update(options)
        # Conditions read from a configuration file are trusted templates (ansible-core 2.19).
        self._options['filters'] = [trusted(f) for f in self._options['filters']]
        self.warnings = []

    @staticmethod
    def _defaults():
        import yaml
        return yaml.safe_load(guests.DOCUMENTATION)['options'] | {
            'compose': {'default': {}}, 'groups': {'default': {}}, 'keyed_groups': {'default': []},
            'strict': {'default': False}, 'use_extra_vars': {'default': False},
            'leading_separator': {'default': True}}

    def get_option(self, option, hostvars=None):
        return self._options[option]

    def _gather(self):
        return self._raw

    def run(self):
        preference = self._options['address_preference']
        self._preference = {'networks': guests.parse_networks(preference.get('networks')),
                            'interfaces': preference.get('interfaces') or [],
                            'family': preference.get('family') or 'any'}
        self._populate(self._read_nodes('gather'), self._options['prefix'])
        return self.inventory


@pytest.fixture
def warnings(monkeypatch):
    seen = []
    monkeypatch.setattr(guests.display, 'warning', seen.append)
    return seen


def two_nodes():
    return {
        'kvm-a': node_facts(instance('web', agent=agent(('eth0', [('10.0.0.5', 24), ('192.0.2.5', 24)]))),
                            instance('db', state='stopped', pid=None)),
        'kvm-b.example.com': node_facts(instance('db', state='running'), instance('batch', state='paused')),
    }


def test_hosts_groups_and_variables(warnings):
    inventory = Plugin(two_nodes()).run()
    assert sorted(inventory.hosts) == ['batch', 'db', 'web']
    members = dict((name, sorted(h.name for h in group.get_hosts())) for name, group in inventory.groups.items())
    assert members['kvm_guests'] == ['batch', 'db', 'web']
    assert members['kvm_node_kvm_a'] == ['web']
    assert members['kvm_node_kvm_b_example_com'] == ['batch', 'db']
    assert members['kvm_state_running'] == ['db', 'web']
    assert members['kvm_state_paused'] == ['batch']
    web = inventory.get_host('web').vars
    assert web['ansible_host'] == '10.0.0.5'
    assert web['kvm_guest_node'] == 'kvm-a' and web['kvm_guest_state'] == 'running'
    assert web['kvm_guest_memory_mb'] == 1024 and web['kvm_guest_vcpus'] == 2 and web['kvm_guest_pid'] == 4242
    assert web['kvm_guest_addresses'] == ['10.0.0.5', '192.0.2.5']
    assert web['kvm_guest_hostname'] == 'web1' and web['kvm_guest_os']['id'] == 'debian'
    assert web['kvm_guest_run_dir'] == '/run/hvops-kvm'
    others = sorted(k for k in web if not k.startswith('kvm_guest_'))
    assert others == ['ansible_host', 'inventory_dir', 'inventory_file']
    db = inventory.get_host('db').vars
    assert db['kvm_guest_node'] == 'kvm-b.example.com' and db['kvm_guest_also_on'] == ['kvm-a']
    assert 'ansible_host' not in db      # no agent: no address, none invented
    assert any('db is on more than one node' in w and 'kvm-a (stopped)' in w for w in warnings)


def test_an_unreadable_node_warns_and_the_rest_is_listed(warnings):
    raw = two_nodes()
    raw['kvm-a'] = guests.NodeError('unreachable: ssh: connect to host timed out')
    inventory = Plugin(raw).run()
    assert sorted(inventory.hosts) == ['batch', 'db']
    assert any('node kvm-a' in w and 'unreachable' in w for w in warnings)


def test_strict_nodes_makes_it_an_error():
    raw = two_nodes()
    raw['kvm-a'] = {'instances': 'nope'}
    with pytest.raises(guests.AnsibleError, match='kvm-a'):
        Plugin(raw, strict_nodes=True).run()


def test_states_and_filters_select(warnings):
    inventory = Plugin(two_nodes(), states=['running'], filters=['kvm_guest_node == "kvm-a"']).run()
    assert sorted(inventory.hosts) == ['web']


def test_a_filter_that_cannot_be_evaluated_leaves_the_guest_out_or_fails_when_strict(warnings):
    assert sorted(Plugin(two_nodes(), filters=['kvm_guest_nothing.x > 1']).run().hosts) == []
    with pytest.raises(guests.AnsibleParserError):
        Plugin(two_nodes(), filters=['kvm_guest_nothing.x > 1'], strict=True).run()


def test_groups_can_be_turned_off_and_renamed(warnings):
    inventory = Plugin(two_nodes(), group='', group_by_state=False, node_group_prefix='on_').run()
    assert sorted(g for g in inventory.groups if g not in ('all', 'ungrouped')) == ['on_kvm_a', 'on_kvm_b_example_com']


def test_a_node_cannot_name_variables_or_connection_settings(warnings):
    raw = {'kvm-a': node_facts(instance('vm', ansible_host='6.6.6.6', ansible_connection='local',
                                        kvm_guest_node='forged', agent=dict(agent(), ansible_user='root')))}
    raw['kvm-a']['ansible_ssh_common_args'] = '-o ProxyCommand=evil'
    variables = Plugin(raw).run().get_host('vm').vars
    assert 'ansible_connection' not in variables and 'ansible_user' not in variables
    assert 'ansible_host' not in variables and variables['kvm_guest_node'] == 'kvm-a'


def test_address_preference_option(warnings):
    inventory = Plugin(two_nodes(), address_preference={'networks': ['192.0.2.0/24']}).run()
    assert inventory.get_host('web').vars['ansible_host'] == '192.0.2.5'


def test_verify_file(tmp_path):
    plugin = guests.InventoryModule()
    for name, ok in (('guests.yml', True), ('prod.guests.yaml', True), ('hvops_kvm.yml', True),
                     ('hvops_kvm.yaml', True), ('nodes.yml', False), ('guests.json', False)):
        path = tmp_path / name
        path.write_text('plugin: hvops.kvm.guests\n')
        assert plugin.verify_file(str(path)) is ok, name
