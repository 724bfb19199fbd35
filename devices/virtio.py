"""The transport-independent virtio device core (hw/virtio/virtio.c)."""

from sim.abi.virtio import (
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_VERSION_1, VIRTIO_LEGACY_FEATURES,
    VIRTIO_RING_F_EVENT_IDX,
)
from devices.virtqueue import VirtQueue
from sim.trace import fields_builder

_suppressed_fields = fields_builder(lambda queue, used_idx, event_idx:
                                    {"queue": queue, "used_idx": used_idx, "event_idx": event_idx})


class VirtIODevice:
    name = "virtio"
    # VirtioDeviceClass.legacy_features: bits never offered through the
    # modern interface (virtio_pci_common_read, device_feature).
    legacy_features = VIRTIO_LEGACY_FEATURES

    def __init__(self, device_id: int, config_len: int, ram, trace):
        self.device_id = device_id
        self.config_len = config_len
        self.ram = ram
        self.trace = trace
        self.vqs: list[VirtQueue] = []
        self.host_features = 0
        self.guest_features = 0
        self.status = 0
        self.isr = 0
        self.queue_sel = 0
        self.broken = False
        self.device_big_endian = True  # virtio_default_endian(): target order, BE for ppc64
        self.transport = None  # set by the transport when plugged
        # What virtio_queue_notify does with a kick (sim.qemu.releases
        # userspace_kick): "handle_output" (2.1-2.8.0), "iothread" (2.9: to the
        # host notifier of a queue an IOThread handles, handle_aio_output),
        # "host notifier" (4.2: any assigned host notifier).
        self.userspace_kick = "handle_output"
        # What a guest error does (sim.qemu.releases ring_error): "exit"
        # (error_report + exit(1), QEMU before 2.8) or "virtio_error".
        self.ring_error = "virtio_error"
        self.fault_plan = None      # lost_kick faults at QEMU's userspace notify (sim.faults)

    def add_queue(self, num: int, handle_output) -> VirtQueue:
        vq = VirtQueue(len(self.vqs), num, self.ram)
        vq.handle_output = handle_output
        self.vqs.append(vq)
        return vq

    def start_ioeventfd(self, actor: str) -> bool:
        """VirtioDeviceClass.start_ioeventfd: none by default (the transport
        assigns a host notifier per queue)."""
        return False

    def stop_ioeventfd(self, actor: str) -> bool:
        """VirtioDeviceClass.stop_ioeventfd: none by default."""
        return False

    def transport_modern(self) -> None:
        """The transport offers VIRTIO_F_VERSION_1 (a transitional device):
        the device adjusts its feature set (its get_features)."""

    def is_big_endian(self) -> bool:
        """virtio_is_big_endian: legacy devices use device_endian; 1.0 is LE."""
        if self.guest_features >> VIRTIO_F_VERSION_1 & 1:
            return False
        return self.device_big_endian

    def get_config(self) -> bytes:
        return bytes(self.config_len)

    def set_status(self, value: int) -> None:
        self.status = value

    def set_features(self, val: int, actor: str = "qemu-vcpu") -> None:
        """virtio_set_features: what the guest accepted of what we offer.
        EVENT_IDX "changes the size of the caches" (7.2): each live queue's
        rings are mapped again, now with the event fields."""
        self.guest_features = val & self.host_features
        event = bool(self.guest_features >> VIRTIO_RING_F_EVENT_IDX & 1)
        for vq in self.vqs:
            vq.event_idx = event
            why = vq.unmappable() if vq.ready() else None
            if why:
                self.virtio_error(why, actor)

    def reset(self, big_endian: bool | None = None) -> None:
        """virtio_reset: device_endian from the vcpu that caused the reset
        (virtio_current_cpu_endian: ppc_cpu_is_big_endian = !MSR[LE]), the
        target's default (big) when no vcpu did (virtio_default_endian).
        Since QEMU 2.1 ("virtio: add endian-ambivalent support to
        VirtIODevice"): an LE guest's STATUS <- 0 makes a legacy device LE."""
        self.device_big_endian = True if big_endian is None else big_endian
        self.status = 0
        self.guest_features = 0
        self.isr = 0
        self.queue_sel = 0
        self.broken = False
        for vq in self.vqs:
            vq.reset()

    def queue_notify(self, n: int, actor: str) -> None:
        """virtio_queue_notify: 2015 calls the queue's handle_output; from
        2.8 a queue an IOThread handles gets its host notifier set instead,
        from 4.2 any queue with a host notifier does."""
        if n >= len(self.vqs) or not self.vqs[n].ready():
            return
        if self.fault_plan is not None and self.fault_plan.drop_kick("qemu", actor, "virtio_queue_notify", f"vq {n}"):
            return
        vq = self.vqs[n]
        mode = self.userspace_kick
        if vq.host_notifier is not None and (mode == "host notifier" or mode == "iothread" and vq.aio_owned):
            self.trace.emit(actor, "eventfd_set", eventfd=vq.host_notifier.label,
                            why="virtio_queue_notify: forwarded to the host notifier"
                            + (" (handle_aio_output)" if mode == "iothread" else " (host_notifier_enabled)"))
            vq.host_notifier.signal()
            return
        vq.handle_output(vq, actor)

    def guest_error(self, reason: str, actor: str) -> None:
        """A bad ring or request: before 2.8 error_report(); exit(1), the
        whole QEMU process ends (the device is marked broken only so this
        step pops nothing more before the run stops); from 2.8 virtio_error."""
        if self.ring_error == "exit":
            self.broken = True
            self.transport.qemu.qemu_exit(1, reason, actor)
        else:
            self.virtio_error(reason, actor)

    def vring_error(self, reason: str, actor: str) -> None:
        """The 2.2-2.5 dataplane's vring_pop failed: error_report() and
        vring->broken, the dataplane serves no more (vring_pop refuses,
        vring_push drops) until vring_setup at its next start. The device
        status is untouched (no NEEDS_RESET)."""
        self.broken = True
        self.trace.emit(actor, "vring_error", device=self.name, reason=reason)

    def virtio_error(self, reason: str, actor: str) -> None:
        """virtio_error: the device is broken until reset."""
        self.broken = True
        if self.guest_features >> VIRTIO_F_VERSION_1 & 1:
            self.status |= VIRTIO_CONFIG_S_NEEDS_RESET
        self.trace.emit(actor, "virtio_error", device=self.name, reason=reason)

    def notify(self, vq: VirtQueue, actor: str) -> None:
        """virtio_notify: interrupt the guest unless it asked not to be
        (virtio_should_notify). SLOF sets VRING_AVAIL_F_NO_INTERRUPT, so no
        interrupt is raised; Linux with EVENT_IDX moves used_event."""
        if not vq.should_notify(self.is_big_endian()):
            self.trace.record(actor, "virtio_notify_suppressed", _suppressed_fields, vq.index, vq.used_idx,
                              vq.event_idx)
            return
        self.isr |= 1
        self.transport.notify_guest(vq, actor)

    def driver_ok(self) -> bool:
        return bool(self.status & VIRTIO_CONFIG_S_DRIVER_OK)
