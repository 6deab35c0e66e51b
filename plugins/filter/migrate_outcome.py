# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hvops.kvm.migrate_outcome filter: what one run of the hvops.kvm.migrate
role did, from the results of its kvm_migrate phases. Pure: results in, record
out; the role keeps no bookkeeping in Jinja."""

DOCUMENTATION = r'''
name: migrate_outcome
short_description: The outcome of one hvops.kvm.migrate run, from its phases' results
version_added: 0.2.0
author:
  - hvops.kvm developers (!UNKNOWN)
description:
  - Takes what one run of the P(hvops.kvm.migrate#role) role registered (the results of the
    M(hvops.kvm.kvm_migrate) phases on both nodes, the failure it rescued) and returns the
    role's C(migrate_result) - whether the guest moved, where it runs, the statistics, and a
    message that says what happened and what is true now.
  - Also says whether the role must refuse before it starts anything (a copy on both nodes, an
    unfinished earlier migration, another run working on the guest, a monitor that did not
    answer, a guest that runs nowhere), and whether the guest already runs on the target.
  - The role calls it; it is documented because C(migrate_result) is its output.
positional: _input
options:
  _input:
    description:
      - The run - C(instance), C(source), C(target) (inventory hostnames), C(started) and C(now)
        (epoch seconds), C(check_mode), C(ports), C(stat_keys), and the registered results
        C(prepared), C(target_status), C(accepted), C(migrated), C(finalized), C(confirmed),
        C(rollback_status) (the source's status, taken before the rollback), C(rollback_target),
        C(rollback_source), and after a failure C(failure) (the failed
        result) and C(failed_task) (its name). Results of phases that did not run are empty or
        missing.
    type: dict
    required: true
'''

EXAMPLES = r'''
- name: Record the outcome
  ansible.builtin.set_fact:
    migrate_result: "{{ run | hvops.kvm.migrate_outcome }}"
  vars:
    run:
      instance: web
      source: kvm1
      target: kvm2
      started: "{{ started }}"
      now: "{{ now().timestamp() }}"
      prepared: "{{ prepared }}"
      accepted: "{{ accepted }}"
      migrated: "{{ migrated }}"
      finalized: "{{ finalized }}"
      confirmed: "{{ confirmed }}"
'''

RETURN = r'''
_value:
  description:
    - The role's C(migrate_result) (see the role's README) - C(instance), C(source), C(target),
      C(moved), C(runs_on), C(pid), C(uri), C(stats), C(elapsed_s), C(message), and as they apply
      C(tls), C(migration_started), C(migration_finished), C(migration_completed_at),
      C(check_mode), C(already_there), C(refused), C(failed), C(failed_phase), C(error) and
      C(rolled_back).
  type: dict
'''

from ansible.errors import AnsibleFilterError

from ansible_collections.hvops.kvm.plugins.module_utils._states import copy_kind


def _result(run, key):
    value = run.get(key)
    return value if isinstance(value, dict) else {}


def _failed(result):
    return bool(result.get('failed'))


def _refused(result, key):
    """A phase the role runs with failed_when false that did not do its work:
    it ran and its result lacks ``key``, which every success has."""
    return _ran(result) and key not in result


def _ran(result):
    return bool(result) and not result.get('skipped')


def _sentence(text):
    text = str(text).strip()
    return text if text.endswith('.') else text + '.'


def _number(value):
    """A number from a phase's result, or None for one that is missing or is
    not a number (a node's result is not trusted to be well formed)."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _truth(value):
    """A boolean, also from the text an older ansible-core makes of one."""
    if isinstance(value, str):
        return value.strip().lower() in ('true', 'yes', '1')
    return bool(value)


class _Run:
    """The role's registered results, read the same way by every question."""

    def __init__(self, run):
        if not isinstance(run, dict):
            raise AnsibleFilterError('migrate_outcome: the run must be a dictionary, not %s'
                                     % type(run).__name__)
        self.run = run
        self.name = str(run.get('instance'))
        self.source = str(run.get('source'))
        self.target = str(run.get('target'))
        self.prepared = _result(run, 'prepared')
        self.accepted = _result(run, 'accepted')
        self.migrated = _result(run, 'migrated')
        self.finalized = _result(run, 'finalized')
        self.rollback_status = _result(run, 'rollback_status')
        self.rollback_target = _result(run, 'rollback_target')
        self.rollback_source = _result(run, 'rollback_source')
        self.failure = _result(run, 'failure')
        self.recover_hint = ('run the recover entry point of hvops.kvm.migrate (playbooks/recover.yml'
                             ' -e instance=%s -e source=%s -e target=%s)' % (self.name, self.source, self.target))

    # -- the two copies ----------------------------------------------------------
    def statuses(self):
        """(source record, target record): from prepare and accept, or from
        the status phase on the target when prepare refused."""
        source = self.prepared.get('observed') or {}
        target = _result(self.run, 'target_status') if _ran(_result(self.run, 'target_status')) \
            else self.accepted.get('observed') or {}
        return source, target

    def source_kind(self):
        """What the source's status taken before the rollback showed, or None."""
        status = self.rollback_status
        return copy_kind(status) if _ran(status) and not _failed(status) else None

    def already_there(self):
        source, target = self.statuses()
        return bool(source and target) and copy_kind(source) == 'absent' and \
            copy_kind(target) == 'running' and not target.get('incoming')

    def refusal(self):
        """Why the role refuses before anything moved, or None."""
        if not _ran(self.prepared):
            return 'the role stopped before any phase ran'
        source, target = self.statuses()
        if self.already_there():
            return None
        if not source:
            return str(self.prepared.get('msg', 'prepare failed')).rstrip('.')
        name, s_host, t_host = self.name, self.source, self.target
        s_kind, t_kind = copy_kind(source), copy_kind(target) if target else None
        if 'busy' in (s_kind, t_kind):
            return ('another run is working on %s on %s (it holds the instance\'s lock); try again once it is'
                    ' done' % (name, s_host if s_kind == 'busy' else t_host))
        if 'unknown' in (s_kind, t_kind):
            host, record = (s_host, source) if s_kind == 'unknown' else (t_host, target)
            return ('the monitor of %s on %s did not answer (%s); look at that QEMU first'
                    % (name, host, record.get('error')))
        if source.get('incoming') or target.get('incoming'):
            on, since = (t_host, s_host) if target.get('incoming') else (s_host, t_host)
            return ('%s on %s is the target of an earlier migration that was never finalized: run the recover'
                    ' entry point of hvops.kvm.migrate (playbooks/recover.yml -e instance=%s -e source=%s'
                    ' -e target=%s) first' % (name, on, name, since, on))
        if source.get('present') and target.get('present'):
            return ('%s has a copy on both nodes (%s on %s, %s on %s); refusing to migrate onto it. After an'
                    ' interrupted migration, run the recover entry point of hvops.kvm.migrate'
                    ' (playbooks/recover.yml); otherwise remove the copy that should not be there'
                    % (name, source.get('state'), s_host, target.get('state'), t_host))
        if not source.get('present') and target.get('present') and t_kind != 'running':
            return ('%s does not run on %s (%s) and is %s on %s: nothing to migrate'
                    % (name, s_host, source.get('state'), target.get('state'), t_host))
        if not source.get('present') and target and not target.get('present'):
            return ('%s runs neither on %s (%s) nor on %s (%s): nothing to migrate'
                    % (name, s_host, source.get('state'), t_host, target.get('state')))
        if _refused(self.prepared, 'runtime'):
            # The guest is there but cannot be migrated as it is (paused, say).
            return str(self.prepared.get('msg', 'prepare failed')).rstrip('.')
        if _truth(self.run.get('check_mode')) and _refused(self.accepted, 'address'):
            # In check mode nothing follows accept: its refusal is the run's.
            return str(self.accepted.get('msg', 'accept failed')).rstrip('.')
        return None

    # -- the record ----------------------------------------------------------------
    def base(self, moved, runs_on, pid, **more):
        record = {
            'instance': self.name, 'source': self.source, 'target': self.target,
            'moved': moved, 'runs_on': runs_on, 'pid': pid, 'uri': None, 'stats': None,
            'elapsed_s': round((_number(self.run.get('now')) or 0.0) - (_number(self.run.get('started')) or 0.0), 2),
        }
        record.update(more)
        return record

    def stats(self, stats):
        if not isinstance(stats, dict):
            return None
        keys = self.run.get('stat_keys') or sorted(stats)
        return dict((key, stats[key]) for key in keys if key in stats)

    def outcome(self):
        if not _ran(self.prepared) and self.run.get('failed_task'):
            return self.untouched()
        refusal = self.refusal()
        if refusal is not None:
            source, _target = self.statuses()
            return self.base(False, self.source if source.get('present') else None, source.get('pid'),
                             failed=True, refused=True, error=refusal,
                             message='Not migrating %s from %s to %s: %s.'
                             % (self.name, self.source, self.target, refusal))
        if self.already_there():
            _source, target = self.statuses()
            return self.base(False, self.target, target.get('pid'), already_there=True,
                             message='%s already runs on %s (pid %s) and not on %s: nothing to do'
                             % (self.name, self.target, target.get('pid'), self.source))
        if self.failure or self.run.get('failed_task'):
            return self.failed()
        if _truth(self.run.get('check_mode')):
            return self.checked()
        return self.moved()

    def untouched(self):
        """The role failed before its first phase (its arguments, say): the
        guest was not touched and runs where it ran."""
        error = ' '.join(str(self.failure.get('msg', 'unknown error')).split()).rstrip('.')
        task = str(self.run.get('failed_task'))
        return self.base(False, self.source, None, failed=True, failed_phase=task, error=error, rolled_back=False,
                         message='Migration of %s from %s to %s failed before it started, in "%s": %s. Nothing was'
                                 ' changed.' % (self.name, self.source, self.target, task, error))

    def checked(self):
        prepared, accepted = self.prepared, self.accepted
        req = prepared.get('requirements') or {}
        memory = accepted.get('memory') or {}
        message = (
            'Check mode: %(name)s would move from %(source)s to %(target)s. The pre-checks passed: it runs on'
            ' %(source)s (pid %(pid)s, %(mem)s MiB, %(machine)s); %(target)s can take it (%(avail)s MiB available,'
            ' %(need)s needed; QEMU %(qemu)s). A real run would start a paused QEMU on %(target)s listening on'
            ' %(address)s (ports %(ports)s), migrate, resume the guest there and remove it from %(source)s.'
            ' Nothing was changed; the later phases need the real results of the earlier ones, so the check'
            ' stops here.' % {
                'name': self.name, 'source': self.source, 'target': self.target, 'pid': prepared.get('pid'),
                'mem': req.get('memory_mb'), 'machine': req.get('machine'), 'avail': memory.get('available_mb'),
                'need': memory.get('required_mb'), 'qemu': accepted.get('qemu_version'),
                'address': accepted.get('address'), 'ports': self.run.get('ports')})
        return self.base(False, self.source, prepared.get('pid'), check_mode=True, message=message)

    def moved(self):
        migrated, stats = self.migrated, self.migrated.get('stats') or {}
        return self.base(
            True, self.target, self.finalized.get('pid'), uri=migrated.get('uri'), tls=migrated.get('tls'),
            stats=self.stats(stats),
            migration_started=_number(migrated.get('started_at')),
            migration_finished=_number(migrated.get('finished_at')),
            # QEMU's own timestamp of the migration's completion (its start is total_time_ms before).
            migration_completed_at=(migrated.get('timing') or {}).get('completed_at'),
            message='%s moved from %s to %s: migration %s ms, downtime %s ms, %s bytes sent%s' % (
                self.name, self.source, self.target, stats.get('total_time_ms'), stats.get('downtime_ms'),
                stats.get('transferred_bytes'), ' over TLS' if migrated.get('tls') else ' in cleartext'))

    def failed(self):
        failure, task = self.failure, str(self.run.get('failed_task') or '?')
        error = failure.get('msg', 'unknown error')
        # finalize(success) ran: the guest lives on the target, nothing to roll back.
        done = self.finalized.get('state') == 'running'
        rolled_back = not done and _ran(self.rollback_source) and not _failed(self.rollback_source)
        if done:
            runs_on, pid = self.target, self.finalized.get('pid')
            what = ('The guest runs on %s (pid %s), but its migrated-away copy on %s was not removed: %s.'
                    % (self.target, pid, self.source, self.recover_hint))
        elif _failed(self.rollback_target):
            not_removed = 'removing the incoming copy on %s failed (%s)' % (
                self.target, self.rollback_target.get('msg', 'unknown error'))
            if self.source_kind() == 'running':
                # The source never stopped running the guest: say so, whatever the target.
                runs_on, pid = self.source, self.rollback_status.get('pid')
                what = ('%s runs on %s (pid %s), but %s: that copy, never resumed, is left there. Look at %s,'
                        ' then %s.' % (self.name, self.source, pid, not_removed, self.target, self.recover_hint))
            else:
                runs_on, pid = None, None
                what = ('Rollback stopped: %s, so the guest was NOT resumed on %s (the copy on %s may be alive).'
                        ' Look at both nodes, then %s.' % (not_removed, self.source, self.target, self.recover_hint))
        elif rolled_back:
            runs_on, pid = self.source, self.rollback_source.get('pid')
            if self.rollback_target.get('silent') is True:
                left = 'the incoming copy on %s, whose QEMU did not answer, was killed' % self.target
            elif self.rollback_target.get('changed'):
                left = 'the incoming copy on %s was removed' % self.target
            else:
                left = 'nothing was left on %s' % self.target
            what = 'Rolled back: %s, and %s runs on %s (pid %s).' % (left, self.name, self.source, pid)
        elif self.source_kind() == 'unknown':
            runs_on, pid = None, None
            what = ('The incoming copy on %s is gone, but the copy on %s does not answer (%s), so it was not'
                    ' resumed: the guest runs nowhere until that QEMU answers again. A QEMU that is only stopped'
                    ' (SIGSTOP, a freezer) goes on once continued: its migration then fails, its target being'
                    ' gone, and the guest goes on as it was on %s. Then %s.'
                    % (self.target, self.source, self.rollback_status.get('error') or 'no reason given',
                       self.source, self.recover_hint))
        else:
            runs_on, pid = None, None
            what = ('The incoming copy on %s is gone, but resuming the guest on %s failed (%s): %s.'
                    % (self.target, self.source, self.rollback_source.get('msg', 'unknown error'),
                       self.recover_hint))
        started = _number(self.migrated.get('started_at') or failure.get('started_at'))
        finished = _number(self.migrated.get('finished_at') or failure.get('finished_at'))
        return self.base(
            done, runs_on, pid, uri=self.accepted.get('uri'), stats=self.stats(failure.get('stats')),
            migration_started=started, migration_finished=finished if started is not None else None,
            failed=True, failed_phase=task, error=error, rolled_back=rolled_back,
            message='Migration of %s from %s to %s failed in "%s": %s %s' % (
                self.name, self.source, self.target, task, _sentence(error), what))


def migrate_outcome(run):
    """The migrate role's migrate_result for one run; see DOCUMENTATION."""
    return _Run(run).outcome()


class FilterModule:
    """hvops.kvm migrate role filters."""

    def filters(self):
        return {'migrate_outcome': migrate_outcome}
