"""virtio-blk dataplane as in QEMU 2.2-2.4 (hw/block/dataplane/virtio-blk.c).

Start (only from handle_output, on the first call that reaches it: in
2015 the main loop's, for the host notifier virtio-pci created signalled at
DRIVER_OK, unless a userspace kick from the vcpu thread gets there first):
guest notifiers, then the host notifier moves from the main loop to this
device (set_host_notifier), then one self-kick ("Kick right away to begin
processing requests already in vring") and the IOThread's handler. So the
requests already in the ring when the dataplane starts are served by that
self-kick. After that only an eventfd signal wakes the IOThread.
"""

from sim.trace import fields_builder

# The per-request events are recorded raw (Trace.record), fields built when read.
_handle_notify_fields = fields_builder(lambda popped: {"popped": popped})


class VirtIOBlockDataPlane:
    def __init__(self, vdev, iothread_ctx, trace):
        self.vdev = vdev
        self.ctx = iothread_ctx
        self.trace = trace
        self.started = False
        self.starting = False
        self.host_notifier = None

    def start(self, actor: str, by: str) -> None:
        """virtio_blk_data_plane_start, called from handle_output in thread
        actor for the kick `by` (how that call reached handle_output)."""
        if self.started or self.starting:
            return
        self.starting = True
        proxy = self.vdev.transport
        vq = self.vdev.vq
        proxy.set_guest_notifiers(vq.index, True)
        proxy.set_host_notifier(vq.index, True, actor)
        self.host_notifier = vq.host_notifier
        self.starting = False
        self.started = True
        self.trace.emit(actor, "dataplane_start", device=self.vdev.name, iothread=self.ctx.actor,
                        host_notifier=self.host_notifier.label, by=by)
        self.host_notifier.signal()  # event_notifier_set: the start-time self-kick
        self.trace.emit(actor, "eventfd_set", eventfd=self.host_notifier.label, why="dataplane start kick")
        self.ctx.set_event_notifier(self.host_notifier, self.handle_notify)
        vq.aio_owned = True

    def stop(self, actor: str = "qemu-vcpu") -> None:
        if not self.started:
            return
        proxy = self.vdev.transport
        vq = self.vdev.vq
        self.ctx.set_event_notifier(self.host_notifier, None)
        vq.aio_owned = False
        proxy.set_host_notifier(vq.index, False, actor)
        proxy.set_guest_notifiers(vq.index, False)
        self.started = False
        self.host_notifier = None
        self.trace.emit(actor, "dataplane_stop", device=self.vdev.name)
        # "Drain and switch bs back to the QEMU main loop": blk_set_aio_context
        # drains before it moves the disk off the IOThread (2.4:
        # bdrv_set_aio_context -> bdrv_drain_all; 7.2: bdrv_try_change_aio_context,
        # only when the context changes, which it does with an iothread).
        # ASSUMPTION: releases after 7.2 do the same; a later blk_drain()
        # before blk_set_aio_context (seen on the list, release not
        # identified) would drain without an iothread too.
        self.vdev.transport.qemu.bdrv_drain(actor, self.vdev.blkdebug, "virtio_blk_data_plane_stop")

    def handle_notify(self) -> None:
        """Runs in the IOThread: drain the ring, then re-check once after
        re-enabling notification (vring_enable_notification)."""
        self.host_notifier.test_and_clear()
        vdev, vq = self.vdev, self.vdev.vq
        big = vdev.is_big_endian()
        while True:
            # 2.2-2.5: hw/virtio/dataplane/vring.c's vring_pop (releases dataplane_pop)
            n = vdev.process_queue(vq, self.ctx.actor, self.ctx, vring=vdev.dataplane_pop == "vring")
            self.trace.record(self.ctx.actor, "dataplane_handle_notify", _handle_notify_fields, n)
            if vdev.broken or vq.empty(big):
                break
