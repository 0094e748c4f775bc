"""A board other than QEMU virt, booted for real: QEMU's model of the
AMD/Xilinx ZCU102 (`-machine xlnx-zcu102,virtualization=on`: four
Cortex-A53, a GIC-400, Cadence UARTs, PSCI over SMC) with the board's own
DTB from Debian (`zynqmp-zcu102-rev1.0.dtb`, fetched by
scripts/fetch-test-dtbs) and two test-guest domains added. dtvisor's
console is the Cadence UART the DTB's stdout-path names; the guests run on
a vGICv2 (platform/xilinx-zcu102)."""
import os
import re
import subprocess

import pytest

from harness import CACHE

ZCU102_DTB = os.path.join(CACHE, "dtbs/debian/xilinx/zynqmp-zcu102-rev1.0.dtb")
DOMAINS = """
/ {{ chosen {{ #address-cells = <2>; #size-cells = <2>;
  domU1 {{ compatible = "xen,domain"; #address-cells = <2>; #size-cells = <2>;
    memory = <0x0 0x20000>; cpus = <2>; vpl011;
    module@10000000 {{ compatible = "multiboot,kernel", "multiboot,module";
      reg = <0x0 0x10000000 0x0 {size:#x}>; bootargs = "console=ttyAMA0 domain=one"; }}; }};
  domU2 {{ compatible = "xen,domain"; #address-cells = <2>; #size-cells = <2>;
    memory = <0x0 0x10000>; cpus = <1>; vpl011;
    module@10000000 {{ compatible = "multiboot,kernel", "multiboot,module";
      reg = <0x0 0x10000000 0x0 {size:#x}>; bootargs = "console=ttyAMA0 domain=two"; }}; }};
}}; }};
"""


def test_zcu102_model_with_debian_dtb_runs_two_guests(qemu, image, guest, work):
    if not os.path.exists(ZCU102_DTB):
        pytest.fail(f"{ZCU102_DTB} missing: scripts/fetch-test-dtbs fetches it (scripts/test does)", pytrace=False)
    src = subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", ZCU102_DTB], capture_output=True, text=True,
                         check=True).stdout
    dts = os.path.join(work, "zcu102.dts")
    with open(dts, "w") as f:
        f.write(src + DOMAINS.format(size=os.path.getsize(guest)))
    dtb = os.path.join(work, "zcu102.dtb")
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", dtb, dts], check=True)
    cmd = ["qemu-system-aarch64", "-machine", "xlnx-zcu102,virtualization=on", "-m", "2G",
           "-nographic", "-display", "none", "-audio", "none", "-monitor", "none",
           "-serial", "stdio", "-kernel", image, "-dtb", dtb,
           "-device", f"loader,file={guest},addr=0x10000000,force-raw=on"]
    with qemu("zcu102", [], command=cmd, limit=180) as q:
        m = q.expect(r"machine: (.*)\r?\n", 60, "the machine summary on the Cadence UART")
        line = m.group(1).decode()
        for want in ("4 CPUs", "2 GiB RAM", "GICv2", "console cadence at 0xff000000"):
            if want not in line:
                q.fail(f"expected {want!r} in the machine line: {line}")
        q.expect(r"PSCI smc", 10)
        q.expect(r"domU1: vCPUs 0\.\.2 on pCPUs 0 1; guest GIC v2", 60)
        q.expect_all([r"\(domU1\) guest: summary pass=\d+ fail=0\r?\n",
                      r"\(domU2\) guest: summary pass=\d+ fail=0\r?\n"], 120)
        for dom in ("domU1", "domU2"):
            n = int(re.search(rf"\({dom}\) guest: summary pass=(\d+)".encode(), q.buf).group(1))
            if n < 3:
                q.fail(f"{dom}: only {n} checks passed")
        q.not_seen(r"unhandled trap|panic on CPU")
