"""The README's two commands typed into a real terminal, as a person does.

CI and pytest have no terminal: their stdin is a pipe or /dev/null. A
person's is a terminal, and there a QEMU started under `timeout` (which
puts it in a background process group) that touches the terminal is
stopped by SIGTTOU until the timeout kills it. These tests run the
commands in a pseudo-terminal that is their controlling terminal, in its
foreground process group, with no `timeout` around them (a watchdog in the
harness ends the session instead), starting from what a fresh clone has:
no QEMU DTB dumps cached.
"""
import os

from harness import CACHE, ROOT
from test_linux import BOOT, DEFAULT, expect_up, focus

# A terminal ends lines with \r\n, and QEMU's stdio keeps output
# processing on: a hypervisor's \r\n may arrive as \r\r\n.
EOL = r"\r*\n"


def test_scripts_run_in_a_terminal(linux, qemu, work):
    """scripts/run in a terminal: both Linux shells come up, Ctrl-a x3
    moves the input to domU1, a typed command answers, Ctrl-] x quits."""
    env = dict(os.environ, DTVISOR_QEMU_CACHE=os.path.join(work, "qemu-cache"), TERM="xterm")
    with qemu("scripts-run-terminal", [], limit=BOOT + 180, command=[os.path.join(ROOT, "scripts/run")],
              terminal=True, env=env) as q:
        q.expect(r"domU1: vCPUs 0\.\.2 on pCPUs 0 1; guest GIC v3 \(distributor 0x3001000, 32 SPIs", 150,
                 "the boot plan (QEMU's DTB dumped from a terminal)")
        q.expect(r"domU2: vCPUs 0\.\.1 on pCPUs 2; guest GIC v3", 10)
        expect_up(q, DEFAULT)
        focus(q, "domU1")
        q.send("echo typed-in-$((6*7)) on $(hostname)\r")
        q.expect(rf"\(domU1\) (?:[^\r\n]*# )?typed-in-42 on domU1{EOL}", 60, "domU1's answer to a typed command")
        q.not_seen(r"unhandled trap|undefined instruction injected|hits nothing|Kernel panic|Oops|BUG:")
        q.send(b"\x1dx")  # QEMU's escape (Ctrl-]) then x: quit
        status = q.expect_exit(30)
        if status != 0:
            q.fail(f"QEMU exited with status {status} after Ctrl-] x")


def test_scripts_test_quick_in_a_terminal(qemu):
    """The host-test part of scripts/test (--quick) in a terminal, with one
    QEMU DTB dump missing so that fetch-test-dtbs runs QEMU there."""
    dump = os.path.join(CACHE, "dtbs", "qemu", "virt-gicv3-smp1.dtb")
    if os.path.exists(dump):
        os.unlink(dump)  # fetch-test-dtbs makes it again (atomically)
    env = dict(os.environ, TERM="xterm")
    env.pop("CI", None)
    with qemu("scripts-test-quick-terminal", [], limit=1500, command=[os.path.join(ROOT, "scripts/test"), "--quick"],
              terminal=True, env=env) as q:
        q.expect(r"fetch-test-dtbs: dumping QEMU virt \(GICv3, 1 CPUs\)", 120)
        q.expect(r"==== format and lint", 90, "fetch-test-dtbs done (the dump did not stop at the terminal)")
        q.expect(r"==== host tests", 600)
        status = q.expect_exit(1200)
        if status != 0:
            q.fail(f"scripts/test --quick exited with status {status}")
        q.not_seen(r"test result: FAILED")
        if not os.path.exists(dump):
            q.fail(f"{dump} was not made again")
