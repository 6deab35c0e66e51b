"""The pure parts of _migration: options, URIs, capabilities and parameters,
statistics, progress, target checks and the recover decision table."""
import pytest

from ansible_collections.hvops.kvm.plugins.module_utils import _migration_checks as checks
from ansible_collections.hvops.kvm.plugins.module_utils import _migration_recover as recover
from ansible_collections.hvops.kvm.plugins.module_utils import _migration_settings as settings
from ansible_collections.hvops.kvm.plugins.module_utils import _migration_stats as mstats
from ansible_collections.hvops.kvm.plugins.module_utils import _runtime as runtime_file
from ansible_collections.hvops.kvm.plugins.module_utils import _states as states
from ansible_collections.hvops.kvm.plugins.module_utils._errors import MigrationError, ValidationError

# query-migrate on QEMU 7.2.22 right after a completed migration of an idle
# 64 MiB guest, read twice: QEMU fills in total-time and downtime late.
EARLY = {"status": "completed", "setup-time": 1, "downtime": 0, "total-time": 0, "ram": {
    "total": 67641344, "postcopy-requests": 0, "dirty-sync-count": 2, "multifd-bytes": 0,
    "pages-per-second": 0, "downtime-bytes": 0, "page-size": 4096, "remaining": 0, "postcopy-bytes": 0,
    "mbps": 0, "transferred": 603263, "dirty-sync-missed-zero-copy": 0, "precopy-bytes": 603263,
    "duplicate": 16403, "dirty-pages-rate": 0, "skipped": 0, "normal-bytes": 454656, "normal": 111}}
SETTLED = dict(EARLY, downtime=8, **{'total-time': 19, 'ram': dict(EARLY['ram'], mbps=317.85155555555554)})
CAPS_7_2 = ['xbzrle', 'rdma-pin-all', 'auto-converge', 'zero-blocks', 'compress', 'events', 'postcopy-ram',
            'x-colo', 'release-ram', 'block', 'return-path', 'pause-before-switchover', 'multifd',
            'dirty-bitmaps', 'postcopy-blocktime', 'late-block-activate', 'x-ignore-shared',
            'validate-uuid', 'background-snapshot', 'zero-copy-send', 'postcopy-preempt']


def options(**changes):
    params = dict(settings.DEFAULTS)
    params.update(changes)
    return params


# -- ports, addresses, URIs ------------------------------------------------------------
@pytest.mark.parametrize('value, expected', [
    ('49152-49215', (49152, 49215)),
    ('49152', (49152, 49152)),
    (49152, (49152, 49152)),
    (' 1 - 2 ', (1, 2)),
    ('65535-65535', (65535, 65535)),
])
def test_port_range_parses(value, expected):
    assert settings.parse_port_range(value) == expected


@pytest.mark.parametrize('value', ['', 'abc', '0-10', '10-5', '70000', '1-70000', '1-2-3', '-5', '1,2'])
def test_bad_port_range_is_refused(value):
    with pytest.raises(ValidationError, match='migration_ports'):
        settings.parse_port_range(value)


def test_listen_address_is_an_ip_address():
    assert settings.listen_address(' 10.0.0.1 ') == '10.0.0.1'
    assert settings.listen_address('0:0:0:0:0:0:0:1') == '::1'
    for bad in ('localhost', 'node2.example', '1.2.3.4.5', ''):
        with pytest.raises(ValidationError, match='migration_address'):
            settings.listen_address(bad)


def test_tcp_uri_brackets_ipv6():
    assert settings.tcp_uri('127.0.0.1', 49152) == 'tcp:127.0.0.1:49152'
    assert settings.tcp_uri('::1', 49152) == 'tcp:[::1]:49152'


@pytest.mark.parametrize('uri, expected', [
    ('tcp:127.0.0.1:49152', ('127.0.0.1', 49152)),
    ('tcp:[::1]:5', ('::1', 5)),
    ('tcp:node2.example:49152', ('node2.example', 49152)),
])
def test_tcp_uris_parse(uri, expected):
    assert settings.parse_uri(uri) == expected


@pytest.mark.parametrize('uri', [
    'exec:cat > /tmp/x', 'unix:/tmp/sock', 'tcp:host', 'tcp:1.2.3.4:0', 'tcp:1.2.3.4:70000',
    'tcp:a;b:1', 'tcp:-x:1', None, '', 'rdma:1.2.3.4:5',
])
def test_other_uris_are_refused(uri):
    with pytest.raises(ValidationError, match='tcp:HOST:PORT'):
        settings.parse_uri(uri)


# -- options, capabilities, parameters ----------------------------------------------
@pytest.mark.parametrize('key, value', [
    ('max_bandwidth_mib', -1), ('downtime_limit_ms', settings.MAX_DOWNTIME_MS + 1), ('xbzrle_cache_mb', 0),
    ('multifd_channels', 0), ('multifd_channels', 256), ('timeout', -1), ('stall_timeout', 0),
    ('memory_margin_mb', -5), ('stall_timeout', True), ('timeout', '5'),
    ('throttle_initial', 0), ('throttle_initial', 100), ('throttle_increment', 0),
])
def test_out_of_range_options_are_refused(key, value):
    with pytest.raises(ValidationError, match=key):
        settings.check_options(options(**{key: value}))


def test_defaults_pass_the_checks():
    settings.check_options(options())


def test_capabilities_by_default_events_and_return_path_only_and_all_set_explicitly():
    caps = dict((c['capability'], c['state']) for c in settings.capabilities(options(), CAPS_7_2))
    assert caps.pop('events') is True and caps.pop('return-path') is True
    assert not any(caps.values())
    assert {'auto-converge', 'xbzrle', 'multifd', 'postcopy-ram', 'pause-before-switchover'} <= set(caps)


def test_capabilities_follow_the_options():
    params = options(auto_converge=True, xbzrle=True, multifd=True, postcopy=True, return_path=False)
    caps = dict((c['capability'], c['state']) for c in settings.capabilities(params, CAPS_7_2))
    assert caps['auto-converge'] and caps['xbzrle'] and caps['multifd'] and caps['postcopy-ram']
    assert caps['return-path'] is False and caps['pause-before-switchover'] is False


def test_capabilities_unknown_to_qemu_are_left_out_when_off_and_refused_when_on():
    old = ['xbzrle', 'auto-converge', 'events', 'postcopy-ram']
    caps = [c['capability'] for c in settings.capabilities(options(return_path=False), old)]
    assert sorted(caps) == sorted(old)
    with pytest.raises(ValidationError, match='multifd'):
        settings.capabilities(options(multifd=True), old)


def test_parameters_unlimited_bandwidth_by_default():
    params = settings.parameters(options())
    assert params['max-bandwidth'] == settings.UNLIMITED_BANDWIDTH > 128 * settings.MIB
    assert params['downtime-limit'] == 300
    assert params['xbzrle-cache-size'] == 64 * settings.MIB and params['multifd-channels'] == 2
    assert params['cpu-throttle-initial'] == 20 and params['cpu-throttle-increment'] == 10


def test_parameters_with_a_bandwidth_limit():
    params = settings.parameters(options(max_bandwidth_mib=100, downtime_limit_ms=50, xbzrle_cache_mb=8,
                                         multifd_channels=4, throttle_initial=99, throttle_increment=1))
    assert params == {'max-bandwidth': 100 * settings.MIB, 'downtime-limit': 50,
                      'xbzrle-cache-size': 8 * settings.MIB, 'multifd-channels': 4,
                      'cpu-throttle-initial': 99, 'cpu-throttle-increment': 1}


# -- statistics and progress -----------------------------------------------------------
def test_stats_are_settled_only_once_total_time_is_filled_in():
    assert not mstats.stats_settled(EARLY)
    assert mstats.stats_settled(SETTLED)
    assert mstats.stats_settled({'status': 'failed'}) and mstats.stats_settled({})


def test_stats_from_a_completed_migration():
    stats = mstats.extract_stats(SETTLED)
    assert stats['status'] == 'completed'
    assert (stats['total_time_ms'], stats['downtime_ms'], stats['setup_time_ms']) == (19, 8, 1)
    assert stats['transferred_bytes'] == 603263 and stats['ram_total_bytes'] == 67641344
    assert stats['passes'] == 2 and stats['dirty_pages_rate'] == 0 and stats['dirty_rate_mib_s'] == 0.0
    assert stats['average_mib_s'] == round(603263 / 1048576.0 / 0.019, 2)
    assert stats['throughput_mbps'] == pytest.approx(317.85, abs=0.01)
    assert stats['error'] is None and 'xbzrle' not in stats
    assert (stats['precopy_bytes'], stats['downtime_bytes'], stats['postcopy_bytes']) == (603263, 0, 0)


def test_stats_of_a_failed_migration_and_of_xbzrle():
    info = {'status': 'failed', 'error-desc': 'Unable to write to socket: Broken pipe',
            'ram': {'transferred': 10, 'dirty-pages-rate': 256, 'page-size': 4096},
            'xbzrle-cache': {'cache-size': 67108864, 'cache-miss': 3}}
    stats = mstats.extract_stats(info)
    assert stats['error'] == 'Unable to write to socket: Broken pipe'
    assert stats['average_mib_s'] is None and stats['dirty_rate_mib_s'] == 1.0
    assert stats['xbzrle'] == {'cache_size': 67108864, 'cache_miss': 3}
    assert mstats.extract_stats(None)['status'] is None


def test_progress_stall_is_measured_from_the_last_growth():
    progress = mstats.Progress(started=100.0, timeout=0, stall_timeout=5)
    assert progress.sample(100.0, 0) is None
    assert progress.sample(104.0, 10) is None
    assert progress.sample(108.9, 10) is None
    assert progress.sample(109.0, 10) == 'stalled'
    assert progress.sample(109.5, 11) is None


def test_progress_overall_timeout_wins_over_progress():
    progress = mstats.Progress(started=0.0, timeout=30, stall_timeout=5)
    for second in range(30):
        assert progress.sample(float(second), second * 1000) is None
    assert progress.sample(30.0, 31000) == 'timeout'


# -- runtime and target checks ---------------------------------------------------------
def runtime(**spec_changes):
    spec = {'name': 'vm1', 'memory': 512, 'vcpus': 2, 'machine': 'pc-i440fx-7.2',
            'disks': [{'path': '/srv/vm1.img'}], 'kernel': '/srv/vmlinuz', 'initrd': None,
            'nics': [{'type': 'bridge', 'bridge': 'br0'}, {'type': 'user', 'bridge': None},
                     {'type': 'bridge', 'bridge': 'br0'}]}
    spec.update(spec_changes)
    return {'format': 1, 'argv': ['qemu', '-vnc', '127.0.0.1:1,password=on', '-incoming', 'defer'],
            'spec': spec, 'accel': 'kvm', 'qemu_version': [7, 2, 22]}


def test_incoming_and_vnc_password_are_read_from_the_argv():
    assert runtime_file.is_incoming(runtime())
    assert not runtime_file.is_incoming({'argv': ['qemu', '-S']}) and not runtime_file.is_incoming(None)
    assert checks.vnc_has_password(['qemu', '-vnc', '127.0.0.1:1,password=on'])
    assert not checks.vnc_has_password(['qemu', '-vnc', '127.0.0.1:1', 'x,password=on'])


def test_requirements_of_a_runtime():
    assert checks.requirements_of(runtime()) == {
        'memory_mb': 512, 'vcpus': 2, 'machine': 'pc-i440fx-7.2', 'accel': 'kvm',
        'qemu_version': [7, 2, 22], 'files': ['/srv/vm1.img', '/srv/vmlinuz'], 'bridges': ['br0'],
        'vnc_password': True}


def offer(**changes):
    base = {'memory_mb': 4096, 'margin_mb': 128,
            'qemu': {'version': (7, 2, 22), 'machines': {'pc-i440fx-7.2': None, 'pc': 'pc-i440fx-7.2'}},
            'kvm': {'usable': True, 'reason': None}, 'missing_bridges': set(), 'file_problems': []}
    base.update(changes)
    return base


def test_a_fitting_target_has_no_problems():
    assert checks.target_problems('vm1', checks.requirements_of(runtime()), offer()) == []
    newer = offer(qemu={'version': (8, 0, 0), 'machines': {'pc-i440fx-7.2': None}})
    assert checks.target_problems('vm1', checks.requirements_of(runtime()), newer) == []
    # What the asker does not know is not checked.
    assert checks.target_problems('vm1', checks.requirements_of(runtime()), {}) == []


@pytest.mark.parametrize('changes, words', [
    ({'memory_mb': 639}, 'not enough memory (needs 640 MiB, 639 MiB available)'),
    ({'memory_mb': 639, 'memory_word': 'left'}, 'not enough memory (needs 640 MiB, 639 MiB left)'),
    ({'qemu': {'version': (7, 1, 0), 'machines': {'pc-i440fx-7.2': None}}}, "QEMU 7.1.0 is older than the source's"),
    ({'qemu': {'version': (7, 2, 22), 'machines': {'pc-i440fx-7.1': None}}}, 'machine type pc-i440fx-7.2'),
    ({'kvm': {'usable': False, 'reason': '/dev/kvm: No such file or directory'}},
     'KVM is not usable (/dev/kvm: No such file or directory)'),
    ({'missing_bridges': {'br0', 'br9'}}, 'no bridge br0'),
    ({'file_problems': ['disk 0 (/srv/vm1.img) does not exist']}, 'does not exist'),
    ({'copy': {'state': 'paused', 'pid': 42}}, 'an instance named vm1 is paused there (pid 42)'),
])
def test_each_target_problem_is_named(changes, words):
    problems = checks.target_problems('vm1', checks.requirements_of(runtime()), offer(**changes))
    assert len(problems) == 1 and words in problems[0], problems


def test_memory_is_enough_at_exactly_guest_plus_margin():
    assert checks.target_problems('vm1', checks.requirements_of(runtime()), offer(memory_mb=640)) == []


def test_a_stopped_copy_is_no_clash():
    assert checks.target_problems('vm1', checks.requirements_of(runtime()), offer(copy={'state': 'stopped'})) == []


# -- recover ---------------------------------------------------------------------------------
ABSENT = {'present': False, 'run_state': None, 'incoming': False}
RUNNING = {'present': True, 'run_state': 'running', 'incoming': False, 'migration_status': None}
PAUSED = {'present': True, 'run_state': 'paused', 'incoming': False, 'migration_status': None}
MIGRATED = {'present': True, 'run_state': 'postmigrate', 'incoming': False, 'migration_status': 'completed'}
FAILED_PAUSED = {'present': True, 'run_state': 'paused', 'incoming': False, 'migration_status': 'failed'}
WAITING = {'present': True, 'run_state': 'inmigrate', 'incoming': True, 'migration_status': None}
LOADED = {'present': True, 'run_state': 'paused', 'incoming': True, 'migration_status': 'completed'}
RESUMED = {'present': True, 'run_state': 'running', 'incoming': True, 'migration_status': 'completed'}
FINALIZED_PAUSED = {'present': True, 'run_state': 'paused', 'incoming': False, 'migration_status': 'completed'}
BUSY = {'present': True, 'busy': True}
MUTE = {'present': True, 'run_state': None, 'incoming': False}


@pytest.mark.parametrize('record, kind', [
    (ABSENT, 'absent'), (RUNNING, 'running'), (PAUSED, 'paused'), (MIGRATED, 'paused'),
    (WAITING, 'incoming-partial'), (LOADED, 'incoming-complete'), (RESUMED, 'running'),
    (dict(LOADED, migration_status='failed'), 'incoming-partial'), (BUSY, 'busy'), (MUTE, 'unknown'),
    (None, 'unknown'), ('garbage', 'unknown'),
])
def test_classify(record, kind):
    assert states.copy_kind(record) == kind


@pytest.mark.parametrize('source, target, keep', [
    # one copy runs: it is kept, whatever the other is
    (RUNNING, ABSENT, 'source'),
    (RUNNING, WAITING, 'source'),
    (RUNNING, LOADED, 'source'),
    (ABSENT, RUNNING, 'target'),
    (MIGRATED, RUNNING, 'target'),
    (MIGRATED, RESUMED, 'target'),
    # nobody runs: the newest state wins
    (MIGRATED, LOADED, 'target'),
    (ABSENT, LOADED, 'target'),
    (MIGRATED, FINALIZED_PAUSED, 'target'),
    (ABSENT, FINALIZED_PAUSED, 'target'),
    (PAUSED, WAITING, 'source'),
    (MIGRATED, WAITING, 'source'),
    (PAUSED, LOADED, 'source'),
    (FAILED_PAUSED, LOADED, 'source'),
    (PAUSED, ABSENT, 'source'),
    # no complete copy anywhere: nothing is started
    (ABSENT, ABSENT, None),
    (ABSENT, WAITING, None),
])
def test_decide_keeps_the_copy_with_the_newest_state(source, target, keep):
    assert recover.decide(source, target)['keep'] == keep


@pytest.mark.parametrize('source, target, words', [
    (RUNNING, RESUMED, 'runs on both nodes'),
    (RUNNING, RUNNING, 'runs on both nodes'),
    (BUSY, ABSENT, 'source copy is busy'),
    (RUNNING, BUSY, 'target copy is busy'),
    (MUTE, RUNNING, 'did not answer'),
    (LOADED, MIGRATED, 'roles swapped'),
])
def test_decide_refuses_what_it_cannot_know(source, target, words):
    with pytest.raises(MigrationError, match=words):
        recover.decide(source, target)


def test_decide_never_keeps_an_absent_or_partial_copy():
    records = [ABSENT, RUNNING, PAUSED, MIGRATED, FAILED_PAUSED, WAITING, LOADED, RESUMED, FINALIZED_PAUSED]
    for source in records:
        for target in records:
            try:
                keep = recover.decide(source, target)['keep']
            except MigrationError:
                continue
            if keep is not None:
                kept = source if keep == 'source' else target
                assert states.copy_kind(kept) in ('running', 'paused', 'incoming-complete'), (source, target)


# -- a target copy whose monitor does not answer --------------------------------------------
# The source's status after its migration ended unfinished, as the status phase writes it.
KEPT = {'present': True, 'pid': 4242, 'run_state': 'running', 'incoming': False, 'busy': False,
        'migration_status': 'cancelled', 'state': 'running', 'error': None, 'defined': True}
# A frozen incoming QEMU here: identified, started with -incoming, its monitor silent.
SILENT = {'present': True, 'pid': 77, 'run_state': None, 'incoming': True, 'busy': False,
          'migration_status': None, 'state': 'unknown', 'error': 'QEMU pid 77 is stopped'}


@pytest.mark.parametrize('source', [
    KEPT, dict(KEPT, migration_status='failed'), dict(KEPT, run_state='paused', state='paused'),
    # this QEMU never started a migration (a copy migration that failed while
    # copying the disks): no target got any of the guest from it
    dict(KEPT, migration_status=None),
])
def test_a_silent_target_may_be_killed_when_the_source_kept_the_guest(source):
    allowed, why = recover.may_kill_silent_target(SILENT, source)
    assert allowed is True and 'never received the whole guest' in why
    assert recover.decide(source, SILENT)['keep'] == 'source'


@pytest.mark.parametrize('source', [
    None, 'cancelled', [KEPT], {},
    # the source may have sent the whole guest, or its state is not known
    dict(KEPT, migration_status='completed'), dict(KEPT, migration_status='active'),
    dict(KEPT, migration_status='none'), dict(KEPT, migration_status='Cancelled'),
    dict(KEPT, migration_status=['cancelled']), dict(KEPT, migration_status={'cancelled': 1}),
    dict(KEPT, run_state='postmigrate'), dict(KEPT, run_state=None), dict(KEPT, run_state='inmigrate'),
    dict(KEPT, run_state=['running']), dict(KEPT, present=False), dict(KEPT, present='yes'),
    dict(KEPT, present=1), dict(KEPT, busy=True), dict(KEPT, busy=None), dict(KEPT, busy='false'),
    dict(KEPT, incoming=True), dict(KEPT, incoming=None), dict(KEPT, pid=None), dict(KEPT, pid=0),
    dict(KEPT, pid=-1), dict(KEPT, pid=True), dict(KEPT, pid='4242'), dict(KEPT, pid=4242.0),
    dict((key, value) for key, value in KEPT.items() if key != 'busy'),
])
def test_a_silent_target_is_never_killed_on_doubtful_evidence(source):
    allowed, _why = recover.may_kill_silent_target(SILENT, source)
    assert allowed is False
    # recover decides nothing either: the target copy stays, for an operator to look at.
    with pytest.raises(MigrationError, match='cannot decide'):
        recover.decide(source, SILENT)


@pytest.mark.parametrize('target', [
    # a silent copy that is the guest (finalized, or never a migration target): never killed
    dict(SILENT, incoming=False), dict(SILENT, incoming='true'), dict(SILENT, incoming=1),
    # a copy that answers is not judged here (finalize and decide have their own rules)
    dict(SILENT, run_state='paused', migration_status='completed'),
    dict(SILENT, run_state='running'), dict(SILENT, present=False), dict(SILENT, busy=True),
    None, 'unknown',
])
def test_only_a_silent_unfinalized_incoming_copy_qualifies(target):
    assert recover.may_kill_silent_target(target, KEPT)[0] is False


def test_a_silent_source_is_still_undecidable():
    with pytest.raises(MigrationError, match='source copy is unknown'):
        recover.decide(dict(KEPT, run_state=None, state='unknown'), WAITING)


@pytest.mark.parametrize('source, gone', [
    ({'present': False, 'state': 'stopped'}, True),
    ({'present': True, 'run_state': 'postmigrate'}, False),
    ({'present': 'false'}, False),
    ({'present': 0}, False),
    ({}, False),
    (None, False),
    (['present', False], False),
])
def test_only_an_exact_absent_source_makes_a_complete_target_the_only_copy(source, gone):
    assert recover.source_gone(source) is gone
