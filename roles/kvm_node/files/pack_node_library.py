# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pack the collection's module_utils into one zip file that Python imports
from (PYTHONPATH=ZIP), under their import path
ansible_collections/hvops/kvm/plugins/module_utils/.

    python3 pack_node_library.py OUT.zip MODULE_UTILS_DIR

Run by the hvops.kvm.kvm_node role on the controller: one file to copy to the
node instead of one copy task per file. The zip is the same bytes for the same
sources (sorted entries, a fixed date, fixed modes), so it changes only when
the library does.
"""

import os
import sys
import zipfile

PREFIX = 'ansible_collections/hvops/kvm/plugins/module_utils/'
# The earliest date a zip entry can hold.
FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def pack(out, source):
    names = sorted(name for name in os.listdir(source) if name.endswith('.py'))
    if '_node_service.py' not in names:
        raise SystemExit('%s does not look like the collection\'s module_utils' % source)
    with zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED) as archive:
        # zipimport finds a namespace package (no __init__.py) only through
        # an entry for its directory.
        parts = PREFIX.rstrip('/').split('/')
        for depth in range(1, len(parts) + 1):
            directory = zipfile.ZipInfo('/'.join(parts[:depth]) + '/', date_time=FIXED_DATE)
            directory.external_attr = (0o40755 << 16) | 0x10
            archive.writestr(directory, b'')
        for name in names:
            entry = zipfile.ZipInfo(PREFIX + name, date_time=FIXED_DATE)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o100644 << 16
            with open(os.path.join(source, name), 'rb') as handle:
                archive.writestr(entry, handle.read())
    return names


def main(argv):
    if len(argv) != 3:
        raise SystemExit('usage: %s OUT.zip MODULE_UTILS_DIR' % argv[0])
    names = pack(argv[1], argv[2])
    print('%d files' % len(names))


if __name__ == '__main__':
    main(sys.argv)
