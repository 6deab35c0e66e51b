"""Node facts parsers against fixture copies of /proc files and QEMU output."""
import os

import pytest

from ansible_collections.hvops.kvm.plugins.module_utils import _nodeinfo, _proc, _qemu, _qmp
from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._layout import NodeLayout

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')


def fixture(name):
    with open(os.path.join(FIXTURES, name)) as handle:
        return handle.read()


# -- gather_subset ---------------------------------------------------------------
@pytest.mark.parametrize('requested, wanted', [
    (None, ['agent', 'cpu', 'hypervisor', 'instances', 'memory', 'storage']),
    ([], ['agent', 'cpu', 'hypervisor', 'instances', 'memory', 'storage']),
    (['all'], ['agent', 'cpu', 'hypervisor', 'instances', 'memory', 'storage']),
    (['agent'], ['agent', 'instances']),
    (['all', '!agent'], ['cpu', 'hypervisor', 'instances', 'memory', 'storage']),
    (['memory'], ['memory']),
    (['memory', 'instances', 'memory'], ['instances', 'memory']),
    (['!instances'], ['cpu', 'hypervisor', 'memory', 'storage']),
    (['all', '!instances', '!hypervisor'], ['cpu', 'memory', 'storage']),
    (['storage'], ['storage']),
    (['memory', '!memory'], []),
    (['!all'], []),
    ([' cpu '], ['cpu']),
])
def test_gather_subset_reads_like_setup(requested, wanted):
    assert _nodeinfo.resolve_subsets(requested) == wanted


@pytest.mark.parametrize('bad', [['disks'], ['!network'], ['min']])
def test_unknown_subsets_are_refused_by_name(bad):
    with pytest.raises(ValidationError) as err:
        _nodeinfo.resolve_subsets(bad)
    assert repr(bad[0]) in str(err.value) and 'instances' in str(err.value)


# -- memory ----------------------------------------------------------------------
def test_meminfo_values_are_kib_and_hugepage_counts_are_kept():
    info = _proc.parse_meminfo(fixture('meminfo_el6_no_memavailable.txt'))
    assert info['MemTotal'] == 8057216
    assert info['SReclaimable'] == 307200
    assert info['HugePages_Total'] == 0
    assert info['VmallocTotal'] == 34359738367
    assert 'MemAvailable' not in info


def test_available_memory_comes_from_memavailable_when_the_kernel_has_it():
    info = _proc.parse_meminfo(fixture('meminfo_bookworm.txt'))
    assert _proc.available_kib(info) == info['MemAvailable']
    facts = _nodeinfo.memory_facts(info, [])
    assert facts['total_mb'] == info['MemTotal'] // 1024
    assert facts['free_mb'] == info['MemAvailable'] // 1024
    assert facts['used_mb'] == (info['MemTotal'] - info['MemAvailable']) // 1024
    assert facts['host_used_mb'] == facts['used_mb']
    assert facts['committed_mb'] == 0 and facts['guest_resident_mb'] == 0
    assert facts['allocatable_mb'] == facts['free_mb']
    assert facts['swap_total_mb'] == 0


def test_old_kernels_count_free_buffers_page_cache_and_reclaimable_slab():
    info = _proc.parse_meminfo(fixture('meminfo_el6_no_memavailable.txt'))
    # MemFree + Buffers + (Cached - Shmem) + SReclaimable
    assert _proc.available_kib(info) == 512344 + 204800 + (3145728 - 524288) + 307200
    facts = _nodeinfo.memory_facts(info, [])
    assert facts['total_mb'] == 7868
    assert facts['free_mb'] == 3560
    assert facts['used_mb'] == 4308
    assert facts['swap_total_mb'] == facts['swap_free_mb'] == 2047


def test_guests_are_split_out_of_used_and_their_untouched_memory_is_not_allocatable():
    info = _proc.parse_meminfo(fixture('meminfo_el6_no_memavailable.txt'))
    # A 1 GiB guest that touched 256 MiB; a 512 MiB guest whose QEMU is at 600 MiB.
    guests = [(1024, 256 * 1024), (512, 600 * 1024)]
    facts = _nodeinfo.memory_facts(info, guests)
    assert facts['committed_mb'] == 1536
    assert facts['guest_resident_mb'] == 856
    assert facts['host_used_mb'] == (4411432 - 856 * 1024) // 1024
    # Only the first guest may still grow (by 768 MiB); QEMU overhead is not negative.
    assert facts['allocatable_mb'] == (3645784 - 768 * 1024) // 1024
    assert facts['free_mb'] == 3560


def test_allocatable_never_goes_below_zero():
    info = {'MemTotal': 1024 * 1024, 'MemAvailable': 100 * 1024}
    facts = _nodeinfo.memory_facts(info, [(4096, 0)])
    assert facts['allocatable_mb'] == 0 and facts['committed_mb'] == 4096


# -- cpu -------------------------------------------------------------------------
def test_intel_host_with_vmx():
    cpu = _nodeinfo.parse_cpuinfo(fixture('cpuinfo_intel_vmx.txt'))
    assert cpu == {
        'count': 4,
        'model': 'Intel(R) Core(TM) i5-7200U CPU @ 2.50GHz',
        'vendor': 'GenuineIntel',
        'sockets': 1,
        'cores': 2,
        'threads_per_core': 2,
        'virtualization_flags': ['vmx'],
        'virtualization': 'vmx',
        'virtualized': False,
    }


def test_amd_host_with_svm_on_two_sockets():
    cpu = _nodeinfo.parse_cpuinfo(fixture('cpuinfo_amd_svm.txt'))
    assert cpu['count'] == 4
    assert cpu['model'] == 'AMD EPYC 7251 8-Core Processor'
    assert cpu['vendor'] == 'AuthenticAMD'
    assert (cpu['sockets'], cpu['cores'], cpu['threads_per_core']) == (2, 4, 1)
    assert cpu['virtualization'] == 'svm' and cpu['virtualization_flags'] == ['svm']
    assert cpu['virtualized'] is False


def test_virtual_machine_without_virtualisation_flags():
    cpu = _nodeinfo.parse_cpuinfo(fixture('cpuinfo_amd_vm_no_virt.txt'))
    assert cpu['count'] == 2
    assert cpu['model'] == 'AMD EPYC'
    assert cpu['virtualization'] is None and cpu['virtualization_flags'] == []
    assert cpu['virtualized'] is True


def test_an_architecture_without_x86_fields_still_counts_processors():
    text = ('processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm cpuid\n'
            'CPU implementer\t: 0x41\n\nprocessor\t: 1\nBogoMIPS\t: 50.00\n')
    cpu = _nodeinfo.parse_cpuinfo(text)
    assert cpu['count'] == 2 and cpu['model'] is None and cpu['sockets'] is None
    assert cpu['virtualization'] is None and cpu['virtualized'] is False


def test_empty_cpuinfo():
    assert _nodeinfo.parse_cpuinfo('')['count'] == 0


# -- QEMU ------------------------------------------------------------------------
@pytest.mark.parametrize('text, version', [
    ('QEMU PC emulator version 0.12.1 (qemu-kvm-0.12.1.2), Copyright (c) 2003-2008 Fabrice Bellard',
     (0, 12, 1)),
    ('QEMU emulator version 1.5.3 (qemu-kvm-1.5.3-175.el7_9.6), Copyright (c) 2003-2008 Fabrice Bellard',
     (1, 5, 3)),
    ('QEMU emulator version 2.11.1(Debian 1:2.11+dfsg-1ubuntu7.42)\n'
     'Copyright (c) 2003-2017 Fabrice Bellard and the QEMU Project developers\n', (2, 11, 1)),
    ('QEMU emulator version 4.2.1 (Debian 1:4.2-3ubuntu6.28)\n'
     'Copyright (c) 2003-2019 Fabrice Bellard and the QEMU Project developers\n', (4, 2, 1)),
    ('QEMU emulator version 6.2.0 (qemu-kvm-6.2.0-11.module+el8.6.0+16538+01ea313d.6)\n', (6, 2, 0)),
    ('QEMU emulator version 6.2.0 (Debian 1:6.2+dfsg-2ubuntu6.22)\n', (6, 2, 0)),
    ('QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n'
     'Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n', (7, 2, 22)),
    ('QEMU emulator version 8.2.2 (Debian 1:8.2.2+ds-0ubuntu1.4)\n', (8, 2, 2)),
    ('QEMU emulator version 8.0.50 (v8.0.0-1739-g5f9dd6a8ce)\n', (8, 0, 50)),
    ('QEMU emulator version 9.1.0\nCopyright (c) 2003-2024 Fabrice Bellard and the QEMU Project developers\n',
     (9, 1, 0)),
    ('QEMU emulator version 10.0\n', (10, 0, 0)),
])
def test_qemu_versions_of_several_releases(text, version):
    assert _qemu.parse_version(text) == version
    assert _qemu.version_string(version) == '%d.%d.%d' % version


@pytest.mark.parametrize('text', ['', None, 'qemu-system-x86_64: -version: invalid option'])
def test_unreadable_versions_are_none(text):
    assert _qemu.parse_version(text) is None
    assert _qemu.version_string(None) == 'unknown'


def test_machine_types_of_qemu_7_2():
    machines, default = _qemu.parse_machine_types(fixture('machine_help_7.2.txt'))
    assert default == 'pc-i440fx-7.2'
    assert machines['pc'] == 'pc-i440fx-7.2'
    assert machines['q35'] == 'pc-q35-7.2'
    assert machines['pc-i440fx-7.2'] is None
    assert 'Supported' not in machines and 'microvm' in machines


def test_hypervisor_facts_from_a_fake_qemu(tmp_path):
    outputs = {
        '-version': (0, 'QEMU emulator version 8.2.2 (Debian 1:8.2.2+ds-0ubuntu1.4)\n', ''),
        '-machine': (0, fixture('machine_help_7.2.txt'), ''),
    }
    calls = []

    def run(argv):
        calls.append(argv)
        return outputs[argv[1]]

    qemu = tmp_path / 'qemu-system-x86_64'
    qemu.write_text('#!/bin/sh\n')
    qemu.chmod(0o755)
    facts, problems = _nodeinfo.hypervisor_facts(run, qemu_binary=str(qemu),
                                                 kvm_device=str(tmp_path / 'no-kvm'))
    assert [argv[1:] for argv in calls] == [['-version'], ['-machine', 'help']]
    assert facts['qemu']['path'] == str(qemu)
    assert facts['qemu']['version'] == '8.2.2' and facts['qemu']['version_info'] == [8, 2, 2]
    assert facts['qemu']['default_machine'] == 'pc-i440fx-7.2'
    assert facts['qemu']['machine_aliases']['q35'] == 'pc-q35-7.2'
    machines = facts['qemu']['machines']
    assert machines.index('pc-i440fx-2.9') < machines.index('pc-i440fx-2.10') < machines.index('pc-i440fx-7.2')
    assert facts['kvm'] == {'device': str(tmp_path / 'no-kvm'), 'present': False, 'usable': False,
                            'reason': facts['kvm']['reason']}
    assert facts['accel'] == 'tcg'
    assert any('no-kvm does not exist' in p and 'TCG' in p for p in problems), problems


def test_hypervisor_problems_name_the_missing_packages(tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', str(tmp_path))
    monkeypatch.setattr(_qmp, 'SOCAT_FALLBACK_DIRS', ())
    cpu = _nodeinfo.parse_cpuinfo(fixture('cpuinfo_amd_vm_no_virt.txt'))
    facts, problems = _nodeinfo.hypervisor_facts(lambda argv: (127, '', ''), cpu=cpu,
                                                 kvm_device=str(tmp_path / 'kvm'))
    assert facts['qemu'] is None
    assert facts['socat'] == {'present': False, 'path': None}
    text = '\n'.join(problems)
    assert 'install the qemu-system-x86 package' in text
    assert 'socat not found: install the socat package' in text
    assert 'no vmx or svm flag' in text and 'nested virtualisation' in text


def test_a_failing_qemu_is_a_problem_not_a_crash(tmp_path):
    qemu = tmp_path / 'qemu-system-x86_64'
    qemu.write_text('#!/bin/sh\n')
    qemu.chmod(0o755)
    facts, problems = _nodeinfo.hypervisor_facts(lambda argv: (1, '', 'cannot load libfoo.so'),
                                                 qemu_binary=str(qemu))
    assert facts['qemu'] is None
    assert any('cannot load libfoo.so' in p for p in problems), problems


# -- locks and run_dir -----------------------------------------------------------
def test_held_flocks_from_proc_locks():
    text = ('1: POSIX  ADVISORY  WRITE 4242 00:1a:1001 0 EOF\n'
            '2: FLOCK  ADVISORY  WRITE 4343 fd:01:2002 0 EOF\n'
            '2: -> FLOCK  ADVISORY  WRITE 4444 fd:01:2002 0 EOF\n'
            '3: OFDLCK ADVISORY  READ  -1 00:05:3003 0 EOF\n'
            '4: FLOCK  ADVISORY  WRITE 4545 103:02:4004 0 EOF\n')
    assert _proc.parse_locks(text) == {(0xfd, 0x01, 2002), (0x103, 0x02, 4004)}


def test_flock_held_matches_device_and_inode(tmp_path):
    path = tmp_path / 'x.lock'
    path.write_text('')
    st = os.stat(str(path))
    key = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    assert _proc.flock_held(str(path), {key})
    assert not _proc.flock_held(str(path), set())
    assert not _proc.flock_held(str(tmp_path / 'missing'), {key})


def test_run_dir_problems(tmp_path):
    layout = NodeLayout(str(tmp_path / 'run'))
    assert _nodeinfo.run_dir_problems(layout) == [], 'a missing run_dir is made on first use'
    layout.ensure()
    assert _nodeinfo.run_dir_problems(layout) == []
    os.chmod(layout.run_dir, 0o755)
    assert _nodeinfo.run_dir_problems(layout) == [], 'readable by others, writable by its owner only'
    os.chmod(layout.run_dir, 0o775)
    assert ['mode 0775' in p for p in _nodeinfo.run_dir_problems(layout)] == [True]


def test_instance_names_come_from_definitions_runtimes_and_pidfiles(tmp_path):
    layout = NodeLayout(str(tmp_path / 'run'))
    assert _nodeinfo.instance_names(layout) == []
    layout.ensure()
    for path in ('conf/a.json', 'conf/b.runtime', 'pid/c.pid', 'conf/.a.json.tmp', 'pid/junk',
                 'conf/.hidden.json'):
        (tmp_path / 'run' / path).write_text('{}')
    assert _nodeinfo.instance_names(layout) == ['a', 'b', 'c']


def test_gather_reads_stopped_and_crashed_instances_without_running_anything(tmp_path):
    from ansible_collections.hvops.kvm.plugins.module_utils._runtime import (
        make_runtime, save_definition, save_runtime)
    from ansible_collections.hvops.kvm.plugins.module_utils._spec import normalize_spec

    layout = NodeLayout(str(tmp_path / 'run'))
    layout.ensure()
    stopped = normalize_spec('stopped1', {'memory': 64, 'vcpus': 2})
    save_definition(layout.paths('stopped1'), stopped)
    crashed = normalize_spec('crash1', {'memory': 32})
    save_definition(layout.paths('crash1'), crashed)
    save_runtime(layout.paths('crash1'), make_runtime(['qemu-system-x86_64'], crashed, 'tcg', (7, 2, 0)))
    # A killed QEMU leaves its (unlocked) pidfile behind; a clean exit would remove it.
    with open(layout.paths('crash1').pidfile, 'w') as handle:
        handle.write('%d\n' % os.getpid())

    def run(argv):
        raise AssertionError('nothing is run for these subsets: %r' % argv)

    facts = _nodeinfo.gather(run, run_dir=layout.run_dir, gather_subset=['instances', 'memory'])
    assert facts['gather_subset'] == ['instances', 'memory']
    assert sorted(facts['instances']) == ['crash1', 'stopped1']
    one = facts['instances']['stopped1']
    assert (one['state'], one['pid'], one['memory_mb'], one['vcpus'], one['defined']) == \
        ('stopped', None, 64, 2, True)
    assert one['sockets']['qmp'] == os.path.join(layout.run_dir, 'ctrl', 'stopped1.qmp')
    assert facts['instances']['crash1']['state'] == 'crashed'
    assert facts['memory']['committed_mb'] == 0
    assert len(facts['problems']) == 1 and facts['problems'][0].startswith('instance crash1 crashed')
    assert os.path.exists(layout.paths('crash1').runtime), 'facts never clean up'
