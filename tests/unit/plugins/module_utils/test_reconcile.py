import os

from ansible_collections.hvops.kvm.plugins.module_utils._reconcile import Reconciler

MACHINE_HELP = 'Supported machines are:\npc  Standard PC (alias of pc-i440fx-7.2)\npc-i440fx-7.2  Standard PC (default)\n'


def test_the_qemu_binary_is_asked_once_per_task(tmp_path):
    calls = []

    def run(argv):
        calls.append(argv)
        if argv[1] == '-version':
            return 0, 'QEMU emulator version 7.2.22\n', ''
        return 0, MACHINE_HELP, ''

    fake = tmp_path / 'qemu-system-x86_64'
    fake.write_text('')
    os.chmod(str(fake), 0o755)
    reconciler = Reconciler({'name': 'web', 'run_dir': str(tmp_path / 'run'), 'state': 'present',
                             'qemu_binary': str(fake)}, run)
    first = reconciler.plan()
    second = reconciler.plan()
    assert first['spec']['machine'] == second['spec']['machine'] == 'pc-i440fx-7.2'
    assert len(calls) == 2, calls
    assert not os.path.exists(str(tmp_path / 'run')), 'planning writes nothing'
