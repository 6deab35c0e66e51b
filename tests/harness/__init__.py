"""The test harness of hvops.kvm, shared by the tests and the benchmarks
(bench/): import it as ``tests.harness`` from the checkout's top directory
(pytest.ini puts that on sys.path; ``python -m bench`` runs from there).

* system: what the tests need of this machine (programs, /dev/kvm, the QEMU
  user) and files and directories that user can reach;
* guest: the test guest's disk images (tests/guest/guest.asm, built with nasm);
* linux_guest: the Linux test guest (tests/linux_guest/: Debian kernel, busybox
  initramfs with qemu-ga and dropbear), seed ISOs, a guest agent client;
* raw_qemu: QEMU run directly, its serial console and QMP on plain sockets;
* qemu_procs: finding, killing and reading the QEMUs of a run_dir;
* ansible_run: real ``ansible`` and ``ansible-playbook`` runs, results as JSON;
* nodes: simulated nodes on this machine, each with its own run_dir;
* tls_pki: throw-away certificates for TLS migration;
* lab: the two-host lab of tools/lab.py, for pytest.

hvops.kvm itself is imported as ``ansible_collections.hvops.kvm`` through the
link ``make setup`` puts in build/collections.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The ansible of the venv whose Python runs the tests: the project's .venv, or
# that of another ansible-core line (`make matrix`); else the project's.
VENV_BIN = os.path.dirname(sys.executable)
if not os.path.exists(os.path.join(VENV_BIN, 'ansible-playbook')):
    VENV_BIN = os.path.join(REPO, '.venv', 'bin')
COLLECTIONS = os.path.join(REPO, 'build', 'collections')
