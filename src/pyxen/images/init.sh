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
dhcp=1
static_ip=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        pyxen.name=*) name="${arg#pyxen.name=}" ;;
        pyxen.xsagent=0) xsagent=0 ;;
        pyxen.dhcp=0) dhcp=0 ;;
        pyxen.ip=*) static_ip="${arg#pyxen.ip=}"; dhcp=0 ;;
        pyxen.run=*) echo "${arg#pyxen.run=}" | base64 -d > /tmp/run.sh ;;
    esac
done
hostname "$name"
# What the guest agent reports as its OS, read as xe-linux-distribution reads os-release.
mkdir -p /etc
cat > /etc/os-release <<EOF
NAME="pyxen demo guest"
ID=pyxen-demo
VERSION_ID="1.0"
PRETTY_NAME="pyxen demo guest 1.0 (BusyBox $(busybox | sed -n '1s/^BusyBox \(v[^ ]*\).*/\1/p'))"
EOF
# pyxen.ip=ADDR/LEN: a static address on eth0, and no DHCP.
if [ -n "$static_ip" ]; then
    { ip link set eth0 up && ip addr add "$static_ip" dev eth0; } || echo "pyxen demo guest: pyxen.ip=$static_ip failed"
fi
# udhcpc's hook (busybox runs it with deconfig, bound, renew, leasefail or nak; the lease in
# $ip, $mask (prefix length) and $router). It adds and removes only its own address, so an
# address a run script gives the interface stays.
cat > /etc/udhcpc.script <<'EOF'
#!/bin/sh
f="/tmp/dhcp.$interface"
case "$1" in
    deconfig)
        ip link set "$interface" up
        [ -f "$f" ] && ip addr del "$(cat "$f")" dev "$interface" 2>/dev/null
        rm -f "$f" ;;
    bound|renew)
        new="$ip/${mask:-24}"
        old="$(cat "$f" 2>/dev/null)"
        if [ "$old" != "$new" ]; then
            [ -n "$old" ] && ip addr del "$old" dev "$interface" 2>/dev/null
            ip addr add "$new" dev "$interface" && echo "$new" > "$f"
        fi
        if [ -n "$router" ] && ! ip route | grep -q '^default'; then
            ip route add default via "${router%% *}" dev "$interface"
        fi
        echo "pyxen demo guest: dhcp $1 $interface $new" > /dev/console ;;
esac
EOF
chmod +x /etc/udhcpc.script

# The guest agent (xs-agent.sh, /bin/pyxen-guest-agent here) does what xe-guest-utilities does
# on XenServer, over the xenstore port. (pyxen.xsagent=0 leaves the port, which only one process
# may open, to the run script.)
for d in /sys/class/virtio-ports/*; do
    [ "$xsagent" = 1 ] && [ "$(cat "$d/name" 2>/dev/null)" = org.xenproject.xenstore ] &&
        PYXEN_AGENT_DHCP="$dhcp" PYXEN_AGENT_HOSTNAME="$name" PYXEN_AGENT_POWEROFF="poweroff -f" \
        PYXEN_AGENT_REBOOT="reboot -f" /bin/pyxen-guest-agent "/dev/${d##*/}" &
done
echo "pyxen demo guest: $(uname -r), $(grep -c ^processor /proc/cpuinfo) vcpu(s), $(awk '/MemTotal/ {print $2}' /proc/meminfo) kB"
if [ -f /tmp/run.sh ]; then
    sh /tmp/run.sh
    echo "pyxen run exit $?"
fi
echo "pyxen demo guest up"
while true; do setsid cttyhack sh -l; done
