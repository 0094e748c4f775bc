"""Device passthrough with Linux domUs (issue: partial device trees,
direct-mapped and static memory): QEMU virt's PL031 RTC given to one domain
from a partial device tree in Xen's format, a virtio-mmio block device given
to a direct-mapped domain with static memory, and invalid assignments that
must start nothing."""
import os
import time

import pytest


import disk
import system
from harness import ROOT
from test_linux import BOOT, MARKER, boot_args, expect_up, focus, run

DTS = os.path.join(ROOT, "dts/qemu-virt")
NO_FAULT = r"unhandled trap|undefined instruction injected|Kernel panic|Oops|BUG:|panic on CPU"


def read_rtc(q, dom):
    """The domain's rtc0 (the PL031) against the host's clock."""
    m = run(q, dom, "echo rtc=$(cat /sys/class/rtc/rtc0/since_epoch) name=$(cat /sys/class/rtc/rtc0/name)",
            r"rtc=(\d+) name=(\S+)[^\r\n]*")
    guest_time = int(m.group(1))
    if abs(guest_time - time.time()) > 120:
        q.fail(f"{dom}'s RTC reads {guest_time}, the host's time is {int(time.time())}")
    if m.group(2) != b"rtc-pl031":
        q.fail(f"{dom}'s rtc0 is {m.group(2)!r}, not the PL031")


def rtc_alarm(q, dom):
    """An alarm 2 s ahead: its interrupt reaches the guest through the
    vGIC, hardware-linked (the guest polls /proc/interrupts for it)."""
    cmd = ("echo +2 > /sys/class/rtc/rtc0/wakealarm; n=0; for i in $(seq 40); do "
           "n=$(awk '/rtc-pl031/ {print $2; exit}' /proc/interrupts); "
           "[ \"${n:-0}\" -ge 1 ] && break; sleep 0.25; done; echo alarm-irqs=$n")
    m = run(q, dom, cmd, r"alarm-irqs=(\d+)", timeout=60)
    if int(m.group(1)) < 1:
        q.fail(f"the RTC alarm interrupt never reached {dom}")


@pytest.mark.parametrize("gic", [3, 2])
def test_rtc_passed_through_to_one_linux_domu(image, linux, work, qemu, gic):
    """The README's example (scripts/run --passthrough) with a partial
    device tree in Xen's format: domU1 reads the host's time from the PL031
    and its alarm interrupt fires, also after domU1 rebooted; domU2 has no
    RTC, and its access to the RTC's address gets an abort while it keeps
    running. On a GICv3 and a GICv2 host."""
    args = boot_args(image, linux, work, os.path.join(DTS, "passthrough.dtsi"), gic=gic)
    with qemu(f"passthrough-rtc-gicv{gic}", args, gic=gic, limit=2 * BOOT + 180) as q:
        q.expect(r"device /passthrough/rtc@9010000 \(host /pl031@9010000\)", 60)
        q.expect(r"domU1: /passthrough/rtc@9010000 mmio host \[0x9010000, 0x9011000\) at guest 0x9010000", 30)
        q.expect(r"domU1: /passthrough/rtc@9010000 interrupt 34 \(level\) routed to the domain", 30)
        expect_up(q, {"domU1": (1, 256), "domU2": (1, 192)})
        focus(q, "domU1")
        read_rtc(q, "domU1")
        rtc_alarm(q, "domU1")
        # A restart: the device's interrupt is routed to it again.
        q.send("reboot -f\n")
        q.expect(r"domU1: SYSTEM_RESET: restarting the domain", 60)
        q.expect(MARKER.format(dom="domU1"), BOOT, "domU1 up again")
        read_rtc(q, "domU1")
        rtc_alarm(q, "domU1")
        focus(q, "domU2")
        run(q, "domU2", "ls /sys/class/rtc/ | wc -l", "0")
        q.send("devmem 0x9010000 32; echo devmem-done\n")
        q.expect(r"domU2: read at IPA 0x9010000 .*hits nothing: external abort injected", 60,
                 "the hypervisor reports domU2's access to the RTC")
        run(q, "domU2", "echo domU2-alive-$((6*7))", "domU2-alive-42")
        q.not_seen(NO_FAULT)


def test_virtio_disk_on_a_direct_mapped_domu_with_static_memory(image, linux, work, qemu):
    """domU1's RAM is host RAM at its own addresses (xen,static-mem +
    direct-map), so the virtio-mmio block device it owns does DMA straight
    into it: the guest reads a file the host put on the disk and writes one
    back, which the host then reads from the image. domU2 runs beside it."""
    img = os.path.join(work, "disk.img")
    disk.make_ext4(img, {"in.txt": b"hello from the host disk\n"})
    args = boot_args(image, linux, work, os.path.join(DTS, "direct-map.dtsi"))
    args += ["-drive", f"file={img},if=none,format=raw,id=d0", "-device", "virtio-blk-device,drive=d0"]
    with qemu("passthrough-direct-map", args, limit=BOOT + 180) as q:
        q.expect(r"static memory \[0x60000000, 0x70000000\) 256 MiB", 60)
        q.expect(r"ram guest \[0x60000000, 0x70000000\) <- host \[0x60000000, 0x70000000\)", 30)
        q.expect(r"domU1: /passthrough/virtio_mmio@a003e00 interrupt 79 \(edge\) routed to the domain", 30)
        q.expect(r"domU1: vCPUs 0\.\.1 on pCPUs 0; guest GIC v3 \(distributor 0x8000000, \d+ SPIs", 30)
        expect_up(q, {"domU1": (1, 256), "domU2": (1, 192)})
        focus(q, "domU1")
        run(q, "domU1", "grep -c 60000000-6fffffff /proc/iomem", "1")
        run(q, "domU1", "mount -t ext4 /dev/vda /mnt && cat /mnt/in.txt", "hello from the host disk", timeout=60)
        run(q, "domU1", "echo written-by-domU1 > /mnt/out.txt && umount /mnt && sync && echo disk-$((40+2))",
            "disk-42", timeout=60)
        focus(q, "domU2")
        run(q, "domU2", "echo domU2-alive-$((6*7)) disks=$(ls /sys/block | grep -c vd)", "domU2-alive-42 disks=0")
        q.not_seen(NO_FAULT)
    if disk.read_file(img, "out.txt") != b"written-by-domU1\n":
        raise AssertionError(f"out.txt on the host disk image is {disk.read_file(img, 'out.txt')!r}")
