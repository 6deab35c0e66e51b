# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    """Options of every module that works on a node's state directory."""

    DOCUMENTATION = r'''
options:
  run_dir:
    description:
      - The node's runtime directory, on a tmpfs that a reboot empties. It holds C(pid/)
        (QEMU pidfiles), C(ctrl/) (QMP, human monitor and serial sockets), C(conf/)
        (runtime files and QEMU's logs) and C(lock/). It is created on demand with mode C(0711)
        (others may pass through to C(pid/), which belongs to the O(run_as) user;
        every other subdirectory is C(0700)).
      - An existing directory is used only when it is a real directory (not a
        symbolic link) owned by the user the module runs as and writable by nobody
        else, under parents that nobody else can write without the sticky bit. Its
        mode is never changed.
      - Each node (or each simulated node on one machine) has its own.
    type: path
    default: /run/hvops-kvm
  state_dir:
    description:
      - The node's persistent state directory - what outlives a reboot. It holds C(guests/)
        (each instance's definition, VNC password, autostart and restart policy and last
        state) and C(node/) (the reports of the node's boot and shutdown). It is created on
        demand with mode C(0700), every subdirectory too; the same rules as for O(run_dir)
        apply to an existing one.
      - Collection 0.1 kept definitions and VNC passwords in O(run_dir)C(/conf). They are
        read from there until a run that writes moves them here.
      - Each node (or each simulated node on one machine) has its own.
    type: path
    default: /var/lib/hvops-kvm
  monitor_timeout:
    description:
      - Seconds to wait for the QMP monitor to greet and to answer a command.
    type: float
    default: 10.0
  run_as:
    description:
      - The user QEMU drops to once it has opened what its command line names
        (C(-runas)). The M(hvops.kvm.kvm_node) role creates C(hvops-qemu).
      - Every QEMU runs under a seccomp sandbox (C(-sandbox)) that denies obsolete
        system calls, spawning processes and resource control; as root also
        privilege changes.
      - The user must be able to open the guest's disks read-write by path (QEMU
        opens them again during a migration), as their owner or through its
        group with mode C(0660).
      - C(root) runs QEMU as root, which is reported by M(hvops.kvm.kvm_node_facts)
        as a problem of the node. Only for setups that cannot work otherwise.
    type: str
    default: hvops-qemu
notes:
  - The monitor is driven through C(socat), which must be installed on the node.
'''
