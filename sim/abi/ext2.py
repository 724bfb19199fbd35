"""The ext2/3/4 on-disk structures GRUB 2.06's fs/ext2.c reads (little-endian):
superblock at byte 1024, group descriptors after it, inodes, directory entries."""

import construct as c

EXT2_MAGIC = 0xEF53
SUPERBLOCK_OFFSET = 1024
ROOT_INO = 2
S_IFMT, S_IFDIR, S_IFREG, S_IFLNK = 0o170000, 0o040000, 0o100000, 0o120000
EXT4_EXTENTS_FL = 0x80000
INCOMPAT_FILETYPE, INCOMPAT_RECOVER, INCOMPAT_META_BG = 0x0002, 0x0004, 0x0010
INCOMPAT_EXTENTS, INCOMPAT_64BIT, INCOMPAT_MMP, INCOMPAT_FLEX_BG = 0x0040, 0x0080, 0x0100, 0x0200
INCOMPAT_ENCRYPT = 0x10000
EXT4_EXT_MAGIC = 0xF30A

superblock = c.Struct(
    "inodes_count" / c.Int32ul, "blocks_count" / c.Int32ul, "r_blocks_count" / c.Int32ul,
    "free_blocks" / c.Int32ul, "free_inodes" / c.Int32ul, "first_data_block" / c.Int32ul,
    "log_block_size" / c.Int32ul, "log_cluster_size" / c.Int32ul, "blocks_per_group" / c.Int32ul,
    "clusters_per_group" / c.Int32ul, "inodes_per_group" / c.Int32ul, "mtime" / c.Int32ul,
    "wtime" / c.Int32ul, "mnt_count" / c.Int16ul, "max_mnt_count" / c.Int16ul, "magic" / c.Int16ul,
    "state" / c.Int16ul, "errors" / c.Int16ul, "minor_rev" / c.Int16ul, "lastcheck" / c.Int32ul,
    "checkinterval" / c.Int32ul, "creator_os" / c.Int32ul, "rev_level" / c.Int32ul,
    "def_resuid" / c.Int16ul, "def_resgid" / c.Int16ul, "first_ino" / c.Int32ul, "inode_size" / c.Int16ul,
    "block_group_nr" / c.Int16ul, "feature_compat" / c.Int32ul, "feature_incompat" / c.Int32ul,
    "feature_ro_compat" / c.Int32ul, "uuid" / c.Bytes(16), "volume_name" / c.Bytes(16),
    "last_mounted" / c.Bytes(64), "algo_bitmap" / c.Int32ul, "prealloc_blocks" / c.Int8ul,
    "prealloc_dir_blocks" / c.Int8ul, "reserved_gdt_blocks" / c.Int16ul, "journal_uuid" / c.Bytes(16),
    "journal_inum" / c.Int32ul, "journal_dev" / c.Int32ul, "last_orphan" / c.Int32ul,
    "hash_seed" / c.Bytes(16), "def_hash_version" / c.Int8ul, "jnl_backup_type" / c.Int8ul,
    "desc_size" / c.Int16ul,
)

group_desc = c.Struct(
    "block_bitmap" / c.Int32ul, "inode_bitmap" / c.Int32ul, "inode_table" / c.Int32ul,
    "free_blocks" / c.Int16ul, "free_inodes" / c.Int16ul, "used_dirs" / c.Int16ul,
    "flags" / c.Int16ul,
)

inode = c.Struct(
    "mode" / c.Int16ul, "uid" / c.Int16ul, "size" / c.Int32ul, "atime" / c.Int32ul,
    "ctime" / c.Int32ul, "mtime" / c.Int32ul, "dtime" / c.Int32ul, "gid" / c.Int16ul,
    "nlinks" / c.Int16ul, "blockcnt" / c.Int32ul, "flags" / c.Int32ul, "osd1" / c.Int32ul,
    "block" / c.Bytes(60),       # 12 direct, indirect, double, triple; or the extent tree root
    "version" / c.Int32ul, "file_acl" / c.Int32ul, "size_high" / c.Int32ul,
)
INODE_SIZE = inode.sizeof()      # 108: what fs/ext2.c reads of an inode

block_map = c.Array(15, c.Int32ul)   # inode.block without extents: 12 direct, indirect, double, triple

dirent = c.Struct("inode" / c.Int32ul, "rec_len" / c.Int16ul, "namelen" / c.Int8ul, "filetype" / c.Int8ul)

extent_header = c.Struct("magic" / c.Int16ul, "entries" / c.Int16ul, "max" / c.Int16ul,
                         "depth" / c.Int16ul, "generation" / c.Int32ul)
extent = c.Struct("block" / c.Int32ul, "len" / c.Int16ul, "start_hi" / c.Int16ul, "start" / c.Int32ul)
extent_idx = c.Struct("block" / c.Int32ul, "leaf" / c.Int32ul, "leaf_hi" / c.Int16ul, "unused" / c.Int16ul)
