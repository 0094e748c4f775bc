"""A hardware domain beside two dom0less domains on QEMU virt (issue 27):
Xen's legacy dom0 form (dts/qemu-virt/hardware-domain.dtsi, as `scripts/run
--hardware-domain` boots it), dom0 direct-mapped with dom0_mem=512M and
dom0_max_vcpus=1, owning every device of QEMU's tree that the hypervisor
and the domUs do not have: a virtio-mmio disk, a virtio-pci disk (legacy
INTx through the bridge's interrupt-map), the PL031 RTC. The domUs see
none of them, and reach none of their registers."""
import os
import re
import time

import pytest

import disk
from harness import ROOT
from test_linux import BOOT, MARKER, boot_args, expect_up, focus, run

NO_FAULT = r"unhandled trap|undefined instruction injected|Kernel panic|Oops|BUG:|panic on CPU"
DOMAINS = {"dom0": (1, 512), "domU1": (1, 256), "domU2": (1, 192)}


@pytest.mark.parametrize("gic", [3, 2])
def test_legacy_dom0_owns_the_board_beside_two_domus(image, linux, work, qemu, gic):
    mmio = os.path.join(work, "mmio.img")
    disk.make_ext4(mmio, {"in.txt": b"hello from the host disk\n"})
    pci = os.path.join(work, "pci.img")
    disk.make_ext4(pci, {"pci.txt": b"read over PCI INTx\n"})
    args = boot_args(image, linux, work, os.path.join(ROOT, "dts/qemu-virt/hardware-domain.dtsi"), gic=gic)
    args += ["-drive", f"file={mmio},if=none,format=raw,id=d0", "-device", "virtio-blk-device,drive=d0",
             "-drive", f"file={pci},if=none,format=raw,id=d1", "-device", "virtio-blk-pci,drive=d1"]
    with qemu(f"hardware-domain-gicv{gic}", args, gic=gic, limit=2 * BOOT + 240) as q:
        # The plan: dom0's RAM at its own host addresses, its devices.
        m = q.expect(r"layout dom0 \(vmid 1\)\r?\n  ram guest \[(0x[0-9a-f]+), (0x[0-9a-f]+)\) <- host "
                     r"\[(0x[0-9a-f]+), (0x[0-9a-f]+)\) 512 MiB", 60)
        if m.group(1, 2) != m.group(3, 4):
            q.fail(f"dom0 is not direct-mapped: {m.group(0)!r}")
        q.expect(r"dom0: reserved memory \[0xbff00000, 0xc0000000\) mapped 1:1", 30)
        q.expect(r"dom0: /pcie@10000000 interrupt 35 \(level\) routed to the domain", 30)
        q.expect(r"dom0: /pl031@9010000 interrupt 34 \(level\) routed to the domain", 30)
        q.expect(rf"dom0: vCPUs 0\.\.1 on pCPUs 0; guest GIC v{gic}", 30)
        expect_up(q, DOMAINS)
        focus(q, "dom0")
        # The virtio-mmio disk: read what the host wrote, write a file back.
        run(q, "dom0", "mount -t ext4 /dev/vda /mnt && cat /mnt/in.txt", "hello from the host disk", timeout=60)
        run(q, "dom0", "echo written-by-dom0 > /mnt/out.txt && umount /mnt && sync && echo disk-$((40+2))",
            "disk-42", timeout=60)
        # The RTC: the host's time, from the PL031 itself.
        m = run(q, "dom0", "echo rtc=$(cat /sys/class/rtc/rtc0/since_epoch) name=$(cat /sys/class/rtc/rtc0/name)",
                r"rtc=(\d+) name=(\S+)[^\r\n]*")
        if m.group(2) != b"rtc-pl031" or abs(int(m.group(1)) - time.time()) > 120:
            q.fail(f"dom0's rtc0 is {m.group(2)!r} reading {m.group(1)!r}; host time {int(time.time())}")
        # The PCI disk, behind the bridge's INTx.
        run(q, "dom0", "mount -t ext4 /dev/vdb /mnt && cat /mnt/pci.txt && umount /mnt", "read over PCI INTx",
            timeout=60)
        run(q, "dom0", f"echo intx=$(grep -c 'GIC{'v3' if gic == 3 else '-0'}  *3[5-8] ' /proc/interrupts)", "intx=[1-9]")
        # The carveout in /reserved-memory, at its own address.
        run(q, "dom0", "devmem 0xbff00000 32 0x600dcafe; echo carveout=$(devmem 0xbff00000 32)",
            "carveout=0x600DCAFE")
        # The domUs have none of it, and reach none of its registers.
        for dom in ("domU1", "domU2"):
            focus(q, dom)
            run(q, dom, "echo disks=$(ls /sys/block | grep -c vd) rtcs=$(ls /sys/class/rtc | wc -l)",
                "disks=0 rtcs=0")
        q.send("devmem 0xa003e00 32; echo devmem-done\n")
        q.expect(r"domU2: read at IPA 0xa003e00 .*hits nothing: external abort injected", 60)
        run(q, "domU2", "echo domU2-alive-$((6*7))", "domU2-alive-42")
        # dom0 reaches neither the GIC's ITS frame (the hypervisor's) nor
        # domU1's RAM (its host address, from the boot log).
        domu1 = re.search(rb"layout domU1 \(vmid \d+\)\r?\n  ram guest \[0x[0-9a-f]+, 0x[0-9a-f]+\) <- host "
                          rb"\[(0x[0-9a-f]+)", q.buf).group(1).decode()
        focus(q, "dom0")
        for addr in ("0x8080000", domu1):
            q.send(f"devmem {addr} 32; echo devmem-done\n")
            q.expect(rf"dom0: read at IPA {addr} .*hits nothing: external abort injected", 60,
                     f"the hypervisor reports dom0's read at {addr}")
        # dom0 restarts alone; the domUs answer meanwhile.
        q.send("reboot -f\n")
        q.expect(r"dom0: SYSTEM_RESET: restarting the domain", 60)
        focus(q, "domU1")
        run(q, "domU1", "echo domU1-alive-$((6*7))", "domU1-alive-42")
        q.expect(MARKER.format(dom="dom0"), BOOT, "dom0 up again")
        focus(q, "dom0")
        run(q, "dom0", "mount -t ext4 /dev/vda /mnt && cat /mnt/out.txt && umount /mnt", "written-by-dom0",
            timeout=60)
        # And powers off alone.
        q.send("poweroff -f\n")
        q.expect(r"dom0: SYSTEM_OFF", 60)
        focus(q, "domU2")
        run(q, "domU2", "echo domU2-still-$((6*7))", "domU2-still-42")
        q.not_seen(NO_FAULT)
    if disk.read_file(mmio, "out.txt") != b"written-by-dom0\n":
        raise AssertionError(f"out.txt on the host disk image is {disk.read_file(mmio, 'out.txt')!r}")


# The hardware domain in the two other forms, on the same machine: a
# dom0less node with `capabilities` 0x2, a hyperlaunch node with `role`
# hardware (bit 4 of the seed's encoding; bindings.md 5).
FORMS = {
    "dom0less-capabilities": """
/ {{ chosen {{ #address-cells = <2>; #size-cells = <2>;
  hw {{ compatible = "xen,domain"; #address-cells = <2>; #size-cells = <2>;
    capabilities = <0x2>; memory = <0x0 0x40000>; cpus = <1>;
    module@50000000 {{ compatible = "multiboot,kernel", "multiboot,module";
      reg = <0x0 0x50000000 0x0 0x2200000>; bootargs = "console=ttyAMA0 domain=hw"; }};
    module@54000000 {{ compatible = "multiboot,ramdisk", "multiboot,module"; reg = <0x0 0x54000000 0x0 0x200000>; }}; }};
  {domu} }}; }};
""",
    "hyperlaunch-role": """
/ {{ chosen {{ #address-cells = <2>; #size-cells = <2>;
  hypervisor {{ compatible = "hypervisor,xen", "hypervisor,dtvisor"; #address-cells = <2>; #size-cells = <2>;
    hw {{ compatible = "xen,domain"; #address-cells = <2>; #size-cells = <2>; role = <0x4>;
      memory = "256M"; cpus = <1>;
      kernel {{ compatible = "module,kernel", "module,addr"; module-addr = <0x0 0x50000000 0x0 0x2200000>;
        bootargs = "console=ttyAMA0 domain=hw"; }};
      ramdisk {{ compatible = "module,ramdisk", "module,addr"; module-addr = <0x0 0x54000000 0x0 0x200000>; }}; }};
    {domu} }}; }}; }};
""",
}
DOMU = """domU1 {{ compatible = "xen,domain"; #address-cells = <2>; #size-cells = <2>; memory = {mem}; cpus = <1>;
    vpl011; kernel {{ compatible = "{k}"; {loc} = <0x0 0x50000000 0x0 0x2200000>; bootargs = "console=ttyAMA0 domain=domU1"; }};
    ramdisk {{ compatible = "{r}"; {loc} = <0x0 0x54000000 0x0 0x200000>; }}; }};"""


@pytest.mark.parametrize("form", sorted(FORMS))
def test_the_hardware_domain_from_the_other_forms(image, linux, work, qemu, form):
    """The same roles from a dom0less or hyperlaunch node: the domain is
    direct-mapped, owns the virtio disk and the RTC; the domU beside it
    has neither."""
    hl = form.startswith("hyperlaunch")
    domu = DOMU.format(mem='"192M"' if hl else "<0x0 0x30000>",
                       k="module,kernel\", \"module,addr" if hl else "multiboot,kernel\", \"multiboot,module",
                       r="module,ramdisk\", \"module,addr" if hl else "multiboot,ramdisk\", \"multiboot,module",
                       loc="module-addr" if hl else "reg")
    frag = os.path.join(work, f"{form}.dtsi")
    with open(frag, "w") as f:
        f.write(FORMS[form].format(domu=domu))
    kernel = "/chosen/hypervisor/{d}/kernel" if hl else "/chosen/{d}/module@50000000"
    ramdisk = "/chosen/hypervisor/{d}/ramdisk" if hl else "/chosen/{d}/module@54000000"
    with open(os.path.join(work, f"{form}.modules"), "w") as f:
        for d in ("hw", "domU1"):
            kn = kernel.format(d=d) if (hl or d == "hw") else "/chosen/domU1/kernel"
            rn = ramdisk.format(d=d) if (hl or d == "hw") else "/chosen/domU1/ramdisk"
            f.write(f"{kn} {linux}/Image 0x50000000\n{rn} {linux}/initramfs.cpio.gz 0x54000000\n")
    img = os.path.join(work, "disk.img")
    disk.make_ext4(img, {"in.txt": b"hello from the host disk\n"})
    args = boot_args(image, linux, work, frag)
    args += ["-drive", f"file={img},if=none,format=raw,id=d0", "-device", "virtio-blk-device,drive=d0"]
    with qemu(f"hardware-domain-{form}", args, limit=BOOT + 180) as q:
        m = q.expect(r"layout hw \(vmid 1\)\r?\n  ram guest \[(0x[0-9a-f]+), (0x[0-9a-f]+)\) <- host "
                     r"\[(0x[0-9a-f]+), (0x[0-9a-f]+)\) 256 MiB", 60)
        if m.group(1, 2) != m.group(3, 4):
            q.fail(f"hw is not direct-mapped: {m.group(0)!r}")
        expect_up(q, {"hw": (1, 256), "domU1": (1, 192)})
        focus(q, "hw")
        run(q, "hw", "mount -t ext4 /dev/vda /mnt && cat /mnt/in.txt && umount /mnt", "hello from the host disk",
            timeout=60)
        run(q, "hw", "cat /sys/class/rtc/rtc0/name", "rtc-pl031[^\\r\\n]*")
        focus(q, "domU1")
        run(q, "domU1", "echo disks=$(ls /sys/block | grep -c vd) rtcs=$(ls /sys/class/rtc | wc -l)",
            "disks=0 rtcs=0")
        q.not_seen(NO_FAULT)
