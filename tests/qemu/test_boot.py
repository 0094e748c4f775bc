"""QEMU boot tests of the dtvisor image (pytest; run by scripts/test)."""
import os
import re
import shutil
import struct

import disk
import system
from harness import run

BANNER = r"dtvisor \d+\.\d+\.\d+"


def machine_line(q):
    return q.expect(r"machine: ([^\r\n]*)\r?\n", 30, "machine summary line").group(1).decode()


def test_kernel_boot_gicv3_4cpus(qemu, image):
    with qemu("kernel-gicv3", ["-kernel", image]) as q:
        q.expect(BANNER, 30, "banner")
        q.expect(r"loaded at 0x40200000")
        line = machine_line(q)
        for want in ("4 CPUs", "2 GiB RAM", "GICv3", "pl011"):
            if want not in line:
                q.fail(f"machine line lacks {want!r}: {line}")
        # The reserved list names each range for what it is.
        t = q.expect(r"discovery took \d+ us").string[:q.pos].decode("utf-8", "replace")
        for kind in ("Image", "Dtb", "Heap"):
            if not re.search(rf"reserved \[0x[0-9a-f]+, 0x[0-9a-f]+\) {kind}\r?\n", t):
                q.fail(f"no reserved range named {kind}")


def test_kernel_boot_smp1(qemu, image):
    with qemu("kernel-smp1", ["-kernel", image], smp=1) as q:
        q.expect(BANNER, 30, "banner")
        line = machine_line(q)
        if "1 CPU," not in line or "GICv3" not in line:
            q.fail(f"expected 1 CPU and GICv3: {line}")


def test_kernel_boot_gicv2(qemu, image):
    with qemu("kernel-gicv2", ["-kernel", image], gic=2, mem="1G") as q:
        q.expect(BANNER, 30, "banner")
        line = machine_line(q)
        for want in ("4 CPUs", "1 GiB RAM", "GICv2"):
            if want not in line:
                q.fail(f"machine line lacks {want!r}: {line}")


def test_refuses_el1(qemu, image):
    with qemu("el1-refusal", ["-kernel", image], virt=False) as q:
        q.expect(r"dtvisor must be entered at EL2 \(QEMU: -machine virtualization=on\)", 30)
        q.not_seen(BANNER)


def make_boot_disk(path, files, script):
    """A virtio disk with one FAT partition holding `files` and boot.scr
    (boot.cmd and boot.scr are written next to `path`)."""
    tmp = os.path.dirname(path)
    cmd = os.path.join(tmp, "boot.cmd")
    with open(cmd, "w") as f:
        f.write(script)
    run(["mkimage", "-q", "-A", "arm64", "-T", "script", "-C", "none", "-d", cmd, os.path.join(tmp, "boot.scr")])
    disk.make_fat(path, files + [os.path.join(tmp, "boot.scr")], size_mib=64)


def test_uboot_booti_other_address(qemu, image, uboot_bin, work):
    disk = os.path.join(work, "disk.img")
    script = (
        "echo dtvisor-test: loading\n"
        "fatload virtio 0:1 0x42000000 dtvisor.bin\n"
        "booti 0x42000000 - ${fdt_addr}\n"
    )
    shutil.copy(image, os.path.join(work, "dtvisor.bin"))
    make_boot_disk(disk, [os.path.join(work, "dtvisor.bin")], script)
    args = ["-bios", uboot_bin, "-drive", f"if=none,file={disk},format=raw,id=d0",
            "-device", "virtio-blk-device,drive=d0"]
    with qemu("uboot-booti", args) as q:
        q.expect(r"dtvisor-test: loading", 90, "U-Boot running boot.scr")
        q.expect(BANNER, 60, "banner after booti")
        q.expect(r"loaded at 0x42000000", 10)
        line = machine_line(q)
        if "4 CPUs" not in line:
            q.fail(f"expected 4 CPUs: {line}")


def selftest_dtb(work, word):
    """QEMU's DTB with `dtvisor.selftest=WORD` on the hypervisor's command
    line (xen,xen-bootargs); returns its path."""
    frag = os.path.join(work, "selftest.dtsi")
    with open(frag, "w") as f:
        f.write(f'/ {{ chosen {{ xen,xen-bootargs = "dtvisor.selftest={word}"; }}; }};\n')
    dtb = os.path.join(work, "selftest.dtb")
    system.system_dtb(frag, dtb)
    return dtb


def test_unexpected_el2_exception_is_reported(qemu, image, work):
    """An EL2 fault prints its class in words, ESR, ELR, FAR and SPSR, and
    that CPU halts instead of looping on the fault."""
    with qemu("el2-fault", ["-kernel", image, "-dtb", selftest_dtb(work, "el2-fault")]) as q:
        q.expect(r"unexpected exception: synchronous \(EL2\) on CPU 0", 30)
        q.expect(r"class 0x25: data abort at the same EL", 5)
        q.expect(r"ESR_EL2 0x[0-9a-f]{16}  ELR_EL2 0x[0-9a-f]{16}", 5)
        q.expect(r"FAR_EL2 0x0000dead00000000  SPSR_EL2 0x[0-9a-f]{16}", 5)
        q.expect(r"this CPU halts", 5)
        if q.text().count("unexpected exception") != 1:
            q.fail("the fault was reported more than once (exception loop?)")


def test_el2_code_is_not_writable(qemu, image, work):
    """W^X at EL2: a write to the hypervisor's own code (a self-test
    word) takes a permission fault at EL2, reported, instead of changing
    the code."""
    with qemu("write-text", ["-kernel", image, "-dtb", selftest_dtb(work, "write-text")]) as q:
        m = q.expect(r"writing to the hypervisor's code at 0x([0-9a-f]+)\r?\n", 30)
        code = int(m.group(1), 16)
        q.expect(r"unexpected exception: synchronous \(EL2\) on CPU 0", 10)
        q.expect(r"class 0x25: data abort at the same EL", 5)
        esr = int(q.expect(r"ESR_EL2 0x([0-9a-f]{16})", 5).group(1), 16)
        far = int(q.expect(r"FAR_EL2 0x([0-9a-f]{16})", 5).group(1), 16)
        if far != code:
            q.fail(f"FAR {far:#x} is not the code address {code:#x}")
        # DFSC 0b0011xx: a permission fault; WnR (bit 6): a write.
        if (esr & 0x3c) != 0x0c or not esr & (1 << 6):
            q.fail(f"ESR {esr:#x} is not a permission fault on a write")
        q.not_seen(r"the write did NOT fault")


def test_image_fits_the_2mib_slot_of_boot_scripts(image):
    """Boot scripts (ImageBuilder's among them) give the hypervisor a 2 MiB
    slot: the arm64 Image header's image_size, which covers BSS and the
    stacks, fits it, and the image may be placed anywhere (flags bit 3)."""
    with open(image, "rb") as f:
        head = f.read(64)
    text_offset, image_size, flags = struct.unpack_from("<QQQ", head, 8)
    assert head[56:60] == b"ARM\x64", "not an arm64 Image"
    assert image_size <= 2 << 20, f"image_size {image_size:#x} is above 2 MiB"
    assert os.path.getsize(image) <= image_size, "the file is larger than its image_size"
    assert flags & (1 << 3), f"flags {flags:#x}: not place-anywhere"
    assert text_offset == 0
