"""The hvops.kvm.kvm_host role through real ansible-playbook runs on localhost.

The packages are installed on the test machine already (tools/setup.sh), so apt
reports ok; the state directory goes to a temporary directory. The apt cache is
not refreshed, so the tests need no network.
"""
import json
import os
import shutil
import subprocess

import pytest

from ansible_run import run_playbook, write_local_inventory

HOST_VARS = {'kvm_host_apt_update_cache': False}


@pytest.fixture(scope='module', autouse=True)
def debian_with_packages():
    if not os.path.exists('/etc/debian_version') or shutil.which('apt-get') is None:
        pytest.skip('the kvm_host role is for Debian and Ubuntu')
    missing = [tool for tool in ('qemu-system-x86_64', 'qemu-img', 'socat', 'ip') if shutil.which(tool) is None]
    if missing:
        message = '%s not installed (make setup installs them)' % ', '.join(missing)
        if os.environ.get('CI') == 'true':
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def play(tmp_path):
    """play(**role_vars) -> path of a playbook applying the role to localhost."""
    inventory = write_local_inventory(str(tmp_path / 'inventory.ini'))

    def write(**role_vars):
        role_vars = dict(HOST_VARS, kvm_host_run_dir=str(tmp_path / 'run'), **role_vars)
        path = str(tmp_path / 'site.yml')
        with open(path, 'w') as handle:
            json.dump([{'name': 'Prepare the node', 'hosts': 'localhost', 'gather_facts': False,
                        'roles': [{'role': 'hvops.kvm.kvm_host', 'vars': role_vars}]}], handle, indent=1)
        return inventory, path
    return write


def stats(result):
    return result.data['stats']['localhost']


def task(result, suffix):
    """The result of the task whose name ends with suffix (role tasks are prefixed)."""
    found = [res for name, res in result.tasks() if name.endswith(suffix)]
    assert found, [name for name, _res in result.tasks()]
    return found[-1]


def test_second_run_changes_nothing_and_check_mode_touches_nothing(play, tmp_path):
    inventory, book = play()
    run_dir = str(tmp_path / 'run')

    predicted = run_playbook(inventory, book, check=True)
    assert predicted.rc == 0, predicted
    assert stats(predicted)['changed'] == 1, 'only the state directory is missing'
    assert task(predicted, 'Create the state directory')['changed'] is True
    assert not os.path.exists(run_dir), 'check mode created the state directory'

    first = run_playbook(inventory, book)
    assert first.rc == 0, first
    assert stats(first)['changed'] == 1 and stats(first)['failures'] == 0
    assert task(first, 'Install QEMU, qemu-utils and socat')['changed'] is False
    assert os.stat(run_dir).st_mode & 0o777 == 0o700
    facts = task(first, "Gather the node's KVM facts")['ansible_facts']['kvm_node']
    assert facts['run_dir'] == run_dir and facts['instances'] == {}
    assert facts['hypervisor']['qemu']['path'] == shutil.which('qemu-system-x86_64')

    second = run_playbook(inventory, book)
    assert second.rc == 0, second
    assert stats(second)['changed'] == 0 and stats(second)['ok'] > 0

    checked = run_playbook(inventory, book, check=True)
    assert checked.rc == 0, checked
    assert stats(checked)['changed'] == 0


def test_a_loose_state_directory_is_tightened(play, tmp_path):
    inventory, book = play()
    run_dir = tmp_path / 'run'
    run_dir.mkdir(mode=0o755)
    os.chmod(str(run_dir), 0o755)
    result = run_playbook(inventory, book)
    assert result.rc == 0, result
    assert task(result, 'Create the state directory')['changed'] is True
    assert os.stat(str(run_dir)).st_mode & 0o777 == 0o700


def test_a_missing_bridge_fails_clearly(play, tmp_path):
    inventory, book = play(kvm_host_bridges=['hvk-nobr0', 'hvk-nobr1'])
    result = run_playbook(inventory, book)
    assert result.rc != 0
    failed = task(result, 'Check that the bridges for guests exist')
    assert failed.get('failed') is True
    message = failed['msg']
    assert 'Bridges hvk-nobr0, hvk-nobr1 missing on localhost' in message
    assert 'does not create them' in message
    names = [name for name, _res in result.tasks()]
    assert not any(name.endswith("Gather the node's KVM facts") for name in names), 'went on after the failure'
    assert stats(result)['changed'] == 1, 'only the state directory was made'


def test_an_existing_bridge_passes(play):
    bridge = 'hvk-br%d' % (os.getpid() % 10000)
    made = subprocess.run(['ip', 'link', 'add', 'name', bridge, 'type', 'bridge'],
                          capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip('cannot create a test bridge here: %s' % made.stderr.strip())
    try:
        inventory, book = play(kvm_host_bridges=[bridge])
        result = run_playbook(inventory, book)
        assert result.rc == 0, result
        assert task(result, 'List the bridges of the node')['changed'] is False
        checked = run_playbook(inventory, book, check=True)
        assert checked.rc == 0 and stats(checked)['changed'] == 0, checked
    finally:
        subprocess.run(['ip', 'link', 'delete', bridge], check=False)


def test_problems_are_shown_and_fail_the_play_only_when_asked(play, tmp_path):
    # A pidfile nobody holds: an instance whose QEMU died and left files behind.
    pid_dir = tmp_path / 'run' / 'pid'
    pid_dir.mkdir(parents=True)
    os.chmod(str(tmp_path / 'run'), 0o700)
    (pid_dir / 'ghost.pid').write_text('999999\n')

    inventory, book = play(kvm_host_facts_subset=['instances'])
    shown = run_playbook(inventory, book)
    assert shown.rc == 0, shown
    assert any('instance ghost crashed' in p for p in task(shown, "Show the node's problems")['msg'])

    inventory, book = play(kvm_host_facts_subset=['instances'], kvm_host_fail_on_problems=True)
    failed = run_playbook(inventory, book)
    assert failed.rc != 0
    message = task(failed, "Fail on the node's problems")['msg']
    assert message.startswith('localhost is not ready for guests: instance ghost crashed'), message
