#!/bin/busybox sh
# init of the pyxen demo guest: a Debian cloud kernel's virtio modules and busybox.
# It runs the script passed as pyxen.run=<base64> on the kernel command line, then prints
# "pyxen demo guest up" and keeps a shell on the console.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp /run /mnt /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
for m in $(cat /lib/modules/load); do insmod "/lib/modules/$m.ko" || echo "pyxen demo guest: insmod $m failed"; done
ip link set lo up
name=guest
xsagent=1
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        pyxen.name=*) name="${arg#pyxen.name=}" ;;
        pyxen.xsagent=0) xsagent=0 ;;
        pyxen.run=*) echo "${arg#pyxen.run=}" | base64 -d > /tmp/run.sh ;;
    esac
done
hostname "$name"

# The guest side of Xen's PV control protocol (what Linux's xenbus driver does on Xen): find the
# xenstore port, advertise feature-poweroff/-reboot, and act on ~/control/shutdown, writing ""
# back as the acknowledgement; a letter in ~/control/sysrq (xl sysrq) is acknowledged the same
# way and handed to the kernel's magic SysRq, as Linux's sysrq_handler does. xs_wire.h frames are
# built with printf; replies are read a byte at a time so no reply is ever half-consumed.
xs_send() {  # type length: the 16-byte header (little-endian, lengths < 256)
    printf "\\$(printf %03o "$1")\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000\\$(printf %03o "$2")\\000\\000\\000" >&3
}
xs_recv() {  # prints the payload of the next reply
    set -- $(dd bs=1 count=16 <&3 2>/dev/null | od -An -tu4)
    [ "${4:-0}" -gt 0 ] && dd bs=1 count="$4" <&3 2>/dev/null
}
xs_read() { xs_send 2 $((${#1} + 1)); printf '%s\000' "$1" >&3; xs_recv; }
xs_write() { xs_send 11 $((${#1} + 1 + ${#2})); printf '%s\000%s' "$1" "$2" >&3; xs_recv >/dev/null; }
xs_agent() {
    exec 3<>"$1"
    xs_write control/feature-poweroff 1
    xs_write control/feature-reboot 1
    while sleep 1; do
        # Xen's PV vCPU hotplug: cpu/N/availability says whether vCPU N is to be online.
        for c in /sys/devices/system/cpu/cpu[1-9]*; do
            [ -f "$c/online" ] || continue
            want="$(xs_read "cpu/${c##*/cpu}/availability")"
            case "$want:$(cat "$c/online")" in
                online:0) echo 1 > "$c/online" ;;
                offline:1) echo 0 > "$c/online" ;;
            esac
        done
        case "$(xs_read control/shutdown)" in
            poweroff|halt) xs_write control/shutdown ""; echo "pyxen: shutdown requested"; poweroff -f ;;
            reboot) xs_write control/shutdown ""; echo "pyxen: reboot requested"; reboot -f ;;
        esac
        key="$(xs_read control/sysrq)"
        if [ "${#key}" = 1 ]; then  # (a missing node would read as the error text)
            xs_write control/sysrq ""
            echo "$key" > /proc/sysrq-trigger
        fi
    done
}
# (pyxen.xsagent=0 leaves the port, which only one process may open, to the run script.)
for d in /sys/class/virtio-ports/*; do
    [ "$xsagent" = 1 ] && [ "$(cat "$d/name" 2>/dev/null)" = org.xenproject.xenstore ] && xs_agent "/dev/${d##*/}" &
done
echo "pyxen demo guest: $(uname -r), $(grep -c ^processor /proc/cpuinfo) vcpu(s), $(awk '/MemTotal/ {print $2}' /proc/meminfo) kB"
if [ -f /tmp/run.sh ]; then
    sh /tmp/run.sh
    echo "pyxen run exit $?"
fi
echo "pyxen demo guest up"
while true; do setsid cttyhack sh -l; done
