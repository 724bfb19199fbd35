"""virtio-blk as QEMU 2.2-2.4 had it (hw/block/virtio-blk.c).

Requests are IN, OUT, FLUSH and GET_ID; anything else is UNSUPP, a sector
range past the end is IOERR. With a dataplane configured, a kick that
reaches handle_output only starts the dataplane and returns.
"""

from sim import vtime
from sim.abi.virtio import (
    BLK_TYPE_NAMES, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_BARRIER, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_SCSI_CMD,
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH,
    VIRTIO_BLK_F_GEOMETRY, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SCSI, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_F_TOPOLOGY, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_F_ANY_LAYOUT, VIRTIO_F_BAD_FEATURE,
    VIRTIO_F_NOTIFY_ON_EMPTY, VIRTIO_F_RING_RESET, VIRTIO_ID_BLOCK, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
    layouts,
)
from devices.blkdebug import BlkDebug
from devices.block import SECTOR
from devices.virtio import VirtIODevice
from devices.virtqueue import VirtioError
from devices.vring import vring_pop
from sim.trace import fields_builder


# The per-request events are recorded raw (Trace.record), fields built when read.
@fields_builder
def _blk_request_fields(rtype, sector, data_len, head) -> dict:
    return {"type": BLK_TYPE_NAMES.get(rtype, str(rtype)), "sector": sector,
            "count": data_len // SECTOR if rtype in (VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT) else 0,
            "bytes": data_len, "head": head}


@fields_builder
def _disk_io_fields(rtype, sector, data_len, status) -> dict:
    return {"type": BLK_TYPE_NAMES[rtype], "sector": sector, "bytes": data_len, "status": status}


@fields_builder
def _blk_complete_fields(head, status, used_idx, rtype) -> dict:
    return {"head": head, "status": status, "used_idx": used_idx, "type": BLK_TYPE_NAMES.get(rtype, str(rtype))}


def host_features(release, read_only: bool) -> int:
    """The legacy HOST_FEATURES word of a QEMU release (sim.qemu.releases).
    4.0+ matches what QEMU 7.2 offered SLOF (0x71006ed4,
    real-slof/tr-legacy-*_regs.csv); the 2015 set is the same without
    DISCARD/WRITE_ZEROES (added in 4.0) and with ANY_LAYOUT."""
    bits = [VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_GEOMETRY, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_SCSI,
            VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_TOPOLOGY, VIRTIO_BLK_F_CONFIG_WCE,
            VIRTIO_F_NOTIFY_ON_EMPTY, VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_RING_F_EVENT_IDX,
            VIRTIO_F_BAD_FEATURE]
    if release.blk_discard_wz:
        bits += [VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES]
    else:
        bits.append(VIRTIO_F_ANY_LAYOUT)
    if release.ring_reset:
        # "queue_reset" (DEFINE_VIRTIO_COMMON_FEATURES, 7.2): only the modern
        # interface shows bits above 31 (device_feature 0x101 in
        # real-slof/tr-modern-*_regs.csv).
        bits.append(VIRTIO_F_RING_RESET)
    if read_only:
        bits.append(VIRTIO_BLK_F_RO)
    return sum(1 << b for b in bits)


def request_kind(raw: int) -> int | None:
    """virtio_blk_handle_request's dispatch in 2015 QEMU: flag tests in the
    order FLUSH, SCSI_CMD, GET_ID, OUT, then IN only for exactly 0 or
    BARRIER (so 3 is SCSI_CMD, 5 FLUSH, 9 GET_ID); anything else None."""
    for flag in (VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_SCSI_CMD, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_OUT):
        if raw & flag:
            return flag
    return VIRTIO_BLK_T_IN if raw in (VIRTIO_BLK_T_IN, VIRTIO_BLK_T_BARRIER) else None


BDRV_REQUEST_MAX_SECTORS = 0x3FFFFF   # max-discard-sectors / max-write-zeroes-sectors default


class VirtIOBlock(VirtIODevice):
    name = "virtio-blk"

    def __init__(self, backend, ram, trace, costs, *, release, queue_size, serial="slofsim0"):
        # struct virtio_blk_config grew discard/write-zeroes fields in 4.0 (60 bytes).
        super().__init__(VIRTIO_ID_BLOCK, 60 if release.blk_discard_wz else 36, ram, trace)
        self.backend = backend
        self.costs = costs
        self.serial = serial.encode()
        self.host_features = host_features(release, not backend.writable)
        # 2.8+: virtio-blk's start_ioeventfd hook starts the dataplane at DRIVER_OK
        self.start_hook = release.dataplane_start == "start_ioeventfd"
        self.ring_error = release.ring_error
        self.dataplane_pop = release.dataplane_pop
        self.vq = self.add_queue(queue_size, self.handle_output)
        self.dataplane = None
        self.main_ctx = None
        self.requests_completed = 0
        self.blkdebug = BlkDebug((), trace)   # the block layer; the machine sets the scenario's faults
        self.bytes_read = 0
        self._config = None

    def get_config(self) -> bytes:
        big = self.is_big_endian()
        if self._config is None or self._config[0] != big:
            L = layouts(big)
            raw = L.blk_config.build(dict(
                capacity=self.backend.sectors, size_max=0, seg_max=self.vq.num_default - 2,
                cylinders=min(self.backend.sectors // (16 * 63), 65535), heads=16, sectors=63,
                blk_size=SECTOR, physical_block_exp=0, alignment_offset=0, min_io_size=0,
                opt_io_size=0, wce=1, unused0=0, num_queues=0))
            if self.host_features >> VIRTIO_BLK_F_DISCARD & 1:
                # virtio_blk_update_config (4.0+): max_discard_sectors (the
                # "max-discard-sectors" default BDRV_REQUEST_MAX_SECTORS),
                # max_discard_seg 1, discard_sector_alignment = blk_size >> 9,
                # then max_write_zeroes_sectors, _seg 1, may_unmap 1.
                # Measured: 0x3fffff, 1, 1, 0x3fffff (grub-linux_regs.csv).
                u32 = L.u32.build
                raw = raw[:36] + u32(BDRV_REQUEST_MAX_SECTORS) + u32(1) + u32(SECTOR >> 9) \
                    + u32(BDRV_REQUEST_MAX_SECTORS) + u32(1) + b"\x01"
            self._config = (big, raw.ljust(self.config_len, b"\0"))
        return self._config[1]

    def transport_modern(self) -> None:
        """virtio_blk_get_features with VERSION_1 offered: no SCSI passthrough
        (virtio 1.0 has none), ANY_LAYOUT kept (it is a legacy feature, so
        the modern interface masks it anyway). Measured: device_feature low
        word 0x30006e54 against the legacy 0x71006ed4."""
        self.host_features = (self.host_features | 1 << VIRTIO_F_ANY_LAYOUT) & ~(1 << VIRTIO_BLK_F_SCSI)

    def set_status(self, value: int) -> None:
        """virtio_blk_set_status only ever stops the dataplane."""
        super().set_status(value)
        if self.dataplane is not None and not value & (2 | 4):
            self.dataplane.stop()

    def reset(self, big_endian: bool | None = None) -> None:
        """virtio_blk_reset: stop the dataplane, then drain (bdrv_drain_all
        in 2.4, blk_drain in 7.2): a request still in flight keeps the
        vcpu thread waiting, with the BQL."""
        if self.dataplane is not None:
            self.dataplane.stop()
        self.transport.qemu.bdrv_drain("qemu-vcpu", self.blkdebug, "virtio_blk_reset")
        super().reset(big_endian)

    def stop_ioeventfd(self, actor: str) -> bool:
        """vdc->stop_ioeventfd (2.8+, ff4c07df67f0): the dataplane stops
        here (virtio_blk_data_plane_stop); True if the hook ran."""
        if not (self.start_hook and self.dataplane is not None and self.dataplane.started):
            return False
        self.dataplane.stop(actor)
        return True

    def start_ioeventfd(self, actor: str) -> bool:
        """virtio_bus_start_ioeventfd -> vdc->start_ioeventfd (2.8+): the
        dataplane starts here, at DRIVER_OK; True if the hook ran."""
        if not (self.start_hook and self.dataplane is not None):
            return False
        self.dataplane.start(actor, "DRIVER_OK (start_ioeventfd)")
        return True

    def handle_output(self, vq, actor: str, via: str = "userspace") -> None:
        """virtio_blk_handle_output: runs in QEMU's vcpu thread (userspace
        notify) or the main loop (its host notifier's handler); via is how
        the call got here."""
        if self.dataplane is not None:
            # "Some guests kick before setting VIRTIO_CONFIG_S_DRIVER_OK so
            # start dataplane here instead of waiting for .set_status()."
            dp = self.dataplane
            was = "already started: kick dropped" if dp.started else \
                "starting: returns" if dp.starting else "started dataplane"
            dp.start(actor, via)
            self.trace.emit(actor, "virtio_blk_handle_output", queue=vq.index, dataplane=was, processed=False,
                            via=via)
            return
        self.trace.emit(actor, "virtio_blk_handle_output", queue=vq.index, dataplane=None, processed=True, via=via)
        self.process_queue(vq, actor, self.main_ctx)

    def process_queue(self, vq, actor: str, ctx, vring: bool = False) -> int:
        """Pop every available request and submit it; returns how many.
        vring: the 2.2-2.5 dataplane's own vring_pop (devices/vring.py)."""
        if self.broken:
            return 0
        big = self.is_big_endian()
        n = 0
        while True:
            try:
                elem = vring_pop(vq, big) if vring else vq.pop(big)
            except VirtioError as exc:
                (self.vring_error if vring else self.guest_error)(str(exc), actor)
                return n
            if elem is None:
                return n
            n += 1
            self.submit(vq, elem, actor, ctx, big)
            if self.broken:   # virtio_blk_handle_vq: a request that fails virtio_error ends the loop (break)
                return n

    def submit(self, vq, elem, actor, ctx, big) -> None:
        """virtio_blk_handle_request."""
        out = elem.out_sg
        if not out or not elem.in_sg:
            self.guest_error("virtio-blk missing headers", actor)
            return
        # The header may span descriptors: QEMU copies it out with iov_to_buf.
        hdr = b"".join(self.ram.read(a, min(n, 16)) for a, n in out[:16])[:16]
        if len(hdr) < 16:
            self.guest_error("virtio-blk request outhdr too short", actor)
            return
        raw, _ioprio, sector = layouts(big).blk_outhdr_fast.unpack(hdr)
        rtype = request_kind(raw)
        if rtype is None:
            rtype = raw & ~VIRTIO_BLK_T_BARRIER   # no kind: UNSUPP below
        in_len = elem.in_size()
        data_len = in_len - 1 if rtype == VIRTIO_BLK_T_IN else sum(n for _, n in out) - 16
        self.trace.record(actor, "blk_request", _blk_request_fields, rtype, sector, data_len, elem.index)
        ctx.spawn(self._do_request, vq, elem, rtype, sector, data_len, in_len, ctx, big)

    def _range_ok(self, sector: int, size: int) -> bool:
        """virtio_blk_sect_range_ok."""
        if size % SECTOR:
            return False
        return sector <= self.backend.sectors and size // SECTOR <= self.backend.sectors - sector

    async def _do_request(self, vq, elem, rtype, sector, data_len, in_len, ctx, big):
        """The block layer's AIO (devices.blkdebug counts it in flight and
        applies its faults), then completion in the owning context."""
        costs = self.costs
        status = VIRTIO_BLK_S_OK
        if rtype in (VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT):
            if not self._range_ok(sector, data_len):
                status = VIRTIO_BLK_S_IOERR
                self.trace.emit("disk", "blk_range_error", sector=sector, bytes=data_len,
                                capacity=self.backend.sectors)
            else:
                blk = self.blkdebug
                blk.begin()
                try:
                    err, got = await blk.aio(rtype == VIRTIO_BLK_T_IN, sector, data_len)
                finally:
                    blk.end()
                vtime.charge(costs.disk_request + costs.disk_per_sector * (got // SECTOR))
                if err:
                    status = VIRTIO_BLK_S_IOERR  # virtio_blk_handle_rw_error, rerror=report
                elif rtype == VIRTIO_BLK_T_IN:
                    self._read(elem, sector, data_len, got)
                elif not self.backend.writable:
                    status = VIRTIO_BLK_S_IOERR  # read-only drive: the write fails (EACCES)
                else:
                    self.backend.write(sector, self._gather(elem.out_sg, 16, data_len))
                self.trace.record("disk", "disk_io", _disk_io_fields, rtype, sector, data_len, status)
        elif rtype == VIRTIO_BLK_T_FLUSH:
            vtime.charge(costs.disk_request)
            self.backend.flush()
        elif rtype == VIRTIO_BLK_T_GET_ID:
            ident = self.serial[:VIRTIO_BLK_ID_BYTES].ljust(min(in_len - 1, VIRTIO_BLK_ID_BYTES), b"\0")
            self._scatter(elem.in_sg, ident[:in_len - 1])
        else:
            status = VIRTIO_BLK_S_UNSUPP
        ctx.schedule(lambda: self.complete(vq, elem, status, in_len, rtype, ctx.actor, big))

    def _read(self, elem, sector, data_len, got=None) -> None:
        """got: what the file returned (a short read); the rest is zeros."""
        ram = self.ram
        segs = elem.in_sg
        got = data_len if got is None else got
        if len(segs) == 2 and segs[0][1] == data_len:  # data, then the status byte
            addr = segs[0][0]
            view = ram.view(addr, data_len)
            self.backend.read_into(sector, view[:got])
            view[got:] = bytes(data_len - got)
            ram.notify_written(addr, data_len)
        else:
            buf = bytearray(data_len)
            self.backend.read_into(sector, memoryview(buf)[:got])
            self._scatter(segs, buf)
        self.bytes_read += data_len

    def _scatter(self, segs, data) -> None:
        pos = 0
        for addr, n in segs:
            if pos >= len(data):
                break
            chunk = data[pos:pos + n]
            self.ram.write(addr, chunk)
            pos += len(chunk)

    def _gather(self, segs, skip: int, length: int) -> bytes:
        out = bytearray()
        for addr, n in segs:
            out += self.ram.read(addr, n)
        return bytes(out[skip:skip + length])

    def complete(self, vq, elem, status, in_len, rtype, actor, big) -> None:
        """virtio_blk_req_complete: status byte, used ring, guest notify."""
        if self.broken:
            return
        addr, n = elem.in_sg[-1]
        self.ram.write(addr + n - 1, bytes((status,)))
        used_idx = vq.push(elem, in_len, big)
        self.requests_completed += 1
        self.trace.record(actor, "blk_complete", _blk_complete_fields, elem.index, status, used_idx, rtype)
        self.notify(vq, actor)
