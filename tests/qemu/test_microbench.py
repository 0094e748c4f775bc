"""QEMU test of the test guest's `bench` word on dtvisor, under icount:
one test-guest domain with 2 vCPUs prints its micro-benchmark figures
(HVC round trip, emulated UART and vGIC distributor reads, EOI, timer
deadline to handler, SGI to the other vCPU spinning and in WFI), and each
is there, positive and plausible."""
import os
import re

import system

DOMAIN = """
/ { chosen { #address-cells = <2>; #size-cells = <2>;
        domU1 {
            compatible = "xen,domain";
            #address-cells = <2>;
            #size-cells = <2>;
            memory = <0x0 0x20000>;
            cpus = <2>;
            vpl011;
            kernel {
                compatible = "multiboot,kernel", "multiboot,module";
                reg = <0x0 0x50000000 0x0 0x200000>;
                bootargs = "bench";
            };
        };
}; };
"""

FIGURES = ("hvc", "mmio-uart", "mmio-gicd", "eoi", "timer", "sgi", "sgi-wfi")
LINE = re.compile(r"\(domU1\) guest: bench (\S+) n=(\d+) mean=(\d+\.\d)ns")


def test_microbench_figures(qemu, image, guest, work):
    frag = os.path.join(work, "bench.dtsi")
    with open(frag, "w") as f:
        f.write(DOMAIN)
    with open(os.path.join(work, "bench.modules"), "w") as f:
        f.write(f"/chosen/domU1/kernel {guest} 0x50000000\n")
    dtb = os.path.join(work, "bench.dtb")
    loaders = system.system_dtb(frag, dtb)
    with qemu("bench", ["-kernel", image, "-dtb", dtb] + loaders, icount=True, limit=300) as q:
        q.expect(r"\(domU1\) guest: summary pass=5 fail=0", 120)
        q.expect(r"\(domU1\) guest: bench start cntfrq=\d+", 60)
        q.expect(r"\(domU1\) guest: bench done", 240)
        t = q.text()
        q.not_seen(r"\(domU1\) guest: (FAIL|exception|unexpected|bench \S+ skipped)")
        got = {m.group(1): (int(m.group(2)), float(m.group(3))) for m in LINE.finditer(t)}
        for name in FIGURES:
            if name not in got:
                q.fail(f"no figure for {name}")
            n, ns = got[name]
            # Each a mean over >= 1000 iterations; under icount 1 ns is one
            # instruction, so anything a hypervisor does takes > 0 and
            # none of these should come near 1 ms.
            if n < 1000 or not 0 < ns < 1_000_000:
                q.fail(f"implausible {name}: n={n} mean={ns}ns")
        # Trapped accesses cost more than the EOI, which needs no trap.
        for name in ("hvc", "mmio-uart", "mmio-gicd"):
            if got[name][1] <= got["eoi"][1]:
                q.fail(f"{name} ({got[name][1]} ns) not above eoi ({got['eoi'][1]} ns)")
