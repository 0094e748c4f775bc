"""Deploying as users do, through real U-Boot (Debian's u-boot-qemu
qemu_arm64 `u-boot.bin` as QEMU's -bios): its distro boot finds `boot.scr`
on a virtio disk with no typed input, the script loads the hypervisor, the
board DTB and the domains' files, builds the domain nodes with `fdt`
commands and runs `booti`. The scripts come from `dtvisor-plan mkboot`
(dom0less and hyperlaunch forms). U-Boot's `fdt mknod` and `fdt set` insert
first, so dtvisor receives domains, modules and properties in the reverse
order of the script."""
import os
import shutil
import subprocess

import system
from test_linux import BOOT, expect_up

UBOOT_RAM = "0x40000000"


def stage(work, image, linux, extra=""):
    """The files of a deployment in WORK/boot: the image, QEMU virt's DTB as
    the board's, the Linux kernel and initramfs; and an ImageBuilder-style
    config for two Linux domUs. Returns the config's path."""
    d = os.path.join(work, "boot")
    os.makedirs(d, exist_ok=True)
    shutil.copy(image, os.path.join(d, "dtvisor.bin"))
    shutil.copy(system.qemu_dtb(), os.path.join(d, "virt.dtb"))
    for f in ("Image", "initramfs.cpio.gz"):
        shutil.copy(os.path.join(linux, f), os.path.join(d, f))
    cfg = os.path.join(d, "config")
    with open(cfg, "w") as f:
        f.write(f"""# two Linux domUs on QEMU virt, loaded from the virtio disk
MEMORY_START="{UBOOT_RAM}"
MEMORY_END="0xc0000000"
LOAD_CMD="load virtio 0:1"
DEVICE_TREE="virt.dtb"
XEN="dtvisor.bin"
XEN_CMD="loglvl=info"
NUM_DOMUS=2
DOMU_KERNEL[0]="Image"
DOMU_RAMDISK[0]="initramfs.cpio.gz"
DOMU_MEM[0]=256
DOMU_VCPUS[0]=2
DOMU_CMD[0]="console=ttyAMA0 domain=domU0"
DOMU_KERNEL[1]="Image"
DOMU_RAMDISK[1]="initramfs.cpio.gz"
DOMU_MEM[1]=192
DOMU_CMD[1]="console=ttyAMA0 domain=domU1"
{extra}""")
    return cfg


def mkboot(plan_tool, cfg, disk):
    p = subprocess.run([plan_tool, "mkboot", cfg, "--disk", disk], capture_output=True, text=True)
    assert p.returncode == 0, f"dtvisor-plan mkboot failed:\n{p.stdout}{p.stderr}"
    return p.stdout


def uboot_args(uboot_bin, disk):
    return ["-bios", uboot_bin, "-drive", f"if=none,file={disk},format=raw,id=d0",
            "-device", "virtio-blk-device,drive=d0"]


def test_generated_dom0less_script_boots_two_linux_domus(qemu, image, linux, uboot_bin, plan_tool, work):
    cfg = stage(work, image, linux)
    disk = os.path.join(work, "disk.img")
    out = mkboot(plan_tool, cfg, disk)
    assert "0x40200000" in out, out  # the hypervisor's 2 MiB slot first
    with qemu("uboot-dom0less", uboot_args(uboot_bin, disk), limit=BOOT + 120) as q:
        q.expect(r"225336 bytes read|\d+ bytes read", 90, "U-Boot loading from the disk")
        q.expect(r"boot plan: 2 domains \(dom0less\)", 90)
        # Reverse order: U-Boot's fdt mknod put domU1 before domU0.
        q.expect(r"domain domU1 \(/chosen/domU1\)\r?\n  id 1", 10)
        expect_up(q, {"domU0": (2, 256), "domU1": (1, 192)})


def test_generated_hyperlaunch_script_boots_two_linux_domus(qemu, image, linux, uboot_bin, plan_tool, work):
    cfg = stage(work, image, linux, extra='DTVISOR_FORM="hyperlaunch"\n')
    disk = os.path.join(work, "disk.img")
    mkboot(plan_tool, cfg, disk)
    with open(os.path.join(work, "boot", "boot.cmd")) as f:
        assert "fdt mknod /chosen hypervisor" in f.read()
    with qemu("uboot-hyperlaunch", uboot_args(uboot_bin, disk), limit=BOOT + 120) as q:
        q.expect(r"boot plan: 2 domains \(hyperlaunch\)", 120)
        expect_up(q, {"domU0": (2, 256), "domU1": (1, 192)})
