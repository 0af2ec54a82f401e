"""Block I/O benchmark: pyxen's blkback, as a user gets it, against qemu-storage-daemon's
vhost-user-blk export, in one guest and one invocation.

The guest: a demo guest created with ``xl create`` on a pyxen host (the host's daemons, as the
tests start them), 256 MiB, 1 vCPU (TCG), with two disks backed by copies of the same image:
(a) ``disk = ['format=raw, vdev=xvdb, access=rw, target=...']``: the host's backendd serves it
    with blkback over vhost-user (QEMU's vhost-user-blk-pci), the path every pyxen disk takes;
(b) the reference: qemu-storage-daemon's ``vhost-user-blk`` export of the other copy (page cache,
    as blkback: ``cache.direct=off``), plugged into the same QEMU with ``device_model_args``
    (the same vhost-user-blk-pci device, queue size and interrupt path).
Same guest, same kernel, same QEMU: only the back-end process differs.

Load, in the guest, all O_DIRECT: sequential 1 MiB write and read with busybox dd (MB/s), and
random 4 KiB reads and writes at queue depth 1 with bench/randio (a 696-byte static tool appended
to the demo initrd; IOPS). Each round runs every metric on both disks, each measurement cut into
chunks run A B B A A B B A (the first disk alternating), so the two paths share the host's noise
of the same second. Times come from the guest's /proc/timer_list (ns). Reports the median and
min-max per path, and the median of the per-round ratios pyxen/qsd (paired, so slow rounds
cancel). Writes bench/results/blk.json. The machine is noisy (2 cores, TCG, other jobs): only the
paired ratios mean anything, and a single round's ratio can be off by a third either way.

``python bench/blk.py [ROUNDS]``; ``PYXEN_BENCH_PYSPY=out.txt`` records the host's backendd with
py-spy (raw, --idle) for the whole run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import randio  # noqa: E402

from pyxen.images.demo import build  # noqa: E402
from pyxen.testing.bench import figure, run_facts  # noqa: E402
from pyxen.testing.host import Host, started_host  # noqa: E402

SIZE_MB = int(os.environ.get("PYXEN_BENCH_SIZE_MB", "256"))
RAND_COUNT = int(os.environ.get("PYXEN_BENCH_RAND_COUNT", "4000"))
ROUNDS = 5
MEMORY = 256
PATHS = ("pyxen", "qsd")
#: GET_ID answers: blkback gives the xl vdev, qemu-storage-daemon's export a fixed string.
SERIALS = {"pyxen": "xvdb", "qsd": "vhost_user_blk"}
METRICS = ("seq_write_MBps", "seq_read_MBps", "rand_read_iops", "rand_write_iops")
HEADS = {"seq_write_MBps": "seq write 1M MB/s", "seq_read_MBps": "seq read 1M MB/s",
         "rand_read_iops": "rand read 4k QD1 IOPS", "rand_write_iops": "rand write 4k QD1 IOPS"}
GOALS = {"seq_write_MBps": 0.95, "seq_read_MBps": 0.95, "rand_read_iops": 0.9, "rand_write_iops": 0.9}
FIGURES = {"seq_write_MBps": ("blk seq write 1 MiB", "MB/s"), "seq_read_MBps": ("blk seq read 1 MiB", "MB/s"),
           "rand_read_iops": ("blk 4 KiB rand read QD1", "IOPS"),
           "rand_write_iops": ("blk 4 KiB rand write QD1", "IOPS")}


#: Each measurement is cut into CHUNKS pieces per disk, run in the order A B B A A B B A ...
#: (ABBA cancels a load that drifts linearly within the measurement): the two disks of a pair
#: share the host's noise of the same second, not merely of the same minute.
CHUNKS = 4
CHUNK_MB = SIZE_MB // CHUNKS
CHUNK_RAND = RAND_COUNT // CHUNKS


def command(metric: str, chunk: int) -> str:
    """The guest's command for one chunk of ``metric`` on disk $D (seq chunks follow each other
    on the disk; randio's offsets are random over the whole disk)."""
    return {
        "seq_write_MBps": f"dd if=/dev/zero of=$D bs=1M count={CHUNK_MB} seek={chunk * CHUNK_MB} oflag=direct 2>/dev/null",
        "seq_read_MBps": f"dd if=$D of=/dev/null bs=1M count={CHUNK_MB} skip={chunk * CHUNK_MB} iflag=direct 2>/dev/null",
        "rand_read_iops": f"randio $D {CHUNK_RAND} r || echo randio failed",
        "rand_write_iops": f"randio $D {CHUNK_RAND} w || echo randio failed",
    }[metric]


def guest_script(rounds: int) -> str:
    """Each round runs every metric on both disks, in ABBA chunks (the first disk alternating
    between rounds and metrics); each chunk prints its start and end time."""
    lines = ["ts() { head -3 /proc/timer_list | sed -n 's/^now at \\([0-9]*\\) nsecs/\\1/p'; }",
             'find() { for d in /sys/block/vd*; do [ "$(cat $d/serial)" = "$1" ] && echo /dev/${d##*/}; done; }']
    lines += [f"dev_{name}=$(find {serial})" for name, serial in SERIALS.items()]
    lines.append('echo "bench disks $dev_pyxen $dev_qsd"')
    lines += [f'q=/sys/block/${{dev_{name}#/dev/}}/queue; echo "bench queue {name} segments $(cat $q/max_segments) '
              f'segment_size $(cat $q/max_segment_size) max_kb $(cat $q/max_sectors_kb) hw_kb $(cat $q/max_hw_sectors_kb)"'
              for name in PATHS]
    for r in range(rounds):
        for i, metric in enumerate(METRICS):
            a, b = PATHS if (r + i) % 2 == 0 else PATHS[::-1]
            for j in range(CHUNKS):
                for name in ((a, b) if j % 2 == 0 else (b, a)):
                    lines += [f"D=$dev_{name}", "t0=$(ts)", command(metric, j), "t1=$(ts)",
                              f'echo "bench {r} {name} {metric} $t0 $t1"']
    lines.append("grep virtio /proc/interrupts | sed 's/^/bench irq /'")
    # Requests each disk saw for the same work (reads, merges, sectors, ms, writes, ...):
    # how the guest cut 1 MiB under each device's limits.
    lines += [f'echo "bench stat {name} $(cat /sys/block/${{dev_{name}#/dev/}}/stat)"' for name in PATHS]
    lines.append("echo bench done")
    return "\n".join(lines) + "\n"


def parse(text: str) -> dict[str, list[dict[str, float]]]:
    """Per path, one dict of metrics per round (each metric's work over its chunks' summed time)."""
    work = {"seq_write_MBps": CHUNKS * CHUNK_MB * 1.048576, "seq_read_MBps": CHUNKS * CHUNK_MB * 1.048576,
            "rand_read_iops": CHUNKS * CHUNK_RAND, "rand_write_iops": CHUNKS * CHUNK_RAND}
    secs: dict[str, dict[int, dict[str, list[float]]]] = {p: {} for p in PATHS}
    for m in re.finditer(r"bench (\d+) (\w+) (\w+) (\d+) (\d+)", text):
        r, name, metric = int(m.group(1)), m.group(2), m.group(3)
        secs[name].setdefault(r, {}).setdefault(metric, []).append((int(m.group(5)) - int(m.group(4))) / 1e9)
    return {name: [{k: work[k] / sum(v) for k, v in rs[r].items()} for r in sorted(rs)
                   if all(len(rs[r].get(k, [])) == CHUNKS for k in METRICS)]
            for name, rs in secs.items()}


def summarize(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float | dict[str, float]]]:
    """Per metric: each path's median [min-max] and the per-round ratios' median [min-max]."""
    summary: dict[str, dict[str, float | dict[str, float]]] = {}
    for k in METRICS:
        entry: dict[str, float | dict[str, float]] = {}
        for name, rs in runs.items():
            vals = [r[k] for r in rs]
            entry[name] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
        ratios = [p[k] / q[k] for p, q in zip(runs["pyxen"], runs["qsd"])]
        entry["ratio"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
        summary[k] = entry
    return summary


def print_table(summary: dict[str, dict[str, dict[str, float]]], rounds: int) -> None:  # type: ignore[type-arg]
    print(f"{rounds} interleaved rounds; value = median [min-max]; ratio = median of per-round ratios "
          "pyxen/qsd [min-max]")
    for k in METRICS:
        s = summary[k]
        r = s["ratio"]
        print(f"\n{HEADS[k]}")
        for name in PATHS:
            v = s[name]
            print(f"  {name:<8}{v['median']:>9.0f} [{v['min']:.0f}-{v['max']:.0f}]")
        print(f"  ratio   {r['median']:>9.2f} [{r['min']:.2f}-{r['max']:.2f}]  goal >= {GOALS[k]}: "
              f"{'met' if r['median'] >= GOALS[k] else 'NOT met'}")


def backendd_pid(host: Host) -> int:
    return int(host.paths.pidfile("backendd").read_text().split()[0])


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-ups below
    facts = run_facts(Path(__file__).resolve().parents[1])
    image = build()
    tmp = Path(tempfile.mkdtemp(prefix="pxblk-", dir="/tmp"))
    qsd: subprocess.Popen[bytes] | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        base = tmp / "base.img"
        with open(base, "wb") as f:
            f.truncate(SIZE_MB << 20)
        imgs = {n: tmp / f"{n}.img" for n in PATHS}
        for p in imgs.values():
            shutil.copyfile(base, p)
        # The script goes into the initrd (the demo init runs /tmp/run.sh): a few rounds of it
        # would overflow the kernel command line (2048 bytes on x86), and the kernel then stops
        # silently before its console is up. The kernel looks for the next archive at a 4-byte
        # aligned offset, skipping NULs.
        initrd = tmp / "initrd.img"
        demo = image.ramdisk.read_bytes()
        initrd.write_bytes(demo + b"\0" * (-len(demo) % 4) + randio.cpio_archive(guest_script(rounds).encode()))
        qsd_sock = tmp / "qsd.sock"
        qsd = subprocess.Popen([
            "qemu-storage-daemon", "--blockdev",
            f"driver=file,node-name=d0,filename={imgs['qsd']},cache.direct=off",
            "--export", f"type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path={qsd_sock},"
            "writable=on,num-queues=1"])
        deadline = time.monotonic() + 30
        while not qsd_sock.exists():
            if qsd.poll() is not None or time.monotonic() > deadline:
                print(f"qemu-storage-daemon did not start (exit status {qsd.poll()})", file=sys.stderr)
                return 1
            time.sleep(0.05)
        with started_host(replace(image, ramdisk=initrd), prefix="pxb-") as host:
            if os.environ.get("PYXEN_BENCH_PYSPY"):
                spy = subprocess.Popen([os.environ.get("PYSPY", shutil.which("py-spy") or "py-spy"), "record", "--idle",
                                        "--format", "raw", "-r", "500", "-o", os.environ["PYXEN_BENCH_PYSPY"],
                                        "-p", str(backendd_pid(host))])
            dm_args = ["-chardev", f"socket,id=qsd0,path={qsd_sock}",
                       "-device", "vhost-user-blk-pci,chardev=qsd0,num-queues=1"]
            host.create("blkbench", memory=MEMORY, cmdline_extra="pyxen.xsagent=0 pyxen.dhcp=0",
                        extra_lines=f"disk = ['format=raw, vdev=xvdb, access=rw, target={imgs['pyxen']}']\n"
                                    f"device_model_args = {json.dumps(dm_args)}\n")
            text = host.wait_console("blkbench", "pyxen run exit", timeout=120 + 120 * rounds)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
                spy = None
            host.xl("destroy", "blkbench", check=False)
        queues = [line.strip() for line in text.splitlines() if line.startswith(("bench disks", "bench queue", "bench irq", "bench stat"))]
        print("\n".join(queues))
        runs = parse(text)
        if "randio failed" in text or any(len(rs) != rounds for rs in runs.values()):
            print(text[-3000:])
            return 1
        summary = summarize(runs)
        print_table(summary, rounds)  # type: ignore[arg-type]
        figures = [figure(FIGURES[k][0], FIGURES[k][1], pyxen=summary[k]["pyxen"]["median"],  # type: ignore[index]
                          reference=summary[k]["qsd"]["median"], ratio=summary[k]["ratio"]["median"],  # type: ignore[index]
                          goal=(">=", GOALS[k])) for k in METRICS]
        out = Path(__file__).parent / "results" / "blk.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({
            **facts,
            "what": "One demo guest made by xl create (TCG, 256 MiB) with two disks: an xl disk served by "
                    "the host's backendd blkback, and qemu-storage-daemon's vhost-user-blk export as the "
                    "reference, on the same QEMU; O_DIRECT dd 1 MiB and randio 4 KiB QD1, interleaved rounds.",
            "figures": figures,
            "size_mb": SIZE_MB, "rand_count": RAND_COUNT, "rounds": rounds, "accel": "tcg", "memory_mib": MEMORY,
            "load": "O_DIRECT; seq = busybox dd bs=1M; rand = bench/randio 4 KiB QD1 xorshift offsets",
            "reference": "qemu-storage-daemon --export vhost-user-blk (cache.direct=off), same guest",
            "loadavg_at_end": list(os.getloadavg()), "guest_queues": queues,
            "summary": summary, "runs": runs}, indent=2) + "\n")
        return 0
    finally:
        if spy is not None:
            spy.kill()
            spy.wait()
        if qsd is not None and qsd.poll() is None:
            qsd.terminate()
            try:
                qsd.wait(10)
            except subprocess.TimeoutExpired:
                qsd.kill()
                qsd.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
