"""Shared helpers of the benchmarks: timing with the machine's load beside each
sample, median/spread summaries and paired ratios, plain and markdown tables,
a description of the machine, result files (markdown, JSON, a PNG chart drawn
with matplotlib), and the test harness's pieces the benchmarks use.

A benchmark collects ``Samples`` (one record per measurement, with the 1-min
load average and how busy the CPUs were just before it), builds ``Table``s
from them, and hands everything to ``Report.write``, which prints the tables
and writes ``NAME.md``, ``NAME.json`` and ``NAME.png`` to the results folder.

Nothing here asserts anything: a slow machine makes slow figures, not failures.
"""

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from tests.harness import REPO, VENV_BIN
from tests.harness.guest import build_image
from tests.harness.raw_qemu import QmpClient
from tests.harness.system import give_to_qemu, reachable_dir

RESULTS = os.path.join(REPO, 'bench', 'results')
QUICK_RESULTS = os.path.join(REPO, 'build', 'bench')


def run(argv):
    """The ``run`` the library expects: (rc, stdout, stderr), never a shell."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


# -- the machine and its load ------------------------------------------------
def cpu_times():
    with open('/proc/stat') as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields), idle


def busy_fraction(interval=0.1):
    """How busy all CPUs were over the next ``interval`` seconds (0..1)."""
    total0, idle0 = cpu_times()
    time.sleep(interval)
    total1, idle1 = cpu_times()
    return 1.0 - (idle1 - idle0) / float(max(1, total1 - total0))


class Settler:
    """Waits for a quieter machine before a measurement, within a budget.

    Other developers run tests on this machine; before each measurement we
    wait (up to ``max_wait`` s, and ``budget`` s over the whole benchmark)
    for the CPUs to be less than ``threshold`` busy. Whatever the outcome,
    the load is recorded with the sample, so a noisy figure shows as such.
    """

    def __init__(self, threshold=0.5, max_wait=3.0, budget=60.0):
        self.threshold = threshold
        self.max_wait = max_wait
        self.budget = budget
        self.waited = 0.0

    def __call__(self):
        start = time.monotonic()
        while True:
            busy = busy_fraction()
            spent = time.monotonic() - start
            if busy < self.threshold or spent >= self.max_wait or self.waited + spent >= self.budget:
                self.waited += spent
                return {'load1': round(os.getloadavg()[0], 2), 'busy': round(busy, 2)}
            time.sleep(0.2)


HZ = os.sysconf('SC_CLK_TCK')


def process_cpu_seconds(pid):
    """CPU seconds (user + system, all threads) a live process has used; 0 if gone."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            fields = handle.read().rsplit(')', 1)[1].split()
    except (OSError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / float(HZ)


class CpuMeter:
    """How many CPUs other processes kept busy during a measurement: all CPUs'
    busy time less ours (this process, its children that ended, and the given
    pids, e.g. the QEMUs under test), per second of wall time. A migration
    over loopback keeps both CPUs of this machine busy (sender and receiver),
    so what others take shows in its figures."""

    def __init__(self, pids=()):
        self.pids = [pid for pid in pids if pid]
        self.others_cpus = None

    def _snapshot(self):
        total, idle = cpu_times()
        mine = os.times()
        return (time.monotonic(), (total - idle) / float(HZ),
                mine.user + mine.system + mine.children_user + mine.children_system,
                sum(process_cpu_seconds(pid) for pid in self.pids))

    def __enter__(self):
        self.start = self._snapshot()
        return self

    def __exit__(self, *exc):
        end = self._snapshot()
        wall = max(end[0] - self.start[0], 1e-6)
        others = (end[1] - self.start[1]) - (end[2] - self.start[2]) - (end[3] - self.start[3])
        self.others_cpus = round(max(0.0, others) / wall, 2)
        return False


def _first_line(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.splitlines()[0]
    except (OSError, IndexError):
        return None


def machine():
    """What the figures were measured on."""
    info = {'cpus': os.cpu_count(), 'python': platform.python_version(), 'kernel': platform.release()}
    try:
        with open('/proc/cpuinfo') as handle:
            models = [line.split(':', 1)[1].strip() for line in handle if line.startswith('model name')]
        info['cpu_model'] = models[0] if models else None
    except OSError:
        info['cpu_model'] = None
    with open('/proc/meminfo') as handle:
        mem = dict(line.split(':', 1) for line in handle)
    info['memory_gib'] = round(int(mem['MemTotal'].split()[0]) / 1024.0 / 1024.0, 1)
    try:
        with open('/etc/os-release') as handle:
            os_release = dict(line.rstrip('\n').split('=', 1) for line in handle if '=' in line)
        info['os'] = os_release.get('PRETTY_NAME', '').strip('"')
    except OSError:
        info['os'] = None
    info['qemu'] = (_first_line(['qemu-system-x86_64', '--version']) or '').replace('QEMU emulator version ', '')
    info['socat'] = (_first_line(['socat', '-V']) or '').strip()
    version = _first_line([os.path.join(VENV_BIN, 'ansible'), '--version']) or ''
    info['ansible_core'] = version.split('[core ')[-1].rstrip(']') if 'core' in version else version
    info['load_at_start'] = [round(x, 2) for x in os.getloadavg()]
    return info


def describe(info):
    return ('%s, %d CPUs (%s), %.0f GiB RAM, kernel %s; QEMU %s; Python %s; ansible-core %s'
            % (info['os'], info['cpus'], info['cpu_model'], info['memory_gib'], info['kernel'],
               info['qemu'], info['python'], info['ansible_core']))


# -- samples and summaries ---------------------------------------------------
class Samples:
    """Measurements as records: group (e.g. a guest size), series (e.g. a
    method), value, the round it belongs to, the load before it, extras."""

    def __init__(self):
        self.records = []

    def add(self, group, series, value, rnd=None, load=None, **extra):
        record = {'group': group, 'series': series, 'value': value, 'round': rnd}
        record.update(load or {})
        record.update(extra)
        self.records.append(record)
        return record

    def select(self, group=None, series=None):
        return [r for r in self.records
                if (group is None or r['group'] == group) and (series is None or r['series'] == series)
                and r['value'] is not None]

    def values(self, group=None, series=None):
        return [r['value'] for r in self.select(group, series)]

    def summary(self, group=None, series=None, rounds=None):
        records = [r for r in self.select(group, series) if rounds is None or r['round'] in rounds]
        out = summarize([r['value'] for r in records])
        loads = [r['load1'] for r in records if r.get('load1') is not None]
        out['load1'] = round(statistics.median(loads), 2) if loads else None
        return out

    def ratio(self, group, numerator, denominator, rounds=None):
        """numerator/denominator from the rounds in which both were measured
        (paired, so a busy moment weighs on both), or only from ``rounds``:
        median, min, max."""
        top = dict((r['round'], r['value']) for r in self.select(group, numerator))
        bottom = dict((r['round'], r['value']) for r in self.select(group, denominator))
        ratios = [top[k] / bottom[k] for k in top
                  if k in bottom and bottom[k] and (rounds is None or k in rounds)]
        return summarize(ratios)


def summarize(values):
    values = [v for v in values if v is not None]
    if not values:
        return {'n': 0, 'median': None, 'min': None, 'max': None, 'stdev': None}
    return {'n': len(values), 'median': statistics.median(values), 'min': min(values),
            'max': max(values), 'stdev': statistics.pstdev(values)}


def fmt(value, digits=1, unit=''):
    if value is None:
        return '-'
    if isinstance(value, str):
        return value
    return '%.*f%s' % (digits, value, unit)


def fmt_summary(summary, digits=1, unit=''):
    """'median (min-max)'."""
    if not summary['n']:
        return '-'
    if summary['n'] == 1:
        return fmt(summary['median'], digits, unit)
    return '%s (%s-%s)' % (fmt(summary['median'], digits, unit), fmt(summary['min'], digits),
                           fmt(summary['max'], digits))


def fmt_ratio(summary, digits=2):
    if not summary['n']:
        return '-'
    if summary['n'] == 1:
        return '%.*fx' % (digits, summary['median'])
    return '%.*fx (%.*f-%.*f)' % (digits, summary['median'], digits, summary['min'], digits, summary['max'])


# -- tables and reports --------------------------------------------------------
class Table:
    """Rows of cells; the first ``labels`` columns are left-aligned."""

    def __init__(self, title, columns, rows=None, notes=None, labels=1):
        self.title = title
        self.columns = columns
        self.rows = rows or []
        self.notes = notes or []
        self.labels = labels

    def add(self, *cells):
        self.rows.append([str(c) for c in cells])

    def text(self):
        widths = [max([len(c)] + [len(r[i]) for r in self.rows]) for i, c in enumerate(self.columns)]
        lines = [self.title, '  '.join(c.ljust(w) for c, w in zip(self.columns, widths))]
        lines.append('  '.join('-' * w for w in widths))
        for row in self.rows:
            lines.append('  '.join(cell.ljust(w) if i < self.labels else cell.rjust(w)
                                   for i, (cell, w) in enumerate(zip(row, widths))))
        lines += ['  ' + note for note in self.notes]
        return '\n'.join(lines)

    def markdown(self):
        lines = ['**%s**' % self.title, '', '| %s |' % ' | '.join(self.columns),
                 '|%s|' % '|'.join(['---'] * self.labels + ['---:'] * (len(self.columns) - self.labels))]
        lines += ['| %s |' % ' | '.join(cell.replace('|', '\\|') for cell in row) for row in self.rows]
        if self.notes:
            lines.append('')
            lines += ['%s' % note for note in self.notes]
        return '\n'.join(lines)


class Report:
    """One benchmark's output: tables, a chart, raw samples; printed and written."""

    def __init__(self, name, title, out_dir, intro=''):
        self.name = name
        self.title = title
        self.out_dir = out_dir
        self.intro = intro
        self.tables = []
        self.data = {}
        self.chart = None
        self.machine = machine()
        self.started = time.time()

    def table(self, table):
        self.tables.append(table)
        print('\n' + table.text(), flush=True)
        return table

    def write(self):
        os.makedirs(self.out_dir, exist_ok=True)
        elapsed = time.time() - self.started
        self.machine['load_at_end'] = [round(x, 2) for x in os.getloadavg()]
        md = ['# %s' % self.title, '']
        if self.intro:
            md += [self.intro.strip(), '']
        md += ['Measured %s in %.0f s on %s. Load average (1, 5, 15 min) %s at the start, %s at the end.'
               % (time.strftime('%Y-%m-%d %H:%M', time.localtime(self.started)), elapsed,
                  describe(self.machine), _loads(self.machine['load_at_start']),
                  _loads(self.machine['load_at_end'])), '']
        for table in self.tables:
            md += [table.markdown(), '']
        if self.chart:
            png = os.path.join(self.out_dir, '%s.png' % self.name)
            self.chart.save(png)
            md += ['![%s](%s.png)' % (self.chart.title, self.name), '']
        with open(os.path.join(self.out_dir, '%s.md' % self.name), 'w') as handle:
            handle.write('\n'.join(md))
        payload = {'benchmark': self.name, 'title': self.title, 'started': self.started,
                   'elapsed_s': round(elapsed, 1), 'machine': self.machine,
                   'tables': [{'title': t.title, 'columns': t.columns, 'rows': t.rows, 'notes': t.notes}
                              for t in self.tables]}
        payload.update(self.data)
        with open(os.path.join(self.out_dir, '%s.json' % self.name), 'w') as handle:
            json.dump(payload, handle, indent=1, sort_keys=True, default=str)
            handle.write('\n')
        print('\n%s: %.0f s; results in %s/%s.{md,json%s}' % (self.name, elapsed, _short(self.out_dir),
                                                              self.name, ',png' if self.chart else ''))


def _loads(values):
    return ' / '.join('%.2f' % v for v in values)


def _short(path):
    return os.path.relpath(path, REPO) if path.startswith(REPO) else path


# -- QMP without the collection --------------------------------------------------
class RawQmp(QmpClient):
    """QMP over a plain unix socket, nothing else (the test harness's client,
    waiting up to a minute for a reply or event): the yardstick the
    collection's socat-based QmpSession is compared with."""

    def __init__(self, path, timeout=60.0):
        super().__init__(path, timeout)


def event_time(event):
    """Wall-clock time of a QMP event, from QEMU's own timestamp."""
    stamp = event['timestamp']
    return stamp['seconds'] + stamp['microseconds'] / 1e6


# -- guests for the benchmarks ---------------------------------------------------
def test_guest_copy(directory, variant='normal', dirty_mib=64):
    """A private copy of the test guest's disk image (tests/guest) in directory."""
    path = os.path.join(directory, 'guest-%s.img' % variant)
    if not os.path.exists(path):
        shutil.copyfile(build_image(variant, dirty_mib=dirty_mib), path)
        give_to_qemu(path)
    return path


class TinyGuests:
    """Tiny paused guests (``-accel tcg -m 16 -S``, no disk) in one run_dir,
    started through the library (normalize_spec, Instance.prepare_argv,
    Instance.start)."""

    def __init__(self, label='tiny'):
        from ansible_collections.hvops.kvm.plugins.module_utils import _qemu
        from ansible_collections.hvops.kvm.plugins.module_utils._layout import NodeLayout
        self.base = reachable_dir('hkb-%s-' % label)
        self.layout = NodeLayout(os.path.join(self.base, 'run'), os.path.join(self.base, 'run-state'))
        self.info = _qemu.query_binary(run, _qemu.find_qemu())
        self.machine = _qemu.pin_machine(self.info, 'pc')
        self.instances = []

    def grow_to(self, count):
        from ansible_collections.hvops.kvm.plugins.module_utils import _qemu_user
        from ansible_collections.hvops.kvm.plugins.module_utils._instance import Instance
        from ansible_collections.hvops.kvm.plugins.module_utils._runtime import save_definition
        from ansible_collections.hvops.kvm.plugins.module_utils._spec import normalize_spec
        while len(self.instances) < count:
            name = 'g%02d' % len(self.instances)
            spec = normalize_spec(name, {'memory': 16, 'accel': 'tcg', 'machine': self.machine,
                                         'serial_console': False})
            instance = Instance(self.layout, name, run, qemu_user=_qemu_user.resolve(_qemu_user.DEFAULT_RUN_AS))
            argv, _scripts = instance.prepare_argv(spec, self.info['path'], 'tcg', paused=True)
            self.layout.ensure(instance.qemu_user)
            save_definition(instance.paths, spec)
            instance.start(argv, spec, 'tcg', qemu_version=self.info['version'], paused=True)
            self.instances.append(instance)
        return self.instances

    def destroy(self):
        for instance in self.instances:
            try:
                instance.stop(mode='kill')
            except Exception as err:  # keep stopping the others
                print('could not stop %s: %s' % (instance.name, err), file=sys.stderr)
        shutil.rmtree(self.base, ignore_errors=True)


# -- charts ----------------------------------------------------------------------
def _value(value, unit):
    """Three significant figures or so: 1.23, 12.3, 123."""
    digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return '%.*f%s' % (digits, value, unit)


def _label(value, unit):
    text = ('%.3f' % value).rstrip('0').rstrip('.') if value < 10 else '%.0f' % value
    return text + unit


class BarChart:
    """Horizontal bars, grouped: a heading per group, a bar per series (its
    median, a colour per series) with a min-max whisker and its value written
    beside it; a linear scale from 0, or a logarithmic one."""

    def __init__(self, title, unit, series, note=None, log=False):
        self.title = title
        self.unit = unit
        self.series = list(series)
        self.note = note
        self.log = log
        self.groups = []
        self.values = {}

    def set(self, group, series, median, low=None, high=None):
        if group not in self.groups:
            self.groups.append(group)
        if median is not None:
            self.values[(group, series)] = (median, low if low is not None else median,
                                            high if high is not None else median)

    def _rows(self):
        """(group, None) for a heading, (group, series) for a bar, top to bottom."""
        rows = []
        for group in self.groups:
            rows.append((group, None))
            rows += [(group, name) for name in self.series if (group, name) in self.values]
        return rows

    def save(self, path, width=9.0):
        """Draw the chart into the PNG file path, width inches at 100 dpi."""
        rows = self._rows()
        figure = Figure(figsize=(width, 0.9 + 0.19 * len(rows) + (0.2 if self.note else 0)), dpi=100,
                        layout='constrained')
        axes = figure.subplots()
        for y, (group, name) in enumerate(rows):
            if name is None:
                continue
            median, low, high = self.values[(group, name)]
            axes.barh(y, median, height=0.65, color='C%d' % (self.series.index(name) % 10),
                      xerr=[[median - low], [high - median]] if high > low else None,
                      error_kw={'elinewidth': 0.8, 'capsize': 3, 'ecolor': '0.15'})
            axes.annotate(_value(median, self.unit), (max(median, high), y), xytext=(4, 0),
                          textcoords='offset points', va='center', fontsize=9, color='0.15')
        axes.set_yticks(range(len(rows)), [group if name is None else name for group, name in rows], fontsize=9)
        for label, (_group, name) in zip(axes.get_yticklabels(), rows):
            if name is None:
                label.set_fontweight('bold')
        axes.tick_params(axis='y', length=0)
        axes.set_ylim(len(rows) - 0.5, -0.7)
        if self.log:
            axes.set_xscale('log')
            axes.xaxis.set_minor_formatter(NullFormatter())
        else:
            axes.set_xlim(left=0)
        axes.margins(x=0.12)
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: _label(value, self.unit)))
        axes.tick_params(axis='x', labelsize=9)
        axes.grid(axis='x', color='0.88')
        axes.set_axisbelow(True)
        for side in ('top', 'right'):
            axes.spines[side].set_visible(False)
        figure.suptitle(self.title, fontsize=10)
        if self.note:
            figure.supxlabel(self.note, x=0.01, ha='left', fontsize=9, color='0.35')
        figure.savefig(path)
