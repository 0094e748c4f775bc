"""The image parses the boot DTB with the same parser as the host tool:
boot conformance cases (merged into QEMU's own DTB, kernel modules
preloaded) and compare the plan, or the errors, the image prints with
dtvisor-plan's output on the same DTB, byte for byte."""
import json
import re
import subprocess

from harness import conformance_dtb

VALID = [
    "dl-basic", "dl-two-domains", "dl-ramdisk", "dl-legacy-compatibles", "dl-shared-kernel",
    "dl-uboot-reverse-order", "dl-uboot-imagebuilder", "dl-cells-1-1", "dl-many-domains",
    "dl-optional-props", "hl-basic", "hl-domid-explicit", "hl-memory-string", "hl-uuid",
    "hl-config", "hl-seed000-dom0less-compat", "legacy-dom0",
]
INVALID = ["err-memory-one-cell", "err-several-at-once", "err-both-containers", "err-module-overlap", "err-hl-domid-duplicate"]


def host_output(plan_tool, dtb):
    p = subprocess.run([plan_tool, dtb], capture_output=True, text=True)
    j = json.loads(subprocess.run([plan_tool, "--format", "json", dtb], capture_output=True, text=True).stdout)
    return p.returncode, p.stdout, j


def boot_and_compare(qemu, image, guest, plan_tool, work, case):
    dtb = conformance_dtb(case, work)
    status, text, j = host_output(plan_tool, dtb)
    loaders = []
    starts = sorted({d["kernel"]["start"] for d in j["plan"]["domains"]}) if j["plan"] else []
    for a in starts:  # a shared kernel is loaded once
        loaders += ["-device", f"loader,file={guest},addr={a:#x},force-raw=on"]
    with qemu(f"plan-{case}", ["-kernel", image, "-dtb", dtb] + loaders) as q:
        if status == 0:
            q.expect(r"boot plan parsed in (\d+) us:", 60)
            q.expect(r"(boot modules kept in place as reset sources|no domain started)", 60, "the end of placement")
        else:
            q.expect(r"configuration invalid: \d+ errors", 60)
            q.expect(r"no domain started; dtvisor stays up on its console", 10)
        console = q.text().replace("\r\n", "\n")
        if text not in console:
            q.fail(f"the image's output differs from dtvisor-plan's:\n--- dtvisor-plan (exit {status})\n{text}")
        m = re.search(r"boot plan parsed in (\d+) us", console)
        return status, int(m.group(1)) if m else None


def test_plan_matches_host_tool(qemu, image, guest, plan_tool, work):
    results = []
    for case in VALID + INVALID:
        status, us = boot_and_compare(qemu, image, guest, plan_tool, work, case)
        want = 0 if case in VALID else 1
        assert status == want, f"{case}: dtvisor-plan exit {status}, expected {want}"
        results.append((case, us))
    for case, us in results:
        print(f"  {case}: identical" + (f", parsed in {us} us" if us is not None else " (errors)"))
