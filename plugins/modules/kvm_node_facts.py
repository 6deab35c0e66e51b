#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
---
module: kvm_node_facts
short_description: Memory, CPU, hypervisor, instance and storage facts of a QEMU/KVM node
version_added: 0.1.0
description:
  - Gathers what placement decisions need about a node into the C(kvm_node) fact
    (C(ansible_facts.kvm_node)) - which node can take a guest, which node runs what.
  - Memory and CPU come from C(/proc/meminfo) and C(/proc/cpuinfo); the hypervisor
    part tells whether C(/dev/kvm) is usable and which QEMU (version, machine types)
    and C(socat) the node has.
  - Every instance under O(run_dir) is listed with its state, read from its stored
    files and its process. A QEMU counts as the instance's only if it holds the lock on
    the instance's pidfile and names that pidfile and the instance on its command line;
    QEMU processes started by anything else are ignored.
  - The storage part gives, for the directories of O(storage_paths) and those holding the
    instances' writable disks, the file system each lies on with its free and total bytes.
  - Running, paused, incoming and migrating guests can only be told apart by asking
    QEMU, so one short QMP session is opened per instance whose QEMU is alive, and
    only when the C(instances) subset is gathered. The sessions run side by side.
  - What is wrong with the node is returned as plain sentences in C(problems), so a
    play can show them or fail on them.
  - Nothing on the node is changed.
author:
  - hvops.kvm developers (!UNKNOWN)
extends_documentation_fragment:
  - hvops.kvm.node
attributes:
  check_mode:
    description: Can run in check mode and predict its result without changing the node.
    support: full
    details: The module only reads; check mode gathers the same facts.
  diff_mode:
    description: Can show what it changed, in diff mode.
    support: none
  facts:
    description: Returns facts in C(ansible_facts), which are added to the host's variables.
    support: full
options:
  gather_subset:
    description:
      - Which facts to gather, as with M(ansible.builtin.setup).
      - C(all) gathers everything; C(memory), C(cpu), C(hypervisor), C(instances) and
        C(storage) gather one part each.
      - A name prefixed with C(!) leaves that part out. A list of exclusions only starts
        from C(all), so V(!instances) gathers everything but the instance list.
      - C(memory) lists no instances but reads their pidfiles and runtime files, to
        report the memory committed to running guests. It opens no monitor.
      - C(hypervisor) runs the QEMU binary twice (C(-version) and C(-machine help)).
      - C(storage) reads the instances' specs as C(memory) does, then makes a C(stat) and a
        C(statvfs) call per directory (O(storage_paths) and the directories of the instances'
        writable disks). It opens no monitor and runs no program, so C(all) includes it.
      - C(agent) (which implies C(instances)) asks the guest agent of every running guest
        started with C(guest_agent) for its host name, OS and addresses, all at once,
        each within O(agent_timeout).
    type: list
    elements: str
    default: [all]
  agent_timeout:
    description:
      - Seconds a guest agent has to answer (each exchange), from 0.1 to 60. A guest whose
        agent does not answer in time is reported with C(agent.status=no-answer); the
        agents are asked side by side, so this is about the longest the C(agent) subset adds.
    type: float
    default: 3.0
  storage_paths:
    description:
      - Directories the C(storage) subset reports on, besides those holding the instances'
        writable disks - where a copy migration would put a guest's images, for example
        (the role hvops.kvm.evacuate passes the target directories of its storage map).
      - Each must be an absolute, normalised path (no C(..), C(//) or trailing C(/)), at
        most 64. One that does not exist is listed in C(storage.missing), not an error.
    type: list
    elements: str
    default: []
  qemu_binary:
    description:
      - QEMU binary to report on, as a name looked up in C(PATH) or an absolute path.
      - By default C(qemu-system-x86_64), else C(kvm).
    type: str
notes:
  - Reading O(run_dir) and C(/dev/kvm) needs the user that runs the guests (normally
    root); use C(become) otherwise.
  - The C(problems) list is not exhaustive; an empty list means none of the checked
    problems was found.
seealso:
  - module: hvops.kvm.kvm_instance
  - module: ansible.builtin.setup
'''

EXAMPLES = r'''
- name: Gather everything about the node
  hvops.kvm.kvm_node_facts:

- name: Show what is wrong with the node
  ansible.builtin.debug:
    var: kvm_node.problems

- name: Only memory, for a placement decision over many nodes
  hvops.kvm.kvm_node_facts:
    gather_subset: [memory]

- name: Everything but the instance list (opens no QMP monitor)
  hvops.kvm.kvm_node_facts:
    gather_subset: ['!instances']

- name: Free space where copied guest images would go, and where the guests' disks are
  hvops.kvm.kvm_node_facts:
    gather_subset: [storage]
    storage_paths: [/srv/images]

- name: Facts of a node whose state lives elsewhere
  hvops.kvm.kvm_node_facts:
    run_dir: /srv/hvops-kvm/run

- name: Pick the node with the most memory left for guests
  ansible.builtin.set_fact:
    target_node: >-
      {{ groups['kvm_nodes']
         | map('extract', hostvars)
         | sort(attribute='kvm_node.memory.allocatable_mb', reverse=true)
         | map(attribute='inventory_hostname') | first }}
  run_once: true

- name: Fail on a node that cannot run guests with KVM
  ansible.builtin.assert:
    that:
      - kvm_node.hypervisor.kvm.usable
      - kvm_node.problems | length == 0
    fail_msg: "{{ kvm_node.problems | join('; ') }}"

- name: Names of the guests running here
  ansible.builtin.debug:
    msg: "{{ kvm_node.instances.values() | selectattr('state', 'eq', 'running') | map(attribute='name') | list }}"
'''

RETURN = r'''
ansible_facts:
  description: Facts added to the host's variables.
  returned: always
  type: dict
  contains:
    kvm_node:
      description:
        - The node's facts. The C(memory), C(cpu), C(hypervisor), C(instances) and C(storage)
          keys are there only when their subset was gathered.
      returned: always
      type: dict
      contains:
        run_dir:
          description: The runtime directory the instances' sockets, pidfiles and runtime files were read from.
          returned: always
          type: str
          sample: /run/hvops-kvm
        state_dir:
          description: The persistent state directory the definitions and policies were read from.
          returned: always
          type: str
          sample: /var/lib/hvops-kvm
        gather_subset:
          description: The subsets gathered, after resolving C(all) and C(!) exclusions.
          returned: always
          type: list
          elements: str
          sample: [cpu, hypervisor, instances, memory, storage]
        problems:
          description:
            - What is wrong with the node, one plain sentence each, with what to do about
              it. Covers missing QEMU or C(socat), unusable KVM, an unsafe O(run_dir),
              crashed instances, instances whose monitor did not answer, and more memory
              promised to guests than the node has (each only for the subsets gathered).
          returned: always
          type: list
          elements: str
          sample: ["socat not found: install the socat package (the QMP monitor and the serial consoles are reached through it)"]
        memory:
          description: Memory of the node in MiB (whole MiB, rounded down).
          returned: when the memory subset is gathered
          type: dict
          contains:
            total_mb:
              description: Physical memory (C(MemTotal)).
              type: int
              sample: 64316
            free_mb:
              description:
                - Memory that could be given out now without swapping. The kernel's
                  C(MemAvailable); on kernels before 3.14, C(MemFree) plus C(Buffers),
                  C(Cached) less C(Shmem), and C(SReclaimable).
              type: int
              sample: 40210
            used_mb:
              description: C(total_mb) less C(free_mb), guests included.
              type: int
              sample: 24106
            host_used_mb:
              description: C(used_mb) less what the QEMU processes of this node's instances hold resident.
              type: int
              sample: 2100
            committed_mb:
              description:
                - Memory given to the instances whose QEMU is alive (running, paused,
                  migrating...), the sum of the memory each was started with.
              type: int
              sample: 24576
            guest_resident_mb:
              description: Memory the QEMU processes of those instances hold resident now.
              type: int
              sample: 22006
            allocatable_mb:
              description:
                - C(free_mb) less what running guests were given but have not touched yet;
                  what a new guest can be given without squeezing the ones already here.
                  Use this one to place guests.
              type: int
              sample: 37640
            swap_total_mb:
              description: Swap space.
              type: int
              sample: 0
            swap_free_mb:
              description: Unused swap space.
              type: int
              sample: 0
        cpu:
          description: The node's processors, from C(/proc/cpuinfo).
          returned: when the cpu subset is gathered
          type: dict
          contains:
            count:
              description: Logical processors online.
              type: int
              sample: 16
            model:
              description: Model name of the first processor; null where C(/proc/cpuinfo) has none.
              type: str
              sample: AMD EPYC 7251 8-Core Processor
            vendor:
              description: Vendor id, for example C(GenuineIntel) or C(AuthenticAMD).
              type: str
              sample: AuthenticAMD
            sockets:
              description: Physical packages; null where C(/proc/cpuinfo) does not say.
              type: int
              sample: 2
            cores:
              description: Physical cores in all; null where C(/proc/cpuinfo) does not say.
              type: int
              sample: 16
            threads_per_core:
              description: Logical processors per core (2 with SMT/hyper-threading).
              type: int
              sample: 1
            virtualization_flags:
              description: The hardware virtualisation flags the CPU shows, C(vmx) (Intel VT-x) or C(svm) (AMD-V).
              type: list
              elements: str
              sample: [svm]
            virtualization:
              description: The first of C(virtualization_flags), or null.
              type: str
              sample: svm
            virtualized:
              description: The CPU shows the C(hypervisor) flag - the node is itself a virtual machine.
              type: bool
              sample: false
        hypervisor:
          description: KVM, QEMU and socat on the node.
          returned: when the hypervisor subset is gathered
          type: dict
          contains:
            kvm:
              description: The KVM device.
              type: dict
              contains:
                device:
                  description: Its path.
                  type: str
                  sample: /dev/kvm
                present:
                  description: Whether it exists.
                  type: bool
                usable:
                  description: Whether it opens and speaks the stable KVM API.
                  type: bool
                reason:
                  description: Why it is not usable, or null.
                  type: str
                  sample: "/dev/kvm: No such file or directory"
            accel:
              description: The accelerator guests with C(accel=auto) get here, C(kvm) or C(tcg).
              type: str
              sample: kvm
            qemu:
              description: The QEMU binary; null when none was found or it failed to run.
              type: dict
              contains:
                path:
                  description: Absolute path of the binary.
                  type: str
                  sample: /usr/bin/qemu-system-x86_64
                version:
                  description: Its version; null when it could not be read.
                  type: str
                  sample: 7.2.22
                version_info:
                  description: The version as [major, minor, micro], for comparisons.
                  type: list
                  elements: int
                  sample: [7, 2, 22]
                default_machine:
                  description: The machine type QEMU uses when none is given.
                  type: str
                  sample: pc-i440fx-7.2
                machines:
                  description: Every machine type the binary knows, aliases included.
                  type: list
                  elements: str
                  sample: [microvm, pc, pc-i440fx-7.2, pc-q35-7.2, q35]
                machine_aliases:
                  description: Aliases and the versioned machine type each stands for here.
                  type: dict
                  sample: {pc: pc-i440fx-7.2, q35: pc-q35-7.2}
            socat:
              description: The socat program the QMP monitor is reached through.
              type: dict
              contains:
                present:
                  description: Whether it is installed.
                  type: bool
                path:
                  description: Its path, or null.
                  type: str
                  sample: /usr/bin/socat
        storage:
          description:
            - The file systems of the directories of O(storage_paths) and of those holding the
              instances' writable disks (of their running spec, else of their definition).
          returned: when the storage subset is gathered
          type: dict
          contains:
            filesystems:
              description: One entry per file system (device) holding some of those directories, by first path.
              type: list
              elements: dict
              contains:
                device:
                  description: The device id (C(st_dev)) of the file system.
                  type: int
                  sample: 2049
                paths:
                  description: The directories on it, sorted.
                  type: list
                  elements: str
                  sample: [/srv/images, /var/lib/hvops-kvm/images]
                free_bytes:
                  description:
                    - Bytes an unprivileged writer may still use (C(f_bavail) times C(f_frsize)) - what
                      the C(accept) phase of a copy migration counts (M(hvops.kvm.kvm_migrate)).
                  type: int
                  sample: 107374182400
                total_bytes:
                  description: Size of the file system in bytes (C(f_blocks) times C(f_frsize)).
                  type: int
                  sample: 536870912000
            missing:
              description: The directories that do not exist (or are not directories, or cannot be read), sorted.
              type: list
              elements: str
              sample: [/srv/new-images]
        instances:
          description:
            - Every instance under O(run_dir) (with a stored definition, a runtime file or
              a pidfile), keyed by name.
          returned: when the instances subset is gathered
          type: dict
          contains:
            name:
              description: Instance name.
              type: str
              sample: web
            state:
              description:
                - C(running); C(paused) (vCPUs stopped); C(incoming) (a migration target
                  waiting for or receiving a guest); C(migrating) (an outgoing migration is
                  under way, or QEMU is finishing one); C(migrated) (the guest has moved
                  away, its QEMU still lives); C(shutdown) (the guest powered off and QEMU
                  stays); C(crashed) (QEMU died without being stopped, leaving its pidfile; or
                  the guest was running when the node went down without stopping it); C(stopped)
                  (defined, not running); C(unknown) (QEMU lives but
                  its monitor did not answer, or its files cannot be read - see C(error)).
              type: str
              sample: running
            run_state:
              description: QEMU's own run state from QMP C(query-status), or null when not asked.
              type: str
              sample: running
            pid:
              description: Process id of the instance's QEMU, or null.
              type: int
              sample: 4242
            memory_mb:
              description:
                - Memory of the instance in MiB - what its QEMU was started with when it
                  lives, else what its stored definition says.
              type: int
              sample: 1024
            vcpus:
              description: Virtual CPUs, from the same source as C(memory_mb).
              type: int
              sample: 2
            machine:
              description: Machine type, from the same source as C(memory_mb).
              type: str
              sample: pc-i440fx-7.2
            uptime_s:
              description: Seconds since its QEMU started, or null.
              type: int
              sample: 86400
            resident_mb:
              description: Memory its QEMU holds resident, or null.
              type: int
              sample: 700
            defined:
              description: Whether a definition is stored for it.
              type: bool
            accel:
              description: Accelerator its QEMU runs with, or null.
              type: str
              sample: kvm
            qemu_version:
              description: Version of the QEMU binary it was started with, or null.
              type: str
              sample: 7.2.22
            busy:
              description:
                - Another run holds the instance's lock - an operation on it is under way.
                - Its monitor is then waited for at most 2 seconds (a migration may hold it),
                  and a state that could not be read is not reported as a problem.
              type: bool
            pending_restart:
              description: It runs with a spec that differs from its stored definition.
              type: bool
            user:
              description:
                - The user its QEMU runs as (from C(/proc/PID/status)), or null when it
                  does not run. A guest running as C(root) is one of the node's problems.
              type: str
              sample: hvops-qemu
            sandboxed:
              description:
                - Whether its QEMU runs under a seccomp filter (QEMU's C(-sandbox)), or null
                  when it does not run. One without is one of the node's problems.
              type: bool
            autostart:
              description: Whether the node's boot starts it (null when it has no definition here).
              type: bool
            autostart_order:
              description: Its place in the node's boot, lower first (null when it has no definition here).
              type: int
            autostart_delay:
              description: Seconds the node's boot waits after starting it (null when it has no definition here).
              type: int
            restart_policy:
              description:
                - C(on-crash) or C(never) (null when it has no definition here). A crashed guest with
                  C(on-crash) is started again at boot and by C(playbooks/heal.yml).
              type: str
            sockets:
              description: Its unix sockets.
              type: dict
              contains:
                qmp:
                  description: QMP socket.
                  type: str
                monitor:
                  description: Human monitor socket.
                  type: str
                serial:
                  description: Serial console socket.
                  type: str
            error:
              description: Why the state is C(unknown), else null.
              type: str
            agent:
              description:
                - What the guest agent says, when the C(agent) subset is gathered. Everything
                  in it comes from inside the guest, so it is as trustworthy as the guest;
                  it is checked for shape and size, never believed.
              returned: when the agent subset is gathered
              type: dict
              contains:
                status:
                  description:
                    - C(ok); C(no-answer) (the agent did not answer in time, or its channel is
                      closed); C(bad-answer) (it sent something that is not an answer - garbage,
                      too much, a malformed field); C(off) (the guest has no agent channel);
                      C(down) (the guest is not running).
                  type: str
                  sample: ok
                error:
                  description: Why the status is not C(ok) (null for C(ok) and C(off)).
                  type: str
                hostname:
                  description: The guest's host name (C(guest-get-host-name)).
                  type: str
                  sample: web1
                os:
                  description:
                    - From C(guest-get-osinfo) - C(id), C(name), C(pretty_name), C(version),
                      C(version_id), C(kernel_release), C(machine); null when the agent lacks it.
                  type: dict
                  sample: {id: debian, name: Debian GNU/Linux, version_id: '12', kernel_release: 6.1.0-31-cloud-amd64}
                interfaces:
                  description: The guest's network interfaces (C(guest-network-get-interfaces)).
                  type: list
                  elements: dict
                  contains:
                    name:
                      description: Interface name in the guest.
                      type: str
                      sample: eth0
                    hardware_address:
                      description: Its MAC address, or null.
                      type: str
                      sample: 52:54:00:12:34:56
                    addresses:
                      description: Its addresses, each with C(address), C(prefix) and C(family) (C(ipv4) or C(ipv6)).
                      type: list
                      elements: dict
                      sample: [{address: 10.0.0.5, prefix: 24, family: ipv4}]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hvops.kvm.plugins.module_utils import _kvm_node_facts as service
from ansible_collections.hvops.kvm.plugins.module_utils._module import call_library, exit_with, runner


def main():
    module = AnsibleModule(argument_spec=service.ARGUMENT_SPEC, **service.MODULE_OPTIONS)
    exit_with(module, call_library(module, service.run, module.params, runner(module), check_mode=module.check_mode))


if __name__ == '__main__':
    main()
