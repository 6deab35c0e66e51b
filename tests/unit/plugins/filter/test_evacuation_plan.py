"""The hvops.kvm.evacuation_plan filter: placement of a node's running guests
on targets (memory, machine type, QEMU version, KVM, bridges, files, name
clashes), guests that stay and why, batches, and the summary lines."""
import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.hvops.kvm.plugins.filter.evacuation_plan import FilterModule, evacuation_plan

MACHINES = ['pc', 'pc-i440fx-7.2', 'pc-i440fx-7.1', 'q35', 'pc-q35-7.2']


def guest(memory_mb, state='running', machine='pc-i440fx-7.2', busy=False):
    return {'state': state, 'memory_mb': memory_mb, 'machine': machine, 'busy': busy}


def node(**guests):
    return {'run_dir': '/run/hvops-kvm', 'instances': guests,
            'memory': {'allocatable_mb': 1000, 'committed_mb': 0}}


def host(allocatable_mb=100000, committed_mb=0, machines=None, version=(7, 2, 22), kvm=True, socat=True,
         instances=None, qemu=True):
    return {
        'memory': {'allocatable_mb': allocatable_mb, 'committed_mb': committed_mb},
        'hypervisor': {
            'kvm': {'usable': kvm},
            'socat': {'present': socat},
            'qemu': {'version': '.'.join(map(str, version)), 'version_info': list(version),
                     'machines': MACHINES if machines is None else machines} if qemu else None,
        },
        'instances': instances or {},
    }


def req(memory_mb, machine='pc-i440fx-7.2', files=(), bridges=(), accel='tcg', version=(7, 2, 22)):
    return {'memory_mb': memory_mb, 'vcpus': 1, 'machine': machine, 'accel': accel,
            'qemu_version': list(version), 'files': list(files), 'bridges': list(bridges),
            'vnc_password': False}


def placement(plan):
    return dict((move['instance'], move['target']) for move in plan['moves'])


def test_the_filter_is_registered():
    assert FilterModule().filters() == {'evacuation_plan': evacuation_plan}


def test_biggest_first_each_on_the_target_with_most_memory_left():
    plan = evacuation_plan(node(a=guest(64), b=guest(48), c=guest(32)),
                           {'kvm2': {'facts': host(), 'memory_limit_mb': 400},
                            'kvm3': {'facts': host(), 'memory_limit_mb': 360}},
                           node_name='kvm1')
    # a (192) -> kvm2 (400 free), b (176) -> kvm3 (360 > 208), c (160) -> kvm2 (208 > 184)
    assert [move['instance'] for move in plan['moves']] == ['a', 'b', 'c']
    assert placement(plan) == {'a': 'kvm2', 'b': 'kvm3', 'c': 'kvm2'}
    assert [move['need_mb'] for move in plan['moves']] == [192, 176, 160]
    assert plan['complete'] is True and plan['stays'] == [] and plan['left_alone'] == []
    assert plan['targets']['kvm2'] == {'usable': True, 'reason': None, 'capacity_mb': 400,
                                       'planned_mb': 352, 'left_mb': 48, 'instances': ['a', 'c'], 'disks': []}
    assert [move['copy_mb'] for move in plan['moves']] == [0, 0, 0] and plan['storage'] == 'shared'
    assert plan['targets']['kvm3']['left_mb'] == 184
    assert plan['batches'] == [['a'], ['b'], ['c']]
    assert plan['node'] == 'kvm1'


def test_the_plan_does_not_depend_on_the_order_of_targets_or_guests():
    guests = dict(('g%d' % n, guest(32 + 16 * (n % 3))) for n in range(7))
    targets = {'x': {'facts': host(allocatable_mb=900)}, 'y': {'facts': host(allocatable_mb=900)},
               'z': {'facts': host(allocatable_mb=700)}}
    first = evacuation_plan(node(**guests), targets)
    second = evacuation_plan(node(**dict(reversed(list(guests.items())))),
                             dict(reversed(list(targets.items()))))
    assert first == second
    # Equal room: the name decides.
    assert first['moves'][0]['target'] == 'x'


def test_memory_already_planned_is_counted():
    plan = evacuation_plan(node(a=guest(100), b=guest(100), c=guest(100)),
                           {'kvm2': {'facts': host(allocatable_mb=500)}}, margin_mb=50)
    assert placement(plan) == {'a': 'kvm2', 'b': 'kvm2', 'c': 'kvm2'}
    plan = evacuation_plan(node(a=guest(100), b=guest(100), c=guest(100)),
                           {'kvm2': {'facts': host(allocatable_mb=449)}}, margin_mb=50)
    assert placement(plan) == {'a': 'kvm2', 'b': 'kvm2'}
    assert plan['complete'] is False
    assert plan['stays'] == [{'instance': 'c', 'state': 'running', 'memory_mb': 100, 'targets': {
        'kvm2': ['not enough memory (needs 150 MiB, 149 MiB left)']},
        'reason': 'fits on no target (kvm2: not enough memory (needs 150 MiB, 149 MiB left))'}]


def test_memory_limit_counts_the_targets_own_guests_and_the_reserve():
    targets = {'kvm2': {'facts': host(allocatable_mb=5000, committed_mb=300), 'memory_limit_mb': 1000}}
    plan = evacuation_plan(node(a=guest(600)), targets, margin_mb=0, reserve_mb=100)
    # min(5000, 1000 - 300) - 100 = 600
    assert plan['targets']['kvm2']['capacity_mb'] == 600 and placement(plan) == {'a': 'kvm2'}
    plan = evacuation_plan(node(a=guest(600)), targets, margin_mb=0, reserve_mb=101)
    assert plan['moves'] == [] and 'needs 600 MiB, 599 MiB left' in plan['stays'][0]['reason']
    # Allocatable memory below the limit wins; a limit below what runs leaves nothing.
    assert evacuation_plan(node(), {'t': {'facts': host(allocatable_mb=200), 'memory_limit_mb': 1000}},
                           )['targets']['t']['capacity_mb'] == 200
    assert evacuation_plan(node(), {'t': {'facts': host(committed_mb=900), 'memory_limit_mb': 800}},
                           )['targets']['t']['capacity_mb'] == 0


def test_a_guest_too_big_for_every_target_stays_and_the_others_are_still_planned():
    plan = evacuation_plan(node(big=guest(4096), small=guest(64)),
                           {'kvm2': {'facts': host(), 'memory_limit_mb': 1024},
                            'kvm3': {'facts': host(), 'memory_limit_mb': 512}}, node_name='kvm1')
    assert placement(plan) == {'small': 'kvm2'}
    assert plan['complete'] is False
    [stay] = plan['stays']
    assert stay['instance'] == 'big' and stay['memory_mb'] == 4096
    assert stay['reason'] == ('fits on no target (kvm2: not enough memory (needs 4224 MiB, 1024 MiB left); '
                              'kvm3: not enough memory (needs 4224 MiB, 512 MiB left))')
    assert 'big stays on kvm1: fits on no target' in '\n'.join(plan['summary'])


@pytest.mark.parametrize('facts, requirement, info, problem', [
    (host(machines=['pc', 'pc-i440fx-7.1']), req(32), {}, 'QEMU 7.2.22 does not know the machine type pc-i440fx-7.2'),
    (host(version=(7, 1, 0)), req(32), {}, "QEMU 7.1.0 is older than the source's 7.2.22"),
    (host(kvm=False), req(32, accel='kvm'), {}, 'KVM is not usable'),
    (host(), req(32, bridges=['br0', 'br1']), {'missing_bridges': ['br1', 'br9']}, 'no bridge br1'),
    (host(), req(32, files=['/srv/a.img', '/srv/b.img']), {'missing_files': ['/srv/b.img']}, '/srv/b.img not found'),
    (host(instances={'vm': guest(32, state='paused')}), req(32), {}, 'an instance named vm is paused there'),
])
def test_a_target_that_lacks_what_the_guest_needs_is_not_used(facts, requirement, info, problem):
    targets = {'bad': dict(info, facts=facts), 'good': {'facts': host(allocatable_mb=100)}}
    plan = evacuation_plan(node(vm=guest(32)), targets, requirements={'vm': requirement}, margin_mb=0)
    # bad has far more memory, but cannot take the guest.
    assert placement(plan) == {'vm': 'good'}
    plan = evacuation_plan(node(vm=guest(32)), {'bad': targets['bad']}, requirements={'vm': requirement})
    assert plan['stays'][0]['targets'] == {'bad': [problem]}
    assert plan['stays'][0]['reason'] == 'fits on no target (bad: %s)' % problem


def test_what_a_target_has_is_fine():
    facts = host(version=(8, 0, 0), kvm=True, instances={'vm': guest(32, state='stopped'), 'other': guest(32)})
    plan = evacuation_plan(node(vm=guest(32)), {'t': {'facts': facts, 'missing_files': ['/elsewhere'],
                                                      'missing_bridges': ['br9']}},
                           requirements={'vm': req(32, accel='kvm', files=['/srv/vm.img'], bridges=['br0'])})
    assert placement(plan) == {'vm': 't'}


def test_requirements_win_over_facts_and_facts_fill_in():
    # prepare says 256 MiB; without requirements the facts' 32 MiB count.
    targets = {'t': {'facts': host(allocatable_mb=300)}}
    assert evacuation_plan(node(vm=guest(32)), targets, requirements={'vm': req(256)})['complete'] is False
    assert evacuation_plan(node(vm=guest(32)), targets)['complete'] is True
    plan = evacuation_plan(node(vm=guest(32, machine='pc-q35-9.0')), targets, margin_mb=0)
    assert 'does not know the machine type pc-q35-9.0' in plan['stays'][0]['reason']


def test_only_running_guests_move_and_the_others_stay_or_are_left_alone():
    guests = dict(run=guest(32), off=guest(32, state='stopped'), down=guest(32, state='shutdown'),
                  dead=guest(32, state='crashed'), paused=guest(32, state='paused'),
                  inc=guest(32, state='incoming'), mig=guest(32, state='migrating'),
                  gone=guest(32, state='migrated'), unk=guest(32, state='unknown'),
                  busy=guest(32, busy=True), odd=guest(32, state='weird'))
    plan = evacuation_plan(node(**guests), {'t': {'facts': host()}}, node_name='kvm1')
    assert placement(plan) == {'run': 't'}
    assert plan['left_alone'] == [{'instance': 'dead', 'state': 'crashed'},
                                  {'instance': 'down', 'state': 'shutdown'},
                                  {'instance': 'off', 'state': 'stopped'}]
    reasons = dict((stay['instance'], stay['reason']) for stay in plan['stays'])
    assert sorted(reasons) == ['busy', 'gone', 'inc', 'mig', 'odd', 'paused', 'unk']
    assert reasons['paused'].startswith('is paused; only running guests are migrated')
    assert 'recover' in reasons['inc'] and 'recover' in reasons['gone']
    assert reasons['busy'].startswith('another run is working on it')
    assert reasons['odd'] == 'is weird, not running'
    assert all(stay['targets'] == {} for stay in plan['stays'])
    assert plan['complete'] is False


def test_a_node_with_nothing_running_has_an_empty_complete_plan():
    plan = evacuation_plan(node(off=guest(32, state='stopped')), {'t': {'facts': host()}}, node_name='kvm1')
    assert plan['moves'] == [] and plan['batches'] == [] and plan['stays'] == [] and plan['complete'] is True
    assert plan['summary'][0] == 'Evacuation of kvm1: 0 guest(s) to move, 0 to stay, 1 left alone (not running)'
    assert plan['summary'][1] == 'off is stopped: left alone'
    assert evacuation_plan(node(), {})['complete'] is True


def test_a_guest_whose_requirements_could_not_be_read_stays():
    plan = evacuation_plan(node(a=guest(32), b=guest(32)), {'t': {'facts': host()}},
                           requirements={'a': req(32)}, errors={'b': 'instance b: does not run on this node'})
    assert placement(plan) == {'a': 't'}
    assert plan['stays'][0]['reason'] == ('its requirements could not be read: '
                                          'instance b: does not run on this node')


def test_unusable_targets_are_named_with_the_reason():
    targets = {'down': {'error': 'unreachable: ssh timed out'}, 'nofacts': {},
               'nosocat': {'facts': host(socat=False)}, 'noqemu': {'facts': host(qemu=False)},
               'nomem': {'facts': {'instances': {}}}}
    plan = evacuation_plan(node(vm=guest(32)), targets, node_name='kvm1')
    assert plan['moves'] == []
    assert dict((name, t['reason']) for name, t in plan['targets'].items()) == {
        'down': 'unreachable: ssh timed out', 'nofacts': 'no facts', 'nosocat': 'socat is not installed',
        'noqemu': 'no QEMU found', 'nomem': 'no memory facts (gather the memory subset)'}
    assert plan['stays'][0]['reason'] == (
        'fits on no target (down: not usable (unreachable: ssh timed out); nofacts: not usable (no facts); '
        'nomem: not usable (no memory facts (gather the memory subset)); noqemu: not usable (no QEMU found); '
        'nosocat: not usable (socat is not installed))')
    assert 'target down: not usable (unreachable: ssh timed out)' in plan['summary']
    assert evacuation_plan(node(vm=guest(32)), {})['stays'][0]['reason'] == 'fits on no target: there are no targets'


def test_targets_without_hypervisor_facts_are_judged_on_memory():
    facts = host()
    del facts['hypervisor']
    plan = evacuation_plan(node(vm=guest(32)), {'t': {'facts': facts}}, requirements={'vm': req(32, accel='kvm')})
    assert placement(plan) == {'vm': 't'}


@pytest.mark.parametrize('parallel, batches', [
    (1, [['a'], ['b'], ['c'], ['d'], ['e']]),
    (2, [['a', 'b'], ['c', 'd'], ['e']]),
    (5, [['a', 'b', 'c', 'd', 'e']]),
    (9, [['a', 'b', 'c', 'd', 'e']]),
])
def test_batches(parallel, batches):
    guests = dict((name, guest(100 - index)) for index, name in enumerate('abcde'))
    plan = evacuation_plan(node(**guests), {'t': {'facts': host()}}, parallel=parallel)
    assert plan['batches'] == batches
    assert [move['batch'] for move in plan['moves']] == [i for i, batch in enumerate(batches) for _name in batch]
    assert ('batches of %d' % parallel in plan['summary'][0]) == (parallel > 1)


def test_summary():
    plan = evacuation_plan(node(a=guest(64), b=guest(48), off=guest(16, state='stopped'),
                                p=guest(16, state='paused')),
                           {'kvm2': {'facts': host(), 'memory_limit_mb': 200},
                            'kvm3': {'error': 'unreachable'}}, margin_mb=100, node_name='kvm1')
    assert plan['summary'] == [
        'Evacuation of kvm1: 1 guest(s) to move, 2 to stay, 1 left alone (not running)',
        'a (64 MiB) -> kvm2',
        'b stays on kvm1: fits on no target (kvm2: not enough memory (needs 148 MiB, 36 MiB left); '
        'kvm3: not usable (unreachable))',
        'p stays on kvm1: is paused; only running guests are migrated (resume it, or stop it)',
        'off is stopped: left alone',
        'target kvm2: 200 MiB for guests, 164 planned (a), 36 left',
        'target kvm3: not usable (unreachable)',
        '(each guest counts its memory plus 100 MiB)',
    ]


def test_numbers_given_as_strings_are_fine():
    # Templated values reach filters as strings at times.
    plan = evacuation_plan(node(a=guest('64')), {'t': {'facts': host(), 'memory_limit_mb': '300'}},
                           margin_mb='100', reserve_mb='10', parallel='2')
    assert placement(plan) == {'a': 't'} and plan['targets']['t']['left_mb'] == 126


@pytest.mark.parametrize('call, message', [
    (lambda: evacuation_plan([], {}), "the node's facts must be a dictionary"),
    (lambda: evacuation_plan({'memory': {}}, {}), 'gather the instances subset'),
    (lambda: evacuation_plan(node(), []), 'targets must be a dictionary'),
    (lambda: evacuation_plan(node(), {'t': 'x'}), "targets['t'] must be a dictionary"),
    (lambda: evacuation_plan(node(), {}, parallel=0), 'parallel must be at least 1'),
    (lambda: evacuation_plan(node(), {}, parallel=True), 'parallel must be an integer'),
    (lambda: evacuation_plan(node(), {}, margin_mb='lots'), 'margin_mb must be an integer'),
    (lambda: evacuation_plan(node(), {}, reserve_mb=-1), 'must not be negative'),
    (lambda: evacuation_plan(node(), {}, requirements=[]), 'requirements must be a dictionary'),
    (lambda: evacuation_plan(node(vm=guest(None)), {}), 'memory_mb of vm must be an integer'),
])
def test_bad_input_is_an_error_naming_it(call, message):
    with pytest.raises(AnsibleFilterError, match='evacuation_plan: .*' + message.replace('(', r'\(')
                       .replace(')', r'\)').replace('[', r'\[').replace(']', r'\]')):
        call()


# -- storage: copy --------------------------------------------------------------------------
GIB = 1024 * 1024 * 1024
MIB = 1024 * 1024


def described(*disks):
    """A prepare phase's disks: (path, virtual size in MiB[, readonly])."""
    return [{'index': index, 'path': disk[0], 'format': 'qcow2', 'virtual_size': disk[1] * MIB,
             'readonly': bool(disk[2:] and disk[2])} for index, disk in enumerate(disks)]


def storage(free_mib, paths=('/srv/images',), device=2049, missing=(), more=()):
    """Storage facts: one file system holding paths with free_mib MiB free (and more: (paths, free, device))."""
    filesystems = [{'device': device, 'paths': list(paths), 'free_bytes': free_mib * MIB,
                    'total_bytes': 10 * free_mib * MIB}]
    for other_paths, other_free, other_device in more:
        filesystems.append({'device': other_device, 'paths': list(other_paths), 'free_bytes': other_free * MIB,
                            'total_bytes': 10 * other_free * MIB})
    return {'filesystems': filesystems, 'missing': list(missing)}


def with_storage(facts, storage_facts):
    return dict(facts, storage=storage_facts)


MAP = {'/var/lib/images': '/srv/images'}


def copy_plan(guests, targets, disks, requirements=None, **options):
    options.setdefault('storage_map', MAP)
    return evacuation_plan(node(**guests), targets, requirements=requirements, storage='copy', disks=disks,
                           node_name='kvm1', **options)


def test_copied_disks_need_room_on_the_mapped_directory_counting_the_guests_placed_before():
    # 1000 MiB free: a (400 MiB) and b (300) fit with the 64 MiB margin (700 + 64); c (300) does not.
    guests = dict(a=guest(64), b=guest(48), c=guest(32))
    disks = dict((name, described(('/var/lib/images/%s.qcow2' % name, size)))
                 for name, size in (('a', 400), ('b', 300), ('c', 300)))
    plan = copy_plan(guests, {'kvm2': {'facts': with_storage(host(), storage(1000))}}, disks)
    assert placement(plan) == {'a': 'kvm2', 'b': 'kvm2'}
    assert [move['copy_mb'] for move in plan['moves']] == [400, 300]
    [stay] = plan['stays']
    assert stay['instance'] == 'c'
    assert stay['targets'] == {'kvm2': [
        "not enough disk space (needs 364 MiB on /srv/images of kvm2, 300 MiB left (1000 MiB free, 700 planned"
        " for other guests' disks))"]}
    assert plan['targets']['kvm2']['disks'] == [{'directory': '/srv/images', 'free_mb': 1000, 'planned_mb': 700}]
    assert 'target kvm2: 1000 MiB free on /srv/images, 700 planned for copied disks' in plan['summary']
    assert 'a (64 MiB, disks 400 MiB copied) -> kvm2' in plan['summary']
    assert plan['summary'][-1] == ('(each guest counts its memory plus 128 MiB; the copied disks their virtual'
                                   ' sizes, plus 64 MiB per file system)')
    # One MiB more and c fits: the rule is free >= planned + its disks + 64 MiB.
    plan = copy_plan(guests, {'kvm2': {'facts': with_storage(host(), storage(1064))}}, disks)
    assert placement(plan) == {'a': 'kvm2', 'b': 'kvm2', 'c': 'kvm2'}
    plan = copy_plan(guests, {'kvm2': {'facts': with_storage(host(), storage(1063))}}, disks)
    assert 'c' not in placement(plan)


def test_a_guest_whose_disks_fit_nowhere_stays_with_the_reason_and_memory_is_not_taken():
    disks = {'big': described(('/var/lib/images/big.qcow2', 4 * 1024 * 1024)),
             'small': described(('/var/lib/images/small.qcow2', 100))}
    targets = {'kvm2': {'facts': with_storage(host(), storage(5000))},
               'kvm3': {'facts': with_storage(host(), storage(2000))}}
    plan = copy_plan(dict(big=guest(64), small=guest(32)), targets, disks)
    assert placement(plan) == {'small': 'kvm2'}
    [stay] = plan['stays']
    assert stay['reason'] == (
        'fits on no target (kvm2: not enough disk space (needs 4194368 MiB on /srv/images of kvm2, 5000 MiB free);'
        ' kvm3: not enough disk space (needs 4194368 MiB on /srv/images of kvm3, 2000 MiB free))')
    assert plan['targets']['kvm2']['planned_mb'] == 32 + 128, 'only the small guest is counted'


def test_disks_on_two_file_systems_are_counted_apart_and_two_directories_of_one_together():
    guests = dict(a=guest(32))
    disks = {'a': described(('/var/lib/images/a.qcow2', 500), ('/var/lib/data/a.raw', 500),
                            ('/var/lib/images/sub/a2.raw', 100))}
    storage_map = {'/var/lib/images': '/srv/images', '/var/lib/data': '/srv/data'}
    # /srv/images and /srv/images/sub share a file system: 600 MiB + 64 there; /srv/data 500 + 64.
    facts = storage(664, paths=('/srv/images', '/srv/images/sub'), more=[(('/srv/data',), 564, 2050)])
    plan = copy_plan(guests, {'t': {'facts': with_storage(host(), facts)}}, disks, storage_map=storage_map)
    assert placement(plan) == {'a': 't'} and plan['moves'][0]['copy_mb'] == 1100
    assert plan['targets']['t']['disks'] == [{'directory': '/srv/data', 'free_mb': 564, 'planned_mb': 500},
                                             {'directory': '/srv/images', 'free_mb': 664, 'planned_mb': 600}]
    facts = storage(663, paths=('/srv/images', '/srv/images/sub'), more=[(('/srv/data',), 564, 2050)])
    plan = copy_plan(guests, {'t': {'facts': with_storage(host(), facts)}}, disks, storage_map=storage_map)
    assert plan['stays'][0]['targets'] == {'t': [
        'not enough disk space (needs 664 MiB on /srv/images of t, 663 MiB free)']}


def test_the_image_must_be_new_its_directory_must_exist_and_be_known():
    guests = dict(vm=guest(32))
    disks = {'vm': described(('/var/lib/images/vm.qcow2', 10))}
    cases = {
        'exists': ({'facts': with_storage(host(), storage(1000)), 'present_files': ['/srv/images/vm.qcow2']},
                   'disk 0: /srv/images/vm.qcow2 already exists there; a copy migration only writes new images'),
        'nodir': ({'facts': with_storage(host(), storage(1000, paths=('/other',), missing=['/srv/images']))},
                  'disk 0: the directory /srv/images does not exist there'),
        'unknown': ({'facts': with_storage(host(), storage(1000, paths=('/other',)))},
                    'disk 0: the storage facts do not cover /srv/images (gather them with it in storage_paths)'),
    }
    for name, (info, problem) in cases.items():
        plan = copy_plan(guests, {name: info}, disks)
        assert plan['stays'][0]['targets'] == {name: [problem]}, name
    plan = copy_plan(guests, dict((name, info) for name, (info, _problem) in cases.items()), disks)
    assert plan['moves'] == []
    good = {'good': {'facts': with_storage(host(allocatable_mb=100), storage(1000))}}
    plan = copy_plan(guests, dict(good, **dict((name, info) for name, (info, _problem) in cases.items())), disks,
                     margin_mb=0)
    assert placement(plan) == {'vm': 'good'}


def test_read_only_disks_must_be_on_the_target_and_copied_ones_need_not():
    guests = dict(vm=guest(32))
    disks = {'vm': described(('/var/lib/images/vm.qcow2', 10), ('/iso/tools.iso', 1, True))}
    requirements = {'vm': req(32, files=['/var/lib/images/vm.qcow2', '/iso/tools.iso'])}
    facts = with_storage(host(), storage(1000))
    plan = copy_plan(guests, {'t': {'facts': facts, 'missing_files': ['/var/lib/images/vm.qcow2']}}, disks,
                     requirements)
    assert placement(plan) == {'vm': 't'}, 'the copied disk is not looked for'
    assert plan['moves'][0]['copy_mb'] == 10, 'the read-only disk is not copied'
    plan = copy_plan(guests, {'t': {'facts': facts, 'missing_files': ['/iso/tools.iso']}}, disks, requirements)
    assert plan['stays'][0]['targets'] == {'t': ['/iso/tools.iso not found']}


def test_targets_without_storage_facts_are_not_used_and_guests_without_disks_stay():
    guests = dict(a=guest(32), b=guest(32), c=guest(32), d=guest(32))
    disks = {'a': described(('/var/lib/images/a.qcow2', 10)),
             'c': described(('/iso/c.iso', 1, True)),
             'd': [{'index': 0, 'path': '/var/lib/images/d.qcow2', 'format': 'qcow2', 'virtual_size': 1000,
                    'readonly': False}]}
    plan = copy_plan(guests, {'bare': {'facts': host()}, 't': {'facts': with_storage(host(), storage(1000))}}, disks)
    assert plan['targets']['bare']['reason'] == ('no storage facts (gather the storage subset, with the target'
                                                 ' directories in storage_paths)')
    assert placement(plan) == {'a': 't'}
    reasons = dict((stay['instance'], stay['reason']) for stay in plan['stays'])
    assert reasons == {
        'b': 'its disks were not described (the prepare phase must run with storage: copy)',
        'c': 'its disks cannot be copied: storage: copy, but the guest has no writable disk to copy',
        'd': 'its disks cannot be copied: disks[0] virtual_size must be a positive multiple of 512 bytes up to'
             ' 1125899906842624, got 1000'}
    # Shared storage needs none of it.
    assert evacuation_plan(node(**guests), {'bare': {'facts': host()}})['complete'] is True


def test_a_disk_under_no_mapped_directory_keeps_its_path():
    disks = {'vm': described(('/elsewhere/vm.qcow2', 10))}
    facts = with_storage(host(), storage(1000, paths=('/elsewhere',)))
    plan = copy_plan(dict(vm=guest(32)), {'t': {'facts': facts}}, disks)
    assert placement(plan) == {'vm': 't'}
    assert plan['targets']['t']['disks'] == [{'directory': '/elsewhere', 'free_mb': 1000, 'planned_mb': 10}]


@pytest.mark.parametrize('options, message', [
    ({'storage': 'nfs'}, "storage must be one of shared, copy, not 'nfs'"),
    ({'storage': 'copy', 'storage_map': {'/a': 'b'}}, "storage_map: 'b' is not an absolute"),
    ({'storage': 'copy', 'storage_map': ['/a']}, 'storage_map must be a dictionary'),
    ({'storage': 'copy', 'disks': []}, 'disks must be a dictionary'),
    ({'storage': 'copy'}, "storage free_bytes of t must be an integer"),
])
def test_bad_storage_options_are_an_error_naming_them(options, message):
    facts = with_storage(host(), {'filesystems': [{'device': 1, 'paths': ['/srv'], 'free_bytes': 'lots'}]})
    with pytest.raises(AnsibleFilterError, match='evacuation_plan: .*' + message.replace('(', r'\(')
                       .replace(')', r'\)').replace('[', r'\[').replace(']', r'\]')):
        evacuation_plan(node(vm=guest(32)), {'t': {'facts': facts}}, **options)
