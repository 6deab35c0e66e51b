# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a migration's progress: statistics from query-migrate in plain
names, and stall / timeout detection. Pure."""

from ansible_collections.hvops.kvm.plugins.module_utils._migration_settings import MIB
from ansible_collections.hvops.kvm.plugins.module_utils._states import MIGRATION_ENDED


def extract_stats(info):
    """Migration statistics from a query-migrate reply, in plain names."""
    info = info or {}
    ram = info.get('ram') or {}
    total_ms = info.get('total-time')
    transferred = ram.get('transferred')
    page_size = ram.get('page-size')
    dirty_rate = ram.get('dirty-pages-rate')
    stats = {
        'status': info.get('status'),
        'total_time_ms': total_ms,
        'downtime_ms': info.get('downtime'),
        'expected_downtime_ms': info.get('expected-downtime'),
        'setup_time_ms': info.get('setup-time'),
        'transferred_bytes': transferred,
        'ram_total_bytes': ram.get('total'),
        'remaining_bytes': ram.get('remaining'),
        'throughput_mbps': ram.get('mbps'),
        'average_mib_s': round(transferred / float(MIB) / (total_ms / 1000.0), 2)
        if transferred is not None and total_ms else None,
        'passes': ram.get('dirty-sync-count'),
        'dirty_pages_rate': dirty_rate,
        'dirty_rate_mib_s': round(dirty_rate * page_size / float(MIB), 2)
        if dirty_rate is not None and page_size else None,
        'page_size': page_size,
        'normal_pages': ram.get('normal'),
        'duplicate_pages': ram.get('duplicate'),
        'multifd_bytes': ram.get('multifd-bytes'),
        'precopy_bytes': ram.get('precopy-bytes'),
        'downtime_bytes': ram.get('downtime-bytes'),
        'postcopy_bytes': ram.get('postcopy-bytes'),
        'postcopy_requests': ram.get('postcopy-requests'),
        'cpu_throttle_percentage': info.get('cpu-throttle-percentage'),
        'error': info.get('error-desc'),
    }
    xbzrle = info.get('xbzrle-cache')
    if xbzrle:
        stats['xbzrle'] = dict((key.replace('-', '_'), value) for key, value in xbzrle.items())
    return stats


def stats_settled(info):
    """Whether a query-migrate reply has its final figures (see STATS_SETTLE)."""
    info = info or {}
    return info.get('status') != 'completed' or bool(info.get('total-time'))


class Progress:
    """Stall and overall-timeout detection from samples of transferred bytes."""

    def __init__(self, started, timeout, stall_timeout):
        self.started = started
        self.timeout = timeout
        self.stall_timeout = stall_timeout
        self.last_bytes = None
        self.last_growth = started

    def sample(self, now, transferred):
        """None while all is well, else 'timeout' or 'stalled'."""
        if transferred != self.last_bytes:
            self.last_bytes = transferred
            self.last_growth = now
        if self.timeout and now - self.started >= self.timeout:
            return 'timeout'
        if now - self.last_growth >= self.stall_timeout:
            return 'stalled'
        return None


def ends_migration(event):
    """Whether a MIGRATION event reports a final status."""
    return (event.get('data') or {}).get('status') in MIGRATION_ENDED
