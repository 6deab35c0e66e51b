#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
---
module: kvm_instance
short_description: Define, start, stop, pause, restart and remove QEMU/KVM guests without libvirt
version_added: 0.1.0
description:
  - Runs a QEMU/KVM guest directly on the node, the way Ganeti's KVM layer does
    it, and drives it through QMP spoken over C(socat).
  - The instance's definition is stored on the node once; later tasks may name only
    the instance. Options given in a task are laid over the stored definition.
  - The exact QEMU argv an instance was started with is kept in a runtime file;
    restart reuses it, so a guest keeps its command line.
  - Liveness is never judged from a bare pid. QEMU holds a lock on its pidfile
    while it lives; the lock holder must also name the instance's pidfile and name
    on its command line before it is believed or signalled.
  - Two runs against the same instance are serialised by a lock file.
author:
  - hvops.kvm developers (@hvops)
extends_documentation_fragment:
  - hvops.kvm.node
  - hvops.kvm.instance_spec
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Runs every check a real run makes and predicts C(changed) exactly; nothing is written or started.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: Shows the state and stored definition before and after.
options:
  name:
    description:
      - Instance name. Letters, digits, C(.), C(_) and C(-), starting with a letter or a
        digit, at most 63 characters.
    type: str
    required: true
  state:
    description:
      - C(present) stores the definition without starting the guest (a running guest
        keeps running).
      - C(started) makes sure the guest runs (a paused guest is resumed).
      - C(stopped) stops the guest and keeps its definition.
      - C(restarted) stops the guest if it runs and starts it again. It reuses the
        argv the guest ran with unless the definition changed.
      - C(paused) makes sure the guest exists with its vCPUs stopped (starting it paused
        if needed).
      - C(absent) stops the guest and removes its definition. Disk images are never deleted.
    type: str
    choices: [present, started, stopped, restarted, paused, absent]
    default: started
  stop_mode:
    description:
      - C(acpi) presses the ACPI power button, again and again with growing pauses,
        until the guest powers off or O(shutdown_timeout) passes. A guest still running
        then is forced off only with O(force); otherwise the task fails and the guest
        keeps running.
      - C(kill) forces the guest off at once (QMP C(quit), then SIGKILL to the
        identified process).
      - C(agent) asks the guest agent to power off (C(guest-shutdown)) and waits up to
        O(shutdown_timeout). When the agent does not answer (none configured, not running,
        not answering within O(monitor_timeout) or at most 5 seconds), it falls back to
        C(acpi) for the rest of the time, with the same rules for a guest still running then.
    type: str
    choices: [acpi, agent, kill]
    default: acpi
  force:
    description:
      - Force the guest off when it did not power off within O(shutdown_timeout).
    type: bool
    default: false
  shutdown_timeout:
    description:
      - Seconds to wait for a graceful (ACPI) power-off.
    type: int
    default: 30
  lock_timeout:
    description:
      - Seconds to wait for another run on the same instance to finish.
    type: int
    default: 60
  autostart:
    description:
      - Start the guest when the node boots (the C(hvops-kvm-guests) unit of the M(hvops.kvm.kvm_node)
        role), in O(autostart_order).
      - Stored with the definition in O(state_dir), and moved with it by a migration. Not given, the
        stored value stays (V(false) for a new instance).
    type: bool
  autostart_order:
    description:
      - Where the guest comes in the node's boot, from V(0) to V(9999), lower first (then by name); the
        node's shutdown powers guests off in the reverse order. Not given, the stored value stays (V(0)).
    type: int
  autostart_delay:
    description:
      - Seconds the node's boot waits after starting this guest before the next one, from V(0) to V(3600).
        Not given, the stored value stays (V(0)).
    type: int
  restart_policy:
    description:
      - V(on-crash) starts the guest again when it crashed - its QEMU died without being stopped, or it
        was running when the node went down - at the node's boot and by C(playbooks/heal.yml).
      - V(never) leaves a crashed guest stopped. Not given, the stored value stays (V(never)).
    type: str
    choices: [never, on-crash]
seealso:
  - module: hvops.kvm.kvm_node_facts
  - module: hvops.kvm.kvm_migrate
'''

EXAMPLES = r'''
- name: Define and start a guest booting from a raw disk
  hvops.kvm.kvm_instance:
    name: web
    memory: 1024
    vcpus: 2
    machine: pc
    disks:
      - path: /srv/kvm/web.img
    nics:
      - type: bridge
        bridge: br0
    vnc_bind_address: 127.0.0.1
    vnc_display: 1
    vnc_password: "{{ web_vnc_password }}"
    state: started

- name: Boot a kernel directly, with a serial console
  hvops.kvm.kvm_instance:
    name: tiny
    memory: 256
    kernel: /srv/kvm/vmlinuz
    initrd: /srv/kvm/initrd.img
    root: /dev/vda1
    kernel_args: quiet
    disks:
      - path: /srv/kvm/tiny.qcow2
        format: qcow2
        cache: none

- name: Stop gracefully, forcing it off after two minutes
  hvops.kvm.kvm_instance:
    name: web
    state: stopped
    shutdown_timeout: 120
    force: true

- name: Restart with more memory (the stored definition keeps everything else)
  hvops.kvm.kvm_instance:
    name: web
    memory: 2048
    state: restarted

- name: Remove the guest (its disk images stay)
  hvops.kvm.kvm_instance:
    name: web
    state: absent
'''

RETURN = r'''
name:
  description: Instance name.
  returned: always
  type: str
  sample: web
state:
  description:
    - State after the task (in check mode, before it). One of C(running), C(paused),
      C(stopped) (defined, not running), C(absent), C(crashed) (not running, files left
      behind), C(incoming), C(migrating), C(migrated).
  returned: always
  type: str
  sample: running
pid:
  description: Process id of the instance's QEMU, when it runs.
  returned: always
  type: int
  sample: 4242
accel:
  description: Accelerator the running QEMU uses.
  returned: always
  type: str
  sample: kvm
argv:
  description: The exact QEMU argv the running instance was started with.
  returned: always
  type: list
  elements: str
sockets:
  description: Unix sockets of the instance.
  returned: always
  type: dict
  contains:
    qmp:
      description: QMP socket (one client at a time).
      type: str
    monitor:
      description: Human monitor socket, for operators.
      type: str
    serial:
      description: Serial console socket.
      type: str
console_command:
  description: Command that attaches a terminal to the serial console; Ctrl-] leaves it.
  returned: always
  type: str
  sample: socat STDIO,raw,echo=0,escape=0x1d UNIX-CONNECT:/run/hvops-kvm/ctrl/web.serial
definition:
  description: The stored definition (the instance spec).
  returned: always
  type: dict
policy:
  description:
    - The stored autostart and restart policy (C(autostart), C(autostart_order), C(autostart_delay),
      C(restart_policy)); null when the instance has none stored (the defaults apply).
  returned: always
  type: dict
  sample: {autostart: true, autostart_order: 10, autostart_delay: 0, restart_policy: on-crash}
stop_method:
  description: How the guest was stopped in this run, C(agent), C(acpi) or C(forced); null when it was not stopped.
  returned: always
  type: str
  sample: acpi
actions:
  description: What the task did (or, in check mode, would do), in order.
  returned: always
  type: list
  elements: str
  sample: [define, start]
pending_restart:
  description: The running guest's spec differs from its definition; a restart applies it.
  returned: always
  type: bool
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hvops.kvm.plugins.module_utils import _kvm_instance as service
from ansible_collections.hvops.kvm.plugins.module_utils._module import call_library, exit_with, runner


def main():
    module = AnsibleModule(argument_spec=service.ARGUMENT_SPEC, **service.MODULE_OPTIONS)
    result, diff = call_library(module, service.run, module.params, runner(module), check_mode=module.check_mode)
    exit_with(module, result, diff)


if __name__ == '__main__':
    main()
