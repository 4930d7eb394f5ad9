//! Growing the state partition into a resized disk (`onevm disk-resize`). Issue #15.
//!
//! The appliance disk (appliance/mkdisk.py) ends with the ext4 state partition `FL_STATE`. When
//! OpenNebula resizes the disk, the GPT still describes the old size: its backup header sits
//! where the disk used to end and the state partition stops there. At boot, before the state
//! is mounted, [`grow_partition`] moves the backup table to the new end, extends the state
//! partition's GPT entry to the last usable sector (only when it is the last partition, so no
//! other data can be in the way) and tells the kernel the partition's new size with
//! `BLKPG_RESIZE_PARTITION` (the partition may be in use: re-reading the whole table would
//! fail). After the mount, [`grow_ext4`] grows the filesystem online with `EXT4_IOC_RESIZE_FS`,
//! what `resize2fs` does on a mounted filesystem. Both are idempotent: a boot interrupted
//! between the two, or after the table was written, finishes the work at the next boot.
//!
//! The table is written backup first, primary last: until the primary header is rewritten, it
//! still points at the old, intact backup, so a power cut in between leaves a valid table.
//! Layout (UEFI 2.10 §5.3): header at LBA 1 (92 bytes, CRC32 over them with its own CRC
//! field zeroed), entries at `entries_lba` (128 bytes each, CRC32 over the array).

use crate::error::{Ctx, Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// GPT header fields this module reads or writes (offsets in the header sector).
const SIGNATURE: &[u8; 8] = b"EFI PART";
const HDR_SIZE: usize = 12;
const HDR_CRC: usize = 16;
const MY_LBA: usize = 24;
const ALTERNATE_LBA: usize = 32;
const LAST_USABLE: usize = 48;
const ENTRIES_LBA: usize = 72;
const NUM_ENTRIES: usize = 80;
const ENTRY_SIZE: usize = 84;
const ENTRIES_CRC: usize = 88;
/// Entry fields: type GUID at 0 (all zero: unused), first and last LBA (inclusive).
const ENTRY_FIRST: usize = 32;
const ENTRY_LAST: usize = 40;

/// CRC-32 (IEEE 802.3, reflected, as GPT uses), bitwise: a few KiB once per boot.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A primary GPT header checked: signature, size, CRC. Returns (header size, entries LBA,
/// number of entries, entry size).
fn check_header(h: &[u8]) -> std::result::Result<(usize, u64, usize, usize), String> {
    if h.len() < 92 || &h[..8] != SIGNATURE {
        return Err("no GPT header at LBA 1 (signature \"EFI PART\" missing)".into());
    }
    let size = u32_at(h, HDR_SIZE) as usize;
    if !(92..=h.len()).contains(&size) {
        return Err(format!("GPT header size {size} is not in 92..={}", h.len()));
    }
    let mut copy = h[..size].to_vec();
    put_u32(&mut copy, HDR_CRC, 0);
    let (want, got) = (u32_at(h, HDR_CRC), crc32(&copy));
    if want != got {
        return Err(format!("GPT header CRC32 is {want:#010x}, the header's bytes give {got:#010x}"));
    }
    let (n, esize) = (u32_at(h, NUM_ENTRIES) as usize, u32_at(h, ENTRY_SIZE) as usize);
    if esize < 128 || n == 0 || n > 4096 {
        return Err(format!("GPT header: {n} entries of {esize} bytes is not a table this module edits"));
    }
    Ok((size, u64_at(h, ENTRIES_LBA), n, esize))
}

/// What growing changed: the partition's last LBA before and after, in logical blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grown {
    pub first_lba: u64,
    pub old_last_lba: u64,
    pub new_last_lba: u64,
}

/// A grown table, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTable {
    /// The primary header sector (LBA 1).
    pub primary: Vec<u8>,
    /// The backup header sector (the disk's last LBA).
    pub backup: Vec<u8>,
    /// The entry array, written at both copies' entries LBA.
    pub entries: Vec<u8>,
    /// Where the backup entries go.
    pub backup_entries_lba: u64,
    pub grown: Grown,
}

/// The new table for a disk of `disk_lbas` logical blocks of `lba` bytes, given its primary
/// header sector and entry array. None when there is nothing to do: the table already
/// reaches the disk's end, or partition `number` (1-based, the kernel's) is not the last one.
pub fn plan(header: &[u8], entries: &[u8], lba: u64, disk_lbas: u64, number: u32) -> std::result::Result<Option<NewTable>, String> {
    let (hsize, _, n, esize) = check_header(header)?;
    if entries.len() < n * esize {
        return Err(format!("GPT entries: read {} bytes, the header says {n} x {esize}", entries.len()));
    }
    let entries = &entries[..n * esize];
    let (want, got) = (u32_at(header, ENTRIES_CRC), crc32(entries));
    if want != got {
        return Err(format!("GPT entries CRC32 is {want:#010x}, the entries give {got:#010x}"));
    }
    let alternate = u64_at(header, ALTERNATE_LBA);
    let end = disk_lbas.checked_sub(1).ok_or("the disk has no sectors")?;
    if alternate > end {
        return Err(format!("the GPT's backup header is at LBA {alternate}, past the disk's end (LBA {end}): the disk shrank"));
    }
    if alternate == end {
        return Ok(None);
    }
    let idx = (number as usize).checked_sub(1).filter(|&i| i < n).ok_or(format!("partition {number} is not in a table of {n} entries"))?;
    let entry = |i: usize| &entries[i * esize..(i + 1) * esize];
    let used = |i: usize| entry(i)[..16].iter().any(|&b| b != 0);
    if !used(idx) {
        return Err(format!("GPT entry {number} is unused"));
    }
    let last_of = |i: usize| u64_at(entry(i), ENTRY_LAST);
    if let Some(other) = (0..n).filter(|&i| i != idx && used(i)).find(|&i| last_of(i) > last_of(idx)) {
        log::debug!("partition {} ends after partition {number}: not growing", other + 1);
        return Ok(None);
    }
    let entry_lbas = ((n * esize) as u64).div_ceil(lba);
    let backup_entries = end - entry_lbas;
    let last_usable = backup_entries - 1;
    let grown = Grown { first_lba: u64_at(entry(idx), ENTRY_FIRST), old_last_lba: last_of(idx), new_last_lba: last_usable };
    let mut new_entries = entries.to_vec();
    if grown.new_last_lba > grown.old_last_lba {
        put_u64(&mut new_entries[idx * esize..], ENTRY_LAST, grown.new_last_lba);
    }
    let ecrc = crc32(&new_entries);
    let finish = |my: u64, alt: u64, entries_at: u64| {
        let mut h = header.to_vec();
        put_u64(&mut h, MY_LBA, my);
        put_u64(&mut h, ALTERNATE_LBA, alt);
        put_u64(&mut h, LAST_USABLE, last_usable);
        put_u64(&mut h, ENTRIES_LBA, entries_at);
        put_u32(&mut h, ENTRIES_CRC, ecrc);
        put_u32(&mut h, HDR_CRC, 0);
        let c = crc32(&h[..hsize]);
        put_u32(&mut h, HDR_CRC, c);
        h
    };
    let primary = finish(1, end, u64_at(header, ENTRIES_LBA));
    let backup = finish(end, 1, backup_entries);
    Ok(Some(NewTable { primary, backup, entries: new_entries, backup_entries_lba: backup_entries, grown }))
}

/// Grow partition `number` of the GPT disk open as `disk` (`disk_lbas` blocks of `lba`
/// bytes) to the disk's end, writing the backup table first and the primary last. Works on
/// a block device or a disk image file; the kernel is not told (see [`tell_kernel`]).
pub fn grow_table(disk: &File, lba: u64, disk_lbas: u64, number: u32) -> Result<Option<Grown>> {
    let what = "grow the GPT";
    let mut header = vec![0u8; lba as usize];
    disk.read_exact_at(&mut header, lba).ctx("read the GPT header (LBA 1)")?;
    let (_, entries_lba, n, esize) = check_header(&header).map_err(|e| Error::msg(what, e))?;
    let mut entries = vec![0u8; n * esize];
    disk.read_exact_at(&mut entries, entries_lba * lba).ctx("read the GPT entries")?;
    let Some(t) = plan(&header, &entries, lba, disk_lbas, number).map_err(|e| Error::msg(what, e))? else {
        return Ok(None);
    };
    disk.write_all_at(&t.entries, t.backup_entries_lba * lba).ctx("write the backup GPT entries")?;
    disk.write_all_at(&t.backup, (disk_lbas - 1) * lba).ctx("write the backup GPT header")?;
    disk.sync_data().ctx("sync the backup GPT")?;
    disk.write_all_at(&t.entries, entries_lba * lba).ctx("write the GPT entries")?;
    disk.write_all_at(&t.primary, lba).ctx("write the GPT header")?;
    disk.sync_data().ctx("sync the GPT")?;
    Ok(Some(t.grown))
}

/// A partition as sysfs describes it: its disk's device node, its number, the disk's logical
/// block size and size in those blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOf {
    pub disk: PathBuf,
    pub number: u32,
    pub lba: u64,
    pub disk_lbas: u64,
}

/// Read `<sys>/class/block/<name>`: None when `part` is a whole disk (no `partition` file).
pub fn partition_at(sys: &Path, dev: &Path, part: &Path) -> Result<Option<PartitionOf>> {
    let name = part.file_name().ok_or_else(|| Error::msg("find the disk of a partition", format!("{} has no name", part.display())))?;
    let me = sys.join("class/block").join(name);
    let read = |p: PathBuf| -> Result<u64> {
        let s = std::fs::read_to_string(&p).with_ctx(|| format!("read {}", p.display()))?;
        s.trim().parse().map_err(|_| Error::msg(format!("read {}", p.display()), format!("{:?} is not a number", s.trim())))
    };
    if !me.join("partition").exists() {
        return Ok(None);
    }
    let number = read(me.join("partition"))? as u32;
    // sysfs: class/block/vda4 -> ../../devices/…/block/vda/vda4; the parent directory is the disk.
    let real = std::fs::canonicalize(&me).with_ctx(|| format!("resolve {}", me.display()))?;
    let disk_dir = real.parent().ok_or_else(|| Error::msg("find the disk of a partition", format!("{} has no parent", real.display())))?;
    let disk_name = disk_dir.file_name().ok_or_else(|| Error::msg("find the disk of a partition", format!("{} has no name", disk_dir.display())))?;
    let lba = read(disk_dir.join("queue/logical_block_size"))?;
    if !lba.is_power_of_two() || lba < 512 {
        return Err(Error::msg(format!("read {}/queue/logical_block_size", disk_dir.display()), format!("{lba} is not a block size")));
    }
    // sysfs sizes count 512-byte sectors whatever the logical block size.
    let disk_lbas = read(disk_dir.join("size"))? * 512 / lba;
    Ok(Some(PartitionOf { disk: dev.join(disk_name), number, lba, disk_lbas }))
}

/// `struct blkpg_partition` and `struct blkpg_ioctl_arg` (include/uapi/linux/blkpg.h).
#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: i32,
    devname: [u8; 64],
    volname: [u8; 64],
}

#[repr(C)]
struct BlkpgIoctlArg {
    op: i32,
    flags: i32,
    datalen: i32,
    data: *mut BlkpgPartition,
}

const BLKPG_RESIZE_PARTITION: i32 = 3;
nix::ioctl_write_ptr_bad!(blkpg, 0x1269, BlkpgIoctlArg);
// EXT4_IOC_RESIZE_FS = _IOW('f', 16, __u64) (fs/ext4/ext4.h).
nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);

/// Tell the kernel partition `number` of `disk` now spans `grown` (BLKPG_RESIZE_PARTITION:
/// allowed while the partition is in use, unlike re-reading the table).
pub fn tell_kernel(disk: &File, lba: u64, number: u32, grown: &Grown) -> Result<()> {
    use std::os::fd::AsRawFd;
    let mut part = BlkpgPartition {
        start: (grown.first_lba * lba) as i64,
        length: ((grown.new_last_lba + 1 - grown.first_lba) * lba) as i64,
        pno: number as i32,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg { op: BLKPG_RESIZE_PARTITION, flags: 0, datalen: std::mem::size_of::<BlkpgPartition>() as i32, data: &mut part };
    // SAFETY: `arg` and the `part` it points to live until the call returns; the kernel only
    // reads `datalen` bytes of `part`, which is the struct it expects (blkpg.h).
    unsafe { blkpg(disk.as_raw_fd(), &arg) }.with_ctx(|| format!("resize partition {number} in the kernel (BLKPG)"))?;
    Ok(())
}

/// Grow partition `part` (a device node such as /dev/vda4) to the end of its disk, if the
/// disk is larger than its partition table says and `part` is the last partition. Returns
/// the partition's size before and after, in bytes.
pub fn grow_partition(sys: &Path, dev: &Path, part: &Path) -> Result<Option<(u64, u64)>> {
    let Some(p) = partition_at(sys, dev, part)? else { return Ok(None) };
    let disk = std::fs::OpenOptions::new().read(true).write(true).open(&p.disk).with_ctx(|| format!("open {}", p.disk.display()))?;
    let Some(g) = grow_table(&disk, p.lba, p.disk_lbas, p.number)? else { return Ok(None) };
    tell_kernel(&disk, p.lba, p.number, &g)?;
    let bytes = |last: u64| (last + 1 - g.first_lba) * p.lba;
    Ok(Some((bytes(g.old_last_lba), bytes(g.new_last_lba))))
}

/// ext4's block count and block size from its superblock (the 1 KiB at byte 1024):
/// s_blocks_count_lo at 0x04, s_log_block_size at 0x18, s_feature_incompat at 0x60 (64bit:
/// 0x80), s_blocks_count_hi at 0x150 (fs/ext4/ext4.h).
pub fn ext4_blocks(sb: &[u8]) -> std::result::Result<(u64, u64), String> {
    if sb.len() < 0x154 || sb[0x38..0x3a] != 0xEF53u16.to_le_bytes() {
        return Err("no ext4 superblock (magic 0xEF53 at 0x38)".into());
    }
    let log = u32_at(sb, 0x18);
    if log > 6 {
        return Err(format!("s_log_block_size {log} is not an ext4 block size"));
    }
    let hi = if u32_at(sb, 0x60) & 0x80 != 0 { u64::from(u32_at(sb, 0x150)) } else { 0 };
    Ok((hi << 32 | u64::from(u32_at(sb, 0x04)), 1024 << log))
}

/// Grow the ext4 filesystem of `dev`, mounted at `mountpoint`, to fill its partition
/// (EXT4_IOC_RESIZE_FS, online) up to its last whole-enough block group. Returns the size
/// before and after, in bytes, when it grew.
pub fn grow_ext4(dev: &Path, mountpoint: &Path) -> Result<Option<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let f = File::open(dev).with_ctx(|| format!("open {}", dev.display()))?;
    let mut sb = vec![0u8; 1024];
    f.read_exact_at(&mut sb, 1024).with_ctx(|| format!("read the superblock of {}", dev.display()))?;
    let (blocks, bsize) = ext4_blocks(&sb).map_err(|e| Error::msg(format!("read the superblock of {}", dev.display()), e))?;
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 into `size`, which outlives the call.
    unsafe { blkgetsize64(f.as_raw_fd(), &mut size) }.with_ctx(|| format!("read the size of {}", dev.display()))?;
    let want = size / bsize;
    if want <= blocks {
        return Ok(None);
    }
    let dir = File::open(mountpoint).with_ctx(|| format!("open {}", mountpoint.display()))?;
    // SAFETY: the kernel reads one u64 (the new block count) from `want`, alive for the call.
    unsafe { ext4_resize_fs(dir.as_raw_fd(), &want) }.with_ctx(|| format!("grow ext4 on {} to {want} blocks (EXT4_IOC_RESIZE_FS)", dev.display()))?;
    // The kernel leaves out a last block group too small for its own metadata, so the count
    // it reached is read back (the superblock buffer is the block device's page cache).
    f.read_exact_at(&mut sb, 1024).with_ctx(|| format!("read the superblock of {}", dev.display()))?;
    let (now, _) = ext4_blocks(&sb).map_err(|e| Error::msg(format!("read the superblock of {}", dev.display()), e))?;
    Ok((now > blocks).then_some((blocks * bsize, now * bsize)))
}

// BLKGETSIZE64 = _IOR(0x12, 114, size_t) (include/uapi/linux/fs.h).
nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);

#[cfg(test)]
mod tests;
