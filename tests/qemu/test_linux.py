"""QEMU tests with real Debian arm64 Linux domUs (scripts/build-linux-guest
makes the kernel Image and the busybox initramfs in cache/linux): two
domains reach userspace from the dom0less form, the hyperlaunch form and a
system DTB written the way Xen dom0less users write it; typed commands run
in the focused domain; reboot -f and poweroff -f act on one domain only;
and Linux runs on a CPU with SVE, pointer authentication and MTE."""
import os
import re


import harness
import system
from harness import ROOT
from system import xen_style_fragment

MARKER = r"\({dom}\) dtvisor-linux: up domain={dom} cpus=(\d+) mem=(\d+) kB"
# Reaching userspace: a TCG boot of Debian's kernel takes a few seconds
# per domain; several domains and parallel tests share two host cores.
BOOT = 240


def boot_args(image, linux, work, fragment, gic=3, smp=4, cpu="cortex-a57"):
    dtb = os.path.join(work, os.path.basename(fragment).replace(".dtsi", ".dtb"))
    loaders = system.system_dtb(fragment, dtb, env={"LINUX": linux}, gic=gic, smp=smp, cpu=cpu)
    return ["-kernel", image, "-dtb", dtb] + loaders


def expect_up(q, domains, timeout=BOOT):
    """Waits for each domain's marker; checks its CPU count and that
    MemTotal is most of the configured memory (the kernel keeps some)."""
    got = {}
    pats = [MARKER.format(dom=d) for d in domains]
    q.expect_all(pats, timeout)
    for (dom, (cpus, mib)) in domains.items():
        m = re.search(MARKER.format(dom=dom).encode(), q.buf)
        n, kb = int(m.group(1)), int(m.group(2))
        if n != cpus:
            q.fail(f"{dom}: nproc {n}, configured {cpus}")
        if not (mib * 1024 * 0.75 < kb <= mib * 1024):
            q.fail(f"{dom}: MemTotal {kb} kB for {mib} MiB configured")
        got[dom] = (n, kb)
    return got


FOCUSED = r"console input now goes to (.+?) \(Ctrl-a"


def focus(q, dom):
    """Ctrl-a three times until console input goes to `dom`. A first
    Ctrl-a x3 sent as the guests finished booting went unanswered now and
    then on QEMU 10 (2 of 13 loaded boots on 2026-12-07; none in 64 on
    2026-12-08, with this image and two older ones; cause not found: see
    the issue 26 note): it is sent once more after 20 s, and the log says
    "[test] no answer"."""
    for i in range(8):
        q.send(b"\x01\x01\x01")
        m = q.wait_for(FOCUSED, 20) if i == 0 else None
        if m is False:
            q.log.write(b"\n[test] no answer to Ctrl-a x3 in 20 s: sending it again\n")
            q.send(b"\x01\x01\x01")
        if not m:
            m = q.expect(FOCUSED, 30)
        if m.group(1).decode() == dom:
            return
    q.fail(f"console focus never reached {dom}")


def run(q, dom, cmd, want, timeout=60):
    """Types `cmd` into `dom`'s shell and waits for a line `want` from it."""
    q.send(cmd + "\n")
    return q.expect(rf"\({dom}\) (?:[^\r\n]*# )?{want}\r?\n", timeout, f"{dom}: {want}")


DEFAULT = {"domU1": (2, 256), "domU2": (1, 192)}


def test_two_linux_domus_from_hyperlaunch(image, linux, work, qemu):
    args = boot_args(image, linux, work, os.path.join(ROOT, "dts/qemu-virt/linux-hyperlaunch.dtsi"))
    with qemu("linux-hyperlaunch", args, limit=BOOT + 60) as q:
        q.expect(r"boot plan: 2 domains \(hyperlaunch\)", 60)
        expect_up(q, DEFAULT)


def test_xen_dom0less_system_dtb_boots_unmodified(image, linux, work, qemu):
    args = boot_args(image, linux, work, xen_style_fragment(work, linux))
    with qemu("linux-xen-style", args, limit=BOOT + 60) as q:
        q.expect(r"boot plan: 2 domains \(dom0less\)", 60)
        expect_up(q, {"domU0": (1, 256), "domU1": (1, 256)})


def test_typed_command_runs_in_the_focused_domain(image, linux, work, qemu):
    args = boot_args(image, linux, work, os.path.join(ROOT, "dts/qemu-virt/linux.dtsi"))
    with qemu("linux-shell", args, limit=BOOT + 120) as q:
        expect_up(q, DEFAULT)
        focus(q, "domU2")
        run(q, "domU2", "echo on-$(hostname)-$((6*7))", "on-domU2-42")
        focus(q, "domU1")
        run(q, "domU1", "echo on-$(hostname)-$((6*7)) cpus=$(nproc)", "on-domU1-42 cpus=2")
        # Interrupt-driven input with back-pressure: a burst of several
        # times the vPL011's 64-byte FIFO arrives whole.
        word = "x" * 400
        run(q, "domU1", f"echo {word} | wc -c", "401")
        q.not_seen(r"\(domU2\) (?:[^\r\n]*# )?on-domU1")


def test_reboot_and_poweroff_act_on_one_domain(image, linux, work, qemu):
    args = boot_args(image, linux, work, os.path.join(ROOT, "dts/qemu-virt/linux.dtsi"))
    with qemu("linux-reboot", args, limit=2 * BOOT + 120) as q:
        expect_up(q, DEFAULT)
        focus(q, "domU1")
        q.send("reboot -f\n")
        q.expect(r"domU1: SYSTEM_RESET: restarting the domain", 60)
        # Linux wrote to most of its kernel's pages, each copied once from
        # the module on its first write; the restart maps the module's
        # pristine pages again, and the kernel boots from them once more.
        m = q.expect(r"domU1: its last life copied (\d+) shared pages on write", 60)
        if int(m.group(1)) < 1000:
            q.fail(f"only {m.group(1)} pages copied on write")
        q.expect(MARKER.format(dom="domU1"), BOOT, "domU1 up again")
        focus(q, "domU2")
        run(q, "domU2", "echo still-$((2+3))", "still-5")
        focus(q, "domU1")
        q.send("poweroff -f\n")
        off = q.expect(r"domU1: SYSTEM_OFF: domain powered off", 60).end()
        # 80 bytes typed for the domain that is gone (it used to freeze the
        # console for everyone): the first is dropped, the focus moves on
        # to domU2, whose shell reads the rest as a comment.
        q.send("x" + "#" * 79 + "\n")
        q.expect(r"domU1 is powered off: what was typed for it is dropped", 30)
        q.expect(r"console input now goes to domU2 \(", 10)
        run(q, "domU2", "echo alive-$((3+4))", "alive-7")
        focus(q, "domU2")  # round through the hypervisor, skipping domU1
        run(q, "domU2", "echo again-$((4+4))", "again-8")
        if b"console input now goes to domU1" in q.buf[off:]:
            q.fail("the focus went to the powered-off domU1")


def test_linux_on_a_cpu_with_sve_pauth_and_mte(image, linux, work, qemu):
    frag = os.path.join(ROOT, "dts/qemu-virt/linux.dtsi")
    args = boot_args(image, linux, work, frag, cpu="max")
    with qemu("linux-cpu-max", args, cpu="max", machine_extra=",mte=on", limit=BOOT + 60) as q:
        expect_up(q, DEFAULT)
        q.not_seen(r"trapped|undefined instruction injected|Kernel panic|Oops")
        t = q.text()
        for feature in ("Scalable Vector Extension", "Address authentication", "Memory Tagging Extension"):
            if f"(domU1) " not in t or not re.search(rf"\(domU1\) \[[^]]*\] CPU features: detected: {feature}", t):
                q.fail(f"domU1's kernel did not detect {feature}")
        focus(q, "domU1")
        run(q, "domU1", "echo works-$((5*5))", "works-25")


def test_xen_dom0less_system_dtb_on_a_gicv2_host(image, linux, work, qemu):
    """GIC-400-style host: two Xen-style domUs with 2 vCPUs each reach
    userspace on the vGICv2."""
    args = boot_args(image, linux, work, xen_style_fragment(work, linux, cpus=2), gic=2)
    with qemu("linux-xen-style-gicv2", args, gic=2, limit=BOOT + 60) as q:
        q.expect(r"domU0: vCPUs 0\.\.2 on pCPUs 0 1; guest GIC v2", 60)
        expect_up(q, {"domU0": (2, 256), "domU1": (2, 256)})
        q.not_seen(r"unhandled trap|undefined instruction injected|Kernel panic|Oops|BUG:")


def test_main_job_on_a_gicv2_host(linux, qemu):
    """scripts/run --gic 2: the default Linux system on a GICv2 host, with
    a shell that answers."""
    cmd = [os.path.join(ROOT, "scripts/run"), "--gic", "2"]
    with qemu("scripts-run-gicv2", [], limit=BOOT + 120, command=cmd) as q:
        q.expect(r"machine: 4 CPUs, 2 GiB RAM, GICv2", 120)
        expect_up(q, DEFAULT)
        focus(q, "domU1")
        run(q, "domU1", "echo v2-$((4*4)) cpus=$(nproc)", "v2-16 cpus=2")
