# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading the kernel's /proc: memory, uptime, a process's resident memory,
and which files have an flock held. Parsers are pure; readers touch nothing."""

import os

PROC = '/proc'


def read_text(path):
    with open(path) as handle:
        return handle.read()


def parse_meminfo(text):
    """{field: value} from /proc/meminfo; values in KiB (HugePages_* are counts)."""
    values = {}
    for line in (text or '').splitlines():
        key, sep, rest = line.partition(':')
        words = rest.split()
        if sep and words and words[0].isdigit():
            values[key.strip()] = int(words[0])
    return values


def meminfo():
    return parse_meminfo(read_text(os.path.join(PROC, 'meminfo')))


def available_kib(info):
    """KiB a new guest could get without swapping: the kernel's MemAvailable, or
    on kernels before 3.14 (which lack it) free memory plus what reclaim frees
    (buffers, page cache except shared memory, reclaimable slab)."""
    if 'MemAvailable' in info:
        return info['MemAvailable']
    cache = info.get('Cached', 0) - info.get('Shmem', 0)
    return info.get('MemFree', 0) + info.get('Buffers', 0) + max(0, cache) + \
        info.get('SReclaimable', 0)


def system_uptime():
    """Seconds since boot, from /proc/uptime."""
    return float(read_text(os.path.join(PROC, 'uptime')).split()[0])


def resident_kib(pid):
    """Resident memory of pid in KiB (from /proc/PID/statm), or 0 when it is gone."""
    try:
        pages = int(read_text(os.path.join(PROC, str(pid), 'statm')).split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * (os.sysconf('SC_PAGE_SIZE') // 1024)


def parse_locks(text):
    """{(major, minor, inode)} of files with an flock held, from /proc/locks."""
    held = set()
    for line in (text or '').splitlines():
        words = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; "1: -> FLOCK ..." waits.
        if len(words) < 6 or words[1] != 'FLOCK':
            continue
        parts = words[5].split(':')
        if len(parts) == 3:
            try:
                held.add((int(parts[0], 16), int(parts[1], 16), int(parts[2])))
            except ValueError:
                continue
    return held


def held_locks():
    """parse_locks of this node's /proc/locks (empty when it cannot be read)."""
    try:
        return parse_locks(read_text(os.path.join(PROC, 'locks')))
    except OSError:
        return set()


def flock_held(path, held):
    """Whether someone holds an flock on path; ``held`` from held_locks."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in held
