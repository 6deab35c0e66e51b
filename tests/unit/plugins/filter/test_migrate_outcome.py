"""The hvops.kvm.migrate_outcome filter: the migrate role's migrate_result and
messages from its phases' results - refusals, a guest already there, check
mode, success, and every end of a rollback."""
import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.hvops.kvm.plugins.filter.migrate_outcome import FilterModule, migrate_outcome

STAT_KEYS = ['total_time_ms', 'downtime_ms', 'transferred_bytes']


def record(present=True, run_state='running', incoming=False, busy=False, migration_status=None,
           state=None, pid=100, error=None):
    return {'present': present, 'pid': pid if present else None, 'run_state': run_state if present else None,
            'state': state or (run_state if present else 'stopped'), 'incoming': incoming, 'busy': busy,
            'migration_status': migration_status, 'error': error, 'defined': True}


def prepared(pid=100):
    return {'changed': False, 'pid': pid, 'runtime': {'argv': ['qemu']}, 'definition': {},
            'requirements': {'memory_mb': 64, 'machine': 'pc-i440fx-7.2'}, 'observed': record(pid=pid)}


def refused_prepare(observed, msg='instance vm1: does not run on this node'):
    return {'changed': False, 'failed': False, 'failed_when_result': False, 'msg': msg, 'observed': observed}


def accepted(**more):
    result = {'changed': True, 'address': '127.0.0.1', 'uri': 'tcp:127.0.0.1:49152', 'pid': 200,
              'qemu_version': '7.2.22', 'memory': {'available_mb': 900, 'required_mb': 192},
              'observed': record(present=False)}
    result.update(more)
    return result


def run(**given):
    base = {'instance': 'vm1', 'source': 'kvm1', 'target': 'kvm2', 'started': 100.0, 'now': 103.456,
            'check_mode': False, 'ports': '49152-49215', 'stat_keys': STAT_KEYS}
    base.update(given)
    return base


STATS = {'total_time_ms': 300, 'downtime_ms': 20, 'transferred_bytes': 5000, 'passes': 3}


def test_the_filter_is_registered():
    assert FilterModule().filters()['migrate_outcome'] is migrate_outcome


def test_a_moved_guest():
    result = migrate_outcome(run(
        prepared=prepared(), accepted=accepted(),
        migrated={'changed': True, 'uri': 'tcp:127.0.0.1:49152', 'tls': True, 'stats': STATS,
                  'started_at': 101.0, 'finished_at': 101.5, 'timing': {'completed_at': 101.4}},
        finalized={'changed': True, 'state': 'running', 'pid': 200}))
    assert result['moved'] is True and result['runs_on'] == 'kvm2' and result['pid'] == 200
    assert result['stats'] == {'total_time_ms': 300, 'downtime_ms': 20, 'transferred_bytes': 5000}
    assert (result['migration_started'], result['migration_finished'], result['migration_completed_at']) == \
        (101.0, 101.5, 101.4)
    assert result['elapsed_s'] == 3.46 and 'failed' not in result
    assert result['message'] == ('vm1 moved from kvm1 to kvm2: migration 300 ms, downtime 20 ms, 5000 bytes'
                                 ' sent over TLS')


def test_a_guest_already_on_the_target_is_left_alone():
    result = migrate_outcome(run(prepared=refused_prepare(record(present=False)),
                                 target_status=record(pid=300)))
    assert result['moved'] is False and result['runs_on'] == 'kvm2' and result['pid'] == 300
    assert result['already_there'] is True and 'failed' not in result
    assert result['message'] == 'vm1 already runs on kvm2 (pid 300) and not on kvm1: nothing to do'


@pytest.mark.parametrize('source, target, words', [
    (record(present=False), record(present=False),
     'vm1 runs neither on kvm1 (stopped) nor on kvm2 (stopped): nothing to migrate'),
    (record(present=False), record(run_state='paused'),
     'vm1 does not run on kvm1 (stopped) and is paused on kvm2: nothing to migrate'),
    (record(present=False), record(run_state='paused', incoming=True, state='incoming'),
     'vm1 on kvm2 is the target of an earlier migration that was never finalized: run the recover entry point'
     ' of hvops.kvm.migrate (playbooks/recover.yml -e instance=vm1 -e source=kvm1 -e target=kvm2) first'),
    (record(present=False), record(busy=True, run_state=None, state='unknown'),
     'another run is working on vm1 on kvm2 (it holds the instance\'s lock); try again once it is done'),
    (record(present=False), record(run_state=None, state='unknown', error='timed out'),
     'the monitor of vm1 on kvm2 did not answer (timed out); look at that QEMU first'),
])
def test_refusals_when_the_source_has_nothing_to_migrate(source, target, words):
    result = migrate_outcome(run(prepared=refused_prepare(source), target_status=target))
    assert result['refused'] is True and result['failed'] is True and result['moved'] is False
    assert result['message'] == 'Not migrating vm1 from kvm1 to kvm2: %s.' % words


def test_a_copy_on_the_target_refuses_at_accept_without_rollback():
    refusal = accepted(observed=record(run_state='paused', state='paused', pid=300), msg='refusing')
    del refusal['address']
    result = migrate_outcome(run(prepared=prepared(), accepted=refusal))
    assert result['refused'] is True and result['runs_on'] == 'kvm1' and result['pid'] == 100
    assert 'has a copy on both nodes (running on kvm1, paused on kvm2)' in result['message']


def test_a_source_that_cannot_be_migrated_says_why():
    paused = record(run_state='paused')
    result = migrate_outcome(run(prepared=refused_prepare(paused, msg='instance vm1: is paused, not running.'),
                                 target_status=record(present=False)))
    assert result['message'] == 'Not migrating vm1 from kvm1 to kvm2: instance vm1: is paused, not running.'


def test_a_prepare_that_failed_without_looking_is_a_refusal():
    result = migrate_outcome(run(prepared={'failed': False, 'msg': 'lock held for 60 s'}))
    assert result['refused'] is True and result['error'] == 'lock held for 60 s'


def test_nothing_ran():
    assert migrate_outcome(run())['refused'] is True


def test_check_mode_predicts_and_a_failed_check_is_a_refusal():
    result = migrate_outcome(run(check_mode=True, prepared=prepared(), accepted=accepted(changed=True)))
    assert result['check_mode'] is True and result['moved'] is False and result['runs_on'] == 'kvm1'
    assert result['message'].startswith('Check mode: vm1 would move from kvm1 to kvm2. The pre-checks passed:'
                                        ' it runs on kvm1 (pid 100, 64 MiB, pc-i440fx-7.2); kvm2 can take it'
                                        ' (900 MiB available, 192 needed; QEMU 7.2.22).')
    assert 'listening on 127.0.0.1 (ports 49152-49215)' in result['message']
    failed = {'failed': False, 'msg': 'refusing to accept the guest: not enough memory',
              'observed': record(present=False)}
    result = migrate_outcome(run(check_mode=True, prepared=prepared(), accepted=failed))
    assert result['refused'] is True and result['message'].endswith('not enough memory.')


def failure(**given):
    base = dict(prepared=prepared(), accepted=accepted(), failed_task='hvops.kvm.migrate : Migrate from the source',
                failure={'msg': 'migration did not complete', 'stats': STATS, 'started_at': 101.0,
                         'finished_at': 103.0})
    base.update(given)
    return migrate_outcome(run(**base))


def test_a_failure_rolled_back():
    result = failure(rollback_target={'changed': True, 'target_dead': True},
                     rollback_source={'changed': True, 'pid': 100})
    assert result['failed'] is True and result['rolled_back'] is True and result['moved'] is False
    assert result['runs_on'] == 'kvm1' and result['pid'] == 100 and result['uri'] == 'tcp:127.0.0.1:49152'
    assert result['stats']['transferred_bytes'] == 5000
    assert (result['migration_started'], result['migration_finished']) == (101.0, 103.0)
    assert result['message'] == (
        'Migration of vm1 from kvm1 to kvm2 failed in "hvops.kvm.migrate : Migrate from the source": migration did'
        ' not complete. Rolled back: the incoming copy on kvm2 was removed, and vm1 runs on kvm1 (pid 100).')
    nothing = failure(rollback_target={'changed': False, 'target_dead': True},
                      rollback_source={'changed': False, 'pid': 100})
    assert 'Rolled back: nothing was left on kvm2, and vm1 runs on kvm1 (pid 100).' in nothing['message']


def test_a_rollback_that_could_not_remove_the_target_copy_says_so():
    result = failure(rollback_target={'failed': True, 'msg': 'refusing to kill it'}, rollback_source={'skipped': True})
    assert result['runs_on'] is None and result['rolled_back'] is False
    assert 'Rollback stopped: removing the incoming copy on kvm2 failed (refusing to kill it)' in result['message']


def test_a_silent_target_killed_on_the_sources_evidence_says_so():
    result = failure(rollback_status=record(pid=100, migration_status='cancelled'),
                     rollback_target={'changed': True, 'target_dead': True, 'silent': True, 'actions': ['kill']},
                     rollback_source={'changed': False, 'pid': 100})
    assert result['rolled_back'] is True and result['runs_on'] == 'kvm1' and result['pid'] == 100
    assert result['message'].endswith('Rolled back: the incoming copy on kvm2, whose QEMU did not answer, was'
                                      ' killed, and vm1 runs on kvm1 (pid 100).')
    # Only a real true says so.
    quiet = failure(rollback_target={'changed': True, 'target_dead': True, 'silent': 'yes'},
                    rollback_source={'changed': False, 'pid': 100})
    assert 'Rolled back: the incoming copy on kvm2 was removed' in quiet['message']


def test_a_target_copy_left_behind_while_the_source_runs_says_where_the_guest_runs():
    result = failure(rollback_status=record(pid=100, migration_status='cancelled'),
                     rollback_target={'failed': True, 'msg': 'refusing to kill it'}, rollback_source={'skipped': True})
    assert result['runs_on'] == 'kvm1' and result['pid'] == 100 and result['rolled_back'] is False
    assert 'NOT resumed' not in result['message']
    assert ('vm1 runs on kvm1 (pid 100), but removing the incoming copy on kvm2 failed (refusing to kill it):'
            ' that copy, never resumed, is left there. Look at kvm2, then run the recover') in result['message']
    # A paused or silent source, or a failed status: the old words, the guest may run nowhere.
    for status in (record(pid=100, run_state='paused'), record(pid=100, run_state=None),
                   {'failed': True, 'msg': 'unreachable'}, {'skipped': True}):
        doubt = failure(rollback_status=status, rollback_target={'failed': True, 'msg': 'refusing'},
                        rollback_source={'skipped': True})
        assert doubt['runs_on'] is None and 'so the guest was NOT resumed on kvm1' in doubt['message'], status


def test_a_silent_source_after_the_target_was_removed_says_the_guest_runs_nowhere_for_now():
    result = failure(rollback_status=record(pid=100, run_state=None, state='unknown', error='QEMU pid 100 is stopped'),
                     rollback_target={'changed': True, 'target_dead': True},
                     rollback_source={'failed': True, 'msg': 'cannot tell what the copy here is'})
    assert result['runs_on'] is None and result['rolled_back'] is False
    assert ('The incoming copy on kvm2 is gone, but the copy on kvm1 does not answer (QEMU pid 100 is stopped),'
            ' so it was not resumed: the guest runs nowhere until that QEMU answers again.') in result['message']


def test_a_source_that_did_not_resume_says_so():
    result = failure(rollback_target={'changed': True, 'target_dead': True},
                     rollback_source={'failed': True, 'msg': 'cont refused'})
    assert result['runs_on'] is None
    assert 'but resuming the guest on kvm1 failed (cont refused): run the recover entry point' in result['message']


def test_a_failure_after_finalize_leaves_the_guest_on_the_target():
    result = failure(failed_task='hvops.kvm.migrate : Confirm on the source', failure={'msg': 'unreachable'},
                     finalized={'state': 'running', 'pid': 200})
    assert result['moved'] is True and result['runs_on'] == 'kvm2' and result['pid'] == 200
    assert result['migration_started'] is None and result['migration_finished'] is None
    assert 'The guest runs on kvm2 (pid 200), but its migrated-away copy on kvm1 was not removed' in \
        result['message']


def test_not_a_run():
    with pytest.raises(AnsibleFilterError):
        migrate_outcome(['vm1'])


def test_a_role_that_failed_before_its_first_phase_touched_nothing():
    result = migrate_outcome({'instance': 'vm1', 'source': 'kvm1', 'target': 'kvm2', 'started': 1, 'now': 1,
                              'failed_task': 'hvops.kvm.migrate : Validating arguments',
                              'failure': {'msg': "migrate_timeout:\n  'soon' is not an integer."}})
    assert result['moved'] is False and result['runs_on'] == 'kvm1' and result['rolled_back'] is False
    assert result['message'] == ('Migration of vm1 from kvm1 to kvm2 failed before it started, in "hvops.kvm.migrate'
                                 ' : Validating arguments": migrate_timeout: \'soon\' is not an integer. Nothing was'
                                 ' changed.')


def test_a_node_result_with_hostile_times_is_still_described():
    result = migrate_outcome(run(
        prepared=prepared(), accepted=accepted(),
        migrated={'uri': 'tcp:127.0.0.1:49152', 'tls': False, 'stats': STATS, 'started_at': 'soon; rm -rf /',
                  'finished_at': True, 'timing': {'completed_at': None}},
        finalized={'state': 'running', 'pid': 200}))
    assert result['moved'] is True and result['runs_on'] == 'kvm2'
    assert result['migration_started'] is None and result['migration_finished'] is None
