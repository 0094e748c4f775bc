"""UEFI boot: the image `scripts/build` prints, unchanged, started by EDK2
(Debian's qemu-efi-aarch64, AAVMF in pflash) as `EFI/BOOT/BOOTAA64.EFI`
from an ESP on a virtio disk, in the layout Xen's EFI dom0less boot uses:
`BOOTAA64.cfg` beside it (`[global] default=`, `options=`, `dtb=`) and a
system DTB whose modules are all `xen,uefi-binary` files on the ESP. The
EFI stub loads them, exits boot services and boots as from booti; two
Linux domUs reach userspace; U-Boot's bootefi starts the same ESP. A
missing module file or a bad .cfg line is reported on the EFI console and
nothing starts; firmware running at EL1 is refused (these three with
U-Boot's EFI, which boots faster than EDK2 under TCG)."""
import os
import re
import shutil
import subprocess

import pytest

import system
from disk import make_fat
from test_linux import BOOT, expect_up

AAVMF_CODE = "/usr/share/AAVMF/AAVMF_CODE.fd"
AAVMF_VARS = "/usr/share/AAVMF/AAVMF_VARS.fd"

DOMAINS = """
/ { chosen { #address-cells = <2>; #size-cells = <2>;
  domU1 { compatible = "xen,domain"; #address-cells = <2>; #size-cells = <2>;
    memory = <0x0 0x40000>; cpus = <2>; vpl011;
    kernel { compatible = "multiboot,kernel", "multiboot,module";
      xen,uefi-binary = "%(kernel)s"; bootargs = "console=ttyAMA0 domain=domU1"; };
    ramdisk { compatible = "multiboot,ramdisk", "multiboot,module"; xen,uefi-binary = "initramfs.cpio.gz"; }; };
  domU2 { compatible = "xen,domain"; #address-cells = <2>; #size-cells = <2>;
    memory = <0x0 0x30000>; cpus = <1>; vpl011;
    kernel { compatible = "multiboot,kernel", "multiboot,module";
      xen,uefi-binary = "Image"; bootargs = "console=ttyAMA0 domain=domU2"; };
    ramdisk { compatible = "multiboot,ramdisk", "multiboot,module"; xen,uefi-binary = "initramfs.cpio.gz"; }; };
}; };
"""

CFG = """# dtvisor, started by the firmware as EFI/BOOT/BOOTAA64.EFI (Xen's format)
[global]
default=dtvisor

[dtvisor]
options=loglvl=info
dtb=virt-system.dtb
"""


@pytest.fixture(scope="session")
def aavmf():
    if not os.path.exists(AAVMF_CODE):
        pytest.fail(f"{AAVMF_CODE} missing: scripts/setup installs qemu-efi-aarch64", pytrace=False)
    return AAVMF_CODE


def esp(work, image, linux, kernel="Image", cfg=CFG, chosen_extra="", script=None):
    """An ESP disk image: EFI/BOOT/{BOOTAA64.EFI, BOOTAA64.cfg,
    virt-system.dtb, Image, initramfs.cpio.gz} (`chosen_extra` added to the
    DTB's /chosen), and a U-Boot `script` as /boot.scr if given."""
    d = os.path.join(work, "esp")
    os.makedirs(d, exist_ok=True)
    shutil.copy(image, os.path.join(d, "BOOTAA64.EFI"))
    with open(os.path.join(d, "BOOTAA64.cfg"), "w") as f:
        f.write(cfg)
    src = subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", system.qemu_dtb()], capture_output=True,
                         text=True, check=True).stdout
    src = "\n".join(l for l in src.splitlines() if "rng-seed" not in l and "kaslr-seed" not in l)
    dts = os.path.join(d, "virt-system.dts")
    with open(dts, "w") as f:
        f.write(src + DOMAINS % {"kernel": kernel} + "/ { chosen { %s }; };\n" % chosen_extra)
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", os.path.join(d, "virt-system.dtb"), dts], check=True)
    for f in ("Image", "initramfs.cpio.gz"):
        shutil.copy(os.path.join(linux, f), os.path.join(d, f))
    files = [os.path.join(d, n) for n in ("BOOTAA64.EFI", "BOOTAA64.cfg", "virt-system.dtb", "Image",
                                          "initramfs.cpio.gz")]
    img = os.path.join(work, "esp.img")
    make_fat(img, files, under="EFI/BOOT")
    if script:
        cmd, scr = os.path.join(d, "boot.cmd"), os.path.join(d, "boot.scr")
        with open(cmd, "w") as f:
            f.write(script)
        subprocess.run(["mkimage", "-q", "-A", "arm64", "-T", "script", "-C", "none", "-d", cmd, scr], check=True)
        subprocess.run(["mcopy", "-i", f"{img}@@1M", scr, "::/boot.scr"], check=True,
                       env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    return img


def firmware_args(work, aavmf, img):
    vars_fd = os.path.join(work, "vars.fd")
    shutil.copy(AAVMF_VARS, vars_fd)
    return ["-drive", f"if=pflash,format=raw,readonly=on,file={aavmf}",
            "-drive", f"if=pflash,format=raw,file={vars_fd}",
            "-drive", f"if=none,file={img},format=raw,id=d0", "-device", "virtio-blk-device,drive=d0"]


def esp_check(plan_tool, work):
    """`dtvisor-plan check virt-system.dtb --esp DIR`: exit status, text."""
    d = os.path.join(work, "esp")
    p = subprocess.run([plan_tool, "check", os.path.join(d, "virt-system.dtb"), "--esp", d],
                       capture_output=True, text=True)
    return p.returncode, p.stdout


def without_addresses(plan):
    """A plan's text with module ranges reduced to their sizes (the
    firmware chooses the addresses)."""
    return re.sub(r"\[0x[0-9a-f]+, 0x[0-9a-f]+\) ", "", plan)


def test_edk2_boots_two_linux_domus_from_the_esp(qemu, image, linux, aavmf, plan_tool, work):
    """And the host check (`dtvisor-plan check --esp`) prints the plan the
    image prints, but for the addresses the firmware chose."""
    img = esp(work, image, linux)
    status, text = esp_check(plan_tool, work)
    assert status == 0 and text.startswith("boot plan: 2 domains"), text
    with qemu("uefi-edk2", firmware_args(work, aavmf, img), limit=BOOT + 180) as q:
        q.expect(r"dtvisor [\d.]+: EFI stub", 240, "the EFI stub on the EFI console (EDK2 under TCG is slow to reach its boot manager)")
        q.expect(r"/chosen/domU1/kernel: \\EFI\\BOOT\\Image \(\d+ bytes\) at 0x[0-9a-f]+", 60)
        q.expect(r"leaving boot services; the image continues at 0x[0-9a-f]+", 60)
        q.expect(r"dtvisor [\d.]+ \(EL2\)", 30, "the hypervisor's banner after the stub")
        q.expect(r"boot plan: 2 domains \(dom0less\)", 30)
        q.expect(r'hypervisor command line "loglvl=info"', 10)
        expect_up(q, {"domU1": (2, 256), "domU2": (1, 192)})
        console = without_addresses(q.text().replace("\r\n", "\n"))
        # The image has the .cfg's options; the host check reads the DTB only.
        for line in without_addresses(text).splitlines():
            if line not in console:
                q.fail(f"the host check's line {line!r} is not in the image's plan")


def uboot_efi_args(uboot_bin, img):
    """U-Boot as the UEFI firmware: its distro boot starts
    EFI/BOOT/BOOTAA64.EFI from the disk with bootefi (no boot.scr)."""
    return ["-bios", uboot_bin, "-drive", f"if=none,file={img},format=raw,id=d0",
            "-device", "virtio-blk-device,drive=d0"]


def test_a_missing_module_file_is_reported_and_nothing_starts(qemu, image, linux, uboot_bin, plan_tool, work):
    img = esp(work, image, linux, kernel="Image-missing")
    status, text = esp_check(plan_tool, work)
    assert status == 1 and "error: /chosen/domU1/kernel: xen,uefi-binary:" in text and "Image-missing" in text, text
    with qemu("uefi-missing", uboot_efi_args(uboot_bin, img), limit=180) as q:
        q.expect(r"dtvisor [\d.]+: EFI stub", 120)
        # U-Boot names the image's directory in lower case.
        q.expect(r"(?i)/chosen/domU1/kernel: xen,uefi-binary: \\EFI\\BOOT\\Image-missing: cannot be opened", 60)
        q.expect(r"nothing started; returning to the firmware", 10)
        q.not_seen(r"leaving boot services|\(EL2\)")


def test_firmware_at_el1_is_refused(qemu, image, linux, uboot_bin, work):
    """Without virtualization=on the firmware (U-Boot's EFI) runs at EL1:
    the stub says so on the EFI console and returns to it."""
    img = esp(work, image, linux)
    with qemu("uefi-el1", uboot_efi_args(uboot_bin, img), virt=False, limit=180) as q:
        q.expect(r"dtvisor [\d.]+: EFI stub", 120)
        q.expect(r"dtvisor must be entered at EL2, and this firmware runs it at EL1", 10)
        q.not_seen(r"leaving boot services")


def test_uboot_bootefi_starts_the_same_image(qemu, image, linux, uboot_bin, work):
    """U-Boot's EFI: with no boot.scr on the disk, distro boot finds
    EFI/BOOT/BOOTAA64.EFI and starts it with bootefi; the stub reads the
    same .cfg and modules through U-Boot's EFI file system."""
    img = esp(work, image, linux)
    with qemu("uefi-uboot", uboot_efi_args(uboot_bin, img), limit=BOOT + 180) as q:
        q.expect(r"dtvisor [\d.]+: EFI stub", 120, "U-Boot's bootefi starting the image")
        q.expect(r"leaving boot services", 60)
        q.expect(r"boot plan: 2 domains \(dom0less\)", 60)
        expect_up(q, {"domU1": (2, 256), "domU2": (1, 192)})
        q.not_seen(r"unexpected exception")


def test_a_bad_cfg_line_is_reported_and_nothing_starts(qemu, image, linux, uboot_bin, work):
    """A .cfg written for a Xen dom0 (`kernel=`) and a typo: each line is
    named on the EFI console, and the stub returns to the firmware."""
    img = esp(work, image, linux)
    cfg = os.path.join(work, "esp", "BOOTAA64.cfg")
    with open(cfg, "w") as f:
        f.write("[global]\ndefault=xen\n[xen]\noptions=loglvl=info\nkernel=vmlinuz root=/dev/sda\ndtb virt-system.dtb\n")
    subprocess.run(["mcopy", "-o", "-i", f"{img}@@1M", cfg, "::/EFI/BOOT/BOOTAA64.cfg"], check=True,
                   env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    with qemu("uefi-bad-cfg", uboot_efi_args(uboot_bin, img), limit=180) as q:
        q.expect(r"(?i)BOOTAA64\.cfg line 5: kernel= describes a Xen dom0", 120)
        q.expect(r"(?i)BOOTAA64\.cfg line 6: expected key=value", 10)
        q.expect(r"nothing started; returning to the firmware", 10)
        q.not_seen(r"leaving boot services")


# U-Boot hands bootefi the DTB it is given: here the system DTB, whose
# modules make it the whole configuration (Xen's rule).
BOOTEFI_WITH_DTB = """load virtio 0:1 ${kernel_addr_r} EFI/BOOT/BOOTAA64.EFI
load virtio 0:1 0x48000000 EFI/BOOT/virt-system.dtb
bootefi ${kernel_addr_r} 0x48000000
"""
CFG_BAD_DTB = "[global]\ndefault=dtvisor\n[dtvisor]\noptions=loglvl=info\ndtb=does-not-exist.dtb\n"


@pytest.mark.parametrize("force", [False, True], ids=["firmware-dtb-only", "uefi-cfg-load"])
def test_a_firmware_dtb_with_modules_skips_the_cfg_unless_told(qemu, image, linux, uboot_bin, work, force):
    """The firmware's DTB (U-Boot's bootefi given the system DTB) holds
    the boot modules: the .cfg (whose dtb= names no file) is not read and
    both domains boot; with xen,uefi-cfg-load in /chosen it is read, and
    its missing dtb= is reported."""
    img = esp(work, image, linux, cfg=CFG_BAD_DTB, chosen_extra="xen,uefi-cfg-load;" if force else "",
              script=BOOTEFI_WITH_DTB)
    with qemu(f"uefi-cfg-load-{int(force)}", uboot_efi_args(uboot_bin, img), limit=BOOT + 180) as q:
        q.expect(r"dtvisor [\d.]+: EFI stub", 120)
        if force:
            q.expect(r"(?i)dtb=does-not-exist\.dtb: \\EFI\\BOOT\\does-not-exist\.dtb: cannot be opened", 30)
            q.expect(r"nothing started; returning to the firmware", 10)
        else:
            q.expect(r"the firmware's DTB holds the boot modules: .*BOOTAA64\.cfg not read", 30)
            q.expect(r"boot plan: 2 domains \(dom0less\)", 60)
            expect_up(q, {"domU1": (2, 256), "domU2": (1, 192)})
