#!/usr/bin/env python3
"""dtvisor against Xen 4.17 on identical work, under QEMU -icount (virtual
time = instructions executed, so every figure is deterministic), printed by
scripts/bench and written to target/bench/ (bench.md, bench.json,
boot-timeline.png), with the containment figures of
tests/qemu/test_containment.py (containment.json; `bench.py containment`
runs only those). Figures, not assertions.

Virtual time is read outside the guests and hypervisors: a TCG plugin
(`uart_clock`) records QEMU's virtual clock at each console UART store and
at the first guest instruction; the hypervisors' own console timestamps
(`console_timestamps=boot`, on both) are reported beside it."""
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import LOGDIR, ROOT, Qemu  # noqa: E402
import system  # noqa: E402
import xen  # noqa: E402

IMAGE = os.environ.get("DTVISOR_IMAGE") or os.path.join(ROOT, "target/aarch64/release/dtvisor.bin")
LINUX = os.environ.get("DTVISOR_LINUX") or os.path.join(ROOT, "cache/linux")
GUEST = os.environ.get("DTVISOR_GUEST") or os.path.join(ROOT, "target/guest/dtvisor-test-guest.bin")
WORK = os.path.join(ROOT, "cache/qemu/bench")
# A TCG boot of two Debian kernels with the plugin below takes ~15 s of
# host time; the limit only bounds a hung run.
LIMIT = 300


# ---- virtual time at console output, from a QEMU TCG plugin -------------
#
# Why a plugin: the guests cannot tell us. Linux's printk timestamps are
# sched_clock, which starts at 0 when time_init registers the arch timer,
# not at QEMU start (the bare kernel's first ~101 ms show as [0.000000]),
# and under dtvisor not at the domain's start either (CNTVOFF makes the
# virtual counter start there, but sched_clock subtracts its own epoch);
# and the marker is printed by /init, after the last printk. QEMU 7.2 has
# no monitor command that reads the virtual clock, and one would come too
# late anyway: once the guests idle, sleep=off warps virtual time forward
# by an amount that depends on when the host gets round to asking.
#
# So this plugin runs inside QEMU, on the vCPU thread, at each guest store
# to the data register of QEMU virt's PL011 (UARTDR at 0x09000000:
# dtvisor's console, and the bare kernel's ttyAMA0). It appends one line
# per store: QEMU_CLOCK_VIRTUAL in ns (what CNTPCT counts, at 62.5 MHz),
# the raw instruction count of all vCPUs together, the storing vCPU, and
# per vCPU its instructions so far and how many of them were at the
# hypervisor image's addresses (dtvisor's own work: traps, interrupts,
# loading). Record k belongs to byte k of QEMU's serial output, so a
# console line's time is the record of its last byte. Reading the clock
# there is what a device model does during an MMIO access (icount ends a
# translation block at an I/O instruction, so the count is exact); the two
# functions are QEMU internals that the qemu-system binary exports (Debian
# builds it with modules). The plugin changes neither the guests'
# instruction streams nor their timing: dtvisor's own figures and the
# kernels' printk timestamps are the same with and without it. Per-vCPU
# counts add up whole translation blocks as they start, so they overcount
# blocks left early (~0.02%); the all-vCPU count is exact.
#
# Under icount, shift=0, sleep=off: virtual ns = instructions executed by
# all CPUs (one at a time, round-robin) + time warped over while every CPU
# is halted in WFI waiting for a timer. The figures say if the two differ.
UART_CLOCK_C = r"""
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The part of QEMU's plugin API this uses (unchanged from version 1 of
 * QEMU 7.2 to version 4 of QEMU 10, which loads version 2 and later). */
#define EXPORT __attribute__((visibility("default")))
typedef uint64_t qemu_plugin_id_t;
typedef uint32_t qemu_plugin_meminfo_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
struct qemu_plugin_hwaddr;
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t,
                                           void (*)(qemu_plugin_id_t, struct qemu_plugin_tb *));
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *, void (*)(unsigned, void *),
                                          int flags, void *);
void qemu_plugin_register_vcpu_mem_cb(struct qemu_plugin_insn *,
                                      void (*)(unsigned, qemu_plugin_meminfo_t, uint64_t, void *),
                                      int flags, int rw, void *);
struct qemu_plugin_hwaddr *qemu_plugin_get_hwaddr(qemu_plugin_meminfo_t, uint64_t);
bool qemu_plugin_hwaddr_is_io(const struct qemu_plugin_hwaddr *);
uint64_t qemu_plugin_hwaddr_phys_addr(const struct qemu_plugin_hwaddr *);
#define CB_NO_REGS 0
#define MEM_W 2
/* QEMU internals, exported by the qemu-system binary. */
int64_t qemu_clock_get_ns(int type); /* QEMU_CLOCK_VIRTUAL = 1 */
int64_t icount_get_raw(void);

EXPORT int qemu_plugin_version = 2;
static FILE *out;
static uint64_t uart = 0x09000000;
static uint64_t hyp_lo, hyp_hi; /* [lo, hi): the hypervisor image, if any */
static unsigned ncpu;
static uint64_t insns[64], hyp[64];
/* entry=ADDR: the first block at ADDR after any hypervisor block (the
 * first guest instruction, MMU off: address = guest-physical), recorded
 * once to entry_out as "insns insns vcpu" (instructions of all vCPUs
 * before it). */
static FILE *entry_out;
static uint64_t entry_pc = ~0ull;
static bool armed, entered;

/* A UART data register store: one record. */
static void on_store(unsigned vcpu, qemu_plugin_meminfo_t info, uint64_t va, void *u)
{
    struct qemu_plugin_hwaddr *hw = qemu_plugin_get_hwaddr(info, va);
    if (!hw || !qemu_plugin_hwaddr_is_io(hw) || qemu_plugin_hwaddr_phys_addr(hw) != uart)
        return;
    fprintf(out, "%lld %lld %u", (long long)qemu_clock_get_ns(1), (long long)icount_get_raw(), vcpu);
    for (unsigned i = 0; i < ncpu; i++)
        fprintf(out, " %llu %llu", (unsigned long long)insns[i], (unsigned long long)hyp[i]);
    fputc('\n', out);
    fflush(out);
}

struct block {
    uint64_t n;
    uint64_t pc;
    bool hyp;
};

static void on_tb(unsigned vcpu, void *b)
{
    const struct block *tb = b;
    if (tb->hyp)
        armed = true;
    else if (armed && !entered && tb->pc == entry_pc && entry_out) {
        /* QEMU's clock cannot be read here (only at an I/O access): the
         * plugin's own count of all vCPUs' instructions so far stands in
         * (under icount, shift=0, the same as virtual ns until a CPU
         * idles; the UART records say when they differ). */
        uint64_t all = 0;
        for (unsigned i = 0; i < ncpu; i++)
            all += insns[i];
        entered = true;
        fprintf(entry_out, "%llu %llu %u\n", (unsigned long long)all, (unsigned long long)all, vcpu);
        fflush(entry_out);
    }
    insns[vcpu & 63] += tb->n;
    if (tb->hyp)
        hyp[vcpu & 63] += tb->n;
}

static void on_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    uint64_t pc = qemu_plugin_tb_vaddr(tb);
    /* One per translation, kept: QEMU keeps calling it with this pointer. */
    struct block *b = malloc(sizeof *b);
    b->n = n;
    b->pc = pc;
    b->hyp = pc >= hyp_lo && pc < hyp_hi;
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb, CB_NO_REGS, b);
    for (size_t i = 0; i < n; i++)
        qemu_plugin_register_vcpu_mem_cb(qemu_plugin_tb_get_insn(tb, i), on_store, CB_NO_REGS,
                                         MEM_W, NULL);
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const void *info, int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "out=", 4))
            path = argv[i] + 4;
        else if (!strncmp(argv[i], "cpus=", 5))
            ncpu = (unsigned)atoi(argv[i] + 5);
        else if (!strncmp(argv[i], "entry=", 6))
            entry_pc = strtoull(argv[i] + 6, NULL, 0);
        else if (!strncmp(argv[i], "entry_out=", 10))
            entry_out = fopen(argv[i] + 10, "w");
        else if (!strncmp(argv[i], "uart=", 5))
            uart = strtoull(argv[i] + 5, NULL, 0);
        else if (!strncmp(argv[i], "hyp=", 4)) {
            char *end;
            hyp_lo = strtoull(argv[i] + 4, &end, 0);
            hyp_hi = *end == ':' ? strtoull(end + 1, NULL, 0) : 0;
        }
    }
    if (ncpu > 64)
        ncpu = 64;
    if (!path || !(out = fopen(path, "w")))
        return 1;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_trans);
    return 0;
}
"""


def uart_clock():
    """Builds the plugin (once per source version) into cache/qemu/bench."""
    os.makedirs(WORK, exist_ok=True)
    tag = hashlib.sha256(UART_CLOCK_C.encode()).hexdigest()[:12]
    so = os.path.join(WORK, f"uart-clock-{tag}.so")
    if not os.path.exists(so):
        src = os.path.join(WORK, "uart-clock.c")
        with open(src, "w") as f:
            f.write(UART_CLOCK_C)
        tmp = f"{so}.{os.getpid()}.tmp"
        p = subprocess.run(["cc", "-O2", "-Wall", "-shared", "-fPIC", "-fvisibility=hidden", "-o", tmp, src],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"bench: building the QEMU plugin {src} failed:\n{p.stderr}")
        os.replace(tmp, so)
    return so


class Point:
    """The record of one console line's last byte: virtual ns, instructions
    of all vCPUs, the vCPU that stored it, and per vCPU the instructions
    run so far and how many of them were in the hypervisor's image."""

    def __init__(self, fields):
        self.ns, self.insns, self.vcpu = fields[0], fields[1], fields[2]
        self.per_cpu = fields[3::2]
        self.hyp = fields[4::2]


def clocked(name, args, lines, smp, hyp=None, entry=None, command=None, uart=None, **kw):
    """Runs QEMU with the plugin until every pattern in `lines` (label ->
    regex for one whole console line) has been printed; returns (label ->
    Point for the first such line's last byte, the Point of the first
    guest instruction at `entry` or None, the console text). `hyp`:
    (start, end) of the hypervisor's image, whose instructions are counted
    apart (and whose first block arms `entry`). `command`: a whole QEMU
    command line (a board) instead of virt with `args`, its console's
    data register at `uart`; QEMU's own messages go to a file beside the
    log, so the console's bytes stay those the plugin saw stored."""
    rec = os.path.join(LOGDIR, f"{name}.uart-clock")
    plugin = f"{uart_clock()},out={rec},cpus={smp}" + (f",hyp={hyp[0]:#x}:{hyp[1]:#x}" if hyp else "")
    if entry is not None:
        plugin += f",entry={entry:#x},entry_out={rec}.entry"
    if uart is not None:
        plugin += f",uart={uart:#x}"
    if command is not None:
        kw.update(command=list(command) + ["-icount", "shift=0,align=off,sleep=off", "-plugin", plugin],
                  stderr=os.path.join(LOGDIR, f"{name}.stderr"))
    with Qemu(name, list(args) + ["-plugin", plugin], smp=smp, icount=True, limit=LIMIT, **kw) as q:
        # One byte more than the line: QEMU writes a byte to the console
        # before the plugin records it, but records it before the guest can
        # store the next one.
        q.expect_all([p + rb"[\s\S]" for p in lines.values()], LIMIT - 20)
        ends = {}
        for label, p in lines.items():
            m = re.search(p, q.buf)
            ends[label] = m.end() - 1
            if b"qemu-system" in q.buf[:m.end()]:
                q.fail("QEMU printed to the console: its bytes and the plugin's records no longer line up")
        text = q.text()
    recs = [list(map(int, line.split())) for line in open(rec) if line.endswith("\n")]
    missing = [label for label, k in ends.items() if k >= len(recs)]
    if missing:
        raise SystemExit(f"bench: {rec}: no record for {missing} ({len(recs)} records)")
    first = None
    if entry is not None:
        e = [list(map(int, line.split())) for line in open(rec + ".entry") if line.endswith("\n")]
        if not e:
            raise SystemExit(f"bench: {rec}.entry: no guest instruction at {entry:#x} was recorded")
        first = Point(e[0] + [0] * (2 * smp))
    return {label: Point(recs[k]) for label, k in ends.items()}, first, text


def ms(ns):
    return f"{ns / 1e6:.3f} ms"


DOMAINS = ("domU0", "domU1")
# Both hypervisors put a domU's kernel at guest 0x40000000 (Xen's guest
# map): the first block there, after hypervisor code ran, is the first
# guest instruction.
GUEST_ENTRY = 0x4000_0000
TS = r"\[\s*(\d+\.\d+)\] "
# console_timestamps=boot on both; bootscrub as each run says.
ARGS = "console=dtuart bootscrub={scrub} console_timestamps=boot"


def image_range(image, ram=0x4000_0000):
    """Where QEMU's -kernel puts an arm64 Image in RAM starting at `ram`
    (1 GiB on virt, 0 on raspi4b): text_offset from 2 MiB when it is below
    QEMU's 4 KiB boot stub."""
    with open(image, "rb") as f:
        hdr = f.read(64)
    off, size = int.from_bytes(hdr[8:16], "little"), int.from_bytes(hdr[16:24], "little")
    start = ram + off + (2 << 20 if off < 4096 else 0)
    return start, start + size


class Hyp:
    """One hypervisor under test: how its console shows a domU's line."""

    def __init__(self, name, image, smp):
        self.name, self.image, self.smp = name, image, smp

    def guest_line(self, dom, body):
        """Regex for a console line of domU `dom` (0 or 1) whose text
        matches `body`; group 1 is the hypervisor's timestamp."""
        if self.name == "dtvisor":
            return rf"\(domU{dom}\) {TS}{body}[^\n]*\n".encode()
        # Xen without dom0 prints the domUs' vpl011 lines itself: DOM<id>.
        return rf"\(XEN\) {TS}DOM{dom + 1}: {body}[^\n]*\n".encode()

    def dtb(self, scrub, fragment=None):
        """The Xen-style system DTB (or `fragment`'s) for this machine, with
        the benchmark command line; (path, QEMU loader args)."""
        work = os.path.join(WORK, self.name)
        os.makedirs(work, exist_ok=True)
        args = ARGS.format(scrub=1 if scrub else 0)
        if fragment is None:
            return xen.system(work, LINUX, args, smp=self.smp)
        out = os.path.join(work, os.path.basename(fragment).replace(".dtsi", f"-smp{self.smp}.dtb"))
        return out, system.system_dtb(fragment, out, smp=self.smp, extra_dts=xen.bootargs_dts(args))

    def run(self, label, scrub, lines, fragment=None):
        dtb, loaders = self.dtb(scrub, fragment)
        return clocked(f"bench-{self.name}-{label}", ["-kernel", self.image, "-dtb", dtb] + loaders, lines,
                       self.smp, hyp=image_range(self.image), entry=GUEST_ENTRY)


def stamp(text, rx):
    """The hypervisor's own timestamp (seconds) on the first line `rx` matches."""
    m = re.search(rx.decode(), text)
    return float(m.group(1)) if m else None


def linux_run(h, scrub, label):
    """The Xen-style system on `h`: boot figure and both markers."""
    lines = {f"{d} up": h.guest_line(i, r"dtvisor-linux: up domain=" + d) for i, d in enumerate(DOMAINS)}
    pts, first, text = h.run(label, scrub, lines)
    out = {"first_guest_ns": first.ns, "first_guest_insns": first.insns}
    for i, d in enumerate(DOMAINS):
        out[f"{d}_up_ns"] = pts[f"{d} up"].ns
        out[f"{d}_up_stamp_s"] = stamp(text, lines[f"{d} up"])
    out["both_up_ns"] = max(out[f"{d}_up_ns"] for d in DOMAINS)
    out["warp_ns"] = max(p.ns - p.insns for p in pts.values())
    return out, text


def boot_run(h, scrub, label):
    """The Xen-style system on `h` until its first guest writes a line:
    the boot figure only."""
    lines = {"booting": (rf"\(domU[01]\) {TS}\[\s*0\.000000\] Booting Linux[^\n]*\n" if h.name == "dtvisor"
                         else rf"\(XEN\) {TS}DOM[12]: \[\s*0\.000000\] Booting Linux[^\n]*\n").encode()}
    pts, first, text = h.run(label, scrub, lines)
    return {"first_guest_ns": first.ns, "first_guest_insns": first.insns}, text


def bare(run):
    """The same kernel and initramfs with no hypervisor. dtb-randomness=off
    and a virtual-clock RTC keep the boot deterministic (QEMU's DTB would
    carry fresh rng-seed and kaslr-seed values each run, which turn on
    KASLR, and the PL031 would read the host's time); system.py drops the
    same seeds from the DTB the hypervisors get, so no kernel has KASLR.
    GICv3 like the domUs' virtual GIC (plain -machine virt is GICv2)."""
    args = ["-rtc", "base=2000-01-01T00:00:00,clock=vm",
            "-kernel", os.path.join(LINUX, "Image"), "-initrd", os.path.join(LINUX, "initramfs.cpio.gz"),
            "-append", "console=ttyAMA0 domain=bare"]
    lines = {"up": rb"dtvisor-linux: up domain=bare [^\n]*\n"}
    pts, _, _ = clocked(f"bench-linux-bare-{run}", args, lines, 1, mem="256M", virt=False,
                        machine_extra=",dtb-randomness=off")
    return pts["up"].ns


# ---- micro-benchmarks: the test guest's `bench` word ---------------------

MICRO = ("hvc", "mmio-uart", "mmio-gicd", "eoi", "sgi", "sgi-wfi", "timer")
MICRO_TEXT = {
    "hvc": "HVC round trip (PSCI_VERSION)",
    "mmio-uart": "emulated device register read (vPL011 UARTFR)",
    "mmio-gicd": "vGIC distributor register read (GICD_TYPER)",
    "eoi": "EOI of a virtual interrupt",
    "sgi": "SGI to another vCPU, send to handler (receiver spinning)",
    "sgi-wfi": "SGI to another vCPU, send to handler (receiver in WFI)",
    "timer": "virtual timer deadline to handler",
}
GUEST_FRAGMENT = """
/ {{
    chosen {{
        bench {{
            compatible = "xen,domain";
            #address-cells = <1>;
            #size-cells = <1>;
            memory = <0 65536>;
            cpus = <2>;
            vpl011;
            module@{k:x} {{
                compatible = "multiboot,kernel", "multiboot,module";
                reg = <0x{k:x} 0x200000>;
                bootargs = "bench";
            }};
        }};
    }};
}};
"""


def micro(h):
    """The test guest with `bench`, one domain of 2 vCPUs: figure -> ns."""
    work = os.path.join(WORK, h.name)
    os.makedirs(work, exist_ok=True)
    frag = os.path.join(work, "micro.dtsi")
    k = 0x5000_0000
    with open(frag, "w") as f:
        f.write(GUEST_FRAGMENT.format(k=k))
    with open(os.path.join(work, "micro.modules"), "w") as f:
        f.write(f"/chosen/bench/module@{k:x} {GUEST} {k:#x}\n")
    line = (rb"\(bench\) " + TS.encode() if h.name == "dtvisor" else rb"\(XEN\) " + TS.encode() + rb"DOM1: ")
    lines = {"done": line + rb"guest: bench done[^\n]*\n"}
    _, _, text = h.run("micro", False, lines, fragment=frag)
    out = {}
    for name in MICRO:
        m = re.search(rf"guest: bench {re.escape(name)} n=(\d+) mean=([\d.]+)ns", text)
        out[name] = float(m.group(2)) if m else None
    return out


# ---- boards ------------------------------------------------------------------

# QEMU 10's Raspberry Pi 4 B with Debian's DTB and dts/raspi4b/linux.dtsi
# (two 2-vCPU Linux domains, the PL011 passed through to domU1), the same
# DTB and modules under both hypervisors: four CPUs (the model has no
# fewer), which Xen 4.17 runs under icount on this machine (on virt it
# hangs with more than one). Console: the mini UART, whose data register
# the plugin watches. Xen names the domains by id (domU1 is d1).
BOARD = "raspi4b"
BOARD_UART = 0xfe21_5040
BOARD_DOMAINS = ("domU1", "domU2")


def board_line(hyp, dom, body):
    if hyp == "dtvisor":
        return rf"\({dom}\) {TS}{body}[^\n]*\n".encode()
    return rf"\(XEN\) {TS}DOM{dom[-1]}: {body}[^\n]*\n".encode()


def board(name, image):
    """The board system on one hypervisor: QEMU start to the first guest
    instruction and to each domain's userspace marker, and the CPUs it
    brought up."""
    work = os.path.join(WORK, name)
    os.makedirs(work, exist_ok=True)
    dtb = os.path.join(work, f"{BOARD}.dtb")
    loaders = system.system_dtb(os.path.join(ROOT, "dts", BOARD, "linux.dtsi"), dtb, env={"LINUX": LINUX},
                                board=BOARD, extra_dts=xen.bootargs_dts(ARGS.format(scrub=0)))
    cmd = system.BOARDS[BOARD].command(image, dtb, loaders)
    cpus = (rb"\(XEN\) " + TS.encode() + rb"Brought up (\d+) CPUs\r?\n" if name == "xen"
            else rb"\(dtvisor\) " + TS.encode() + rb"CPUs up: (\d+) of \d+[^\n]*\n")
    lines = {d: board_line(name, d, r"dtvisor-linux: up domain=" + d) for d in BOARD_DOMAINS}
    lines["cpus"] = cpus
    pts, first, text = clocked(f"bench-{name}-{BOARD}", [], lines, 4, hyp=image_range(image, ram=0),
                               entry=GUEST_ENTRY, command=cmd, uart=BOARD_UART)
    out = {"first_guest_ns": first.ns, "cpus": int(re.search(cpus.decode(), text).group(2))}
    for d in BOARD_DOMAINS:
        out[f"{d}_up_ns"] = pts[d].ns
    out["both_up_ns"] = max(out[f"{d}_up_ns"] for d in BOARD_DOMAINS)
    return out


def both(what, run, image, xen_image, summary):
    """`run(name, image)` for dtvisor then Xen, each announced and then
    summarised (`summary(figures)`) as it comes."""
    out = {}
    for name, img in (("dtvisor", image), ("xen", xen_image)):
        print(f"bench: {what}: {name} ...", flush=True)
        out[name] = run(name, img)
        print(f"bench: {what}: {name}: {summary(out[name])}", flush=True)
    return out


def boards(image, xen_image):
    """The board figures of both hypervisors."""
    return both(BOARD, board, image, xen_image,
                lambda r: f"{r['cpus']} CPUs up, first guest instruction at {ms(r['first_guest_ns'])},"
                          f" both domUs up at {ms(r['both_up_ns'])}")


def boards_table(b):
    d, x = b["dtvisor"], b["xen"]
    rows = ["| Raspberry Pi 4 B (QEMU raspi4b, 4 CPUs, icount) | dtvisor | Xen 4.17 | dtvisor / Xen |",
            "|---|---|---|---|",
            f"| CPUs brought up | {d['cpus']} | {x['cpus']} | |",
            f"| QEMU start to first guest instruction | {ms(d['first_guest_ns'])} | {ms(x['first_guest_ns'])} |"
            f" {ratio(d['first_guest_ns'], x['first_guest_ns'])} |"]
    for dom in BOARD_DOMAINS + ("both",):
        k = f"{dom}_up_ns"
        what = "both domUs" if dom == "both" else dom
        rows.append(f"| QEMU start to {what} in userspace | {ms(d[k])} | {ms(x[k])} | {ratio(d[k], x[k])} |")
    return "\n".join(rows)


# ---- a hardware domain --------------------------------------------------------

# dts/qemu-virt/hardware-domain.dtsi on both hypervisors: Xen's legacy
# dom0 (dom0_mem=512M dom0_max_vcpus=1, direct-mapped, owning QEMU's
# devices) beside two 1-vCPU domUs, the same DTB and modules. Xen 4.17
# runs on one CPU (it hangs under icount with more on virt), dtvisor on
# three (a pCPU per vCPU); both figures are total work. Xen prints dom0's
# console (its PV console) as it is, with no tag.
HW_DOMAINS = ("dom0", "domU1", "domU2")
HW_SMP = {"dtvisor": 3, "xen": 1}


def hw_line(hyp, dom, body):
    if hyp == "dtvisor":
        return rf"\({dom}\) {TS}{body}[^\n]*\n".encode()
    if dom == "dom0":
        return rf"(?m)^{body}[^\n]*\n".encode()
    return rf"\(XEN\) {TS}DOM{dom[-1]}: {body}[^\n]*\n".encode()


def hardware_domain(name, image):
    """QEMU start to each domain's userspace marker, the hardware domain
    first."""
    smp = HW_SMP[name]
    work = os.path.join(WORK, name)
    os.makedirs(work, exist_ok=True)
    dtb = os.path.join(work, f"hardware-domain-smp{smp}.dtb")
    args = "dom0_mem=512M dom0_max_vcpus=1 " + ARGS.format(scrub=0)
    loaders = system.system_dtb(os.path.join(ROOT, "dts/qemu-virt/hardware-domain.dtsi"), dtb,
                                env={"LINUX": LINUX}, smp=smp, extra_dts=xen.bootargs_dts(args))
    lines = {d: hw_line(name, d, r"dtvisor-linux: up domain=" + d) for d in HW_DOMAINS}
    pts, _, _ = clocked(f"bench-{name}-hwdom", ["-kernel", image, "-dtb", dtb] + loaders, lines, smp,
                        hyp=image_range(image))
    out = {"smp": smp}
    for d in HW_DOMAINS:
        out[f"{d}_up_ns"] = pts[d].ns
    out["all_up_ns"] = max(out[f"{d}_up_ns"] for d in HW_DOMAINS)
    return out


def hardware_domains(image, xen_image):
    """The hardware-domain figures of both hypervisors."""
    return both("hardware domain", hardware_domain, image, xen_image,
                lambda r: f"dom0 up at {ms(r['dom0_up_ns'])}, all three at {ms(r['all_up_ns'])}")


def hwdom_table(h):
    d, x = h["dtvisor"], h["xen"]
    rows = ["| A hardware domain beside two domUs (QEMU virt, icount) | dtvisor (3 CPUs) | Xen 4.17 (1 CPU) "
            "| dtvisor / Xen |", "|---|---|---|---|"]
    for dom in HW_DOMAINS + ("all",):
        k = f"{dom}_up_ns"
        what = "all three domains" if dom == "all" else dom
        rows.append(f"| QEMU start to {what} in userspace | {ms(d[k])} | {ms(x[k])} | {ratio(d[k], x[k])} |")
    return "\n".join(rows)


# ---- wall clock -------------------------------------------------------------

def wall(h, runs=5):
    """Host seconds from QEMU start to both markers (no plugin, no icount:
    TCG as fast as it goes), median of `runs`."""
    dtb, loaders = h.dtb(False)
    lines = [h.guest_line(i, r"dtvisor-linux: up domain=" + d) for i, d in enumerate(DOMAINS)]
    times = []
    for r in range(runs):
        t0 = time.monotonic()
        with Qemu(f"bench-wall-{h.name}-{r}", ["-kernel", h.image, "-dtb", dtb] + loaders, smp=h.smp,
                  limit=LIMIT) as q:
            q.expect_all(lines, LIMIT - 20)
            times.append(time.monotonic() - t0)
    return statistics.median(times), times


def wall_bare(runs=5):
    times = []
    for r in range(runs):
        t0 = time.monotonic()
        with Qemu(f"bench-wall-bare-{r}", ["-kernel", os.path.join(LINUX, "Image"), "-initrd",
                  os.path.join(LINUX, "initramfs.cpio.gz"), "-append", "console=ttyAMA0 domain=bare"],
                  smp=1, mem="256M", virt=False, limit=LIMIT) as q:
            q.expect(rb"dtvisor-linux: up domain=bare", LIMIT - 20)
            times.append(time.monotonic() - t0)
    return statistics.median(times), times


# ---- containment ---------------------------------------------------------------

CONTAINMENT = os.path.join(ROOT, "target", "bench", "containment")


def containment():
    """tests/qemu/test_containment.py, whose cases write their figures to
    target/bench/containment/: case -> {rate, baseline, slowdown,
    windows}. A case that failed before measuring has no figure."""
    shutil.rmtree(CONTAINMENT, ignore_errors=True)
    # Debian's pytest and pytest-xdist (scripts/setup), as scripts/test.
    p = subprocess.run(["/usr/bin/python3", "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider",
                        os.path.join(ROOT, "tests/qemu/test_containment.py")],
                       cwd=os.path.join(ROOT, "tests/qemu"), capture_output=True, text=True,
                       env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    if p.returncode != 0:
        print(f"bench: containment: some cases failed:\n{(p.stdout + p.stderr)[-3000:]}", flush=True)
    out = {}
    for f in sorted(os.listdir(CONTAINMENT)) if os.path.isdir(CONTAINMENT) else []:
        with open(os.path.join(CONTAINMENT, f)) as fp:
            c = json.load(fp)
        out[c.pop("case")] = c
    return out


def containment_table(c):
    rows = ["| domU2 (beside domU1's measured loop) | domU1 chunks / 1000 ticks | baseline (domU2 spinning)"
            " | slowdown | windows |", "|---|---|---|---|---|"]
    for case, v in c.items():
        rows.append(f"| {case} | {v['rate']:.4f} | {v['baseline']:.4f} | {100 * v['slowdown']:.2f}% |"
                    f" {v['windows']} |")
    return "\n".join(rows)


# ---- output -------------------------------------------------------------------

def memory_kept(text):
    """dtvisor's own report: (bytes it keeps, bytes of modules kept)."""
    m = re.search(r"hypervisor memory: image \d+ B[^+]*\+ heap \d+ B[^=]*= (\d+) B", text)
    k = re.search(r"boot modules kept once as the pristine images: (\d+) B", text)
    return (int(m.group(1)) if m else None), (int(k.group(1)) if k else None)


def boot_work(text):
    m = re.search(r"all domains loaded, memory: (\d+) B[^,]* shared with its modules \(copy on write\), (\d+) B[^,]*"
                  r" copied, (\d+) B[^,]* zeroed, (\d+) B[^\n]* cleaned", text)
    return dict(zip(("shared", "copied", "zeroed", "cleaned"), map(int, m.groups()))) if m else {}


def ratio(a, b):
    return f"{a / b:.3f}" if a and b else "n/a"


def table(r):
    d, x, b = r["dtvisor"], r["xen"], r["bare"]
    rows = [("Figure", "dtvisor", "Xen 4.17", "bare Linux", "dtvisor / Xen")]

    def row(name, dv, xv, bv=None, fmt=ms):
        rows.append((name, fmt(dv) if dv is not None else "n/a", fmt(xv) if xv is not None else "n/a",
                     fmt(bv) if bv is not None else "", ratio(dv, xv)))

    row("hypervisor boot, QEMU start to first guest instruction (bootscrub=0)",
        d["linux"]["first_guest_ns"], x["linux"]["first_guest_ns"])
    row("hypervisor boot, QEMU start to first guest instruction (bootscrub=1)",
        d["scrub"]["first_guest_ns"], x["scrub"]["first_guest_ns"])
    for dom in DOMAINS:
        row(f"QEMU start to {dom} in userspace", d["linux"][f"{dom}_up_ns"], x["linux"][f"{dom}_up_ns"])
    for dom in DOMAINS:
        row(f"{dom}'s marker line, the hypervisor's own console timestamp", d["linux"][f"{dom}_up_stamp_s"],
            x["linux"][f"{dom}_up_stamp_s"], fmt=lambda v: f"{v:.6f} s")
    row("QEMU start to both domUs in userspace (bare: two boots)", d["linux"]["both_up_ns"], x["linux"]["both_up_ns"],
        2 * b["up_ns"])
    for name in MICRO:
        row(f"{MICRO_TEXT[name]} (mean)", d["micro"].get(name), x["micro"].get(name),
            fmt=lambda v: f"{v:.1f} ns")
    row("image size", d["image_bytes"], x["image_bytes"], fmt=lambda v: f"{v:,} B")
    row("memory the hypervisor keeps of 2 GiB", d["kept_bytes"], None, fmt=lambda v: f"{v / 2**20:.2f} MiB")
    row("wall clock to both markers, median of 5 (no icount)", d["wall_s"], x["wall_s"], b["wall_s"],
        fmt=lambda v: f"{v:.2f} s")
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(c) + " |" for c in rows[1:]]
    return "\n".join(out)


def write_md(r, out_dir):
    """target/bench/bench.md from the results (also: bench.py md, from bench.json)."""
    with open(os.path.join(out_dir, "bench.md"), "w") as f:
        f.write(f"Measured {r['date']} with `{r['command']}` ({r['machine']}; Xen {r['xen']['package']}).\n\n")
        f.write(table(r) + "\n")
        if r.get("boards"):
            f.write("\n" + boards_table(r["boards"]) + "\n")
        if r.get("hardware_domain"):
            f.write("\n" + hwdom_table(r["hardware_domain"]) + "\n")
        if r.get("containment"):
            f.write("\nContainment (goal: slowdown under 5%):\n\n" + containment_table(r["containment"]) + "\n")


def chart(js, path):
    """Both boot timelines as a PNG, with matplotlib from a venv in the cache."""
    venv = os.path.join(ROOT, "cache", "bench-venv")
    py = os.path.join(venv, "bin", "python3")
    if not os.path.exists(os.path.join(venv, ".ready")):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "matplotlib"], check=True)
        open(os.path.join(venv, ".ready"), "w").close()
    script = r"""
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
r = json.load(open(sys.argv[1]))
fig, ax = plt.subplots(figsize=(10, 3.6))
rows = [("dtvisor", r["dtvisor"]["linux"]), ("Xen 4.17", r["xen"]["linux"])]
colors = {"hypervisor boot": "#d62728", "domU0 to userspace": "#1f77b4", "domU1 to userspace": "#2ca02c"}
for y, (name, x) in enumerate(rows):
    boot = x["first_guest_ns"] / 1e6
    ax.barh(y, boot, color=colors["hypervisor boot"], label="hypervisor boot" if y == 0 else None)
    for i, d in enumerate(("domU0", "domU1")):
        up = x[d + "_up_ns"] / 1e6
        ax.barh(y + (i - 0.5) * 0.35, up - boot, left=boot, height=0.3, color=colors[d + " to userspace"],
                label=d + " to userspace" if y == 0 else None)
        ax.text(up, y + (i - 0.5) * 0.35, f" {up:.0f} ms", va="center", fontsize=8)
    ax.text(boot, y + 0.42, f"{boot:.1f} ms", fontsize=8)
bare = r["bare"]["up_ns"] / 1e6
ax.axvline(bare, color="gray", ls="--", lw=1)
ax.axvline(2 * bare, color="gray", ls=":", lw=1)
ax.text(bare, 1.6, " bare Linux", fontsize=8, color="gray")
ax.text(2 * bare, 1.6, " two bare boots", fontsize=8, color="gray")
ax.set_yticks([0, 1], [n for n, _ in rows])
ax.set_ylim(-0.6, 1.9)
ax.set_xlabel("virtual time from QEMU start, ms (icount: 1 ms = 1 M instructions)")
ax.set_title("Two Linux domUs, 256 MiB each, bootscrub=0 (" + r["date"] + ")")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize=8, frameon=False)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=120)
"""
    p = subprocess.run([py, "-c", script, js, path], capture_output=True, text=True)
    if p.returncode != 0:
        raise OSError(f"matplotlib: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")


def main():
    global GUEST
    out_dir = os.path.join(ROOT, "target", "bench")
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(WORK, exist_ok=True)
    # Copies, so that a rebuild while the bench runs changes no figure.
    image = os.path.join(WORK, "dtvisor.bin")
    shutil.copyfile(IMAGE, image)
    guest = os.path.join(WORK, "dtvisor-test-guest.bin")
    shutil.copyfile(GUEST, guest)
    GUEST = guest
    for f in ("Image", "initramfs.cpio.gz"):
        if not os.path.isfile(os.path.join(LINUX, f)):
            raise SystemExit(f"bench: {LINUX}/{f} missing: scripts/build-linux-guest makes it")
    xen_image = xen.fetch()
    dv = Hyp("dtvisor", image, 2)  # one pCPU per vCPU
    xn = Hyp("xen", xen_image, 1)  # Xen 4.17 hangs under icount with more than one CPU
    r = {"date": time.strftime("%Y-%m-%d"), "command": "scripts/bench",
         "machine": "QEMU virt,virtualization=on,gic-version=3, cortex-a57, 2 GiB; -icount shift=0,align=off,sleep=off",
         "dtvisor": {"smp": 2}, "xen": {"smp": 1, "package": xen.installed_version()}, "bare": {"smp": 1}}
    print(f"bench: {r['machine']}; dtvisor -smp 2 (one pCPU per vCPU), Xen -smp 1; icount: 1 ms = 1 M instructions")
    for h in (dv, xn):
        step = f"bench: {h.name}:"
        print(f"{step} Xen-style system, bootscrub=0 ...", flush=True)
        res, text = linux_run(h, False, "linux")
        again, _ = linux_run(h, False, "linux-2")
        res["deterministic"] = again == res
        r[h.name]["linux"] = res
        if h.name == "dtvisor":
            r[h.name]["kept_bytes"], r[h.name]["modules_kept_bytes"] = memory_kept(text)
            r[h.name]["boot_work"] = boot_work(text)
        print(f"{step} first guest instruction at {ms(res['first_guest_ns'])}, both domUs up at"
              f" {ms(res['both_up_ns'])} (domU0 {ms(res['domU0_up_ns'])}, domU1 {ms(res['domU1_up_ns'])});"
              f" {'2 runs identical' if res['deterministic'] else 'runs DIFFER'}", flush=True)
        print(f"{step} bootscrub=1 ...", flush=True)
        r[h.name]["scrub"], stext = boot_run(h, True, "scrub")
        if h.name == "dtvisor":
            r[h.name]["boot_work_scrub"] = boot_work(stext) or None
        print(f"{step} first guest instruction at {ms(r[h.name]['scrub']['first_guest_ns'])}", flush=True)
        print(f"{step} micro-benchmarks ...", flush=True)
        r[h.name]["micro"] = micro(h)
        print(f"{step} " + ", ".join(f"{k} {v:.1f} ns" if v else f"{k} n/a" for k, v in r[h.name]["micro"].items()),
              flush=True)
        r[h.name]["image_bytes"] = os.path.getsize(h.image)
    print("bench: bare Linux ...", flush=True)
    b1, b2 = bare(1), bare(2)
    r["bare"]["up_ns"], r["bare"]["deterministic"] = b1, b1 == b2
    print(f"bench: bare Linux up at {ms(b1)}", flush=True)
    print("bench: wall clock, 5 runs each ...", flush=True)
    r["dtvisor"]["wall_s"], r["dtvisor"]["wall_runs"] = wall(dv)
    r["xen"]["wall_s"], r["xen"]["wall_runs"] = wall(xn)
    r["bare"]["wall_s"], r["bare"]["wall_runs"] = wall_bare()
    print(f"bench: {BOARD}, both hypervisors ...", flush=True)
    r["boards"] = boards(image, xen_image)
    r["hardware_domain"] = hardware_domains(image, xen_image)
    print("bench: containment (tests/qemu/test_containment.py) ...", flush=True)
    r["containment"] = containment()
    with open(os.path.join(out_dir, "containment.json"), "w") as f:
        json.dump(r["containment"], f, indent=2)
    # The ratios the goals are stated in.
    d, x = r["dtvisor"], r["xen"]
    r["ratios"] = {
        "boot_bootscrub0": d["linux"]["first_guest_ns"] / x["linux"]["first_guest_ns"],
        "boot_bootscrub1": d["scrub"]["first_guest_ns"] / x["scrub"]["first_guest_ns"],
        "both_up_vs_xen": d["linux"]["both_up_ns"] / x["linux"]["both_up_ns"],
        "both_up_vs_two_bare": d["linux"]["both_up_ns"] / (2 * r["bare"]["up_ns"]),
        "image": d["image_bytes"] / x["image_bytes"],
        "micro": {k: (d["micro"][k] / x["micro"][k]) if d["micro"].get(k) and x["micro"].get(k) else None
                  for k in MICRO},
    }
    js = os.path.join(out_dir, "bench.json")
    with open(js, "w") as f:
        json.dump(r, f, indent=2)
    md = table(r)
    write_md(r, out_dir)
    print(md)
    print(boards_table(r["boards"]))
    print(hwdom_table(r["hardware_domain"]))
    if r["containment"]:
        print(containment_table(r["containment"]))
    print("ratios: " + json.dumps(r["ratios"]))
    try:
        chart(js, os.path.join(out_dir, "boot-timeline.png"))
        print(f"bench: wrote {out_dir}/bench.md, bench.json, boot-timeline.png")
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"bench: the chart was not drawn ({e}); wrote {out_dir}/bench.md and bench.json")


if __name__ == "__main__":
    if sys.argv[1:] == ["md"]:  # tables and chart again from target/bench/bench.json
        out = os.path.join(ROOT, "target", "bench")
        write_md(json.load(open(os.path.join(out, "bench.json"))), out)
        chart(os.path.join(out, "bench.json"), os.path.join(out, "boot-timeline.png"))
    elif sys.argv[1:] in (["boards"], ["hwdom"]):  # only the board or hardware-domain figures
        run, tab = {"boards": (boards, boards_table), "hwdom": (hardware_domains, hwdom_table)}[sys.argv[1]]
        os.makedirs(WORK, exist_ok=True)
        img = os.path.join(WORK, "dtvisor.bin")
        shutil.copyfile(IMAGE, img)
        figures = run(img, xen.fetch())
        os.makedirs(os.path.join(ROOT, "target", "bench"), exist_ok=True)
        with open(os.path.join(ROOT, "target", "bench", f"{sys.argv[1]}.json"), "w") as f:
            json.dump(figures, f, indent=2)
        print(tab(figures))
    elif sys.argv[1:] == ["containment"]:  # only the containment figures
        c = containment()
        os.makedirs(os.path.join(ROOT, "target", "bench"), exist_ok=True)
        with open(os.path.join(ROOT, "target", "bench", "containment.json"), "w") as f:
            json.dump(c, f, indent=2)
        print(containment_table(c))
    else:
        main()
