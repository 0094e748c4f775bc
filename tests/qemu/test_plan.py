"""The image parses the boot DTB with the same parser as the host tool:
boot conformance cases (merged into QEMU's own DTB, kernel modules
preloaded) and compare the plan, or the errors, the image prints with
dtvisor-plan's output on the same DTB, byte for byte."""
import json
import os
import re
import shutil
import subprocess

from harness import CONFORMANCE, conformance_dtb

VALID = [
    "dl-basic", "dl-two-domains", "dl-ramdisk", "dl-legacy-compatibles", "dl-shared-kernel",
    "dl-uboot-reverse-order", "dl-uboot-imagebuilder", "dl-cells-1-1", "dl-many-domains",
    "dl-optional-props", "hl-basic", "hl-domid-explicit", "hl-memory-string", "hl-uuid",
    "hl-config", "hl-seed000-dom0less-compat", "legacy-dom0",
    "dl-passthrough-rtc", "dl-passthrough-virtio-direct-map", "dl-static-mem", "dl-direct-map",
]
INVALID = ["err-memory-one-cell", "err-several-at-once", "err-both-containers", "err-module-overlap", "err-hl-domid-duplicate",
           # device passthrough and static memory: each prints its error and starts nothing
           "err-partial-bad-magic", "err-partial-path-missing", "err-partial-no-iommu", "err-passthrough-two-domains",
           "err-passthrough-console", "err-passthrough-gic", "err-static-mem-module", "err-static-mem-two-domains"]


def partials(case, dtb, work):
    """The case's partial device trees (partial-DOMAIN.dts or .bin), each
    as (module node, file, load address from the module's reg)."""
    out = []
    d = os.path.join(CONFORMANCE, case)
    for name in sorted(os.listdir(d)):
        m = re.fullmatch(r"partial-(\w+)\.(dts|bin)", name)
        if not m:
            continue
        node = f"/chosen/{m.group(1)}/dt"
        f = os.path.join(work, f"{case}-{m.group(1)}.partial")
        if m.group(2) == "dts":
            subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", f, os.path.join(d, name)], check=True)
        else:
            shutil.copy(os.path.join(d, name), f)
        cells = subprocess.run(["fdtget", "-t", "x", dtb, node, "reg"], capture_output=True, text=True,
                               check=True).stdout.split()
        out.append((node, f, (int(cells[0], 16) << 32) | int(cells[1], 16)))
    return out


def host_output(plan_tool, dtb, modules=()):
    extra = [a for node, f, _ in modules for a in ("--module", f"{node}={f}")]
    p = subprocess.run([plan_tool, dtb] + extra, capture_output=True, text=True)
    j = json.loads(subprocess.run([plan_tool, "--format", "json", dtb] + extra, capture_output=True, text=True).stdout)
    return p.returncode, p.stdout, j


def boot_and_compare(qemu, image, guest, plan_tool, work, case):
    dtb = conformance_dtb(case, work)
    modules = partials(case, dtb, work)
    status, text, j = host_output(plan_tool, dtb, modules)
    loaders = [a for _, f, addr in modules for a in ("-device", f"loader,file={f},addr={addr:#x},force-raw=on")]
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
        if status != 0:
            # Still answering on its console: a key repeats why.
            q.send("\r")
            q.expect(r"no domain started \(the errors are above; any key repeats this\)", 10,
                     "the hypervisor's answer on its console")
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
