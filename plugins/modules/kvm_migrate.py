#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
---
module: kvm_migrate
short_description: Live-migrate a QEMU/KVM guest between two nodes, one phase at a time
version_added: 0.1.0
description:
  - Moves a running guest started by M(hvops.kvm.kvm_instance) from a source node to
    a target node, without libvirt. A play runs the phases in order, each on the node
    it names, and passes each phase's result to the next one.
  - C(prepare) (source) checks that the guest runs here and is ours, and returns its
    runtime (the exact argv and spec) and what the target needs.
  - C(accept) (target) refuses the guest when this node lacks memory, a disk or kernel
    file (shared storage; with O(storage=copy) room for the copied disks), a bridge, KVM when the guest uses it, or a QEMU
    as new as the source's that knows the guest's machine type, or when an instance
    of that name runs here. Otherwise it starts QEMU from the source's runtime,
    rebuilt for this node's paths (same machine type, accelerator and MACs), paused
    with C(-incoming defer), and makes it listen on the first free port of
    O(migration_ports). It returns the URI to migrate to.
  - C(migrate) (source) sets the migration capabilities and parameters explicitly on
    every run, starts the migration and waits on QEMU's C(MIGRATION) events, so it
    returns within milliseconds of the end. When the transferred bytes stop growing
    for O(stall_timeout) seconds, or the migration is not done within O(timeout), it
    is cancelled and the guest keeps running on the source. Returns statistics.
  - C(finalize) (target) with O(success=true) resumes the guest here and stores its
    definition and runtime, so that M(hvops.kvm.kvm_instance) manages it from now on.
    With O(success=false) it kills the incoming QEMU and removes its files.
  - C(confirm) (source) with O(success=true) stops the migrated-away copy and removes
    its files and definition. With O(success=false) it resumes the guest on the
    source, but only with O(target_confirmed_dead=true).
  - C(status) (either) reports the copy on this node; C(recover) (either) takes the
    other node's status and, after an interrupted run, keeps exactly one copy of the
    guest. Both nodes decide alike from the same two status results. When it keeps
    the source while QEMU still migrates from there (the migrate phase's process died),
    it first cancels that migration (action C(cancel)); run it on the source first.
  - The target's QEMU is resumed only by C(finalize) with O(success=true), and only
    when its incoming migration has completed; until then the guest belongs to the
    source. C(finalize) with O(success=false) never kills a copy that was resumed, and
    C(confirm) with O(success=false) never resumes the source unless told the target
    is dead, so a guest does not run twice.
  - Each phase holds the instance's lock on its node while it runs.
author:
  - hvops.kvm developers (@hvops)
extends_documentation_fragment:
  - hvops.kvm.node
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Every phase runs its checks and reports the actions it would take; nothing is started, stopped, written or sent.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  name:
    description:
      - Instance name.
    type: str
    required: true
  phase:
    description:
      - The phase to run on this node; see the description.
    type: str
    required: true
    choices: [prepare, accept, migrate, finalize, confirm, status, recover]
  lock_timeout:
    description:
      - Seconds to wait for another run on the same instance to finish.
    type: int
    default: 60
  runtime:
    description:
      - C(accept) only, required there. The C(runtime) the C(prepare) phase returned.
      - The target trusts nothing in it. Its spec is checked by the same rules as a
        M(hvops.kvm.kvm_instance) task (C(extra_args) may only shape the virtual
        hardware), and the target builds its own command line from that spec with
        its own QEMU binary (O(qemu_binary)); the source's command line is never run.
    type: dict
  qemu_binary:
    description:
      - C(accept) only. The QEMU binary the target starts; by default the node's
        C(qemu-system-x86_64) (or C(kvm)). The source's binary is never used.
      - Its name must be C(qemu-system-ARCH), C(kvm) or C(qemu-kvm), so that later
        runs recognise the process.
    type: str
  definition:
    description:
      - C(accept) only. The C(definition) the C(prepare) phase returned; it is stored on
        the target when the migration is finalized. Without it the running spec is
        stored.
    type: dict
  policy:
    description:
      - C(accept) only. The C(policy) the C(prepare) phase returned (autostart and restart
        policy); checked like any input from another node, and stored on the target with
        the definition when the migration is finalized.
    type: dict
  vnc_password:
    description:
      - C(accept) only. The guest's VNC password, needed when its VNC display has one
        (C(requirements.vnc_password) of C(prepare)). Never logged.
    type: str
  migration_address:
    description:
      - C(accept) only. The target's IP address the incoming QEMU listens on; it must
        be reachable from the source. Set it to the target's address on the
        migration network for a real two-node migration.
    type: str
    default: 127.0.0.1
  tls:
    description:
      - C(accept) and C(migrate). Send the guest over TLS with mutual x509 certificates
        (QEMU's C(tls-creds-x509)). Both phases must agree. The M(hvops.kvm.kvm_node)
        role makes each node's credentials; the C(hvops.kvm.migrate) role turns this
        on by default.
      - On the target, QEMU verifies the source's certificate against the CA and lets
        in only O(tls_peer); a client that connects first with no certificate, one
        of another CA or another node's fails and the target goes on listening.
    type: bool
    default: false
  tls_dir:
    description:
      - C(accept) and C(migrate) with O(tls). The node's directory of credentials,
        C(ca-cert.pem), C(server-cert.pem), C(server-key.pem), C(client-cert.pem),
        C(client-key.pem). The QEMU user (O(run_as)) must be able to read them (QEMU
        loads them after it dropped root), and nobody else the keys.
    type: path
    default: /etc/hvops-kvm/tls
  tls_peer:
    description:
      - C(accept) with O(tls), required there. The distinguished name of the source
        node's certificate, as QEMU prints it (for certificates of the
        M(hvops.kvm.kvm_node) role C(CN=) and the source's inventory name); no other
        client is let in.
    type: str
  tls_hostname:
    description:
      - C(migrate) with O(tls). The name the target's certificate must carry; by
        default the node of O(uri) (the target's certificates carry its migration
        address).
    type: str
  allow_any_address:
    description:
      - C(accept) only. Allow O(migration_address) to be C(0.0.0.0) or C(::), which
        listens on every address of the node. Refused unless this is C(true).
    type: bool
    default: false
  migration_ports:
    description:
      - C(accept) only. Port or port range (C(LOW-HIGH)) to listen on; a port in use
        is skipped for the next.
    type: str
    default: 49152-49215
  memory_margin_mb:
    description:
      - C(accept) only. MiB the target must have available (C(MemAvailable)) beyond the
        guest's memory, for QEMU's own needs.
    type: int
    default: 128
  uri:
    description:
      - C(migrate) only, required there. The C(uri) the C(accept) phase returned
        (C(tcp:HOST:PORT)).
    type: str
  live:
    description:
      - C(migrate) only. With C(false) the guest is paused for the whole migration
        (and resumed on the source when it fails).
    type: bool
    default: true
  max_bandwidth_mib:
    description:
      - C(migrate) only. Bandwidth limit in MiB/s; C(0) means unlimited (QEMU's own
        default would be 128 MiB/s).
    type: int
    default: 0
  downtime_limit_ms:
    description:
      - C(migrate) only. Longest pause of the guest allowed at switch-over, in ms.
    type: int
    default: 300
  auto_converge:
    description:
      - C(migrate) only. Throttle the guest's vCPUs when it dirties memory faster than
        it is sent.
    type: bool
    default: false
  throttle_initial:
    description:
      - C(migrate) only. With O(auto_converge), the share of vCPU time (percent) taken
        from the guest when throttling starts (QEMU's C(cpu-throttle-initial)).
    type: int
    default: 20
  throttle_increment:
    description:
      - C(migrate) only. With O(auto_converge), how many percent more are taken each
        time the migration still does not converge (QEMU's C(cpu-throttle-increment)).
    type: int
    default: 10
  xbzrle:
    description:
      - C(migrate) only. Send pages dirtied again as compressed deltas.
    type: bool
    default: false
  xbzrle_cache_mb:
    description:
      - C(migrate) only. Size of the XBZRLE page cache in MiB.
    type: int
    default: 64
  multifd:
    description:
      - C(accept) and C(migrate); give the same value to both. Send memory over
        several connections.
    type: bool
    default: false
  multifd_channels:
    description:
      - C(accept) and C(migrate); give the same value to both. Number of connections
        with O(multifd).
    type: int
    default: 2
  postcopy:
    description:
      - C(accept) and C(migrate); give the same value to both. Switch to post-copy
        after the first pass over memory, which bounds the time a busy guest needs.
      - The target stays paused until C(finalize), so the guest is paused from the
        switch to the end. A migration in post-copy cannot be cancelled.
    type: bool
    default: false
  return_path:
    description:
      - C(migrate) only. The target reports back, so that the source calls the
        migration completed only once the target has loaded the guest's state.
    type: bool
    default: true
  timeout:
    description:
      - C(migrate) only. Seconds after which an unfinished migration is cancelled; C(0)
        waits for ever.
    type: int
    default: 600
  stall_timeout:
    description:
      - C(migrate) only. Seconds without progress (no byte sent) after which the
        migration is cancelled.
    type: int
    default: 30
  success:
    description:
      - C(finalize) and C(confirm), required there. Whether the C(migrate) phase
        completed.
    type: bool
  target_confirmed_dead:
    description:
      - C(confirm) with O(success=false) only. Set it once C(finalize) with
        O(success=false) has succeeded on the target (its C(target_dead)). Without it
        the source is not resumed, since it cannot see whether the target runs.
    type: bool
    default: false
  role:
    description:
      - C(recover) only, required there. Whether this node was the migration's
        C(source) or its C(target).
    type: str
    choices: [source, target]
  peer_status:
    description:
      - C(recover), required there. The result of the C(status) phase on the
        other node.
      - C(finalize) with O(success=false), optional. The result of the C(status)
        phase on the source, taken after its migration ended. An incoming copy here
        whose monitor does not answer (a frozen QEMU) is killed only when this shows
        the source copy running or paused with its migration C(cancelled) or C(failed),
        so that the target never received the whole guest; every value must be
        exactly what C(status) returns. A copy here that holds a completed incoming
        migration is not killed when this shows the source copy gone (C(present) is
        false), since it is then the only copy of the guest.
    type: dict
  local_status:
    description:
      - C(recover) only. The result of the C(status) phase on this node, taken with
        O(peer_status). When the copy here has changed since, nothing is done.
    type: dict
  storage:
    description:
      - How the guest's disks reach the target. Give the same value to every phase.
      - C(shared) (the default) the target opens the very same files, so they must be on
        storage both nodes see.
      - C(copy) the writable disks are copied while the guest runs (local disks).
        C(prepare) returns each disk's format and virtual size (O(disks)); C(accept) makes
        new images of the same format and size where O(storage_map) puts them, and exports
        them writable from the paused incoming QEMU's NBD server on a port of
        O(migration_ports) (under TLS with O(tls)); C(migrate) mirrors every disk to them
        (C(blockdev-mirror), sync full, a 64 MiB buffer per disk), waits until all are in
        step, migrates the RAM with the C(pause-before-switchover) capability, and
        finishes the mirror jobs while the guest is stopped before the switch-over, so
        that every block written on the source is on the target before the target gets
        the guest's device state; C(finalize) stops the NBD server before the guest
        resumes on the target.
      - Any failure rolls back. The jobs are cancelled, and the guest runs on the
        source with its own disks, which a copy migration only reads. C(finalize) with
        O(success=false) removes the images C(accept) made, and only those.
      - Read-only disks are not copied; they must be on the target, as with shared storage.
      - The source's images stay after a successful migration unless
        O(remove_source_disks=true) is given to C(confirm).
    type: str
    choices: [shared, copy]
    default: shared
  storage_map:
    description:
      - C(accept) with O(storage=copy). Where the target keeps the copied images, as
        a dictionary of source directory to target directory. A disk under a source directory
        (the longest that holds it) goes under its target directory with the same
        relative path; any other disk keeps its path.
      - Every image C(accept) makes must be a new file in an existing directory the QEMU
        user can reach, outside O(run_dir) and O(state_dir), on a file system with room
        for the virtual sizes of all copied disks (plus 64 MiB).
    type: dict
  disks:
    description:
      - C(accept) with O(storage=copy), required there. The C(disks) result of
        C(prepare). Checked against the guest's spec as untrusted input.
    type: list
    elements: dict
  nbd:
    description:
      - C(migrate) with O(storage=copy), required there. The C(nbd) result of
        C(accept). The source connects to the host of O(uri).
    type: dict
  storage_bandwidth_mib:
    description:
      - C(migrate) with O(storage=copy). Bandwidth limit of each disk's copy in MiB/s;
        0 is no limit.
    type: int
    default: 0
  remove_source_disks:
    description:
      - C(confirm) with O(success=true) and O(storage=copy). Also remove the source's
        images of the copied disks once the migrated-away copy is stopped. An image
        another instance defined here also uses stays, with a warning.
    type: bool
    default: false
notes:
  - With O(storage=shared) the disks must be on storage both nodes see; with
    O(storage=copy) local disks are copied while the guest runs.
  - The incoming QEMU listens without encryption; keep migration traffic on a trusted
    network.
seealso:
  - module: hvops.kvm.kvm_instance
  - module: hvops.kvm.kvm_node_facts
'''

EXAMPLES = r'''
# Inventory: the source node is "node1", the target "node2".
- name: Prepare on the source
  hvops.kvm.kvm_migrate:
    name: web
    phase: prepare
  delegate_to: node1
  register: prepared

- name: Accept on the target
  hvops.kvm.kvm_migrate:
    name: web
    phase: accept
    runtime: "{{ prepared.runtime }}"
    definition: "{{ prepared.definition }}"
    policy: "{{ prepared.policy | default(omit, true) }}"
    migration_address: 192.0.2.12
  delegate_to: node2
  register: accepted

- name: Migrate, then finalize and confirm either way
  block:
    - name: Migrate
      hvops.kvm.kvm_migrate:
        name: web
        phase: migrate
        uri: "{{ accepted.uri }}"
        stall_timeout: 60
      delegate_to: node1
      register: migrated
  always:
    - name: Finalize on the target
      hvops.kvm.kvm_migrate:
        name: web
        phase: finalize
        success: "{{ migrated is succeeded }}"
      delegate_to: node2
      register: finalized

    - name: Confirm on the source
      hvops.kvm.kvm_migrate:
        name: web
        phase: confirm
        success: "{{ migrated is succeeded }}"
        target_confirmed_dead: "{{ finalized.target_dead | default(false) }}"
      delegate_to: node1

# After a run that was cut off: look at both nodes, then let each one act.
- name: Status on both nodes
  hvops.kvm.kvm_migrate:
    name: web
    phase: status
  delegate_to: "{{ item }}"
  loop: [node1, node2]
  register: seen

- name: Recover on both nodes
  hvops.kvm.kvm_migrate:
    name: web
    phase: recover
    role: "{{ item.0 }}"
    local_status: "{{ item.1 }}"
    peer_status: "{{ item.2 }}"
  delegate_to: "{{ item.1.item }}"
  loop:
    - [source, "{{ seen.results[0] }}", "{{ seen.results[1] }}"]
    - [target, "{{ seen.results[1] }}", "{{ seen.results[0] }}"]
'''

RETURN = r'''
phase:
  description: The phase that ran.
  returned: always
  type: str
  sample: migrate
name:
  description: Instance name.
  returned: always
  type: str
actions:
  description: What the phase did (in check mode, would do), in order.
  returned: always
  type: list
  elements: str
  sample: [set_capabilities, set_parameters, migrate]
pid:
  description: Process id of the copy on this node.
  returned: prepare, accept, finalize, confirm, status
  type: int
run_state:
  description: QEMU's run state of the copy on this node (C(query-status)).
  returned: prepare, status
  type: str
  sample: running
runtime:
  description: The guest's runtime on the source (argv, spec, accelerator, QEMU version); pass it to C(accept).
  returned: prepare
  type: dict
policy:
  description: The guest's stored autostart and restart policy on the source (null when none); pass it to C(accept).
  returned: prepare
  type: dict
definition:
  description: The guest's stored definition on the source; pass it to C(accept).
  returned: prepare
  type: dict
disks:
  description:
    - C(prepare) with O(storage=copy) the guest's disks as its QEMU has them open
      (C(index), C(path), C(format), C(virtual_size) in bytes, C(readonly)); pass it to
      C(accept). Null with O(storage=shared).
    - C(accept) the disks copied to this node (C(index), C(drive), C(source_path),
      C(path) here, C(format), C(size)); empty with O(storage=shared).
  returned: prepare, accept
  type: list
  elements: dict
nbd:
  description: The target's NBD server for O(storage=copy) (C(port), C(exports) with C(index) and C(name)); pass it to C(migrate).
  returned: accept
  type: dict
storage:
  description:
    - C(accept) the storage mode, C(shared) or C(copy).
    - C(migrate) C(mode), C(disks) copied, C(copied_bytes) and C(copy_seconds) until
      every mirror was in step.
  returned: accept, migrate
  type: raw
removed_disks:
  description: The source's images C(confirm) removed (O(remove_source_disks)).
  returned: confirm with success=true
  type: list
  elements: str
requirements:
  description: What the target needs.
  returned: prepare
  type: dict
  contains:
    memory_mb:
      description: Guest memory.
      type: int
    vcpus:
      description: Virtual CPUs.
      type: int
    machine:
      description: Versioned machine type the target's QEMU must know.
      type: str
    accel:
      description: Accelerator the guest runs with (C(kvm) or C(tcg)).
      type: str
    qemu_version:
      description: Source QEMU version; the target's must be the same or newer.
      type: list
      elements: int
    files:
      description: Disk, kernel and initrd paths the target must see (shared storage).
      type: list
      elements: str
    bridges:
      description: Bridges the guest's NICs attach to.
      type: list
      elements: str
    vnc_password:
      description: Whether the guest's VNC display has a password (pass it to C(accept)).
      type: bool
uri:
  description: C(accept) the URI the target listens on, for C(migrate); C(migrate) the URI it migrated to.
  returned: accept, migrate
  type: str
  sample: tcp:192.0.2.12:49152
address:
  description: Address the target listens on.
  returned: accept
  type: str
port:
  description: Port the target listens on.
  returned: accept
  type: int
busy_ports:
  description: Ports of the range skipped because they were in use.
  returned: accept
  type: list
  elements: int
qemu_version:
  description: The target's QEMU version.
  returned: accept
  type: str
tls:
  description: Whether the guest is (to be) sent over TLS.
  returned: accept, migrate
  type: bool
tls_peer:
  description: The one client certificate DN the target lets in, or null without TLS.
  returned: accept
  type: str
  sample: CN=kvm1
memory:
  description: C(available_mb) on the target and C(required_mb) (guest plus margin).
  returned: accept
  type: dict
capabilities:
  description: Migration capabilities set, by name.
  returned: accept, migrate
  type: dict
  sample: {events: true, return-path: true, auto-converge: false, multifd: false}
parameters:
  description: Migration parameters set (C(max-bandwidth) in bytes/s, C(downtime-limit) in ms).
  returned: migrate
  type: dict
status:
  description: Final migration status (C(completed)); a failed migration fails the task with C(status), C(reason) and C(stats).
  returned: migrate
  type: str
  sample: completed
stats:
  description: Statistics read after completion, from C(query-migrate).
  returned: migrate
  type: dict
  contains:
    total_time_ms:
      description: Duration of the migration.
      type: int
    downtime_ms:
      description: How long the guest was paused at switch-over.
      type: int
    setup_time_ms:
      description: Setup time.
      type: int
    transferred_bytes:
      description: Bytes sent.
      type: int
    throughput_mbps:
      description: QEMU's last measured throughput in megabits per second.
      type: float
    average_mib_s:
      description: Bytes sent over total time, in MiB/s.
      type: float
    passes:
      description: Passes over the guest's memory (dirty-sync-count).
      type: int
    dirty_pages_rate:
      description: Pages dirtied per second in the last pass.
      type: int
    dirty_rate_mib_s:
      description: The same in MiB/s.
      type: float
    precopy_bytes:
      description: Bytes sent while the guest ran on the source.
      type: int
    downtime_bytes:
      description: Bytes sent while the guest was paused for the switch-over.
      type: int
    postcopy_bytes:
      description: Bytes sent after the switch to post-copy (O(postcopy)).
      type: int
started_at:
  description: When the migration was started, in epoch seconds on this node's clock (also given when it fails).
  returned: migrate
  type: float
finished_at:
  description: When the phase saw the migration end, in epoch seconds on this node's clock (also given when it fails).
  returned: migrate
  type: float
observed:
  description:
    - What the copy here was when the phase looked, as the C(status) phase reports it (C(present), C(pid),
      C(state), C(run_state), C(migration_status), C(incoming), C(busy), C(defined), C(error), C(kind)).
    - Also given when the phase refuses, so that a play can tell why without running C(status).
  returned: prepare, accept
  type: dict
timing:
  description:
    - C(wait_s) how long the phase waited for the migration; C(completed_at) QEMU's
      timestamp of its completion event; C(completion_seen_after_ms) and
      C(returned_after_ms) how long after that event the phase saw it and was done.
  returned: migrate
  type: dict
state:
  description:
    - What the copy on this node is after the phase, in the words of every module of the collection
      (C(running), C(paused), C(incoming), C(migrating), C(migrated), C(shutdown), C(crashed),
      C(stopped), C(unknown); C(absent) after the guest left the node).
  returned: finalize, confirm, recover, status
  type: str
target_dead:
  description: No incoming QEMU of the instance lives on the target any more; pass it to C(confirm) as O(target_confirmed_dead).
  returned: finalize with success=false
  type: bool
silent:
  description:
    - The copy here did not answer its monitor and was killed with SIGKILL on the source's evidence
      (O(peer_status)).
  returned: finalize with success=false when it kills such a copy, recover when it discards a copy
  type: bool
present:
  description: A QEMU of the instance lives on this node.
  returned: status
  type: bool
migration_status:
  description: C(query-migrate) status of the copy here (outgoing on a source, incoming on a target).
  returned: status
  type: str
incoming:
  description: The copy here is a migration target not yet finalized.
  returned: status
  type: bool
busy:
  description: Another run holds the instance's lock; the monitor was not asked.
  returned: status
  type: bool
defined:
  description: A definition of the instance is stored on this node.
  returned: status
  type: bool
kind:
  description:
    - What the copy here is (C(status)), or was before C(recover) acted. One of C(absent),
      C(running), C(paused), C(incoming-complete), C(incoming-partial), C(busy) or C(unknown).
    - Called C(copy) before 0.2.0 (a name Jinja2 resolves to the dictionary's own copy method).
  returned: status, recover
  type: str
decision:
  description: Which copy C(recover) keeps, C(source), C(target) or null when the guest runs nowhere.
  returned: recover
  type: str
reason:
  description: Why.
  returned: recover, and finalize with success=false when it kills a copy whose monitor did not answer
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hvops.kvm.plugins.module_utils import _kvm_migrate as service
from ansible_collections.hvops.kvm.plugins.module_utils._module import call_library, exit_with, runner


def main():
    module = AnsibleModule(argument_spec=service.ARGUMENT_SPEC, **service.MODULE_OPTIONS)
    exit_with(module, call_library(module, service.run, module.params, runner(module), check_mode=module.check_mode))


if __name__ == '__main__':
    main()
