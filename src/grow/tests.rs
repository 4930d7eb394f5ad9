use super::*;
use std::process::Command;

/// sgdisk (gdisk, scripts/setup.sh): makes the real tables these tests grow, and judges them.
fn sgdisk(args: &[&str]) -> String {
    let out = Command::new("sgdisk").args(args).output().expect("run sgdisk: install gdisk (scripts/setup.sh)");
    assert!(out.status.success(), "sgdisk {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A 64 MiB disk image with the appliance's four partitions (appliance/mkdisk.py's types),
/// the last ending 1 MiB before the end, then the file grown to `grown_mib`.
fn disk(dir: &Path, grown_mib: u64) -> (PathBuf, u64) {
    let p = dir.join("disk.raw");
    File::create(&p).unwrap().set_len(64 << 20).unwrap();
    let path = p.to_str().unwrap();
    sgdisk(&["-o", "-n1:2048:4095", "-t1:EF02", "-n2:4096:+8M", "-t2:EF00", "-n3:0:+16M", "-t3:8300", "-n4:0:129023", "-t4:8300", "-c4:FL_STATE", path]);
    File::options().write(true).open(&p).unwrap().set_len(grown_mib << 20).unwrap();
    (p, grown_mib << 20 >> 9)
}

/// "Last sector" of partition `n` as sgdisk reads the table.
fn last_sector(path: &Path, n: u32) -> u64 {
    let info = sgdisk(&[&format!("-i{n}"), path.to_str().unwrap()]);
    let line = info.lines().find(|l| l.starts_with("Last sector:")).unwrap_or_else(|| panic!("{info}"));
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn crc32_is_ieee() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn the_last_partition_grows_to_the_end_and_sgdisk_agrees() {
    let d = tempfile::tempdir().unwrap();
    let (p, lbas) = disk(d.path(), 128);
    assert_eq!(last_sector(&p, 4), 129023);
    let f = File::options().read(true).write(true).open(&p).unwrap();
    let g = grow_table(&f, 512, lbas, 4).unwrap().expect("the disk grew: the table must follow");
    // 33 sectors at the end: the backup header and its 32 sectors of entries.
    assert_eq!(g, Grown { first_lba: last_sector(&p, 3) + 1, old_last_lba: 129023, new_last_lba: lbas - 34 });
    drop(f);
    let verify = sgdisk(&["-v", p.to_str().unwrap()]);
    assert!(verify.contains("No problems found"), "{verify}");
    assert_eq!(last_sector(&p, 4), lbas - 34);
    assert_eq!(last_sector(&p, 3), g.first_lba - 1, "the other partitions stay");
    // A second boot finds nothing to do.
    let f = File::options().read(true).write(true).open(&p).unwrap();
    assert_eq!(grow_table(&f, 512, lbas, 4).unwrap(), None);
}

#[test]
fn a_partition_that_is_not_last_is_left_alone() {
    let d = tempfile::tempdir().unwrap();
    let (p, lbas) = disk(d.path(), 96);
    let before = std::fs::read(&p).unwrap();
    let f = File::options().read(true).write(true).open(&p).unwrap();
    assert_eq!(grow_table(&f, 512, lbas, 3).unwrap(), None);
    assert!(std::fs::read(&p).unwrap() == before, "nothing written");
}

#[test]
fn a_disk_that_did_not_grow_is_left_alone() {
    let d = tempfile::tempdir().unwrap();
    let (p, lbas) = disk(d.path(), 64);
    let f = File::options().read(true).write(true).open(&p).unwrap();
    assert_eq!(grow_table(&f, 512, lbas, 4).unwrap(), None);
}

#[test]
fn damaged_or_shrunk_tables_are_errors_that_say_why() {
    let d = tempfile::tempdir().unwrap();
    let (p, lbas) = disk(d.path(), 128);
    let f = File::options().read(true).write(true).open(&p).unwrap();
    let e = grow_table(&f, 512, lbas / 4, 4).unwrap_err().to_string();
    assert!(e.contains("past the disk's end") && e.contains("the disk shrank"), "{e}");
    let e = grow_table(&f, 512, lbas, 9).unwrap_err().to_string();
    assert!(e.contains("GPT entry 9 is unused"), "{e}");
    // One flipped bit in an entry's name: the entries' CRC no longer matches.
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 2 * 512 + 3 * 128 + 60).unwrap();
    f.write_all_at(&[b[0] ^ 1], 2 * 512 + 3 * 128 + 60).unwrap();
    let e = grow_table(&f, 512, lbas, 4).unwrap_err().to_string();
    assert!(e.starts_with("grow the GPT: GPT entries CRC32 is 0x"), "{e}");
    f.write_all_at(&[0u8; 8], 512).unwrap();
    let e = grow_table(&f, 512, lbas, 4).unwrap_err().to_string();
    assert!(e.contains("signature \"EFI PART\" missing"), "{e}");
}

#[test]
fn partitions_are_found_through_sysfs() {
    let d = tempfile::tempdir().unwrap();
    let sys = d.path().join("sys");
    let vda = sys.join("devices/pci0000:00/0000:00:04.0/virtio1/block/vda");
    std::fs::create_dir_all(vda.join("vda4")).unwrap();
    std::fs::create_dir_all(vda.join("queue")).unwrap();
    std::fs::write(vda.join("size"), "4194304\n").unwrap();
    std::fs::write(vda.join("queue/logical_block_size"), "4096\n").unwrap();
    std::fs::write(vda.join("vda4/partition"), "4\n").unwrap();
    std::fs::create_dir_all(sys.join("class/block")).unwrap();
    std::os::unix::fs::symlink(vda.join("vda4"), sys.join("class/block/vda4")).unwrap();
    std::os::unix::fs::symlink(&vda, sys.join("class/block/vda")).unwrap();
    let dev = Path::new("/dev");
    let p = partition_at(&sys, dev, Path::new("/dev/vda4")).unwrap().unwrap();
    assert_eq!(p, PartitionOf { disk: "/dev/vda".into(), number: 4, lba: 4096, disk_lbas: 4194304 / 8 });
    assert_eq!(partition_at(&sys, dev, Path::new("/dev/vda")).unwrap(), None, "a whole disk is no partition");
    std::fs::write(vda.join("queue/logical_block_size"), "12\n").unwrap();
    let e = partition_at(&sys, dev, Path::new("/dev/vda4")).unwrap_err().to_string();
    assert!(e.contains("logical_block_size") && e.contains("12 is not a block size"), "{e}");
}

#[test]
fn ext4_block_count_is_read_as_dumpe2fs_reads_it() {
    let d = tempfile::tempdir().unwrap();
    for (mib, extra) in [(64u64, None), (300, Some("-b4096"))] {
        let p = d.path().join(format!("fs{mib}.img"));
        let mut args = vec!["-q", "-F", "-L", "FL_STATE"];
        args.extend(extra);
        let size = format!("{mib}M");
        let out = Command::new("mkfs.ext4").args(&args).arg(&p).arg(&size).output().expect("run mkfs.ext4 (e2fsprogs)");
        assert!(out.status.success(), "{out:?}");
        let dump = Command::new("dumpe2fs").arg("-h").arg(&p).output().unwrap();
        let dump = String::from_utf8_lossy(&dump.stdout);
        let field = |k: &str| -> u64 { dump.lines().find(|l| l.starts_with(k)).unwrap().split(':').nth(1).unwrap().trim().parse().unwrap() };
        let mut sb = vec![0u8; 1024];
        File::open(&p).unwrap().read_exact_at(&mut sb, 1024).unwrap();
        assert_eq!(ext4_blocks(&sb).unwrap(), (field("Block count:"), field("Block size:")));
        assert_eq!(ext4_blocks(&sb).unwrap().0 * ext4_blocks(&sb).unwrap().1, mib << 20);
    }
    assert!(ext4_blocks(&[0u8; 1024]).unwrap_err().contains("0xEF53"));
}
