"""QEMU tests of running guests: two test-guest domains from the dom0less
and the hyperlaunch forms, a guest's data abort outside its RAM, one
guest's SYSTEM_OFF and SYSTEM_RESET while the other keeps running, and
console input focus."""
import os
import re

import pytest

import system
from harness import ROOT

DOMAIN = """
        {name} {{
            compatible = "xen,domain";
            #address-cells = <2>;
            #size-cells = <2>;
            {extra}
            memory = <0x0 {kib:#x}>;
            cpus = <{cpus}>;
            vpl011;
            kernel {{
                compatible = "multiboot,kernel", "multiboot,module";
                reg = <0x0 {addr:#x} 0x0 0x200000>;
                bootargs = "{args}";
            }};
        }};
"""


@pytest.fixture
def two_domains(image, guest, work):
    """make(name, args1, args2, ...) writes a fragment with domU1/domU2
    running the test guest (in this test's work directory) and returns
    QEMU arguments that boot it."""

    def make(name, args1, args2, hyperlaunch=False, cpus=(2, 1), mem=(128, 64), gic=3, xen_args=None, kernel=None,
             partial=None, smp=4):
        doms, mods = "", ""
        prefix = "/chosen/hypervisor" if hyperlaunch else "/chosen"
        for i, (args, c, m) in enumerate(zip((args1, args2), cpus, mem)):
            addr = 0x5000_0000 + i * 0x40_0000
            extra = f"domid = <{i + 1}>;" if hyperlaunch else ""
            dom = DOMAIN.format(name=f"domU{i + 1}", extra=extra, kib=m * 1024, cpus=c, addr=addr, args=args)
            if partial and i == 0:  # domU1's partial device tree, at 0x51000000
                dom = dom.rstrip()[:-2] + ('    dtb { compatible = "multiboot,device-tree", "multiboot,module";'
                                           ' reg = <0x0 0x51000000 0x0 0x1000>; };\n        };\n')
                mods += f"{prefix}/domU1/dtb {partial} 0x51000000\n"
            doms += dom
            k = kernel if (kernel and i == 0) else guest
            mods += f"{prefix}/domU{i + 1}/kernel {k} {addr:#x}\n"
        if hyperlaunch:
            body = ('hypervisor { compatible = "hypervisor,xen", "hypervisor,dtvisor";'
                    ' #address-cells = <2>; #size-cells = <2>;\n' + doms + "};")
        else:
            body = doms
        if xen_args is not None:
            body = f'xen,xen-bootargs = "{xen_args}";\n' + body
        frag = os.path.join(work, f"{name}.dtsi")
        with open(frag, "w") as f:
            f.write("/ { chosen { #address-cells = <2>; #size-cells = <2>;\n" + body + "}; };\n")
        with open(os.path.join(work, f"{name}.modules"), "w") as f:
            f.write(mods)
        dtb = os.path.join(work, f"{name}.dtb")
        loaders = system.system_dtb(frag, dtb, gic=gic, smp=smp)
        return ["-kernel", image, "-dtb", dtb] + loaders

    return make


def expect_guest_ok(q, dom, args, mem, cpus):
    q.expect(rf'\({dom}\) guest: hello bootargs="{args}" mem={mem}MiB cpus={cpus}', 120, f"{dom} hello")


def check_two(qemu, two_domains, name, hyperlaunch):
    args = two_domains(name, "console=ttyAMA0 one spin", "console=ttyAMA0 two spin", hyperlaunch)
    with qemu(name, args) as q:
        q.expect(r"boot plan: 2 domains \((hyperlaunch|dom0less)\)", 60)
        q.expect_all([r"hypervisor entry to first guest instruction: \d+ us",
                      r"\(domU1\) guest: summary pass=\d+ fail=\d+\r?\n",
                      r"\(domU2\) guest: summary pass=\d+ fail=\d+\r?\n"], 120)
        for dom, least in (("domU1", 5), ("domU2", 3)):
            m = re.search(rf"\({dom}\) guest: summary pass=(\d+) fail=(\d+)", q.text())
            if not m or int(m.group(2)) or int(m.group(1)) < least:
                q.fail(f"{dom}: {m.group(0) if m else 'no summary'}")
        t = q.text()
        for dom, args, mem, cpus in (("domU1", "one", 128, 2), ("domU2", "two", 64, 1)):
            want = f'({dom}) guest: hello bootargs="console=ttyAMA0 {args} spin" mem={mem}MiB cpus={cpus}'
            if want not in t:
                q.fail(f"missing {want!r}")
        if "(domU1) guest: PASS cpu_on 0x1" not in t:
            q.fail("domU1's second vCPU did not come up")
        q.expect_all([r"\(domU1\) guest: tick 1", r"\(domU2\) guest: tick 1"], 60)


def test_two_guests_dom0less(qemu, two_domains):
    check_two(qemu, two_domains, "two-dom0less", False)


STAMP = r"\[\s*(\d+\.\d{6})\] "
# The boot's own accounting of each domain's memory.
WORK_LINE = (r"\(dtvisor\) {stamp}{dom}: memory: (\d+) B[^,]* shared with its modules \(copy on write\),"
             r" (\d+) B[^,]* copied, (\d+) B[^,]* zeroed, (\d+) B[^\n]* cleaned")


def boot_work(q, stamp=""):
    """domain -> (shared, copied, zeroed, cleaned) bytes, once all are loaded."""
    q.expect(r"all domains loaded, memory:", 120)
    out = {}
    for dom in ("domU1", "domU2"):
        m = re.search(WORK_LINE.format(stamp=stamp, dom=dom), q.text())
        if not m:
            q.fail(f"no memory line for {dom}")
        out[dom] = tuple(int(g) for g in m.groups()[-4:])
    return out


def test_boot_work_is_accounted_and_scrub_covers_the_rest(qemu, two_domains):
    """Each guest's kernel module is mapped into it (not copied) but for
    its last partial page, its DTB is copied, and the rest of its RAM is
    zeroed: together, exactly its RAM."""
    args = two_domains("work-scrub", "spin", "spin")
    with qemu("work-scrub", args) as q:
        work = boot_work(q)
        for dom, mib in (("domU1", 128), ("domU2", 64)):
            shared, copied, zeroed, cleaned = work[dom]
            if not (shared > 0 and 0 < copied < 2 * 4096 and shared + copied + zeroed == mib << 20
                    and cleaned >= zeroed):
                q.fail(f"{dom}: {work[dom]}")
        q.expect(r"hypervisor memory: image \d+ B[^+]*\+ heap \d+ B", 30)
        q.expect_all([r"\(domU1\) guest: tick 1", r"\(domU2\) guest: tick 1"], 120)


def test_bootscrub_timestamps_and_ignored_options(qemu, two_domains):
    """Xen's bootscrub=0 skips the scrub, console_timestamps=boot stamps
    every line (the hypervisor's and the guests'), in order; an option
    dtvisor does not act on is listed once as ignored."""
    args = two_domains("opts", "spin", "spin",
                       xen_args="bootscrub=0 console_timestamps=boot sync_console sched=credit2 loglvl=info")
    with qemu("opts", args) as q:
        q.expect(r"\(dtvisor\) " + STAMP + r"hypervisor command line: ignored \(no effect in dtvisor\):"
                 r" sync_console sched=credit2\r?\n", 60)
        q.expect(r"\(dtvisor\) " + STAMP + "bootscrub=0: guest RAM is not scrubbed", 30)
        for dom, (shared, copied, zeroed, _) in boot_work(q, STAMP).items():
            if zeroed != 0 or shared == 0:
                q.fail(f"{dom} was scrubbed: {(shared, copied, zeroed)}")
        q.expect_all([r"\(domU1\) " + STAMP + r"guest: tick 1", r"\(domU2\) " + STAMP + r"guest: tick 1"], 120)
        t = q.text()
        if t.count("ignored (no effect in dtvisor)") != 1:
            q.fail("the ignored options were listed more than once")
        stamps = [float(x) for x in re.findall(r"^(?:\(\w+\) )?" + STAMP, t, re.M)]
        if len(stamps) < 20 or stamps != sorted(stamps):
            q.fail(f"{len(stamps)} timestamps, not in order: {stamps[:40]}")
        lines = t.splitlines()
        banner = next(i for i, l in enumerate(lines) if "(EL2)" in l)
        unstamped = [l for l in lines[banner:] if l.strip() and not re.match(r"^(\(\w+\) )?" + STAMP, l)]
        if unstamped:
            q.fail(f"lines without a timestamp: {unstamped[:5]}")


def test_two_guests_hyperlaunch(qemu, two_domains):
    check_two(qemu, two_domains, "two-hyperlaunch", True)


def test_two_guests_on_gicv2_host(qemu, two_domains):
    """A GICv2 host: guests get a GICv2 node and run the same."""
    args = two_domains("two-gicv2", "v2 spin", "v2 spin", gic=2)
    with qemu("two-gicv2", args, gic=2) as q:
        q.expect(r"machine: 4 CPUs, 2 GiB RAM, GICv2", 60)
        q.expect_all([r"\(domU1\) guest: summary pass=5 fail=0", r"\(domU2\) guest: summary pass=3 fail=0"], 120)


def test_data_abort_outside_ram_other_keeps_running(qemu, two_domains):
    args = two_domains("fault", "fault spin", "spin")
    with qemu("fault", args) as q:
        q.expect(r"\(dtvisor\) domU1: read at IPA 0x10000000 .*external abort injected", 120, "the hypervisor's abort line")
        q.expect(r"\(domU1\) guest: caught data abort", 30)
        q.expect(r"\(domU1\) guest: after fault value=0x0 caught=1", 30)
        q.expect(r"\(domU2\) guest: tick 2", 60, "domU2 still running")


def test_system_off_leaves_other_running(qemu, two_domains):
    args = two_domains("sysoff", "off", "spin")
    with qemu("sysoff", args) as q:
        q.expect(r"\(dtvisor\) domU1: SYSTEM_OFF: domain powered off", 120)
        q.expect(r"\(domU2\) guest: tick 2", 60, "domU2 still running after domU1's SYSTEM_OFF")
        q.not_seen(r"\(domU1\) guest: FAIL")


def test_system_reset_restarts_that_domain_only(qemu, two_domains):
    args = two_domains("reset", "reset", "spin")
    with qemu("reset", args) as q:
        q.expect(r"\(domU1\) guest: calling SYSTEM_RESET", 120)
        q.expect(r"\(dtvisor\) domU1: SYSTEM_RESET: restarting the domain", 30)
        q.expect(r'\(domU1\) guest: hello bootargs="reset"', 60, "domU1 booting again")
        q.expect(r"\(domU1\) guest: summary pass=\d+ fail=0", 60)
        q.expect(r"\(domU2\) guest: tick 1", 60, "domU2 running throughout")
        if q.text().count("(domU2) guest: hello") != 1:
            q.fail("domU2 was restarted too")


def test_reset_stops_a_spinning_vcpu(qemu, two_domains):
    """SYSTEM_RESET while the domain's other vCPU spins without ever
    trapping: the hypervisor kicks that pCPU (a GIC SGI) and the domain
    restarts."""
    args = two_domains("reset-hold", "hold reset", "spin")
    with qemu("reset-hold", args) as q:
        q.expect(r"\(domU1\) guest: PASS cpu_on 0x1", 120)
        q.expect(r"\(domU1\) guest: calling SYSTEM_RESET", 60)
        q.expect(r'\(domU1\) guest: hello bootargs="hold reset"', 60, "domU1 booting again")
        q.expect(r"\(domU1\) guest: PASS cpu_on 0x1", 60, "its second vCPU starting again")
        q.not_seen(r"reset waits for its other vCPUs")


def test_console_input_focus(qemu, two_domains):
    """Ctrl-a x3 moves the focus; bytes go to the focused domain only, and
    the console's interrupt goes to the pCPU of its vCPU 0 (so typing
    for one domain interrupts no other)."""
    args = two_domains("echo", "echo", "echo")
    with qemu("echo", args) as q:
        first = {}
        for d in ("domU1", "domU2"):
            first[d] = q.expect(rf"\(dtvisor\) {d}: vCPUs 0\.\.\d+ on pCPUs (\d+)", 60).group(1).decode()
        q.expect_all([r"\(domU1\) guest: echo ready", r"\(domU2\) guest: echo ready"], 120)
        assert first["domU1"] != first["domU2"], first
        q.send(b"\x01\x01\x01")
        q.expect(rf"console input now goes to domU1 \(Ctrl-a three times to switch\); pCPU {first['domU1']} takes", 30)
        q.send(b"a")
        q.expect(r"\(domU1\) guest: rx a", 30)
        q.send(b"\x01\x01\x01")
        q.expect(rf"console input now goes to domU2 \(Ctrl-a three times to switch\); pCPU {first['domU2']} takes", 30)
        q.send(b"b")
        q.expect(r"\(domU2\) guest: rx b", 30)
        q.send(b"\x01\x01\x01")
        q.expect(r"console input now goes to the hypervisor", 30)
        q.not_seen(r"\(domU1\) guest: rx b")


@pytest.mark.parametrize("boot", range(4))
def test_console_input_while_every_pcpu_idles(qemu, two_domains, boot):
    """domU2 powers off (its pCPU idles in the hypervisor, polling the
    console) and domU1 waits in WFI after a short loop: each Ctrl-a x3 is still answered.
    The console's interrupt came to pCPU 0 while the idle pCPU held the
    input: pCPU 0 took it again and again, waiting, and under QEMU's
    one-thread icount the holder never ran again (about every other boot).
    Now the receive side is apart from output and pCPU 0 hands the input
    over without waiting. Four boots, four rounds each."""
    args = two_domains("idle-input", "measure=1", "", cpus=(1, 1), smp=2)
    with qemu("idle-input", args, smp=2, icount=True) as q:
        q.expect_all([r"\(dtvisor\) domU2: SYSTEM_OFF: domain powered off",
                      r"\(domU1\) guest: measure done "], 60)
        # domU2 is off: the focus skips it.
        for want in ("domU1", "the hypervisor", "domU1", "the hypervisor"):
            q.send(b"\x01\x01\x01")
            q.expect(rf"console input now goes to {want} ", 20, f"the focus moving to {want}")


def test_interrupt_counts_are_exact(qemu, two_domains):
    """The vGIC delivers exactly what was raised: domU1 arms its virtual
    timer 25 times and its two vCPUs send each other 20 SGIs each way,
    while domU2 (1 vCPU) arms its timer 30 times."""
    args = two_domains("irqs", "irqs timer=25 sgi=20", "irqs timer=30 sgi=5")
    with qemu("irqs", args) as q:
        q.expect_all([r"\(domU1\) guest: irqs done", r"\(domU2\) guest: irqs done"], 180)
        t = q.text()
        for want in ("(domU1) guest: irqs gic=v3 gicd=0x3001000 gicr=0x3020000",
                     "(domU1) guest: irqs timer=25 expected=25", "(domU1) guest: irqs sgi=20+20 expected=20+20",
                     "(domU1) guest: irqs summary pass=2 fail=0",
                     "(domU2) guest: irqs timer=30 expected=30", "(domU2) guest: irqs sgi skipped (1 cpu)",
                     "(domU2) guest: irqs summary pass=1 fail=0"):
            if want not in t:
                q.fail(f"missing {want!r}")


def test_interrupt_counts_are_exact_on_a_gicv2_host(qemu, two_domains):
    """The same on a GICv2 host: the vGICv2 distributor view, list
    registers through GICH, the GICV frame as the guest's CPU interface,
    and SGIs through the emulated GICD_SGIR."""
    args = two_domains("irqs-v2", "irqs timer=25 sgi=20", "irqs timer=30 sgi=5", gic=2)
    with qemu("irqs-v2", args, gic=2) as q:
        q.expect(r"domU1: vCPUs 0\.\.2 on pCPUs 0 1; guest GIC v2", 60)
        q.expect_all([r"\(domU1\) guest: irqs done", r"\(domU2\) guest: irqs done"], 180)
        t = q.text()
        for want in ("(domU1) guest: irqs gic=v2 gicd=0x3001000 gicc=0x3002000",
                     "(domU1) guest: irqs timer=25 expected=25", "(domU1) guest: irqs sgi=20+20 expected=20+20",
                     "(domU1) guest: irqs summary pass=2 fail=0",
                     "(domU2) guest: irqs timer=30 expected=30", "(domU2) guest: irqs summary pass=1 fail=0"):
            if want not in t:
                q.fail(f"missing {want!r}")


def test_reset_right_after_cpu_on_does_not_hang(qemu, two_domains):
    """SYSTEM_RESET while a CPU_ON'd vCPU is still pending: the pending
    vCPU is cancelled, not waited for (this used to hang), and the domain
    restarts, again and again."""
    args = two_domains("onreset", "onreset", "spin")
    with qemu("onreset", args) as q:
        for n in range(3):
            q.expect(r"\(domU1\) guest: cpu_on 0x1 \(0\) then SYSTEM_RESET at once", 60, f"boot {n + 1}")
            q.expect(r"\(dtvisor\) domU1: SYSTEM_RESET: restarting the domain", 30)
        q.expect(r"\(domU2\) guest: tick 1", 60, "domU2 running throughout")
        q.not_seen(r"still waiting for its other vCPUs")


def test_heap_grows_from_ram_left_free(qemu, two_domains):
    """The heap is sized from the DTB (1 MiB and up); once the domains are
    placed, it grows from RAM that placement left free: a request larger
    than the whole heap succeeds and the guests keep running."""
    args = two_domains("heap-grow", "spin", "spin", xen_args="dtvisor.selftest=heap-grow")
    with qemu("heap-grow", args) as q:
        m = q.expect(r"dtvisor.selftest=heap-grow: the heap grew from (\d+) B to (\d+) B for (\d+) B", 120)
        before, after, asked = map(int, m.groups())
        if not (before < (4 << 20) and after >= before + asked):
            q.fail(m.group(0))
        q.expect_all([r"\(domU1\) guest: tick 1", r"\(domU2\) guest: tick 1"], 120)


@pytest.mark.parametrize("case", ["not-an-image", "more-vcpus-than-pcpus", "ram-does-not-fit", "partial-not-a-dtb"])
def test_a_domain_that_cannot_be_built_starts_nothing(qemu, two_domains, work, case):
    """Errors found only once the machine is known (the kernel's Image
    header, pCPUs, free RAM) name the domain's node, and no domain starts,
    not even the one that would fit; the hypervisor stays up."""
    kw, want = {
        "not-an-image": ({"kernel": os.path.join(work, "not-an-image.bin")},
                         r"error: /chosen/domU1/kernel: [^\n]*(Image|magic)"),
        "more-vcpus-than-pcpus": ({"cpus": (4, 1)}, r"error: [^\n]*(pCPU|CPU)[^\n]*"),
        "ram-does-not-fit": ({"mem": (2048, 64)}, r"error: [^\n]*/chosen/domU\d[^\n]*memory[^\n]*"),
        "partial-not-a-dtb": ({"partial": os.path.join(work, "not-an-image.bin")},
                              r"error: /chosen/domU1/dtb[^\n]*"),
    }[case]
    with open(os.path.join(work, "not-an-image.bin"), "wb") as f:
        f.write(b"this is not an arm64 Image, only text\n" * 64)
    args = two_domains(f"unbuildable-{case}", "spin", "spin", **kw)
    with qemu(f"unbuildable-{case}", args) as q:
        q.expect(want, 60, "the error naming the domain")
        q.expect(r"no domain started; dtvisor stays up on its console", 30)
        q.send("x")
        q.expect(r"no domain started \(the errors are above; any key repeats this\)", 10,
                 "the hypervisor's answer on its console")
        q.not_seen(r"\(domU\d\) guest:")
        q.not_seen(r"loaded, vCPU 0 starts")


def test_dtb_with_more_cpus_than_the_machine(qemu, two_domains):
    """A system DTB dumped for 4 CPUs booted on 2: the hypervisor counts
    the redistributors the GIC has (it used to read past the last one and
    take an abort at EL2), says which CPUs go unused, and runs both guests
    on the CPUs that exist; a domain placed on a missing CPU starts
    nothing."""
    args = two_domains("cpus-4-of-2", "spin", "spin", cpus=(1, 1), smp=4)
    with qemu("cpus-4-of-2", args, smp=2) as q:
        q.expect(r"GICv3: 2 redistributors at 0x[0-9a-f]+ but 4 CPUs in the device tree: the CPUs without one"
                 r" are not used", 60, "the warning about the missing redistributors")
        q.expect_all([r"\(domU1\) guest: tick 2", r"\(domU2\) guest: tick 2"], 60)
    # A domain placed on a CPU that is not there: nothing starts.
    args = two_domains("cpus-4-of-2-placed", "spin", "spin", cpus=(2, 1), smp=4)
    with qemu("cpus-4-of-2-placed", args, smp=2) as q:
        q.expect(r"error: pCPU 2 \(/cpus/cpu@2, MPIDR 0x2\): PSCI CPU_ON failed: InvalidParameters", 60)
        q.expect(r"a physical CPU the domains need did not start: no domain started; dtvisor stays up on its"
                 r" console", 10)
        q.not_seen(r"guest: hello")


@pytest.mark.parametrize("gic", [3, 2])
def test_a_stopped_timer_raises_no_interrupt(qemu, two_domains, gic):
    """For the virtual and the physical timer, stopped by disabling it and
    by IMASK (the test guest's `timer-off`): while it fires, the guest's
    GICR_ISPENDR0 (GICD_ISPENDR0 on GICv2) shows it pending; once stopped
    the bit reads clear and its interrupt never arrives, as the
    architecture gives it (a stale interrupt arrived after the stop)."""
    args = two_domains(f"timer-off-v{gic}", "timer-off", "spin", gic=gic)
    with qemu(f"timer-off-v{gic}", args, gic=gic) as q:
        m = q.expect(r"\(domU1\) guest: timer-off summary pass=(\d+) fail=(\d+)", 120)
        fails = re.findall(rb"\(domU1\) guest: FAIL timer-off[^\r\n]*", q.buf)
        if m.group(2) != b"0" or m.group(1) != b"12":
            q.fail(f"timer-off: pass={m.group(1).decode()} fail={m.group(2).decode()}: {fails}")


@pytest.mark.parametrize("cpu", ["cortex-a57", "max"])
def test_nothing_survives_from_one_life_to_the_next(qemu, two_domains, cpu):
    """The test guest's `leak` word: every life checks that FP/SIMD, the
    FP control and status, the thread ids, the PMU, breakpoints,
    watchpoints and MDSCR (and on `-cpu max` SVE, SME, pointer
    authentication keys and MTE) read their reset values, then writes
    patterns into all of them and resets its domain: the lives after a
    reset find none of them."""
    args = two_domains(f"leak-{cpu}", "leak", "spin", cpus=(1, 1))
    extra = ",mte=on" if cpu == "max" else ""
    with qemu(f"leak-{cpu}", args, cpu=cpu, machine_extra=extra, limit=180) as q:
        lives = []
        for _ in range(3):
            m = q.expect(r"\(domU1\) guest: leak life checked pass=(\d+) fail=(\d+) \(([^)]*)\)", 120)
            lives.append((int(m.group(1)), int(m.group(2)), m.group(3).decode()))
        fails = sorted(set(re.findall(rb"\(domU1\) guest: FAIL leak[^\r\n]*", q.buf)))
        if any(f for _, f, _ in lives) or fails:
            q.fail(f"state survived a reset: {lives} {fails}")
        if cpu == "max" and lives[0][2] != "sve=1 sme=1 pauth=1 mte2=1 pmu=1":
            q.fail(f"-cpu max should offer every feature checked: {lives[0][2]}")
        q.expect(r"\(dtvisor\) domU1: SYSTEM_RESET: restarting the domain", 1)
