"""The oracle's own virtqueue_pop: which requests a kick serves, and the one
QEMU message that fires, predicted from the ring the guest wrote.

Written from QEMU's hw/virtio/virtio.c (virtqueue_num_heads,
virtqueue_get_head, virtqueue_split_pop, virtqueue_map_desc) and
hw/block/virtio-blk.c (virtio_blk_handle_request) as reference/qemu.md
describes them, not from devices/: the first check that fails names the
message, and the device is broken from then on.
"""

from sim.abi.virtio import VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE

VIRTQUEUE_MAX_SIZE = 1024     # the iovec arrays' size in virtqueue_split_pop
BLK_OUTHDR = 16               # struct virtio_blk_outhdr


def predict_pop(read, ram_size: int, num: int, desc: int, avail: int, last_avail: int):
    """(requests served, the virtio_error message or None). read(addr, n)
    is the guest's RAM as the guest left it before the kick (big-endian)."""

    def mapped(addr, n):
        return 0 <= addr and addr + n <= ram_size

    def u16(addr):
        return int.from_bytes(read(addr, 2), "big")

    def desc_at(table, i):
        a = table + 16 * i
        if not mapped(a, 16):
            raise _Err("virtio: bogus descriptor or out of resources")
        raw = read(a, 16)
        return (int.from_bytes(raw[0:8], "big"), int.from_bytes(raw[8:12], "big"),
                int.from_bytes(raw[12:14], "big"), int.from_bytes(raw[14:16], "big"))

    served = 0
    try:
        avail_idx = u16(avail + 2)
        if (avail_idx - last_avail) & 0xFFFF > num:                     # virtqueue_num_heads
            raise _Err(f"Guest moved used index from {last_avail} to {avail_idx}")
        while last_avail != avail_idx:
            head = u16(avail + 4 + 2 * (last_avail % num))                # virtqueue_get_head
            if head >= num:
                raise _Err(f"Guest says index {head} is available")
            last_avail = (last_avail + 1) & 0xFFFF
            table, limit = desc, num
            addr, length, flags, nxt = desc_at(table, head)
            if flags & VRING_DESC_F_INDIRECT:
                if length == 0 or length % 16:
                    raise _Err("Invalid size for indirect buffer table")
                if not mapped(addr, length):
                    raise _Err("Cannot map indirect buffer")
                table, limit = addr, length // 16
                addr, length, flags, nxt = desc_at(table, 0)
            outs, ins = [], []
            while True:
                if flags & VRING_DESC_F_INDIRECT and table != desc:
                    raise _Err("Nested indirect descriptor")
                if length == 0:
                    raise _Err("virtio: zero sized buffers are not allowed")
                if len(outs) + len(ins) >= VIRTQUEUE_MAX_SIZE:
                    raise _Err("virtio: too many write descriptors in indirect table")
                if not mapped(addr, length):
                    raise _Err("virtio: bogus descriptor or out of resources")
                if flags & VRING_DESC_F_WRITE:
                    ins.append(length)
                elif ins:
                    raise _Err("Incorrect order for descriptors")
                else:
                    outs.append(length)
                if len(outs) + len(ins) > limit:
                    raise _Err("Looped descriptor")
                if not flags & VRING_DESC_F_NEXT:
                    break
                if nxt >= limit:
                    raise _Err(f"Desc next is {nxt}")
                addr, length, flags, nxt = desc_at(table, nxt)
            if not outs or not ins:                                       # virtio_blk_handle_request
                raise _Err("virtio-blk missing headers")
            if sum(outs) < BLK_OUTHDR:
                raise _Err("virtio-blk request outhdr too short")
            served += 1
    except _Err as exc:
        return served, str(exc)
    return served, None


class _Err(Exception):
    pass
