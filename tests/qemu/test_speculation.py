"""Speculation (Spectre-v2, Spectre-BHB, Speculative Store Bypass): on a
Cortex-A72 and a Cortex-A57, which Arm lists as affected by Spectre-v2 and
Spectre-BHB (a branch-history loop of 8), the hypervisor runs the loop at
every entry from a guest and answers SMCCC_ARCH_FEATURES so that a Linux
domU reports the mitigation. QEMU's own PSCI firmware offers none of the
ARCH_WORKAROUND calls: the boot log says what that leaves (no branch
predictor invalidation, no SSBD), and the guest is told the truth about
Speculative Store Bypass."""
import os

import pytest

from harness import ROOT
from test_linux import BOOT, DEFAULT, boot_args, expect_up, focus, run

VULN = "/sys/devices/system/cpu/vulnerabilities"


@pytest.mark.parametrize("cpu", ["cortex-a72", "cortex-a57"])
def test_linux_domu_reports_spectre_mitigations(image, linux, work, qemu, cpu):
    args = boot_args(image, linux, work, os.path.join(ROOT, "dts/qemu-virt/linux.dtsi"), cpu=cpu)
    with qemu(f"spectre-{cpu}", args, cpu=cpu, limit=BOOT + 90) as q:
        q.expect(r"speculation: Spectre-v2 mitigated \(the branch-history clearing only: the firmware offers no "
                 r"ARCH_WORKAROUND_1[^\n]*\), Spectre-BHB mitigated \(loop of 8 branches at every guest exit\), "
                 r"Speculative Store Bypass VULNERABLE \(the firmware offers no ARCH_WORKAROUND_2\)", 60)
        expect_up(q, DEFAULT)
        focus(q, "domU1")
        run(q, "domU1", f"cat {VULN}/spectre_v2", "Mitigation: Branch predictor hardening, BHB")
        run(q, "domU1", f"cat {VULN}/spec_store_bypass", "Vulnerable")
        # The guest's own workaround calls (on every switch of address
        # space) are answered, not logged as unknown.
        run(q, "domU1", "for i in 1 2 3 4 5; do cat /proc/version >/dev/null; done; echo switched", "switched")
        q.not_seen(r"SMCCC function 0x80008000|SMCCC function 0x80003fff|unhandled trap|Oops|BUG:")
