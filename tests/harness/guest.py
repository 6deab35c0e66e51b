"""Build the hvops.kvm test guest (a raw, BIOS-bootable disk image) with nasm
from tests/guest/guest.asm.

    from tests.harness.guest import build_image
    path = build_image('dirty', dirty_mib=64)       # absolute path

    python -m tests.harness.guest VARIANT [--dirty-mib N] [--out DIR]

Images go to <repo>/build/guest/ unless told otherwise, named after the variant
and a hash of the source and the options, so a second build with the same
inputs finds the first and returns at once. See tests/guest/README.md.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

from tests.harness import REPO

SOURCE = os.path.join(REPO, 'tests', 'guest', 'guest.asm')
DEFAULT_OUT = os.path.join(REPO, 'build', 'guest')

VARIANTS = ('normal', 'stubborn', 'dirty')
DEFAULT_DIRTY_MIB = 64
MAX_DIRTY_MIB = 2048
IMAGE_SIZE = 1024 * 1024


class GuestBuildError(RuntimeError):
    """The image could not be built (bad options, no nasm, nasm failed)."""


def nasm_defines(variant, dirty_mib=DEFAULT_DIRTY_MIB):
    """The -D options for a variant; dirty_mib only matters to 'dirty'."""
    if variant not in VARIANTS:
        raise GuestBuildError('unknown guest variant %r; choose one of %s' % (variant, ', '.join(VARIANTS)))
    defines = ['-DVARIANT_%s' % variant.upper()]
    if variant == 'dirty':
        if isinstance(dirty_mib, bool) or not isinstance(dirty_mib, int) or not 1 <= dirty_mib <= MAX_DIRTY_MIB:
            raise GuestBuildError('dirty_mib must be an integer from 1 to %d, not %r' % (MAX_DIRTY_MIB, dirty_mib))
        defines.append('-DDIRTY_MIB=%d' % dirty_mib)
    return defines


def image_name(variant, dirty_mib=DEFAULT_DIRTY_MIB):
    """File name of the image: variant, size option and a hash of source and options."""
    defines = nasm_defines(variant, dirty_mib)
    digest = hashlib.sha256()
    with open(SOURCE, 'rb') as handle:
        digest.update(handle.read())
    digest.update(b'\0' + ' '.join(defines).encode())
    label = 'dirty%d' % dirty_mib if variant == 'dirty' else variant
    return 'guest-%s-%s.img' % (label, digest.hexdigest()[:12])


def build_image(variant, out_dir=None, dirty_mib=DEFAULT_DIRTY_MIB):
    """Return the absolute path of the image for variant, building it if needed."""
    out_dir = os.path.abspath(out_dir or DEFAULT_OUT)
    path = os.path.join(out_dir, image_name(variant, dirty_mib))
    if os.path.isfile(path) and os.path.getsize(path) == IMAGE_SIZE:
        return path
    nasm = shutil.which('nasm')
    if nasm is None:
        raise GuestBuildError('nasm not found on PATH; it is needed to build the test guest (Debian: apt-get install nasm)')
    os.makedirs(out_dir, exist_ok=True)
    # nasm writes a temporary file that is renamed into place, so concurrent
    # builds of one image never see a half-written file.
    handle, partial = tempfile.mkstemp(prefix='.partial-', suffix='.img', dir=out_dir)
    os.close(handle)
    try:
        argv = [nasm, '-f', 'bin', '-w+error'] + nasm_defines(variant, dirty_mib) + ['-o', partial, SOURCE]
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise GuestBuildError('nasm failed (exit %d): %s\n%s'
                                  % (done.returncode, ' '.join(argv), done.stdout.decode(errors='replace')))
        size = os.path.getsize(partial)
        if size != IMAGE_SIZE:
            raise GuestBuildError('nasm made %d bytes, expected %d' % (size, IMAGE_SIZE))
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m tests.harness.guest',
                                     description='Build the hvops.kvm test guest image and print its path.')
    parser.add_argument('variant', choices=VARIANTS)
    parser.add_argument('--dirty-mib', type=int, default=DEFAULT_DIRTY_MIB,
                        help='MiB the dirty variant keeps rewriting (default %(default)s)')
    parser.add_argument('--out', default=None, help='output directory (default: %s)' % DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        print(build_image(args.variant, out_dir=args.out, dirty_mib=args.dirty_mib))
    except GuestBuildError as error:
        print('tests.harness.guest: error: %s' % error, file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
