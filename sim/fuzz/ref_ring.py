"""The oracle's own virtqueue_pop: which requests a kick serves, and the one
QEMU message that fires, predicted from the ring the guest wrote.

Written from QEMU's hw/virtio/virtio.c (virtqueue_num_heads,
virtqueue_get_head, virtqueue_split_pop, virtqueue_map_desc) and
hw/block/virtio-blk.c (virtio_blk_handle_request) as reference/qemu.md
describes them, not from devices/: the first check that fails names the
message, and the device is broken from then on.

The 2.2-2.5 dataplane walks the ring with its own vring_pop
(hw/virtio/dataplane/vring.c, read in a 2.4-era tree): predict_vring_pop.
Either returns where the error came from: "pop" (the ring) or "request"
(virtio_blk_handle_request, which before 2.8 exits QEMU even in the
dataplane).
"""

from sim.abi.virtio import VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE

VIRTQUEUE_MAX_SIZE = 1024     # the iovec arrays' size in virtqueue_split_pop
BLK_OUTHDR = 16               # struct virtio_blk_outhdr


def predict_pop(read, ram_size: int, num: int, desc: int, avail: int, last_avail: int):
    """(requests served, the error message or None, "pop"/"request"/None).
    read(addr, n) is the guest's RAM as the guest left it before the kick
    (big-endian)."""

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
            _request(outs, ins)
            served += 1
    except _Err as exc:
        return served, str(exc), exc.source
    return served, None, None


def _request(outs, ins):
    """virtio_blk_handle_request's header checks."""
    if not outs or not ins:
        raise _Err("virtio-blk missing headers", "request")
    if sum(outs) < BLK_OUTHDR:
        raise _Err("virtio-blk request outhdr too short", "request")


def predict_vring_pop(read, ram_size: int, num: int, desc: int, avail: int, used: int, last_avail: int):
    """As predict_pop, for the 2.2-2.5 dataplane's vring_pop: last_avail
    moves only past a good chain; INDIRECT counts on any descriptor; an
    indirect table is read in order; a zero-length buffer does not map
    (ASSUMPTION, as the device model)."""

    def mapped(addr, n):
        return n > 0 and 0 <= addr and addr + n <= ram_size

    def hx(v):
        return f"{v:#x}" if v else "0"

    def u16(addr):
        return int.from_bytes(read(addr, 2), "big")

    def unpack(raw):
        return (int.from_bytes(raw[0:8], "big"), int.from_bytes(raw[8:12], "big"),
                int.from_bytes(raw[12:14], "big"), int.from_bytes(raw[14:16], "big"))

    def take(outs, ins, d):                                               # get_desc
        addr, length, flags, _ = d
        if not flags & VRING_DESC_F_WRITE and ins:
            raise _Err("Descriptor has out after in")
        n = len(ins) if flags & VRING_DESC_F_WRITE else len(outs)
        if n >= VIRTQUEUE_MAX_SIZE:
            raise _Err(f"Invalid SG num: {n}")
        if not mapped(addr, length):
            raise _Err(f"Failed to map descriptor addr {hx(addr)} len {length}")
        (ins if flags & VRING_DESC_F_WRITE else outs).append(length)

    served = 0
    try:
        for name, a, size in (("desc", desc, 16 * num), ("avail", avail, 6 + 2 * num), ("used", used, 6 + 8 * num)):
            if not mapped(a, size):                                       # vring_setup
                raise _Err(f"Failed to map 0x{size:x} byte for vring {name} at 0x{a:x}")
        avail_idx = u16(avail + 2)
        if (avail_idx - last_avail) & 0xFFFF > num:
            raise _Err(f"Guest moved used index from {last_avail} to {avail_idx}")
        while last_avail != avail_idx:
            head = u16(avail + 4 + 2 * (last_avail % num))
            if head >= num:
                raise _Err(f"Guest says index {head} > {num} is available")
            outs, ins, i, found = [], [], head, 0
            while True:
                if i >= num:
                    raise _Err(f"Desc index is {i} > {num}, head = {head}")
                found += 1
                if found > num:
                    raise _Err(f"Loop detected: last one at {i} vq size {num} head {head}")
                d = unpack(read(desc + 16 * i, 16))
                if d[2] & VRING_DESC_F_INDIRECT:                          # get_indirect
                    if d[1] % 16:
                        raise _Err(f"Invalid length in indirect descriptor: len {hx(d[1])} not multiple of 0x10")
                    count = d[1] // 16
                    if count > 0x10000:
                        raise _Err(f"Indirect buffer length too big: {d[1] - (1 << 32) if d[1] >> 31 else d[1]}")
                    j = k = 0
                    while True:
                        if not mapped(d[0] + 16 * k, 16):
                            raise _Err(f"Failed to map indirect descriptor addr {hx(d[0] + 16 * k)} len 16")
                        e = unpack(read(d[0] + 16 * k, 16))
                        k += 1
                        if k > count:
                            raise _Err(f"Loop detected: last one at {j} indirect size {count}")
                        if e[2] & VRING_DESC_F_INDIRECT:
                            raise _Err("Nested indirect descriptor")
                        take(outs, ins, e)
                        j = e[3]
                        if not e[2] & VRING_DESC_F_NEXT:
                            break
                else:
                    take(outs, ins, d)
                    i = d[3]                  # an indirect one with NEXT is read again (continue)
                if not d[2] & VRING_DESC_F_NEXT:
                    break
            last_avail = (last_avail + 1) & 0xFFFF
            _request(outs, ins)
            served += 1
    except _Err as exc:
        return served, str(exc), exc.source
    return served, None, None


class _Err(Exception):
    def __init__(self, message: str, source: str = "pop"):
        super().__init__(message)
        self.source = source
