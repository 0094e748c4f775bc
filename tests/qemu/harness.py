"""QEMU console harness for dtvisor's boot tests (pytest: tests/qemu,
run by scripts/test; bench.py uses it too, without pytest).

Each test starts QEMU under `timeout`, reads its console, and waits for
markers with a deadline; on failure it raises `Failure` (an AssertionError,
so pytest reports it as a test failure) with the tail of the log. No
sleeps are used for synchronisation: every wait is for console output.
"""
import fcntl
import itertools
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import termios
import threading
import time

import system

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(ROOT, "cache")
LOGDIR = os.path.join(ROOT, "target", "qemu-logs")
UBOOT_BIN = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"
CONFORMANCE = os.path.join(ROOT, "tests/conformance")
IMAGE_ELF = os.path.join(ROOT, "target", "aarch64", "release", "dtvisor")
IMAGE_BASE = 0x40200000  # where QEMU's -kernel loads the image (an arm64 Image)
_MONITORS = itertools.count()


class Failure(AssertionError):
    """A test failure with its evidence (console tail, command output)."""


def machine(gic=3, virt=True, extra=""):
    m = f"virt,gic-version={gic}"
    if virt:
        m += ",virtualization=on"
    return m + extra


def _take(stream, data):
    """Output read from a Qemu run or a SerialPort: kept and logged. None
    when the other side closed (no data), else True."""
    if not data:
        return None
    stream.buf += data
    stream.log.write(data)
    stream.log.flush()
    return True


class Qemu:
    """One QEMU run with its console on a pipe, logged to log_dir/NAME.log
    (the tests' `qemu` fixture gives each test a log directory of its own)."""

    def __init__(self, name, args, limit=120, smp=4, mem="2G", gic=3, virt=True, cpu="cortex-a57", icount=False,
                 command=None, log_dir=LOGDIR, machine_extra="", terminal=False, env=None, stderr=None):
        os.makedirs(log_dir, exist_ok=True)
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.buf = b""
        self.pos = 0
        # A monitor on a socket (a short path: sockets' are limited to 108
        # bytes), for the CPUs' registers when a wait times out.
        self.monitor = os.path.join(tempfile.gettempdir(), f"dtv-{os.getpid()}-{next(_MONITORS)}.mon")
        cmd = ["timeout", "--foreground", "-k", "5", str(limit), "qemu-system-aarch64",
               "-machine", machine(gic, virt, machine_extra), "-cpu", cpu, "-smp", str(smp), "-m", mem,
               "-nographic", "-nic", "none", "-monitor", f"unix:{self.monitor},server,nowait",
               "-serial", "stdio"]
        if icount:
            cmd += ["-icount", "shift=0,align=off,sleep=off"]
        self.cmd = cmd + list(args)
        if command is not None:  # a script that starts QEMU itself
            self.cmd = ["timeout", "--foreground", "-k", "5", str(limit)] + list(command)
            self.monitor = None
        self.watchdog = None
        self.master = None
        if terminal:
            self._start_in_terminal(list(command), limit, env)
        else:
            # stderr: a file for QEMU's own messages where they must not
            # mix with the console (the benchmark counts console bytes).
            err = open(stderr, "wb") if stderr else subprocess.STDOUT
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, start_new_session=True, env=env)
            if stderr:
                err.close()
            self.fd = self.proc.stdout.fileno()
        self.log = open(self.log_path, "wb")
        self.log.write((" ".join(self.cmd) + "\n").encode())

    def _start_in_terminal(self, command, limit, env):
        """Runs `command` as a person at a terminal does: in a new session
        whose controlling terminal is a pseudo-terminal, in its foreground
        process group, with no `timeout` around it (that would move it to a
        background group). A watchdog ends the session after `limit` s."""
        master, slave = os.openpty()
        # A terminal of the usual size, so QEMU and the shells see one.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))

        def controlling_terminal():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.cmd = command
        self.proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                                     preexec_fn=controlling_terminal, env=env)
        os.close(slave)
        self.fd = master
        self.master = master
        self.watchdog = threading.Timer(limit, self._kill)
        self.watchdog.daemon = True
        self.watchdog.start()

    def _kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _read(self, deadline):
        fd = self.fd
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([fd], [], [], min(left, 1.0))
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:  # a pseudo-terminal whose other side closed
                data = b""
            return _take(self, data)
        return True

    def text(self):
        return self.buf.decode("utf-8", "replace")

    def expect(self, pattern, timeout=60, what=None):
        """Waits until `pattern` (regex) appears after the previous match."""
        __tracebackhide__ = True
        m = self.wait_for(pattern, timeout)
        if m is False:
            self.fail(f"timed out after {timeout}s waiting for {what or pattern!r}")
        if m is None:
            self.fail(f"QEMU exited (status {self.proc.poll()}) before {what or pattern!r}")
        return m

    def wait_for(self, pattern, timeout):
        """The match of `pattern` after the previous one, False if it has
        not appeared in `timeout` s, None if the output ended first (no
        failure: for a caller that tries again)."""
        rx = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.buf, self.pos)
            if m:
                self.pos = m.end()
                return m
            got = self._read(deadline)
            if not got:
                return got

    def expect_all(self, patterns, timeout=60):
        """Waits until every pattern has appeared after the previous match,
        in any order (output of different CPUs interleaves)."""
        __tracebackhide__ = True
        start = self.pos
        end = start
        for p in patterns:
            self.pos = start
            m = self.expect(p, timeout)
            end = max(end, m.end())
        self.pos = end

    def expect_exit(self, timeout=60):
        __tracebackhide__ = True
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None or self._read(deadline):
            if time.monotonic() > deadline:
                self.fail("QEMU did not exit")
            self._read(deadline)
            if self.proc.poll() is not None:
                while self._read(time.monotonic() + 0.2):
                    pass
                break
        return self.proc.returncode

    def not_seen(self, pattern):
        __tracebackhide__ = True
        if re.search(pattern.encode(), self.buf):
            self.fail(f"unexpected console output matching {pattern!r}")

    def send(self, data):
        data = data if isinstance(data, bytes) else data.encode()
        if self.watchdog:
            os.write(self.fd, data)
            return
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def fail(self, msg):
        __tracebackhide__ = True
        cpus = self.cpu_state()
        self.close()
        tail = "\n".join(self.text().splitlines()[-40:])
        raise Failure(f"{self.name}: {msg}\n--- console tail ({self.log_path}) ---\n{tail}\n---{cpus}")

    def cpu_state(self):
        """Where each CPU was when a test failed (QEMU stopped, then asked
        through its monitor): PC and exception level, hypervisor PCs
        mapped to functions. Also written to the log. "" if QEMU is gone."""
        if not self.monitor or self.proc.poll() is not None:
            return ""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(self.monitor)
                s.sendall(b"stop\ninfo registers -a\n")
                out, deadline = b"", time.monotonic() + 5
                s.settimeout(0.5)
                while time.monotonic() < deadline:
                    try:
                        data = s.recv(65536)
                    except socket.timeout:
                        if b"PSTATE" in out:
                            break
                        continue
                    if not data:
                        break
                    out += data
        except OSError as e:
            return f"\n(no CPU state: {e})"
        text = out.decode("utf-8", "replace")
        lines = []
        pcs = re.findall(r"PC=([0-9a-f]{16})", text)
        els = re.findall(r"PSTATE=[0-9a-f]+ [-NZCV]{4}(?: \S+)*? (EL\d[ht]?)", text)
        for i, pc in enumerate(pcs):
            el = els[i] if i < len(els) else "?"
            lines.append(f"CPU {i}: PC={pc} {el}{self._symbol(int(pc, 16)) if el.startswith('EL2') else ''}")
        dump = "\n--- CPUs when it failed ---\n" + "\n".join(lines) + "\n"
        self.log.write(dump.encode() + b"--- monitor: info registers -a ---\n" + out)
        self.log.flush()
        return dump

    def _symbol(self, pc):
        """' in FUNCTION (FILE:LINE)' for a hypervisor address, if the
        image's ELF (the -kernel X.bin's X, else the default build's) and
        addr2line are at hand."""
        tool = shutil.which("addr2line")
        elf = IMAGE_ELF
        if "-kernel" in self.cmd[:-1]:
            kernel = self.cmd[self.cmd.index("-kernel") + 1]
            if kernel.endswith(".bin") and os.path.exists(kernel[:-4]):
                elf = kernel[:-4]
        if not tool or not os.path.exists(elf) or not IMAGE_BASE <= pc < IMAGE_BASE + (16 << 20):
            return ""
        try:
            r = subprocess.run([tool, "-f", "-C", "-i", "-e", elf, hex(pc - IMAGE_BASE)],
                               capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        lines = r.stdout.splitlines()
        return f" in {' <- '.join(lines[0::2])} ({lines[1]})" if len(lines) >= 2 else ""

    def close(self):
        if self.monitor and os.path.exists(self.monitor):
            os.unlink(self.monitor)
        if self.watchdog:
            self.watchdog.cancel()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.watchdog and self.master is not None:
            os.close(self.master)
            self.master = None
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialPort:
    """One of QEMU's serial ports on a Unix socket this side listens on:
    QEMU connects to it as it starts (`chardev` is the -serial argument).
    What the machine writes there is logged to log_dir/NAME.log and can be
    waited for; `send` types into it. A failed wait reports this port's
    tail and then fails `console` (the Qemu run, with its console tail)."""

    def __init__(self, name, log_dir=LOGDIR):
        os.makedirs(log_dir, exist_ok=True)
        self.name = name
        self.path = os.path.join(tempfile.gettempdir(), f"dtv-{os.getpid()}-{next(_MONITORS)}.uart")
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.chardev = f"unix:{self.path}"
        self.conn = None
        self.console = None
        self.buf, self.pos = b"", 0
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.log = open(self.log_path, "wb")

    def _read(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([self.conn or self.listener], [], [], min(left, 1.0))
        if not r:
            return True
        if self.conn is None:
            self.conn, _ = self.listener.accept()
            return True
        return _take(self, self.conn.recv(65536))

    wait_for = Qemu.wait_for

    def expect(self, pattern, timeout=60, what=None):
        """Waits until `pattern` (regex) appears on this port after the
        previous match."""
        __tracebackhide__ = True
        m = self.wait_for(pattern, timeout)
        if not m:
            why = f"timed out after {timeout}s" if m is False else "the port closed"
            self.fail(f"{why} waiting for {what or pattern!r} on serial port {self.name}")
        return m

    def send(self, data):
        __tracebackhide__ = True
        deadline = time.monotonic() + 30
        while self.conn is None:
            if not self._read(deadline):
                self.fail(f"QEMU never connected to serial port {self.name}")
        self.conn.sendall(data if isinstance(data, bytes) else data.encode())

    def fail(self, msg):
        __tracebackhide__ = True
        tail = "\n".join(self.buf.decode("utf-8", "replace").splitlines()[-20:])
        msg = f"{msg}\n--- serial port {self.name} tail ({self.log_path}) ---\n{tail}"
        if self.console is not None:
            self.console.fail(msg)
        self.close()
        raise Failure(msg)

    def close(self):
        for s in (self.conn, self.listener):
            if s is not None:
                s.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.log.close()


def run(cmd, **kw):
    """Runs a helper command, failing the test with its output."""
    __tracebackhide__ = True
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, **kw)
    if p.returncode != 0:
        raise Failure(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout


def conformance_dtb(case, work):
    """QEMU's DTB + the nodes of conformance case `case` (tests/conformance),
    so the machine part is real; written under `work`. Returns its path."""
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(CONFORMANCE, case, "input.dts")) as f:
        src = f.read()
    src = src.replace("/dts-v1/;", "").replace('/include/ "../', f'/include/ "{CONFORMANCE}/')
    frag = os.path.join(work, f"{case}.dtsi")
    with open(frag, "w") as f:
        f.write(src)
    dtb = os.path.join(work, f"{case}.dtb")
    system.system_dtb(frag, dtb)
    return dtb
