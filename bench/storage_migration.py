"""Live migration with local disks: kvm_migrate's migrate phase with
``storage: copy`` against a raw QMP script doing the same, and its disk copy
against what the link carries (issue 13).

Two simulated hosts on this machine (bench.migration's Lab: two run_dirs,
loopback), the idle test guest of tests/guest under TCG with 512 MiB of RAM
holding random data (``ram_from_file``, the target's RAM preallocated at
accept, untimed, as in bench.migration), booting from a read-only copy of the
test guest image both hosts see (a read-only disk is not copied), and a second
disk: a 1 GiB **raw** image of random data (made once per run, untimed: raw is
the simple fair case, every byte allocated, none compressible or skipped as
zero). Images live in a directory of /dev/shm (tmpfs) per host, a's mapped to
b's with ``storage_map``: what is measured is the copy over the link, not this
VM's virtual disk, which every way would share alike.

This machine is a VM whose host backs its memory lazily and takes back what
it frees (virtio-balloon free page reporting): a page used for the first time
since costs a fault in the host. Writing 1 GiB into a new file of /dev/shm took
1.1-2.8 s here, and 0.43 s right after as much had been written to another
file and removed. A target image is such a new file, and that cost, which
varies by itself from run to run, went into every way's copy. So each timed
run, whatever the way, comes right after 1.25 GiB written to a scratch file
in /dev/shm and removed (untimed): the target's image then gets pages the host
has backed. ``library, cold`` is the library's migrate phase without that, to
show what it costs here.

Each round prepares the same way for every way, untimed: the guest started on
a, ``prepare`` and ``accept`` (``storage: copy``) through the library, so the
target is a paused incoming QEMU that made an empty raw image of 1 GiB and
exports it writable from its NBD server. Then, in an order that changes from
round to round:

* ``raw``: a minimal QMP script on a plain unix socket doing the library's
  sequence: connect, ``migrate-set-capabilities`` (the library's list,
  pause-before-switchover on) and ``migrate-set-parameters`` (its values),
  ``blockdev-add`` of an NBD client node on the target's export,
  ``blockdev-mirror`` (the library's arguments, ``mirror_arguments``: sync
  full, auto-dismiss off, a 64 MiB buffer; its job and node names), wait for
  ``BLOCK_JOB_READY``, ``migrate``, wait for the MIGRATION
  event ``pre-switchover``, ``block-job-cancel`` (which, on a ready mirror,
  ends it with everything copied, as the library does), wait for
  ``BLOCK_JOB_COMPLETED``, ``job-dismiss``, ``blockdev-del``,
  ``migrate-continue``, wait for the MIGRATION event ``completed``, close;
* ``library``: ``_migration.run_phase(phase=migrate, storage=copy, nbd=...)``
  in-process (its lock, socat QMP session, checks, the same steps, its
  statistics);
* ``nbd link``: ``qemu-img convert -n`` of the same source image into the same
  kind of export (a target made by the same accept);
* ``tcp stream``: the image's bytes from one socat to another over the same
  loopback path (127.0.0.1), written to /dev/null;
* ``library, cold``: the library's way, its memory not warmed (above);
* ``raw, 16 MiB buffer``: the raw script with QEMU's default mirror buffer
  (no ``buf-size``), as the library mirrored before it set one.

What is timed: for ``raw`` and ``library`` the whole migrate step, from the
call that starts it (the script connecting to QMP; ``run_phase`` being
called) to its return after QEMU's migration completed (the script: the
completed event read and the socket closed; the library: the phase's result
with its statistics): disk copy, switch-over and RAM migration together. The
mirror phase inside it, from ``blockdev-mirror`` answered until every job is
seen ready (the library: its own ``storage.copy_seconds``, measured the same
way), gives the copy's bytes/s. For the link ways the wall time of the copying
processes (qemu-img convert; both socats).

"The link" for the disk copy is ``qemu-img convert -n`` into the export: the
mirror job's path is an NBD client in the source QEMU, loopback TCP, and the
target QEMU's NBD server writing a raw image, and qemu-img drives the very same
client, socket and server with QEMU's own block layer: what QEMU's own tool
gets through that path here, the practical limit of it. (Not a hard one: by
default qemu-img writes in order, 8 requests of 2 MiB in flight; the mirror
writes out of order, up to 16 of 4 MiB, and may be a little faster.) A plain
TCP stream is shown beside it for
what the loopback itself carries: on one machine it is memory copies through
the kernel and much faster than any NBD writing into an image, so a ratio to
it says little about the mirror.

Goals (issue 13): library / raw at most 1.15x, mirror / link at least 0.8x.

Found on the way, on this machine (runs of the same pieces outside the
benchmark, and a first run of it): with QEMU's default mirror buffer (16 MiB, so 1 MiB requests) the
copy of 1 GiB took about 1 s when all went well, but 2.4-3.7 s in 13 runs of
47, with the CPUs partly idle and the same CPU time spent (waiting, not
working); with a 64 MiB buffer (4 MiB requests) none of 32 runs took over
1.8 s, so the library sets it (``raw, 16 MiB buffer`` keeps showing the
default). Pinning the two QEMUs to one CPU, or to one each, did not help, nor
did a granularity of 1 MiB. Before the memory was warmed, the target QEMU's
CPU time for the same copy varied from 0.9 to 3.9 s. ``blockdev-add`` of the
NBD client node takes about 87 ms of the raw script's 110 ms before the copy
starts, inside QEMU, for every way alike.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench import common
from bench.common import BarChart, Samples, Settler, Table, fmt, fmt_ratio, fmt_summary
from bench.migration import Lab, compact, library_settings, run_order, source_stats

from ansible_collections.hvops.kvm.plugins.module_utils import _migration_tls
from ansible_collections.hvops.kvm.plugins.module_utils._migration_settings import parse_uri
from ansible_collections.hvops.kvm.plugins.module_utils._storage_copy import JOB_PREFIX, NODE_PREFIX, mirror_arguments

NAME = 'storage_migration'
TITLE = 'Live migration with local disks (kvm_migrate storage: copy)'
MIB = 1024 * 1024
MEMORY_MIB = 512
DISK_MIB = 1024
GROUP = '1 GiB raw disk + 512 MiB RAM, random data'
WAYS = ('raw', 'library', 'nbd link', 'tcp stream', 'library, cold', 'raw, 16 MiB buffer')
LABELS = {
    'raw': 'raw QMP script',
    'raw, 16 MiB buffer': 'raw QMP script, QEMU\'s 16 MiB mirror buffer',
    'library': 'migrate phase, in-process',
    'library, cold': 'migrate phase, memory not warmed',
    'nbd link': 'qemu-img convert -n into the export',
    'tcp stream': 'socat to socat, loopback TCP',
}
GOAL_WALL = 1.15
GOAL_LINK = 0.8
STREAM_BUFFER = 1 << 20
LINK_TIMEOUT = 300
# Written to /dev/shm and removed just before each timed run (see the docstring).
WARM_MIB = DISK_MIB + 256


class StorageLab(Lab):
    """bench.migration's Lab with a directory of images in /dev/shm per host:
    a's holds the 1 GiB source image, b's gets the target's."""

    def __init__(self):
        super().__init__()
        self.disk_base = tempfile.mkdtemp(prefix='hkb-sto-', dir='/dev/shm')
        self.disk_dirs = dict((host, os.path.join(self.disk_base, host)) for host in ('a', 'b'))
        for path in [self.disk_base] + list(self.disk_dirs.values()):
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o711)    # the QEMU user reaches the images
        self.source_image = os.path.join(self.disk_dirs['a'], 'data.img')
        self.target_image = os.path.join(self.disk_dirs['b'], 'data.img')

    def make_source(self, mib):
        """The source image: mib MiB of random bytes, the QEMU user's."""
        with open(self.source_image, 'wb') as handle:
            for _chunk in range(mib // 16):
                handle.write(os.urandom(16 * MIB))
        common.give_to_qemu(self.source_image)
        return self.source_image

    def warm_memory(self, mib):
        """Write mib MiB to a scratch file in /dev/shm and remove it: the
        pages just freed are ones this VM's host has backed, and a target
        image written right after gets them (see the docstring)."""
        scratch = os.path.join(self.disk_base, 'warm')
        chunk = bytes(16 * MIB)
        with open(scratch, 'wb') as handle:
            for _chunk in range(mib // 16):
                handle.write(chunk)
        os.unlink(scratch)

    def disks(self):
        """The guest's disks: the test guest image, read-only (shared: both
        hosts see the same file), and the raw data disk, copied."""
        return [{'path': self.disk(), 'interface': 'virtio', 'readonly': True},
                {'path': self.source_image, 'format': 'raw', 'interface': 'virtio'}]

    def ready_copy(self):
        """The guest running on a, an incoming QEMU on b exporting its new
        image: (prepared, accepted)."""
        self.reset()
        self.start('a', MEMORY_MIB, disks=self.disks())
        prepared = self.phase('a', 'prepare', storage='copy')
        accepted = self.accept('b', prepared, storage='copy', disks=prepared['disks'],
                               storage_map={self.disk_dirs['a']: self.disk_dirs['b']})
        assert accepted['nbd'] and os.path.isfile(self.target_image), accepted
        return prepared, accepted

    def reset(self):
        try:
            super().reset()
        finally:
            if os.path.lexists(self.target_image):
                os.unlink(self.target_image)

    def destroy(self):
        try:
            super().destroy()
        finally:
            shutil.rmtree(self.disk_base, ignore_errors=True)


# -- the ways ----------------------------------------------------------------------
def copy_names(accepted):
    """[(disk index, export, node, job)] of the copied disks, named as the library names them."""
    out = []
    for export in accepted['nbd']['exports']:
        index = export['index']
        out.append((index, export['name'], '%s%d' % (NODE_PREFIX, index), '%s%d' % (JOB_PREFIX, index)))
    return out


def migrate_raw(lab, accepted, settings, default_buffer=False):
    """The minimal script (see the docstring); wall time and its parts.
    ``default_buffer``: the mirror jobs without the library's buf-size."""
    caps, params = settings
    params = dict(params, **_migration_tls.parameters())
    uri = accepted['uri']
    host, _port = parse_uri(uri)
    port = accepted['nbd']['port']
    copies = copy_names(accepted)
    start = time.perf_counter()
    qmp = lab.qmp('a')
    qmp.execute('migrate-set-capabilities', {'capabilities': caps})
    qmp.execute('migrate-set-parameters', params)
    for index, export, node, job in copies:
        qmp.execute('blockdev-add', {'driver': 'nbd', 'node-name': node, 'export': export,
                                     'server': {'type': 'inet', 'host': host, 'port': str(port)}})
        arguments = mirror_arguments(index, job, node)
        if default_buffer:
            del arguments['buf-size']
        qmp.execute('blockdev-mirror', arguments)
    copy_start = time.perf_counter()
    ready_events = [qmp.wait_event('BLOCK_JOB_READY', lambda e, job=job: e['data']['device'] == job)
                    for _index, _export, _node, job in copies]
    copy_end = time.perf_counter()
    qmp.execute('migrate', {'uri': uri})
    paused = qmp.wait_event('MIGRATION', lambda e: e['data']['status'] in ('pre-switchover', 'failed', 'cancelled'))
    assert paused['data']['status'] == 'pre-switchover', paused
    switch_start = time.perf_counter()
    for _index, _export, _node, job in copies:
        qmp.execute('block-job-cancel', {'device': job})
    for _index, _export, _node, job in copies:
        done = qmp.wait_event('BLOCK_JOB_COMPLETED', lambda e, job=job: e['data']['device'] == job)
        assert not done['data'].get('error'), done
    for _index, _export, node, job in copies:
        qmp.execute('job-dismiss', {'id': job})
        qmp.execute('blockdev-del', {'node-name': node})
    qmp.execute('migrate-continue', {'state': 'pre-switchover'})
    switch_end = time.perf_counter()
    event = qmp.wait_event('MIGRATION', lambda e: e['data']['status'] in ('completed', 'failed', 'cancelled'))
    running = [e for e in qmp.events if e.get('event') == 'JOB_STATUS_CHANGE' and e['data']['status'] == 'running']
    qmp.close()
    wall = time.perf_counter() - start
    assert event['data']['status'] == 'completed', event
    copied = sum(e['data']['len'] for e in ready_events)
    # The copy as QEMU's clock has it: its jobs running to the last one ready.
    qemu_copy = (max(common.event_time(e) for e in ready_events) - min(common.event_time(e) for e in running)
                 if len(running) >= len(copies) else None)
    return {'wall': wall, 'stats': source_stats(lab), 'copy_s': copy_end - copy_start, 'copied_bytes': copied,
            'qemu_copy_s': qemu_copy, 'setup_s': copy_start - start, 'switchover_s': switch_end - switch_start,
            'to_switchover_s': switch_start - copy_end}


def migrate_library(lab, accepted):
    start = time.perf_counter()
    result = lab.phase('a', 'migrate', uri=accepted['uri'], storage='copy', nbd=accepted['nbd'])
    wall = time.perf_counter() - start
    assert result['status'] == 'completed', result
    storage = result['storage']
    return {'wall': wall, 'stats': result['stats'], 'copy_s': storage['copy_seconds'],
            'copied_bytes': storage['copied_bytes']}


def nbd_link(lab, accepted):
    """qemu-img convert -n of the source image into the target's export."""
    export = accepted['nbd']['exports'][0]['name']
    host, _port = parse_uri(accepted['uri'])
    argv = ['qemu-img', 'convert', '-n', '-U', '-f', 'raw', '-O', 'raw', lab.source_image,
            'nbd://%s:%d/%s' % (host, accepted['nbd']['port'], export)]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=LINK_TIMEOUT, check=False)
    wall = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    return {'wall': wall, 'copy_s': wall, 'copied_bytes': os.path.getsize(lab.source_image)}


def free_port():
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def tcp_stream(lab):
    """The source image's bytes from socat to socat over 127.0.0.1, into /dev/null."""
    port = free_port()
    block = str(STREAM_BUFFER)
    receiver = subprocess.Popen(['socat', '-u', '-b', block, 'TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr' % port,
                                 'OPEN:/dev/null,wronly'], stderr=subprocess.PIPE)
    sender = None
    try:
        deadline = time.monotonic() + 5
        while not listening(port):
            assert receiver.poll() is None and time.monotonic() < deadline, 'socat does not listen on %d' % port
            time.sleep(0.01)
        start = time.perf_counter()
        sender = subprocess.Popen(['socat', '-u', '-b', block, 'OPEN:%s,rdonly' % lab.source_image,
                                   'TCP:127.0.0.1:%d' % port], stderr=subprocess.PIPE)
        assert sender.wait(LINK_TIMEOUT) == 0, sender.stderr.read()
        assert receiver.wait(LINK_TIMEOUT) == 0, receiver.stderr.read()
        wall = time.perf_counter() - start
    finally:
        for proc in (sender, receiver):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc is not None:
                proc.stderr.close()
    return {'wall': wall, 'copy_s': wall, 'copied_bytes': os.path.getsize(lab.source_image)}


def listening(port):
    """Whether something listens on 127.0.0.1:port (from /proc/net/tcp, not
    by connecting: socat's listener takes one connection)."""
    wanted = '0100007F:%04X' % port
    with open('/proc/net/tcp') as handle:
        return any(line.split()[1] == wanted and line.split()[3] == '0A' for line in list(handle)[1:])


def identical(lab):
    """Whether qemu-img compare finds the target image the same as the source's."""
    done = subprocess.run(['qemu-img', 'compare', '-U', '-f', 'raw', '-F', 'raw', lab.source_image,
                           lab.target_image], capture_output=True, text=True, check=False)
    return done.returncode == 0


def rounds_of(lab, rounds, settle, samples):
    checked = set()
    for rnd in range(rounds):
        for way in run_order(WAYS, rnd):
            if way == 'tcp stream':
                lab.reset()
                accepted, pids = None, []
            else:
                _prepared, accepted = lab.ready_copy()
                pids = [lab.instance('a').pid(), lab.instance('b').pid()]
            settings = None
            if way in ('raw', 'raw, 16 MiB buffer'):
                with lab.qmp('a') as qmp:
                    settings = library_settings(qmp, storage='copy')
            load = settle()
            if way != 'library, cold':
                lab.warm_memory(WARM_MIB)
            with common.CpuMeter(pids) as meter:
                if way in ('raw', 'raw, 16 MiB buffer'):
                    out = migrate_raw(lab, accepted, settings, default_buffer=way != 'raw')
                elif way in ('library', 'library, cold'):
                    out = migrate_library(lab, accepted)
                elif way == 'nbd link':
                    out = nbd_link(lab, accepted)
                else:
                    out = tcp_stream(lab)
            if way != 'tcp stream' and way not in checked:
                # Once per way: the target's image holds what the source's does.
                assert identical(lab), '%s: the target image differs from the source image' % way
                checked.add(way)
            stats = out.pop('stats', None)
            rate = out['copied_bytes'] / MIB / out['copy_s']
            samples.add(GROUP, way, out.pop('wall'), rnd, load, stats=compact(stats) if stats else None,
                        rate_mib_s=rate, others_cpus=meter.others_cpus, **out)
            extra = ''
            if stats:
                extra = ', QEMU migration total %s ms, downtime %s ms' % (stats['total_time_ms'], stats['downtime_ms'])
            print('  round %d, %-13s %6.2f s  (copy %.2f s, %.0f MiB/s%s; load %.2f, others used %.2f CPUs)'
                  % (rnd + 1, way, samples.records[-1]['value'], out['copy_s'], rate, extra, load['load1'],
                     meter.others_cpus), flush=True)
    lab.reset()


# -- the report ----------------------------------------------------------------------
def rate_ratio(samples, numerator, denominator):
    """Per-round ratio of two ways' copy rates (paired): median, min, max."""
    top = dict((r['round'], r['rate_mib_s']) for r in samples.select(GROUP, numerator))
    bottom = dict((r['round'], r['rate_mib_s']) for r in samples.select(GROUP, denominator))
    return common.summarize([top[k] / bottom[k] for k in top if k in bottom and bottom[k]])


def goal(summary, limit, at_most):
    if not summary['n']:
        return '-'
    met = summary['median'] <= limit if at_most else summary['median'] >= limit
    return '%s %.2f: %s' % ('<=' if at_most else '>=', limit, 'met' if met else 'missed')


def report(rep, samples, rounds):
    table = Table('Wall time, seconds: median (min-max) over %d rounds; copy: the disk copy alone' % rounds,
                  ['way', 'wall s', 'copy s', 'copy MiB/s', 'QEMU migration total ms', 'downtime ms',
                   'others\' CPUs'])
    chart = BarChart('Live migration with a local 1 GiB disk, loopback (lower is better)', ' s',
                     [LABELS[w] for w in WAYS],
                     note='median of %d rounds; whiskers: fastest and slowest; the disk copy alone, then the whole'
                          ' migrate step (copy, switch-over, 512 MiB of RAM)' % rounds)
    for way in WAYS:
        records = samples.select(GROUP, way)
        if not records:
            continue

        def med(values):
            return common.summarize(values)['median']
        stats = [r['stats'] for r in records if r.get('stats')]
        table.add(LABELS[way], fmt_summary(samples.summary(GROUP, way), 2),
                  fmt_summary(common.summarize([r['copy_s'] for r in records]), 2),
                  fmt_summary(common.summarize([r['rate_mib_s'] for r in records]), 0),
                  fmt(med([s['total_time_ms'] for s in stats]), 0), fmt(med([s['downtime_ms'] for s in stats]), 0),
                  fmt(med([r.get('others_cpus') for r in records]), 2))
        copy = common.summarize([r['copy_s'] for r in records])
        chart.set('disk copy, 1 GiB', LABELS[way], copy['median'], copy['min'], copy['max'])
        if way not in ('nbd link', 'tcp stream'):
            wall = samples.summary(GROUP, way)
            chart.set('whole migrate step', LABELS[way], wall['median'], wall['min'], wall['max'])
    table.notes.append('raw and library: wall = the whole migrate step (connect or run_phase called, to completed'
                       ' and returned); copy = blockdev-mirror answered to every job seen ready. Link ways: the'
                       ' copying processes\' wall time. QEMU migration total: QEMU\'s own total-time of the RAM'
                       ' migration (from migrate, including the pause before the switch-over).')
    raw = samples.select(GROUP, 'raw')
    if raw:
        def med(key):
            return common.summarize([r[key] for r in raw if r.get(key) is not None])['median']
        table.notes.append('The raw script\'s parts (medians): connect and settings and blockdev-add and mirror'
                           ' start %.0f ms; copy %.2f s (QEMU\'s clock, job running to ready: %s s); migrate to'
                           ' pre-switchover %.0f ms; switch-over (jobs cancelled, dismissed, nodes deleted,'
                           ' migrate-continue) %.0f ms.'
                           % (med('setup_s') * 1000, med('copy_s'), fmt(med('qemu_copy_s'), 2),
                              med('to_switchover_s') * 1000, med('switchover_s') * 1000))
    outside = [common.summarize([(r['value'] - r['copy_s']) * 1000 for r in samples.select(GROUP, way)])['median']
               for way in ('raw', 'library')]
    qemu_ms = common.summarize([r['stats']['total_time_ms'] for r in samples.select(GROUP) if r.get('stats')])
    if None not in outside:
        table.notes.append('Outside the copy (wall - copy, median): raw script %.0f ms, library %.0f ms (QEMU\'s RAM'
                           ' migration, about %.0f ms, included in both).'
                           % (outside[0], outside[1], qemu_ms['median']))
    rep.table(table)
    wall = samples.ratio(GROUP, 'library', 'raw')
    link_lib = rate_ratio(samples, 'library', 'nbd link')
    link_raw = rate_ratio(samples, 'raw', 'nbd link')
    ratios = Table('Ratios: median (min-max) of per-round ratios (paired: each round runs every way)',
                   ['ratio', 'value', 'goal'])
    ratios.add('library / raw, wall time of the migrate step', fmt_ratio(wall), goal(wall, GOAL_WALL, True))
    ratios.add('library mirror / link (qemu-img convert), copy MiB/s', fmt_ratio(link_lib),
               goal(link_lib, GOAL_LINK, False))
    ratios.add('raw script mirror / link (qemu-img convert), copy MiB/s', fmt_ratio(link_raw),
               goal(link_raw, GOAL_LINK, False))
    ratios.add('raw script with QEMU\'s 16 MiB buffer, mirror / link',
               fmt_ratio(rate_ratio(samples, 'raw, 16 MiB buffer', 'nbd link')), '')
    ratios.add('library mirror / raw script mirror, copy MiB/s', fmt_ratio(rate_ratio(samples, 'library', 'raw')), '')
    ratios.add('library, memory not warmed / library, wall time',
               fmt_ratio(samples.ratio(GROUP, 'library, cold', 'library')), '')
    ratios.add('link (qemu-img convert) / tcp stream, MiB/s', fmt_ratio(rate_ratio(samples, 'nbd link', 'tcp stream')),
               '')
    ratios.notes.append('Goals of issue 13: library / raw at most %.2fx; the mirror at least %.1fx of the link\'s'
                        ' throughput.' % (GOAL_WALL, GOAL_LINK))
    rep.table(ratios)
    rep.chart = chart


def main(quick=False, out_dir=common.RESULTS):
    rounds = 2 if quick else 6
    rep = common.Report(NAME, TITLE, out_dir, intro=__doc__.split('\n\n', 1)[1])
    settle = Settler(max_wait=8.0, budget=15 if quick else 90)
    lab = StorageLab()
    samples = Samples()
    try:
        print('random data: %d MiB of RAM, a %d MiB raw disk (untimed)' % (MEMORY_MIB, DISK_MIB), flush=True)
        lab.random_ram(MEMORY_MIB)
        lab.make_source(DISK_MIB)
        rounds_of(lab, rounds, settle, samples)
    finally:
        lab.destroy()
    report(rep, samples, rounds)
    rep.data.update(samples=samples.records, memory_mib=MEMORY_MIB, disk_mib=DISK_MIB)
    rep.write()
    return rep


if __name__ == '__main__':
    main(quick='--quick' in sys.argv[1:], out_dir=common.QUICK_RESULTS if '--quick' in sys.argv else common.RESULTS)
