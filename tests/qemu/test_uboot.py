"""Deploying as users do, through real U-Boot (Debian's u-boot-qemu
qemu_arm64 `u-boot.bin` as QEMU's -bios): its distro boot finds `boot.scr`
on a virtio disk with no typed input, the script loads the hypervisor, the
board DTB and the domains' files, builds the domain nodes with `fdt`
commands and runs `booti`. The scripts come from `dtvisor-plan mkboot`
(dom0less and hyperlaunch forms) and in ImageBuilder's shape; for each, the
pre-flight check (`dtvisor-plan check --script`) prints the plan the image
prints at boot. U-Boot's `fdt mknod` and `fdt set` insert
first, so dtvisor receives domains, modules and properties in the reverse
order of the script."""
import os
import shutil
import subprocess

import system
from disk import make_fat
from test_linux import BOOT, expect_up

UBOOT_RAM = "0x40000000"


def files(work, image, linux, image_name):
    """WORK/boot with the files of a deployment: the image (as
    `image_name`), QEMU virt's DTB as the board's, the Linux kernel and
    initramfs. Returns the directory."""
    d = os.path.join(work, "boot")
    os.makedirs(d, exist_ok=True)
    shutil.copy(image, os.path.join(d, image_name))
    shutil.copy(system.qemu_dtb(), os.path.join(d, "virt.dtb"))
    for f in ("Image", "initramfs.cpio.gz"):
        shutil.copy(os.path.join(linux, f), os.path.join(d, f))
    return d


def stage(work, image, linux, extra=""):
    """files() and an ImageBuilder-style config for two Linux domUs.
    Returns the config's path."""
    d = files(work, image, linux, "dtvisor.bin")
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
    d = os.path.dirname(cfg)
    status, text = preflight(plan_tool, os.path.join(d, "virt.dtb"), os.path.join(d, "boot.scr"), d)
    assert status == 0, text
    with qemu("uboot-dom0less", uboot_args(uboot_bin, disk), limit=BOOT + 120) as q:
        q.expect(r"\d+ bytes read", 90, "U-Boot loading from the disk")
        q.expect(r"boot plan: 2 domains \(dom0less\)", 90)
        # Reverse order: U-Boot's fdt mknod put domU1 before domU0.
        q.expect(r"domain domU1 \(/chosen/domU1\)\r?\n  id 1", 10)
        expect_up(q, {"domU0": (2, 256), "domU1": (1, 192)})
        same_plan(q, text)


def test_generated_hyperlaunch_script_boots_two_linux_domus(qemu, image, linux, uboot_bin, plan_tool, work):
    cfg = stage(work, image, linux, extra='DTVISOR_FORM="hyperlaunch"\n')
    disk = os.path.join(work, "disk.img")
    mkboot(plan_tool, cfg, disk)
    with open(os.path.join(work, "boot", "boot.cmd")) as f:
        assert "fdt mknod /chosen hypervisor" in f.read()
    d = os.path.dirname(cfg)
    status, text = preflight(plan_tool, os.path.join(d, "virt.dtb"), os.path.join(d, "boot.cmd"), d)
    assert status == 0, text
    with qemu("uboot-hyperlaunch", uboot_args(uboot_bin, disk), limit=BOOT + 120) as q:
        q.expect(r"boot plan: 2 domains \(hyperlaunch\)", 120)
        expect_up(q, {"domU0": (2, 256), "domU1": (1, 192)})
        same_plan(q, text)


def imagebuilder_script(kernel_size, ramdisk_size, xen_size=1 << 20, start=0x40000000):
    """The boot.source ImageBuilder's uboot-script-gen writes for Xen with
    two dom0less Linux domUs (no dom0) on this RAM, in its shapes:
    addresses from MEMORY_START + 4 MiB (the script's own slot first),
    each file at the next 2 MiB boundary after the previous one, the
    kernel and ramdisk loaded once per domain, Xen last with a slot sized
    for a `xen_size` image, then the DTB; `module0xADDR` node names,
    `vpl011 <0x1>`, memory in decimal KiB, `fdt resize 1024`."""
    mib2 = 2 << 20
    addr = start + 2 * mib2
    lines, mods = [], []

    def load(name, size):
        nonlocal addr
        at = addr
        lines.append(f"load virtio 0:1 0x{at:X} {name}")
        addr = (addr + size + mib2 - 1) & ~(mib2 - 1)
        return at

    for i in range(2):
        k = load("Image", kernel_size)
        r = load("initramfs.cpio.gz", ramdisk_size)
        mods.append((k, r))
    xen = load("xen", xen_size)
    dtb = load("virt.dtb", 1 << 20)
    lines += [f"fdt addr 0x{dtb:X}", "fdt resize 1024",
              "fdt set /chosen \\#address-cells <0x2>", "fdt set /chosen \\#size-cells <0x2>",
              'fdt set /chosen xen,xen-bootargs "console=dtuart dtuart=serial0 dom0_mem=1G dom0_max_vcpus=1 '
              'bootscrub=0 vwfi=native sched=null"']
    for i, (k, r) in enumerate(mods):
        d = f"/chosen/domU{i}"
        lines += [f"fdt mknod /chosen domU{i}", f'fdt set {d} compatible "xen,domain"',
                  f"fdt set {d} \\#address-cells <0x2>", f"fdt set {d} \\#size-cells <0x2>",
                  f"fdt set {d} memory <0 {256 * 1024}>", f"fdt set {d} cpus <1>", f"fdt set {d} vpl011 <0x1>",
                  f"fdt mknod {d} module0x{k:X}",
                  f'fdt set {d}/module0x{k:X} compatible "multiboot,kernel" "multiboot,module"',
                  f"fdt set {d}/module0x{k:X} reg <0x0 0x{k:X} 0x0 0x{kernel_size:x}>",
                  f'fdt set {d}/module0x{k:X} bootargs "console=ttyAMA0 domain=domU{i}"',
                  f"fdt mknod {d} module0x{r:X}",
                  f'fdt set {d}/module0x{r:X} compatible "multiboot,ramdisk" "multiboot,module"',
                  f"fdt set {d}/module0x{r:X} reg <0x0 0x{r:X} 0x0 0x{ramdisk_size:x}>"]
    lines += ["setenv fdt_high 0xffffffffffffffff", f"booti 0x{xen:X} - 0x{dtb:X}"]
    return "\n".join(lines) + "\n"


def preflight(plan_tool, dtb, script, files):
    """`dtvisor-plan check DTB --script SCRIPT --files DIR`: exit status, text."""
    p = subprocess.run([plan_tool, "check", dtb, "--script", script, "--files", files],
                       capture_output=True, text=True)
    return p.returncode, p.stdout


def same_plan(q, text):
    """The plan the image printed at boot is the pre-flight check's."""
    plan = text.split("error:")[0].split("warning:")[0]
    console = q.text().replace("\r\n", "\n")
    if plan not in console:
        q.fail(f"the image's plan differs from the pre-flight check's:\n{plan}")


def test_imagebuilder_script_for_xen_boots_with_dtvisor_in_xens_place(qemu, image, linux, uboot_bin, plan_tool,
                                                                        work):
    """The bar: a script in ImageBuilder's format, written for Xen (its
    `xen` slot sized for a 1 MiB Xen), boots both Linux domUs unmodified
    with dtvisor's image as the `xen` file; the pre-flight check, given
    that script and QEMU's DTB, prints the plan the image prints."""
    d = files(work, image, linux, "xen")
    src = os.path.join(d, "boot.source")
    with open(src, "w") as f:
        f.write(imagebuilder_script(os.path.getsize(os.path.join(d, "Image")),
                                    os.path.getsize(os.path.join(d, "initramfs.cpio.gz"))))
    scr = os.path.join(d, "boot.scr")
    subprocess.run(["mkimage", "-A", "arm64", "-T", "script", "-C", "none", "-a", "0x40200000", "-e", "0x40200000",
                    "-d", src, scr], check=True, capture_output=True)
    disk = os.path.join(work, "disk.img")
    make_fat(disk, [os.path.join(d, n) for n in ("xen", "virt.dtb", "Image", "initramfs.cpio.gz", "boot.scr")])
    status, text = preflight(plan_tool, os.path.join(d, "virt.dtb"), src, d)
    assert status == 0 and text.startswith("boot plan: 2 domains (dom0less)"), text
    with qemu("uboot-imagebuilder", uboot_args(uboot_bin, disk), limit=BOOT + 120) as q:
        q.expect(r"boot plan: 2 domains \(dom0less\)", 120)
        expect_up(q, {"domU0": (1, 256), "domU1": (1, 256)})
        same_plan(q, text)
