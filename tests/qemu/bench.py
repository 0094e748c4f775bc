#!/usr/bin/env python3
"""Boot figures under QEMU -icount (virtual time = instructions), printed
by scripts/bench. Figures, not assertions."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ROOT, Qemu, conformance_dtb  # noqa: E402
import system  # noqa: E402

IMAGE = os.path.join(ROOT, "target/aarch64/release/dtvisor.bin")


def figure(q, rx, label):
    m = q.expect(rx, 120, label)
    return int(m.group(1))


def main():
    size = os.path.getsize(IMAGE)
    with open(IMAGE, "rb") as f:
        hdr = f.read(64)
    print("dtvisor boot figures (QEMU virt, cortex-a57, 4 CPUs, 2 GiB, GICv3; icount: 1 us = 1000 instructions)")
    print(f"  image: {size} bytes raw; header image_size {int.from_bytes(hdr[16:24], 'little')} bytes")
    dtb = os.path.join(ROOT, "cache/qemu/bench-dom0less.dtb")
    loaders = system.system_dtb(os.path.join(ROOT, "dts/qemu-virt/dom0less.dtsi"), dtb)
    with Qemu("bench-dom0less", ["-kernel", IMAGE, "-dtb", dtb] + loaders, icount=True) as q:
        d = figure(q, rb"discovery took (\d+) us", "discovery")
        p = figure(q, rb"boot plan parsed in (\d+) us", "parse")
        g = figure(q, rb"hypervisor entry to first guest instruction: (\d+) us", "first guest instruction")
        q.expect(rb"\(domU1\) guest: summary", 120)
    print(f"  entry to end of host discovery and banner: {d} us")
    print(f"  boot plan parse, 2 domains: {p} us")
    print(f"  entry to first guest instruction (2 domains, 192 MiB scrubbed): {g} us")
    dtb = conformance_dtb("dl-many-domains", os.path.join(ROOT, "cache/qemu"))
    with Qemu("bench-16", ["-kernel", IMAGE, "-dtb", dtb], icount=True) as q:
        p16 = figure(q, rb"boot plan parsed in (\d+) us", "parse")
    print(f"  boot plan parse, 16 domains: {p16} us")


if __name__ == "__main__":
    main()
