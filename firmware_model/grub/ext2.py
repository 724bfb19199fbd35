"""GRUB 2.06's ext2/3/4 reader (fs/ext2.c with kern/fshelp.c), for the reads it
makes: the order of disk reads is what decides the block requests.

- mount: 1024 bytes at partition sector 2 (the superblock), then the root
  inode (grub_ext2_read_inode: the group descriptor, then the inode).
- a path is looked up component by component (fshelp find_file): the
  directory's data is read block by block and its entries walked in order;
  a directory entry found is followed by reading that inode.
- a file's data is read one filesystem block per grub_disk_read (fshelp
  read_file), and each block number comes from grub_ext2_read_block:
  direct blocks from the inode, indirect ones by a 4-byte read of the
  indirect block(s), extents by walking the tree from the inode.

Layouts are sim/abi/ext2.py. Evaluated and not used: the `ext4` PyPI package
(1.4.1): it reads a whole image synchronously (GRUB's reads here are async
client-interface calls) and on mke2fs-made ext2 (no extents, 4 KiB blocks)
its root `opendir()` came back empty and "boot/grub/grub.cfg" was not found.
"""

from sim.abi import ext2 as X

MAX_DIR_BYTES = 256 << 10          # model limit on one directory's size (GRUB has none)


class FsError(Exception):
    """grub_error(GRUB_ERR_BAD_FS / FILE_NOT_FOUND ...): GRUB's message."""


class NotModelled(Exception):
    """Something GRUB does that the model does not (a symlink on the path)."""


# fs/ext2.c EXT2_DRIVER_SUPPORTED_INCOMPAT and EXT2_DRIVER_IGNORED_INCOMPAT (2.06): anything
# else, metadata_csum_seed and large_dir included, is refused.
SUPPORTED_INCOMPAT = (X.INCOMPAT_FILETYPE | X.INCOMPAT_EXTENTS | X.INCOMPAT_FLEX_BG | X.INCOMPAT_META_BG
                      | X.INCOMPAT_64BIT | X.INCOMPAT_ENCRYPT)
IGNORED_INCOMPAT = X.INCOMPAT_RECOVER | X.INCOMPAT_MMP


class Ext2:
    def __init__(self, disk):
        self.disk = disk

    async def mount(self) -> None:
        raw = await self.disk.read(2, 0, X.superblock.sizeof())
        sb = X.superblock.parse(raw)
        if (sb.magic != X.EXT2_MAGIC or sb.log_block_size > 16 or sb.inodes_per_group == 0):
            raise FsError("not an ext2 filesystem")
        if sb.rev_level and sb.feature_incompat & ~(SUPPORTED_INCOMPAT | IGNORED_INCOMPAT):
            raise FsError("filesystem has unsupported incompatible features")
        if sb.feature_incompat & X.INCOMPAT_META_BG:
            raise NotModelled("ext2 with meta_bg: its group descriptor placement is not modelled")
        self.sb = sb
        self.log2 = sb.log_block_size + 1          # LOG2_EXT2_BLOCK_SIZE: in sectors
        self.block_size = 1024 << sb.log_block_size
        self.inode_size = sb.inode_size if sb.rev_level else 128
        if not self.inode_size or self.block_size // self.inode_size == 0:
            raise FsError("not an ext2 filesystem")
        big = (sb.rev_level and sb.feature_incompat & X.INCOMPAT_64BIT and sb.desc_size
               and not sb.desc_size & (sb.desc_size - 1) and sb.desc_size & 0x1FE0)
        self.desc_size = sb.desc_size if big else 32
        self.root = await self.read_inode(X.ROOT_INO)

    async def read_inode(self, ino: int):
        sb = self.sb
        ino -= 1
        group, index = divmod(ino, sb.inodes_per_group)
        full = group * self.desc_size
        block, off = divmod(full, self.block_size)
        gd = X.group_desc.parse(await self.disk.read((sb.first_data_block + block + 1) << self.log2, off,
                                                     X.group_desc.sizeof()))
        per_block = self.block_size // self.inode_size
        blkno, blkoff = divmod(index, per_block)
        raw = await self.disk.read((gd.inode_table + blkno) << self.log2, self.inode_size * blkoff, X.INODE_SIZE)
        return X.inode.parse(raw)

    async def block_of(self, node, fileblock: int) -> int:
        """grub_ext2_read_block."""
        if node.flags & X.EXT4_EXTENTS_FL:
            return await self._extent_block(node.block, fileblock)
        ptrs = X.block_map.parse(node.block)
        if fileblock < 12:
            return ptrs[fileblock]
        q = self.block_size // 4
        fileblock -= 12
        for shift, span, indir in ((0, q, ptrs[12]), (1, q * q, ptrs[13]), (2, q * q * q, ptrs[14])):
            if fileblock < span:
                break
            fileblock -= span
        else:
            raise FsError("ext2fs doesn't support quadruple indirect blocks")
        per = q.bit_length() - 1
        while True:
            if indir == 0:
                return 0
            idx = (fileblock >> (per * shift)) & (q - 1)
            indir = int.from_bytes(await self.disk.read(indir << self.log2, idx * 4, 4), "little")
            if shift == 0:
                return indir
            shift -= 1

    async def _extent_block(self, root: bytes, fileblock: int) -> int:
        """grub_ext4_find_leaf, then the extent that covers fileblock."""
        node = root
        for _ in range(8):                       # tree depth is at most 5
            h = X.extent_header.parse(node)
            if h.magic != X.EXT4_EXT_MAGIC:
                raise FsError("invalid extent")
            entries = min(h.entries, (len(node) - 12) // 12)
            if h.depth == 0:
                found = None
                for i in range(entries):
                    e = X.extent.parse(node[12 + 12 * i:24 + 12 * i])
                    if fileblock < e.block:
                        break
                    found = e
                if found is None:
                    raise FsError("something wrong with extent")
                rel = fileblock - found.block
                return 0 if rel >= found.len else ((found.start_hi << 32) + found.start + rel)
            pick = None
            for i in range(entries):
                ix = X.extent_idx.parse(node[12 + 12 * i:24 + 12 * i])
                if fileblock < ix.block:
                    break
                pick = ix
            if pick is None:
                raise FsError("invalid extent")
            node = await self.disk.read(((pick.leaf_hi << 32) + pick.leaf) << self.log2, 0, self.block_size)
        raise FsError("invalid extent")

    async def read_file(self, node, pos: int, length: int, sink=None) -> bytes:
        """fshelp read_file: one grub_disk_read per filesystem block. With a
        sink, each block's bytes go to sink(offset, data) instead of the result."""
        size = node.size | (node.size_high << 32)
        length = max(0, min(length, size - pos))
        out = bytearray()
        bs = self.block_size
        first, last = pos // bs, (pos + length - 1) // bs if length else -1
        for i in range(first, last + 1):
            blk = await self.block_of(node, i)
            skip = pos % bs if i == first else 0
            end = ((pos + length - 1) % bs) + 1 if i == last else bs
            data = bytes(end - skip) if blk == 0 else await self.disk.read(blk << self.log2, skip, end - skip)
            if sink is not None:
                await sink(i * bs + skip - pos, data)
            else:
                out += data
        return bytes(out)

    async def lookup(self, path: str):
        """fshelp find_file from the root: the inode, or FsError "file `..' not found"."""
        node = self.root
        parts = [p for p in path.split("/") if p]
        for name in parts:
            if node.mode & X.S_IFMT == X.S_IFLNK:
                raise NotModelled(f"`{path}' goes through a symlink: following symlinks is not modelled")
            if node.mode & X.S_IFMT != X.S_IFDIR:
                raise FsError("not a directory")
            ino = await self._find_in_dir(node, name)
            if ino is None:
                raise FsError(f"file `{path}' not found")
            node = await self.read_inode(ino)
        if node.mode & X.S_IFMT == X.S_IFLNK:
            raise NotModelled(f"`{path}' is a symlink: following symlinks is not modelled")
        if node.mode & X.S_IFMT == X.S_IFDIR:
            raise FsError("not a regular file")
        return node

    async def _find_in_dir(self, node, name: str) -> int | None:
        """grub_ext2_iterate_dir: entry headers then names, in order."""
        size = min(node.size, MAX_DIR_BYTES)
        fpos = 0
        want = name.encode()
        while fpos < size:
            raw = await self.read_file(node, fpos, X.dirent.sizeof())
            if len(raw) < X.dirent.sizeof():
                break
            d = X.dirent.parse(raw)
            if d.rec_len < X.dirent.sizeof():
                raise FsError("corrupted directory")     # 2.06 stops on a zero rec_len
            if d.inode and d.namelen:
                got = await self.read_file(node, fpos + X.dirent.sizeof(), d.namelen)
                if got == want:
                    return d.inode
            fpos += d.rec_len
        return None
