# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    """Options of every module that works on a node's state directory."""

    DOCUMENTATION = r'''
options:
  run_dir:
    description:
      - The node's state directory. It holds C(pid/) (QEMU pidfiles), C(ctrl/) (QMP,
        human monitor and serial sockets), C(conf/) (definitions and runtime files),
        C(lock/) and C(ifup/). It is created on demand with mode C(0700).
      - Each node (or each simulated node on one machine) has its own.
    type: path
    default: /run/hvops-kvm
  monitor_timeout:
    description:
      - Seconds to wait for the QMP monitor to greet and to answer a command.
    type: float
    default: 10.0
notes:
  - The monitor is driven through C(socat), which must be installed on the node.
'''
