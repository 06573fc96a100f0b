#!/bin/busybox sh
# /init of the kernel-matrix guest (tests/vm_matrix.rs). Runs netsonde on this kernel, drives
# one HTTP exchange between two network namespaces over a veth pair, and prints what happened
# on the serial console between VMTEST markers. Traffic never leaves the guest.
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/bin:/sbin
# busybox's shell runs its own applets before PATH: the host's iproute2 and nftables by path.
ip() { /usr/sbin/ip "$@"; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /run/netns /var/run
ln -s /run/netns /var/run/netns
echo "VMTEST kernel $(uname -r)"
for m in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$m" || echo "VMTEST insmod $m failed"
done
ip link set dev lo up
ip netns add c
ip netns add s
ip link add name veth-c type veth peer name veth-s
ip link set dev veth-c netns c
ip link set dev veth-s netns s
ip -n c addr add 10.231.0.1/24 dev veth-c
ip -n s addr add 10.231.0.2/24 dev veth-s
ip -n c link set dev veth-c up
ip -n s link set dev veth-s up
ip -n c link set dev lo up
ip -n s link set dev lo up
# The client's packets wait 50 ms on the way out: the handshake takes that long.
ip netns exec c /usr/sbin/tc qdisc add dev veth-c root netem delay 50ms || echo "VMTEST netem failed"
# A rule set on both sides: every packet passes netfilter hooks (counted, accepted).
for ns in c s; do
    printf 'table inet t {\n chain i {\n  type filter hook input priority 0;\n  counter\n }\n chain o {\n  type filter hook output priority 0;\n  counter\n }\n}\n' \
        | ip netns exec $ns /usr/sbin/nft -f - || echo "VMTEST nft failed in $ns"
done

printf 'capture:\n  fentry: false\n' > /tmp/kprobes.yaml
# Requests per family in each pass's loopback burst (tests/vm_matrix.rs counts them).
BURST=20

# Waits until the agent $1, logging to $2, has attached its probes; powers off if it dies or
# takes more than five minutes ($3 names it in the message).
wait_attached() {
    i=0
    while ! grep -q "probes attached" "$2"; do
        i=$((i + 1))
        if [ $i -gt 600 ] || ! kill -0 "$1" 2>/dev/null; then
            echo "VMTEST agent failed to start ($3)"
            cat "$2"
            poweroff -f
        fi
        sleep 0.5
    done
    echo "VMTEST agent attached ($3) after ${i} polls"
}

# One pass: the probe table, then the agent while one exchange crosses the veth pair.
# $1 names the pass; the rest are extra arguments for netsonde.
run_pass() {
    name=$1
    shift
    echo "VMTEST probes-$name begin"
    /netsonde probes "$@" 2>&1
    echo "VMTEST probes-$name end"
    /netsonde run "$@" --exporter console --exporter file --file-path /tmp/otlp-$name.jsonl \
        > /tmp/run-$name.out 2> /tmp/run-$name.err &
    agent=$!
    wait_attached $agent /tmp/run-$name.err $name
    ip netns exec s /tiny_httpd 10.231.0.2 8080 &
    server=$!
    sleep 1
    # No neighbour entry: the SYN waits for ARP, then for netem, like the ARP request did.
    ip -n c neigh del 10.231.0.2 dev veth-c 2>/dev/null
    # The client connects at once and sends its request two seconds later; in between its
    # neighbour entry is deleted again, so the request waits for ARP too.
    (sleep 2; printf 'GET /index.html HTTP/1.0\r\nHost: guest\r\n\r\n'; sleep 3) \
        | ip netns exec c nc 10.231.0.2 8080 > /tmp/client-$name.out &
    client=$!
    sleep 1
    ip -n c neigh del 10.231.0.2 dev veth-c || echo "VMTEST neighbour delete failed"
    echo "VMTEST neighbours after delete ($name): $(ip -n c neigh show | tr '\n' ';')"
    wait $client
    echo "VMTEST neighbours after request ($name): $(ip -n c neigh show | tr '\n' ';')"
    kill $server
    # A burst on loopback, over IPv4 and IPv6: the test counts the exchanges on both sides.
    /tiny_httpd 127.0.0.1 8081 &
    server4=$!
    /tiny_httpd ::1 8082 &
    server6=$!
    sleep 1
    i=0
    while [ $i -lt $BURST ]; do
        wget -q -O /dev/null http://127.0.0.1:8081/burst-v4 || echo "VMTEST wget v4 failed ($name)"
        wget -q -O /dev/null "http://[::1]:8082/burst-v6" || echo "VMTEST wget v6 failed ($name)"
        i=$((i + 1))
    done
    kill $server4 $server6
    sleep 1
    kill -INT $agent
    wait $agent
    echo "VMTEST agent exited ($name) $?"
    echo "VMTEST client said ($name): $(head -1 /tmp/client-$name.out)"
    for what in console log otlp; do
        echo "VMTEST $what-$name begin"
        case $what in
            console) cat /tmp/run-$name.out ;;
            log) cat /tmp/run-$name.err ;;
            otlp) cat /tmp/otlp-$name.jsonl ;;
        esac
        echo "VMTEST $what-$name end"
    done
}

# Centiseconds since boot.
now_cs() { tr -d . < /proc/uptime | cut -d' ' -f1; }

# With netsonde.dd=COUNT on the kernel's command line (NETSONDE_VM_DD for tests/vm_matrix.rs):
# what syscalls netsonde has no business with cost on this kernel. dd makes 2 x COUNT reads and
# writes on no socket, netsonde.dd_rounds times under each arm: no agent, the no-op programs,
# netsonde monitoring only another process (dd not monitored), netsonde monitoring every process; then
# the no-op programs and every process monitored with socket-layer capture off (read and write
# at the syscall tracepoints, as on kernels without fentry).
printf 'capture:\n  socket_layer: false\n' > /tmp/tracepoints.yaml
dd_arms() {
    count=$1
    sleep 3600 &
    other=$!
    for arm in bare floor not-mine agent floor-tp agent-tp; do
        case $arm in
            bare) args= ;;
            floor) args=--noop-probes ;;
            not-mine) args="--pid $other" ;;
            agent) args= ;;
            floor-tp) args="--noop-probes --config /tmp/tracepoints.yaml" ;;
            agent-tp) args="--config /tmp/tracepoints.yaml" ;;
        esac
        agent=
        if [ $arm != bare ]; then
            /netsonde run $args > /dev/null 2> /tmp/dd-$arm.err &
            agent=$!
            wait_attached $agent /tmp/dd-$arm.err "dd $arm"
        fi
        for round in $(seq "$dd_rounds"); do
            start=$(now_cs)
            dd if=/dev/zero of=/dev/null bs=1 count="$count" 2> /dev/null
            echo "VMTEST dd $arm $(( $(now_cs) - start ))"
        done
        if [ -n "$agent" ]; then
            kill -INT $agent
            wait $agent
            # What the agent said it hooked, and its counts, for reading the figures.
            grep -h "socket-layer\|probes attached\|events" /tmp/dd-$arm.err | sed "s/^/DDLOG $arm: /"
        fi
    done
    kill $other
}

run_pass fentry
run_pass kprobe --config /tmp/kprobes.yaml
dd_count=$(sed -n 's/.*netsonde\.dd=\([0-9]*\).*/\1/p' /proc/cmdline)
dd_rounds=$(sed -n 's/.*netsonde\.dd_rounds=\([0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$dd_count" ]; then
    dd_arms "$dd_count"
fi
echo "VMTEST done"
poweroff -f
