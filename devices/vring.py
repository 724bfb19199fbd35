"""The 2.2-2.5 dataplane's own ring walk: vring_pop, get_desc and
get_indirect (hw/virtio/dataplane/vring.c, read in a 2.4-era tree).

Unlike virtio.c's virtqueue_pop: its own messages; last_avail_idx moves only
when the whole chain is good; an INDIRECT flag is honoured on any
descriptor of the chain; an indirect table is read in order (next only
names the entry in a message); a ring part that does not map fails
vring_setup. Every error here sets vring->broken (the caller's job).
"""

from sim.abi.virtio import VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, layouts

from devices.virtqueue import VIRTQUEUE_MAX_SIZE, VirtioError, VirtQueueElement


def _hx(v: int) -> str:
    """printf %#x: no 0x prefix for zero."""
    return f"{v:#x}" if v else "0"


def _mapped(ram, addr: int, n: int) -> bool:
    """vring_map: the range lies in RAM. ASSUMPTION: a zero-length range
    does not map (memory_region_find of size 0 finds no section)."""
    return n > 0 and addr >= 0 and addr + n <= ram.size    # ram.check's range, without a raise


def _setup_error(vq) -> str | None:
    """vring_setup's maps (desc, avail + used_event, used + avail_event).
    ASSUMPTION: a failure is reported at the first pop, not at start.
    The ring addresses that mapped are kept (vq.vring_mapped): vring_setup
    maps once, and RAM does not move."""
    where = (vq.desc, vq.avail, vq.used, vq.num)
    if where == vq.vring_mapped:
        return None
    for name, addr, size in (("desc", vq.desc, 16 * vq.num), ("avail", vq.avail, 4 + 2 * vq.num + 2),
                             ("used", vq.used, 4 + 8 * vq.num + 2)):
        if not _mapped(vq.ram, addr, size):
            return f"Failed to map 0x{size:x} byte for vring {name} at 0x{addr:x}"
    vq.vring_mapped = where
    return None


def _get_desc(ram, out_sg, in_sg, d) -> None:
    addr, length, flags, _nxt = d
    if flags & VRING_DESC_F_WRITE:
        sg = in_sg
    else:
        sg = out_sg
        if in_sg:
            raise VirtioError("Descriptor has out after in")
    if len(sg) >= VIRTQUEUE_MAX_SIZE:
        raise VirtioError(f"Invalid SG num: {len(sg)}")
    if not _mapped(ram, addr, length):
        raise VirtioError(f"Failed to map descriptor addr {_hx(addr)} len {length}")
    sg.append((addr, length))


def _get_indirect(ram, L, out_sg, in_sg, ind) -> None:
    addr, length = ind[0], ind[1]
    if length % 16:
        raise VirtioError(f"Invalid length in indirect descriptor: len {_hx(length)} not multiple of 0x10")
    count = length // 16
    if count > 0x10000:
        raise VirtioError(f"Indirect buffer length too big: {length - (1 << 32) if length >> 31 else length}")
    i = found = 0
    while True:
        a = addr + 16 * found
        if not _mapped(ram, a, 16):
            raise VirtioError(f"Failed to map indirect descriptor addr {_hx(a)} len 16")
        d = L.desc_fast.unpack_from(ram.buf, a)
        found += 1
        if found > count:
            raise VirtioError(f"Loop detected: last one at {i} indirect size {count}")
        if d[2] & VRING_DESC_F_INDIRECT:
            raise VirtioError("Nested indirect descriptor")
        _get_desc(ram, out_sg, in_sg, d)
        i = d[3]
        if not d[2] & VRING_DESC_F_NEXT:
            return


def vring_pop(vq, big: bool) -> VirtQueueElement | None:
    """vring_pop: the next chain, None when the ring is empty."""
    why = _setup_error(vq)
    if why:
        raise VirtioError(why)
    num, last = vq.num, vq.last_avail_idx
    avail_idx = vq.avail_idx(big)
    if (avail_idx - last) & 0xFFFF > num:
        raise VirtioError(f"Guest moved used index from {last} to {avail_idx}")
    if avail_idx == last:
        return None
    head = vq._u16(vq.avail + 4 + 2 * (last % num), big)
    if head >= num:
        raise VirtioError(f"Guest says index {head} > {num} is available")
    L = layouts(big)
    out_sg, in_sg = [], []
    i, found = head, 0
    while True:
        if i >= num:
            raise VirtioError(f"Desc index is {i} > {num}, head = {head}")
        found += 1
        if found > num:
            raise VirtioError(f"Loop detected: last one at {i} vq size {num} head {head}")
        d = L.desc_fast.unpack_from(vq.ram.buf, vq.desc + 16 * i)
        if d[2] & VRING_DESC_F_INDIRECT:
            _get_indirect(vq.ram, L, out_sg, in_sg, d)
            # `continue` in vring_pop's do-while skips i = desc.next: with
            # NEXT set the same descriptor is read again.
        else:
            _get_desc(vq.ram, out_sg, in_sg, d)
            i = d[3]
        if not d[2] & VRING_DESC_F_NEXT:
            break
    vq.last_avail_idx = (last + 1) & 0xFFFF     # only on success
    if vq.event_idx:
        vq._w16(vq.used + 4 + 8 * num, vq.last_avail_idx, big)
    return VirtQueueElement(head, out_sg, in_sg)
