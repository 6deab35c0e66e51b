# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hvops.kvm.guests inventory plugin: one host per guest of the KVM nodes,
from their kvm_node facts (the fact cache, or gathered by the plugin)."""

from __future__ import annotations

DOCUMENTATION = r'''
name: guests
short_description: The guests of hvops.kvm nodes as inventory hosts
version_added: 0.2.0
author:
  - hvops.kvm developers (!UNKNOWN)
description:
  - Makes one inventory host per guest of the QEMU/KVM nodes managed with hvops.kvm, named
    after the guest, with its node, state, memory, vCPUs and the guest agent's facts as host
    variables under O(prefix), groups by node and by state, and C(ansible_host) from the
    addresses the guest agent reports.
  - What it knows of the guests is the C(kvm_node) fact of M(hvops.kvm.kvm_node_facts), read
    in one of two ways (O(source)). V(facts) reads it from Ansible's fact cache for the
    O(nodes) of an inventory loaded before this one in the same run (C(-i nodes.yml -i
    guests.yml)), filled by an earlier run of M(hvops.kvm.kvm_node_facts); it connects to
    nothing. V(gather) runs M(hvops.kvm.kvm_node_facts) on the nodes itself - one
    C(ansible) ad hoc run against O(nodes_inventory), its nodes in parallel (O(forks)), each
    over its own connection.
  - A node that cannot be read (no cached facts, unreachable, a failed or timed out run, facts
    that are not what M(hvops.kvm.kvm_node_facts) returns) is named in a warning and its
    guests are left out; the other nodes' guests are listed. With O(strict_nodes) it is an
    error instead.
  - Everything a node returns is untrusted. Every field is checked for its type and size
    before it becomes a host or a variable; a guest whose name does not follow the
    collection's rule (1 to 63 letters, digits, C(.), C(_) or C(-), starting with a letter or
    digit) or whose state is not one M(hvops.kvm.kvm_node_facts) knows is left out with a
    warning, and a field of the wrong type is dropped (null). A node's data never names a
    variable - the plugin sets a fixed set of variables, all under O(prefix), and of the
    connection variables only C(ansible_host), which it computes. Strings from nodes are
    marked unsafe, so they are never templated.
  - "A guest seen on more than one node (in the middle of a live migration, a copy left
    after one, a stale definition) becomes one host. The node where it is live wins:
    C(running), C(paused) or C(migrating) (the source of a migration under way); then a QEMU
    in another state (C(incoming), C(shutdown), C(unknown), C(migrated)); then C(crashed),
    then C(stopped) (a definition only). Between nodes of the same rank the first node name
    in sort order wins. Every such guest is named in a warning, and the other nodes are in
    the variable C(<prefix>also_on)."
extends_documentation_fragment:
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
options:
  plugin:
    description: The name of this plugin; this file is for it.
    required: true
    choices: [hvops.kvm.guests]
    type: str
  source:
    description:
      - Where the nodes' facts come from.
      - V(facts) - from the fact cache (C(fact_caching) must be set, for example to
        V(ansible.builtin.jsonfile)), for the O(nodes) hosts of the inventory sources given
        before this one. No connection is made; facts are as old as the last run of
        M(hvops.kvm.kvm_node_facts) with C(gather_subset) including C(instances) (and
        C(agent) for the guest agent's facts).
      - V(gather) - run M(hvops.kvm.kvm_node_facts) on the O(nodes) hosts of
        O(nodes_inventory) now, as C(ansible -m hvops.kvm.kvm_node_facts) in a subprocess.
    type: str
    choices: [facts, gather]
    default: facts
  nodes:
    description:
      - The nodes, as an Ansible host pattern (a group name, host names, C(kvm_nodes:!kvm3)).
      - With O(source=facts) it is matched against the inventory loaded before this source;
        with O(source=gather) it is the pattern of the C(ansible) run on O(nodes_inventory).
    type: str
    default: kvm_nodes
  nodes_inventory:
    description:
      - The inventory sources of the nodes for O(source=gather) (paths, relative to this
        file's directory). Required with O(source=gather).
      - The nodes' host variables C(kvm_run_dir) and C(kvm_state_dir), where set, are given to
        M(hvops.kvm.kvm_node_facts) as its C(run_dir) and C(state_dir).
    type: list
    elements: path
  gather_subset:
    description:
      - The C(gather_subset) of the M(hvops.kvm.kvm_node_facts) run with O(source=gather).
      - C(agent) asks each running guest's agent (addresses, host name, OS) and is needed for
        C(ansible_host).
    type: list
    elements: str
    default: [instances, agent]
  forks:
    description: How many nodes O(source=gather) reads at once.
    type: int
    default: 10
  timeout:
    description:
      - Seconds one node may take with O(source=gather) - connecting and running
        M(hvops.kvm.kvm_node_facts) (the task timeout of the C(ansible) run). A node slower
        than that counts as unreachable.
      - The whole run is stopped after twice this, plus 30 s for Ansible to start.
    type: int
    default: 60
  strict_nodes:
    description:
      - Fail when a node cannot be read, instead of warning and leaving its guests out.
    type: bool
    default: false
  prefix:
    description:
      - Prefix of every host variable the plugin sets (C(ansible_host) aside).
      - "The default keeps clear of the node variables of the collection's roles
        (C(kvm_run_dir), C(kvm_node), ...)."
    type: str
    default: kvm_guest_
  states:
    description:
      - Only guests in one of these states are listed (for example V([running, paused])).
        Empty lists all.
    type: list
    elements: str
    default: []
  filters:
    description:
      - Jinja2 conditions (without C({{ }})) over the guest's host variables; a guest is listed
        only when all are true. Evaluated before O(compose), O(groups) and O(keyed_groups).
      - A condition that fails to evaluate leaves the guest out, or with O(strict) is an error.
    type: list
    elements: str
    default: []
  group:
    description: A group of all listed guests; empty for none.
    type: str
    default: kvm_guests
  group_by_node:
    description: Put each guest in the group O(node_group_prefix) + its node's name (sanitized).
    type: bool
    default: true
  node_group_prefix:
    description: Prefix of the per-node groups.
    type: str
    default: kvm_node_
  group_by_state:
    description: Put each guest in the group O(state_group_prefix) + its state.
    type: bool
    default: true
  state_group_prefix:
    description: Prefix of the per-state groups.
    type: str
    default: kvm_state_
  address_preference:
    description:
      - Which of the addresses the guest agent reports becomes C(ansible_host).
      - Loopback, link-local, multicast and unspecified addresses are never used. A guest
        without a usable address (no agent, no answer, none matching) gets no C(ansible_host)
        at all; O(compose) can still set one.
    type: dict
    default: {}
    suboptions:
      networks:
        description:
          - Only addresses in one of these networks (CIDR); the earlier network wins.
            Empty allows any.
        type: list
        elements: str
        default: []
      interfaces:
        description:
          - Only addresses of interfaces matching one of these shell patterns (V(eth0),
            V(ens*)); the earlier pattern wins. Empty allows any.
        type: list
        elements: str
        default: []
      family:
        description: V(ipv4) or V(ipv6) only, or V(any) (IPv4 before IPv6).
        type: str
        choices: [ipv4, ipv6, any]
        default: any
notes:
  - "The facts must come from M(hvops.kvm.kvm_node_facts) with C(gather_subset) including
    C(instances); C(agent) adds the guest agent's facts (C(ansible_host) needs them)."
  - With O(source=gather) the plugin runs C(python -m ansible adhoc) of the ansible-core it
    runs in (an argument list, no shell), with the collection's C(hvops.kvm.node_results)
    stdout callback printing the results as JSON. A subprocess rather than Ansible's Python
    API - it keeps the running C(ansible-inventory) or C(ansible-playbook) free of a second
    task queue, forks and global state, takes the operator's Ansible configuration
    (connection settings, C(become)) as any C(ansible) run does, and can be stopped whole
    after O(timeout).
  - Node names become part of group names; they are sanitized as Ansible's
    C(TRANSFORM_INVALID_GROUP_CHARS) says.
seealso:
  - module: hvops.kvm.kvm_node_facts
  - plugin: ansible.builtin.constructed
    plugin_type: inventory
'''

EXAMPLES = r'''
# guests.yml - the guests of the nodes in nodes.yml, from the fact cache:
#   ansible kvm_nodes -i nodes.yml -m hvops.kvm.kvm_node_facts -a gather_subset=instances,agent
#   ansible-inventory -i nodes.yml -i guests.yml --graph
# with fact caching on (ansible.cfg):
#   [defaults]
#   fact_caching = ansible.builtin.jsonfile
#   fact_caching_connection = ~/.cache/ansible-facts
plugin: hvops.kvm.guests
nodes: kvm_nodes

---
# The plugin reads the nodes itself, every node at once, and prefers addresses of 10.0.0.0/8:
plugin: hvops.kvm.guests
source: gather
nodes_inventory: [nodes.yml]
nodes: kvm_nodes
timeout: 30
address_preference:
  networks: [10.0.0.0/8]
  family: ipv4
states: [running, paused]
filters:
  - kvm_guest_memory_mb >= 1024
keyed_groups:
  - key: kvm_guest_os.id | default('unknown')
    prefix: os
compose:
  ansible_user: "'admin'"
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/hvops-guests
cache_timeout: 60
'''

import fnmatch
import hashlib
import ipaddress
import json
import os
import subprocess
import sys

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.display import Display
from ansible.utils.unsafe_proxy import wrap_var

from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._layout import validate_name

try:
    from ansible.template import trust_as_template  # noqa: F401 pylint: disable=unused-import
    # ansible-core 2.19 and later template no string that is not marked trusted.

    def untrusted(value):
        return value
except ImportError:
    untrusted = wrap_var

display = Display()

# Every state kvm_node_facts reports, by rank for a guest seen on several nodes (lower wins).
STATE_RANK = {
    'running': 0, 'paused': 0, 'migrating': 0,
    'incoming': 1, 'shutdown': 1, 'unknown': 1, 'migrated': 1,
    'crashed': 2,
    'stopped': 3,
}
AGENT_STATUSES = ('ok', 'no-answer', 'bad-answer', 'off', 'down')
OS_KEYS = ('id', 'name', 'pretty_name', 'version', 'version_id', 'kernel_release', 'machine')
MAX_INSTANCES = 4096
MAX_INTERFACES = 64
MAX_ADDRESSES = 64
MAX_STRING = 256
MAX_ERROR = 1024
MAX_PATH = 4096
MAX_INT = 2 ** 53
# Variables (after the prefix) of each guest; a node's data chooses none of them.
INT_FIELDS = ('pid', 'memory_mb', 'vcpus', 'uptime_s')
STR_FIELDS = ('machine', 'accel', 'user')
BOOL_FIELDS = ('defined', 'autostart')


# -- validation of what a node returned ------------------------------------------------------
def _string(value, limit=MAX_STRING):
    """value when it is a str of at most limit characters without control characters, else None."""
    if not isinstance(value, str) or len(value) > limit:
        return None
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        return None
    try:
        # A plain str: the fact cache gives its own str types, marked or not.
        return value.encode('utf-8').decode('utf-8')
    except UnicodeError:
        return None


def _integer(value, low=0, high=MAX_INT):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return int(value)


def _boolean(value):
    return value if isinstance(value, bool) else None


def _path(value):
    if not isinstance(value, str) or not value.startswith('/') or len(value) > MAX_PATH or '\0' in value:
        return None
    return _string(value, MAX_PATH)


def clean_address(entry):
    """{address, prefix, family} of one agent address entry, or None when it is not one."""
    if not isinstance(entry, dict):
        return None
    text = _string(entry.get('address'), 64)
    if text is None:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    family = 'ipv4' if address.version == 4 else 'ipv6'
    if entry.get('family') not in (None, family):
        return None
    prefix = _integer(entry.get('prefix'), 0, address.max_prefixlen)
    return {'address': str(address), 'prefix': prefix, 'family': family}


def clean_interface(entry):
    if not isinstance(entry, dict):
        return None
    name = _string(entry.get('name'), 64)
    if name is None:
        return None
    addresses = entry.get('addresses')
    addresses = addresses if isinstance(addresses, list) else []
    cleaned = [found for found in (clean_address(item) for item in addresses[:MAX_ADDRESSES]) if found]
    return {'name': name, 'hardware_address': _string(entry.get('hardware_address'), 64),
            'addresses': cleaned}


def clean_agent(agent):
    """The agent facts of one guest, checked; None when there are none (or they are not facts)."""
    if not isinstance(agent, dict) or agent.get('status') not in AGENT_STATUSES:
        return None
    os_facts = agent.get('os')
    if isinstance(os_facts, dict):
        os_facts = dict((key, _string(os_facts.get(key))) for key in OS_KEYS)
    else:
        os_facts = None
    interfaces = agent.get('interfaces')
    interfaces = interfaces if isinstance(interfaces, list) else []
    return {
        'status': agent['status'],
        'error': _string(agent.get('error'), MAX_ERROR),
        'hostname': _string(agent.get('hostname'), 255),
        'os': os_facts,
        'interfaces': [found for found in (clean_interface(item) for item in interfaces[:MAX_INTERFACES])
                       if found],
    }


def clean_instance(name, entry):
    """(guest, None) for one entry of kvm_node.instances, or (None, why it was left out)."""
    try:
        validate_name(name)
    except ValidationError as err:
        return None, to_native(err)
    if not isinstance(entry, dict):
        return None, 'its facts are not a mapping'
    if entry.get('name', name) != name:
        return None, 'its facts name another instance'
    state = entry.get('state')
    if not isinstance(state, str) or state not in STATE_RANK:
        return None, 'unknown state %r' % (_string(state, 32) if isinstance(state, str) else state.__class__.__name__)
    guest = {'name': name, 'state': state}
    for key in INT_FIELDS:
        guest[key] = _integer(entry.get(key))
    for key in STR_FIELDS:
        guest[key] = _string(entry.get(key), 64)
    for key in BOOL_FIELDS:
        guest[key] = _boolean(entry.get(key))
    guest['agent'] = clean_agent(entry.get('agent'))
    return guest, None


def clean_node_facts(facts):
    """({run_dir, state_dir, instances: {name: guest}}, [problems]) from one node's kvm_node
    fact; raises ValueError when it is not one with instances."""
    if not isinstance(facts, dict):
        raise ValueError('its kvm_node fact is not a mapping')
    instances = facts.get('instances')
    if not isinstance(instances, dict):
        raise ValueError('its kvm_node fact has no instances (gather_subset must include instances)')
    if len(instances) > MAX_INSTANCES:
        raise ValueError('it reports %d instances, more than %d' % (len(instances), MAX_INSTANCES))
    node = {'run_dir': _path(facts.get('run_dir')), 'state_dir': _path(facts.get('state_dir')), 'instances': {}}
    problems = []
    for name in sorted(instances, key=lambda key: (key.__class__.__name__, str(key))):
        guest, why = clean_instance(name, instances[name])
        if guest is None:
            shown = _string(name, 80) if isinstance(name, str) else None
            problems.append('instance %s left out: %s' % (repr(shown) if shown else '(an unprintable name)', why))
        else:
            node['instances'][name] = guest
    return node, problems


# -- the guest on several nodes ----------------------------------------------------------------
def resolve_conflicts(nodes):
    """{name: (node, guest, [other nodes])} from {node: {'instances': {name: guest}}}: where a
    guest is on several nodes, the one of the best STATE_RANK, then the first node name."""
    seen = {}
    for node in sorted(nodes):
        for name, guest in nodes[node]['instances'].items():
            seen.setdefault(name, []).append((STATE_RANK[guest['state']], node, guest))
    resolved = {}
    for name, copies in seen.items():
        copies.sort(key=lambda copy: (copy[0], copy[1]))
        _rank, node, guest = copies[0]
        resolved[name] = (node, guest, [copy[1] for copy in copies[1:]])
    return resolved


def describe_conflict(name, winner, guest, nodes, others):
    where = ', '.join('%s (%s)' % (other, nodes[other]['instances'][name]['state']) for other in others)
    return ('guest %s is on more than one node: listed on %s (%s), also on %s'
            % (name, winner, guest['state'], where))


# -- addresses -----------------------------------------------------------------------------------
def usable_address(address):
    parsed = ipaddress.ip_address(address)
    return not (parsed.is_loopback or parsed.is_link_local or parsed.is_multicast or parsed.is_unspecified)


def flat_addresses(agent):
    """Every address the agent reports, loopback aside, in its order, each once."""
    found = []
    for interface in (agent or {}).get('interfaces') or []:
        for entry in interface['addresses']:
            if not ipaddress.ip_address(entry['address']).is_loopback and entry['address'] not in found:
                found.append(entry['address'])
    return found


def parse_networks(networks):
    parsed = []
    for network in networks or []:
        try:
            parsed.append(ipaddress.ip_network(to_text(network), strict=False))
        except ValueError as err:
            raise AnsibleParserError('address_preference.networks: %s is not a network: %s'
                                     % (network, to_native(err)))
    return parsed


def choose_address(agent, networks=(), interfaces=(), family='any'):
    """The address ansible_host gets, or None: usable, of the family, in one of networks and
    on an interface matching one of interfaces (when given); the earlier network, then the
    earlier interface pattern, then IPv4 before IPv6, then the agent's order."""
    candidates = []
    order = 0
    for interface in (agent or {}).get('interfaces') or []:
        if interface['name'] == 'lo':
            continue
        if interfaces:
            matched = [rank for rank, pattern in enumerate(interfaces) if fnmatch.fnmatchcase(interface['name'], pattern)]
            if not matched:
                continue
            interface_rank = matched[0]
        else:
            interface_rank = 0
        for entry in interface['addresses']:
            order += 1
            if family != 'any' and entry['family'] != family:
                continue
            if not usable_address(entry['address']):
                continue
            address = ipaddress.ip_address(entry['address'])
            if networks:
                inside = [rank for rank, network in enumerate(networks)
                          if network.version == address.version and address in network]
                if not inside:
                    continue
                network_rank = inside[0]
            else:
                network_rank = 0
            candidates.append((network_rank, interface_rank, 0 if address.version == 4 else 1, order,
                               entry['address']))
    return min(candidates)[-1] if candidates else None


def guest_variables(node, node_facts, guest, others, preference):
    """The variables of one guest (names without the prefix), ansible_host apart."""
    agent = guest['agent']
    variables = {'node': node, 'state': guest['state'], 'run_dir': node_facts['run_dir'],
                 'state_dir': node_facts['state_dir'], 'also_on': list(others),
                 'addresses': flat_addresses(agent),
                 'agent_status': agent['status'] if agent else None,
                 'hostname': agent['hostname'] if agent else None,
                 'os': agent['os'] if agent else None,
                 'interfaces': agent['interfaces'] if agent else []}
    for key in INT_FIELDS + STR_FIELDS + BOOL_FIELDS:
        variables[key] = guest[key]
    address = choose_address(agent, **preference)
    return variables, address


# -- reading the nodes ------------------------------------------------------------------------------
class NodeError(Exception):
    """One node could not be read."""


def parse_results(text):
    """{host: (status, result)} from what the node_results callback printed."""
    start = text.find('{')
    if start < 0:
        raise ValueError('no JSON in the output')
    data = json.loads(text[start:])
    if not isinstance(data, dict) or not isinstance(data.get('hosts'), dict):
        raise ValueError('the output is not the node_results callback\'s')
    return data['hosts']


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):

    NAME = 'hvops.kvm.guests'

    def verify_file(self, path):
        if not super(InventoryModule, self).verify_file(path):
            return False
        return path.endswith(('guests.yml', 'guests.yaml', 'hvops_kvm.yml', 'hvops_kvm.yaml'))

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache=cache)
        self._read_config_data(path)
        self._base_dir = os.path.dirname(os.path.abspath(path))
        source = self.get_option('source')
        prefix = self.get_option('prefix')
        if not isinstance(prefix, str) or not prefix or not all(c.isalnum() or c == '_' for c in prefix) \
                or prefix[0].isdigit() or prefix.startswith('ansible_'):
            raise AnsibleParserError('prefix %r: use letters, digits and "_", not starting with a digit or ansible_'
                                     % (prefix,))
        preference = self.get_option('address_preference') or {}
        self._preference = {'networks': parse_networks(preference.get('networks')),
                            'interfaces': [to_text(p) for p in preference.get('interfaces') or []],
                            'family': preference.get('family') or 'any'}
        if self._preference['family'] not in ('ipv4', 'ipv6', 'any'):
            raise AnsibleParserError('address_preference.family must be ipv4, ipv6 or any')
        unknown = sorted(set(self.get_option('states')) - set(STATE_RANK))
        if unknown:
            raise AnsibleParserError('states: unknown state %s (known: %s)'
                                     % (', '.join(unknown), ', '.join(sorted(STATE_RANK))))

        cache_key = self._config_cache_key(path)
        use_cache = self.get_option('cache')
        nodes = None
        if use_cache and cache:
            try:
                nodes = self._cache[cache_key]
            except KeyError:
                nodes = None
        if nodes is None:
            nodes = self._read_nodes(source)
            if use_cache:
                self._cache[cache_key] = nodes
        self._populate(nodes, prefix)

    def _config_cache_key(self, path):
        """The inventory cache key: the file, and a digest of what it says and of the nodes."""
        digest = hashlib.sha256()
        with open(path, 'rb') as handle:
            digest.update(handle.read())
        if self.get_option('source') == 'facts':
            digest.update(json.dumps(sorted(self._node_names())).encode())
        return '%s_%s' % (self.get_cache_key(path), digest.hexdigest()[:16])

    # -- the two sources -----------------------------------------------------------------------
    def _read_nodes(self, source):
        """{node: {'run_dir', 'state_dir', 'instances', 'problems'} or {'error': why}}."""
        if source == 'facts':
            raw = self._from_fact_cache()
        else:
            raw = self._gather()
        nodes = {}
        for node in sorted(raw):
            outcome = raw[node]
            if isinstance(outcome, NodeError):
                nodes[node] = {'error': to_native(outcome)}
                continue
            try:
                cleaned, problems = clean_node_facts(outcome)
            except ValueError as err:
                nodes[node] = {'error': to_native(err)}
                continue
            cleaned['problems'] = problems
            nodes[node] = cleaned
        return nodes

    def _node_names(self):
        pattern = self.get_option('nodes')
        names = []
        groups = self.inventory.groups
        for part in pattern.replace(',', ':').split(':'):
            part = part.strip()
            if not part or part.startswith(('!', '&')):
                continue
            if part in groups:
                names.extend(host.name for host in groups[part].get_hosts())
            elif part in self.inventory.hosts:
                names.append(part)
            else:
                names.extend(host for host in self.inventory.hosts if fnmatch.fnmatchcase(host, part))
        for part in pattern.replace(',', ':').split(':'):
            part = part.strip()
            if part.startswith('!'):
                excluded = self._pattern_hosts(part[1:])
                names = [name for name in names if name not in excluded]
            elif part.startswith('&'):
                kept = self._pattern_hosts(part[1:])
                names = [name for name in names if name in kept]
        return sorted(set(names))

    def _pattern_hosts(self, part):
        groups = self.inventory.groups
        if part in groups:
            return set(host.name for host in groups[part].get_hosts())
        return set(host for host in self.inventory.hosts if fnmatch.fnmatchcase(host, part))

    def _from_fact_cache(self):
        from ansible import constants as C
        from ansible.plugins.loader import cache_loader
        names = self._node_names()
        if not names:
            raise AnsibleParserError('no node matches %r in the inventory loaded before this one (give the nodes\''
                                     ' inventory first: -i nodes.yml -i guests.yml)' % self.get_option('nodes'))
        fact_cache = cache_loader.get(C.CACHE_PLUGIN)
        found = {}
        for name in names:
            try:
                facts = fact_cache.get(name) if fact_cache.contains(name) else None
            except Exception as err:  # a broken cache entry is that node's problem
                found[name] = NodeError('its cached facts cannot be read: %s' % to_native(err))
                continue
            if not isinstance(facts, dict) or 'kvm_node' not in facts:
                found[name] = NodeError('no kvm_node facts in the fact cache (%s): run hvops.kvm.kvm_node_facts on it'
                                        ' with fact caching on' % C.CACHE_PLUGIN)
            else:
                found[name] = facts['kvm_node']
        return found

    def _gather(self):
        sources = self.get_option('nodes_inventory')
        if not sources:
            raise AnsibleParserError('source=gather needs nodes_inventory (the nodes\' inventory files)')
        sources = [source if os.path.isabs(source) else os.path.join(self._base_dir, source)
                   for source in sources]
        timeout = self.get_option('timeout')
        args = {'gather_subset': list(self.get_option('gather_subset')),
                'run_dir': '{{ kvm_run_dir | default(omit) }}',
                'state_dir': '{{ kvm_state_dir | default(omit) }}'}
        argv = [sys.executable, '-m', 'ansible', 'adhoc', self.get_option('nodes'),
                '-m', 'hvops.kvm.kvm_node_facts', '-a', json.dumps(args),
                '--forks', str(self.get_option('forks')), '--timeout', str(timeout),
                '--task-timeout', str(timeout)]
        for source in sources:
            argv += ['-i', source]
        env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK='hvops.kvm.node_results', ANSIBLE_LOAD_CALLBACK_PLUGINS='1',
                   ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0', ANSIBLE_RETRY_FILES_ENABLED='0')
        env.pop('ANSIBLE_INVENTORY', None)
        display.vvv('hvops.kvm.guests: running %s' % ' '.join(argv))
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                                  timeout=2 * timeout + 30, check=False)
        except subprocess.TimeoutExpired:
            raise AnsibleError('hvops.kvm.guests: reading the nodes took more than %d s; stopped' % (2 * timeout + 30))
        try:
            hosts = parse_results(proc.stdout)
        except ValueError as err:
            raise AnsibleError('hvops.kvm.guests: the ansible run on the nodes (rc %d) printed no results: %s; %s'
                               % (proc.returncode, to_native(err), proc.stderr.strip()[-2000:]))
        found = {}
        for name, outcome in hosts.items():
            if not isinstance(name, str) or _string(name) is None or not isinstance(outcome, dict):
                continue
            status, result = outcome.get('status'), outcome.get('result')
            result = result if isinstance(result, dict) else {}
            if status == 'ok':
                facts = result.get('ansible_facts')
                found[name] = facts.get('kvm_node') if isinstance(facts, dict) else None
                if found[name] is None:
                    found[name] = NodeError('hvops.kvm.kvm_node_facts returned no kvm_node fact')
            else:
                msg = _string(result.get('msg'), MAX_ERROR) or 'no message'
                found[name] = NodeError('%s: %s' % ('unreachable' if status == 'unreachable' else 'failed', msg))
        if not found and proc.returncode != 0:
            raise AnsibleError('hvops.kvm.guests: the ansible run on the nodes failed (rc %d): %s'
                               % (proc.returncode, proc.stderr.strip()[-2000:]))
        return found

    # -- hosts and groups ------------------------------------------------------------------------
    def _node_problem(self, message):
        if self.get_option('strict_nodes'):
            raise AnsibleError('hvops.kvm.guests: %s' % message)
        display.warning('hvops.kvm.guests: %s' % message)

    def _populate(self, nodes, prefix):
        readable = {}
        for node, data in sorted(nodes.items()):
            if 'error' in data:
                self._node_problem('node %s: its guests are left out: %s' % (node, data['error']))
                continue
            for problem in data.get('problems', []):
                display.warning('hvops.kvm.guests: node %s: %s' % (node, problem))
            readable[node] = data
        states = set(self.get_option('states'))
        strict = self.get_option('strict')
        for name, (node, guest, others) in sorted(resolve_conflicts(readable).items()):
            if others:
                display.warning('hvops.kvm.guests: %s' % describe_conflict(name, node, guest, readable, others))
            if states and guest['state'] not in states:
                continue
            variables, address = guest_variables(node, readable[node], guest, others, self._preference)
            hostvars = dict((prefix + key, untrusted(value)) for key, value in variables.items())
            if address:
                hostvars['ansible_host'] = address
            if not self._included(name, hostvars, strict):
                continue
            self.inventory.add_host(name)
            for key, value in hostvars.items():
                self.inventory.set_variable(name, key, value)
            if self.get_option('group'):
                self.inventory.add_child(self.inventory.add_group(self.get_option('group')), name)
            if self.get_option('group_by_node'):
                group = self.inventory.add_group(self._sanitize_group_name(self.get_option('node_group_prefix') + node))
                self.inventory.add_child(group, name)
            if self.get_option('group_by_state'):
                group = self.inventory.add_group(
                    self._sanitize_group_name(self.get_option('state_group_prefix') + guest['state']))
                self.inventory.add_child(group, name)
            self._set_composite_vars(self.get_option('compose'), hostvars, name, strict=strict)
            self._add_host_to_composed_groups(self.get_option('groups'), hostvars, name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option('keyed_groups'), hostvars, name, strict=strict)

    def _included(self, name, hostvars, strict):
        for condition in self.get_option('filters'):
            try:
                if not boolean(self._compose(condition, hostvars), strict=False):
                    return False
            except Exception as err:
                if strict:
                    raise AnsibleParserError('hvops.kvm.guests: filter %r on %s: %s'
                                             % (condition, name, to_native(err)))
                return False
        return True
