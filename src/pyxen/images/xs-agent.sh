#!/bin/sh
# pyxen's guest agent: a POSIX sh script that runs under busybox (the demo guest's initramfs,
# where init.sh starts it) and under Debian's dash with coreutils and iproute2 (installed as
# /usr/sbin/pyxen-guest-agent and run by pyxen-guest-agent.service). It speaks xenstore's wire
# protocol over the domain's org.xenproject.xenstore virtio-serial port, as Linux's xenbus driver
# would over Xen's ring.
#
# Usage: pyxen-guest-agent [PORT]     (PORT: /dev/vportNpM; found from sysfs when omitted)
#        pyxen-guest-agent --functions     (sourced with that $1: defines the functions, for tests)
# Environment (the defaults suit a systemd guest):
#   PYXEN_AGENT_DHCP=1        start busybox udhcpc on each NIC whose backend is on xenbr0
#                             (default 0: the guest's own network manager does DHCP)
#   PYXEN_AGENT_HOSTNAME      the name udhcpc sends (default: hostname)
#   PYXEN_AGENT_POWEROFF      what control/shutdown=poweroff|halt runs (default: systemctl poweroff)
#   PYXEN_AGENT_REBOOT        what control/shutdown=reboot runs (default: systemctl reboot)
#   PYXEN_AGENT_WAIT          seconds to wait for the port to appear (default 60)
dhcp="${PYXEN_AGENT_DHCP:-0}"
name="${PYXEN_AGENT_HOSTNAME:-$(hostname)}"
poweroff_cmd="${PYXEN_AGENT_POWEROFF:-systemctl poweroff}"
reboot_cmd="${PYXEN_AGENT_REBOOT:-systemctl reboot}"

# The guest side of Xen's PV control protocol (what Linux's xenbus driver does on Xen): find the
# xenstore port, advertise feature-poweroff/-reboot, and act on ~/control/shutdown, writing ""
# back as the acknowledgement; a letter in ~/control/sysrq (xl sysrq) is acknowledged the same
# way and handed to the kernel's magic SysRq, as Linux's sysrq_handler does. xs_wire.h frames are
# built with printf; replies are read a byte at a time so no reply is ever half-consumed.
#
# A request can lose its reply: the port's host side is a socket that does not travel with the
# guest, so a request made just before a live migration's final stop is answered (or not) on the
# source, and the guest resumes on a fresh connection. Xen's xenbus never sees that (its ring is
# guest memory); here each request carries its own req_id, a request with no reply within 5 s is
# sent again under a new one, and a reply whose req_id is not the awaited one is skipped. Every
# request the agent makes (read, write, rm, directory) can be repeated without harm.
#
# The agent waits for xenstore to tell it something (XS_WATCH on control/shutdown,
# control/sysrq, cpu and device/vif, as Linux's xenbus drivers watch them) instead of asking
# once a second: on an emulated CPU every process a shell starts costs the guest several ms, and
# a loop that asked every second made an idle guest's QEMU use 20 times the CPU of a bare one.
# A request's xs_wire.h header (type, req_id, tx_id 0, length: little-endian uint32s), as printf
# escapes computed by arithmetic (no $(printf) child per byte).
#: Seconds a request waits for its reply before it is made again (the tests shorten it).
XS_REPLY_WAIT=5
xs_send() {  # type req_id length
    printf "\\$(($1 >> 6 & 3))$(($1 >> 3 & 7))$(($1 & 7))\\000\\000\\000\\$(($2 >> 6 & 3))$(($2 >> 3 & 7))$(($2 & 7))\\000\\000\\000\\000\\000\\000\\000\\$(($3 >> 6 & 3))$(($3 >> 3 & 7))$(($3 & 7))\\$(($3 >> 14 & 3))$(($3 >> 11 & 7))$(($3 >> 8 & 7))\\000\\000"
}
xs_call() {  # type length format args...: prints the reply's payload; status 1 on an XS_ERROR reply
    xs_type=$1; xs_len=$2; shift 2
    xs_id=0
    while :; do
        xs_id=$((xs_id % 255 + 1))
        # shellcheck disable=SC2059
        { xs_send "$xs_type" "$xs_id" "$xs_len"; printf "$@"; } >&3 2>/dev/null
        while :; do
            # the header within 5 s, else the request is made again; nothing at all (the port's
            # host side is away: xenstored restarting; or the port was replaced: a restore or a
            # migration) waits 1 s and opens the port again
            xs_header "$XS_REPLY_WAIT"
            case "$r_status" in
                lost) xs_lost && return 2; break ;;
                timeout) break ;;
            esac
            if [ "$r_id" = "$xs_id" ] && [ "$r_type" != 16 ]; then
                [ "$r_len" = 0 ] || dd bs=1 count="$r_len" <&3 2>/dev/null
                return 0
            fi
            if [ "$r_type" = 15 ]; then  # a watch fired meanwhile: noted for the main loop
                xs_event
                continue
            fi
            [ "$r_len" = 0 ] || dd bs=1 count="$r_len" <&3 >/dev/null 2>&1
            [ "$r_id" = "$xs_id" ] && return 1  # XS_ERROR; any other req_id: a late reply, skipped
        done
    done
}
# The next message's header from the port, waiting at most $1 s for its first byte: sets r_type,
# r_id, r_len and r_status: ok; timeout; lost (the port gave nothing: closed, or gone). The bytes
# go through a file: busybox's timeout leaves a watcher process behind for up to a second, which
# would hold a pipe open (and a command substitution waiting) that long.
xs_header() {
    r_type=""; r_id=""; r_len=""
    timeout "$1" dd bs=1 count=1 of="$xs_hdr" <&3 >/dev/null 2>&1
    r_rc=$?
    if [ -s "$xs_hdr" ]; then
        dd bs=1 count=15 <&3 >> "$xs_hdr" 2>/dev/null
        read -r r_type r_id _ r_len <<EOF
$(od -An -tu4 "$xs_hdr")
EOF
    fi
    if [ -n "$r_len" ]; then r_status=ok
    elif [ "$r_rc" = 124 ] || [ "$r_rc" = 143 ]; then r_status=timeout  # (coreutils', busybox's timeout)
    else r_status=lost
    fi
}
# The payload of a WATCH_EVENT whose header was just read: path and token, one a line, go to the
# events file the main loop reads (a call may run in a subshell: $(xs_read ...)).
xs_event() {
    [ "$r_len" = 0 ] && return 0
    if [ -n "$xs_events" ]; then
        dd bs=1 count="$r_len" <&3 2>/dev/null | tr '\000' '\n' >> "$xs_events"
    else
        dd bs=1 count="$r_len" <&3 >/dev/null 2>&1
    fi
}
# The port gave nothing. In the agent the call fails at once (status 2) and the main loop, a
# second later, opens the port again, found by its name (the same device when only its host
# side went away, a new one after a restore or a migration) and makes its watches again (they
# were the old connection's); sourced for tests, the call is made again a second later.
xs_lost() {
    [ -n "$xs_events" ] || { sleep 1; return 1; }
    printf -- '-\nreconnect\n' >> "$xs_events"
}
xs_read() { xs_call 2 $((${#1} + 1)) '%s\000' "$1"; }
xs_write() { xs_call 11 $((${#1} + 1 + ${#2})) '%s\000%s' "$1" "$2" >/dev/null; }
xs_rm() { xs_call 13 $((${#1} + 1)) '%s\000' "$1" >/dev/null; }
xs_dir() { xs_call 1 $((${#1} + 1)) '%s\000' "$1" | tr '\000' ' '; }
xs_watch() { xs_call 4 $((${#1} + ${#2} + 2)) '%s\000%s\000' "$1" "$2" >/dev/null; }

# Several requests as one exchange: the agent's reports write a dozen nodes at a time, and the
# setup watches four paths. The requests go out together and their replies are read back
# together, with one dd and one od for all instead of four or five processes each (a process
# costs an emulated guest several ms: the one-at-a-time first pass was ~2 s of guest CPU). A
# request whose "OK" does not come back (an XS_ERROR; a reply lost in a migration's final stop,
# after 5 s; a lost port) is made again on its own with xs_call, which repeats and reports as
# for any call; the batch's late replies are then skipped as any other req_id is. Batch req_ids
# are 101 and up (xs_call's start at 1).
xs_writes() { xs_batch 11 "$@"; }  # path value [path value ...]
xs_watches() { xs_batch 4 "$@"; }  # path token [path token ...]
xs_reads() { xs_batch 2 "$@"; }  # path [path ...]: the values in xs_val_1, xs_val_2, ... (their
                                 # first lines; "" for a node that is not there, as xs_read)
xs_batch() {  # type a [b] [a [b] ...]: WRITE (a\0b), WATCH (a\0b\0) or READ (a\0) requests
    xb_type=$1; shift
    xb_per=2; xb_min=19  # (an "OK" reply is 19 bytes, an error's more)
    [ "$xb_type" = 2 ] && { xb_per=1; xb_min=16; }
    xb_n=0; xb_k=0; xb_ev=0
    for xb_a; do  # (a request goes out when its arguments are complete)
        if [ "$xb_per" = 2 ] && [ $((xb_k % 2)) = 0 ]; then xb_p=$xb_a
        else
            xb_n=$((xb_n + 1))
            case "$xb_type" in
                2) eval "xs_val_$xb_n="; xs_send 2 $((100 + xb_n)) $((${#xb_a} + 1)); printf '%s\000' "$xb_a" ;;
                4) xs_send 4 $((100 + xb_n)) $((${#xb_p} + ${#xb_a} + 2)); printf '%s\000%s\000' "$xb_p" "$xb_a"
                   xb_ev=$((xb_ev + 16 + ${#xb_p} + ${#xb_a} + 2)) ;;  # (its first event's size)
                *) xs_send 11 $((100 + xb_n)) $((${#xb_p} + 1 + ${#xb_a})); printf '%s\000%s' "$xb_p" "$xb_a" ;;
            esac
        fi
        xb_k=$((xb_k + 1))
    done >&3 2>/dev/null
    # Read at least what the replies not yet seen must hold, never more, so nothing after them
    # is consumed unparsed.
    : > "$xs_hdr"
    xb_have=0; xb_want=$((xb_min * xb_n + xb_ev)); xb_rc=0
    while :; do
        xb_last=$xb_have
        timeout "$XS_REPLY_WAIT" dd bs=1 count=$((xb_want - xb_have)) <&3 >> "$xs_hdr" 2>/dev/null
        xb_rc=$?
        # shellcheck disable=SC2046
        xs_parse "$xb_type" $(od -An -v -tu1 "$xs_hdr")
        # (a new watch fires once at once: its event follows its "OK", and is read here too)
        xb_evs=0; [ "$xb_type" = 4 ] && xb_evs=$((xb_n - xb_nev))
        [ "$xb_seen" = "$xb_n" ] && [ "$xb_more" = 0 ] && [ "$xb_evs" -le 0 ] && break
        [ "$xb_rc" = 0 ] || break  # a timeout, or the port gave out
        [ "$xb_have" -gt "$xb_last" ] || { xb_rc=1; break; }  # the port's end: nothing more comes
        [ "$xb_evs" -gt 0 ] || xb_evs=0
        xb_want=$((xb_have + xb_more + 16 * (xb_n - xb_seen + xb_evs - xb_partial)))
    done
    [ -n "$xs_events" ] && [ -n "$xb_events" ] && printf "$xb_events" >> "$xs_events"
    if [ "$xb_ok" != "$xb_n" ] && [ "$xb_rc" != 0 ] && [ "$xb_rc" != 124 ] && [ "$xb_rc" != 143 ] && [ -n "$xs_events" ]; then
        xs_lost; return 2  # the port gave nothing: the main loop opens it again
    fi
    xb_i=0; xb_k=0
    for xb_a; do  # the values read; those not answered, one at a time
        if [ "$xb_per" = 2 ] && [ $((xb_k % 2)) = 0 ]; then xb_p=$xb_a
        else
            xb_i=$((xb_i + 1))
            case "$xb_oks " in
                *" $((100 + xb_i)) "*)
                    if [ "$xb_type" = 2 ]; then
                        eval "xb_e=\${xb_v_$xb_i}"
                        printf "$xb_e" > "$xs_hdr"
                        IFS= read -r xs_val < "$xs_hdr"
                        eval "xs_val_$xb_i=\$xs_val"
                    fi ;;
                *) case "$xb_type" in
                       2) eval "xs_val_$xb_i=\$(xs_read \"\$xb_a\" | head -n 1)" ;;
                       4) xs_watch "$xb_p" "$xb_a" ;;
                       *) xs_write "$xb_p" "$xb_a" ;;
                   esac ;;
            esac
        fi
        xb_k=$((xb_k + 1))
    done
    return 0
}
# The messages in a batch's bytes (decimal, as od prints them): counts the batch's replies
# (xb_seen; xb_ok of them "OK" or, for reads, answered, their req_ids in xb_oks; a value as
# printf text in xb_v_<n>), keeps watch events (xb_nev) as printf text for
# the events file (xb_events), and says how many bytes the last, incomplete message still
# lacks (xb_more; xb_partial 1 when that one may be a reply) and how many were read (xb_have).
xs_parse() {  # type bytes...
    xb_t=$1; shift
    xb_have=$#; xb_seen=0; xb_ok=0; xb_oks=""; xb_events=""; xb_nev=0; xb_more=0; xb_partial=0
    while [ $# -ge 16 ]; do
        m_type=$(($1 + $2 * 256)); m_id=$(($5 + $6 * 256)); m_len=$((${13} + ${14} * 256 + ${15} * 65536))
        shift 16
        if [ $# -lt "$m_len" ]; then
            xb_more=$((m_len - $#)); xb_partial=1
            return
        fi
        if [ "$m_type" = 15 ]; then  # a watch event: path and token, one a line
            xb_nev=$((xb_nev + 1))
            while [ "$m_len" -gt 0 ]; do
                if [ "$1" = 0 ]; then xb_events="$xb_events\\n"
                else xb_events="$xb_events\\$(($1 >> 6 & 3))$(($1 >> 3 & 7))$(($1 & 7))"
                fi
                shift; m_len=$((m_len - 1))
            done
            continue
        fi
        if [ "$m_id" -gt 100 ] && [ "$m_id" -le $((100 + xb_n)) ] && { [ "$m_type" = "$xb_t" ] || [ "$m_type" = 16 ]; }; then
            xb_seen=$((xb_seen + 1))
            if [ "$xb_t" = 2 ]; then  # a value (an error: no value), as printf text
                xb_e=""
                while [ "$m_type" = 2 ] && [ "$m_len" -gt 0 ]; do
                    xb_e="$xb_e\\$(($1 >> 6 & 3))$(($1 >> 3 & 7))$(($1 & 7))"
                    shift; m_len=$((m_len - 1))
                done
                eval "xb_v_$((m_id - 100))=\$xb_e"
                xb_ok=$((xb_ok + 1)); xb_oks="$xb_oks $m_id"
            elif [ "$m_type" = "$xb_t" ] && [ "$m_len" = 3 ]; then xb_ok=$((xb_ok + 1)); xb_oks="$xb_oks $m_id"
            fi
        fi
        [ "$m_len" = 0 ] || shift "$m_len"
    done
    if [ $# -gt 0 ]; then xb_more=$((16 - $#)); xb_partial=1; fi
}

# The guest agent's reports, as XenServer's xe-guest-utilities (xe-daemon) writes them and
# xapi's xapi_guest_agent.ml reads them: the OS under data/os_*, the agent's version under
# attr/PVAddons/*, each vif's addresses under attr/vif/<devid>/ipv4|ipv6/<n> (the interface
# found by its MAC in device/vif/<devid>/mac), memory under data/meminfo_*, and data/updated
# after any change. A DHCP client is started on each NIC whose backend is on xenbr0.
report_static() {  # one batch; os-release and the release read by the shell (no child)
    os_id=""; os_version=""; os_pretty=""
    [ -r /etc/os-release ] && while IFS='=' read -r key value; do
        case "$value" in
            \"*\") value=${value#\"}; value=${value%\"} ;;
            \'*\') value=${value#\'}; value=${value%\'} ;;
        esac
        case "$key" in
            ID) os_id=$value ;;
            VERSION_ID) os_version=$value ;;
            PRETTY_NAME) os_pretty=$value ;;
        esac
    done < /etc/os-release
    read -r os_uname < /proc/sys/kernel/osrelease
    major="${os_version%%.*}"; minor="${os_version#*.}"; [ "$minor" = "$os_version" ] && minor=0
    xs_writes data/os_distro "$os_id" data/os_majorver "$major" data/os_minorver "$minor" \
        data/os_uname "$os_uname" data/os_name "$os_pretty" \
        attr/PVAddons/Installed 1 attr/PVAddons/MajorVersion 1 attr/PVAddons/MinorVersion 0 \
        attr/PVAddons/MicroVersion 0 attr/PVAddons/BuildVersion 0 \
        control/feature-poweroff 1 control/feature-reboot 1
}
report_memory() {  # sets changed=1 when it wrote (only what differs from the last report)
    mem_writes=""
    while read -r key value _; do
        case "$key" in
            MemTotal:) [ "$value" = "$mem_total" ] || { mem_writes="$mem_writes data/meminfo_total $value"; mem_total=$value; } ;;
            MemAvailable:) [ "$value" = "$mem_free" ] || { mem_writes="$mem_writes data/meminfo_free $value"; mem_free=$value; } ;;
        esac
    done < /proc/meminfo
    # shellcheck disable=SC2086
    [ -z "$mem_writes" ] || { xs_writes $mem_writes; changed=1; }
}
vif_devid() {  # the devid whose device/vif/<devid>/mac is $1
    for id in $(xs_dir device/vif); do
        [ "$(xs_read "device/vif/$id/mac" | tr A-F a-f)" = "$1" ] && { echo "$id"; return; }
    done
}
report_addresses() {  # sets changed=1 when it wrote or removed a node
    for d in /sys/class/net/eth*; do
        [ -e "$d" ] || continue
        ifc="${d##*/}"
        eval "devid=\${devid_$ifc}"
        if [ -z "$devid" ]; then
            devid="$(vif_devid "$(cat "$d/address")")"
            [ -n "$devid" ] || continue
            eval "devid_$ifc=$devid"
            reported="$reported $ifc:$devid"
            if [ "$dhcp" = 1 ] && [ "$(xs_read "$(xs_read "device/vif/$devid/backend")/bridge")" = xenbr0 ]; then
                udhcpc -f -i "$ifc" -s /etc/udhcpc.script -x "hostname:$name" -T 2 -t 10 -A 3 >/dev/null 2>&1 &
            fi
        fi
        for fam in 4 6; do
            addrs=""
            n=0
            while read -r _ _ _ a _; do
                [ -n "$a" ] || continue
                addrs="$addrs ${a%/*}"
                n=$((n + 1))
            done <<EOF
$(ip -o -$fam addr show dev "$ifc" 2>/dev/null)
EOF
            eval "old=\${addrs${fam}_$ifc}; oldn=\${n${fam}_$ifc:-0}"
            [ "$addrs" = "$old" ] && continue
            i=0
            for a in $addrs; do xs_write "attr/vif/$devid/ipv$fam/$i" "$a"; i=$((i + 1)); done
            while [ "$i" -lt "$oldn" ]; do xs_rm "attr/vif/$devid/ipv$fam/$i"; i=$((i + 1)); done
            eval "addrs${fam}_$ifc=\"$addrs\"; n${fam}_$ifc=$n"
            changed=1
        done
    done
    for pair in $reported; do  # a NIC that went away (network-detach): its addresses go too
        ifc="${pair%:*}"
        [ -e "/sys/class/net/$ifc" ] && continue
        xs_rm "attr/vif/${pair#*:}"
        reported="$(echo "$reported" | sed "s/ $pair//")"
        eval "devid_$ifc=; addrs4_$ifc=; addrs6_$ifc=; n4_$ifc=0; n6_$ifc=0"
        changed=1
    done
}
# Xen's PV vCPU hotplug: cpu/N/availability says whether vCPU N is to be online.
check_cpus() {
    for c in /sys/devices/system/cpu/cpu[1-9]*; do
        [ -f "$c/online" ] || continue
        want="$(xs_read "cpu/${c##*/cpu}/availability")"
        read -r online < "$c/online"
        case "$want:$online" in
            online:0) echo 1 > "$c/online" ;;
            offline:1) echo 0 > "$c/online" ;;
        esac
    done
}
check_control() {
    xs_reads control/shutdown control/sysrq
    key="$xs_val_2"
    case "$xs_val_1" in
        poweroff|halt) xs_write control/shutdown ""; echo "pyxen: shutdown requested"; $poweroff_cmd ;;
        reboot) xs_write control/shutdown ""; echo "pyxen: reboot requested"; $reboot_cmd ;;
    esac
    if [ "${#key}" = 1 ]; then
        xs_write control/sysrq ""
        echo "$key" > /proc/sysrq-trigger
    fi
}
# How long the agent waits for xenstore before it looks at the guest's memory and addresses
# anyway (xe-daemon's interval), and how many 1 s passes follow its start, a new connection or
# a NIC's arrival or departure (an address comes from DHCP a few seconds after its NIC; a
# systemd guest under TCG on a busy host may take well over a minute after the agent starts).
XS_PERIOD=60
XS_FAST_PASSES=120
fast_passes() {  # the 1 s passes when the guest has a NIC (without, no address to wait for)
    fast=0
    for d in /sys/class/net/eth*; do [ -e "$d" ] && fast=$XS_FAST_PASSES; done
}
xs_agent() {  # [PORT]: the port to open (none: fd 3 is open on it already)
    [ -z "$1" ] || exec 3<>"$1"
    : > "$xs_events"
    reported=""
    setup=1
    while :; do
        # The first pass, and after a new connection (xenstored restarted; a restore or a
        # migration plugs a new port, and gives the guest a xenstore area made anew): watches
        # again, and when data/updated is missing, everything again.
        if [ "$setup" = 1 ]; then
            setup=""
            # each fires once at once: each is looked at now
            xs_watches control/shutdown pyxen:control control/sysrq pyxen:control cpu pyxen:cpu \
                device/vif pyxen:device
            changed=""
            xs_reads data/updated
            if [ -z "$xs_val_1" ]; then
                report_static
                mem_total=""; mem_free=""
                report_memory
                for v in $(set | sed -n 's/^\(addrs[46]_eth[0-9]*\)=.*/\1/p'); do eval "$v="; done
                changed=1
            fi
            report_addresses
            [ -n "$changed" ] && xs_writes data/updated "$(date '+%a %b %e %H:%M:%S %Y')"
            fast_passes
        fi
        # What fired (written by xs_event, here or inside a call), each looked at once.
        do_control=""; do_cpu=""
        while read -r ev_path && read -r ev; do
            case "$ev" in
                pyxen:control) do_control=1 ;;
                pyxen:cpu) do_cpu=1 ;;
                pyxen:device) case "$ev_path" in */vif/*) fast=$XS_FAST_PASSES ;; esac ;;  # a NIC comes or goes
                reconnect) setup=1 ;;
            esac
        done < "$xs_events"
        : > "$xs_events"
        if [ -n "$setup" ]; then
            exec 3>&-
            sleep 1
            until xs_p="$(xs_port)" && { command exec 3<>"$xs_p"; } 2>/dev/null; do sleep 1; done
            continue
        fi
        [ -n "$do_cpu" ] && check_cpus
        [ -n "$do_control" ] && check_control
        [ -s "$xs_events" ] && continue
        # Wait for xenstore's next message: a watch event (noted, looked at above), or nothing
        # for a while: a pass over the addresses, and the memory when the wait was a long one.
        if [ "$fast" -gt 0 ]; then xs_header 1; else xs_header "$XS_PERIOD"; fi
        case "$r_status" in
            ok) if [ "$r_type" = 15 ]; then xs_event
                else [ "$r_len" = 0 ] || dd bs=1 count="$r_len" <&3 >/dev/null 2>&1  # a late reply
                fi ;;
            lost) xs_lost ;;
            timeout)
                changed=""
                if [ "$fast" -gt 0 ]; then fast=$((fast - 1)); else report_memory; fi
                report_addresses
                [ -n "$changed" ] && xs_writes data/updated "$(date '+%a %b %e %H:%M:%S %Y')" ;;
        esac
    done
}
# The port: the virtio-serial port QEMU names org.xenproject.xenstore. Under systemd the agent
# may start before udev has loaded virtio_console, so it waits for the port a while.
xs_port() {
    for d in /sys/class/virtio-ports/*; do
        [ "$(cat "$d/name" 2>/dev/null)" = org.xenproject.xenstore ] && { echo "/dev/${d##*/}"; return 0; }
    done
    return 1
}
# Watch events and lost connections noted for the main loop (none when sourced for tests), and
# where a message's header is read.
xs_events=""
xs_hdr="${TMPDIR:-/tmp}/pyxen-guest-agent.$$.header"
[ "$1" = --functions ] && return 0
xs_events="${TMPDIR:-/tmp}/pyxen-guest-agent.$$"
port="$1"
if [ -z "$port" ]; then
    waited=0
    until port="$(xs_port)"; do
        if [ "$waited" -ge "${PYXEN_AGENT_WAIT:-60}" ]; then
            echo "pyxen-guest-agent: no org.xenproject.xenstore port in /sys/class/virtio-ports" >&2
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
fi
xs_agent "$port"
