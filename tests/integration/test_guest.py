"""The test guest (tests/guest/) in real QEMU: ticks, power button, pause, RAM dirtying."""
import os
import re
import time

import pytest

from tests.harness.guest import GuestBuildError, build_image
from tests.harness.system import require_kvm

BANNER = r'^hvops-guest variant=(\w+) start=(\d+) pm=0x([0-9a-f]{4})(?: dirty_mib=(\d+))?$'
TCG_BOOT = 20.0      # seconds to the banner; about 0.1 s when the machine is idle
KVM_BOOT = 60.0      # about 3.6 s here: SeaBIOS is slow under this node's KVM


def banner(qemu, timeout=TCG_BOOT):
    """(line index, match) of the guest's first line."""
    return qemu.serial.wait_for(BANNER, timeout)


def ticks(qemu, after, count, timeout=10.0):
    """The first count tick values after line index after; no new banner may come between."""
    qemu.serial.wait_for(r'^tick ', timeout, start=after + count)
    lines = qemu.serial.lines[after + 1:]
    values = []
    for line in lines:
        assert not line.startswith('hvops-guest'), 'the guest restarted: %r' % lines
        match = re.match(r'^tick (\d+)$', line)
        assert match, 'unexpected serial line %r in %r' % (line, lines)
        values.append(int(match.group(1)))
    return values


def assert_consecutive(values, first=None):
    assert values, 'no tick lines'
    if first is not None:
        assert values[0] == first, (first, values[:5])
    assert values == list(range(values[0], values[0] + len(values))), values


def assert_powers_off(qemu, timeout=10.0):
    qemu.qmp.execute('system_powerdown')
    qemu.serial.wait_for(r'^powerdown$', timeout)
    assert qemu.wait_exit(timeout) == 0, qemu.stderr()


# ------------------------------------------------------------ the builder

def test_build_is_cached_and_named_by_variant_and_options(guest_image, tmp_path):
    first = build_image('dirty', out_dir=str(tmp_path), dirty_mib=8)
    mtime = os.stat(first).st_mtime_ns
    assert build_image('dirty', out_dir=str(tmp_path), dirty_mib=8) == first
    assert os.stat(first).st_mtime_ns == mtime, 'a second build rebuilt the image'
    other = build_image('dirty', out_dir=str(tmp_path), dirty_mib=16)
    assert os.path.basename(first).startswith('guest-dirty8-')
    assert os.path.basename(other).startswith('guest-dirty16-')
    normal, stubborn = guest_image('normal'), guest_image('stubborn')
    with open(normal, 'rb') as one, open(stubborn, 'rb') as two:
        assert one.read() != two.read()
    with open(first, 'rb') as handle:
        data = handle.read()
    assert len(data) == 1024 * 1024 and data[510:512] == b'\x55\xaa'
    with pytest.raises(GuestBuildError, match='unknown guest variant'):
        build_image('sleepy', out_dir=str(tmp_path))
    with pytest.raises(GuestBuildError, match='dirty_mib'):
        build_image('dirty', out_dir=str(tmp_path), dirty_mib=0)


def test_missing_nasm_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', str(tmp_path))
    with pytest.raises(GuestBuildError, match='nasm not found'):
        build_image('normal', out_dir=str(tmp_path))


# ------------------------------------------------------------- the guests

@pytest.mark.parametrize('machine,drive_if', [('pc', 'ide'), ('pc', 'virtio'), ('q35', 'ide')])
def test_normal_guest_ticks_and_obeys_the_power_button(raw_qemu, guest_image, machine, drive_if):
    qemu = raw_qemu(guest_image('normal'), machine=machine, drive_if=drive_if)
    index, match = banner(qemu)
    assert match.group(1) == 'normal'
    assert int(match.group(3), 16) != 0, 'no ACPI PM base found: %r' % match.group(0)
    assert_consecutive(ticks(qemu, index, 10), first=int(match.group(2)))
    assert_powers_off(qemu)


def test_two_boots_start_at_different_values(raw_qemu, guest_image):
    image = guest_image('normal')
    starts = []
    for attempt in range(3):             # a third boot only if the first two collide
        starts.append(int(banner(raw_qemu(image))[1].group(2)))
        if attempt and len(set(starts)) > 1:
            break
    assert len(set(starts)) > 1, starts


def test_pause_and_resume_keep_the_counter_going(raw_qemu, guest_image):
    qemu = raw_qemu(guest_image('normal'))
    index, match = banner(qemu)
    ticks(qemu, index, 5)
    qemu.qmp.execute('stop')
    assert qemu.qmp.execute('query-status')['status'] == 'paused'
    time.sleep(0.3)                      # let what was sent before the pause arrive
    paused_at = len(qemu.serial.lines)
    time.sleep(1.0)
    assert len(qemu.serial.lines) == paused_at, 'the guest printed while paused'
    qemu.qmp.execute('cont')
    values = ticks(qemu, index, paused_at - index + 10)
    assert_consecutive(values, first=int(match.group(2)))


def test_stubborn_guest_ignores_the_power_button(raw_qemu, guest_image):
    qemu = raw_qemu(guest_image('stubborn'))
    index, match = banner(qemu)
    assert match.group(1) == 'stubborn'
    ticks(qemu, index, 3)
    qemu.qmp.execute('system_powerdown')
    pressed_at = len(qemu.serial.lines)
    time.sleep(4.0)
    assert qemu.alive(), 'the stubborn guest powered off'
    values = ticks(qemu, index, pressed_at - index + 20)
    assert_consecutive(values, first=int(match.group(2)))
    assert 'powerdown' not in qemu.serial.lines


def start_dirty_rate(qemu):
    qemu.qmp.execute('calc-dirty-rate', **{'calc-time': 1})


def dirty_rate(qemu):
    """MB/s measured by the calc-dirty-rate started last (one second, page sampling)."""
    deadline = time.monotonic() + 15
    while True:
        result = qemu.qmp.execute('query-dirty-rate')
        if result['status'] == 'measured':
            return result['dirty-rate']
        assert time.monotonic() < deadline, result
        time.sleep(0.1)


@pytest.mark.parametrize('accel', ['tcg', pytest.param('kvm', marks=pytest.mark.kvm)])
def test_dirty_guest_dirties_its_memory_and_keeps_ticking(raw_qemu, guest_image, accel):
    if accel == 'kvm':
        require_kvm()
    timeout = KVM_BOOT if accel == 'kvm' else TCG_BOOT
    dirty = raw_qemu(guest_image('dirty', dirty_mib=64), accel=accel, memory=128)
    # The idle baseline once, under TCG: KVM boots are slow here.
    idle = raw_qemu(guest_image('normal'), memory=128) if accel == 'tcg' else None
    index, match = banner(dirty, timeout)
    assert match.group(1) == 'dirty' and match.group(4) == '64', match.group(0)
    ticks(dirty, index, 10)              # under KVM the first pass faults pages in; let it
    guests = {'dirty': dirty}
    if idle is not None:
        banner(idle)
        guests['idle'] = idle
    for qemu in guests.values():
        start_dirty_rate(qemu)
    measured = {name: dirty_rate(qemu) for name, qemu in guests.items()}
    # Page sampling counts each page once per period: 64 MiB dirtied -> ~64 MB/s.
    assert measured['dirty'] >= 32, measured
    assert measured.get('idle', 0) <= 4, measured
    assert_consecutive(ticks(dirty, index, len(dirty.serial.lines) - index + 5), first=int(match.group(2)))
    assert_powers_off(dirty)


def test_dirty_area_is_limited_to_the_guest_ram(raw_qemu, guest_image):
    qemu = raw_qemu(guest_image('dirty', dirty_mib=64), memory=32)
    index, match = banner(qemu)
    assert 20 <= int(match.group(4)) <= 29, match.group(0)   # RAM top - 3 MiB
    assert_consecutive(ticks(qemu, index, 5))


def test_reset_starts_the_guest_afresh(raw_qemu, guest_image):
    qemu = raw_qemu(guest_image('normal'))
    index, _match = banner(qemu)
    ticks(qemu, index, 3)
    qemu.qmp.execute('system_reset')
    again, _match = qemu.serial.wait_for(BANNER, TCG_BOOT, start=index + 1)
    assert_consecutive(ticks(qemu, again, 3))


@pytest.mark.kvm
def test_normal_guest_under_kvm(raw_qemu, guest_image):
    require_kvm()
    qemu = raw_qemu(guest_image('normal'), accel='kvm')
    index, match = banner(qemu, KVM_BOOT)
    ticks(qemu, index, 5)
    qemu.qmp.execute('stop')
    time.sleep(0.5)
    qemu.qmp.execute('cont')
    values = ticks(qemu, index, len(qemu.serial.lines) - index + 5)
    assert_consecutive(values, first=int(match.group(2)))
    assert_powers_off(qemu)
