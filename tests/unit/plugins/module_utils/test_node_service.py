"""The node's boot and shutdown decisions (_node_service), the policy rules
(_policy) and the scope QEMU starts in under systemd (_launch). Pure logic."""
import pytest

from ansible_collections.hvops.kvm.plugins.module_utils import _launch
from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._node_service import boot_candidates, shutdown_order, summary
from ansible_collections.hvops.kvm.plugins.module_utils._policy import POLICY_DEFAULTS, checked_policy, went_down_running


def policy(**given):
    return dict(POLICY_DEFAULTS, **given)


def test_boot_starts_autostart_and_crashed_on_crash_guests_in_order_then_by_name():
    found = [
        ('web-b', 'stopped', policy(autostart=True, autostart_order=20), 64),
        ('web-a', 'crashed', policy(autostart=True, autostart_order=20), 64),
        ('db', 'stopped', policy(autostart=True, autostart_order=10, autostart_delay=5), 512),
        ('batch', 'crashed', policy(restart_policy='on-crash'), 32),
        ('idle', 'stopped', policy(restart_policy='on-crash'), 32),
        ('manual', 'crashed', policy(), 32),
        ('up', 'live', policy(autostart=True), 32),
    ]
    chosen = boot_candidates(found)
    assert [(g['name'], g['why']) for g in chosen] == [
        ('batch', 'crashed'), ('db', 'autostart'), ('web-a', 'autostart'), ('web-b', 'autostart')]
    assert chosen[1]['delay'] == 5 and chosen[1]['memory_mb'] == 512


def test_shutdown_goes_in_reverse_autostart_order_and_only_for_live_guests():
    found = [('a', 'live', policy(autostart_order=1), 32), ('b', 'live', policy(autostart_order=9), 32),
             ('c', 'live', policy(autostart_order=1), 32), ('d', 'stopped', policy(autostart_order=99), 32)]
    assert shutdown_order(found) == ['b', 'c', 'a']


@pytest.mark.parametrize('given, words', [
    ({'autostart': 'yes'}, 'autostart must be true or false'),
    ({'autostart_order': True}, 'autostart_order must be a whole number'),
    ({'autostart_order': 10000}, 'autostart_order must be a whole number from 0 to 9999'),
    ({'autostart_delay': -1}, 'autostart_delay must be a whole number from 0 to 3600'),
    ({'autostart_delay': 1.5}, 'autostart_delay must be a whole number'),
    ({'restart_policy': 'always'}, 'restart_policy must be one of never, on-crash'),
    ({'run_as': 'root'}, 'policy has unknown keys: run_as'),
    (['autostart'], 'policy must be a dictionary'),
])
def test_a_hostile_policy_is_refused(given, words):
    with pytest.raises(ValidationError) as caught:
        checked_policy(given, 'vm1')
    assert words in caught.value.msg


def test_a_policy_is_completed_with_the_defaults():
    assert checked_policy({'autostart': True}) == policy(autostart=True)
    assert checked_policy({'autostart_order': None}) == policy()


@pytest.mark.parametrize('last, runtime_present, crashed', [
    ({'state': 'running'}, False, True),      # the node went down under it
    ({'state': 'running'}, True, False),      # its guest powered it off: the runtime is left
    ({'state': 'stopped'}, False, False),     # stopped by a task or by the node's shutdown
    (None, False, False),                     # never started by this collection
])
def test_a_guest_went_down_with_its_node_only_when_last_left_running_and_run_dir_is_gone(
        last, runtime_present, crashed):
    assert went_down_running(last, runtime_present) is crashed


def test_the_reports_read_as_sentences():
    booted = {'action': 'boot', 'skipped': None, 'started': [{'name': 'db', 'why': 'autostart'}],
              'not_started': [{'name': 'big', 'reason': 'needs 384 MiB'}]}
    assert summary(booted) == ['started db (autostart)', 'NOT started big: needs 384 MiB']
    stopped = {'action': 'shutdown', 'stopped': [
        {'name': 'db', 'how': 'acpi', 'seconds': 1.25}, {'name': 'x', 'error': 'is incoming', 'seconds': 0.1}]}
    assert summary(stopped) == ['db: acpi in 1.2 s', 'x: FAILED: is incoming in 0.1 s']


def test_qemu_starts_in_a_scope_of_its_own_only_where_systemd_runs(monkeypatch):
    argv = ['/usr/bin/qemu-system-x86_64', '-name', 'vm1']
    monkeypatch.setattr(_launch.shutil, 'which', lambda name: '/usr/bin/systemd-run')
    monkeypatch.setattr(_launch.os.path, 'isdir', lambda path: False)
    assert _launch.scope_argv(argv, 'vm1', '/run/hvops-kvm') == argv
    monkeypatch.setattr(_launch.os.path, 'isdir', lambda path: path == '/run/systemd/system')
    scoped = _launch.scope_argv(argv, 'vm1', '/run/hvops-kvm')
    assert scoped[:3] == ['/usr/bin/systemd-run', '--scope', '--quiet']
    assert scoped[-4:] == ['--'] + argv
    assert '--property=Before=hvops-kvm-guests.service' in scoped
    unit = [word for word in scoped if word.startswith('--unit=')][0]
    assert unit.startswith('--unit=hvops-kvm-vm1-') and unit != [
        word for word in _launch.scope_argv(argv, 'vm1', '/run/other') if word.startswith('--unit=')][0]


def test_a_damaged_or_hostile_policy_or_last_file_is_a_clear_error_or_no_evidence(tmp_path):
    from ansible_collections.hvops.kvm.plugins.module_utils._errors import StateError
    from ansible_collections.hvops.kvm.plugins.module_utils._layout import NodeLayout
    from ansible_collections.hvops.kvm.plugins.module_utils._policy import load_last, stored_policy

    layout = NodeLayout(str(tmp_path / 'run'), str(tmp_path / 'state'))
    layout.ensure()
    paths = layout.paths('vm1')
    for content, error, words in (('{"autostart": true,', StateError, 'damaged'),
                                  ('[true]', StateError, 'not in a format'),
                                  ('{"autostart": "yes"}', ValidationError, 'autostart must be true or false'),
                                  ('{"run_as": "root"}', ValidationError, 'unknown keys')):
        with open(paths.policy, 'w') as handle:
            handle.write(content)
        with pytest.raises(error) as caught:
            stored_policy(paths, 'vm1')
        assert words in caught.value.msg
    # A last state that makes no sense is no evidence of anything (not a crash).
    for content in ('{"state": "rm -rf /"}', '{"state": ["running"]}', '{}'):
        with open(paths.last, 'w') as handle:
            handle.write(content)
        assert load_last(paths) is None
