"""What no guest can do to the console every domain shares: stop the
hypervisor from reading it (a domain that powers off with the focus, or
never reads its input), or write control sequences to the terminal."""
import re

from test_guests import two_domains  # noqa: F401 (a fixture)

CTRL_A3 = b"\x01\x01\x01"


def domain_cpus(q):
    for d in ("domU1", "domU2"):
        q.expect(rf"\(dtvisor\) {d}: vCPUs 0\.\.\d+ on pCPUs", 60)


def test_a_domain_powered_off_with_the_focus_loses_it(qemu, two_domains):  # noqa: F811
    """domU1 has the focus and powers off (SYSTEM_OFF); 80 bytes typed
    next: the first is dropped with a line saying why, the focus moves on to
    domU2, which gets the rest, and Ctrl-a x3 still works and skips domU1."""
    args = two_domains("focus-off", "echo", "echo")
    with qemu("focus-off", args) as q:
        domain_cpus(q)
        q.expect_all([r"\(domU1\) guest: echo ready", r"\(domU2\) guest: echo ready"], 120)
        q.send(CTRL_A3)
        q.expect(r"console input now goes to domU1 \(", 30)
        q.send(b"q")  # the test guest powers off after echoing q
        q.expect(r"\(domU1\) guest: rx q", 30)
        q.expect(r"\(dtvisor\) domU1: SYSTEM_OFF: domain powered off", 30)
        q.send(b"x" * 80)
        q.expect(r"\(dtvisor\) domU1 is powered off: what was typed for it is dropped", 30)
        q.expect(r"console input now goes to domU2 \(", 10)
        for _ in range(79):
            q.expect(r"\(domU2\) guest: rx x", 30)
        q.send(CTRL_A3)
        q.expect(r"console input now goes to the hypervisor", 30)
        q.send(CTRL_A3)
        q.expect(r"console input now goes to domU2 \(", 30, "the focus skipping the powered-off domU1")
        q.send(b"z")
        q.expect(r"\(domU2\) guest: rx z", 30)
        q.not_seen(r"\(domU1\) guest: rx x")


def test_a_domain_that_reads_no_input_cannot_hold_the_console(qemu, two_domains):  # noqa: F811
    """domU1 never reads its vpl011 (it spins). 1100 bytes typed for it:
    1024 fill its receive FIFO, 76 are dropped, reported once when it starts and
    once, with the count, when the burst ends; Ctrl-a x3 is still seen."""
    args = two_domains("no-reader", "spin", "echo")
    with qemu("no-reader", args) as q:
        domain_cpus(q)
        q.expect_all([r"\(domU1\) guest: spinning", r"\(domU2\) guest: echo ready"], 120)
        q.send(CTRL_A3)
        q.expect(r"console input now goes to domU1 \(", 30)
        q.send(b"y" * 1100)
        q.expect(r"\(dtvisor\) domU1: takes no console input \(its receive FIFO is full", 30)
        q.send(CTRL_A3)
        q.expect(r"\(dtvisor\) domU1: 76 bytes of console input dropped", 30)
        q.expect(r"console input now goes to domU2 \(", 30)
        q.send(b"k")
        q.expect(r"\(domU2\) guest: rx k", 30)
        n = len(re.findall(rb"takes no console input", q.buf))
        if n != 1:
            q.fail(f"the burst was reported {n} times (once expected)")


def test_guest_output_cannot_send_control_sequences(qemu, two_domains):  # noqa: F811
    """A guest prints ESC sequences, a carriage return and a fake
    `(dtvisor)` line: the terminal gets them as visible text (the vpl011
    drops the carriage return), and no line starts with `(dtvisor)` that
    the hypervisor did not print."""
    args = two_domains("escape", "escape", "spin")
    with qemu("escape", args) as q:
        q.expect(r"\(domU1\) guest: escape done", 120)
        q.pos = 0
        q.expect(re.escape(r"(domU1) guest: escape ^[[2J^[[H(dtvisor) fake^[]0;owned^G \u{9b}31m end"), 1,
                 "the escape line, every control character made visible")
        for bad in (b"\x1b", b"\x07", b"\xc2\x9b", b"\r(dtvisor) fake"):
            if bad in q.buf:
                q.fail(f"the terminal received {bad!r} from a guest")
        for line in q.text().splitlines():
            if "fake" in line and not line.startswith("(domU1) "):
                q.fail(f"a guest's text started a line: {line!r}")
