#!/usr/bin/env python3
"""The image parses the boot DTB with the same parser as the host tool:
boot conformance cases (merged into QEMU's own DTB, kernel modules
preloaded) and compare the plan, or the errors, the image prints with
dtvisor-plan's output on the same DTB, byte for byte."""
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import CACHE, ROOT, Qemu, TestFailure, main, run  # noqa: E402
import system  # noqa: E402

IMAGE = os.environ.get("DTVISOR_IMAGE") or os.path.join(ROOT, "target/aarch64/release/dtvisor.bin")
GUEST = os.environ.get("DTVISOR_GUEST") or os.path.join(ROOT, "target/guest/dtvisor-test-guest.bin")
PLAN = os.path.join(ROOT, "target/release/dtvisor-plan")
SUITE = os.path.join(ROOT, "tests/conformance")
WORK = os.path.join(CACHE, "plan-tests")

VALID = [
    "dl-basic", "dl-two-domains", "dl-ramdisk", "dl-legacy-compatibles", "dl-shared-kernel",
    "dl-uboot-reverse-order", "dl-uboot-imagebuilder", "dl-cells-1-1", "dl-many-domains",
    "dl-optional-props", "hl-basic", "hl-domid-explicit", "hl-memory-string", "hl-uuid",
    "hl-config", "hl-seed000-dom0less-compat", "legacy-dom0",
]
INVALID = ["err-memory-one-cell", "err-several-at-once", "err-both-containers", "err-module-overlap", "err-hl-domid-duplicate"]


def merged_dtb(case):
    """QEMU's DTB + the case's nodes, so the machine part is real."""
    os.makedirs(WORK, exist_ok=True)
    src = open(os.path.join(SUITE, case, "input.dts")).read()
    src = src.replace("/dts-v1/;", "").replace('"../common.dtsi"', f'"{os.path.join(SUITE, "common.dtsi")}"')
    frag = os.path.join(WORK, f"{case}.dtsi")
    with open(frag, "w") as f:
        f.write(src)
    dtb = os.path.join(WORK, f"{case}.dtb")
    system.system_dtb(frag, dtb)
    return dtb


def host_output(dtb):
    p = subprocess.run([PLAN, dtb], capture_output=True, text=True)
    j = json.loads(subprocess.run([PLAN, "--format", "json", dtb], capture_output=True, text=True).stdout)
    return p.returncode, p.stdout, j


def boot_and_compare(case):
    dtb = merged_dtb(case)
    status, text, j = host_output(dtb)
    loaders = []
    starts = sorted({d["kernel"]["start"] for d in j["plan"]["domains"]}) if j["plan"] else []
    for a in starts:  # a shared kernel is loaded once
        loaders += ["-device", f"loader,file={GUEST},addr={a:#x},force-raw=on"]
    with Qemu(f"plan-{case}", ["-kernel", IMAGE, "-dtb", dtb] + loaders) as q:
        if status == 0:
            q.expect(r"boot plan parsed in (\d+) us:", 60)
            q.expect(r"(module memory returned to the free pool|no domain started)", 60, "the end of placement")
        else:
            q.expect(r"configuration invalid: \d+ errors", 60)
            q.expect(r"no domain started; dtvisor stays up on its console", 10)
        console = q.text().replace("\r\n", "\n")
        if text not in console:
            q.fail(f"the image's output differs from dtvisor-plan's:\n--- dtvisor-plan (exit {status})\n{text}")
        m = re.search(r"boot plan parsed in (\d+) us", console)
        return status, int(m.group(1)) if m else None


def test_plan_matches_host_tool():
    for tool in (PLAN, IMAGE, GUEST):
        if not os.path.exists(tool):
            raise TestFailure(f"{tool} missing: scripts/test builds it")
    results = []
    for case in VALID + INVALID:
        status, us = boot_and_compare(case)
        want = 0 if case in VALID else 1
        if status != want:
            raise TestFailure(f"{case}: dtvisor-plan exit {status}, expected {want}")
        results.append((case, us))
    for case, us in results:
        print(f"  {case}: identical" + (f", parsed in {us} us" if us is not None else " (errors)"))


TESTS = [test_plan_matches_host_tool]

if __name__ == "__main__":
    sys.exit(main(TESTS))
