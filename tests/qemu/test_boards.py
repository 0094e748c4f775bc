"""Boards other than QEMU virt, booted for real. QEMU's model of the
AMD/Xilinx ZCU102 (`-machine xlnx-zcu102,virtualization=on`: four
Cortex-A53, a GIC-400, Cadence UARTs, PSCI over SMC) with the board's own
DTB from Debian (`zynqmp-zcu102-rev1.0.dtb`, fetched by
scripts/fetch-test-dtbs) and two test-guest domains added. dtvisor's
console is the Cadence UART the DTB's stdout-path names; the guests run on
a vGICv2 (platform/xilinx-zcu102)."""
import os
import re
import subprocess

import pytest

import system
from harness import CACHE, ROOT
from test_linux import expect_up, focus, run

ZCU102_DTB = os.path.join(CACHE, "dtbs/debian/xilinx/zynqmp-zcu102-rev1.0.dtb")
DOMAINS = """
/ {{ chosen {{ #address-cells = <2>; #size-cells = <2>;
  domU1 {{ compatible = "xen,domain"; #address-cells = <2>; #size-cells = <2>;
    memory = <0x0 0x20000>; cpus = <2>; vpl011;
    module@10000000 {{ compatible = "multiboot,kernel", "multiboot,module";
      reg = <0x0 0x10000000 0x0 {size:#x}>; bootargs = "console=ttyAMA0 domain=one"; }}; }};
  domU2 {{ compatible = "xen,domain"; #address-cells = <2>; #size-cells = <2>;
    memory = <0x0 0x10000>; cpus = <1>; vpl011;
    module@10000000 {{ compatible = "multiboot,kernel", "multiboot,module";
      reg = <0x0 0x10000000 0x0 {size:#x}>; bootargs = "console=ttyAMA0 domain=two"; }}; }};
}}; }};
"""


def test_zcu102_model_with_debian_dtb_runs_two_guests(qemu, image, guest, work):
    if not os.path.exists(ZCU102_DTB):
        pytest.fail(f"{ZCU102_DTB} missing: scripts/fetch-test-dtbs fetches it (scripts/test does)", pytrace=False)
    src = subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", ZCU102_DTB], capture_output=True, text=True,
                         check=True).stdout
    dts = os.path.join(work, "zcu102.dts")
    with open(dts, "w") as f:
        f.write(src + DOMAINS.format(size=os.path.getsize(guest)))
    dtb = os.path.join(work, "zcu102.dtb")
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", dtb, dts], check=True)
    cmd = ["qemu-system-aarch64", "-machine", "xlnx-zcu102,virtualization=on", "-m", "2G",
           "-nographic", "-display", "none", "-audio", "none", "-monitor", "none",
           "-serial", "stdio", "-kernel", image, "-dtb", dtb,
           "-device", f"loader,file={guest},addr=0x10000000,force-raw=on"]
    with qemu("zcu102", [], command=cmd, limit=180) as q:
        m = q.expect(r"machine: (.*)\r?\n", 60, "the machine summary on the Cadence UART")
        line = m.group(1).decode()
        for want in ("4 CPUs", "2 GiB RAM", "GICv2", "console cadence at 0xff000000"):
            if want not in line:
                q.fail(f"expected {want!r} in the machine line: {line}")
        q.expect(r"PSCI smc", 10)
        q.expect(r"domU1: vCPUs 0\.\.2 on pCPUs 0 1; guest GIC v2", 60)
        q.expect_all([r"\(domU1\) guest: summary pass=\d+ fail=0\r?\n",
                      r"\(domU2\) guest: summary pass=\d+ fail=0\r?\n"], 120)
        for dom in ("domU1", "domU2"):
            n = int(re.search(rf"\({dom}\) guest: summary pass=(\d+)".encode(), q.buf).group(1))
            if n < 3:
                q.fail(f"{dom}: only {n} checks passed")
        q.not_seen(r"unhandled trap|panic on CPU")


# Two Debian Linux domains on each board model QEMU 10 has beside virt,
# from the board's own Debian DTB plus dts/<board>/linux.dtsi: on the
# Raspberry Pi 4 B 2 + 2 vCPUs on the four CPUs it starts by spin-table,
# on the i.MX 8M Plus EVK 2 + 2 vCPUs on a GICv3 whose virtual IRQ QEMU
# 10.0.2 leaves unwired (dtvisor raises it through HCR_EL2.VI). On each,
# domU1 owns a second UART of the SoC (dts/<board>/partial/), which QEMU
# connects to a socket the test reads and types into. TCG boots of four
# Linux vCPUs on two host cores take minutes.
BOARD_BOOT = 420


def boot_board(qemu, image, linux, work, board, uart="null"):
    frag = os.path.join(ROOT, "dts", board, "linux.dtsi")
    dtb = os.path.join(work, f"{board}.dtb")
    loaders = system.system_dtb(frag, dtb, env={"LINUX": linux}, board=board)
    cmd = system.BOARDS[board].command(image, dtb, loaders, uart=uart)
    return qemu(board, [], command=cmd, limit=BOARD_BOOT + 180)


def machine_line(q, wants):
    line = q.expect(r"machine: (.*)\r?\n", 60, "the machine summary").group(1).decode()
    for want in wants:
        if want not in line:
            q.fail(f"expected {want!r} in the machine line: {line}")


def shells_answer(q, domains):
    """Typed commands reach each domain's shell through the console focus."""
    for dom in domains:
        focus(q, dom)
        run(q, dom, f"echo {dom}-$((6*7))", f"{dom}-42")


def uart_assigned(q, board):
    """The boot log reports the board UART's assignment to domU1: its
    page mapped at its host address, its SPI routed."""
    u = system.BOARDS[board].uart
    q.expect(rf"domU1: /passthrough/serial@{u.addr:x} mmio host \[{u.addr:#x}, 0x[0-9a-f]+\) at guest {u.addr:#x}", 120)
    q.expect(rf"domU1: /passthrough/serial@{u.addr:x} interrupt {u.intid} \(level\) routed to the domain", 30)


def uart_passed_through(q, port, board):
    """domU1's Linux drives the board UART with its own driver: a line it
    writes comes out of QEMU's serial port, a line typed there reaches it
    (by the UART's receive interrupt). domU2 touching the UART's address
    gets an abort and keeps running."""
    u = system.BOARDS[board].uart
    focus(q, "domU1")
    run(q, "domU1", f"echo hello-from-domU1-$((6*7)) > /dev/{u.tty}; echo sent-$((6*7))", "sent-42")
    port.expect(r"hello-from-domU1-42\r?\n", 30, "domU1's line on the board UART")
    q.send(f"sh -c 'stty -echo; echo uart-$((6*7))-ready; read -r l; echo uart-got=$l' < /dev/{u.tty}\n")
    q.expect(r"\(domU1\) uart-42-ready", 30)
    port.send(b"typed-into-the-board-uart\n")
    q.expect(r"\(domU1\) uart-got=typed-into-the-board-uart\r?\n", 30, "the typed line in domU1")
    focus(q, "domU2")
    q.send(f"devmem {u.addr:#x} 32; echo devmem-done\n")
    q.expect(rf"domU2: read at IPA {u.addr:#x} .*hits nothing: external abort injected", 60,
             "the hypervisor reports domU2's access to the UART")
    run(q, "domU2", "echo domU2-alive-$((6*7))", "domU2-alive-42")


def test_raspi4b_spin_table_cpus_run_two_linux_domains(qemu, serial_port, image, linux, work):
    port = serial_port("raspi4b-uart0")
    with boot_board(qemu, image, linux, work, "raspi4b", port.chardev) as q:
        port.console = q
        machine_line(q, ("4 CPUs", "GICv2", "console ns16550 at 0xfe215040"))
        q.expect(r"CPUs 4: 0x0 \(spin-table 0xd8\) 0x1 \(spin-table 0xe0\) "
                 r"0x2 \(spin-table 0xe8\) 0x3 \(spin-table 0xf0\)", 10)
        uart_assigned(q, "raspi4b")
        q.expect(r"domU2: vCPUs 0\.\.2 on pCPUs 2 3; guest GIC v2", 120)
        q.expect(r"CPUs up: 4 of 4 \(the boot CPU and 3 started\)", 30)
        expect_up(q, {"domU1": (2, 192), "domU2": (2, 192)}, BOARD_BOOT)
        shells_answer(q, ("domU1", "domU2"))
        uart_passed_through(q, port, "raspi4b")
        q.not_seen(r"unhandled trap|panic on CPU|did not arrive")


def test_imx8mp_evk_runs_two_linux_domains_on_gicv3(qemu, serial_port, image, linux, work):
    port = serial_port("imx8mp-uart1")
    with boot_board(qemu, image, linux, work, "imx8mp-evk", port.chardev) as q:
        port.console = q
        machine_line(q, ("4 CPUs", "GICv3", "console imx at 0x30890000"))
        q.expect(r"PSCI smc", 10)
        uart_assigned(q, "imx8mp-evk")
        q.expect(r"domU2: vCPUs 0\.\.2 on pCPUs 2 3; guest GIC v3", 120)
        expect_up(q, {"domU1": (2, 256), "domU2": (2, 256)}, BOARD_BOOT)
        shells_answer(q, ("domU1", "domU2"))
        uart_passed_through(q, port, "imx8mp-evk")
        q.not_seen(r"unhandled trap|panic on CPU|did not arrive")


def test_linux_with_interrupts_raised_through_hcr_vi_on_virt(qemu, image, linux, work):
    """The HCR_EL2.VI fallback (dtvisor.selftest=virq-by-hcr forces it on
    any machine) on QEMU virt, where it is fast: a 2-vCPU and a 1-vCPU
    Linux reach userspace and answer typed commands (an interrupt both
    pending and active, the vPL011's while the guest reads, once raised a
    storm of maintenance interrupts)."""
    dtb = os.path.join(work, "virq-by-hcr.dtb")
    loaders = system.system_dtb(os.path.join(ROOT, "dts/qemu-virt/linux.dtsi"), dtb, env={"LINUX": linux},
                                extra_dts='/ { chosen { xen,xen-bootargs = "dtvisor.selftest=virq-by-hcr"; }; };')
    with qemu("virq-by-hcr", ["-kernel", image, "-dtb", dtb] + loaders, limit=BOARD_BOOT) as q:
        expect_up(q, {"domU1": (2, 256), "domU2": (1, 192)})
        shells_answer(q, ("domU1", "domU2"))
        q.not_seen(r"unhandled trap|panic on CPU|rcu_sched kthread starved")


CONSOLE_PARTIAL = """/dts-v1/;
/ { #address-cells = <2>; #size-cells = <2>;
  passthrough { compatible = "simple-bus"; ranges; #address-cells = <2>; #size-cells = <2>;
    serial@fe215040 { compatible = "brcm,bcm2835-aux-uart"; reg = <0x0 0xfe215040 0x0 0x40>;
      interrupts = <0 93 4>; interrupt-parent = <65000>;
      xen,reg = <0x0 0xfe215000 0x0 0x1000 0x0 0xfe215000>;
      xen,path = "/soc/serial@7e215040"; xen,force-assign-without-iommu; }; }; };
"""


def test_raspi4b_console_uart_cannot_be_passed_through(qemu, plan_tool, image, linux, work):
    """A partial device tree giving domU1 the mini UART, dtvisor's own
    console on the Pi: dtvisor-plan and the boot both refuse it, naming
    the domain's device-tree module and the property, and start nothing."""
    for name in ("linux.dtsi", "linux.modules"):
        with open(os.path.join(ROOT, "dts/raspi4b", name)) as f:
            text = f.read().replace("partial/uart0.dts", os.path.join(work, "console.dts"))
        with open(os.path.join(work, name), "w") as f:
            f.write(text)
    with open(os.path.join(work, "console.dts"), "w") as f:
        f.write(CONSOLE_PARTIAL)
    dtb = os.path.join(work, "raspi4b.dtb")
    loaders = system.system_dtb(os.path.join(work, "linux.dtsi"), dtb, env={"LINUX": linux}, board="raspi4b")
    partial = os.path.join(work, "console.partial.dtb")
    want = (r"/chosen/domU1/module@13000000: xen,path: in the partial device tree, /passthrough/serial@fe215040: "
            r"interrupt 125 of /soc/serial@7e215040 is the hypervisor console's \(/soc/serial@7e215040\)")
    p = subprocess.run([plan_tool, dtb, "--module", f"/chosen/domU1/module@13000000={partial}"],
                       capture_output=True, text=True)
    if p.returncode == 0 or not re.search(want, p.stdout + p.stderr):
        raise AssertionError(f"dtvisor-plan exit {p.returncode}, wanted /{want}/:\n{p.stdout}{p.stderr}")
    if "overlaps the console UART /soc/serial@7e215040" not in p.stdout + p.stderr:
        raise AssertionError(f"dtvisor-plan does not name the console's registers:\n{p.stdout}{p.stderr}")
    cmd = system.BOARDS["raspi4b"].command(image, dtb, loaders)
    with qemu("raspi4b-console-passthrough", [], command=cmd, limit=120) as q:
        q.expect(want, 60)
        q.expect(r"no domain started; dtvisor stays up on its console", 30)
        q.not_seen(r"\(domU[12]\)")
