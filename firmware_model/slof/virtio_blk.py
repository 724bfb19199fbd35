"""SLOF's virtio-blk driver (lib/libvirtio/virtio-blk.c) over either
libvirtio transport (virtio.py beside it).

Init is real SLOF's sequence: 11 accesses on legacy BAR 0, 36 through the
modern common config (feature negotiation with VERSION_1 and FEATURES_OK,
queue_enable); real-slof/tables_*.md. Each request re-reads capacity and
blk_size, fills a 3-descriptor chain, publishes it, notifies the queue
through H_LOGICAL_CI_STORE and polls used->idx in RAM until it moves or
VIRTIO_TIMEOUT (5000 ms) passes. Legacy rings are big-endian (the device
follows the guest), modern ones little-endian.
"""

from sim import vtime
from sim.abi.virtio import (
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_T_BARRIER, VIRTIO_BLK_T_IN, VIRTIO_CONFIG_S_ACKNOWLEDGE,
    VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK,
    VIRTIO_F_VERSION_1, VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, layouts, vring_addrs, vring_size,
)
from sim.cpu import TIMEBASE_FREQ
from sim.trace import fields_builder

VIRTIO_TIMEOUT_MS = 5000

# Recorded raw every request (Trace.record), fields built when read.
_submit_fields = fields_builder(lambda rtype, sector, count, avail_idx, fn:
                                {"type": rtype, "sector": sector, "count": count, "avail_idx": avail_idx, "fn": fn})
# DRIVER_FEATURE_SUPPORT (virtio-blk.c)
DRIVER_FEATURE_SUPPORT = (1 << VIRTIO_BLK_F_BLK_SIZE) | (1 << VIRTIO_F_VERSION_1)


class VirtioBlk:
    """struct virtio_device + the virtio-blk request path."""

    def __init__(self, hv, trace, transport, ring: int, hdr: int, status: int, costs,
                 timeout_ms: int = VIRTIO_TIMEOUT_MS, *, release):
        self.hv = hv
        self.cpu = hv.cpu
        self.ram = hv.cpu.ram
        self.trace = trace
        self.t = transport        # LegacyTransport or ModernTransport
        self.ring = ring
        self.hdr = hdr            # the static blkhdr
        self.status_addr = status  # the stack byte `volatile uint8_t status = -1`
        self.costs = costs
        self.timeout_ms = timeout_ms
        self.qsize = 0
        self.block_size = 512
        self.big = transport.big_endian
        self.L = layouts(self.big)  # legacy rings are big-endian for a big-endian SLOF
        self.rel = release

    async def init(self) -> int:
        """virtioblk_init: returns the block size, or 0 on failure."""
        t, rel = self.t, self.rel
        status = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER
        if rel.reset_at_init:
            await t.set_status(0)                   # virtio_reset_device (b5a692d)
        await t.set_status(VIRTIO_CONFIG_S_ACKNOWLEDGE)
        await t.set_status(status)
        if t.modern:
            if not await t.negotiate(DRIVER_FEATURE_SUPPORT, self.hv.put_term_char, rel.iommu_platform):
                return await self._dev_error(status)
            status = await t.get_status()
        else:
            await t.set_guest_features(1 << VIRTIO_BLK_F_BLK_SIZE)
        if rel.queue_setup_at_open:
            self.qsize = await t.get_qsize(0)       # virtio_queue_init_vq (bcdf942)
            if not self.qsize:
                return await self._dev_error(status)
            self.ram.write(self.ring, bytes(vring_size(self.qsize)))  # memset 0
            self.desc, self.avail, self.used = vring_addrs(self.ring, self.qsize)
            await t.set_qaddr(0, self.desc, self.avail, self.used)
            if rel.vring_from_registers:            # vq->avail, vq->used looked up (bcdf942 virtio.c)
                await t.vring_avail(0)
                await t.vring_used(0)
        if rel.vring_from_registers:
            # vq_avail = virtio_get_vring_avail(dev, 0) (virtio-blk.c, 20150429)
            self.avail = await t.vring_avail(0)
        self.ram.write(self.avail, self.L.avail_hdr.build(dict(flags=VRING_AVAIL_F_NO_INTERRUPT, idx=0)))
        await t.set_status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_DRIVER_OK
                           | (VIRTIO_CONFIG_S_FEATURES_OK if t.modern else 0))
        features = await t.get_host_features()
        if features & (1 << VIRTIO_BLK_F_BLK_SIZE):
            self.block_size = await t.get_config32(20)
        return self.block_size

    async def _dev_error(self, status: int) -> int:
        """dev_error: the caller prints "virtioblk_init: failed"; the
        device is marked FAILED."""
        await self.t.set_status(status | VIRTIO_CONFIG_S_FAILED)
        return 0

    async def transfer(self, buf: int, blocknum: int, cnt: int, rtype: int = VIRTIO_BLK_T_IN) -> int:
        """virtioblk_transfer: blocks moved (cnt) or 0."""
        hv, t, ram, L = self.hv, self.t, self.ram, self.L
        order = "big" if self.big else "little"
        rel = self.rel
        await self.cpu.compute(self.costs.slof_per_request)
        first = await t.get_config32(0)
        second = await t.get_config32(4)
        if rel.modern_virtio:   # e3a2816: lo at +0, hi at +4 (for legacy too; harmless below 2^32 sectors)
            capacity = (second << 32) | first
        else:                   # virtio.c 20150429:152-154: +0 is the high word
            capacity = (first << 32) | second
        if blocknum + cnt - 1 > capacity:
            await hv.put_term_char(f"{rel.transfer_fn}: Access beyond end of device!\r\n")
            return 0
        blk_size = await t.get_config32(20)
        if blk_size % 512:
            what = "read" if rel.transfer_fn == "virtioblk_read" else "size"   # 2645539
            await hv.put_term_char(f"virtio-blk: Unaligned sector {what} {blk_size}\n")
            return 0
        if rel.vring_from_registers:
            # vq_size, vq_desc, vq_avail, vq_used (virtio-blk.c 20150429:126-129)
            self.qsize = await t.get_qsize(0)
            self.desc = await t.vring_desc(0)
            self.avail = await t.vring_avail(0)
            self.used = await t.vring_used(0)
        avail_idx = int.from_bytes(ram.read(self.avail + 2, 2), order)
        last_used_idx = ram.read(self.used + 2, 2)
        ram.write(self.hdr, L.blk_outhdr_fast.pack(rtype | VIRTIO_BLK_T_BARRIER, 1, blocknum * blk_size // 512))
        ram.write(self.status_addr, b"\xff")
        q = self.qsize
        d = (avail_idx * 3) % q
        pack = L.desc_fast.pack
        write_flag = 0 if rtype & 1 else VRING_DESC_F_WRITE
        ram.write(self.desc + 16 * d, pack(self.hdr, 16, VRING_DESC_F_NEXT, (d + 1) % q))
        ram.write(self.desc + 16 * ((d + 1) % q),
                  pack(buf, cnt * blk_size, VRING_DESC_F_NEXT | write_flag, (d + 2) % q))
        ram.write(self.desc + 16 * ((d + 2) % q), pack(self.status_addr, 1, VRING_DESC_F_WRITE, 0))
        ram.write(self.avail + 4 + 2 * (avail_idx % q), d.to_bytes(2, order))
        ram.write(self.avail + 2, ((avail_idx + 1) & 0xFFFF).to_bytes(2, order))
        self.trace.record("guest", "virtio_blk_submit", _submit_fields, rtype, blocknum * blk_size // 512, cnt,
                          avail_idx + 1, rel.transfer_fn)
        await t.queue_notify(0)
        if not await self._wait_used(last_used_idx):
            self.trace.emit("guest", "virtio_timeout", sector=blocknum, count=cnt, timeout_ms=self.timeout_ms)
        status = ram.read(self.status_addr, 1)[0]
        if status == 0:
            return cnt
        await hv.put_term_char(rel.failed_line(rtype, status))
        return 0

    async def _wait_used(self, last: bytes) -> bool:
        """while (used->idx == last_used_idx) { mb(); if (time < now) break; }

        The spin is modelled as waiting for the store to used->idx, or for
        the timebase to pass the deadline (get-msecs: tb * 1000 / tb-freq)."""
        ram = self.ram
        deadline_ms = self.cpu.mftb() * 1000 // TIMEBASE_FREQ + self.timeout_ms
        deadline = (deadline_ms + 1) / 1000   # the loop breaks once time < now
        while ram.read(self.used + 2, 2) == last:
            if vtime.now() >= deadline:
                return False
            event = ram.watch(self.used + 2, 2)
            await vtime.wait_set(event, deadline)
            ram.unwatch(event)
        return True
