"""The monitor transport: a QMP command through the collection's socat pipe
(``_qmp.QmpSession``) against the same over a plain unix socket.

One tiny paused guest (``-accel tcg -m 16 -S``); side by side in rounds (the
order alternating):

* a session opened and closed (connect, greeting, ``qmp_capabilities``,
  close): QmpSession starts and reaps one ``socat`` per session;
* one command in an open session (``query-status``, timed over a batch);
* one command in a session of its own (``_qmp.qmp_command``), which is how the
  library mostly talks to QEMU: open, one to three commands, close.
"""

import sys
import time

from bench import common
from bench.common import BarChart, RawQmp, Samples, Settler, Table, fmt

from ansible_collections.hvops.kvm.plugins.module_utils._qmp import QmpSession, qmp_command

NAME = 'monitor'
TITLE = 'Monitor transport (QMP through socat vs a unix socket)'
WAYS = ('socat', 'socket')
LABELS = {'socat': 'QmpSession (socat pipe)', 'socket': 'plain unix socket'}
OPERATIONS = ('session open + close', 'one command in an open session', 'one command in its own session')


def open_close(path, way, count):
    start = time.perf_counter()
    for _n in range(count):
        if way == 'socat':
            QmpSession(path).open().close()
        else:
            RawQmp(path).close()
    return (time.perf_counter() - start) * 1000.0 / count


def commands(path, way, count):
    session = QmpSession(path).open() if way == 'socat' else RawQmp(path)
    try:
        start = time.perf_counter()
        for _n in range(count):
            assert session.execute('query-status')['status'] == 'prelaunch'
        return (time.perf_counter() - start) * 1000.0 / count
    finally:
        session.close()


def one_shot(path, way, count):
    start = time.perf_counter()
    for _n in range(count):
        if way == 'socat':
            reply = qmp_command(path, 'query-status')
        else:
            with RawQmp(path) as session:
                reply = session.execute('query-status')
        assert reply['status'] == 'prelaunch'
    return (time.perf_counter() - start) * 1000.0 / count


def main(quick=False, out_dir=common.RESULTS):
    rounds = 4 if quick else 12
    per_sample = {'session open + close': 10, 'one command in an open session': 200,
                  'one command in its own session': 10}
    calls = {'session open + close': open_close, 'one command in an open session': commands,
             'one command in its own session': one_shot}
    rep = common.Report(NAME, TITLE, out_dir, intro=__doc__.split('\n\n', 1)[1])
    settle = Settler(max_wait=1.0, budget=10 if quick else 30)
    samples = Samples()
    guests = common.TinyGuests('mon')
    try:
        path = guests.grow_to(1)[0].paths.qmp
        for operation in OPERATIONS:
            calls[operation](path, 'socat', 3)
            calls[operation](path, 'socket', 3)
        for rnd in range(rounds):
            load = settle()
            for operation in OPERATIONS:
                for way in WAYS if rnd % 2 == 0 else WAYS[::-1]:
                    samples.add(operation, way, calls[operation](path, way, per_sample[operation]), rnd, load)
    finally:
        guests.destroy()
    table = Table('QMP round trips, ms per operation: median (min-max) over %d rounds' % rounds,
                  ['operation', LABELS['socat'], LABELS['socket'], 'socat / socket', 'difference', 'load (1 min)'])
    chart = BarChart('QMP through socat vs a plain unix socket (lower is better)', ' ms',
                     [LABELS[w] for w in WAYS], log=True,
                     note='median of %d rounds; whiskers: fastest and slowest round; log scale' % rounds)
    for operation in OPERATIONS:
        socat, sock = samples.summary(operation, 'socat'), samples.summary(operation, 'socket')
        table.add('%s (x%d per round)' % (operation, per_sample[operation]),
                  common.fmt_summary(socat, 3), common.fmt_summary(sock, 3),
                  common.fmt_ratio(samples.ratio(operation, 'socat', 'socket'), 1),
                  '%+.3f ms' % (socat['median'] - sock['median']), fmt(socat['load1'], 2))
        for way in WAYS:
            summary = samples.summary(operation, way)
            chart.set(operation, LABELS[way], summary['median'], summary['min'], summary['max'])
    rep.table(table)
    rep.chart = chart
    rep.data['samples'] = samples.records
    rep.write()
    return rep


if __name__ == '__main__':
    main(quick='--quick' in sys.argv[1:], out_dir=common.QUICK_RESULTS if '--quick' in sys.argv else common.RESULTS)
