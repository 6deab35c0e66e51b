"""Run the benchmarks: ``python -m bench [name ...] [--quick] [--out DIR]``.

With no name, all of them, in the order below. See bench/__init__.py.
"""

import argparse
import importlib
import os
import sys
import time

NAMES = ('monitor', 'instance_start', 'node_facts', 'inventory', 'migration', 'migration_tls', 'storage_migration',
         'maintain')


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m bench', description=__doc__.split('\n\n', 1)[0])
    parser.add_argument('names', nargs='*', metavar='name', help='benchmarks to run: %s (default: all)'
                        % ', '.join(NAMES))
    parser.add_argument('--quick', action='store_true',
                        help='fewer sizes and rounds (about 2 minutes in all); results go to build/bench/')
    parser.add_argument('--out', help='where results go (default: bench/results, or build/bench with --quick)')
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in NAMES]
    if unknown:
        parser.error('unknown benchmark %s (choose from %s)' % (', '.join(unknown), ', '.join(NAMES)))
    from bench import common
    out_dir = os.path.abspath(args.out) if args.out else common.QUICK_RESULTS if args.quick else common.RESULTS
    info = common.machine()
    loads = ' / '.join('%.2f' % v for v in info['load_at_start'])
    print('hvops.kvm benchmarks%s on %s; load average %s'
          % (' (quick)' if args.quick else '', common.describe(info), loads), flush=True)
    started = time.monotonic()
    for name in args.names or NAMES:
        print('\n== %s ==' % name, flush=True)
        module = importlib.import_module('bench.%s' % name)
        module.main(quick=args.quick, out_dir=out_dir)
    print('\nall done in %.0f s' % (time.monotonic() - started))
    return 0


if __name__ == '__main__':
    sys.exit(main())
