# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    """Options that describe a QEMU/KVM instance (its hardware and boot)."""

    DOCUMENTATION = r'''
options:
  memory:
    description:
      - Guest RAM in MiB. Defaults to 512 when the instance is first defined.
    type: int
  vcpus:
    description:
      - Number of virtual CPUs. Defaults to 1 when the instance is first defined.
    type: int
  machine:
    description:
      - QEMU machine type. An alias such as C(pc) or C(q35) is pinned to the versioned
        name it stands for on this node (for example C(pc-i440fx-7.2)) when the
        definition is stored, so that a migration target emulates the same machine.
      - Defaults to QEMU's default machine.
    type: str
  cpu_model:
    description:
      - QEMU CPU model (C(-cpu)). Defaults to QEMU's default model.
    type: str
  uuid:
    description:
      - The guest's SMBIOS UUID.
    type: str
  accel:
    description:
      - Accelerator. C(auto) uses KVM when C(/dev/kvm) can be opened and answers the
        KVM API, and TCG (software emulation) otherwise. The choice made at start is
        kept in the runtime file, so restart and migration keep it.
    type: str
    choices: [auto, kvm, tcg]
  acpi:
    description:
      - Give the guest ACPI. Graceful stop presses the ACPI power button, so a guest
        without ACPI can only be forced off.
    type: bool
  disks:
    description:
      - Disk images, in order; the first is the boot disk. Images are never created or
        deleted by this collection.
    type: list
    elements: dict
    suboptions:
      path:
        description: Absolute path of the image or block device.
        type: path
        required: true
      format:
        description: Image format.
        type: str
        choices: [raw, qcow2]
        default: raw
      interface:
        description:
          - How the guest sees the disk. A read-only disk cannot be an C(ide) hard disk.
        type: str
        choices: [virtio, ide, scsi]
        default: virtio
      readonly:
        description: Attach the disk read-only.
        type: bool
        default: false
      cache:
        description: QEMU cache mode. Defaults to QEMU's default (writeback).
        type: str
        choices: [none, writeback, writethrough, directsync, unsafe]
  kernel:
    description:
      - Absolute path of a kernel to boot directly (C(-kernel)). Needs O(root).
    type: str
  initrd:
    description:
      - Absolute path of an initial ramdisk. Needs O(kernel).
    type: str
  root:
    description:
      - Root device passed to the kernel (C(root=... ro)). Required with O(kernel).
    type: str
  kernel_args:
    description:
      - Extra kernel command line words, appended after root and console.
    type: str
  serial_console:
    description:
      - Connect the first serial port to a unix socket (C(ctrl/NAME.serial)) and, with a
        kernel, add C(console=ttyS0,115200) to its command line. Defaults to true.
    type: bool
  vnc_bind_address:
    description:
      - Address (IPv4 or IPv6, without a scope id) the VNC server listens on. No VNC
        when unset.
    type: str
  vnc_display:
    description:
      - VNC display number; the server listens on port 5900 plus this number.
        Defaults to 0.
    type: int
  vnc_tablet:
    description:
      - Add a USB tablet when VNC is on, so the pointer follows the VNC client.
        Defaults to true.
    type: bool
  vnc_password:
    description:
      - VNC password, 1 to 8 printable ASCII characters (VNC authentication uses no
        more). It is stored on the node with mode C(0600) and set through the monitor
        before the guest runs. Never logged.
      - Added to a running guest that was started without one, it takes effect at the
        next O(state=restarted); until then every run returns C(pending_restart) and a
        warning (QEMU cannot turn password authentication on while it runs).
    type: str
  nics:
    description:
      - Network interfaces, in order. No NIC when empty.
    type: list
    elements: dict
    suboptions:
      type:
        description:
          - C(bridge) creates a tap device that a generated if-up script attaches to
            O(nics[].bridge); C(user) is QEMU's user-mode network.
        type: str
        choices: [bridge, user]
        default: user
      bridge:
        description: Bridge to attach a C(bridge) NIC to. The bridge must exist.
        type: str
      mac:
        description:
          - MAC address. When unset a stable address is derived from the instance
            name and the NIC's position (prefix C(52:54:00)).
        type: str
      model:
        description: Emulated NIC model.
        type: str
        choices: [virtio, e1000, rtl8139]
        default: virtio
  extra_args:
    description:
      - Further QEMU arguments, appended to the command line as given (an argv list,
        never passed through a shell).
      - They travel with the guest (a migration target starts QEMU with them), so they
        may only shape the virtual hardware. Taken are C(-device), C(-global),
        C(-smbios type=N,...), C(-rtc), C(-boot) (no C(splash)), C(-k), C(-vga),
        C(-usb), C(-no-hpet), C(-object memory-backend-ram,...) and
        C(-machine memory-backend=ID). Refused are every other option, devices that
        reach host resources (C(loader), C(vfio-pci), C(usb-host), C(vhost-*),
        serial ports and consoles, ...) and properties naming host files, devices or
        backends (C(file), C(romfile), C(chardev), C(netdev), C(drive), ...).
    type: list
    elements: str
  qemu_binary:
    description:
      - QEMU binary to run. Defaults to C(qemu-system-x86_64) (or C(kvm)) from C(PATH).
      - Its name must be C(qemu-system-ARCH), C(kvm) or C(qemu-kvm), so that later runs
        recognise the process as this instance's.
      - A migration target ignores the source's binary and runs its own.
    type: str
  guest_agent:
    description:
      - Give the guest a channel for the QEMU guest agent (C(qemu-ga)), the virtio-serial
        port C(org.qemu.guest_agent.0) on the unix socket C(ctrl/NAME.qga) in O(run_dir).
      - With it, M(hvops.kvm.kvm_node_facts) reports the guest's host name, OS and addresses
        (gather subset C(agent)), and O(hvops.kvm.kvm_instance#module:stop_mode=agent)
        powers it off through the agent.
      - Everything the agent sends is untrusted. Its answers are bounded in size and time and
        checked field by field. Defaults to false; changing it needs a restart.
    type: bool
  cloud_init:
    description:
      - A cloud-init NoCloud seed for the guest, an ISO9660 image labelled C(cidata) with
        C(user-data), C(meta-data) and (when given) C(network-config), attached read-only
        as a virtio disk after O(disks). It is made again from the stored definition each
        time QEMU starts (a migration target makes its own), in C(run_dir/seed/), readable
        by the QEMU user only; xorriso (or genisoimage) must be installed, as the
        hvops.kvm.kvm_node role does.
      - The definition keeps the rendered documents, so the same input changes nothing,
        and a changed one is a change that takes effect at the next restart. Results and
        diffs show only a digest of them. A migration passes the definition, documents
        included, through the controller; put hashes, never clear-text passwords, in it.
      - meta-data gets C(local-hostname) (O(cloud_init.hostname), else the instance name)
        and an C(instance-id) of the name and a digest of user-data and network-config,
        so that cloud-init applies changed data again, unless O(cloud_init.meta_data) sets them.
    type: dict
    suboptions:
      hostname:
        description: Host name, merged into user-data (C(hostname)) and meta-data (C(local-hostname)).
        type: str
      ssh_authorized_keys:
        description: OpenSSH public keys for the default user, merged into user-data.
        type: list
        elements: str
      users:
        description: User entries (cloud-init's C(users) list), appended to user-data's.
        type: list
        elements: raw
      password_hash:
        description:
          - A crypt(3) password hash (for example from C(openssl passwd -6)) for
            O(cloud_init.password_user), merged into user-data as C(hashed_passwd).
            A clear-text password is refused. Never logged.
        type: str
      password_user:
        description: The user O(cloud_init.password_hash) is for. Defaults to C(root).
        type: str
      user_data:
        description:
          - The user-data, as a dictionary (rendered as C(#cloud-config) YAML, with the
            shortcuts above merged in) or as text used exactly as given (then without
            shortcuts), for example a script or a multi-part document.
        type: raw
      meta_data:
        description: The meta-data, as a dictionary or as text (used as given).
        type: raw
      network_config:
        description:
          - The network configuration (version 1 or 2), as a dictionary or as text.
            None when unset, so cloud-init falls back to DHCP on the first interface.
        type: raw
'''
