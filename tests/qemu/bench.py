#!/usr/bin/env python3
"""Boot figures under QEMU -icount (virtual time = instructions), printed
by scripts/bench. Figures, not assertions.

The Linux figures ("linux:" lines) are virtual time from QEMU start to a
console line, measured outside the guest; see `uart_clock` for how."""
import hashlib
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import LOGDIR, ROOT, Qemu, conformance_dtb  # noqa: E402
import system  # noqa: E402

IMAGE = os.environ.get("DTVISOR_IMAGE") or os.path.join(ROOT, "target/aarch64/release/dtvisor.bin")
LINUX = os.environ.get("DTVISOR_LINUX") or os.path.join(ROOT, "cache/linux")
WORK = os.path.join(ROOT, "cache/qemu/bench")
# A TCG boot of two Debian kernels with the plugin below takes ~15 s of
# host time; the limit only bounds a hung run.
LIMIT = 300


def figure(q, rx, label):
    m = q.expect(rx, 120, label)
    return int(m.group(1))


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

/* The part of QEMU's plugin API (version 1, QEMU 7.2) this uses. */
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

EXPORT int qemu_plugin_version = 1;
static FILE *out;
static uint64_t uart = 0x09000000;
static uint64_t hyp_lo, hyp_hi; /* [lo, hi): the hypervisor image, if any */
static unsigned ncpu;
static uint64_t insns[64], hyp[64];

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
    bool hyp;
};

static void on_tb(unsigned vcpu, void *b)
{
    const struct block *tb = b;
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

    def key(self):
        return (self.ns, self.insns, self.vcpu, tuple(self.per_cpu), tuple(self.hyp))


def clocked(name, args, lines, smp, hyp=None, **kw):
    """Runs QEMU with the plugin until every pattern in `lines` (label ->
    regex for one whole console line) has been printed; returns label ->
    Point for the first such line's last byte. `hyp`: (start, end) of the
    hypervisor's image, whose instructions are counted apart."""
    rec = os.path.join(LOGDIR, f"{name}.uart-clock")
    plugin = f"{uart_clock()},out={rec},cpus={smp}" + (f",hyp={hyp[0]:#x}:{hyp[1]:#x}" if hyp else "")
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
        if hyp:
            m = re.search(rb"image \[(0x[0-9a-f]+), (0x[0-9a-f]+)\)", q.buf)
            if not m or (int(m.group(1), 16), int(m.group(2), 16)) != hyp:
                q.fail(f"dtvisor's image is not at [{hyp[0]:#x}, {hyp[1]:#x}) as its header says")
    recs = [list(map(int, line.split())) for line in open(rec) if line.endswith("\n")]
    missing = [label for label, k in ends.items() if k >= len(recs)]
    if missing:
        raise SystemExit(f"bench: {rec}: no record for {missing} ({len(recs)} records)")
    return {label: Point(recs[k]) for label, k in ends.items()}


def ms(ns):
    return f"{ns / 1e6:.3f} ms"


def mi(n):
    return f"{n / 1e6:.1f} M"


DOMAINS = ("domU0", "domU1")


def image_range(image):
    """Where QEMU's -kernel puts an arm64 Image on virt (RAM at 1 GiB):
    text_offset from 2 MiB when it is below QEMU's 4 KiB boot stub."""
    with open(image, "rb") as f:
        hdr = f.read(64)
    off, size = int.from_bytes(hdr[8:16], "little"), int.from_bytes(hdr[16:24], "little")
    start = 0x4000_0000 + off + (2 << 20 if off < 4096 else 0)
    return start, start + size


def xen_style(image, smp, run):
    """The Xen-dom0less-style system of test_linux (two domUs, 1 vCPU and
    256 MiB each, own kernel and ramdisk) on dtvisor, QEMU -smp `smp`.
    dtvisor gives each vCPU a pCPU of its own, so 2 are enough; with 4,
    pCPUs 2 and 3 stay powered off (PSCI) and run no instruction."""
    frag = system.xen_style_fragment(WORK, LINUX)
    dtb = os.path.join(WORK, f"xen-style-smp{smp}.dtb")
    loaders = system.system_dtb(frag, dtb, env={"LINUX": LINUX}, smp=smp)
    lines = {}
    for i, d in enumerate(DOMAINS):
        lines[f"{d} loaded"] = rf"\(dtvisor\) {d} \(id {i + 1}\): loaded, [^\n]*\n".encode()
        lines[f"{d} init"] = rf"\({d}\) \[[ \d.]+\] Run /init as init process\r?\n".encode()
        lines[f"{d} up"] = rf"\({d}\) dtvisor-linux: up domain={d} [^\n]*\n".encode()
    return clocked(f"bench-linux-xen-smp{smp}-{run}", ["-kernel", image, "-dtb", dtb] + loaders, lines, smp,
                   hyp=image_range(image))


def bare(run):
    """The same kernel and initramfs with no hypervisor. dtb-randomness=off
    and a virtual-clock RTC keep the boot deterministic (QEMU's DTB would
    carry fresh rng-seed and kaslr-seed values each run, which turn on
    KASLR, and the PL031 would read the host's time); system.py drops the
    same seeds from the DTB dtvisor gets, so neither kernel has KASLR.
    GICv3 like the domUs' virtual GIC (plain -machine virt is GICv2)."""
    args = ["-rtc", "base=2000-01-01T00:00:00,clock=vm",
            "-kernel", os.path.join(LINUX, "Image"), "-initrd", os.path.join(LINUX, "initramfs.cpio.gz"),
            "-append", "console=ttyAMA0 domain=bare"]
    lines = {"init": rb"\[[ \d.]+\] Run /init as init process\r?\n",
             "up": rb"dtvisor-linux: up domain=bare [^\n]*\n"}
    return clocked(f"bench-linux-bare-{run}", args, lines, 1, mem="256M", virt=False,
                   machine_extra=",dtb-randomness=off")


def same(runs):
    """Whether two runs' records are identical, or what differs."""
    a, b = runs
    diff = [k for k in a if a[k].key() != b[k].key()]
    if not diff:
        return "2 runs identical to the ns"
    return "runs DIFFER: " + ", ".join(f"{k} {ms(a[k].ns)} / {ms(b[k].ns)}" for k in diff)


def markers(x):
    up = {d: x[f"{d} up"].ns for d in DOMAINS}
    return max(up.values()), up


def linux_figures(image):
    for f in ("Image", "initramfs.cpio.gz"):
        if not os.path.isfile(os.path.join(LINUX, f)):
            raise SystemExit(f"bench: {LINUX}/{f} missing: scripts/build-linux-guest makes it")
    print("  linux: virtual time from QEMU start to the UART write of a console line's last byte"
          " (QEMU_CLOCK_VIRTUAL, read by a TCG plugin); marker = /init's 'dtvisor-linux: up' line")
    xs = [xen_style(image, 2, r) for r in (1, 2)]
    x = xs[0]
    both, up = markers(x)
    print(f"  linux: Xen-style 2 domUs (1 vCPU, 256 MiB each) on -smp 2, QEMU start to both markers: {ms(both)}"
          f" (domU0 {ms(up['domU0'])}, domU1 {ms(up['domU1'])}); {same(xs)}")
    for d in DOMAINS:
        ld, ini, u = x[f"{d} loaded"], x[f"{d} init"], x[f"{d} up"]
        c = u.vcpu  # the pCPU that printed the domain's line runs its vCPU
        print(f"    {d}: loaded at {ms(ld.ns)} (pCPU{c} {mi(ld.per_cpu[c])} instructions by then),"
              f" Run /init at {ms(ini.ns)}, marker at {ms(u.ns)}; load to marker: pCPU{c} ran"
              f" {mi(u.per_cpu[c] - ld.per_cpu[c])} instructions, {mi(u.hyp[c] - ld.hyp[c])} of them in dtvisor")
    last = max((x[f"{d} up"] for d in DOMAINS), key=lambda p: p.ns)
    warp = last.ns - last.insns
    print("    instructions to the last marker: " + ", ".join(f"pCPU{i} {mi(n)}" for i, n in enumerate(last.per_cpu))
          + "; virtual time is their sum (icount runs one CPU at a time)"
          + (f" plus {ms(warp)} warped over with every CPU idle" if warp else ", never every CPU idle at once"))
    x4 = xen_style(image, 4, 1)
    both4, up4 = markers(x4)
    print(f"  linux: same on -smp 4 (pCPUs 2 and 3 stay off): both markers {ms(both4)}"
          f" (domU0 {ms(up4['domU0'])}, domU1 {ms(up4['domU1'])})")
    bs = [bare(r) for r in (1, 2)]
    b = bs[0]
    warp = b["up"].ns - b["up"].insns
    print(f"  linux: bare kernel (-smp 1, 256 MiB, GICv3, no hypervisor), QEMU start to marker: {ms(b['up'].ns)}"
          f" (Run /init at {ms(b['init'].ns)}; {mi(b['up'].insns)} instructions"
          + (f", {ms(warp)} warped over idle" if warp else "") + f"); {same(bs)}")
    print(f"  linux: difference, Xen-style both markers - bare: {ms(both - b['up'].ns)}"
          f" (domU0's marker - bare: {ms(up['domU0'] - b['up'].ns)})")


def main():
    # A copy, so that a rebuild while the bench runs changes no figure.
    os.makedirs(WORK, exist_ok=True)
    image = os.path.join(WORK, "dtvisor.bin")
    shutil.copyfile(IMAGE, image)
    size = os.path.getsize(image)
    with open(image, "rb") as f:
        hdr = f.read(64)
    print("dtvisor boot figures (QEMU virt, cortex-a57, 4 CPUs, 2 GiB, GICv3; icount: 1 us = 1000 instructions)")
    print(f"  image: {size} bytes raw; header image_size {int.from_bytes(hdr[16:24], 'little')} bytes")
    dtb = os.path.join(ROOT, "cache/qemu/bench-dom0less.dtb")
    loaders = system.system_dtb(os.path.join(ROOT, "dts/qemu-virt/dom0less.dtsi"), dtb)
    with Qemu("bench-dom0less", ["-kernel", image, "-dtb", dtb] + loaders, icount=True) as q:
        d = figure(q, rb"discovery took (\d+) us", "discovery")
        p = figure(q, rb"boot plan parsed in (\d+) us", "parse")
        g = figure(q, rb"hypervisor entry to first guest instruction: (\d+) us", "first guest instruction")
        q.expect(rb"\(domU1\) guest: summary", 120)
    print(f"  entry to end of host discovery and banner: {d} us")
    print(f"  boot plan parse, 2 domains: {p} us")
    print(f"  entry to first guest instruction (2 domains, 192 MiB scrubbed): {g} us")
    dtb = conformance_dtb("dl-many-domains", os.path.join(ROOT, "cache/qemu"))
    with Qemu("bench-16", ["-kernel", image, "-dtb", dtb], icount=True) as q:
        p16 = figure(q, rb"boot plan parsed in (\d+) us", "parse")
    print(f"  boot plan parse, 16 domains: {p16} us")
    linux_figures(image)


if __name__ == "__main__":
    main()
