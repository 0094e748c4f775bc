"""Isolation and containment (issue 14) with the test guest: a guest that
reaches for what is not its own gets aborts it sees, while the other
guest's memory and interrupts stay untouched; a guest that misbehaves in
a loop is contained (test-guest words for that: tests/guest/src/attack.rs)."""
import os
import re

import pytest

from harness import ROOT
from test_guests import two_domains  # noqa: F401 (a fixture)

# Outside a normal domain's map on QEMU virt: the physical GIC distributor
# and redistributors, the physical UART, the PL031 RTC (not assigned), the
# IPA just past its 128 MiB of RAM, and host RAM far above it.
PROBES = [0x0800_0000, 0x080a_0000, 0x0900_0000, 0x0901_0000, 0x4800_0000, 0xb000_0000]


def test_guest_cannot_reach_outside_its_map_or_the_other_domain(qemu, two_domains):  # noqa: F811
    """domU1 reads and writes the physical GIC, UART and RTC, past its RAM
    and far host RAM: each of the 12 accesses aborts in domU1, which
    reports it, and the hypervisor log names domU1. Its CPU_ONs of vCPUs it
    does not have fail with INVALID_PARAMETERS and its SGIs to every target
    reach nobody: domU2, guarding a pattern with every SGI enabled, sees
    the pattern unchanged and takes no interrupt."""
    probes = ",".join(f"{a:#x}" for a in PROBES)
    args = two_domains("isolation", f"probe={probes} cross", "guard=0x42000000", cpus=(1, 1))
    with qemu("isolation", args) as q:
        # The two guests' lines interleave in any order.
        q.expect_all([r"\(domU2\) guest: guard set base=0x42000000 words=8192 gic=true",
                      r"\(domU2\) guest: guard ok checks=1 irqs=0",
                      rf"\(domU1\) guest: probe done aborted={2 * len(PROBES)}/{2 * len(PROBES)}",
                      r"\(domU1\) guest: cross cpu_on invalid=(\d+)/\1\r?\n",
                      r"\(domU1\) guest: cross sgis sent=\d+",
                      r"domU1: SYSTEM_OFF: domain powered off"], 120)
        # Two more checks of domU2's after domU1 is done.
        m = q.expect(r"\(domU2\) guest: guard ok checks=(\d+) irqs=(\d+)", 60)
        m = q.expect(r"\(domU2\) guest: guard ok checks=(\d+) irqs=(\d+)", 60)
        if int(m.group(2)) != 0:
            q.fail(f"domU2 took {m.group(2)} interrupts: domU1's SGIs reached it")
        # The hypervisor names domU1 for each, the first ten (then rate
        # limited to powers of two).
        t = q.text()
        for i, a in enumerate(PROBES[:5]):
            for j, what in enumerate(("read", "write")):
                n = 2 * i + j + 1
                if not re.search(rf"domU1: {what} at IPA {a:#x} \(pc 0x[0-9a-f]+\) hits nothing: "
                                 rf"external abort injected \({n} faults so far\)", t):
                    q.fail(f"the hypervisor did not log domU1's {what} at {a:#x} as fault {n}")
        if "faults so far" in t.split("(10 faults so far)", 1)[1]:
            q.fail("faults after the tenth were logged (not rate limited)")
        q.not_seen(r"NOT aborted|FAIL")



def test_device_access_without_a_syndrome_is_aborted_and_named(qemu, two_domains):  # noqa: F811
    """Loads and stores the hypervisor cannot emulate (no syndrome, ESR
    ISV = 0: a load pair, post-indexed accesses) at domU1's vPL011 and
    vGIC distributor abort in domU1; the log says which device and why,
    and domU2 keeps running."""
    args = two_domains("nisv", "nisv", "spin", cpus=(1, 1))
    with qemu("nisv", args) as q:
        q.expect_all([r"\(domU1\) guest: nisv done aborted=6/6", r"\(domU2\) guest: tick 2"], 120)
        t = q.text()
        for dev in ("vPL011", "vGIC distributor"):
            for what in ("read", "write"):
                if not re.search(rf"domU1: {what} at {dev} address 0x[0-9a-f]+ \(pc 0x[0-9a-f]+\) is not a single"
                                 rf" load or store \(no syndrome\): only those are emulated; external abort"
                                 rf" injected", t):
                    q.fail(f"the hypervisor did not name domU1's {what} without a syndrome at its {dev}")
        q.not_seen(r"NOT aborted|FAIL|hits nothing")
