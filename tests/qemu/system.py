#!/usr/bin/env python3
"""Builds system DTBs for QEMU virt and the QEMU command line that loads
their modules, the way a U-Boot script would: QEMU's own DTB (dumped with
dumpdtb) + a fragment from dts/ with /chosen domain nodes, module sizes
filled in from the files.

  system.py dtb FRAGMENT.dtsi OUT.dtb [--gic 3] [--smp 4] [--mem 2G]
  system.py run FRAGMENT.dtsi [--gic 3] [--smp 4] [--mem 2G] [-- QEMU ARGS]
"""
import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# DTVISOR_QEMU_CACHE: another place for QEMU's DTB dumps (the terminal
# test starts from an empty one, as a fresh clone does).
CACHE = os.environ.get("DTVISOR_QEMU_CACHE") or os.path.join(ROOT, "cache", "qemu")


def sh(cmd, **kw):
    # stdin from /dev/null: a QEMU started under `timeout` from a terminal
    # (a person typing scripts/run) would otherwise touch it from a
    # background process group and be stopped by SIGTTOU until killed.
    p = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()}")
    return p.stdout


def qemu_version():
    """QEMU's version, e.g. "10.0.2": dumps are cached per version (a
    newer QEMU describes its virt machine differently)."""
    out = sh(["qemu-system-aarch64", "--version"])
    m = re.match(r"QEMU emulator version (\S+)", out)
    return m.group(1) if m else "unknown"


def qemu_dtb(gic=3, smp=4, mem="2G", cpu="cortex-a57"):
    """QEMU virt's own DTB for this machine shape (cached). Safe when
    several processes (parallel tests) want it at once: each dumps to its
    own temporary file and renames it into place."""
    cache = os.path.join(CACHE, f"qemu-{qemu_version()}")
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, f"virt-gicv{gic}-smp{smp}-{mem}-{cpu}.dtb")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            sh(["timeout", "60", "qemu-system-aarch64", "-machine",
                f"virt,virtualization=on,gic-version={gic},dumpdtb={tmp}", "-cpu", cpu,
                "-smp", str(smp), "-m", mem, "-nographic", "-nic", "none"])
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path


class Board:
    """A QEMU machine other than virt, booted with its own Debian DTB
    (scripts/fetch-test-dtbs puts it in cache/dtbs/debian): how QEMU is
    started, which of QEMU's serial ports is dtvisor's console, and the
    board UART dts/<board>/linux.dtsi passes through to domU1 (`uart`:
    its QEMU serial port, host node, address and the name domU1's Linux
    gives it)."""

    def __init__(self, machine, dtb, args, console_port, uart):
        self.machine, self.dtb, self.args, self.console_port, self.uart = machine, dtb, args, console_port, uart

    def dtb_path(self):
        return os.path.join(ROOT, "cache", "dtbs", "debian", self.dtb)

    def command(self, image, dtb, loaders, console="stdio", uart="null", extra=()):
        """QEMU's command line: the board, dtvisor as -kernel with `dtb`,
        its console on `console` and the passed-through UART on `uart`
        (QEMU character devices); other serial ports before the console
        are null."""
        ports = ["null"] * (self.console_port + 1)
        ports[self.uart.port] = uart
        ports[self.console_port] = console
        serials = [a for p in ports for a in ("-serial", p)]
        return (["qemu-system-aarch64", "-machine", self.machine] + self.args +
                ["-nographic", "-monitor", "none"] + serials +
                ["-kernel", image, "-dtb", dtb] + loaders + list(extra))


class BoardUart:
    """A board UART given to domU1 (dts/<board>/partial/): QEMU's serial
    port `port`, the host DTB's node, its address (the same in the guest)
    and its interrupt (INTID), and the guest's device."""

    def __init__(self, port, host_node, addr, intid, tty):
        self.port, self.host_node, self.addr, self.intid, self.tty = port, host_node, addr, intid, tty


BOARDS = {
    # Four Cortex-A72 released from a spin-table, 960 MiB visible, a
    # GIC-400; the console is the mini UART, QEMU's second serial port,
    # and domU1 owns the PL011 UART0, the first.
    "raspi4b": Board("raspi4b", "broadcom/bcm2711-rpi-4-b.dtb", [], 1,
                     BoardUart(0, "/soc/serial@7e201000", 0xfe201000, 32 + 121, "ttyAMA1")),
    # Four Cortex-A53 (QEMU gives the model one unless told), GICv3, PSCI
    # over SMC; the console is UART2, QEMU's second serial port, and domU1
    # owns UART1, the first.
    "imx8mp-evk": Board("imx8mp-evk", "freescale/imx8mp-evk.dtb", ["-smp", "4", "-m", "2G"], 1,
                        BoardUart(0, "/soc@0/bus@30800000/serial@30860000", 0x30860000, 32 + 26, "ttymxc1")),
}


def board_base(board):
    """A board's Debian DTB, fetched if missing."""
    path = BOARDS[board].dtb_path()
    if not os.path.exists(path):
        subprocess.run([os.path.join(ROOT, "scripts", "fetch-test-dtbs")], check=True, stdin=subprocess.DEVNULL)
    return path


def read_modules(path, env):
    """(node path, file, address) from a .modules list; $VARS from env; a
    file name with neither (partial/x.dts) is in the list's directory."""
    out = []
    if not os.path.exists(path):
        return out
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        node, f, addr = line.split()
        if not f.startswith(("$", "/")):
            f = os.path.join(os.path.dirname(os.path.abspath(path)), f)
        f = re.sub(r"\$(\w+)", lambda m: env[m.group(1)], f)
        out.append((node, f, int(addr, 0)))
    return out


def system_dtb(fragment, out, env=None, gic=3, smp=4, mem="2G", cpu="cortex-a57", extra_dts="", board=None):
    """Compiles QEMU's DTB (or `board`'s own) + `fragment` into `out`;
    returns QEMU loader args."""
    env = dict(default_env(), **os.environ, **(env or {}))
    base_dtb = board_base(board) if board else qemu_dtb(gic, smp, mem, cpu)
    base = sh(["dtc", "-q", "-I", "dtb", "-O", "dts", base_dtb])
    base = "\n".join(l for l in base.splitlines() if "rng-seed" not in l and "kaslr-seed" not in l)
    frag = os.path.abspath(fragment)
    src = out + ".dts"
    with open(src, "w") as f:
        f.write(base + f'\n/include/ "{frag}"\n' + extra_dts)
    sh(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", out, src])
    args = []
    mods = os.path.splitext(frag)[0] + ".modules"
    for node, f, addr in read_modules(mods, env):
        if f.endswith(".dts"):  # a partial device tree: compiled first
            dtb = os.path.join(os.path.dirname(os.path.abspath(out)), os.path.basename(f)[:-4] + ".partial.dtb")
            sh(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", dtb, f])
            f = dtb
        size = os.path.getsize(f)
        props = sh(["fdtget", "-p", out, node]).split()
        prop = "module-addr" if "module-addr" in props else "reg"
        sh(["fdtput", "-t", "x", out, node, prop] + reg_cells(out, node, addr, size))
        loader = ["-device", f"loader,file={f},addr={hex(addr)},force-raw=on"]
        if loader[1] not in args:  # a module two domains share loads once
            args += loader
    return args


def reg_cells(dtb, node, addr, size):
    """`reg` cells for a module node, in its parent's #address-cells and
    #size-cells (inherited from ancestors when absent, as the parser does)."""
    def cells(name):
        path = os.path.dirname(node)
        while True:
            p = subprocess.run(["fdtget", "-t", "u", dtb, path or "/", name], capture_output=True, text=True)
            if p.returncode == 0:
                return int(p.stdout.split()[0])
            if path in ("", "/"):
                return 2
            path = os.path.dirname(path)

    def split(v, n):
        return [hex(v >> 32), hex(v & 0xffffffff)] if n == 2 else [hex(v)]

    return split(addr, cells("#address-cells")) + split(size, cells("#size-cells"))


XEN_STYLE = """
/ {{
    chosen {{
        xen,xen-bootargs = "console=dtuart dtuart=serial0 bootscrub=0";
        xen,dom0-bootargs = "console=hvc0";
        {domains}
    }};
}};
"""

XEN_DOMAIN = """
        {name} {{
            compatible = "xen,domain";
            #address-cells = <1>;
            #size-cells = <1>;
            memory = <0 262144>;
            cpus = <{cpus}>;
            vpl011;
            module@{k:x} {{
                compatible = "multiboot,kernel", "multiboot,module";
                reg = <0x{k:x} 0x2200000>;
                bootargs = "console=ttyAMA0 domain={name}";
            }};
            module@{r:x} {{
                compatible = "multiboot,ramdisk", "multiboot,module";
                reg = <0x{r:x} 0x200000>;
            }};
        }};
"""


def xen_style_fragment(work, linux, gic=3, cpus=1):
    """A system DTB fragment as Xen dom0less users write it, for QEMU's
    own DTB: /chosen/domU0 and /chosen/domU1 (`cpus` vCPUs, 256 MiB,
    vpl011), each with its own kernel and ramdisk module from `linux`
    (Image, initramfs.cpio.gz), #size-cells = <1> in the domain nodes, and
    xen,xen-bootargs. Writes WORK/xen-style.dtsi and its .modules list
    (the same fragment for either GIC: `gic` is accepted for symmetry with
    system_dtb). Returns the fragment's path."""
    doms, mods = "", ""
    for i, name in enumerate(("domU0", "domU1")):
        k, r = 0x5000_0000 + i * 0x0800_0000, 0x5400_0000 + i * 0x0800_0000
        doms += XEN_DOMAIN.format(name=name, k=k, r=r, cpus=cpus)
        mods += f"/chosen/{name}/module@{k:x} {linux}/Image {k:#x}\n"
        mods += f"/chosen/{name}/module@{r:x} {linux}/initramfs.cpio.gz {r:#x}\n"
    frag = os.path.join(work, "xen-style.dtsi")
    with open(frag, "w") as f:
        f.write(XEN_STYLE.format(domains=doms))
    with open(os.path.join(work, "xen-style.modules"), "w") as f:
        f.write(mods)
    return frag


def default_env():
    return {"DTS": os.path.join(ROOT, "dts/qemu-virt"),
            "GUEST": os.environ.get("DTVISOR_GUEST") or os.path.join(ROOT, "target/guest/dtvisor-test-guest.bin"),
            "LINUX": os.environ.get("DTVISOR_LINUX") or os.path.join(ROOT, "cache/linux")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["dtb", "run"])
    ap.add_argument("fragment")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--gic", type=int, default=3)
    ap.add_argument("--smp", type=int, default=4)
    ap.add_argument("--mem", default="2G")
    ap.add_argument("--cpu", default="cortex-a57")
    ap.add_argument("--board", choices=sorted(BOARDS), help="a board model with its Debian DTB instead of virt")
    ap.add_argument("--image", default=os.path.join(ROOT, "target/aarch64/release/dtvisor.bin"))
    # Everything after "--" goes to QEMU; options may come in any order
    # before it (argparse's REMAINDER would swallow a later --gic).
    argv = sys.argv[1:]
    qemu_args = argv[argv.index("--") + 1:] if "--" in argv else []
    a = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    a.qemu = qemu_args
    name = os.path.basename(a.fragment).replace(".dtsi", ".dtb")
    out = a.out or os.path.join(CACHE, f"{a.board}-{name}" if a.board else name)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    loaders = system_dtb(a.fragment, out, default_env(), a.gic, a.smp, a.mem, a.cpu, board=a.board)
    if a.cmd == "dtb":
        print(out)
        return
    extra = a.qemu
    escape = ["-echr", "0x1d"]  # QEMU's own escape is Ctrl-], so Ctrl-a reaches dtvisor
    if a.board:
        # The UART domU1 owns is a pseudo-terminal: QEMU prints its name
        # ("char device redirected to /dev/pts/N (label serial0)"), and
        # any terminal program can open it (e.g. picocom /dev/pts/N).
        board = BOARDS[a.board]
        print(f"domU1 owns the board UART {board.uart.host_node} ({board.uart.tty} in domU1): QEMU's serial{board.uart.port}, "
              "on the pseudo-terminal QEMU names below", file=sys.stderr)
        cmd = board.command(a.image, out, loaders, console="mon:stdio", uart="pty", extra=escape + extra)
    else:
        cmd = ["qemu-system-aarch64", "-machine", f"virt,virtualization=on,gic-version={a.gic}",
               "-cpu", a.cpu, "-smp", str(a.smp), "-m", a.mem, "-nographic", "-nic", "none",
               "-kernel", a.image, "-dtb", out] + escape + loaders + extra
    print("+ " + " ".join(cmd), file=sys.stderr)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
