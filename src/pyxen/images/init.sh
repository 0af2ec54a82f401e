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
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        pyxen.name=*) name="${arg#pyxen.name=}" ;;
        pyxen.run=*) echo "${arg#pyxen.run=}" | base64 -d > /tmp/run.sh ;;
    esac
done
hostname "$name"
echo "pyxen demo guest: $(uname -r), $(grep -c ^processor /proc/cpuinfo) vcpu(s), $(awk '/MemTotal/ {print $2}' /proc/meminfo) kB"
if [ -f /tmp/run.sh ]; then
    sh /tmp/run.sh
    echo "pyxen run exit $?"
fi
echo "pyxen demo guest up"
while true; do setsid cttyhack sh -l; done
